/**
 * Reading a persistent dirty bitmap's contents (docs/interop/qcow2.txt "Bitmaps", "Bitmap
 * table"; QEMU 7.2 `bitmap_table_load`, `load_bitmap_data`).
 *
 * A bitmap has one bit per `granularity` bytes of the guest disk; bit `k` covers guest bytes
 * `[k·g, (k+1)·g)` (the last one clipped to the disk size). The serialised bits are stored
 * in clusters, bit 0 of byte 0 first (least significant bit first, as QEMU's little-endian
 * `hbitmap_deserialize_part`). The bitmap table has one 8-byte entry per data cluster:
 *
 * - bits 9..55: host offset of the data cluster (cluster-aligned), or 0;
 * - bit 0: with offset 0, 1 means "every bit of this cluster is set", 0 "none is";
 * - every other bit is reserved (`0xff000000000001fe`).
 *
 * The table is read in chunks of at most 64 KiB and each data cluster once, so memory stays
 * a few clusters whatever the table says. A bitmap flagged `in_use` was not saved cleanly
 * (its writer died or still runs): its bits cannot be trusted, and reading it fails with
 * `QCOW2_BITMAP_INCONSISTENT`, as `qemu-nbd -B` refuses it.
 */
import { CorruptImageError, hex } from '../../errors.js';
import type { RandomAccessFile } from '../../io/random-access-file.js';
import {
  AUTOCLEAR_BITMAPS,
  BME_TABLE_ENTRY_FLAG_ALL_ONES,
  BME_TABLE_ENTRY_OFFSET_MASK,
  BME_TABLE_ENTRY_RESERVED_MASK,
  EXT_BITMAPS,
  EXT_END,
} from './constants.js';
import type { Qcow2Header } from './header.js';
import {
  checkBitmapTable,
  type BitmapContext,
  type BitmapDirectoryEntry,
} from './bitmaps.js';

/** A run of guest bytes that is wholly dirty or wholly clean in a bitmap. */
export interface DirtyRun {
  readonly start: number;
  readonly length: number;
  readonly dirty: boolean;
}

/** One decoded bitmap table entry. */
export type BitmapTableEntry =
  | { readonly kind: 'zeroes' }
  | { readonly kind: 'ones' }
  | { readonly kind: 'data'; readonly offset: number };

/** Table entries read per chunk (64 KiB). */
const TABLE_CHUNK_ENTRIES = 8192;

/**
 * Decodes one bitmap table entry (QEMU `check_table_entry`): reserved bits, an unaligned
 * offset, or the all-ones flag next to an offset are errors.
 */
export function decodeBitmapTableEntry(e: bigint, clusterSize: number): BitmapTableEntry | null {
  const offset = e & BME_TABLE_ENTRY_OFFSET_MASK;
  if ((e & BME_TABLE_ENTRY_RESERVED_MASK) !== 0n) return null;
  if (offset === 0n) return (e & BME_TABLE_ENTRY_FLAG_ALL_ONES) !== 0n ? { kind: 'ones' } : { kind: 'zeroes' };
  if ((e & BME_TABLE_ENTRY_FLAG_ALL_ONES) !== 0n || offset % BigInt(clusterSize) !== 0n) return null;
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return { kind: 'data', offset: Number(offset) };
}

/** The error for a bitmap whose `in_use` flag is set. */
export function inconsistentBitmapError(file: string, entry: BitmapDirectoryEntry): CorruptImageError {
  return new CorruptImageError(
    'QCOW2_BITMAP_INCONSISTENT',
    `bitmap '${entry.name}' is inconsistent and cannot be used: its in_use flag is set (it was not saved cleanly); its bits are not trusted`,
    { file, field: 'bitmap flags', value: entry.flags, limit: 'in_use clear' },
  );
}

/** Merges adjacent bit runs and turns them into guest runs clipped to `[start, end)`. */
class RunBuilder {
  private curFrom = -1;
  private curTo = -1;
  private curDirty = false;
  readonly out: DirtyRun[] = [];

  constructor(
    private readonly granularity: number,
    private readonly start: number,
    private readonly end: number,
  ) {}

  /** Bits `[from, to)` have value `dirty`. */
  add(from: number, to: number, dirty: boolean): void {
    if (to <= from) return;
    if (this.curFrom >= 0 && this.curDirty === dirty && this.curTo === from) {
      this.curTo = to;
      return;
    }
    this.flush();
    this.curFrom = from;
    this.curTo = to;
    this.curDirty = dirty;
  }

  flush(): void {
    if (this.curFrom < 0) return;
    const s = Math.max(this.start, this.curFrom * this.granularity);
    const e = Math.min(this.end, this.curTo * this.granularity);
    if (e > s) {
      const last = this.out[this.out.length - 1];
      if (last !== undefined && last.dirty === this.curDirty && last.start + last.length === s) {
        this.out[this.out.length - 1] = { start: last.start, length: e - last.start, dirty: last.dirty };
      } else {
        this.out.push({ start: s, length: e - s, dirty: this.curDirty });
      }
    }
    this.curFrom = -1;
  }

  /** Runs finished so far, except the last one (which may still grow). */
  take(): DirtyRun[] {
    if (this.out.length <= 1) return [];
    return this.out.splice(0, this.out.length - 1);
  }
}

/**
 * The merged dirty and clean runs of `entry` over guest bytes `[start, end)` (`end` at most
 * the virtual size). Checks the table first as QEMU does when it loads the bitmap
 * ({@link checkBitmapTable}); in-use bitmaps fail with `QCOW2_BITMAP_INCONSISTENT`.
 */
export async function* bitmapDirtyRuns(
  file: RandomAccessFile,
  entry: BitmapDirectoryEntry,
  ctx: BitmapContext,
  start: number,
  end: number,
): AsyncGenerator<DirtyRun> {
  if (entry.inUse) throw inconsistentBitmapError(ctx.file, entry);
  await checkBitmapTable(file, entry, ctx);
  end = Math.min(end, ctx.virtualSize);
  if (start >= end) return;
  const g = entry.granularity;
  const cs = ctx.clusterSize;
  const bitsPerCluster = cs * 8;
  const firstBit = Math.floor(start / g);
  const endBit = Math.ceil(end / g);
  const runs = new RunBuilder(g, start, end);
  const chunk = new Uint8Array(TABLE_CHUNK_ENTRIES * 8);
  const data = new Uint8Array(cs);
  let chunkFirst = -1;
  let chunkCount = 0;
  const firstEntry = Math.floor(firstBit / bitsPerCluster);
  const lastEntry = Math.floor((endBit - 1) / bitsPerCluster);
  for (let t = firstEntry; t <= lastEntry; t++) {
    if (t < chunkFirst || t >= chunkFirst + chunkCount) {
      chunkFirst = t;
      chunkCount = Math.min(TABLE_CHUNK_ENTRIES, entry.bitmapTableSize - t);
      await file.read(chunk, entry.bitmapTableOffset + t * 8, chunkCount * 8);
    }
    const dv = new DataView(chunk.buffer, (t - chunkFirst) * 8, 8);
    const raw = dv.getBigUint64(0);
    const te = decodeBitmapTableEntry(raw, cs);
    const bitLo = Math.max(firstBit, t * bitsPerCluster);
    const bitHi = Math.min(endBit, (t + 1) * bitsPerCluster);
    if (te === null) {
      throw new CorruptImageError('QCOW2_BITMAP_TABLE', `bitmap '${entry.name}': bitmap table entry ${t} is invalid: ${hex(raw)}`, {
        file: ctx.file, field: 'bitmap table entry', value: raw, offset: entry.bitmapTableOffset + t * 8,
      });
    }
    if (te.kind !== 'data') {
      runs.add(bitLo, bitHi, te.kind === 'ones');
    } else {
      if (te.offset + cs > file.size) {
        throw new CorruptImageError(
          'QCOW2_BITMAP_DATA_BEYOND_EOF',
          `bitmap '${entry.name}': data cluster ${t} at ${hex(te.offset)} runs past the end of the file (${file.size} bytes)`,
          { file: ctx.file, field: 'bitmap table entry', value: te.offset, limit: file.size, offset: entry.bitmapTableOffset + t * 8 },
        );
      }
      await file.read(data, te.offset, cs);
      scanBits(data, t * bitsPerCluster, bitLo, bitHi, runs);
    }
    yield* runs.take();
  }
  runs.flush();
  yield* runs.out;
}

/** Adds bits `[bitLo, bitHi)` of a data cluster whose bit 0 is bitmap bit `base`. */
function scanBits(data: Uint8Array, base: number, bitLo: number, bitHi: number, runs: RunBuilder): void {
  let b = bitLo;
  while (b < bitHi) {
    const rel = b - base;
    const byte = data[rel >> 3] ?? 0;
    if ((rel & 7) === 0 && b + 8 <= bitHi && (byte === 0 || byte === 0xff)) {
      // Whole bytes of one value: extend over as many as agree.
      let n = 1;
      const limit = (bitHi - b) >> 3;
      while (n < limit && data[(rel >> 3) + n] === byte) n++;
      runs.add(b, b + n * 8, byte === 0xff);
      b += n * 8;
      continue;
    }
    runs.add(b, b + 1, ((byte >> (rel & 7)) & 1) === 1);
    b++;
  }
}

/**
 * Whether the image has a bitmaps extension that QEMU ignores because autoclear bit 0 is
 * clear: a program without bitmap support wrote the image, so every bitmap is inconsistent
 * (QEMU warns, lists no bitmaps and leaves their clusters to `qemu-img check` as leaks).
 * Walks the extension area of the first cluster (bounded by the cluster size).
 */
export async function hasIgnoredBitmapsExtension(file: RandomAccessFile, header: Qcow2Header): Promise<boolean> {
  if ((header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n) return false;
  const clusterSize = 2 ** header.clusterBits;
  const end = Math.min(header.backingFileOffset !== 0 ? header.backingFileOffset : clusterSize, file.size);
  const start = header.version === 3 ? header.headerLength : 72;
  if (end <= start) return false;
  const area = new Uint8Array(end);
  await file.read(area, 0, end);
  const dv = new DataView(area.buffer);
  for (let p = start; p + 8 <= end; ) {
    const magic = dv.getUint32(p);
    const len = dv.getUint32(p + 4);
    if (magic === EXT_END || len > end - p - 8) return false;
    if (magic === EXT_BITMAPS) return true;
    p += 8 + Math.ceil(len / 8) * 8;
  }
  return false;
}

/** QEMU's warning for {@link hasIgnoredBitmapsExtension} (then "Some clusters may be leaked…"). */
export function ignoredBitmapsWarning(version: number): string {
  return version < 3
    ? 'This qcow2 v2 image contains bitmaps, but they may have been modified by a program without persistent bitmap support; so now they must all be considered inconsistent'
    : 'a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent';
}
