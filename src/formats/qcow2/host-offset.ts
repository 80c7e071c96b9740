/**
 * Guest offset → host mapping for one run (QEMU `qcow2_get_host_offset` and
 * `count_contiguous_subclusters`).
 *
 * Given a decoded L1 table and a way to fetch cached L2 tables, finds the subcluster type at
 * `offset` and how many bytes from there share it: within one L2 table, across clusters only
 * while the type is identical and (for offset-bearing types) host clusters are contiguous;
 * compressed clusters one at a time. Corruption found on the way is a typed error naming
 * the L1/L2 index and offsets, as QEMU's `qcow2_signal_corruption` messages do.
 */
import { CorruptImageError, UnsupportedImageError, hex } from '../../errors.js';
import type { L2Table, L2Words } from './l2-cache.js';
import { runEnd } from './l2-runs.js';
import {
  ClusterType,
  SubclusterType,
  clusterType,
  entryOffset,
  entryOffsetUnsafe,
  subclusterRange,
  subclusterType,
} from './l2-entry.js';

/** Geometry and flags the lookup needs. */
export interface MappingGeometry {
  readonly file: string;
  readonly version: 2 | 3;
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly l2Entries: number;
  readonly extendedL2: boolean;
  readonly subclustersPerCluster: number;
  readonly subclusterSize: number;
  readonly hasDataFile: boolean;
}

/** Result of one lookup. */
export interface HostMapping {
  readonly type: SubclusterType;
  /** Bytes from `offset` sharing `type` (> 0). */
  readonly bytes: number;
  /** Host offset of `offset` for Normal/ZeroAlloc/UnallocatedAlloc, else 0. */
  readonly hostOffset: number;
  /** For Compressed: the raw L2 entry words. */
  readonly entryHi: number;
  readonly entryLo: number;
}

/** A reusable result for {@link lookupHostOffset} (no allocation per lookup). */
export interface HostMappingOut {
  type: SubclusterType;
  bytes: number;
  hostOffset: number;
  entryHi: number;
  entryLo: number;
}

/** A fresh scratch result. */
export function newHostMappingOut(): HostMappingOut {
  return { type: SubclusterType.UnallocatedPlain, bytes: 0, hostOffset: 0, entryHi: 0, entryLo: 0 };
}

/** A lookup that needs an L2 table not yet in the cache. */
export interface NeedL2 {
  readonly needL2: number;
}

/**
 * The last run found in a standard (non-extended) L2 table: clusters `[first, end)` share
 * `type` and, for offset-bearing types, contiguous host clusters from `host0`. Any suffix of
 * such a run is itself a run, so a later lookup inside it needs no rescan of the table —
 * this keeps a walk over a table with many short runs linear instead of quadratic.
 * `closed` says the run ended at a real type or contiguity break, not at the caller's cap.
 */
export interface RunMemo {
  l2Offset: number;
  first: number;
  end: number;
  type: SubclusterType;
  host0: number;
  closed: boolean;
}

/** A memo that matches nothing. */
export function emptyRunMemo(): RunMemo {
  return { l2Offset: -1, first: 0, end: 0, type: SubclusterType.Invalid, host0: 0, closed: false };
}

/** `INT_MAX`, QEMU's per-call cap. */
const INT_MAX = 0x7fffffff;

/** L1 entries as native words (hi, lo per entry). */
export type L1Words = Uint32Array;

/**
 * Looks up `[offset, offset + bytes)`. Returns `NeedL2` when the L2 table is not cached:
 * the caller loads it and calls again (no I/O happens here).
 */
export function getHostOffset(
  g: MappingGeometry,
  l1: L1Words,
  l2Lookup: (l2Offset: number) => L2Table | undefined,
  offset: number,
  requested: number,
  memo?: RunMemo,
): HostMapping | NeedL2 {
  const out = newHostMappingOut();
  const need = lookupHostOffset(g, l1, l2Lookup, offset, requested, memo, out);
  return need !== 0 ? { needL2: need } : out;
}

/**
 * {@link getHostOffset} into a caller's scratch object: returns 0 when `out` holds the
 * answer, or the host offset of the L2 table to load first (never 0).
 */
export function lookupHostOffset(
  g: MappingGeometry,
  l1: L1Words,
  l2Lookup: (l2Offset: number) => L2Table | undefined,
  offset: number,
  requested: number,
  memo: RunMemo | undefined,
  out: HostMappingOut,
): number {
  const cs = g.clusterSize;
  const bytes = Math.min(INT_MAX, requested);
  const clusterIndex = Math.floor(offset / cs);
  const oic = offset - clusterIndex * cs;
  const l2Index = clusterIndex % g.l2Entries;
  let need = bytes + oic;
  const avail = (g.l2Entries - l2Index) * cs;
  if (need > avail) need = avail;

  const l1Index = Math.floor(clusterIndex / g.l2Entries);
  const l1Hi = l1[l1Index * 2];
  const l1Lo = l1[l1Index * 2 + 1];
  if (l1Hi === undefined || l1Lo === undefined || ((l1Hi & 0x00ffffff) === 0 && (l1Lo & 0xfffffe00) === 0)) {
    return fill(out, SubclusterType.UnallocatedPlain, need - oic, 0, 0, 0);
  }
  if (entryOffsetUnsafe(l1Hi)) {
    throw new UnsupportedImageError('QCOW2_OFFSET_TOO_LARGE', `L2 table offset in L1 entry ${l1Index} is 2^53 or more`, {
      file: g.file, field: 'L1 entry', value: l1Index, limit: Number.MAX_SAFE_INTEGER,
    });
  }
  const l2Offset = entryOffset(l1Hi, l1Lo);
  if (l2Offset % cs !== 0) {
    throw new CorruptImageError(
      'QCOW2_L2_OFFSET_UNALIGNED',
      `L2 table offset ${hex(l2Offset)} unaligned (L1 index: ${hex(l1Index)})`,
      { file: g.file, field: 'L1 entry', value: l2Offset, limit: `aligned to ${cs}` },
    );
  }
  if (memo !== undefined && memo.l2Offset === l2Offset && clusterIndex >= memo.first && clusterIndex < memo.end) {
    const runBytes = (memo.end - clusterIndex) * cs;
    if (memo.closed || need <= runBytes) {
      const t = memo.type;
      const hasHost = t === SubclusterType.Normal || t === SubclusterType.ZeroAlloc;
      return fill(out, t, Math.min(need, runBytes) - oic, hasHost ? memo.host0 + (clusterIndex - memo.first) * cs + oic : 0, 0, 0);
    }
  }
  const table = l2Lookup(l2Offset);
  if (table === undefined) return l2Offset;
  const l2 = table.words;

  const wpe = g.extendedL2 ? 4 : 2;
  const scIndex = Math.floor(oic / g.subclusterSize);
  const hi = l2[l2Index * wpe] ?? 0;
  const lo = l2[l2Index * wpe + 1] ?? 0;
  const zeroBits = g.extendedL2 ? (l2[l2Index * 4 + 2] ?? 0) : 0;
  const allocBits = g.extendedL2 ? (l2[l2Index * 4 + 3] ?? 0) : 0;
  const ct = clusterType(hi, lo, g.extendedL2, g.hasDataFile);
  const type = g.extendedL2
    ? subclusterType(ct, true, allocBits, zeroBits, scIndex)
    : (STANDARD_SUBCLUSTER_TYPE[ct] as SubclusterType);
  if (g.version < 3 && (type === SubclusterType.ZeroPlain || type === SubclusterType.ZeroAlloc)) {
    throw new CorruptImageError('QCOW2_ZERO_IN_V2', `zero cluster entry found in pre-v3 image ${where(l2Offset, l2Index)}`, {
      file: g.file, field: 'L2 entry', value: l2Index, offset: l2Offset + l2Index * 8 * (wpe / 2),
    });
  }
  let hostOffset = 0;
  switch (type) {
    case SubclusterType.Compressed:
      if (g.hasDataFile) {
        throw new CorruptImageError(
          'QCOW2_COMPRESSED_WITH_DATA_FILE',
          `compressed cluster entry found in image with external data file ${where(l2Offset, l2Index)}`,
          { file: g.file, field: 'L2 entry', value: l2Index },
        );
      }
      break;
    case SubclusterType.Normal:
    case SubclusterType.ZeroAlloc:
    case SubclusterType.UnallocatedAlloc: {
      if (entryOffsetUnsafe(hi)) {
        throw new UnsupportedImageError('QCOW2_OFFSET_TOO_LARGE', `cluster offset in L2 entry is 2^53 or more ${where(l2Offset, l2Index)}`, {
          file: g.file, field: 'L2 entry', value: l2Index, limit: Number.MAX_SAFE_INTEGER,
        });
      }
      const hostCluster = entryOffset(hi, lo);
      hostOffset = hostCluster + oic;
      if (hostCluster % cs !== 0) {
        throw new CorruptImageError(
          'QCOW2_CLUSTER_OFFSET_UNALIGNED',
          `cluster allocation offset ${hex(hostCluster)} unaligned ${where(l2Offset, l2Index)}`,
          { file: g.file, field: 'L2 entry', value: hostCluster, limit: `aligned to ${cs}` },
        );
      }
      if (g.hasDataFile && hostOffset !== offset) {
        throw new CorruptImageError(
          'QCOW2_DATA_FILE_OFFSET_MISMATCH',
          `external data file host cluster offset ${hex(hostCluster)} does not match guest cluster offset ${hex(offset - oic)} ${where(l2Offset, l2Index)}`,
          { file: g.file, field: 'L2 entry', value: hostCluster, limit: offset - oic },
        );
      }
      break;
    }
    default:
      break;
  }

  const nbClusters = Math.ceil(need / cs);
  let sc: number;
  if (g.extendedL2) sc = countContiguousSubclusters(g, l2, nbClusters, scIndex, l2Index, l2Offset);
  else if (table.runs !== null) sc = Math.min(runEnd(table.runs, l2Index) - l2Index, nbClusters);
  else sc = countContiguousClusters(g, l2, nbClusters, l2Index, type, hostOffset - oic);
  if (memo !== undefined && !g.extendedL2 && type !== SubclusterType.Compressed) {
    memo.l2Offset = l2Offset;
    memo.first = clusterIndex;
    memo.end = clusterIndex + sc;
    memo.type = type;
    memo.host0 = hostOffset - oic;
    memo.closed = sc < nbClusters;
  }
  let available = (sc + scIndex) * g.subclusterSize;
  if (available > need) available = need;
  return fill(out, type, available - oic, hostOffset, hi, lo);
}

/** The location part of corruption messages. */
function where(l2Offset: number, l2Index: number): string {
  return `(L2 offset: ${hex(l2Offset)}, L2 index: ${hex(l2Index)})`;
}

function fill(out: HostMappingOut, type: SubclusterType, bytes: number, hostOffset: number, hi: number, lo: number): 0 {
  out.type = type;
  out.bytes = bytes;
  out.hostOffset = hostOffset;
  out.entryHi = hi;
  out.entryLo = lo;
  return 0;
}

/**
 * `count_contiguous_subclusters` for standard L2 tables (one subcluster per cluster): how
 * many clusters from `l2Index` share the first one's `type` (already classified) and, for
 * offset-bearing types, continue its host clusters. A tight loop over the table's words;
 * lookups in tables with a run list (l2-runs.ts, all tables the cache holds) need none.
 */
export function countContiguousClusters(
  g: MappingGeometry,
  l2: L2Words,
  nbClusters: number,
  l2Index: number,
  type: SubclusterType,
  host0: number,
): number {
  if (type === SubclusterType.Compressed) return 1;
  const cs = g.clusterSize;
  let i = 1;
  if (type === SubclusterType.Normal || type === SubclusterType.ZeroAlloc) {
    // Same flags (not compressed; zero flag as the first), host clusters contiguous. An
    // entry whose offset matches is never unallocated, since `expected` is not 0.
    // Compare words, not numbers: the high word without COPIED must be the expected
    // offset's high bits (compressed bit clear); the low word without the reserved bits
    // 1..8 must be the expected low bits plus the zero flag.
    const zeroBit = type === SubclusterType.ZeroAlloc ? 1 : 0;
    const next = host0 + cs;
    let eHi = Math.floor(next / 0x100000000);
    let eLo = next - eHi * 0x100000000;
    for (; i < nbClusters; i++) {
      const at = (l2Index + i) * 2;
      if (((l2[at + 1] as number) & 0xfffffe01) >>> 0 !== eLo + zeroBit || ((l2[at] as number) & 0x40ffffff) !== eHi) break;
      eLo += cs;
      if (eLo >= 0x100000000) {
        eLo -= 0x100000000;
        eHi++;
      }
    }
    return i;
  }
  for (; i < nbClusters; i++) {
    const at = (l2Index + i) * 2;
    const ct = clusterType(l2[at] as number, l2[at + 1] as number, false, g.hasDataFile);
    if (STANDARD_SUBCLUSTER_TYPE[ct] !== type) break;
  }
  return i;
}

/** Subcluster type of each cluster type without extended L2 (`qcow2_get_subcluster_type`). */
const STANDARD_SUBCLUSTER_TYPE: readonly SubclusterType[] = (() => {
  const t: SubclusterType[] = [];
  t[ClusterType.Unallocated] = SubclusterType.UnallocatedPlain;
  t[ClusterType.ZeroPlain] = SubclusterType.ZeroPlain;
  t[ClusterType.ZeroAlloc] = SubclusterType.ZeroAlloc;
  t[ClusterType.Normal] = SubclusterType.Normal;
  t[ClusterType.Compressed] = SubclusterType.Compressed;
  return t;
})();

/** `count_contiguous_subclusters`: subclusters from `scIndex` of cluster `l2Index` on with one type. */
function countContiguousSubclusters(
  g: MappingGeometry,
  l2: L2Words,
  nbClusters: number,
  scIndex: number,
  l2Index: number,
  l2Offset: number,
): number {
  const wpe = g.extendedL2 ? 4 : 2;
  let count = 0;
  let expectedType = SubclusterType.Normal;
  let checkOffset = false;
  let expectedOffset = 0;
  for (let i = 0; i < nbClusters; i++) {
    const firstSc = i === 0 ? scIndex : 0;
    const at = (l2Index + i) * wpe;
    const hi = l2[at] ?? 0;
    const lo = l2[at + 1] ?? 0;
    const zeroBits = g.extendedL2 ? (l2[at + 2] ?? 0) : 0;
    const allocBits = g.extendedL2 ? (l2[at + 3] ?? 0) : 0;
    const ct = clusterType(hi, lo, g.extendedL2, g.hasDataFile);
    const r = subclusterRange(ct, g.extendedL2, g.subclustersPerCluster, allocBits, zeroBits, firstSc);
    if (r.type === SubclusterType.Invalid) {
      throw new CorruptImageError(
        'QCOW2_INVALID_SUBCLUSTER_BITMAP',
        `invalid cluster entry found (L2 offset: ${hex(l2Offset)}, L2 index: ${hex(l2Index + i)}): subcluster bitmap ${hex(zeroBits)}${(allocBits >>> 0).toString(16).padStart(8, '0')} has a subcluster both allocated and zero, or allocated in an unallocated cluster`,
        { file: g.file, field: 'L2 bitmap', value: l2Index + i, offset: l2Offset + (l2Index + i) * 16 + 8 },
      );
    }
    const off = entryOffsetUnsafe(hi) ? -1 : entryOffset(hi, lo);
    if (i === 0) {
      if (r.type === SubclusterType.Compressed) return r.count;
      expectedType = r.type;
      expectedOffset = off;
      checkOffset =
        r.type === SubclusterType.Normal || r.type === SubclusterType.ZeroAlloc || r.type === SubclusterType.UnallocatedAlloc;
    } else if (r.type !== expectedType) {
      break;
    } else if (checkOffset) {
      expectedOffset += g.clusterSize;
      if (off !== expectedOffset) break;
    }
    count += r.count;
    if (firstSc + r.count < g.subclustersPerCluster) break;
  }
  return count;
}

