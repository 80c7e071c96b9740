/**
 * Guest -> host lookups (src/formats/qcow2/host-offset.ts) against QEMU's
 * `qcow2_get_host_offset` and `count_contiguous_subclusters` (QEMU-SEMANTICS.md §4.2-4.4):
 * run lengths within one L2 table, contiguity rules per type, compressed clusters one at a
 * time, unallocated L1 entries, unaligned starts, the INT_MAX cap, and every corruption
 * error (HOSTILE-IMAGES.md §2, §6c) with its code.
 */
import { describe, expect, it } from 'vitest';
import { l2Words } from '../../helpers/l2-words.js';
import { CorruptImageError, UnsupportedImageError } from '../../../src/errors.js';
import { emptyRunMemo, getHostOffset, type HostMapping, type MappingGeometry, type RunMemo } from '../../../src/formats/qcow2/host-offset.js';
import { SubclusterType } from '../../../src/formats/qcow2/l2-entry.js';
import type { L2Table } from '../../../src/formats/qcow2/l2-cache.js';
import { buildL2Runs } from '../../../src/formats/qcow2/l2-runs.js';

const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;
const INT_MAX = 0x7fffffff;

function geometry(clusterBits: number, o: { extendedL2?: boolean; version?: 2 | 3; hasDataFile?: boolean } = {}): MappingGeometry {
  const clusterSize = 2 ** clusterBits;
  const extendedL2 = o.extendedL2 ?? false;
  const spc = extendedL2 ? 32 : 1;
  return {
    file: 'h.qcow2',
    version: o.version ?? 3,
    clusterBits,
    clusterSize,
    l2Entries: clusterSize / (extendedL2 ? 16 : 8),
    extendedL2,
    subclustersPerCluster: spc,
    subclusterSize: clusterSize / spc,
    hasDataFile: o.hasDataFile ?? false,
  };
}


/** An extended L2 table: [entry, bitmap] pairs; bitmap = (zero bits << 32) | alloc bits. */
function extWords(entries: ReadonlyArray<readonly [bigint, bigint]>, total: number): Uint32Array {
  return l2Words(entries.flatMap(([e, b]) => [e, b]), total * 2);
}
const bitmap = (alloc: number, zero: number): bigint => (BigInt(zero >>> 0) << 32n) | BigInt(alloc >>> 0);

const L2_AT = 0x400000;

/** A cached table as the driver keeps it: words, and the run list for standard L2. */
function tableOf(g: MappingGeometry, l2: Uint32Array): L2Table {
  return { words: l2, runs: g.extendedL2 ? null : buildL2Runs(l2, g.clusterSize, g.hasDataFile) };
}

/** The outcome of `fn`: its value, or the code and message it threw. */
function outcome<T>(fn: () => T): T | { threw: string } {
  try {
    return fn();
  } catch (e) {
    return { threw: `${(e as CorruptImageError).code}: ${(e as Error).message}` };
  }
}

/**
 * Looks up with one L2 table at L2_AT (L1 entry 0); counts lookups. Standard tables are
 * looked up with their run list, and must answer exactly as the scan without one.
 */
function lookup(g: MappingGeometry, l2: Uint32Array, offset: number, bytes: number, l1 = l2Words([COPIED | BigInt(L2_AT)])) {
  let lookups = 0;
  const table = tableOf(g, l2);
  const r = () => getHostOffset(g, l1, (o) => {
    lookups++;
    return o === L2_AT ? table : undefined;
  }, offset, bytes);
  if (!g.extendedL2) {
    const scanned = outcome(() => getHostOffset(g, l1, (o) => (o === L2_AT ? { words: l2, runs: null } : undefined), offset, bytes));
    expect(outcome(r)).toEqual(scanned);
  }
  lookups = 0;
  const got = r();
  return { r: got as HostMapping, lookups, raw: got };
}

const expectThrow = (fn: () => unknown, cls: typeof CorruptImageError | typeof UnsupportedImageError, code: string) => {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(cls);
  expect((caught as CorruptImageError).code).toBe(code);
  return caught as CorruptImageError;
};

const g9 = geometry(9); // 512-byte clusters, 64 entries per L2 table (32 KiB span)
const g12 = geometry(12); // 4 KiB clusters, 512 entries

describe('getHostOffset: runs within one L2 table (standard L2)', () => {
  const cs = 512;
  const data = (i: number) => COPIED | BigInt(0x10000 + i * cs);

  it('contiguous normal clusters merge; a host gap ends the run', () => {
    const l2 = l2Words([data(0), data(1), data(2), COPIED | 0x40000n], 64);
    expect(lookup(g9, l2, 0, 1 << 20).r).toMatchObject({ type: SubclusterType.Normal, bytes: 3 * cs, hostOffset: 0x10000 });
  });

  it('an unaligned start inside a cluster shifts the host offset and shortens the run', () => {
    const l2 = l2Words([data(0), data(1), data(2), COPIED | 0x40000n], 64);
    expect(lookup(g9, l2, 100, 1 << 20).r).toMatchObject({ bytes: 3 * cs - 100, hostOffset: 0x10000 + 100 });
    expect(lookup(g9, l2, cs + 511, 1 << 20).r).toMatchObject({ bytes: cs + 1, hostOffset: 0x10000 + cs + 511 });
  });

  it('the run is capped by the request (bytes is a hint only for the cap)', () => {
    const l2 = l2Words([data(0), data(1), data(2)], 64);
    expect(lookup(g9, l2, 0, 700).r.bytes).toBe(700);
    expect(lookup(g9, l2, 100, 700).r.bytes).toBe(700);
    expect(lookup(g9, l2, 100, 1).r.bytes).toBe(1);
  });

  it('never crosses the end of the L2 table', () => {
    const l2 = l2Words(Array.from({ length: 64 }, (_, i) => data(i)), 64);
    expect(lookup(g9, l2, 0, 1 << 30).r.bytes).toBe(64 * cs);
    expect(lookup(g9, l2, 60 * cs + 10, 1 << 30).r).toMatchObject({ bytes: 4 * cs - 10, hostOffset: 0x10000 + 60 * cs + 10 });
    expect(lookup(g9, l2, 63 * cs, 1 << 30).r.bytes).toBe(cs);
  });

  it('a second L1 entry maps the next 32 KiB through its own table', () => {
    const l1 = l2Words([0n, COPIED | BigInt(L2_AT)]);
    const l2 = l2Words([data(0)], 64);
    expect(lookup(g9, l2, 64 * cs + 5, 1 << 20, l1).r).toMatchObject({ type: SubclusterType.Normal, bytes: cs - 5, hostOffset: 0x10005 });
  });

  it('zero-alloc clusters merge only when host-contiguous', () => {
    const l2 = l2Words([0x10001n, 0x10201n, 0x30001n], 64);
    expect(lookup(g9, l2, 0, 1 << 20).r).toMatchObject({ type: SubclusterType.ZeroAlloc, bytes: 2 * cs, hostOffset: 0x10000 });
  });

  it('zero-plain clusters merge regardless of offsets and have no host offset', () => {
    const l2 = l2Words([1n, COPIED | 1n, 1n, 0n], 64);
    expect(lookup(g9, l2, 10, 1 << 20).r).toMatchObject({ type: SubclusterType.ZeroPlain, bytes: 3 * cs - 10, hostOffset: 0 });
  });

  it('different zero kinds do not merge (ZeroPlain then ZeroAlloc, and back)', () => {
    expect(lookup(g9, l2Words([1n, 0x10201n], 64), 0, 1 << 20).r).toMatchObject({ type: SubclusterType.ZeroPlain, bytes: cs });
    expect(lookup(g9, l2Words([0x10001n, 1n], 64), 0, 1 << 20).r).toMatchObject({ type: SubclusterType.ZeroAlloc, bytes: cs });
  });

  it('normal and zero-alloc do not merge even when contiguous', () => {
    expect(lookup(g9, l2Words([data(0), data(1) | 1n], 64), 0, 1 << 20).r.bytes).toBe(cs);
  });

  it('unallocated entries merge up to the end of the table', () => {
    const l2 = l2Words([0n, COPIED, 0n], 64);
    expect(lookup(g9, l2, 0, 1 << 30).r).toMatchObject({ type: SubclusterType.UnallocatedPlain, bytes: 64 * cs, hostOffset: 0 });
    const l2b = l2Words([0n, 0n, data(2)], 64);
    expect(lookup(g9, l2b, 3, 1 << 30).r).toMatchObject({ type: SubclusterType.UnallocatedPlain, bytes: 2 * cs - 3 });
  });

  it('compressed clusters are answered one at a time, with the raw entry and no host offset', () => {
    const c0 = COMPRESSED | 0x12345n;
    const l2 = l2Words([c0, COMPRESSED | 0x22345n, COMPRESSED | 0x32345n], 64);
    const { r } = lookup(g9, l2, 0, 1 << 20);
    expect(r).toMatchObject({ type: SubclusterType.Compressed, bytes: cs, hostOffset: 0 });
    expect([r.entryHi, r.entryLo]).toEqual([Number(c0 >> 32n), Number(c0 & 0xffffffffn)]);
    expect(lookup(g9, l2, cs + 100, 1 << 20).r).toMatchObject({ type: SubclusterType.Compressed, bytes: cs - 100 });
  });

  it('the L2 offset is taken from bits 9..55 of the L1 entry (flags and reserved bits ignored)', () => {
    const l1 = l2Words([0xff000000000001ffn | BigInt(L2_AT)]);
    expect(lookup(g9, l2Words([data(0)], 64), 0, cs, l1).r.type).toBe(SubclusterType.Normal);
  });
});

describe('getHostOffset: unallocated L1 entries', () => {
  it('L1 entry 0: the whole remaining L2 span is UnallocatedPlain, no table lookup', () => {
    const { r, lookups } = lookup(g9, l2Words([], 64), 5 * 512 + 7, 1 << 30, l2Words([0n]));
    expect(r).toEqual({ type: SubclusterType.UnallocatedPlain, bytes: 59 * 512 - 7, hostOffset: 0, entryHi: 0, entryLo: 0 });
    expect(lookups).toBe(0);
  });

  it('L1 entry with only COPIED set (offset 0) is unallocated', () => {
    expect(lookup(g9, l2Words([], 64), 0, 1 << 30, l2Words([COPIED])).r.bytes).toBe(64 * 512);
  });

  it('beyond the L1 table (l1_index >= l1_size) is unallocated', () => {
    const { r, lookups } = lookup(g9, l2Words([], 64), 10 * 32768 + 1, 100, l2Words([COPIED | BigInt(L2_AT)]));
    expect(r).toMatchObject({ type: SubclusterType.UnallocatedPlain, bytes: 100 });
    expect(lookups).toBe(0);
  });

  it('a missing L2 table is requested (NeedL2), not guessed', () => {
    const r = getHostOffset(g9, l2Words([COPIED | 0x200000n]), () => undefined, 0, 512);
    expect(r).toEqual({ needL2: 0x200000 });
  });
});

describe('getHostOffset: the INT_MAX cap', () => {
  const g21 = geometry(21); // 2 MiB clusters, 262144 entries: a 512 GiB span per table

  it('an unallocated span is capped at INT_MAX bytes (also from an unaligned start)', () => {
    expect(lookup(g21, l2Words([], 1), 0, 2 ** 40, l2Words([0n])).r.bytes).toBe(INT_MAX);
    expect(lookup(g21, l2Words([], 1), 1000, 2 ** 40, l2Words([0n])).r.bytes).toBe(INT_MAX);
  });

  it('a contiguous data run is capped at INT_MAX bytes', () => {
    const n = 1100;
    const l2 = l2Words(Array.from({ length: n }, (_, i) => COPIED | BigInt((i + 1) * 2 ** 21)), 262144);
    const { r } = lookup(g21, l2, 0, 2 ** 40);
    expect(r).toMatchObject({ type: SubclusterType.Normal, bytes: INT_MAX, hostOffset: 2 ** 21 });
  });
});

describe('getHostOffset: extended L2 (subclusters)', () => {
  const g14 = geometry(14, { extendedL2: true }); // 16 KiB clusters, 512-byte subclusters, 1024 entries
  const cs = 16384;
  const sc = 512;

  it('a run of allocated subclusters inside a cluster', () => {
    const l2 = extWords([[COPIED | 0x50000n, bitmap(0x0000000f, 0)]], 1024);
    expect(lookup(g14, l2, 0, 1 << 20).r).toMatchObject({ type: SubclusterType.Normal, bytes: 4 * sc, hostOffset: 0x50000 });
    expect(lookup(g14, l2, sc + 10, 1 << 20).r).toMatchObject({ bytes: 3 * sc - 10, hostOffset: 0x50000 + sc + 10 });
  });

  it('UnallocatedAlloc subclusters carry a host offset', () => {
    const l2 = extWords([[COPIED | 0x50000n, bitmap(0x0000000f, 0)]], 1024);
    expect(lookup(g14, l2, 4 * sc, 1 << 20).r).toMatchObject({ type: SubclusterType.UnallocatedAlloc, bytes: cs - 4 * sc, hostOffset: 0x50000 + 4 * sc });
  });

  it('data continues into the next cluster when it is fully allocated to the end and host-contiguous (E4)', () => {
    const l2 = extWords([
      [COPIED | 0x50000n, bitmap(0xffffffff, 0)],
      [COPIED | 0x54000n, bitmap(0x0000ffff, 0)],
    ], 1024);
    expect(lookup(g14, l2, 0, 1 << 20).r).toMatchObject({ type: SubclusterType.Normal, bytes: cs + 16 * sc });
    // Started mid-cluster: sc 31 of cluster 0 then 16 subclusters of cluster 1.
    expect(lookup(g14, l2, 31 * sc, 1 << 20).r).toMatchObject({ bytes: 17 * sc, hostOffset: 0x50000 + 31 * sc });
  });

  it('no continuation when the first cluster\'s run ends before its last subcluster', () => {
    const l2 = extWords([
      [COPIED | 0x50000n, bitmap(0x7fffffff, 0)],
      [COPIED | 0x54000n, bitmap(0xffffffff, 0)],
    ], 1024);
    expect(lookup(g14, l2, 0, 1 << 20).r.bytes).toBe(31 * sc);
  });

  it('no continuation into a non-contiguous host cluster', () => {
    const l2 = extWords([
      [COPIED | 0x50000n, bitmap(0xffffffff, 0)],
      [COPIED | 0x60000n, bitmap(0xffffffff, 0)],
    ], 1024);
    expect(lookup(g14, l2, 0, 1 << 20).r.bytes).toBe(cs);
  });

  it('UnallocatedAlloc needs host contiguity; UnallocatedPlain and ZeroPlain do not', () => {
    const alloc = extWords([
      [COPIED | 0x50000n, 0n],
      [COPIED | 0x60000n, 0n],
    ], 1024);
    expect(lookup(g14, alloc, 0, 1 << 20).r).toMatchObject({ type: SubclusterType.UnallocatedAlloc, bytes: cs });
    const zeros = extWords([
      [0n, bitmap(0, 0xffffffff)],
      [0n, bitmap(0, 0xffffffff)],
      [0n, bitmap(0, 0x0000ffff)],
    ], 1024);
    expect(lookup(g14, zeros, 0, 1 << 20).r).toMatchObject({ type: SubclusterType.ZeroPlain, bytes: 2 * cs + 16 * sc });
  });

  it('the standard zero flag (bit 0) is ignored with extended L2', () => {
    const l2 = extWords([[1n, 0n]], 1024);
    expect(lookup(g14, l2, 0, cs).r.type).toBe(SubclusterType.UnallocatedPlain);
  });

  it('an invalid bitmap (alloc and zero both set) is QCOW2_INVALID_SUBCLUSTER_BITMAP', () => {
    const l2 = extWords([[COPIED | 0x50000n, bitmap(0x1, 0x80000001)]], 1024);
    const e = expectThrow(() => lookup(g14, l2, 0, cs), CorruptImageError, 'QCOW2_INVALID_SUBCLUSTER_BITMAP');
    expect(e.message).toContain('L2 index: 0x0');
  });

  it('an unallocated cluster with alloc bits is QCOW2_INVALID_SUBCLUSTER_BITMAP', () => {
    const l2 = extWords([[0n, bitmap(0x2, 0)]], 1024);
    expectThrow(() => lookup(g14, l2, 0, cs), CorruptImageError, 'QCOW2_INVALID_SUBCLUSTER_BITMAP');
  });

  it('an invalid bitmap in a lookahead cluster is an error too (count_contiguous_subclusters)', () => {
    const l2 = extWords([
      [COPIED | 0x50000n, bitmap(0xffffffff, 0)],
      [COPIED | 0x54000n, bitmap(0xffffffff, 0x1)],
    ], 1024);
    const e = expectThrow(() => lookup(g14, l2, 0, 2 * cs), CorruptImageError, 'QCOW2_INVALID_SUBCLUSTER_BITMAP');
    expect(e.message).toContain('L2 index: 0x1');
    // A request that stays inside cluster 0 never looks at cluster 1.
    expect(lookup(g14, l2, 0, cs).r.bytes).toBe(cs);
  });

  it('compressed clusters with extended L2: one cluster, bitmap ignored', () => {
    const l2 = extWords([[COMPRESSED | 0x12345n, 0n], [COMPRESSED | 0x22345n, 0n]], 1024);
    expect(lookup(g14, l2, 3 * sc, 1 << 20).r).toMatchObject({ type: SubclusterType.Compressed, bytes: cs - 3 * sc });
  });
});

describe('getHostOffset: corruption errors', () => {
  it('L2 table offset not cluster-aligned: QCOW2_L2_OFFSET_UNALIGNED (T1)', () => {
    const e = expectThrow(
      () => getHostOffset(g12, l2Words([COPIED | 0x40200n]), () => undefined, 0, 4096),
      CorruptImageError,
      'QCOW2_L2_OFFSET_UNALIGNED',
    );
    expect(e.message).toContain('0x40200');
    expect(e.message).toContain('L1 index: 0x0');
  });

  it('L2 table offset of 2^53 or more: UnsupportedImageError QCOW2_OFFSET_TOO_LARGE', () => {
    expectThrow(() => getHostOffset(g12, l2Words([COPIED | (1n << 53n)]), () => undefined, 0, 4096), UnsupportedImageError, 'QCOW2_OFFSET_TOO_LARGE');
  });

  it('data cluster offset not cluster-aligned: QCOW2_CLUSTER_OFFSET_UNALIGNED (T4), also for zero-alloc', () => {
    const e = expectThrow(() => lookup(g12, l2Words([COPIED | 0x50200n], 512), 0, 4096), CorruptImageError, 'QCOW2_CLUSTER_OFFSET_UNALIGNED');
    expect(e.message).toContain('0x50200');
    expectThrow(() => lookup(g12, l2Words([0x52a01n], 512), 0, 4096), CorruptImageError, 'QCOW2_CLUSTER_OFFSET_UNALIGNED');
  });

  it('a data cluster offset of 2^53 or more: QCOW2_OFFSET_TOO_LARGE', () => {
    expectThrow(() => lookup(g12, l2Words([COPIED | (1n << 54n)], 512), 0, 4096), UnsupportedImageError, 'QCOW2_OFFSET_TOO_LARGE');
  });

  it('an unaligned lookahead cluster only ends the run (it is checked when reached)', () => {
    const l2 = l2Words([COPIED | 0x50000n, COPIED | 0x51200n], 512);
    expect(lookup(g12, l2, 0, 8192).r.bytes).toBe(4096);
  });

  it.each([
    ['zero-plain', 1n],
    ['zero-alloc', 0x50001n],
  ])('a %s cluster in a v2 image: QCOW2_ZERO_IN_V2 (T10)', (_n, entry) => {
    const g = geometry(12, { version: 2 });
    expectThrow(() => lookup(g, l2Words([entry], 512), 100, 4096), CorruptImageError, 'QCOW2_ZERO_IN_V2');
  });

  it('v2: normal and unallocated clusters are fine', () => {
    const g = geometry(12, { version: 2 });
    expect(lookup(g, l2Words([COPIED | 0x50000n], 512), 0, 4096).r.type).toBe(SubclusterType.Normal);
  });

  it('compressed cluster with an external data file: QCOW2_COMPRESSED_WITH_DATA_FILE (T12)', () => {
    const g = geometry(12, { hasDataFile: true });
    expectThrow(() => lookup(g, l2Words([COMPRESSED | 0x50000n], 512), 0, 4096), CorruptImageError, 'QCOW2_COMPRESSED_WITH_DATA_FILE');
  });

  it('external data file: host offset must equal the guest offset (QCOW2_DATA_FILE_OFFSET_MISMATCH)', () => {
    const g = geometry(12, { hasDataFile: true });
    const l2 = l2Words([COPIED | 0x50000n, COPIED | 0x1000n], 512);
    const e = expectThrow(() => lookup(g, l2, 0, 4096), CorruptImageError, 'QCOW2_DATA_FILE_OFFSET_MISMATCH');
    expect(e.message).toContain('0x50000');
    expect(lookup(g, l2, 4096 + 17, 4096).r).toMatchObject({ type: SubclusterType.Normal, hostOffset: 4096 + 17 });
  });

  it('external data file: offset 0 with COPIED at guest 0 is normal data at host 0', () => {
    const g = geometry(12, { hasDataFile: true });
    const l2 = l2Words([COPIED, COPIED | 0x1000n, COPIED | 0x2000n], 512);
    expect(lookup(g, l2, 0, 1 << 20).r).toMatchObject({ type: SubclusterType.Normal, hostOffset: 0, bytes: 3 * 4096 });
    expect(lookup(g, l2Words([0n], 512), 0, 4096).r.type).toBe(SubclusterType.UnallocatedPlain);
  });
});

describe('getHostOffset: the run memo (standard L2)', () => {
  const cs = 512;
  // A table of short runs: data x3 (contiguous), zero-plain x2, unallocated x2, zero-alloc x2
  // (contiguous), compressed, data x2 (contiguous), then unallocated to the end.
  const table = tableOf(g9, l2Words(
    [
      COPIED | 0x10000n, COPIED | 0x10200n, COPIED | 0x10400n,
      1n, 1n,
      0n, 0n,
      0x20001n, 0x20201n,
      COMPRESSED | 0x12345n,
      COPIED | 0x30000n, COPIED | 0x30200n,
    ],
    64,
  ));

  /** Walks [start, end) from each answer's end, with or without a memo; counts table lookups. */
  function walk(memo: RunMemo | undefined, start: number, end: number, step = (n: number) => n) {
    const out: Array<[number, SubclusterType, number, number]> = [];
    let lookups = 0;
    const l1 = l2Words([COPIED | BigInt(L2_AT)]);
    for (let off = start; off < end; ) {
      const r = getHostOffset(g9, l1, (o) => {
        lookups++;
        return o === L2_AT ? table : undefined;
      }, off, end - off, memo) as HostMapping;
      const n = step(r.bytes);
      out.push([off, r.type, n, r.type === SubclusterType.Compressed ? 0 : r.hostOffset]);
      off += n;
    }
    return { out, lookups };
  }

  it('an empty memo matches nothing', () => {
    expect(emptyRunMemo()).toMatchObject({ l2Offset: -1, first: 0, end: 0 });
  });

  it('a walk gives the same answers with and without a memo', () => {
    expect(walk(emptyRunMemo(), 0, 32 * 1024).out).toEqual(walk(undefined, 0, 32 * 1024).out);
  });

  it('a walk in small steps gives the same answers with and without a memo, with fewer table scans', () => {
    const small = (n: number) => Math.min(n, 200);
    const withMemo = walk(emptyRunMemo(), 50, 13 * cs, small);
    const without = walk(undefined, 50, 13 * cs, small);
    expect(withMemo.out).toEqual(without.out);
    expect(withMemo.lookups).toBeLessThan(without.lookups);
  });

  it('a lookup inside a remembered run needs no table and keeps the host offset arithmetic', () => {
    const memo = emptyRunMemo();
    const l1 = l2Words([COPIED | BigInt(L2_AT)]);
    let lookups = 0;
    const lk = (o: number) => {
      lookups++;
      return o === L2_AT ? table : undefined;
    };
    expect(getHostOffset(g9, l1, lk, 0, 100, memo)).toMatchObject({ type: SubclusterType.Normal, bytes: 100, hostOffset: 0x10000 });
    expect(memo).toMatchObject({ l2Offset: L2_AT, first: 0, end: 1, closed: false });
    // A request capped by the caller leaves the run open: a longer request rescans.
    expect(getHostOffset(g9, l1, lk, 300, 1 << 20, memo)).toMatchObject({ bytes: 3 * cs - 300, hostOffset: 0x10000 + 300 });
    expect(memo).toMatchObject({ first: 0, end: 3, closed: true });
    const n = lookups;
    expect(getHostOffset(g9, l1, lk, cs + 7, 1 << 20, memo)).toMatchObject({ type: SubclusterType.Normal, bytes: 2 * cs - 7, hostOffset: 0x10200 + 7 });
    expect(getHostOffset(g9, l1, lk, 2 * cs, 10, memo)).toMatchObject({ bytes: 10, hostOffset: 0x10400 });
    expect(lookups).toBe(n);
  });

  it('zero-alloc runs keep their host offsets; zero-plain runs have none', () => {
    const memo = emptyRunMemo();
    const l1 = l2Words([COPIED | BigInt(L2_AT)]);
    getHostOffset(g9, l1, () => table, 7 * cs, 1 << 20, memo);
    expect(getHostOffset(g9, l1, () => undefined, 8 * cs + 1, 1 << 20, memo)).toMatchObject({
      type: SubclusterType.ZeroAlloc, bytes: cs - 1, hostOffset: 0x20201,
    });
    getHostOffset(g9, l1, () => table, 3 * cs, 1 << 20, memo);
    expect(getHostOffset(g9, l1, () => undefined, 4 * cs, 1 << 20, memo)).toMatchObject({ type: SubclusterType.ZeroPlain, bytes: cs, hostOffset: 0 });
  });

  it('compressed clusters are not remembered', () => {
    const memo = emptyRunMemo();
    const l1 = l2Words([COPIED | BigInt(L2_AT)]);
    getHostOffset(g9, l1, () => table, 9 * cs, 1 << 20, memo);
    expect(memo.l2Offset).toBe(-1);
  });

  it('a memo for another L2 table (or another L1 range) is not used', () => {
    const memo = emptyRunMemo();
    const l1 = l2Words([COPIED | BigInt(L2_AT), COPIED | BigInt(L2_AT)]); // two L1 entries alias one table
    getHostOffset(g9, l1, () => table, 0, 1 << 20, memo);
    // Cluster 64 is entry 0 of the same table through L1 entry 1: a fresh lookup, same answer shape.
    let lookups = 0;
    const r = getHostOffset(g9, l1, () => {
      lookups++;
      return table;
    }, 64 * cs + 5, 1 << 20, memo);
    expect(lookups).toBe(1);
    expect(r).toMatchObject({ type: SubclusterType.Normal, bytes: 3 * cs - 5, hostOffset: 0x10005 });
  });

  it('extended L2 lookups do not use or fill the memo', () => {
    const g14 = geometry(14, { extendedL2: true });
    const memo = emptyRunMemo();
    const l2 = extWords([[COPIED | 0x50000n, bitmap(0xffffffff, 0)]], 1024);
    getHostOffset(g14, l2Words([COPIED | BigInt(L2_AT)]), () => tableOf(g14, l2), 0, 1 << 20, memo);
    expect(memo.l2Offset).toBe(-1);
  });
});
