/**
 * L2 entry classification (QEMU `qcow2_get_cluster_type`, `qcow2_get_subcluster_type`,
 * `qcow2_get_subcluster_range_type`).
 *
 * An L2 table is decoded in bulk into a `Uint32Array` of native-endian words, two per
 * 64-bit value (`hi`, `lo`), so classifying an entry never builds a bigint. Standard tables
 * hold one value per entry; extended-L2 tables hold two (the entry, then the subcluster
 * bitmap: low word = "allocated" bits, high word = "reads as zero" bits).
 */
import {
  WORD_COPIED_HI as HI_COPIED,
  WORD_COMPRESSED_HI as HI_COMPRESSED,
  WORD_OFFSET_HI as HI_OFFSET,
  WORD_OFFSET_LO as LO_OFFSET,
} from './constants.js';

/** Cluster types of a standard descriptor. */
export enum ClusterType {
  Unallocated,
  ZeroPlain,
  ZeroAlloc,
  Normal,
  Compressed,
}

/** Subcluster types; what one block-status answer reports. */
export enum SubclusterType {
  Normal,
  Compressed,
  ZeroPlain,
  ZeroAlloc,
  UnallocatedPlain,
  UnallocatedAlloc,
  Invalid,
}


/** Host offset bits (9..55) of an entry as a number (exact: < 2^56, callers bound ≥ 2^53). */
export function entryOffset(hi: number, lo: number): number {
  return (hi & HI_OFFSET) * 0x100000000 + ((lo & LO_OFFSET) >>> 0);
}

/** True when the offset bits are all zero. */
export function entryOffsetIsZero(hi: number, lo: number): boolean {
  return (hi & HI_OFFSET) === 0 && (lo & LO_OFFSET) === 0;
}

/** True when the offset needs 2^53 or more (cannot be a real offset for vdisk). */
export function entryOffsetUnsafe(hi: number): boolean {
  return (hi & HI_OFFSET) >= 0x200000;
}

/** `qcow2_get_cluster_type`. */
export function clusterType(hi: number, lo: number, extendedL2: boolean, hasDataFile: boolean): ClusterType {
  if ((hi & HI_COMPRESSED) !== 0) return ClusterType.Compressed;
  if ((lo & 1) !== 0 && !extendedL2) {
    return entryOffsetIsZero(hi, lo) ? ClusterType.ZeroPlain : ClusterType.ZeroAlloc;
  }
  if (entryOffsetIsZero(hi, lo)) {
    // Offset 0 is valid in an external data file; COPIED disambiguates.
    return hasDataFile && (hi & HI_COPIED) !== 0 ? ClusterType.Normal : ClusterType.Unallocated;
  }
  return ClusterType.Normal;
}

/** `qcow2_get_subcluster_type` for subcluster `sc`; `allocBits`/`zeroBits` are the bitmap words. */
export function subclusterType(
  ct: ClusterType,
  extendedL2: boolean,
  allocBits: number,
  zeroBits: number,
  sc: number,
): SubclusterType {
  if (!extendedL2) {
    switch (ct) {
      case ClusterType.Compressed:
        return SubclusterType.Compressed;
      case ClusterType.ZeroPlain:
        return SubclusterType.ZeroPlain;
      case ClusterType.ZeroAlloc:
        return SubclusterType.ZeroAlloc;
      case ClusterType.Normal:
        return SubclusterType.Normal;
      case ClusterType.Unallocated:
        return SubclusterType.UnallocatedPlain;
    }
  }
  if (ct === ClusterType.Compressed) return SubclusterType.Compressed;
  const bit = (1 << sc) >>> 0;
  if (ct === ClusterType.Normal) {
    if ((allocBits & zeroBits) !== 0) return SubclusterType.Invalid;
    if ((zeroBits & bit) !== 0) return SubclusterType.ZeroAlloc;
    if ((allocBits & bit) !== 0) return SubclusterType.Normal;
    return SubclusterType.UnallocatedAlloc;
  }
  // Unallocated (zero clusters do not exist with extended L2).
  if (allocBits !== 0) return SubclusterType.Invalid;
  if ((zeroBits & bit) !== 0) return SubclusterType.ZeroPlain;
  return SubclusterType.UnallocatedPlain;
}

/** Count of trailing one bits of a 32-bit word. */
function cto32(v: number): number {
  return ctz32(~v >>> 0);
}

/** Count of trailing zero bits of a 32-bit word (32 for 0). */
function ctz32(v: number): number {
  v >>>= 0;
  if (v === 0) return 32;
  return 31 - Math.clz32(v & -v);
}

/** Mask of bits [0, n) (n in 0..32). */
function lowBits(n: number): number {
  return n >= 32 ? 0xffffffff : ((1 << n) >>> 0) - 1;
}

/**
 * `qcow2_get_subcluster_range_type`: the type of subcluster `scFrom` and how many
 * subclusters from there on share it, within this cluster. Returns -1 count for Invalid.
 */
export function subclusterRange(
  ct: ClusterType,
  extendedL2: boolean,
  subclustersPerCluster: number,
  allocBits: number,
  zeroBits: number,
  scFrom: number,
): { type: SubclusterType; count: number } {
  const type = subclusterType(ct, extendedL2, allocBits, zeroBits, scFrom);
  if (type === SubclusterType.Invalid) return { type, count: -1 };
  if (!extendedL2 || type === SubclusterType.Compressed) return { type, count: subclustersPerCluster - scFrom };
  const below = lowBits(scFrom);
  switch (type) {
    case SubclusterType.Normal:
      return { type, count: cto32((allocBits | below) >>> 0) - scFrom };
    case SubclusterType.ZeroPlain:
    case SubclusterType.ZeroAlloc:
      return { type, count: cto32((zeroBits | below) >>> 0) - scFrom };
    default:
      return { type, count: ctz32(((zeroBits | allocBits) & ~below) >>> 0) - scFrom };
  }
}
