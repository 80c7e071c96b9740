/**
 * `qemu-img map`'s walk (src/status/map-entries.ts; QEMU 7.2 `img_map`, `get_block_status`,
 * `entry_mergeable`, `dump_map_entry`; QEMU-SEMANTICS.md §3.1, §6.1-6.4) over fake
 * drivers: per-offset depth, the merging rules, the human output's normalisation of the
 * entry after a printed one, the stop on data without an offset in human mode, and the
 * single zero-length entry when start >= end.
 */
import { describe, expect, it } from 'vitest';
import {
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_ZERO,
} from '../../src/formats/driver.js';
import { ChainNode } from '../../src/status/chain-node.js';
import { entryMergeable, mapEntries, mapStatusAt, type MapEntry, type MapWalkOptions } from '../../src/status/map-entries.js';
import type { StatusCounters } from '../../src/status/one-layer.js';
import { FakeDriver, type Seg } from '../helpers/fake-driver.js';
import { MemoryFile } from '../helpers/memory-file.js';

const D = BDRV_BLOCK_DATA;
const Z = BDRV_BLOCK_ZERO;
const OV = BDRV_BLOCK_OFFSET_VALID;
const K = 1024;
const M = 1024 * 1024;
const G = 1024 * M;



/** A chain from `layers` (top first), each `[length, segments, options]`. */
function chain(...layers: Array<[number, Seg[], { skipped?: boolean }?]>): { top: ChainNode; drivers: FakeDriver[] } {
  const drivers = layers.map(([len, segs], i) => new FakeDriver(len, segs, { file: new MemoryFile(new Uint8Array(0), { path: `l${i}.qcow2` }) }));
  const nodes = drivers.map((d, i) => new ChainNode(d, `l${i}.qcow2`, i, layers[i]?.[2]?.skipped ?? false));
  nodes.forEach((n, i) => {
    n.backing = nodes[i + 1] ?? null;
  });
  const top = nodes[0];
  if (top === undefined) throw new Error('empty chain');
  return { top, drivers };
}

const counters = (): StatusCounters => ({ driverCalls: 0 });

async function walk(top: ChainNode, o: Partial<MapWalkOptions> & { end: number }): Promise<MapEntry[][]> {
  const batches: MapEntry[][] = [];
  for await (const b of mapEntries(top, { start: 0, human: false, ...o }, counters())) batches.push(b);
  return batches;
}
const entries = async (top: ChainNode, o: Partial<MapWalkOptions> & { end: number }) => (await walk(top, o)).flat();

/** A compact view of an entry: [start, length, depth, present, zero, data, offset]. */
const v = (e: MapEntry) => [e.start, e.length, e.depth, e.present, e.zero, e.data, e.offset] as const;

const entry = (o: Partial<MapEntry> = {}): MapEntry => ({
  start: 0,
  length: 4096,
  depth: 0,
  present: true,
  zero: false,
  data: true,
  offset: 0x50000,
  filename: 'a.qcow2',
  ...o,
});

describe('entryMergeable (entry_mergeable)', () => {
  const next = (o: Partial<MapEntry> = {}) => entry({ start: 4096, offset: 0x51000, ...o });

  it('contiguous in the guest and the host, same attributes and file: mergeable', () => {
    expect(entryMergeable(entry(), next())).toBe(true);
  });

  it('never merges into a zero-length entry', () => {
    expect(entryMergeable(entry({ length: 0 }), next({ offset: 0x50000 }))).toBe(false);
  });

  it.each([
    ['zero', { zero: true }],
    ['data', { data: false }],
    ['depth', { depth: 1 }],
    ['present', { present: false }],
    ['offset presence', { offset: null, filename: null }],
    ['filename presence', { filename: null }],
    ['filename', { filename: 'b.qcow2' }],
    ['host contiguity', { offset: 0x61000 }],
    ['host contiguity (backwards)', { offset: 0x50000 }],
  ])('a different %s blocks the merge', (_n, o) => {
    expect(entryMergeable(entry(), next(o))).toBe(false);
  });

  it('entries without an offset merge wherever they live', () => {
    expect(entryMergeable(entry({ offset: null, filename: null }), next({ offset: null, filename: null }))).toBe(true);
  });
});

describe('mapStatusAt (get_block_status)', () => {
  it('the top layer answers: depth 0, present, offset and file name', async () => {
    const { top } = chain([1 * M, [{ start: 0, end: 1 * M, flags: D | OV, map: 0x50000 }]]);
    expect(await mapStatusAt(top, 1000, 4096, counters())).toEqual({
      start: 1000, length: 4096, depth: 0, present: true, zero: false, data: true, offset: 0x50000 + 1000, filename: 'l0.qcow2',
    });
  });

  it('unallocated in the top: the backing layer answers with depth 1 for the narrowed run', async () => {
    const { top, drivers } = chain(
      [1 * M, [{ start: 0, end: 64 * K, flags: 0 }, { start: 64 * K, end: 1 * M, flags: D }]],
      [1 * M, [{ start: 0, end: 1 * M, flags: D | OV, map: 0x70000 }]],
    );
    expect(v(await mapStatusAt(top, 0, 1 * M, counters()))).toEqual([0, 64 * K, 1, true, false, true, 0x70000]);
    expect(drivers[1]?.calls).toEqual([{ offset: 0, bytes: 64 * K, mode: 'mapping' }]);
  });

  it('unallocated everywhere: the bottom layer\'s synthesised ZERO ends the walk (depth = bottom index, E3)', async () => {
    const { top } = chain([2 * M, [{ start: 0, end: 2 * M, flags: 0 }]], [2 * M, [{ start: 0, end: 2 * M, flags: 0 }]], [2 * M, [{ start: 0, end: 2 * M, flags: 0 }]]);
    const e = await mapStatusAt(top, 0, 2 * M, counters());
    expect(v(e)).toEqual([0, 2 * M, 2, false, true, false, null]);
    expect(e.filename).toBeNull();
  });

  it('past a short backing file: the top\'s mapping-mode ZERO ends the walk at depth 0 (E3)', async () => {
    const { top, drivers } = chain([2 * M, [{ start: 0, end: 2 * M, flags: 0 }]], [1 * M, [{ start: 0, end: 1 * M, flags: D }]]);
    expect(v(await mapStatusAt(top, 1 * M, 1 * M, counters()))).toEqual([1 * M, 1 * M, 0, false, true, false, null]);
    expect(drivers[1]?.calls).toEqual([]);
  });

  it('a bottom layer that is neither DATA nor ZERO (backing not opened): all false, no offset', async () => {
    const { top } = chain([1 * M, [{ start: 0, end: 1 * M, flags: OV, map: 0x50000 }], { skipped: true }]);
    expect(await mapStatusAt(top, 0, 1 * M, counters())).toEqual({
      start: 0, length: 1 * M, depth: 0, present: false, zero: false, data: false, offset: null, filename: null,
    });
  });

  it('UNALLOCATED_ALLOC without backing: not present, zero, with offset and file (E4)', async () => {
    const { top } = chain([1 * M, [{ start: 0, end: 1 * M, flags: OV, map: 0x50000 }]]);
    expect(await mapStatusAt(top, 0, 4096, counters())).toMatchObject({ present: false, zero: true, data: false, offset: 0x50000, filename: 'l0.qcow2' });
  });
});

describe('mapEntries', () => {
  it('merges contiguous data and keeps breaks where the host offset jumps', async () => {
    const { top } = chain([1 * M, [
      { start: 0, end: 64 * K, flags: D | OV, map: 0x50000 },
      { start: 64 * K, end: 128 * K, flags: D | OV, map: 0x60000 },
      { start: 128 * K, end: 192 * K, flags: D | OV, map: 0x90000 },
      { start: 192 * K, end: 1 * M, flags: 0 },
    ]]);
    expect((await entries(top, { end: 1 * M })).map(v)).toEqual([
      [0, 128 * K, 0, true, false, true, 0x50000],
      [128 * K, 64 * K, 0, true, false, true, 0x90000],
      [192 * K, 1 * M - 192 * K, 0, false, true, false, null],
    ]);
  });

  it('contiguous offsets in different files do not merge (the file name blocks it)', async () => {
    const other = new MemoryFile(new Uint8Array(0), { path: 'data.raw' });
    const { top } = chain([128 * K, [
      { start: 0, end: 64 * K, flags: D | OV, map: 0 },
      { start: 64 * K, end: 128 * K, flags: D | OV, map: 64 * K, file: other },
    ]]);
    const es = await entries(top, { end: 128 * K });
    expect(es.map((e) => [e.start, e.length, e.filename])).toEqual([
      [0, 64 * K, 'l0.qcow2'],
      [64 * K, 64 * K, 'data.raw'],
    ]);
  });

  it('data without an offset (compressed) merges across clusters (E1 c.qcow2)', async () => {
    const { top } = chain([256 * K, [0, 1, 2, 3].map((i) => ({ start: i * 64 * K, end: (i + 1) * 64 * K, flags: D }))]);
    expect((await entries(top, { end: 256 * K })).map(v)).toEqual([[0, 256 * K, 0, true, false, true, null]]);
  });

  it('E1: every cluster kind, exactly as qemu-img map --output=json prints them', async () => {
    const { top } = chain([1 * M, [
      { start: 0, end: 64 * K, flags: D | OV, map: 0x50000 },
      { start: 64 * K, end: 128 * K, flags: 0 },
      { start: 128 * K, end: 192 * K, flags: Z },
      { start: 192 * K, end: 256 * K, flags: 0 },
      { start: 256 * K, end: 320 * K, flags: D | OV, map: 0x60000 },
      { start: 320 * K, end: 512 * K, flags: 0 },
      { start: 512 * K, end: 576 * K, flags: D },
      { start: 576 * K, end: 640 * K, flags: 0 },
      { start: 640 * K, end: 704 * K, flags: Z },
      { start: 704 * K, end: 1 * M, flags: 0 },
    ]]);
    expect((await entries(top, { end: 1 * M })).map(v)).toEqual([
      [0, 65536, 0, true, false, true, 327680],
      [65536, 65536, 0, false, true, false, null],
      [131072, 65536, 0, true, true, false, null],
      [196608, 65536, 0, false, true, false, null],
      [262144, 65536, 0, true, false, true, 393216],
      [327680, 196608, 0, false, true, false, null],
      [524288, 65536, 0, true, false, true, null],
      [589824, 65536, 0, false, true, false, null],
      [655360, 65536, 0, true, true, false, null],
      [720896, 327680, 0, false, true, false, null],
    ]);
  });

  it('an unaligned start: the first entry starts there, its offset shifted (-s 1000, E1)', async () => {
    const { top } = chain([1 * M, [
      { start: 0, end: 64 * K, flags: D | OV, map: 0x50000 },
      { start: 64 * K, end: 1 * M, flags: 0 },
    ]]);
    expect((await entries(top, { start: 1000, end: 71000 })).map(v)).toEqual([
      [1000, 64536, 0, true, false, true, 328680],
      [65536, 5464, 0, false, true, false, null],
    ]);
  });

  it('runs longer than one probe (1 GiB) are merged into one entry', async () => {
    const { top, drivers } = chain([3 * G, [{ start: 0, end: 3 * G, flags: 0 }]]);
    expect((await entries(top, { end: 3 * G })).map(v)).toEqual([[0, 3 * G, 0, false, true, false, null]]);
    expect(drivers[0]?.calls.map((c) => c.bytes)).toEqual([G, G, G]);
  });

  it.each([
    ['start == end', 1 * M, 1 * M],
    ['start > end', 2 * M, 1 * M],
    ['an empty image', 0, 0],
  ])('%s: a single zero-length entry at start', async (_n, start, end) => {
    const { top, drivers } = chain([1 * M, [{ start: 0, end: 1 * M, flags: D }]]);
    for (const human of [false, true]) {
      expect(await walk(top, { start, end, human })).toEqual([[
        { start, length: 0, depth: 0, present: false, zero: false, data: false, offset: null, filename: null },
      ]]);
    }
    expect(drivers[0]?.calls).toEqual([]);
  });

  it('entries come in batches of the requested size, in order', async () => {
    const segs = Array.from({ length: 10 }, (_, i) => ({ start: i * 4 * K, end: (i + 1) * 4 * K, flags: i % 2 === 0 ? D : Z }));
    const { top } = chain([40 * K, segs]);
    const batches = await walk(top, { end: 40 * K, batch: 3 });
    expect(batches.map((b) => b.length)).toEqual([3, 3, 3, 1]);
    expect(batches.flat().map((e) => e.start)).toEqual(segs.map((s) => s.start));
  });

  describe('human mode', () => {
    // data, then DATA|ZERO with offset (RECURSE-detected zero), then ZERO_ALLOC with offset.
    const mk = () => chain([12 * K, [
      { start: 0, end: 4 * K, flags: D | OV, map: 0 },
      { start: 4 * K, end: 8 * K, flags: D | Z | OV, map: 4 * K },
      { start: 8 * K, end: 12 * K, flags: Z | OV, map: 8 * K },
    ]]);

    it('JSON keeps ZERO|DATA apart from ZERO', async () => {
      expect((await entries(mk().top, { end: 12 * K })).map(v)).toEqual([
        [0, 4 * K, 0, true, false, true, 0],
        [4 * K, 4 * K, 0, true, true, true, 4 * K],
        [8 * K, 4 * K, 0, true, true, false, 8 * K],
      ]);
    });

    it('after a printed entry, the next non-plain-data entry becomes zero-only and merges further', async () => {
      expect((await entries(mk().top, { end: 12 * K, human: true })).map(v)).toEqual([
        [0, 4 * K, 0, true, false, true, 0],
        [4 * K, 8 * K, 0, true, true, false, 4 * K],
      ]);
    });

    it('the first entry is never normalised', async () => {
      const { top } = chain([8 * K, [
        { start: 0, end: 4 * K, flags: D | Z | OV, map: 0 },
        { start: 4 * K, end: 8 * K, flags: Z | OV, map: 4 * K },
      ]]);
      expect((await entries(top, { end: 8 * K, human: true })).map(v)).toEqual([
        [0, 4 * K, 0, true, true, true, 0],
        [4 * K, 4 * K, 0, true, true, false, 4 * K],
      ]);
    });

    it('normalisation still needs equal depth, presence and contiguity to merge', async () => {
      const { top } = chain([12 * K, [
        { start: 0, end: 4 * K, flags: D | OV, map: 0 },
        { start: 4 * K, end: 8 * K, flags: D | Z | OV, map: 4 * K },
        { start: 8 * K, end: 12 * K, flags: 0 },
      ]]);
      expect((await entries(top, { end: 12 * K, human: true })).map(v)).toEqual([
        [0, 4 * K, 0, true, false, true, 0],
        [4 * K, 4 * K, 0, true, true, false, 4 * K],
        [8 * K, 4 * K, 0, false, true, false, null],
      ]);
    });

    it('stops after the first data entry without an offset (the printer fails there)', async () => {
      const { top, drivers } = chain([16 * K, [
        { start: 0, end: 4 * K, flags: D | OV, map: 0x50000 },
        { start: 4 * K, end: 12 * K, flags: D },
        { start: 12 * K, end: 16 * K, flags: D | OV, map: 0x60000 },
      ]]);
      const human = (await entries(top, { end: 16 * K, human: true })).map(v);
      expect(human).toEqual([
        [0, 4 * K, 0, true, false, true, 0x50000],
        [4 * K, 8 * K, 0, true, false, true, null],
      ]);
      expect(drivers[0]?.calls.map((c) => c.offset)).toEqual([0, 4 * K, 12 * K]);
      // JSON lists everything.
      expect((await entries(top, { end: 16 * K })).map(v)).toHaveLength(3);
    });

    it('a trailing data entry without an offset is still delivered (for the printer to fail on)', async () => {
      const { top } = chain([8 * K, [
        { start: 0, end: 4 * K, flags: Z },
        { start: 4 * K, end: 8 * K, flags: D },
      ]]);
      expect((await entries(top, { end: 8 * K, human: true })).map(v)).toEqual([
        [0, 4 * K, 0, true, true, false, null],
        [4 * K, 4 * K, 0, true, false, true, null],
      ]);
    });

    it('a first entry of data without an offset is delivered alone', async () => {
      const { top } = chain([8 * K, [
        { start: 0, end: 4 * K, flags: D },
        { start: 4 * K, end: 8 * K, flags: D | OV, map: 0 },
      ]]);
      expect((await entries(top, { end: 8 * K, human: true })).map(v)).toEqual([[0, 4 * K, 0, true, false, true, null]]);
    });
  });
});
