/**
 * The runs of a standard (non-extended) L2 table, found in one pass when the table is
 * loaded: maximal stretches of entries that QEMU's `count_contiguous_subclusters` would
 * count as one — the same cluster type, and for offset-bearing types (normal data,
 * preallocated zero) host clusters that continue each other. Compressed clusters are runs
 * of one.
 *
 * "Entry i+1 continues entry i" is a relation between neighbours only, so the run QEMU
 * counts from any entry is the rest of the run that contains it: a lookup reads its count
 * from the list instead of rescanning the table (host-offset.ts). The same pass gathers
 * what the per-table checks need to know cheaply (l2-table-check.ts): the OR of all
 * standard entries' words (reserved bits anywhere?) and the number of compressed entries.
 */
import { ClusterType, clusterType } from './l2-entry.js';
import { WORD_COMPRESSED_HI as HI_COMPRESSED } from './constants.js';

/** The runs of one standard L2 table. */
export interface L2Runs {
  /** Exclusive end index of each run, increasing; the last is the number of entries. */
  readonly ends: Uint32Array;
  /** OR of the high words of all entries that are not compressed. */
  readonly orHi: number;
  /** OR of the low words of all entries that are not compressed. */
  readonly orLo: number;
  /** Number of compressed entries. */
  readonly compressed: number;
}

/** High word bits compared between neighbours: compressed flag and offset bits 32..55. */
const CONT_HI = 0x40ffffff;
/** Low word bits compared between neighbours: offset bits 9..31 and the zero flag. */
const CONT_LO = 0xfffffe01 | 0;

/** Run ends of the table being built (grown as needed; copied out per table). */
let scratch = new Uint32Array(0);

/**
 * Finds the runs of the standard L2 table `words` (native words, hi/lo per entry) of an
 * image with clusters of `clusterSize` bytes; `hasDataFile` as in {@link clusterType}.
 *
 * The words are read as int32 so that the loop stays in small-integer arithmetic: the
 * expected low word wraps like the unsigned one, and it carried into the high word exactly
 * when it went from negative (2^31 and up) to non-negative.
 */
export function buildL2Runs(words: Uint32Array, clusterSize: number, hasDataFile: boolean): L2Runs {
  const w = new Int32Array(words.buffer, words.byteOffset, words.length);
  const n = w.length >>> 1;
  if (scratch.length < n) scratch = new Uint32Array(n);
  const ends = scratch;
  const cs = clusterSize;
  let count = 0;
  let orHi = 0;
  let orLo = 0;
  let compressed = 0;
  let i = 0;
  while (i < n) {
    const hi = w[2 * i] as number;
    const lo = w[2 * i + 1] as number;
    i++;
    if ((hi & HI_COMPRESSED) !== 0) {
      compressed++;
      ends[count++] = i;
      continue;
    }
    orHi |= hi;
    orLo |= lo;
    if (hi === 0 && lo === 0) {
      // Unallocated (the common empty entry): extend over identical neighbours first.
      while (i < n && (w[2 * i] as number) === 0 && (w[2 * i + 1] as number) === 0) i++;
    }
    const ct = clusterType(hi, lo, false, hasDataFile);
    if (ct === ClusterType.Normal || ct === ClusterType.ZeroAlloc) {
      // First the entries that are exactly the expected one (the same high word, the low
      // word one cluster on), as allocation and preallocation write them, until the low
      // word would carry into the high word.
      const exact = (lo + cs) | 0;
      if (lo >= 0 || exact < 0) {
        i = exactRunEnd(w, i, n, hi, exact, cs);
        orLo |= exactOr;
      }
      // Then any entry that carries the next host cluster, the same zero flag, no
      // compression (the other bits may differ).
      const prevHi = w[2 * i - 2] as number;
      const prevLo = w[2 * i - 1] as number;
      let eHi = prevHi & 0x00ffffff;
      let eLo = prevLo & CONT_LO;
      let next = (eLo + cs) | 0;
      if (eLo < 0 && next >= 0) eHi++;
      eLo = next;
      while (i < n) {
        const h = w[2 * i] as number;
        const l = w[2 * i + 1] as number;
        if ((l & CONT_LO) !== eLo || (h & CONT_HI) !== eHi) break;
        orHi |= h;
        orLo |= l;
        i++;
        next = (eLo + cs) | 0;
        if (eLo < 0 && next >= 0) eHi++;
        eLo = next;
      }
    } else {
      while (i < n) {
        const h = w[2 * i] as number;
        const l = w[2 * i + 1] as number;
        if ((h & HI_COMPRESSED) !== 0 || clusterType(h, l, false, hasDataFile) !== ct) break;
        orHi |= h;
        orLo |= l;
        i++;
      }
    }
    ends[count++] = i;
  }
  return { ends: ends.slice(0, count), orHi, orLo, compressed };
}

/**
 * Whether every entry of the standard L2 table `words` is plain: all zero (unallocated) or
 * a bare zero flag. Such a table needs no run list: `plainRun` answers its entries, and its
 * checks have nothing to range-check. One tight pass, far cheaper than building the runs
 * of a table whose entries alternate (each its own run).
 */
export function onlyPlainEntries(words: Uint32Array): boolean {
  for (let i = 0; i < words.length; i += 2) {
    if ((words[i] as number) !== 0 || ((words[i + 1] as number) & ~1) !== 0) return false;
  }
  return true;
}

/** OR of the low words {@link exactRunEnd} went over (0 when none). */
let exactOr = 0;

/**
 * From entry `i`, the end of the entries that are exactly `hi` and `exact`, `exact + cs`,
 * … (int32), stopping before the low word would wrap; their low words' OR goes to
 * `exactOr`. (A small function of its own: V8 compiles this loop far better than inside
 * the pass.)
 *
 * How many steps fit before the wrap is computed first, and the loop compares each low
 * word with the one before it (difference of one cluster) rather than with a running
 * expected value: that form runs about four times faster in V8 (W1's 16.7 M entries:
 * ~25 against ~95 ms, measured).
 */
function exactRunEnd(w: Int32Array, i: number, n: number, hi: number, exact: number, cs: number): number {
  const step = cs | 0;
  const room = Math.floor((0x100000000 - (exact >>> 0) - 1) / cs) + 1;
  const limit = 2 * Math.min(n, i + room) + 1;
  const first = 2 * i + 1;
  let p = first;
  let prev = (exact - step) | 0;
  while (p < limit) {
    const l = w[p] as number;
    if (((l - prev) | 0) !== step || (w[p - 1] as number) !== hi) break;
    prev = l;
    p += 2;
  }
  const count = (p - first) / 2;
  exactOr = count === 0 ? 0 : orOfSteps(exact, count, cs);
  return i + count;
}

/**
 * The OR of `count` (≥ 1) low words `exact`, `exact + cs`, … that do not wrap: the first
 * and last, and every bit from the cluster size up to below the highest bit in which they
 * differ (the sequence passes through a value with all of those set).
 */
function orOfSteps(exact: number, count: number, cs: number): number {
  const last = (exact + (count - 1) * cs) | 0;
  const diff = exact ^ last;
  if (diff === 0) return exact;
  const below = (0xffffffff >>> Math.clz32(diff)) >>> 1;
  return exact | last | (below & ~(cs - 1));
}

/** Index of the run holding entry `index` (binary search; `index` below the entry count). */
export function runAt(runs: L2Runs, index: number): number {
  const e = runs.ends;
  let lo = 0;
  let hi = e.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((e[mid] as number) <= index) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Where the run holding entry `index` ends (exclusive). */
export function runEnd(runs: L2Runs, index: number): number {
  return runs.ends[runAt(runs, index)] as number;
}

/** Bytes a run list keeps alive (for the cache's budget). */
export function runsBytes(runs: L2Runs): number {
  return runs.ends.byteLength + 48;
}
