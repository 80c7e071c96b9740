/**
 * Differential tests of the backup toolkit against the reference tools:
 *
 * - `vdisk map --bitmap NAME` against `qemu-nbd -r -B NAME` + `nbdinfo --map=qemu:dirty-bitmap:NAME`,
 *   and `--with-allocation` against those runs split by `qemu-img map`'s zero flag;
 * - `vdisk snapshot -l` against `qemu-img snapshot -l`, `vdisk convert -l` against
 *   `qemu-img convert -l` (byte-identical), `vdisk map --snapshot` against `qemu-nbd -l` +
 *   `nbdinfo --map` (base:allocation);
 * - `vdisk map --mode=allocation --base FILE` against per-layer `qemu-img map` (each layer
 *   without its backing file) and against `qemu-nbd -A` + `qemu:allocation-depth`;
 * - `vdisk check` (human and JSON) against `qemu-img check`: stdout, stderr and exit status,
 *   on clean, crashed (lazy refcounts + abort) and crafted broken images.
 *
 * Skipped with a warning when qemu-img/qemu-io (or, for the NBD parts, qemu-nbd/nbdinfo)
 * are missing; CI installs them.
 */
import { copyFileSync, readFileSync, truncateSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run, runVdisk } from './helpers/cli.js';
import { hasTool, qemuImg, qemuImgRetryingLuksFlake } from './helpers/qemu.js';
import { makeTempDir, removeTempDir } from './helpers/tmp.js';
import { punchUnwrittenExtents } from './helpers/unwritten.js';
import {
  addRefcount, intersect, l1EntryOffset, l2EntryOffset, mergeRuns, nbdMap, qcow2Header, qemuIo, read64, write64,
} from './helpers/backup-tools.js';

const hasQemu = hasTool('qemu-img') && hasTool('qemu-io', ['--version']);
const hasNbd = hasQemu && hasTool('qemu-nbd') && hasTool('nbdinfo', ['--version']);
if (!hasQemu) console.warn('backup-differential.test.ts: qemu-img/qemu-io missing: backup differential tests SKIPPED');
else if (!hasNbd) console.warn('backup-differential.test.ts: qemu-nbd/nbdinfo missing: NBD comparisons SKIPPED');

let dir = '';

async function sh(args: string[]): Promise<void> {
  const r = await qemuImgRetryingLuksFlake(args, dir);
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${r.stderr}`);
}

async function io(file: string, ...commands: string[]): Promise<void> {
  const r = await qemuIo(file, dir, commands);
  if (r.status !== 0 && !commands.includes('abort')) throw new Error(`qemu-io ${commands.join(' ')}: ${r.stderr}${r.stdout}`);
}

async function vdiskJson<T>(args: string[]): Promise<T> {
  const r = await runVdisk(args, { cwd: dir });
  if (r.status !== 0) throw new Error(`vdisk ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

interface Run { start: number; length: number; dirty: boolean; zero?: boolean }
interface MapJson { start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean }
interface AllocJson { start: number; length: number; depth: number; present: boolean }

beforeAll(async () => {
  if (!hasQemu) return;
  dir = makeTempDir('vdbk');
  // Bitmaps: two granularities, writes, zero writes, discards, a disabled bitmap, an odd size.
  await sh(['create', '-q', '-f', 'qcow2', 'bm.qcow2', '10M']);
  await sh(['bitmap', '--add', 'bm.qcow2', 'b64k']);
  await sh(['bitmap', '--add', '-g', '128k', 'bm.qcow2', 'b128k']);
  await sh(['bitmap', '--add', '-g', '4k', 'bm.qcow2', 'b4k']);
  await io('bm.qcow2', 'write -P 1 100k 64k', 'write -z 1M 64k', 'discard 3M 128k', 'write 5M 4k', 'write -P 9 9M 1M');
  await sh(['bitmap', '--disable', 'bm.qcow2', 'b4k']);
  await sh(['bitmap', '--add', 'bm.qcow2', 'late']);
  await io('bm.qcow2', 'write -P 2 2M 8k', 'write -z 9M 64k', 'discard 9500k 100k');
  await sh(['create', '-q', '-f', 'qcow2', 'odd.qcow2', String(10 * 1024 * 1024 + 7 * 512)]);
  await sh(['bitmap', '--add', '-g', '1M', 'odd.qcow2', 'big']);
  await io('odd.qcow2', 'write 0 512', `write ${10 * 1024 * 1024} 3584`);
  // A fine bitmap over a larger disk: several bitmap data clusters, 512-byte writes.
  await sh(['create', '-q', '-f', 'qcow2', 'fine.qcow2', '2G']);
  await sh(['bitmap', '--add', '-g', '512', 'fine.qcow2', 'fine']);
  await io('fine.qcow2', 'write 512 512', 'write 1536 1k', 'write 300M 64k', 'write -z 1G 3k', 'write 2047M 1M', 'discard 300M 4k');
  // A bitmap on an overlay: dirty ranges read through the backing file.
  await sh(['create', '-q', '-f', 'qcow2', 'bbase.qcow2', '4M']);
  await io('bbase.qcow2', 'write -P 3 0 4M');
  await sh(['create', '-q', '-f', 'qcow2', '-b', 'bbase.qcow2', '-F', 'qcow2', 'btop.qcow2']);
  await sh(['bitmap', '--add', 'btop.qcow2', 'inc']);
  await io('btop.qcow2', 'write -P 4 64k 64k', 'write -z 1M 128k', 'discard 2M 64k');
  // An in-use bitmap: the writer died.
  copyFileSync(path.join(dir, 'bm.qcow2'), path.join(dir, 'inuse.qcow2'));
  await io('inuse.qcow2', 'write 0 64k', 'abort');

  // Snapshots.
  await sh(['create', '-q', '-f', 'qcow2', 'snap.qcow2', '4M']);
  await io('snap.qcow2', 'write -P 1 0 128k', 'write -P 7 1M 64k');
  await sh(['snapshot', '-c', 'first', 'snap.qcow2']);
  await io('snap.qcow2', 'write -P 2 64k 128k', 'discard 1M 64k', 'write -P 3 3M 64k');
  await sh(['snapshot', '-c', 'second', 'snap.qcow2']);
  await io('snap.qcow2', 'write -z 0 64k', 'write -P 5 2M 64k');
  await sh(['snapshot', '-c', '1', 'snap.qcow2']); // a name that is also an id
  await io('snap.qcow2', 'write -P 6 3M 1M');
  await sh(['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'snapv2.qcow2', '2M']);
  await io('snapv2.qcow2', 'write -P 8 0 64k');
  await sh(['snapshot', '-c', 'old', 'snapv2.qcow2']);
  await io('snapv2.qcow2', 'write -P 9 0 1M');
  await sh(['create', '-q', '-f', 'qcow2', 'nosnap.qcow2', '1M']);

  // A chain of four layers for changed-block maps.
  await sh(['create', '-q', '-f', 'qcow2', 'l3.qcow2', '8M']);
  await io('l3.qcow2', 'write -P 1 0 6M');
  await sh(['create', '-q', '-f', 'qcow2', '-b', 'l3.qcow2', '-F', 'qcow2', 'l2.qcow2']);
  await io('l2.qcow2', 'write -P 2 512k 64k', 'write -z 2M 256k', 'discard 4M 64k');
  await sh(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'l2.qcow2', '-F', 'qcow2', 'l1.qcow2']);
  await io('l1.qcow2', 'write -P 3 520k 8k', 'write -P 3 7M 12k');
  await sh(['create', '-q', '-f', 'qcow2', '-b', 'l1.qcow2', '-F', 'qcow2', 'l0.qcow2']);
  await io('l0.qcow2', 'write -P 4 0 64k', 'write -z 6M 1M');
  // The convert tests read these images while the maps run (test/helpers/unwritten.ts).
  await punchUnwrittenExtents(dir);
}, 120_000);

afterAll(() => {
  if (dir !== '') removeTempDir(dir);
});

describe.skipIf(!hasNbd)('map --bitmap vs qemu-nbd -B + nbdinfo', { concurrent: true }, () => {
  const cases: Array<[string, string]> = [
    ['bm.qcow2', 'b64k'], ['bm.qcow2', 'b128k'], ['bm.qcow2', 'b4k'], ['bm.qcow2', 'late'],
    ['odd.qcow2', 'big'], ['btop.qcow2', 'inc'], ['fine.qcow2', 'fine'],
  ];
  for (const [file, name] of cases) {
    it(`${file} ${name}: dirty runs and --with-allocation`, async () => {
      const nbd = await nbdMap(file, dir, dir, ['-B', name], `qemu:dirty-bitmap:${name}`);
      const expected = mergeRuns(nbd.map((e) => ({ start: e.start, length: e.length, dirty: e.type === 1 })), (r) => String(r.dirty));
      const got = await vdiskJson<Run[]>(['map', '--bitmap', name, '--output=json', file]);
      expect(got).toEqual(expected);
      // Dirty runs split by what qemu-img map says reads as zero.
      const map = await vdiskJson<MapJson[]>(['map', '--output=json', file]);
      const qmap = JSON.parse((await qemuImg(['map', '--output=json', file], dir)).stdout) as MapJson[];
      expect(map).toEqual(qmap);
      const split = intersect(expected, qmap).map((p) =>
        p.a.dirty ? { start: p.start, length: p.length, dirty: true, zero: p.b.zero } : { start: p.start, length: p.length, dirty: false },
      );
      const withAlloc = await vdiskJson<Run[]>(['map', '--bitmap', name, '--with-allocation', '--output=json', file]);
      expect(withAlloc).toEqual(mergeRuns(split, (r) => `${r.dirty}/${String(r.zero)}`));
    });
  }

  it('an in-use bitmap is refused as inconsistent, as qemu-nbd refuses it', async () => {
    await expect(nbdMap('inuse.qcow2', dir, dir, ['-B', 'b64k'], 'qemu:dirty-bitmap:b64k')).rejects.toThrow(/inconsistent/);
    const r = await runVdisk(['map', '--bitmap', 'b64k', '--output=json', 'inuse.qcow2'], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^vdisk: QCOW2_BITMAP_INCONSISTENT: /);
    const info = await runVdisk(['info', '--output=json', 'inuse.qcow2'], { cwd: dir });
    expect(info.stdout).toBe((await qemuImg(['info', '--output=json', 'inuse.qcow2'], dir)).stdout);
  });
});

describe.skipIf(!hasQemu)('internal snapshots vs qemu-img', { concurrent: true }, () => {
  for (const file of ['snap.qcow2', 'snapv2.qcow2', 'nosnap.qcow2']) {
    it(`snapshot -l ${file} equals qemu-img snapshot -l`, async () => {
      const q = await qemuImg(['snapshot', '-l', file], dir);
      const v = await runVdisk(['snapshot', '-l', file], { cwd: dir });
      expect(v.status).toBe(q.status);
      expect(v.stdout).toBe(q.stdout);
    });
  }

  const refs: Array<[string, string]> = [
    ['snap.qcow2', 'first'], ['snap.qcow2', 'second'], ['snap.qcow2', '1'], ['snap.qcow2', '2'], ['snap.qcow2', '3'],
    ['snapv2.qcow2', 'old'],
  ];
  for (const [file, sn] of refs) {
    it(`convert -l ${sn} ${file} is byte-identical to qemu-img convert -l`, async () => {
      const out = `${file}.${sn}`;
      const q = await qemuImg(['convert', '-l', sn, '-O', 'raw', file, `${out}.q.raw`], dir);
      expect(q.status).toBe(0);
      const v = await runVdisk(['convert', '-l', sn, '-O', 'raw', file, `${out}.v.raw`], { cwd: dir });
      expect(v.stderr).toBe('');
      expect(readFileSync(path.join(dir, `${out}.v.raw`)).equals(readFileSync(path.join(dir, `${out}.q.raw`)))).toBe(true);
    });
    it.skipIf(!hasNbd)(`map --snapshot ${sn} ${file} equals qemu-nbd -l + nbdinfo --map`, async () => {
      const nbd = await nbdMap(file, dir, dir, ['-l', sn], 'base:allocation');
      const expected = mergeRuns(nbd.map((e) => ({ start: e.start, length: e.length, hole: (e.type & 1) !== 0, zero: (e.type & 2) !== 0 })),
        (r) => `${r.hole}/${r.zero}`);
      const map = await vdiskJson<MapJson[]>(['map', '--snapshot', sn, '--output=json', file]);
      expect(mergeRuns(map.map((e) => ({ start: e.start, length: e.length, hole: !e.data, zero: e.zero })), (r) => `${r.hole}/${r.zero}`))
        .toEqual(expected);
    });
  }

  it('an unknown snapshot fails like qemu-img', async () => {
    const q = await qemuImg(['convert', '-l', 'nope', '-O', 'raw', 'snap.qcow2', 'x.raw'], dir);
    expect(q.status).toBe(1);
    const v = await runVdisk(['map', '--snapshot', 'nope', 'snap.qcow2'], { cwd: dir });
    expect(v.status).toBe(1);
    expect(v.stderr).toMatch(/^vdisk: ARG_SNAPSHOT_NOT_FOUND: /);
  });
});

describe.skipIf(!hasQemu)('map --mode=allocation --base', { concurrent: true }, () => {
  const layers = ['l0.qcow2', 'l1.qcow2', 'l2.qcow2', 'l3.qcow2'];
  for (let b = 0; b < layers.length; b++) {
    it(`base ${layers[b] ?? ''}: equals per-layer qemu-img maps and qemu-nbd -A`, async () => {
      const got = await vdiskJson<AllocJson[]>(['map', '--mode=allocation', '--base', layers[b] ?? '', 'l0.qcow2']);
      // Per layer, alone (no backing): which layer above the base allocates first.
      const perLayer: MapJson[][] = [];
      for (const l of layers.slice(0, b)) {
        const spec = JSON.stringify({ driver: 'qcow2', backing: null, file: { driver: 'file', filename: l } });
        perLayer.push(JSON.parse((await qemuImg(['map', '--output=json', `json:${spec}`], dir)).stdout) as MapJson[]);
      }
      const size = 8 * 1024 * 1024;
      let fromLayers: AllocJson[] = [{ start: 0, length: size, depth: b, present: false }];
      for (let i = perLayer.length - 1; i >= 0; i--) {
        fromLayers = intersect(fromLayers, perLayer[i] ?? []).map((p) =>
          p.b.present ? { start: p.start, length: p.length, depth: i, present: true } : { ...p.a, start: p.start, length: p.length });
      }
      expect(got).toEqual(mergeRuns(fromLayers, (r) => `${r.depth}/${r.present}`));
      if (hasNbd) {
        const nbd = await nbdMap('l0.qcow2', dir, dir, ['-A'], 'qemu:allocation-depth');
        const fromNbd = nbd.map((e) => (e.type >= 1 && e.type - 1 < b
          ? { start: e.start, length: e.length, depth: e.type - 1, present: true }
          : { start: e.start, length: e.length, depth: b, present: false }));
        expect(got).toEqual(mergeRuns(fromNbd, (r) => `${r.depth}/${r.present}`));
      }
    });
  }

  it('a file outside the chain is refused', async () => {
    const r = await runVdisk(['map', '--mode=allocation', '--base', 'snap.qcow2', 'l0.qcow2'], { cwd: dir });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^vdisk: ARG_BASE_NOT_IN_CHAIN: /);
  });
});

/** Builders of the check corpus: each makes `name` in the temp dir. */
const checkCorpus: Record<string, (name: string) => Promise<void>> = {
  'clean-empty': (n) => sh(['create', '-q', '-f', 'qcow2', n, '10M']),
  'clean-data': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', n, '10M']);
    await io(n, 'write 0 128k', 'write 1M 64k');
  },
  fragmented: async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', n, '10M']);
    await io(n, 'write 3M 64k', 'write 2M 64k', 'write 1M 64k', 'write 0 64k', 'write -z 4M 64k', 'discard 2M 64k');
  },
  'compressed-zlib': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', `${n}.src`, '4M']);
    await io(`${n}.src`, 'write -P 5 0 1M', 'write 2M 100k');
    await sh(['convert', '-c', '-O', 'qcow2', `${n}.src`, n]);
  },
  'compressed-zstd': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', `${n}.src`, '4M']);
    await io(`${n}.src`, 'write -P 5 0 1M');
    await sh(['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', `${n}.src`, n]);
  },
  'extended-l2': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=128k', n, '8M']);
    await io(n, 'write -P 1 4k 8k', 'write -z 1M 64k', 'write 3M 300k');
  },
  'refcount-bits-1': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', n, '8M']);
    await io(n, 'write 0 200k');
  },
  'refcount-bits-64': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=64', n, '8M']);
    await io(n, 'write 0 200k');
  },
  'cluster-512': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', n, '2M']);
    await io(n, 'write 0 100k', 'write 1M 3k');
  },
  // More refcount blocks (256 clusters each) than the check keeps (16), and COPIED cleared
  // on every fifth data entry of every third L2 table: the check reads refcount blocks again
  // in the middle of L2 tables, and data clusters cross from one block to the next.
  'cluster-512-copied-cleared': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', n, '8M']);
    await io(n, 'write 0 4M');
    const f = path.join(dir, n);
    for (let i = 0; i < 128; i += 3) {
      for (let j = 1; j < 64; j += 5) write64(f, l2EntryOffset(f, i, j), read64(f, l2EntryOffset(f, i, j)) & ~(1n << 63n));
    }
  },
  'cluster-2m': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', n, '20M']);
    await io(n, 'write 0 100k', 'write 9M 3M');
  },
  snapshots: async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', n, '4M']);
    await io(n, 'write 0 1M');
    await sh(['snapshot', '-c', 'a', n]);
    await io(n, 'write 512k 1M');
    await sh(['snapshot', '-c', 'b', n]);
    await sh(['snapshot', '-d', 'a', n]);
  },
  'v2-snapshot': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', n, '4M']);
    await io(n, 'write 0 100k');
    await sh(['snapshot', '-c', 's', n]);
    await io(n, 'write 0 300k');
  },
  bitmaps: async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', n, '4M']);
    await sh(['bitmap', '--add', n, 'x']);
    await io(n, 'write 0 1M');
  },
  'bitmap-in-use': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', n, '4M']);
    await sh(['bitmap', '--add', n, 'x']);
    await io(n, 'write 0 1M', 'abort');
  },
  'data-file': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', `data_file=${n}.data`, n, '4M']);
    await io(n, 'write 0 100k');
  },
  'lazy-crash': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', n, '10M']);
    await io(n, 'write 0 128k', 'write 2M 64k', 'abort');
  },
  'l1-shared-l2': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', n, '1G']);
    await io(n, 'write 0 64k', 'write 600M 64k');
    const f = path.join(dir, n);
    write64(f, l1EntryOffset(f, 1), read64(f, l1EntryOffset(f, 0)));
  },
  'crash-no-lazy-refcounts': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', n, '10M']);
    await io(n, 'write 0 1M');
    await io(n, 'write 512k 2M', 'write -z 4M 64k', 'discard 0 64k', 'abort');
  },
  'lazy-crash-snapshot': async (n) => {
    await sh(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', n, '10M']);
    await io(n, 'write 0 1M');
    await sh(['snapshot', '-c', 's1', n]);
    await io(n, 'write 512k 1M', 'write 4M 64k', 'abort');
  },
};

/** Crafted damage applied to a copy of `clean-data` (64 KiB clusters, data at clusters 5-7). */
const damage: Record<string, (f: string) => void> = {
  'leak-refcount-plus-one': (f) => addRefcount(f, 5, 1),
  'refcount-zeroed': (f) => addRefcount(f, 6, -1),
  'leak-unreferenced-cluster': (f) => {
    truncateSync(f, 10 * 65536);
    addRefcount(f, 9, 1);
  },
  'l2-past-eof': (f) => write64(f, l2EntryOffset(f, 0, 3), 0x8000000100000000n),
  'l2-unaligned': (f) => write64(f, l2EntryOffset(f, 0, 3), 0x8000000000071000n),
  'l2-copied-cleared': (f) => write64(f, l2EntryOffset(f, 0, 0), 0x0000000000050000n),
  'l2-overlap': (f) => write64(f, l2EntryOffset(f, 0, 5), 0x8000000000050000n),
  'l2-reserved-bits': (f) => write64(f, l2EntryOffset(f, 0, 0), 0x8000000000050002n),
  'l2-reserved-bits-high': (f) => write64(f, l2EntryOffset(f, 0, 0), 0x8100000000050000n),
  'l1-reserved-bits': (f) => write64(f, l1EntryOffset(f, 0), read64(f, l1EntryOffset(f, 0)) | (1n << 56n)),
  'l1-past-eof': (f) => write64(f, l1EntryOffset(f, 0), 0x8000000100000000n),
  'refblock-missing': (f) => write64(f, qcow2Header(f).reftableOffset, 0n),
  'refblock-unaligned': (f) => write64(f, qcow2Header(f).reftableOffset, 0x21000n),
  'reftable-reserved-bits': (f) => write64(f, qcow2Header(f).reftableOffset, read64(f, qcow2Header(f).reftableOffset) | 1n),
  'refblock-outside-image': (f) => write64(f, qcow2Header(f).reftableOffset + 8, 0x1000000n),
  'l2-points-at-reftable': (f) => write64(f, l2EntryOffset(f, 0, 9), 0x8000000000000000n | BigInt(qcow2Header(f).reftableOffset)),
  'l2-points-at-header': (f) => write64(f, l2EntryOffset(f, 0, 9), 0x8000000000000000n | 0x200n),
  'corrupt-bit-set': (f) => {
    write64(f, l2EntryOffset(f, 0, 5), 0x8000000000050000n);
    write64(f, 72, read64(f, 72) | 2n);
  },
  'dirty-bit-set': (f) => write64(f, 72, read64(f, 72) | 1n),
};

/** Damage applied to a copy of `snapshots` (one snapshot table entry). */
const snapshotDamage: Record<string, (f: string) => void> = {
  // 1 Mi L1 entries 1 TiB into the file: reported, never allocated for.
  'snapshot-l1-far-past-eof': (f) => {
    const table = Number(read64(f, 64));
    write64(f, table, 1n << 40n);
    write64(f, table + 8, (read64(f, table + 8) & 0xffffffffn) | (0x100000n << 32n));
  },
  'snapshot-l1-unaligned': (f) => write64(f, Number(read64(f, 64)), read64(f, Number(read64(f, 64))) + 512n),
  'snapshot-l1-too-large': (f) => {
    const table = Number(read64(f, 64));
    write64(f, table + 8, (read64(f, table + 8) & 0xffffffffn) | (0x500000n << 32n));
  },
};

describe.skipIf(!hasQemu)('check vs qemu-img check', { concurrent: true }, () => {
  const names = [...Object.keys(checkCorpus), ...Object.keys(damage), ...Object.keys(snapshotDamage), 'compressed-copied', 'bitmaps-autoclear-cleared'];
  for (const name of names) {
    it(`${name}: same stdout, stderr and exit status (human and JSON)`, async () => {
      const file = `chk-${name}.qcow2`;
      const build = checkCorpus[name];
      if (build !== undefined) {
        await build(file);
      } else if (name === 'compressed-copied') {
        await checkCorpus['compressed-zlib']?.(file);
        write64(path.join(dir, file), l2EntryOffset(path.join(dir, file), 0, 0), read64(path.join(dir, file), l2EntryOffset(path.join(dir, file), 0, 0)) | (1n << 63n));
      } else if (name === 'bitmaps-autoclear-cleared') {
        // A program without bitmap support wrote the image: QEMU ignores the bitmaps, their clusters leak.
        await checkCorpus['bitmaps']?.(file);
        write64(path.join(dir, file), 88, read64(path.join(dir, file), 88) & ~1n);
      } else if (name in snapshotDamage) {
        await checkCorpus['snapshots']?.(file);
        snapshotDamage[name]?.(path.join(dir, file));
      } else {
        await checkCorpus['clean-data']?.(file);
        damage[name]?.(path.join(dir, file));
      }
      for (const output of ['human', 'json']) {
        const q = await qemuImg(['check', `--output=${output}`, file], dir);
        const v = await runVdisk(['check', `--output=${output}`, file], { cwd: dir });
        expect({ out: v.stdout, err: v.stderr, status: v.status }).toEqual({
          out: q.stdout, err: q.stderr.replace(/^qemu-img: warning: /gm, 'vdisk: warning: ').replace(/^qemu-img: /gm, 'vdisk: CHECK_FAILED: '), status: q.status,
        });
      }
    });
  }

  it('LUKS-encrypted images: the same findings without the key (qemu-img needs it to open)', async () => {
    const secret = ['--object', 'secret,id=sec0,data=abc'];
    await sh(['create', '-q', ...secret, '-f', 'qcow2', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10', 'chk-luks.qcow2', '4M']);
    const w = await run('qemu-io', [...secret, '--image-opts', 'driver=qcow2,file.filename=chk-luks.qcow2,encrypt.key-secret=sec0',
      '-c', 'write 0 100k'], { cwd: dir });
    expect(w.status).toBe(0);
    addRefcount(path.join(dir, 'chk-luks.qcow2'), 3, 1);
    const q = await qemuImg(['check', ...secret, '--image-opts', 'driver=qcow2,file.filename=chk-luks.qcow2,encrypt.key-secret=sec0'], dir);
    const v = await runVdisk(['check', 'chk-luks.qcow2'], { cwd: dir });
    expect({ out: v.stdout, err: v.stderr, status: v.status }).toEqual({ out: q.stdout, err: q.stderr, status: q.status });
  });

  it('raw images: qemu-img check exit status 63', async () => {
    await sh(['create', '-q', '-f', 'raw', 'chk.raw', '1M']);
    const q = await qemuImg(['check', '-f', 'raw', 'chk.raw'], dir);
    const v = await runVdisk(['check', '-f', 'raw', 'chk.raw'], { cwd: dir });
    expect(q.status).toBe(63);
    expect(v.status).toBe(63);
    expect(v.stderr).toMatch(/This image format does not support checks/);
  });
});
