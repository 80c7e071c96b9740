/**
 * Library tests of the backup API (src/image.ts): bitmaps listed as `qemu-img info` lists
 * them, dirty and changed extents over ranges, the base layer by file identity, snapshot
 * views through `openImage(path, { snapshot })`, and the typed errors. Images are made with
 * qemu-img/qemu-io in a temp directory; skipped with a warning when those are missing.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImage } from '../src/image.js';
import { hasTool, qemuImg } from './helpers/qemu.js';
import { makeTempDir, removeTempDir } from './helpers/tmp.js';
import { qemuIo } from './helpers/backup-tools.js';

const hasQemu = hasTool('qemu-img') && hasTool('qemu-io', ['--version']);
if (!hasQemu) console.warn('backup-api.test.ts: qemu-img/qemu-io missing: backup API tests SKIPPED');

let dir = '';
const p = (n: string): string => path.join(dir, n);

async function img(args: string[]): Promise<void> {
  const r = await qemuImg(args, dir);
  if (r.status !== 0) throw new Error(r.stderr);
}

async function collect<T>(g: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of g) out.push(x);
  return out;
}

beforeAll(async () => {
  if (!hasQemu) return;
  dir = makeTempDir('vdapi');
  await img(['create', '-q', '-f', 'qcow2', 'a.qcow2', '4M']);
  await img(['bitmap', '--add', '-g', '128k', 'a.qcow2', 'inc']);
  await img(['bitmap', '--add', '--disable', 'a.qcow2', 'off']);
  await qemuIo('a.qcow2', dir, ['write -P 1 0 64k', 'write -z 1M 128k']);
  await img(['snapshot', '-c', 'snap', 'a.qcow2']);
  await qemuIo('a.qcow2', dir, ['write -P 2 0 64k']);
  await img(['create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'b.qcow2']);
  await qemuIo('b.qcow2', dir, ['write -P 3 2M 64k']);
  await img(['create', '-q', '-f', 'raw', 'r.raw', '1M']);
}, 60_000);

afterAll(() => {
  if (dir !== '') removeTempDir(dir);
});

describe.skipIf(!hasQemu)('backup API', () => {
  it('lists bitmaps as qemu-img info does', async () => {
    await using a = await openImage(p('a.qcow2'));
    expect(await a.bitmaps()).toEqual([
      { name: 'inc', granularity: 131072, flags: ['auto'], type: 'dirty-tracking', inUse: false },
      { name: 'off', granularity: 65536, flags: [], type: 'dirty-tracking', inUse: false },
    ]);
    await using r = await openImage(p('r.raw'), { format: 'raw' });
    expect(await r.bitmaps()).toEqual([]);
  });

  it('iterates dirty and changed extents over a range', async () => {
    await using a = await openImage(p('a.qcow2'));
    expect(await collect(a.dirtyExtents('inc', { start: 65536, length: 2 * 1024 * 1024 }))).toEqual([
      { start: 65536, length: 65536, dirty: true },
      { start: 131072, length: 917504, dirty: false },
      { start: 1048576, length: 131072, dirty: true },
      { start: 1179648, length: 2 * 1024 * 1024 + 65536 - 1179648, dirty: false },
    ]);
    expect(await collect(a.dirtyExtents('off'))).toEqual([{ start: 0, length: 4 * 1024 * 1024, dirty: false }]);
    const changed = await collect(a.changedExtents('inc', { length: 2 * 1024 * 1024 }));
    expect(changed.filter((r) => r.dirty).map((r) => [r.start, r.length, r.zero])).toEqual([
      [0, 65536, false],
      [65536, 65536, true],
      [1048576, 131072, true],
    ]);
    await expect(collect(a.dirtyExtents('nope'))).rejects.toMatchObject({ code: 'ARG_BITMAP_NOT_FOUND' });
  });

  it('finds the base layer by file identity and maps what the layers above changed', async () => {
    await using b = await openImage(p('b.qcow2'));
    expect(await b.layerIndexOf(p('a.qcow2'))).toBe(1);
    expect(await b.layerIndexOf(path.join(dir, '.', 'b.qcow2'))).toBe(0);
    expect(await b.layerIndexOf(p('r.raw'))).toBeNull();
    expect(await collect(b.allocationExtents({ base: 1 }))).toEqual([
      { start: 0, length: 2 * 1024 * 1024, depth: 1, present: false },
      { start: 2 * 1024 * 1024, length: 65536, depth: 0, present: true },
      { start: 2 * 1024 * 1024 + 65536, length: 2 * 1024 * 1024 - 65536, depth: 1, present: false },
    ]);
    expect(await b.isAllocatedAbove(1, false, 2 * 1024 * 1024, 4096)).toEqual({ depth: 1, length: 4096 });
    expect((await b.isAllocatedAbove(1, false, 0, 65536)).depth).toBe(0);
  });

  it('lists internal snapshots', async () => {
    await using a = await openImage(p('a.qcow2'));
    const list = await a.snapshots();
    expect(list.map((s) => [s.id, s.name, s['vm-state-size']])).toEqual([['1', 'snap', 0]]);
    await using r = await openImage(p('r.raw'), { format: 'raw' });
    expect(await r.snapshots()).toEqual([]);
  });

  it('reads an internal snapshot through openImage({ snapshot })', async () => {
    await using now = await openImage(p('a.qcow2'));
    await using then = await openImage(p('a.qcow2'), { snapshot: 'snap' });
    expect((await now.read(0, 4))[0]).toBe(2);
    expect((await then.read(0, 4))[0]).toBe(1);
    await using byId = await openImage(p('a.qcow2'), { snapshot: '1' });
    expect((await byId.read(0, 4))[0]).toBe(1);
    await expect(openImage(p('a.qcow2'), { snapshot: 'none' })).rejects.toMatchObject({ code: 'ARG_SNAPSHOT_NOT_FOUND' });
    await expect(openImage(p('r.raw'), { format: 'raw', snapshot: 'x' })).rejects.toMatchObject({ code: 'UNSUPPORTED_SNAPSHOT_FORMAT' });
  });
});
