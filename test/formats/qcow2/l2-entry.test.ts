/**
 * L2 entry classification (src/formats/qcow2/l2-entry.ts) against QEMU's
 * `qcow2_get_cluster_type`, `qcow2_get_subcluster_type` and
 * `qcow2_get_subcluster_range_type` (QEMU-SEMANTICS.md §4.2, §7.3): cluster and subcluster
 * types for standard and extended L2, run lengths inside a cluster (cto32/ctz32 edges),
 * and exact host offsets from the (hi, lo) word pair up to 2^53.
 */
import { describe, expect, it } from 'vitest';
import {
  ClusterType,
  SubclusterType,
  clusterType,
  entryOffset,
  entryOffsetIsZero,
  entryOffsetUnsafe,
  subclusterRange,
  subclusterType,
} from '../../../src/formats/qcow2/l2-entry.js';

/** (hi, lo) words of a 64-bit entry. */
const w = (e: bigint): [number, number] => [Number(e >> 32n), Number(e & 0xffffffffn)];
const ct = (e: bigint, extendedL2 = false, hasDataFile = false): ClusterType => {
  const [hi, lo] = w(e);
  return clusterType(hi, lo, extendedL2, hasDataFile);
};

const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

describe('entryOffset', () => {
  it('masks bits 9..55 exactly', () => {
    expect(entryOffset(...w(0x8000000000050000n))).toBe(0x50000);
    expect(entryOffset(...w(0x80000000000501ffn))).toBe(0x50000);
    expect(entryOffset(...w(0xff00000000000000n))).toBe(0);
    expect(entryOffset(...w(0x00000000000001ffn))).toBe(0);
  });

  it('is exact for offsets above 2^32 (high word bits) and with bit 31 of the low word', () => {
    expect(entryOffset(...w(0x0000000100000200n))).toBe(0x100000200);
    expect(entryOffset(...w(0x0000000080000000n))).toBe(0x80000000);
    expect(entryOffset(...w(0x00000123fffffe00n))).toBe(0x123fffffe00);
  });

  it('is exact up to 2^53 - 512', () => {
    expect(entryOffset(...w(0x001ffffffffffe00n))).toBe(2 ** 53 - 512);
    expect(Number.isSafeInteger(entryOffset(...w(0x001ffffffffffe00n)))).toBe(true);
  });

  it('T9: an unaligned offset near 2^63 is not hidden by float rounding', () => {
    // Number(0x8000000000050200n) === 0x8000000000050000: masking words keeps the 0x200.
    expect(entryOffset(...w(0x8000000000050200n)) % 0x10000).toBe(0x200);
  });
});

describe('entryOffsetIsZero / entryOffsetUnsafe', () => {
  it('offset bits zero regardless of flags and reserved bits', () => {
    expect(entryOffsetIsZero(...w(COPIED | COMPRESSED | 0x3f000000000001ffn))).toBe(true);
    expect(entryOffsetIsZero(...w(0x200n))).toBe(false);
    expect(entryOffsetIsZero(...w(1n << 55n))).toBe(false);
  });

  it('offsets of 2^53 or more are unsafe; below are not', () => {
    expect(entryOffsetUnsafe(w(0x001ffffffffffe00n)[0])).toBe(false);
    expect(entryOffsetUnsafe(w(1n << 53n)[0])).toBe(true);
    expect(entryOffsetUnsafe(w(0x00fffffffffffe00n)[0])).toBe(true);
    // Flag and reserved bits above bit 55 do not count.
    expect(entryOffsetUnsafe(w(COPIED | COMPRESSED | 0x3f00000000000000n)[0])).toBe(false);
  });
});

describe('clusterType (qcow2_get_cluster_type)', () => {
  it('compressed is checked first (whatever the zero flag and offset)', () => {
    expect(ct(COMPRESSED | 0x50000n)).toBe(ClusterType.Compressed);
    expect(ct(COMPRESSED | 1n)).toBe(ClusterType.Compressed);
    expect(ct(COMPRESSED | COPIED, true, true)).toBe(ClusterType.Compressed);
  });

  it('zero flag without extended L2: ZeroPlain (offset 0) or ZeroAlloc (offset set)', () => {
    expect(ct(1n)).toBe(ClusterType.ZeroPlain);
    expect(ct(COPIED | 1n)).toBe(ClusterType.ZeroPlain);
    expect(ct(0x50001n)).toBe(ClusterType.ZeroAlloc);
    expect(ct(COPIED | 0x50001n)).toBe(ClusterType.ZeroAlloc);
  });

  it('zero flag is ignored with extended L2', () => {
    expect(ct(1n, true)).toBe(ClusterType.Unallocated);
    expect(ct(COPIED | 0x50001n, true)).toBe(ClusterType.Normal);
  });

  it('offset 0 is unallocated, even with COPIED, unless there is a data file', () => {
    expect(ct(0n)).toBe(ClusterType.Unallocated);
    expect(ct(COPIED)).toBe(ClusterType.Unallocated);
    expect(ct(0n, false, true)).toBe(ClusterType.Unallocated);
  });

  it('offset 0 with a data file and COPIED is normal (host offset 0 is valid there)', () => {
    expect(ct(COPIED, false, true)).toBe(ClusterType.Normal);
    expect(ct(COPIED, true, true)).toBe(ClusterType.Normal);
  });

  it('a non-zero offset is normal; reserved bits are ignored', () => {
    expect(ct(0x50000n)).toBe(ClusterType.Normal);
    expect(ct(COPIED | 0x50000n)).toBe(ClusterType.Normal);
    expect(ct(0x3f000000000501fen)).toBe(ClusterType.Normal);
    expect(ct(0x3f000000000001fen)).toBe(ClusterType.Unallocated);
  });
});

describe('subclusterType (qcow2_get_subcluster_type)', () => {
  it('standard L2 maps cluster types 1:1 (unallocated -> UnallocatedPlain), bitmap ignored', () => {
    const t = (c: ClusterType) => subclusterType(c, false, 0xffffffff, 0xffffffff, 0);
    expect(t(ClusterType.Compressed)).toBe(SubclusterType.Compressed);
    expect(t(ClusterType.ZeroPlain)).toBe(SubclusterType.ZeroPlain);
    expect(t(ClusterType.ZeroAlloc)).toBe(SubclusterType.ZeroAlloc);
    expect(t(ClusterType.Normal)).toBe(SubclusterType.Normal);
    expect(t(ClusterType.Unallocated)).toBe(SubclusterType.UnallocatedPlain);
  });

  it('extended L2, compressed: Compressed whatever the bitmap', () => {
    expect(subclusterType(ClusterType.Compressed, true, 0xffffffff, 0xffffffff, 7)).toBe(SubclusterType.Compressed);
  });

  it('extended L2, normal cluster: zero bit -> ZeroAlloc, alloc bit -> Normal, neither -> UnallocatedAlloc', () => {
    const alloc = 0b0011;
    const zero = 0b0100;
    expect(subclusterType(ClusterType.Normal, true, alloc, zero, 0)).toBe(SubclusterType.Normal);
    expect(subclusterType(ClusterType.Normal, true, alloc, zero, 1)).toBe(SubclusterType.Normal);
    expect(subclusterType(ClusterType.Normal, true, alloc, zero, 2)).toBe(SubclusterType.ZeroAlloc);
    expect(subclusterType(ClusterType.Normal, true, alloc, zero, 3)).toBe(SubclusterType.UnallocatedAlloc);
    expect(subclusterType(ClusterType.Normal, true, 0x80000000, 0, 31)).toBe(SubclusterType.Normal);
    expect(subclusterType(ClusterType.Normal, true, 0, 0x80000000, 31)).toBe(SubclusterType.ZeroAlloc);
  });

  it('extended L2, normal cluster: any subcluster both allocated and zero makes every subcluster Invalid', () => {
    expect(subclusterType(ClusterType.Normal, true, 0x80000001, 0x80000000, 0)).toBe(SubclusterType.Invalid);
    expect(subclusterType(ClusterType.Normal, true, 0xffffffff, 0x00000001, 5)).toBe(SubclusterType.Invalid);
  });

  it('extended L2, unallocated cluster: any alloc bit -> Invalid; zero bit -> ZeroPlain; else UnallocatedPlain', () => {
    expect(subclusterType(ClusterType.Unallocated, true, 0x80000000, 0, 0)).toBe(SubclusterType.Invalid);
    expect(subclusterType(ClusterType.Unallocated, true, 0, 0b10, 1)).toBe(SubclusterType.ZeroPlain);
    expect(subclusterType(ClusterType.Unallocated, true, 0, 0b10, 0)).toBe(SubclusterType.UnallocatedPlain);
    expect(subclusterType(ClusterType.Unallocated, true, 0, 0, 31)).toBe(SubclusterType.UnallocatedPlain);
  });
});

describe('subclusterRange (qcow2_get_subcluster_range_type)', () => {
  const r = (c: ClusterType, alloc: number, zero: number, sc: number) => subclusterRange(c, true, 32, alloc, zero, sc);

  it('standard L2: one subcluster per cluster, count 1', () => {
    expect(subclusterRange(ClusterType.Normal, false, 1, 0, 0, 0)).toEqual({ type: SubclusterType.Normal, count: 1 });
    expect(subclusterRange(ClusterType.Unallocated, false, 1, 0, 0, 0)).toEqual({ type: SubclusterType.UnallocatedPlain, count: 1 });
  });

  it('compressed: the rest of the cluster', () => {
    expect(r(ClusterType.Compressed, 0, 0, 0)).toEqual({ type: SubclusterType.Compressed, count: 32 });
    expect(r(ClusterType.Compressed, 0, 0, 31)).toEqual({ type: SubclusterType.Compressed, count: 1 });
  });

  it('Normal runs while alloc bits are 1 (cto32)', () => {
    expect(r(ClusterType.Normal, 0x0000000f, 0, 0)).toEqual({ type: SubclusterType.Normal, count: 4 });
    expect(r(ClusterType.Normal, 0x0000000f, 0, 2)).toEqual({ type: SubclusterType.Normal, count: 2 });
    expect(r(ClusterType.Normal, 0xffffffff, 0, 0)).toEqual({ type: SubclusterType.Normal, count: 32 });
    expect(r(ClusterType.Normal, 0xffffffff, 0, 31)).toEqual({ type: SubclusterType.Normal, count: 1 });
    expect(r(ClusterType.Normal, 0x80000000, 0, 31)).toEqual({ type: SubclusterType.Normal, count: 1 });
    expect(r(ClusterType.Normal, 0xffff0000, 0, 16)).toEqual({ type: SubclusterType.Normal, count: 16 });
  });

  it('ZeroAlloc and ZeroPlain run while zero bits are 1', () => {
    expect(r(ClusterType.Normal, 0, 0xffffffff, 0)).toEqual({ type: SubclusterType.ZeroAlloc, count: 32 });
    expect(r(ClusterType.Normal, 0, 0x000000f0, 4)).toEqual({ type: SubclusterType.ZeroAlloc, count: 4 });
    expect(r(ClusterType.Unallocated, 0, 0xffffffff, 31)).toEqual({ type: SubclusterType.ZeroPlain, count: 1 });
    expect(r(ClusterType.Unallocated, 0, 0x7ffffffe, 1)).toEqual({ type: SubclusterType.ZeroPlain, count: 30 });
  });

  it('Unallocated* run while both bits are 0 (ctz32; all zeros counts to the end)', () => {
    expect(r(ClusterType.Normal, 0, 0, 0)).toEqual({ type: SubclusterType.UnallocatedAlloc, count: 32 });
    expect(r(ClusterType.Normal, 0, 0, 31)).toEqual({ type: SubclusterType.UnallocatedAlloc, count: 1 });
    expect(r(ClusterType.Normal, 0x0000ff00, 0, 0)).toEqual({ type: SubclusterType.UnallocatedAlloc, count: 8 });
    expect(r(ClusterType.Normal, 0x0000ff00, 0, 4)).toEqual({ type: SubclusterType.UnallocatedAlloc, count: 4 });
    expect(r(ClusterType.Normal, 0x0000ff00, 0, 16)).toEqual({ type: SubclusterType.UnallocatedAlloc, count: 16 });
    expect(r(ClusterType.Normal, 0x0000000f, 0x000f0000, 4)).toEqual({ type: SubclusterType.UnallocatedAlloc, count: 12 });
    expect(r(ClusterType.Unallocated, 0, 0x80000000, 0)).toEqual({ type: SubclusterType.UnallocatedPlain, count: 31 });
    expect(r(ClusterType.Unallocated, 0, 0, 0)).toEqual({ type: SubclusterType.UnallocatedPlain, count: 32 });
  });

  it('bits below the start subcluster do not matter', () => {
    expect(r(ClusterType.Normal, 0x00000001, 0, 1)).toEqual({ type: SubclusterType.UnallocatedAlloc, count: 31 });
    expect(r(ClusterType.Normal, 0xfffffffe, 0x00000001, 1)).toEqual({ type: SubclusterType.Normal, count: 31 });
  });

  it('Invalid bitmaps give count -1', () => {
    expect(r(ClusterType.Normal, 1, 1, 0)).toEqual({ type: SubclusterType.Invalid, count: -1 });
    expect(r(ClusterType.Unallocated, 0x80000000, 0, 0)).toEqual({ type: SubclusterType.Invalid, count: -1 });
  });
});
