/**
 * Scans of qcow2 metadata tables, in AssemblyScript (compiled to WebAssembly by the build;
 * loaded by src/formats/qcow2/table-scan.ts, whose JavaScript functions of the same names
 * define the results): the run list of a standard L2 table (l2-runs.ts), whether a table
 * holds only plain entries, and the non-zero entries of a refcount block (refcount.ts).
 * These passes run over every entry of every table a map or convert loads, before V8 has
 * optimised the JavaScript; compiled here they cost a few microseconds per table.
 *
 * The caller copies the table into this module's memory at `ptr` (L2 words in native
 * order, hi/lo per entry; refcount blocks as bytes) and reads the results there. Nothing
 * is allocated: the caller grows the memory and lays it out from heapBase().
 */

const HI_COMPRESSED: u32 = 0x40000000;
const HI_COPIED: u32 = 0x80000000;
const HI_OFFSET: u32 = 0x00ffffff;
const LO_OFFSET: u32 = 0xfffffe00;
/** Bits compared between neighbours of a run of host clusters. */
const CONT_HI: u32 = 0x40ffffff;
const CONT_LO: u32 = 0xfffffe01;

/** Cluster types (ClusterType in src/formats/qcow2/l2-entry.ts). */
const UNALLOCATED: i32 = 0;
const ZERO_PLAIN: i32 = 1;
const ZERO_ALLOC: i32 = 2;
const NORMAL: i32 = 3;
const COMPRESSED: i32 = 4;

/** Results of l2Runs besides the run ends. */
let orHiResult: u32 = 0;
let orLoResult: u32 = 0;
let compressedResult: i32 = 0;

/** `clusterType` of a standard L2 entry. */
@inline function clusterType(hi: u32, lo: u32, hasDataFile: bool): i32 {
  if ((hi & HI_COMPRESSED) != 0) return COMPRESSED;
  const offsetZero = (hi & HI_OFFSET) == 0 && (lo & LO_OFFSET) == 0;
  if ((lo & 1) != 0) return offsetZero ? ZERO_PLAIN : ZERO_ALLOC;
  if (offsetZero) return hasDataFile && (hi & HI_COPIED) != 0 ? NORMAL : UNALLOCATED;
  return NORMAL;
}

/**
 * The runs of the standard L2 table of `n` entries at `ptr` (clusters of `cs` bytes):
 * writes each run's exclusive end index (u32) from `ends` and returns how many; orHi(),
 * orLo() and compressed() give the rest of `buildL2Runs`'s result.
 */
export function l2Runs(ptr: usize, n: i32, cs: u32, hasDataFile: bool, ends: usize): i32 {
  let count = 0;
  let orHi: u32 = 0;
  let orLo: u32 = 0;
  let compressed = 0;
  let i = 0;
  while (i < n) {
    const hi = load<u32>(ptr + (<usize>i << 3));
    const lo = load<u32>(ptr + (<usize>i << 3), 4);
    i++;
    if ((hi & HI_COMPRESSED) != 0) {
      compressed++;
      store<u32>(ends + (<usize>count << 2), i);
      count++;
      continue;
    }
    orHi |= hi;
    orLo |= lo;
    const ct = clusterType(hi, lo, hasDataFile);
    if (ct == NORMAL || ct == ZERO_ALLOC) {
      // Entries that carry the next host cluster with the same zero flag, not compressed.
      let eHi = hi & HI_OFFSET;
      let eLo = lo & CONT_LO;
      let next = eLo + cs;
      if (next < eLo) eHi++;
      eLo = next;
      while (i < n) {
        const h = load<u32>(ptr + (<usize>i << 3));
        const l = load<u32>(ptr + (<usize>i << 3), 4);
        if ((l & CONT_LO) != eLo || (h & CONT_HI) != eHi) break;
        orHi |= h;
        orLo |= l;
        i++;
        next = eLo + cs;
        if (next < eLo) eHi++;
        eLo = next;
      }
    } else {
      while (i < n) {
        // All-zero entries, most of a sparse table, are unallocated clusters that add no
        // bits to orHi/orLo: skipped a 64-bit word at a time.
        if (ct == UNALLOCATED) {
          // Four entries a step while all four are zero, then one at a time.
          while (i + 4 <= n) {
            const at = ptr + (<usize>i << 3);
            if ((load<u64>(at) | load<u64>(at, 8) | load<u64>(at, 16) | load<u64>(at, 24)) != 0) break;
            i += 4;
          }
          while (i < n && load<u64>(ptr + (<usize>i << 3)) == 0) i++;
          if (i == n) break;
        }
        const h = load<u32>(ptr + (<usize>i << 3));
        const l = load<u32>(ptr + (<usize>i << 3), 4);
        if (clusterType(h, l, hasDataFile) != ct) break;
        orHi |= h;
        orLo |= l;
        i++;
      }
    }
    store<u32>(ends + (<usize>count << 2), i);
      count++;
  }
  orHiResult = orHi;
  orLoResult = orLo;
  compressedResult = compressed;
  return count;
}

/** OR of the high words of the last l2Runs table's entries that are not compressed. */
export function orHi(): u32 {
  return orHiResult;
}

/** OR of their low words. */
export function orLo(): u32 {
  return orLoResult;
}

/** Compressed entries of the last l2Runs table. */
export function compressed(): i32 {
  return compressedResult;
}

/** Whether every one of the `n` entries at `ptr` is all zero or a bare zero flag. */
export function onlyPlainEntries(ptr: usize, n: i32): bool {
  for (let i = 0; i < n; i++) {
    if (load<u32>(ptr + (<usize>i << 3)) != 0 || (load<u32>(ptr + (<usize>i << 3), 4) & ~1) != 0) return false;
  }
  return true;
}

/**
 * How many of entries `[first, end)` of the refcount block of `length` bytes at `ptr`
 * (entries `2^order` bits wide; bytes past the block count as zero) are not zero,
 * counting no further than `limit`.
 */
export function countNonZero(ptr: usize, length: i32, first: i32, end: i32, order: i32, limit: i32): i32 {
  let found = 0;
  if (limit <= 0) return 0;
  const bits = 1 << order;
  if (bits < 8) {
    const perByte = 8 / bits;
    const mask = (1 << bits) - 1;
    for (let i = first; i < end && found < limit; i++) {
      const byteAt = i / perByte;
      if (byteAt >= length) continue;
      if (((<i32>load<u8>(ptr + <usize>byteAt) >> ((i % perByte) * bits)) & mask) != 0) found++;
    }
    return found;
  }
  const width = bits >> 3;
  let stop = end * width;
  if (stop > length) stop = length;
  let at = first * width;
  // Eight bytes at a time: the non-zero entries of a word are counted at once (entries below
  // 64 bits: a lane's high bit is set in ((v & M) + M) | v when the lane is not zero, M being
  // every bit but the lanes' high bits; no carry leaves a lane).
  if (width == 8) {
    for (; at + 8 <= stop; at += 8) {
      if (load<u64>(ptr + <usize>at) != 0 && ++found >= limit) return limit;
    }
  } else {
    const high: u64 = width == 1 ? 0x8080808080808080 : width == 2 ? 0x8000800080008000 : 0x8000000080000000;
    const low: u64 = ~high;
    for (; at + 8 <= stop; at += 8) {
      const v = load<u64>(ptr + <usize>at);
      if (v == 0) continue;
      found += <i32>popcnt((((v & low) + low) | v) & high);
      if (found >= limit) return limit;
    }
  }
  for (; at < stop && found < limit; at += width) {
    let v: u32 = 0;
    for (let j = 0; j < width && at + j < length; j++) v |= load<u8>(ptr + <usize>(at + j));
    if (v != 0) found++;
  }
  return found;
}

/** First byte free for the caller's regions. */
export function heapBase(): usize {
  return __heap_base;
}

const HI_UNSAFE: u32 = 0x00e00000;
const L2_RESERVED_HI: u32 = 0x3f000000;
const L2_RESERVED_LO: u32 = 0x000001fe;

/**
 * `L2TableChecker.runsClean` (l2-table-check.ts) for the table at `ptr` whose `count` run
 * ends are at `ends` (orHi, orLo and compressed as l2Runs found them): true when no entry is compressed or has reserved
 * bits set and every run of host clusters starts below `fileSize` and overlaps neither a
 * metadata range (`nRanges` sorted, non-overlapping ranges: starts at `rStarts`, ends at
 * `rEnds`, f64; none ends past `maxEnd`) nor an active L2 table (`nTables` sorted offsets
 * at `tables`, f64, each `cs` bytes). With `hasDataFile`, hosts are not checked. Offsets
 * are doubles, as in JavaScript (all below 2^53).
 */
export function runsClean(
  ptr: usize, ends: usize, count: i32, orHi: u32, orLo: u32, compressed: i32, cs: f64, fileSize: f64, hasDataFile: bool,
  rStarts: usize, rEnds: usize, nRanges: i32, maxEnd: f64, tables: usize, nTables: i32,
): bool {
  if ((orHi & L2_RESERVED_HI) != 0 || (orLo & L2_RESERVED_LO) != 0) return false;
  if (hasDataFile) return compressed == 0;
  const csMask = <u32>cs - 1;
  // Bits of a compressed payload's offset in the descriptor's high word (l2-table-check.ts
  // compressedPayloadStart): 30 - (cluster_bits - 8).
  const hiBits = 38 - <i32>ctz<u32>(<u32>cs);
  const hiMask: u32 = (<u32>1 << hiBits) - 1;
  let start = 0;
  for (let r = 0; r < count; r++) {
    const end = <i32>load<u32>(ends + (<usize>r << 2));
    const hi = load<u32>(ptr + (<usize>start << 3));
    const lo = load<u32>(ptr + (<usize>start << 3), 4);
    const first = start;
    start = end;
    if ((hi & HI_COMPRESSED) != 0) {
      // A compressed entry is a run of its own: COPIED clear, the payload starting below
      // the end of the file and clear of metadata and active L2 tables.
      if ((hi & HI_COPIED) != 0) return false;
      const high = hi & hiMask;
      if (high >= 0x200000) return false;
      const from = <f64>high * 4294967296.0 + <f64>lo;
      if (from >= fileSize) return false;
      let to = from + <f64>((((hi & 0x3fffffff) >>> hiBits) + 1) * 512 - (lo & 511));
      if (to > fileSize) to = fileSize;
      if (from < maxEnd && rangeOverlapping(rStarts, rEnds, nRanges, from, to)) return false;
      if (tableOverlapping(tables, nTables, cs, from, to)) return false;
      continue;
    }
    if (((hi & HI_OFFSET) == 0 && (lo & LO_OFFSET) == 0) || (hi & HI_UNSAFE) != 0 || (lo & LO_OFFSET & csMask) != 0) continue;
    const host = <f64>(hi & HI_OFFSET) * 4294967296.0 + <f64>(lo & LO_OFFSET);
    const hostEnd = host + <f64>(end - first) * cs;
    if (hostEnd - cs >= fileSize) return false;
    if (host < maxEnd && rangeOverlapping(rStarts, rEnds, nRanges, host, hostEnd)) return false;
    if (tableOverlapping(tables, nTables, cs, host, hostEnd)) return false;
  }
  return true;
}

/** `MetadataRanges.find(start, end) !== null`. */
function rangeOverlapping(starts: usize, ends: usize, n: i32, start: f64, end: f64): bool {
  let lo = 0;
  let hi = n - 1;
  let at = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    if (load<f64>(starts + (<usize>mid << 3)) < end) {
      at = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return at >= 0 && load<f64>(ends + (<usize>at << 3)) > start;
}

/** `L2TableChecker.l2TableOverlapping(start, end) >= 0`. */
function tableOverlapping(t: usize, n: i32, cs: f64, start: f64, end: f64): bool {
  if (n == 0) return false;
  if (end <= load<f64>(t) || start >= load<f64>(t + (<usize>(n - 1) << 3)) + cs) return false;
  let lo = 0;
  let hi = n;
  const from = start - cs;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (load<f64>(t + (<usize>mid << 3)) <= from) lo = mid + 1;
    else hi = mid;
  }
  return lo < n && load<f64>(t + (<usize>lo << 3)) < end;
}
