/**
 * Random qcow2 chains made with qemu-img and qemu-io, for tests that hold two walks to each
 * other: one to four layers; 4K to 64K clusters, extended L2, metadata preallocation,
 * backing files shorter and longer than their overlays; data, zero, unmapped-zero,
 * discarded and compressed writes. The same seed makes the same chain.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { rngInt } from './prng.js';

const K = 1024;

/** Makes a random chain in `dir`; returns the top's path. */
export function makeChain(dir: string, seed: number): string {
  const r = rngInt(seed);
  const layers = 1 + r(4);
  let below: string | null = null;
  let belowSize = 0;
  for (let i = layers - 1; i >= 0; i--) {
    const name = path.join(dir, `s${seed}-l${i}.qcow2`);
    const clusterSize = [4 * K, 16 * K, 64 * K][r(3)] as number;
    const extL2 = clusterSize >= 16 * K && r(4) === 0;
    // Sizes around 1-3 MiB, sometimes not a multiple of the cluster size.
    const size = below === null || r(3) === 0 ? (1024 + r(2048)) * K + (r(2) === 0 ? 512 * r(8) : 0) : belowSize + (r(3) - 1) * 256 * K;
    const opts = [`cluster_size=${clusterSize}`];
    if (extL2) opts.push('extended_l2=on');
    const prealloc = below === null && r(4) === 0;
    if (prealloc) opts.push('preallocation=metadata');
    const args = ['create', '-q', '-f', 'qcow2', '-o', opts.join(',')];
    if (below !== null) args.push('-b', path.basename(below), '-F', 'qcow2');
    args.push(name, String(Math.max(512, size)));
    execFileSync('qemu-img', args, { cwd: dir });
    const cmds: string[] = [];
    // Compressed writes first, each to its own cluster (QEMU refuses them on allocated clusters).
    const compressed = new Map<number, string>();
    const ops = r(24);
    const sz = Math.max(512, size);
    for (let k = 0; k < ops; k++) {
      const len = [512, 4 * K, clusterSize, 3 * clusterSize, 100 * K][r(5)] as number;
      const off = Math.floor(r(Math.max(1, Math.floor((sz - len) / 512))) * 512);
      if (off + len > sz) continue;
      switch (r(6)) {
        case 0: cmds.push(`write -z ${off} ${len}`); break;
        case 1: cmds.push(`write -z -u ${off} ${len}`); break;
        case 2: cmds.push(`discard ${off} ${len}`); break;
        case 3: {
          const c = Math.floor(off / clusterSize) * clusterSize;
          if (c + clusterSize <= sz && !extL2 && !prealloc) compressed.set(c, `write -c -P ${1 + r(200)} ${c} ${clusterSize}`);
          break;
        }
        default: cmds.push(`write -P ${1 + r(200)} ${off} ${len}`);
      }
    }
    cmds.unshift(...compressed.values());
    if (cmds.length > 0) execFileSync('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), name], { cwd: dir, stdio: 'ignore' });
    below = name;
    belowSize = sz;
  }
  return below as string;
}
