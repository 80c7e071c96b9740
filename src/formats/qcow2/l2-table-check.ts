/**
 * Checks of the active L1 table (once, at open) and of each L2 table (once per load, before
 * it enters the cache) that QEMU does not make when it reads, but `qemu-img check` reports
 * (HOSTILE-IMAGES.md §2, §6c):
 *
 * - L1 entries with reserved bits set (`0x7f000000000001ff`), and two L1 entries naming the
 *   same L2 table (`QCOW2_RESERVED_BITS`, `QCOW2_L2_DUPLICATE`);
 * - an L2 table overlapping metadata (header, L1, refcount structures, snapshot table,
 *   bitmap directory, LUKS header);
 * - L2 entries with reserved bits set (standard `0x3f000000000001fe`; compressed entries
 *   with COPIED or, with extended L2, a non-zero subcluster bitmap);
 * - host clusters (data, preallocated zero) starting at or past the end of the file
 *   (`QCOW2_DATA_BEYOND_EOF`; QEMU reads zeroes there), or overlapping metadata or an
 *   active L2 table (`QCOW2_METADATA_OVERLAP`);
 * - compressed payloads starting past the end of the file (`QCOW2_COMPRESSED_BEYOND_EOF`)
 *   or overlapping metadata or an active L2 table.
 *
 * Entry problems QEMU itself signals lazily (unaligned offsets, offsets of 2^53 or more,
 * zero clusters in v2 images, compressed clusters with a data file, bad subcluster
 * bitmaps) are left to the lookup (host-offset.ts), which reports them in QEMU's words.
 * A table that fails here is not cached: every lookup in it fails the same way.
 *
 * Given the table's run list (l2-runs.ts), the entry checks are made per run: a run of
 * contiguous host clusters is one range to test, a compressed entry (a run of its own) its
 * payload. Only when that finds something (or the table has reserved bits, or compressed
 * entries with an external data file) are the entries checked one by one, which names the
 * first bad entry exactly as before.
 */
import { CorruptImageError, hex } from '../../errors.js';
import { MetadataRanges, overlapError, type MetadataRange } from './metadata-ranges.js';
import type { L2Runs } from './l2-runs.js';
import { runsCleanInKernel, type HostCheckContext } from './table-scan.js';
import {
  WORD_L1_RESERVED_HI as L1_RESERVED_HI,
  WORD_L1_RESERVED_LO as L1_RESERVED_LO,
  WORD_L2_RESERVED_HI as L2_RESERVED_HI,
  WORD_L2_RESERVED_LO as L2_RESERVED_LO,
  WORD_COPIED_HI as HI_COPIED,
  WORD_COMPRESSED_HI as HI_COMPRESSED,
  WORD_OFFSET_HI as HI_OFFSET,
  WORD_OFFSET_LO as LO_OFFSET,
} from './constants.js';

/** What the checks need to know about the image. */
export interface L2CheckContext {
  readonly file: string;
  /** Size of the image file in bytes (host clusters and payloads must start below it). */
  readonly fileSize: number;
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly extendedL2: boolean;
  /** Host offsets of data point into an external data file (not checked against this file). */
  readonly hasDataFile: boolean;
}

/** Offsets of 2^53 or more (high word bits 21..23): left to the lookup. */
const HI_UNSAFE = 0x00e00000;

/**
 * The payload of a compressed descriptor (spec "Compressed Clusters Descriptor"), exactly:
 * `hostOffset` is `Infinity` when the offset is 2^53 or more (past the end of any file).
 */
export function compressedPayload(hi: number, lo: number, clusterBits: number): { hostOffset: number; hostOffsetBig: bigint; length: number } {
  const e = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo >>> 0);
  const x = BigInt(62 - (clusterBits - 8));
  const offset = e & ((1n << x) - 1n);
  const sectors = ((e >> x) & ((1n << BigInt(clusterBits - 8)) - 1n)) + 1n;
  return {
    hostOffset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(offset),
    hostOffsetBig: offset,
    length: Number(sectors * 512n - (offset & 511n)),
  };
}

/**
 * Where the payload of a compressed descriptor starts, from its words without BigInt (the
 * checks run this for every compressed entry of every table loaded): the same number as
 * {@link compressedPayload}'s `hostOffset`, `Infinity` from 2^53. The offset takes the low
 * `x = 62 - (clusterBits - 8)` bits of the descriptor: bits `0 .. x - 33` of the high word
 * (`clusterBits` 9 to 21: 17 to 29 bits) and the whole low word.
 */
export function compressedPayloadStart(hi: number, lo: number, clusterBits: number): number {
  const hiBits = 30 - (clusterBits - 8);
  const high = hi & ((1 << hiBits) - 1);
  return high >= 0x200000 ? Infinity : high * 0x100000000 + (lo >>> 0);
}

/**
 * The payload's length in bytes ({@link compressedPayload}'s `length`): the sector count,
 * the descriptor bits from `x` to 61 (plus one), in 512-byte sectors from the sector the
 * payload starts in.
 */
export function compressedPayloadLength(hi: number, lo: number, clusterBits: number): number {
  const hiBits = 30 - (clusterBits - 8);
  return (((hi & 0x3fffffff) >>> hiBits) + 1) * 512 - (lo & 511);
}

function entryHex(hi: number, lo: number): string {
  return '0x' + (hi >>> 0).toString(16).padStart(8, '0') + (lo >>> 0).toString(16).padStart(8, '0');
}

/**
 * Scans the active L1 table (native words, hi/lo per entry) once: refuses reserved bits and
 * L2 tables named twice, and returns the L2 table offsets sorted (for overlap checks of
 * data clusters). Memory: one double per allocated L1 entry.
 */
export function scanL1(file: string, l1: Uint32Array, l1TableOffset: number): Float64Array {
  const n = l1.length >>> 1;
  let count = 0;
  for (let i = 0; i < n; i++) {
    const hi = l1[2 * i] as number;
    const lo = l1[2 * i + 1] as number;
    if ((hi & L1_RESERVED_HI) !== 0 || (lo & L1_RESERVED_LO) !== 0) {
      throw new CorruptImageError(
        'QCOW2_RESERVED_BITS',
        `L1 entry ${hex(i)} is ${entryHex(hi, lo)}: reserved bits are set (mask 0x7f000000000001ff)`,
        { file, field: 'L1 entry', value: BigInt(hi >>> 0) * 0x100000000n + BigInt(lo >>> 0), limit: 'reserved bits 0x7f000000000001ff clear', offset: l1TableOffset + 8 * i },
      );
    }
    if ((hi & HI_OFFSET) !== 0 || (lo & LO_OFFSET) !== 0) count++;
  }
  const offsets = new Float64Array(count);
  let k = 0;
  let sorted = true;
  for (let i = 0; i < n; i++) {
    const hi = l1[2 * i] as number;
    const lo = l1[2 * i + 1] as number;
    if ((hi & HI_OFFSET) === 0 && (lo & LO_OFFSET) === 0) continue;
    const off = (hi & HI_OFFSET) * 0x100000000 + ((lo & LO_OFFSET) >>> 0);
    if (k > 0 && off <= (offsets[k - 1] as number)) sorted = false;
    offsets[k++] = off;
  }
  if (!sorted) offsets.sort();
  for (let j = 1; j < offsets.length; j++) {
    if (offsets[j] === offsets[j - 1]) {
      const dup = offsets[j] as number;
      const users: number[] = [];
      for (let i = 0; i < n && users.length < 2; i++) {
        const hi = l1[2 * i] as number;
        const lo = l1[2 * i + 1] as number;
        if ((hi & HI_OFFSET) * 0x100000000 + ((lo & LO_OFFSET) >>> 0) === dup) users.push(i);
      }
      throw new CorruptImageError(
        'QCOW2_L2_DUPLICATE',
        `L1 entries ${hex(users[0] ?? 0)} and ${hex(users[1] ?? 0)} both name the L2 table at ${hex(dup)}: an L2 table belongs to one L1 entry`,
        { file, field: 'L1 entry', value: dup, limit: 'one L1 entry per L2 table', offset: l1TableOffset + 8 * (users[1] ?? 0) },
      );
    }
  }
  return offsets;
}

/** The per-table checks of one image. */
export class L2TableChecker {
  private readonly wordsPerEntry: number;

  constructor(
    private readonly ctx: L2CheckContext,
    private readonly ranges: MetadataRanges,
    /** Sorted offsets of the active L2 tables (from {@link scanL1}). */
    private readonly l2Tables: Float64Array,
  ) {
    this.wordsPerEntry = ctx.extendedL2 ? 4 : 2;
    this.hostContext = {
      clusterSize: ctx.clusterSize, fileSize: ctx.fileSize, hasDataFile: ctx.hasDataFile,
      rangeStarts: ranges.startOffsets, rangeEnds: ranges.endOffsets, maxEnd: ranges.maxEnd, l2Tables,
    };
  }

  /** What the table-scan kernel checks runs against. */
  private readonly hostContext: HostCheckContext;

  /** The same checks for a view through another L1 table (an internal snapshot's). */
  forL1(l1: Uint32Array): L2TableChecker {
    return new L2TableChecker(this.ctx, this.ranges, scanL1(this.ctx.file, l1, 0));
  }

  /**
   * Refuses the L2 table at `l2Offset` (words in native order) if anything above is wrong.
   * `runs`, the table's run list (standard L2 only), lets clean tables be checked per run.
   */
  check(l2Offset: number, words: Uint32Array, runs: L2Runs | null = null): void {
    this.ranges.check(`L2 table`, l2Offset, l2Offset + this.ctx.clusterSize, 'L1 entry');
    if (runs !== null && this.wordsPerEntry === 2 && this.runsClean(words, runs)) return;
    this.checkEntries(l2Offset, words);
  }

  /**
   * True when every entry of a standard table passes: no reserved bits, each run of host
   * clusters below the end of the file and clear of metadata and active L2 tables, each
   * compressed payload (a run of its own, l2-runs.ts) too — checked as
   * {@link checkEntries} checks them. False means "check the entries one by one".
   */
  private runsClean(words: Uint32Array, runs: L2Runs): boolean {
    const inKernel = runsCleanInKernel(words, runs, this.hostContext);
    if (inKernel !== undefined) return inKernel;
    if ((runs.orHi & L2_RESERVED_HI) !== 0 || (runs.orLo & L2_RESERVED_LO) !== 0) return false;
    const { ctx, ranges } = this;
    // With a data file, compressed entries (an error at lookup) are left to the entries' checks.
    if (ctx.hasDataFile) return runs.compressed === 0;
    const cs = ctx.clusterSize;
    const ends = runs.ends;
    let start = 0;
    for (let r = 0; r < ends.length; r++) {
      const end = ends[r] as number;
      const hi = words[2 * start] as number;
      const lo = words[2 * start + 1] as number;
      const first = start;
      start = end;
      if ((hi & HI_COMPRESSED) !== 0) {
        if ((hi & HI_COPIED) !== 0 || this.compressedFault(hi, lo) !== null) return false;
        continue;
      }
      // No offset: unallocated or zero runs. Offsets of 2^53 or more and unaligned ones
      // (the same for a whole run) are left to the lookup, as entry by entry.
      if (((hi & HI_OFFSET) === 0 && (lo & LO_OFFSET) === 0) || (hi & HI_UNSAFE) !== 0 || (lo & 0xfffffe00 & (cs - 1)) !== 0) continue;
      const host = (hi & HI_OFFSET) * 0x100000000 + ((lo & LO_OFFSET) >>> 0);
      const hostEnd = host + (end - first) * cs;
      if (hostEnd - cs >= ctx.fileSize) return false;
      if (host < ranges.maxEnd && ranges.find(host, hostEnd) !== null) return false;
      if (this.l2TableOverlapping(host, hostEnd) >= 0) return false;
    }
    return true;
  }

  /** The checks entry by entry: throws for the first entry that fails one. */
  private checkEntries(l2Offset: number, words: Uint32Array): void {
    const { ctx, ranges } = this;
    const cs = ctx.clusterSize;
    const wpe = this.wordsPerEntry;
    const n = words.length;
    const checkHosts = !ctx.hasDataFile;
    let freeFrom = 0;
    let freeTo = 0;
    // The last entry that passed every check, and its host cluster. An entry equal to it
    // plus one cluster (same flags, the next host cluster) — the common case of contiguous
    // allocations — only needs the end-of-file and free-window tests.
    let pHi = -1;
    let pLo = -1;
    let pHost = -1;
    for (let at = 0; at < n; at += wpe) {
      const hi = words[at] as number;
      const lo = words[at + 1] as number;
      if (hi === pHi && lo === pLo + cs) {
        const next = pHost + cs;
        if (next < ctx.fileSize && next + cs <= freeTo) {
          pLo = lo;
          pHost = next;
          continue;
        }
      }
      if (hi === 0 && (lo & ~1) === 0) continue; // unallocated, or a zero cluster without offset
      if ((hi & HI_COMPRESSED) !== 0) {
        if ((hi & HI_COPIED) !== 0 || (wpe === 4 && ((words[at + 2] as number) !== 0 || (words[at + 3] as number) !== 0))) {
          throw this.reserved(l2Offset, at / wpe, hi, lo, wpe === 4 && (hi & HI_COPIED) === 0
            ? 'a compressed cluster with a non-zero subcluster bitmap'
            : 'a compressed cluster with COPIED set');
        }
        if (checkHosts) this.checkCompressed(l2Offset, at / wpe, hi, lo);
        continue;
      }
      if ((hi & L2_RESERVED_HI) !== 0 || (lo & L2_RESERVED_LO) !== 0) {
        throw this.reserved(l2Offset, at / wpe, hi, lo, 'reserved bits are set (mask 0x3f000000000001fe)');
      }
      if (!checkHosts || ((hi & HI_OFFSET) === 0 && (lo & LO_OFFSET) === 0) || (hi & HI_UNSAFE) !== 0) continue;
      const host = (hi & HI_OFFSET) * 0x100000000 + ((lo & LO_OFFSET) >>> 0);
      if ((lo & 0xfffffe00 & (cs - 1)) !== 0) continue; // QEMU's "Cluster allocation offset … unaligned", at lookup
      const index = at / wpe;
      if (host >= ctx.fileSize) {
        throw new CorruptImageError(
          'QCOW2_DATA_BEYOND_EOF',
          `L2 entry ${hex(index)} of the L2 table at ${hex(l2Offset)} names the host cluster at ${hex(host)}, past the end of the file (${ctx.fileSize} bytes)`,
          { file: ctx.file, field: 'L2 entry', value: host, limit: ctx.fileSize, offset: l2Offset + index * wpe * 4 },
        );
      }
      // This loop runs for every entry of every table: hosts inside the last window known
      // to be free of metadata skip the searches, and descriptions are built only on a hit.
      if (host >= freeFrom && host + cs <= freeTo) {
        pHi = hi;
        pLo = lo;
        pHost = host;
        continue;
      }
      if (host < ranges.maxEnd) {
        const hit = ranges.find(host, host + cs);
        if (hit !== null) throw overlapError(ctx.file, hostWhat(index, l2Offset), host, host + cs, hit, 'L2 entry');
      }
      const table = this.l2TableOverlapping(host, host + cs);
      if (table >= 0) {
        throw overlapError(ctx.file, hostWhat(index, l2Offset), host, host + cs, { kind: 'active L2 table', start: table, end: table + cs }, 'L2 entry');
      }
      freeFrom = host;
      freeTo = Math.min(host < ranges.maxEnd ? ranges.nextStart(host) : Infinity, this.nextL2Table(host));
      pHi = hi;
      pLo = lo;
      pHost = host;
    }
  }

  private checkCompressed(l2Offset: number, index: number, hi: number, lo: number): void {
    const f = this.compressedFault(hi, lo);
    if (f === null) return;
    const { ctx } = this;
    if (f === BEYOND_EOF) {
      const exact = compressedPayload(hi, lo, ctx.clusterBits).hostOffsetBig;
      throw new CorruptImageError(
        'QCOW2_COMPRESSED_BEYOND_EOF',
        `${compressedWhat(index, l2Offset)} starts at ${hex(exact)}, past the end of the file (${ctx.fileSize} bytes)`,
        { file: ctx.file, field: 'compressed descriptor', value: exact, limit: ctx.fileSize, offset: l2Offset + index * 8 },
      );
    }
    throw overlapError(ctx.file, compressedWhat(index, l2Offset), f.start, f.end, f.hit, f.field);
  }

  /**
   * What is wrong with the payload of the compressed descriptor `hi`, `lo` (COPIED aside),
   * or null: it starts at or past the end of the file, or overlaps metadata or an active L2
   * table. Numbers, not BigInt, and nothing allocated for a payload that passes: both the
   * per-run and the per-entry checks run this for every compressed entry (W4-zstd: 10,600
   * per conversion).
   */
  private compressedFault(hi: number, lo: number): CompressedFault | null {
    const { ctx } = this;
    const start = compressedPayloadStart(hi, lo, ctx.clusterBits);
    if (start >= ctx.fileSize) return BEYOND_EOF;
    const end = Math.min(start + compressedPayloadLength(hi, lo, ctx.clusterBits), ctx.fileSize);
    if (start < this.ranges.maxEnd) {
      const hit = this.ranges.find(start, end);
      if (hit !== null) return { start, end, hit, field: 'compressed descriptor' };
    }
    const table = this.l2TableOverlapping(start, end);
    if (table >= 0) return { start, end, hit: { kind: 'active L2 table', start: table, end: table + ctx.clusterSize }, field: 'L2 entry' };
    return null;
  }

  /** Where the first active L2 table at or after `pos` starts (Infinity when none). */
  private nextL2Table(pos: number): number {
    const t = this.l2Tables;
    let lo = 0;
    let hi = t.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((t[mid] as number) < pos) lo = mid + 1;
      else hi = mid;
    }
    return lo < t.length ? (t[lo] as number) : Infinity;
  }

  /** The offset of an active L2 table overlapping `[start, end)`, or -1. */
  private l2TableOverlapping(start: number, end: number): number {
    const t = this.l2Tables;
    if (t.length === 0) return -1;
    // Quick rejects first: data usually lies wholly after (or before) the L2 tables.
    if (end <= (t[0] as number) || start >= (t[t.length - 1] as number) + this.ctx.clusterSize) return -1;
    const cs = this.ctx.clusterSize;
    // First table whose end is after `start`: table offset > start - cs.
    let lo = 0;
    let hi = t.length;
    const from = start - cs;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((t[mid] as number) <= from) lo = mid + 1;
      else hi = mid;
    }
    const hit = t[lo];
    return hit !== undefined && hit < end ? hit : -1;
  }

  private reserved(l2Offset: number, index: number, hi: number, lo: number, why: string): CorruptImageError {
    return new CorruptImageError(
      'QCOW2_RESERVED_BITS',
      `L2 entry ${hex(index)} of the L2 table at ${hex(l2Offset)} is ${entryHex(hi, lo)}: ${why}`,
      {
        file: this.ctx.file, field: 'L2 entry', value: BigInt(hi >>> 0) * 0x100000000n + BigInt(lo >>> 0),
        limit: 'reserved bits clear', offset: l2Offset + index * this.wordsPerEntry * 4,
      },
    );
  }
}

/** A compressed payload starting at or past the end of the file. */
const BEYOND_EOF = 'beyond end of file';

/** What {@link L2TableChecker.compressedFault} finds: the payload past the end, or what it overlaps. */
type CompressedFault = typeof BEYOND_EOF | { readonly start: number; readonly end: number; readonly hit: MetadataRange; readonly field: string };

/** How errors name a compressed payload. */
function compressedWhat(index: number, l2Offset: number): string {
  return `compressed payload of L2 entry ${hex(index)} (L2 table at ${hex(l2Offset)})`;
}

/** How an overlap error names a data cluster. */
function hostWhat(index: number, l2Offset: number): string {
  return `host cluster of L2 entry ${hex(index)} (L2 table at ${hex(l2Offset)})`;
}
