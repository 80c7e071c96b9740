/**
 * Where a qcow2 image keeps its metadata, as a sorted list of host byte ranges: the header
 * cluster, the active L1 table, the refcount table and refcount blocks, the snapshot table,
 * the bitmap directory and the LUKS header. Built once at open; then any L2 table, data
 * cluster or compressed payload can be checked against it with a binary search.
 *
 * QEMU checks overlaps only before writes (`qcow2_check_metadata_overlap`); reads follow
 * whatever the tables say, so an L1 entry naming the refcount table makes QEMU parse it as
 * an L2 table (HOSTILE-IMAGES.md §2). vdisk refuses such images with
 * `QCOW2_METADATA_OVERLAP`, naming both structures and their offsets. Two metadata
 * structures overlapping each other are refused the same way when the list is built.
 */
import { CorruptImageError, hex } from '../../errors.js';

/** One metadata structure, `[start, end)` in host bytes. */
export interface MetadataRange {
  /** What the structure is, for messages: `header`, `active L1 table`, … */
  readonly kind: string;
  readonly start: number;
  readonly end: number;
}

/** Many structures of one kind and one length (refcount blocks), starts in any order. */
export interface UniformRanges {
  readonly kind: string;
  readonly starts: Float64Array;
  readonly length: number;
}

/** The metadata structures of one image, sorted and non-overlapping. */
export class MetadataRanges {
  /** Largest end offset; anything at or beyond it overlaps nothing. */
  readonly maxEnd: number;

  private constructor(
    private readonly file: string,
    private readonly starts: Float64Array,
    private readonly ends: Float64Array,
    /** Index into `kinds` per range. */
    private readonly kindOf: Uint16Array,
    private readonly kinds: readonly string[],
  ) {
    let m = 0;
    for (let i = 0; i < ends.length; i++) m = Math.max(m, ends[i] as number);
    this.maxEnd = m;
  }

  /** Bytes a map of `count` structures takes (for the metadata budget). */
  static bytesFor(count: number): number {
    return count * 18;
  }

  /**
   * Sorts `ranges` and `uniform` (empty ranges are dropped) and refuses two that overlap
   * (`QCOW2_METADATA_OVERLAP`). Memory: 18 bytes per structure, no object per block.
   */
  static build(file: string, ranges: readonly MetadataRange[], uniform?: UniformRanges): MetadataRanges {
    const few = ranges.filter((r) => r.end > r.start).sort((a, b) => a.start - b.start || a.end - b.end);
    const blocks = uniform === undefined || uniform.length <= 0 ? new Float64Array(0) : Float64Array.from(uniform.starts).sort();
    const n = few.length + blocks.length;
    const starts = new Float64Array(n);
    const ends = new Float64Array(n);
    const kindOf = new Uint16Array(n);
    const kinds = [uniform?.kind ?? '', ...few.map((r) => r.kind)];
    let i = 0;
    let j = 0;
    for (let k = 0; k < n; k++) {
      const fewNext = few[i];
      const takeFew = fewNext !== undefined && (j >= blocks.length || fewNext.start <= (blocks[j] as number));
      if (takeFew) {
        starts[k] = fewNext.start;
        ends[k] = fewNext.end;
        kindOf[k] = i + 1;
        i++;
      } else {
        const b = blocks[j] as number;
        starts[k] = b;
        ends[k] = b + (uniform?.length ?? 0);
        kindOf[k] = 0;
        j++;
      }
      if (k > 0 && (starts[k] as number) < (ends[k - 1] as number)) {
        const prev = { kind: kinds[kindOf[k - 1] as number] as string, start: starts[k - 1] as number, end: ends[k - 1] as number };
        throw overlapError(file, kinds[kindOf[k] as number] as string, starts[k] as number, ends[k] as number, prev);
      }
    }
    return new MetadataRanges(file, starts, ends, kindOf, kinds);
  }

  /** The structures' starts, sorted (not to be modified). */
  get startOffsets(): Float64Array {
    return this.starts;
  }

  /** Their ends, in the same order (not to be modified). */
  get endOffsets(): Float64Array {
    return this.ends;
  }

  /** Number of structures. */
  get size(): number {
    return this.starts.length;
  }

  /** Where the first structure starting at or after `pos` starts (Infinity when none). */
  nextStart(pos: number): number {
    let lo = 0;
    let hi = this.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.starts[mid] as number) < pos) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.starts.length ? (this.starts[lo] as number) : Infinity;
  }

  /** The structure overlapping `[start, end)`, or null. */
  find(start: number, end: number): MetadataRange | null {
    if (start >= this.maxEnd) return null;
    // Last range starting before `end`.
    let lo = 0;
    let hi = this.starts.length - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.starts[mid] as number) < end) {
        at = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    if (at < 0 || (this.ends[at] as number) <= start) return null;
    return { kind: this.kinds[this.kindOf[at] as number] as string, start: this.starts[at] as number, end: this.ends[at] as number };
  }

  /**
   * Refuses `[start, end)` when it overlaps a metadata structure. `what` names the
   * structure being checked and where it was found, e.g. `host cluster of L2 entry 0x3 (L2
   * table at 0x40000)`.
   */
  check(what: string, start: number, end: number, field: string): void {
    if (start >= this.maxEnd) return;
    const hit = this.find(start, end);
    if (hit !== null) throw overlapError(this.file, what, start, end, hit, field);
  }
}

/** The `QCOW2_METADATA_OVERLAP` error for `what` at `[start, end)` against `hit`. */
export function overlapError(file: string, what: string, start: number, end: number, hit: MetadataRange, field = what): CorruptImageError {
  return new CorruptImageError(
    'QCOW2_METADATA_OVERLAP',
    `${what} at ${hex(start)}..${hex(end)} overlaps the ${hit.kind} at ${hex(hit.start)}..${hex(hit.end)}`,
    { file, field, value: start, limit: `outside ${hit.kind} ${hex(hit.start)}..${hex(hit.end)}`, offset: start },
  );
}
