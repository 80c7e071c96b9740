/**
 * The qcow2 bitmap directory (docs/interop/qcow2.txt "Bitmaps"; QEMU 7.2
 * `bitmap_list_load`, `check_dir_entry`, `load_bitmap`).
 *
 * The directory is `bitmap_directory_size` bytes at `bitmap_directory_offset` (both from
 * the bitmaps header extension), holding `nb_bitmaps` entries, each padded to 8 bytes:
 *
 * | bytes | field |
 * |---|---|
 * | 0–7 | bitmap_table_offset |
 * | 8–11 | bitmap_table_size (entries) |
 * | 12–15 | flags: bit 0 in_use, bit 1 auto; QEMU 7.2 refuses every other bit |
 * | 16 | type (1 = dirty tracking bitmap) |
 * | 17 | granularity_bits (9..31) |
 * | 18–19 | name_size (1..1023) |
 * | 20–23 | extra_data_size (QEMU supports only 0) |
 *
 * then the extra data and the name. Checks follow QEMU's order and messages; names must be
 * unique ("Bitmap already exists"). For a bitmap that is not in use, QEMU also loads its
 * bitmap table on open: {@link checkBitmapTable} applies the same size and entry checks
 * (reserved bits `0xff000000000001fe`, aligned data offsets) without loading bitmap data.
 * Every failure is a {@link CorruptImageError} (`QCOW2_BITMAP_DIRECTORY` or
 * `QCOW2_BITMAP_TABLE`) or, for extra data, an {@link UnsupportedImageError}.
 */
import { qemuCString } from '../../binary/c-string.js';
import { CorruptImageError, UnsupportedImageError, hex } from '../../errors.js';
import type { RandomAccessFile } from '../../io/random-access-file.js';
import {
  BITMAP_DIR_ENTRY_SIZE,
  BME_FLAG_AUTO,
  BME_FLAG_IN_USE,
  BME_MAX_GRANULARITY_BITS,
  BME_MAX_NAME_SIZE,
  BME_MAX_PHYS_SIZE,
  BME_MAX_TABLE_SIZE,
  BME_MIN_GRANULARITY_BITS,
  BME_RESERVED_FLAGS,
  BME_TABLE_ENTRY_FLAG_ALL_ONES,
  BME_TABLE_ENTRY_OFFSET_MASK,
  BME_TABLE_ENTRY_RESERVED_MASK,
  BT_DIRTY_TRACKING_BITMAP,
  QCOW2_MAX_BITMAP_DIRECTORY_SIZE,
} from './constants.js';
import type { BitmapsExtension } from './extensions.js';

/** One entry of the bitmap directory. */
export interface BitmapDirectoryEntry {
  readonly index: number;
  readonly bitmapTableOffset: number;
  readonly bitmapTableSize: number;
  readonly flags: number;
  readonly inUse: boolean;
  readonly auto: boolean;
  readonly type: number;
  readonly granularityBits: number;
  /** `1 << granularity_bits` bytes. */
  readonly granularity: number;
  /** The name's bytes as stored. */
  readonly nameBytes: Uint8Array;
  /** The name as QEMU decodes it: up to the first NUL, invalid UTF-8 as U+FFFD. */
  readonly name: string;
}

/** What the checks need to know about the image. */
export interface BitmapContext {
  readonly file: string;
  readonly clusterSize: number;
  /** The virtual size QEMU's `bdrv_getlength` reports (whole sectors). */
  readonly virtualSize: number;
}

function dirError(ctx: BitmapContext, message: string, field: string, value: number | bigint | string, limit: number | string, offset?: number): CorruptImageError {
  return new CorruptImageError('QCOW2_BITMAP_DIRECTORY', message, {
    file: ctx.file, field, value, limit, ...(offset === undefined ? {} : { offset }),
  });
}

/** The fixed fields of a directory entry as stored. */
interface RawDirEntry {
  readonly bitmapTableOffset: bigint;
  readonly bitmapTableSize: number;
  readonly flags: number;
  readonly type: number;
  readonly granularityBits: number;
  readonly nameSize: number;
}

/** A broken rule: the field, its value and the limit. */
interface Violation {
  readonly field: string;
  readonly value: number | bigint;
  readonly limit: number | string;
}

/** Why an entry fails QEMU's `check_dir_entry` (or the spec's non-empty name rule), or null. */
function constraintViolation(e: RawDirEntry, ctx: BitmapContext): Violation | null {
  if (e.bitmapTableSize === 0) return { field: 'bitmap_table_size', value: 0, limit: `1..${BME_MAX_TABLE_SIZE}` };
  if (e.bitmapTableOffset === 0n) return { field: 'bitmap_table_offset', value: 0n, limit: 'non-zero' };
  if (e.bitmapTableOffset % BigInt(ctx.clusterSize) !== 0n) {
    return { field: 'bitmap_table_offset', value: e.bitmapTableOffset, limit: `aligned to ${ctx.clusterSize}` };
  }
  if (e.bitmapTableSize > BME_MAX_TABLE_SIZE) return { field: 'bitmap_table_size', value: e.bitmapTableSize, limit: BME_MAX_TABLE_SIZE };
  if (e.granularityBits > BME_MAX_GRANULARITY_BITS || e.granularityBits < BME_MIN_GRANULARITY_BITS) {
    return { field: 'granularity_bits', value: e.granularityBits, limit: `${BME_MIN_GRANULARITY_BITS}..${BME_MAX_GRANULARITY_BITS}` };
  }
  if ((e.flags & BME_RESERVED_FLAGS) >>> 0 !== 0) return { field: 'flags', value: e.flags, limit: 'only bits 0 (in_use) and 1 (auto)' };
  if (e.nameSize > BME_MAX_NAME_SIZE || e.nameSize === 0) return { field: 'name_size', value: e.nameSize, limit: `1..${BME_MAX_NAME_SIZE}` };
  if (e.type !== BT_DIRTY_TRACKING_BITMAP) return { field: 'type', value: e.type, limit: BT_DIRTY_TRACKING_BITMAP };
  const phys = BigInt(e.bitmapTableSize) * BigInt(ctx.clusterSize);
  if (phys > BigInt(BME_MAX_PHYS_SIZE)) return { field: 'bitmap_table_size', value: e.bitmapTableSize, limit: `${BME_MAX_PHYS_SIZE} bytes of clusters` };
  if ((e.flags & BME_FLAG_IN_USE) === 0 && BigInt(ctx.virtualSize) > (phys * 8n) << BigInt(e.granularityBits)) {
    return { field: 'bitmap_table_size', value: e.bitmapTableSize, limit: `enough clusters for ${ctx.virtualSize} bytes at granularity 2^${e.granularityBits}` };
  }
  return null;
}

/**
 * Decodes and checks a whole bitmap directory held in `dir`, which must hold `nbBitmaps`
 * entries and nothing else (QEMU `bitmap_list_load`). `dirOffset` is only used in messages.
 */
export function decodeBitmapDirectory(dir: Uint8Array, nbBitmaps: number, ctx: BitmapContext, dirOffset = 0): BitmapDirectoryEntry[] {
  if (dir.length === 0) throw dirError(ctx, 'requested bitmap directory size is zero', 'bitmap_directory_size', 0, 'at least 24');
  if (dir.length > QCOW2_MAX_BITMAP_DIRECTORY_SIZE) {
    throw dirError(ctx, `requested bitmap directory size is too big: ${dir.length} bytes, at most ${QCOW2_MAX_BITMAP_DIRECTORY_SIZE}`,
      'bitmap_directory_size', dir.length, QCOW2_MAX_BITMAP_DIRECTORY_SIZE);
  }
  const dv = new DataView(dir.buffer, dir.byteOffset, dir.byteLength);
  const broken = (p: number, why: string): CorruptImageError =>
    dirError(ctx, `broken bitmap directory: ${why}`, 'bitmap directory', p, dir.length, dirOffset + p);
  const entries: BitmapDirectoryEntry[] = [];
  let p = 0;
  while (p < dir.length) {
    if (p + BITMAP_DIR_ENTRY_SIZE > dir.length) throw broken(p, `entry at byte ${p} is cut off by the end of the directory (${dir.length} bytes)`);
    if (entries.length + 1 > nbBitmaps) {
      throw dirError(ctx, `more bitmaps found than specified in header extension (nb_bitmaps is ${nbBitmaps})`, 'nb_bitmaps', nbBitmaps, 'entries in the directory', dirOffset + p);
    }
    const bitmapTableOffsetBig = dv.getBigUint64(p);
    const bitmapTableSize = dv.getUint32(p + 8);
    const flags = dv.getUint32(p + 12);
    const type = dv.getUint8(p + 16);
    const granularityBits = dv.getUint8(p + 17);
    const nameSize = dv.getUint16(p + 18);
    const extraDataSize = dv.getUint32(p + 20);
    const entrySize = Math.ceil((BITMAP_DIR_ENTRY_SIZE + nameSize + extraDataSize) / 8) * 8;
    if (p + entrySize > dir.length) throw broken(p, `entry ${entries.length} (${entrySize} bytes at byte ${p}) runs past the end of the directory (${dir.length} bytes)`);
    if (extraDataSize !== 0) {
      throw new UnsupportedImageError('QCOW2_BITMAP_DIRECTORY', `bitmap extra data is not supported: entry ${entries.length} has extra_data_size ${extraDataSize}`, {
        file: ctx.file, field: 'extra_data_size', value: extraDataSize, limit: 0, offset: dirOffset + p,
      });
    }
    const nameBytes = dir.slice(p + BITMAP_DIR_ENTRY_SIZE, p + BITMAP_DIR_ENTRY_SIZE + nameSize);
    const name = qemuCString(nameBytes);
    const bad = constraintViolation({ bitmapTableOffset: bitmapTableOffsetBig, bitmapTableSize, flags, type, granularityBits, nameSize }, ctx);
    if (bad !== null) {
      throw dirError(ctx, `bitmap '${name}' doesn't satisfy the constraints: ${bad.field} is ${typeof bad.value === 'bigint' ? hex(bad.value) : bad.value}, must be ${bad.limit}`,
        bad.field, bad.value, bad.limit, dirOffset + p);
    }
    if (bitmapTableOffsetBig > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new UnsupportedImageError('QCOW2_BITMAP_DIRECTORY', `bitmap '${name}': bitmap_table_offset ${hex(bitmapTableOffsetBig)} is larger than vdisk supports`, {
        file: ctx.file, field: 'bitmap_table_offset', value: bitmapTableOffsetBig, limit: Number.MAX_SAFE_INTEGER,
      });
    }
    entries.push({
      index: entries.length,
      bitmapTableOffset: Number(bitmapTableOffsetBig),
      bitmapTableSize,
      flags,
      inUse: (flags & BME_FLAG_IN_USE) !== 0,
      auto: (flags & BME_FLAG_AUTO) !== 0,
      type,
      granularityBits,
      granularity: 2 ** granularityBits,
      nameBytes,
      name,
    });
    p += entrySize;
  }
  if (entries.length !== nbBitmaps) {
    throw dirError(ctx, `less bitmaps found than specified in header extension: ${entries.length} entries, nb_bitmaps is ${nbBitmaps}`, 'nb_bitmaps', nbBitmaps, entries.length);
  }
  return entries;
}

/**
 * Reads the bitmap directory the extension points at and decodes it. The directory size
 * was bounded (≤ 1024 × 65535 bytes) when the extension was decoded; here it must also lie
 * inside the file.
 */
export async function readBitmapDirectory(file: RandomAccessFile, ext: BitmapsExtension, ctx: BitmapContext): Promise<BitmapDirectoryEntry[]> {
  const { bitmapDirectoryOffset: offset, bitmapDirectorySize: size } = ext;
  if (size > QCOW2_MAX_BITMAP_DIRECTORY_SIZE) {
    throw dirError(ctx, `requested bitmap directory size is too big: ${size} bytes, at most ${QCOW2_MAX_BITMAP_DIRECTORY_SIZE}`,
      'bitmap_directory_size', size, QCOW2_MAX_BITMAP_DIRECTORY_SIZE);
  }
  if (offset + size > file.size) {
    throw dirError(ctx, `bitmap directory (${size} bytes at offset ${offset}) runs past the end of the file (${file.size} bytes)`,
      'bitmap_directory_offset', offset, file.size, offset);
  }
  const dir = new Uint8Array(size);
  if (size > 0) await file.read(dir, offset, size);
  return decodeBitmapDirectory(dir, ext.nbBitmaps, ctx, offset);
}

/**
 * The number of bitmap table entries QEMU expects for a bitmap covering `virtualSize`
 * bytes (`load_bitmap_data`: the serialised bitmap is whole 64-bit words, one bit per
 * `granularity` bytes, stored in whole clusters).
 */
export function expectedBitmapTableSize(virtualSize: number, granularityBits: number, clusterSize: number): number {
  if (virtualSize === 0) return 0;
  const lastBit = BigInt(virtualSize - 1) >> BigInt(granularityBits);
  const bytes = (lastBit / 64n + 1n) * 8n;
  return Number((bytes + BigInt(clusterSize) - 1n) / BigInt(clusterSize));
}

/**
 * QEMU's open-time load of a bitmap that is not in use (`load_bitmap`): the table must
 * lie in the file, each entry must pass `check_table_entry`, and the table must have
 * exactly as many entries as the bitmap needs. In-use bitmaps are skipped, as QEMU does.
 * The table is read in chunks of at most 64 KiB.
 */
export async function checkBitmapTable(file: RandomAccessFile, entry: BitmapDirectoryEntry, ctx: BitmapContext): Promise<void> {
  if (entry.inUse) return;
  const fail = (message: string, field: string, value: number | bigint, limit: number | string, offset?: number): CorruptImageError =>
    new CorruptImageError('QCOW2_BITMAP_TABLE', `bitmap '${entry.name}': ${message}`, {
      file: ctx.file, field, value, limit, ...(offset === undefined ? {} : { offset }),
    });
  const bytes = entry.bitmapTableSize * 8;
  if (entry.bitmapTableOffset + bytes > file.size) {
    throw fail(`bitmap table (${bytes} bytes at offset ${entry.bitmapTableOffset}) runs past the end of the file (${file.size} bytes)`,
      'bitmap_table_offset', entry.bitmapTableOffset, file.size, entry.bitmapTableOffset);
  }
  const chunk = new Uint8Array(Math.min(bytes, 65536));
  const cs = BigInt(ctx.clusterSize);
  for (let done = 0; done < bytes; done += chunk.length) {
    const n = Math.min(chunk.length, bytes - done);
    await file.read(chunk, entry.bitmapTableOffset + done, n);
    const dv = new DataView(chunk.buffer, chunk.byteOffset, n);
    for (let q = 0; q < n; q += 8) {
      const e = dv.getBigUint64(q);
      const dataOffset = e & BME_TABLE_ENTRY_OFFSET_MASK;
      const bad = (e & BME_TABLE_ENTRY_RESERVED_MASK) !== 0n ||
        (dataOffset !== 0n && ((e & BME_TABLE_ENTRY_FLAG_ALL_ONES) !== 0n || dataOffset % cs !== 0n));
      if (bad) {
        const index = (done + q) / 8;
        throw fail(`bitmap table entry ${index} is invalid: ${hex(e)} (reserved bits 0xff000000000001fe, bit 0 only without an offset, offsets aligned to ${ctx.clusterSize})`,
          'bitmap table entry', e, 'no reserved bits, aligned offset', entry.bitmapTableOffset + done + q);
      }
    }
  }
  const expected = expectedBitmapTableSize(ctx.virtualSize, entry.granularityBits, ctx.clusterSize);
  if (expected !== entry.bitmapTableSize || expected > BME_MAX_TABLE_SIZE) {
    throw fail(`could not read bitmap: bitmap_table_size is ${entry.bitmapTableSize}, the image size needs exactly ${expected}`,
      'bitmap_table_size', entry.bitmapTableSize, expected);
  }
}

/**
 * What QEMU 7.2 does with the bitmaps when it opens an image (`qcow2_load_dirty_bitmaps`):
 * reads and checks the directory, then, bitmap by bitmap, refuses a name already used
 * ("Bitmap already exists") and checks the bitmap table of bitmaps not in use.
 */
export async function loadBitmaps(file: RandomAccessFile, ext: BitmapsExtension, ctx: BitmapContext): Promise<BitmapDirectoryEntry[]> {
  const entries = await readBitmapDirectory(file, ext, ctx);
  const firstRepeat = firstRepeatedName(entries.map((e) => Buffer.from(e.nameBytes).toString('latin1').split('\0', 1)[0] ?? ''));
  for (const [i, e] of entries.entries()) {
    if (i === firstRepeat) {
      throw dirError(ctx, `bitmap already exists: '${e.name}' is named twice in the bitmap directory`, 'name', e.name, 'unique names');
    }
    await checkBitmapTable(file, e, ctx);
  }
  return entries;
}

/**
 * The index of the first name that an earlier one repeats, or -1. Found by sorting, not
 * with a hash set: the names come from the image (up to 65,535 of them), and a set keyed
 * by them would let names crafted to collide under V8's string hash (whose seed a start-up
 * snapshot keeps) make the check quadratic.
 */
function firstRepeatedName(names: readonly string[]): number {
  const order = names.map((_, i) => i).sort((a, b) => {
    const x = names[a] as string;
    const y = names[b] as string;
    return x < y ? -1 : x > y ? 1 : a - b;
  });
  let first = -1;
  for (let k = 1; k < order.length; k++) {
    const i = order[k] as number;
    if (names[i] === names[order[k - 1] as number] && (first < 0 || i < first)) first = i;
  }
  return first;
}
