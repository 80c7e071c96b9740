/**
 * A shortcut of the guest → host lookup for the two standard L2 entries whose meaning
 * depends on nothing else and whose lookup can never fail: the all-zero entry
 * (UNALLOCATED_PLAIN) and, in v3 images, the bare zero flag (ZERO_PLAIN). Sparse and zeroed
 * regions of an image are made of these, and a map walk spends most of its queries there.
 * Every other entry — and an L2 table not cached, an L1 entry the full lookup would refuse,
 * extended L2 — is left to `lookupHostOffset` (host-offset.ts), which gives the same type.
 */
import type { L2Table } from './l2-cache.js';
import type { L1Words, MappingGeometry } from './host-offset.js';

/** `INT_MAX`, QEMU's per-call cap. */
const INT_MAX = 0x7fffffff;

/**
 * The last plain run found: clusters `[first, end)` of the L2 table at `l2Offset` hold the
 * entry with low word `lo` (0 or 1); `closed` says the run ended at a different entry, not
 * at the caller's limit. Any suffix of a run is a run, so a walk that asks again from inside
 * it (a layer above answered a shorter piece) needs no rescan — linear, not quadratic.
 */
export interface PlainRunMemo {
  l2Offset: number;
  first: number;
  end: number;
  lo: number;
  closed: boolean;
}

/** A memo that matches nothing. */
export function emptyPlainRunMemo(): PlainRunMemo {
  return { l2Offset: -1, first: 0, end: 0, lo: 0, closed: false };
}

/**
 * The plain run at `offset`, looking at most `requested` bytes ahead and never past the L2
 * table: its length in bytes, positive for UNALLOCATED_PLAIN and negative for ZERO_PLAIN;
 * or 0 when the entry is of another kind or its table is not cached.
 */
export function plainRun(
  g: MappingGeometry,
  l1: L1Words,
  l2Lookup: (l2Offset: number) => L2Table | undefined,
  offset: number,
  requested: number,
  memo: PlainRunMemo,
): number {
  if (g.extendedL2) return 0;
  const cs = g.clusterSize;
  const clusterIndex = Math.floor(offset / cs);
  const l1Index = Math.floor(clusterIndex / g.l2Entries);
  const l1Hi = l1[l1Index * 2];
  const l1Lo = l1[l1Index * 2 + 1];
  // No table (the full lookup answers the whole span at once), a table offset of 2^53 or
  // more, or an unaligned one (errors the full lookup reports).
  if (l1Hi === undefined || l1Lo === undefined || (l1Hi & 0x00e00000) !== 0) return 0;
  const l2Offset = (l1Hi & 0x00ffffff) * 0x100000000 + ((l1Lo & 0xfffffe00) >>> 0);
  if (l2Offset === 0 || l2Offset % cs !== 0) return 0;
  const l2Index = clusterIndex - l1Index * g.l2Entries;
  const oic = offset - clusterIndex * cs;
  let need = Math.min(INT_MAX, requested) + oic;
  const avail = (g.l2Entries - l2Index) * cs;
  if (need > avail) need = avail;
  if (memo.l2Offset === l2Offset && clusterIndex >= memo.first && clusterIndex < memo.end) {
    const runBytes = (memo.end - clusterIndex) * cs;
    if (memo.closed || need <= runBytes) {
      const run = Math.min(runBytes, need) - oic;
      return memo.lo === 0 ? run : -run;
    }
  }
  const l2 = l2Lookup(l2Offset)?.words;
  if (l2 === undefined) return 0;
  const lo = l2[l2Index * 2 + 1];
  if (l2[l2Index * 2] !== 0 || (lo !== 0 && (lo !== 1 || g.version < 3))) return 0;
  // count_contiguous_subclusters: the same type while the entries are the same.
  const nbClusters = Math.ceil(need / cs);
  let i = 1;
  for (let at = (l2Index + 1) * 2; i < nbClusters && l2[at] === 0 && l2[at + 1] === lo; at += 2) i++;
  memo.l2Offset = l2Offset;
  memo.first = clusterIndex;
  memo.end = clusterIndex + i;
  memo.lo = lo;
  memo.closed = i < nbClusters;
  const run = Math.min(i * cs, need) - oic;
  return lo === 0 ? run : -run;
}
