/**
 * qcow2 header extensions (spec "Header extensions"; QEMU `qcow2_read_extensions`).
 *
 * The area starts at `header_length` and ends at `backing_file_offset` when that is non-zero,
 * else at the end of the first cluster. Each extension is `{u32 magic, u32 len, data, pad}`.
 * Known ones: backing format, feature-name table, external data file, bitmaps, crypto header.
 */
import { decodeCString, qemuCString } from '../../binary/c-string.js';
import { CorruptImageError, hex } from '../../errors.js';
import {
  AUTOCLEAR_BITMAPS,
  CRYPT_LUKS,
  EXT_BACKING_FORMAT,
  EXT_BITMAPS,
  EXT_CRYPTO_HEADER,
  EXT_DATA_FILE,
  EXT_END,
  EXT_FEATURE_TABLE,
  MAX_BACKING_FORMAT,
  QCOW2_MAX_BITMAPS,
  QCOW2_MAX_BITMAP_DIRECTORY_SIZE,
} from './constants.js';
import type { Qcow2Header } from './header.js';

/** One entry of the feature-name table. */
export interface FeatureName {
  /** 0 incompatible, 1 compatible, 2 autoclear. */
  readonly type: number;
  readonly bit: number;
  readonly name: string;
}

/** The bitmaps extension. */
export interface BitmapsExtension {
  readonly nbBitmaps: number;
  readonly bitmapDirectorySize: number;
  readonly bitmapDirectoryOffset: number;
}

/** The full-disk-encryption header pointer. */
export interface CryptoHeaderExtension {
  readonly offset: number;
  readonly length: number;
}

/** Everything found in the extension area. */
export interface HeaderExtensions {
  /** The backing format as QEMU reads it (a C string). */
  readonly backingFormat: string | null;
  /** False when the stored bytes are not exactly that string (bytes after a NUL, invalid UTF-8). */
  readonly backingFormatExact: boolean;
  readonly featureNames: readonly FeatureName[];
  /** The external data file name as QEMU reads it (a C string). */
  readonly dataFile: string | null;
  /** False when the stored bytes are not exactly that name (bytes after a NUL, invalid UTF-8). */
  readonly dataFileExact: boolean;
  /** Present only when the autoclear bitmaps bit is set (else QEMU ignores it). */
  readonly bitmaps: BitmapsExtension | null;
  readonly crypto: CryptoHeaderExtension | null;
  /** Magics of extensions vdisk does not know, in order. */
  readonly unknown: readonly number[];
}

/** Extensions an image has at most once (names for messages). */
const SINGLE_EXTENSIONS = new Map<number, string>([
  [EXT_BACKING_FORMAT, 'backing format'],
  [EXT_FEATURE_TABLE, 'feature name table'],
  [EXT_DATA_FILE, 'external data file'],
  [EXT_CRYPTO_HEADER, 'full disk encryption header'],
  [EXT_BITMAPS, 'bitmaps'],
]);

/** Decodes the extension area from the first cluster's bytes (`head`). */
export function decodeExtensions(head: Uint8Array, header: Qcow2Header, file: string): HeaderExtensions {
  const clusterSize = 2 ** header.clusterBits;
  const end = Math.min(header.backingFileOffset !== 0 ? header.backingFileOffset : clusterSize, head.length);
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  let backingFormat: string | null = null;
  let backingFormatExact = true;
  let dataFile: string | null = null;
  let dataFileExact = true;
  let bitmaps: BitmapsExtension | null = null;
  let crypto: CryptoHeaderExtension | null = null;
  const featureNames: FeatureName[] = [];
  const unknown: number[] = [];

  const seen = new Set<number>();
  let offset = header.version === 3 ? header.headerLength : 72;
  while (offset < end) {
    if (offset + 8 > end) {
      throw tooLarge(file, offset, 0, 0, end);
    }
    const magic = dv.getUint32(offset);
    const len = dv.getUint32(offset + 4);
    const data = offset + 8;
    if (len > end - data) throw tooLarge(file, offset, magic, len, end);
    const bytes = head.subarray(data, data + len);
    if (SINGLE_EXTENSIONS.has(magic)) {
      // QEMU lets the last one win; two of them means the image was not written by QEMU.
      if (seen.has(magic)) {
        throw new CorruptImageError(
          'QCOW2_EXT_DUPLICATE',
          `header extension ${SINGLE_EXTENSIONS.get(magic) ?? hex(magic)} (${hex(magic)}) appears twice (again at byte ${offset})`,
          { file, field: 'header extension', value: magic, limit: 'at most one', offset },
        );
      }
      seen.add(magic);
    }
    switch (magic) {
      case EXT_END:
        return { backingFormat, backingFormatExact, featureNames, dataFile, dataFileExact, bitmaps, crypto, unknown };
      case EXT_BACKING_FORMAT:
        if (len > MAX_BACKING_FORMAT) {
          throw new CorruptImageError(
            'QCOW2_EXT_BACKING_FORMAT',
            `backing format extension too large: len is ${len}, must be below ${MAX_BACKING_FORMAT + 1}`,
            { file, field: 'backing format extension', value: len, limit: MAX_BACKING_FORMAT, offset },
          );
        }
        backingFormat = cString(bytes);
        backingFormatExact = isExactCString(bytes);
        break;
      case EXT_FEATURE_TABLE:
        for (let p = 0; p + 48 <= len; p += 48) {
          featureNames.push({ type: bytes[p] ?? 0, bit: bytes[p + 1] ?? 0, name: cString(bytes.subarray(p + 2, p + 48)) });
        }
        break;
      case EXT_DATA_FILE:
        dataFile = cString(bytes);
        dataFileExact = isExactCString(bytes);
        break;
      case EXT_CRYPTO_HEADER:
        if (header.cryptMethod !== CRYPT_LUKS) {
          throw new CorruptImageError(
            'QCOW2_EXT_CRYPTO',
            `CRYPTO header extension only expected with LUKS encryption (crypt_method is ${header.cryptMethod})`,
            { file, field: 'crypto header extension', value: header.cryptMethod, limit: CRYPT_LUKS, offset },
          );
        }
        if (len !== 16) {
          throw new CorruptImageError('QCOW2_EXT_CRYPTO', `CRYPTO header extension length is ${len}, must be 16`, {
            file, field: 'crypto header extension', value: len, limit: 16, offset,
          });
        }
        {
          const cOff = dv.getBigUint64(data);
          const cLen = dv.getBigUint64(data + 8);
          if (cOff % BigInt(clusterSize) !== 0n || cOff > BigInt(Number.MAX_SAFE_INTEGER) || cLen > 0xffffffffn) {
            throw new CorruptImageError('QCOW2_EXT_CRYPTO', `CRYPTO header offset ${hex(cOff)} or length ${cLen} invalid`, {
              file, field: 'crypto header offset', value: cOff, limit: `aligned to ${clusterSize}`, offset,
            });
          }
          crypto = { offset: Number(cOff), length: Number(cLen) };
        }
        break;
      case EXT_BITMAPS:
        // QEMU checks the length first, then ignores the extension if autoclear bit 0 is clear.
        if (len !== 24) {
          throw new CorruptImageError('QCOW2_EXT_BITMAPS', `bitmaps extension: invalid extension length ${len}, must be 24`, {
            file, field: 'bitmaps extension length', value: len, limit: 24, offset,
          });
        }
        if ((header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n) bitmaps = decodeBitmapsExt(dv, data, len, clusterSize, file);
        break;
      default:
        unknown.push(magic);
    }
    offset = data + Math.ceil(len / 8) * 8;
  }
  return { backingFormat, backingFormatExact, featureNames, dataFile, dataFileExact, bitmaps, crypto, unknown };
}

function decodeBitmapsExt(dv: DataView, at: number, len: number, clusterSize: number, file: string): BitmapsExtension {
  const bad = (msg: string, fieldName: string, value: number | bigint, limit: number | string): CorruptImageError =>
    new CorruptImageError('QCOW2_EXT_BITMAPS', `bitmaps extension: ${msg}`, { file, field: fieldName, value, limit });
  if (len !== 24) throw bad(`invalid extension length ${len}, must be 24`, 'bitmaps extension length', len, 24);
  const nb = dv.getUint32(at);
  const reserved = dv.getUint32(at + 4);
  const dirSize = dv.getBigUint64(at + 8);
  const dirOffset = dv.getBigUint64(at + 16);
  if (reserved !== 0) throw bad(`reserved field is ${hex(reserved)}, must be 0`, 'bitmaps reserved32', reserved, 0);
  if (nb > QCOW2_MAX_BITMAPS) throw bad(`image has ${nb} bitmaps, at most ${QCOW2_MAX_BITMAPS}`, 'nb_bitmaps', nb, QCOW2_MAX_BITMAPS);
  if (nb === 0) throw bad('found bitmaps extension with zero bitmaps', 'nb_bitmaps', 0, 'at least 1');
  if (dirOffset % BigInt(clusterSize) !== 0n || dirOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw bad(`bitmap directory offset ${hex(dirOffset)} is not cluster-aligned`, 'bitmap_directory_offset', dirOffset, `aligned to ${clusterSize}`);
  }
  if (dirSize > BigInt(QCOW2_MAX_BITMAP_DIRECTORY_SIZE)) {
    throw bad(`bitmap directory size (${dirSize}) exceeds the maximum ${QCOW2_MAX_BITMAP_DIRECTORY_SIZE}`, 'bitmap_directory_size', dirSize, QCOW2_MAX_BITMAP_DIRECTORY_SIZE);
  }
  return { nbBitmaps: nb, bitmapDirectorySize: Number(dirSize), bitmapDirectoryOffset: Number(dirOffset) };
}

function tooLarge(file: string, offset: number, magic: number, len: number, end: number): CorruptImageError {
  return new CorruptImageError(
    'QCOW2_EXT_TOO_LARGE',
    `header extension too large: extension ${hex(magic)} at byte ${offset} with len ${len} runs past the end of the extension area (${end})`,
    { file, field: 'header extension', value: len, limit: end, offset },
  );
}

/** A string up to the first NUL, as QEMU reads it (binary/c-string.ts). */
function cString(bytes: Uint8Array): string {
  return qemuCString(bytes);
}

/** True when `bytes` are valid UTF-8 with nothing but NULs after the first NUL. */
function isExactCString(bytes: Uint8Array): boolean {
  const d = decodeCString(bytes);
  return !d.replaced && (d.nulAt < 0 || bytes.subarray(d.nulAt).every((b) => b === 0));
}

/**
 * The feature-name table, read best-effort from the extension area `[start, end)` of `head`
 * (QEMU reads it this way, ignoring errors, only to name unknown incompatible bits).
 */
export function scanFeatureNames(head: Uint8Array, start: number, end: number): FeatureName[] {
  const names: FeatureName[] = [];
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const stop = Math.min(end, head.length);
  let offset = start;
  while (offset + 8 <= stop) {
    const magic = dv.getUint32(offset);
    const len = dv.getUint32(offset + 4);
    const data = offset + 8;
    if (magic === EXT_END || len > stop - data) break;
    if (magic === EXT_FEATURE_TABLE) {
      for (let p = data; p + 48 <= data + len; p += 48) {
        names.push({ type: head[p] ?? 0, bit: head[p + 1] ?? 0, name: cString(head.subarray(p + 2, p + 48)) });
      }
    }
    offset = data + Math.ceil(len / 8) * 8;
  }
  return names;
}

/** Names of incompatible bits that are not known, using the image's feature table if it has names. */
export function unknownIncompatibleFeatures(mask: bigint, names: readonly FeatureName[]): string {
  const parts: string[] = [];
  let unnamed = 0n;
  for (let bit = 0n; bit < 64n; bit++) {
    if ((mask & (1n << bit)) === 0n) continue;
    const n = names.find((f) => f.type === 0 && BigInt(f.bit) === bit);
    if (n !== undefined) parts.push(n.name);
    else unnamed |= 1n << bit;
  }
  if (unnamed !== 0n) parts.push(`Unknown incompatible feature: ${unnamed.toString(16)}`);
  return parts.join(', ');
}

