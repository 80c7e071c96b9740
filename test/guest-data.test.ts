/**
 * Guest data against QEMU on images made here with qemu-img/qemu-io: seeded random reads
 * (unaligned starts and lengths, across clusters, subclusters, L2 tables, layer boundaries
 * and the end) compared with the bytes of `qemu-img convert -O raw`; `vdisk compare`
 * against `qemu-img compare` (message and exit status); corrupt compressed clusters give
 * typed errors through the library and the CLI. Skipped, with a warning, without qemu-img.
 */
import { createHash } from 'node:crypto';
import { open, readFile, stat, truncate } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isVdiskError, openImage } from '../src/index.js';
import { run, runVdisk } from './helpers/cli.js';
import { hasTool } from './helpers/qemu.js';
import { makeTempDir, removeTempDir } from './helpers/tmp.js';

const hasQemu = hasTool('qemu-img') && hasTool('qemu-io');
if (!hasQemu) console.warn('guest-data.test.ts: SKIPPED: qemu-img/qemu-io not found, guest data was NOT compared with QEMU');

let dir = '';

async function sh(script: string): Promise<void> {
  const r = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, timeoutMs: 120_000 });
  if (r.status !== 0) throw new Error(`script failed (${r.status}): ${r.stderr}\n${script}`);
}

/** Images to read, each with the raw conversion made by qemu-img. */
const IMAGES = [
  'plain.qcow2',
  'zstd.qcow2',
  'zlib.qcow2',
  'sub.qcow2',
  'small.qcow2',
  'top.qcow2',
  'unaligned.raw',
];

const SETUP = String.raw`
qio() { local img=$1; shift; local a=(); for c in "$@"; do a+=(-c "$c"); done; qemu-io "${'$'}{a[@]}" "$img" >/dev/null; }
head -c 3000000 /usr/bin/qemu-img > payload.bin
qemu-img create -q -f qcow2 plain.qcow2 4M
qio plain.qcow2 'write -P 0x11 0 64k' 'write -z 128k 64k' 'write -P 0x33 200000 100000' 'write -c -P 0x22 1M 128k' 'write -z -u 2M 64k' 'write -P 0x44 4128768 65536'
qemu-img convert -c -O qcow2 -o compression_type=zstd,cluster_size=16k payload.bin zstd.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=4k payload.bin zlib.qcow2
qio zlib.qcow2 'write -P 0x55 10000 5000' 'write -z 40000 9000'
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k sub.qcow2 1M
qio sub.qcow2 'write -P 5 0 2k' 'write -P 6 8k 4k' 'write -z 16k 2k' 'write -P 7 62k 4k' 'write -P 8 700k 33k'
qemu-img create -q -f qcow2 -o cluster_size=512 small.qcow2 300k
qio small.qcow2 'write -P 9 100 70000' 'write -z 80000 1000' 'write -P 10 160000 100000'
truncate -s 700000 base.raw
printf 'base-data' | dd of=base.raw bs=1 seek=5000 conv=notrunc status=none
head -c 100000 /usr/bin/qemu-img | dd of=base.raw bs=1 seek=300000 conv=notrunc status=none
qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 1M
qio mid.qcow2 'write -P 0x61 60000 8000' 'write -z 310000 5000' 'write -P 0x62 650000 100000'
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 2M
qio top.qcow2 'write -P 0x71 4000 300' 'write -P 0x72 900000 300000' 'write -z -u 1500000 4096'
head -c 777777 /usr/bin/qemu-img > unaligned.raw
for f in plain zstd zlib sub small top; do qemu-img convert -O raw $f.qcow2 $f.qcow2.ref; done
qemu-img convert -f raw -O raw unaligned.raw unaligned.raw.ref
`;

beforeAll(async () => {
  if (!hasQemu) return;
  dir = makeTempDir('vdisk-gd-');
  await sh(SETUP);
}, 300_000);

afterAll(() => {
  if (dir !== '') removeTempDir(dir);
});

/** A seeded generator (xorshift32). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

describe.skipIf(!hasQemu)('reads equal qemu-img convert -O raw', () => {
  for (const name of IMAGES) {
    it(`${name}: 300 seeded random reads and a full stream`, async () => {
      const ref = await readFile(path.join(dir, `${name}.ref`));
      const img = await openImage(path.join(dir, name), name.endsWith('.raw') ? { format: 'raw' } : {});
      try {
        expect(img.virtualSize).toBe(ref.length);
        const next = rng(name.length * 7919 + 17);
        const size = img.virtualSize;
        for (let i = 0; i < 300; i++) {
          const kind = next();
          const start = kind < 0.1 ? size - Math.floor(next() * 5000) - 1 : Math.floor(next() * size);
          const maxLen = kind < 0.5 ? 700 : 300_000;
          const length = Math.min(size - start, 1 + Math.floor(next() * maxLen));
          const got = await img.read(start, length);
          if (!Buffer.from(got).equals(ref.subarray(start, start + length))) {
            throw new Error(`${name}: read(${start}, ${length}) differs from qemu-img's bytes`);
          }
        }
        const whole = createHash('sha256');
        for await (const chunk of img.createReadStream({ chunkSize: 65536 + 123 })) whole.update(chunk);
        expect(whole.digest('hex')).toBe(createHash('sha256').update(ref).digest('hex'));
        const fromExtents = Buffer.alloc(size);
        for await (const e of img.dataExtents({ chunkSize: 50_000 })) fromExtents.set(e.data, e.start);
        expect(fromExtents.equals(ref)).toBe(true);
        await expect(img.read(size - 10, 11)).rejects.toMatchObject({ code: 'ARG_RANGE_PAST_END' });
      } finally {
        await img.close();
      }
    });
  }
});

describe.skipIf(!hasQemu)('convert -O raw equals qemu-img convert, and is as sparse', () => {
  for (const name of IMAGES) {
    it(name, async () => {
      const out = path.join(dir, `${name}.vdisk.raw`);
      const args = ['convert', ...(name.endsWith('.raw') ? ['-f', 'raw'] : []), '-O', 'raw', name, out];
      const r = await runVdisk(args, { cwd: dir });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const [mine, ref] = await Promise.all([readFile(out), readFile(path.join(dir, `${name}.ref`))]);
      expect(createHash('sha256').update(mine).digest('hex')).toBe(createHash('sha256').update(ref).digest('hex'));
      // Flush both so that delayed allocation does not hide blocks (ours is fsynced on commit).
      for (const f of [out, path.join(dir, `${name}.ref`)]) {
        const fh = await open(f, 'r');
        await fh.sync();
        await fh.close();
      }
      const [a, b] = await Promise.all([stat(out), stat(path.join(dir, `${name}.ref`))]);
      expect(a.blocks).toBeLessThanOrEqual(b.blocks);
    });
  }
});

describe.skipIf(!hasQemu)('compare agrees with qemu-img compare', () => {
  const pairs: [string, string[]][] = [
    ['identical qcow2 and its raw conversion', ['plain.qcow2', 'plain.qcow2.ref']],
    ['with -F raw', ['-F', 'raw', 'plain.qcow2', 'plain.qcow2.ref']],
    ['strict, qcow2 against raw', ['-s', 'plain.qcow2', 'plain.qcow2.ref']],
    ['an image with itself, strict', ['-s', 'top.qcow2', 'top.qcow2']],
    ['different images', ['plain.qcow2', 'sub.qcow2']],
    ['different sizes, tail zero', ['mid.qcow2', 'top.qcow2']],
    ['different sizes, strict', ['-s', 'mid.qcow2', 'top.qcow2']],
    ['overlay against its backing', ['mid.qcow2', '-F', 'raw', 'base.raw']],
    ['compressed against raw', ['zstd.qcow2', '-F', 'raw', 'payload.bin']],
    ['zlib modified against payload', ['zlib.qcow2', '-F', 'raw', 'payload.bin']],
    ['missing file', ['plain.qcow2', 'nonexistent.qcow2']],
  ];
  for (const [label, args] of pairs) {
    it(label, async () => {
      const q = await run('qemu-img', ['compare', ...args], { cwd: dir });
      const v = await runVdisk(['compare', ...args], { cwd: dir });
      expect({ stdout: v.stdout, status: v.status }).toEqual({ stdout: q.stdout, status: q.status });
      if (q.status === 2) expect(v.stderr).toMatch(/^vdisk: [A-Z_]+: /);
    });
  }
});

describe.skipIf(!hasQemu)('corrupt compressed clusters are typed errors', () => {
  /** Makes a copy of zlib/zstd images whose first compressed payload is damaged by `patch`. */
  async function damaged(src: string, name: string, patch: (buf: Buffer, payload: number, entryAt: number) => void): Promise<string> {
    const file = path.join(dir, name);
    await sh(`cp ${src} ${name}`);
    const buf = await readFile(file);
    const l1 = Number(buf.readBigUInt64BE(40));
    const l2 = Number(buf.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    const clusterBits = buf.readUInt32BE(20);
    for (let i = 0; i < 2 ** (clusterBits - 3); i++) {
      const e = buf.readBigUInt64BE(l2 + i * 8);
      if ((e & (1n << 62n)) !== 0n) {
        const x = BigInt(62 - (clusterBits - 8));
        patch(buf, Number(e & ((1n << x) - 1n)), l2 + i * 8);
        const fh = await open(file, 'r+');
        await fh.write(buf, 0, buf.length, 0);
        await fh.close();
        return file;
      }
    }
    throw new Error(`no compressed cluster in ${src}`);
  }

  const cases: [string, string, (buf: Buffer, payload: number, entryAt: number) => void][] = [
    ['garbage zlib payload', 'zlib.qcow2', (b, p) => b.fill(0xff, p, p + 64)],
    ['garbage zstd payload', 'zstd.qcow2', (b, p) => b.fill(0xa5, p, p + 64)],
    ['truncated zlib stream (payload zeroed from byte 8)', 'zlib.qcow2', (b, p) => b.fill(0, p + 8, p + 4096)],
    ['zstd frame cut short', 'zstd.qcow2', (b, p) => b.fill(0, p + 20, p + 16384)],
    ['payload offset past the end of the file', 'zlib.qcow2', (b, _p, at) => b.writeBigUInt64BE((1n << 62n) | 0x7fffff00n, at)],
  ];
  for (const [label, src, patch] of cases) {
    it(label, async () => {
      const file = await damaged(src, `bad-${label.replace(/\W+/g, '-')}.qcow2`, patch);
      const img = await openImage(file);
      let err: unknown;
      try {
        await img.read(0, img.virtualSize);
      } catch (e) {
        err = e;
      } finally {
        await img.close();
      }
      expect(isVdiskError(err)).toBe(true);
      expect((err as { code: string }).code).toMatch(/^QCOW2_COMPRESSED_(DATA|BEYOND_EOF)$/);
      const out = path.join(dir, 'bad-out.raw');
      const r = await runVdisk(['convert', '-O', 'raw', file, out], { cwd: dir });
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/^vdisk: QCOW2_COMPRESSED_(DATA|BEYOND_EOF): .+\n$/);
      await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' }); // no partial output
    });
  }

  it('a truncated file leaves no partial output and gives a typed error', async () => {
    // Compressed clusters have no host offset for the RECURSE probe, so their loss past the
    // end of the file is an error rather than zeroes.
    const file = path.join(dir, 'short.qcow2');
    await sh('cp zlib.qcow2 short.qcow2');
    await truncate(file, Math.floor((await stat(file)).size / 2));
    const out = path.join(dir, 'short-out.raw');
    const r = await runVdisk(['convert', '-O', 'raw', file, out], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^vdisk: [A-Z0-9_]+: /);
    await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
