/**
 * Block status over a chain (src/status/above.ts; QEMU 7.2
 * `bdrv_co_common_block_status_above`, QEMU-SEMANTICS.md §3) over fake drivers: depth,
 * narrowing of the run by each visited layer, stopping at the first allocating layer,
 * falling through to the bottom, a short lower layer answering ZERO|ALLOCATED with the
 * upper layer's pnum, EOF handling, `base` and `includeBase`. Driver calls are counted.
 */
import { describe, expect, it } from 'vitest';
import {
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_EOF,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_ZERO,
  type StatusMode,
} from '../../src/formats/driver.js';
import { blockStatusAbove } from '../../src/status/above.js';
import { ChainNode } from '../../src/status/chain-node.js';
import type { StatusCounters } from '../../src/status/one-layer.js';
import { FakeDriver, type Seg } from '../helpers/fake-driver.js';
import { MemoryFile } from '../helpers/memory-file.js';

const D = BDRV_BLOCK_DATA;
const Z = BDRV_BLOCK_ZERO;
const OV = BDRV_BLOCK_OFFSET_VALID;
const A = BDRV_BLOCK_ALLOCATED;
const EOF = BDRV_BLOCK_EOF;
const K = 1024;
const M = 1024 * 1024;



/** A chain from `layers` (top first): each `[length, segments]`. */
function chain(...layers: Array<[number, Seg[]]>): { nodes: ChainNode[]; drivers: FakeDriver[] } {
  const drivers = layers.map(([len, segs], i) => new FakeDriver(len, segs, { file: new MemoryFile(new Uint8Array(0), { path: `l${i}.qcow2` }) }));
  const nodes = drivers.map((d, i) => new ChainNode(d, `l${i}.qcow2`, i));
  nodes.forEach((n, i) => {
    n.backing = nodes[i + 1] ?? null;
  });
  return { nodes, drivers };
}

const at = <T>(a: readonly T[], i: number): T => {
  const v = a[i];
  if (v === undefined) throw new Error(`no element ${i}`);
  return v;
};

async function above(
  top: ChainNode,
  base: ChainNode | null,
  includeBase: boolean,
  mode: StatusMode,
  offset: number,
  bytes: number,
) {
  const c: StatusCounters = { driverCalls: 0 };
  const r = await blockStatusAbove(top, base, includeBase, mode, offset, bytes, c);
  return { r, calls: c.driverCalls };
}

const all = (len: number, flags: number, map?: number): Seg[] => [
  map === undefined ? { start: 0, end: len, flags } : { start: 0, end: len, flags, map },
];

describe('blockStatusAbove', () => {
  it('top === base without includeBase: nothing is asked, depth 0, the whole request', async () => {
    const { nodes } = chain([1 * M, all(1 * M, D)]);
    const top = at(nodes, 0);
    const { r, calls } = await above(top, top, false, 'mapping', 0, 64 * K);
    expect(r).toEqual({ flags: 0, pnum: 64 * K, map: 0, file: null, depth: 0 });
    expect(calls).toBe(0);
  });

  it('top allocates: depth 1, one driver call', async () => {
    const { nodes, drivers } = chain([1 * M, all(1 * M, D | OV, 0x50000)], [1 * M, all(1 * M, D)]);
    const { r, calls } = await above(at(nodes, 0), null, false, 'mapping', 4096, 64 * K);
    expect(r).toMatchObject({ flags: D | OV | A, pnum: 64 * K, map: 0x50000 + 4096, depth: 1 });
    expect(r.file).toBe(at(drivers, 0).file);
    expect(calls).toBe(1);
    expect(at(drivers, 1).calls).toEqual([]);
  });

  it('top defers, the backing layer allocates: depth 2; the lower layer only sees the prefix the top reported', async () => {
    const { nodes, drivers } = chain(
      [1 * M, [{ start: 0, end: 64 * K, flags: 0 }, { start: 64 * K, end: 1 * M, flags: D }]],
      [1 * M, all(1 * M, D | OV, 0x70000)],
    );
    const { r, calls } = await above(at(nodes, 0), null, false, 'mapping', 0, 1 * M);
    expect(at(drivers, 1).calls).toEqual([{ offset: 0, bytes: 64 * K, mode: 'mapping' }]);
    expect(r).toMatchObject({ flags: D | OV | A, pnum: 64 * K, map: 0x70000, depth: 2 });
    expect(r.file).toBe(at(drivers, 1).file);
    expect(calls).toBe(2);
  });

  it('a lower layer can narrow the run further', async () => {
    const { nodes } = chain(
      [1 * M, all(1 * M, 0)],
      [1 * M, [{ start: 0, end: 4 * K, flags: 0 }, { start: 4 * K, end: 1 * M, flags: D }]],
      [1 * M, all(1 * M, Z)],
    );
    const { r } = await above(at(nodes, 0), null, false, 'allocation', 0, 1 * M);
    expect(r).toMatchObject({ flags: Z | A, pnum: 4 * K, depth: 3 });
  });

  it('nothing allocated: the bottom layer\'s answer (ZERO, no ALLOCATED), depth = number of layers', async () => {
    const { nodes, drivers } = chain([1 * M, all(1 * M, 0)], [1 * M, all(1 * M, 0)], [1 * M, all(1 * M, 0)]);
    const { r, calls } = await above(at(nodes, 0), null, false, 'mapping', 128 * K, 256 * K);
    expect(r).toEqual({ flags: Z, pnum: 256 * K, map: 0, file: null, depth: 3 });
    expect(calls).toBe(3);
    expect(drivers.map((d) => d.calls.length)).toEqual([1, 1, 1]);
  });

  it('nothing allocated, offset-bearing bottom (UNALLOCATED_ALLOC): its map and file are returned', async () => {
    const { nodes, drivers } = chain([1 * M, all(1 * M, 0)], [1 * M, all(1 * M, OV, 0x90000)]);
    const { r } = await above(at(nodes, 0), null, false, 'mapping', 512, 512);
    expect(r).toMatchObject({ flags: OV | Z, pnum: 512, map: 0x90200, depth: 2 });
    expect(r.file).toBe(at(drivers, 1).file);
  });

  describe('short lower layer', () => {
    // E3: top 2 MiB over a 1 MiB layer.
    const mk = () => chain([2 * M, all(2 * M, 0)], [1 * M, all(1 * M, D)]);

    it.each(['mapping', 'allocation'] as const)(
      '%s: past its end it counts as allocated zeroes, with the upper layer\'s pnum; EOF of the top kept',
      async (mode) => {
        const { nodes, drivers } = mk();
        const { r, calls } = await above(at(nodes, 0), null, false, mode, 1 * M + 512 * K, 512 * K);
        expect(r).toEqual({ flags: Z | A | EOF, pnum: 512 * K, map: 0, file: null, depth: 2 });
        expect(calls).toBe(1); // the short layer's driver is not asked
        expect(at(drivers, 1).calls).toEqual([]);
      },
    );

    it('not at the top\'s end: ZERO|ALLOCATED without EOF', async () => {
      const { nodes } = chain([2 * M, [{ start: 0, end: 1536 * K, flags: 0 }, { start: 1536 * K, end: 2 * M, flags: D }]], [1 * M, all(1 * M, D)]);
      const { r } = await above(at(nodes, 0), null, false, 'mapping', 1 * M, 1 * M);
      expect(r).toEqual({ flags: Z | A, pnum: 512 * K, map: 0, file: null, depth: 2 });
    });

    it('a range starting below the lower layer\'s end is cut exactly at that end; the lower EOF is dropped', async () => {
      const { nodes } = mk();
      const { r } = await above(at(nodes, 0), null, false, 'mapping', 512 * K, 1536 * K);
      expect(r).toEqual({ flags: D | A, pnum: 512 * K, map: 0, file: null, depth: 2 });
    });
  });

  describe('EOF', () => {
    it('the top\'s EOF is re-added when an allocating lower layer reaches the same end', async () => {
      const { nodes } = chain([1 * M, all(1 * M, 0)], [2 * M, all(2 * M, D)]);
      const { r } = await above(at(nodes, 0), null, false, 'mapping', 512 * K, 1 * M);
      expect(r).toMatchObject({ flags: D | A | EOF, pnum: 512 * K, depth: 2 });
    });

    it('an allocating lower layer\'s own EOF is not the top\'s EOF', async () => {
      const { nodes } = chain([2 * M, all(2 * M, 0)], [1 * M, all(1 * M, D)]);
      const { r } = await above(at(nodes, 0), null, false, 'mapping', 0, 2 * M);
      expect(r).toMatchObject({ flags: D | A, pnum: 1 * M, depth: 2 });
    });

    it('an unallocated bottom layer\'s answer is returned as is, its EOF included (QEMU drops EOF only for ALLOCATED)', async () => {
      const { nodes } = chain([2 * M, all(2 * M, 0)], [1 * M, all(1 * M, 0)]);
      const { r } = await above(at(nodes, 0), null, false, 'mapping', 512 * K, 1536 * K);
      expect(r).toEqual({ flags: Z | EOF, pnum: 512 * K, map: 0, file: null, depth: 2 });
    });

    it('offset at or past the top\'s end: the top\'s EOF answer, depth 1', async () => {
      const { nodes, drivers } = chain([1 * M, all(1 * M, 0)], [2 * M, all(2 * M, D)]);
      const { r, calls } = await above(at(nodes, 0), null, false, 'mapping', 1 * M, 4096);
      expect(r).toEqual({ flags: EOF, pnum: 0, map: 0, file: null, depth: 1 });
      expect(calls).toBe(0);
      expect(at(drivers, 1).calls).toEqual([]);
    });
  });

  describe('base and includeBase', () => {
    const mk = () => chain([1 * M, all(1 * M, 0)], [1 * M, all(1 * M, 0)], [1 * M, all(1 * M, D)]);

    it('base excluded: the walk stops above it (the last visited layer\'s answer)', async () => {
      const { nodes, drivers } = mk();
      const { r } = await above(at(nodes, 0), at(nodes, 2), false, 'allocation', 0, 64 * K);
      expect(r).toEqual({ flags: 0, pnum: 64 * K, map: 0, file: null, depth: 2 });
      expect(at(drivers, 2).calls).toEqual([]);
    });

    it('base = the top\'s backing file (bdrv_block_status): only the top is asked', async () => {
      const { nodes, drivers } = mk();
      const { r } = await above(at(nodes, 0), at(nodes, 1), false, 'allocation', 0, 64 * K);
      expect(r).toMatchObject({ flags: 0, depth: 1 });
      expect(at(drivers, 1).calls).toEqual([]);
    });

    it('includeBase: base itself is asked', async () => {
      const { nodes } = mk();
      const { r } = await above(at(nodes, 0), at(nodes, 2), true, 'allocation', 0, 64 * K);
      expect(r).toMatchObject({ flags: D | A, pnum: 64 * K, depth: 3 });
    });

    it('includeBase stops at base even when base does not allocate', async () => {
      const { nodes, drivers } = mk();
      const { r } = await above(at(nodes, 0), at(nodes, 1), true, 'allocation', 0, 64 * K);
      expect(r).toEqual({ flags: 0, pnum: 64 * K, map: 0, file: null, depth: 2 });
      expect(at(drivers, 2).calls).toEqual([]);
    });

    it('includeBase with top === base (bdrv_is_allocated): the top alone, depth 1', async () => {
      const { nodes } = mk();
      const top = at(nodes, 0);
      const { r, calls } = await above(top, top, true, 'allocation', 0, 64 * K);
      expect(r).toEqual({ flags: 0, pnum: 64 * K, map: 0, file: null, depth: 1 });
      expect(calls).toBe(1);
    });
  });
});
