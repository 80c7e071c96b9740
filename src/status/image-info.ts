/**
 * `qemu-img info` facts of one layer (QEMU 7.2 `bdrv_query_image_info`,
 * `qcow2_get_specific_info`, `qcow2_snapshot_list`, `qcow2_get_bitmap_info_list`), as a
 * plain object whose keys are qemu-img's JSON keys.
 *
 * Objects are built in the order QEMU's QAPI visitor visits the fields (the schema order in
 * `qapi/block-core.json`), because that insertion order decides the printed order of keys
 * that share a QDict bucket (see `cli/format/qemu-json.ts`).
 *
 * Strings read from the image (snapshot ids and names, bitmap names, the LUKS uuid) are C
 * strings in QEMU: they end at the first NUL, are cut to QEMU's buffer sizes, and invalid
 * UTF-8 turns into U+FFFD exactly where QEMU's JSON writer would print `\uFFFD`.
 */
import { qemuCString } from '../binary/c-string.js';
import { CRYPT_AES, CRYPT_LUKS, COMPAT_LAZY_REFCOUNTS, COMPRESSION_ZSTD, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, INCOMPAT_EXTL2 } from '../formats/qcow2/constants.js';
import { loadBitmaps } from '../formats/qcow2/bitmaps.js';
import { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import { readSnapshotTable, type SnapshotTableEntry } from '../formats/qcow2/snapshots.js';
import { readLuksInfo, type LuksInfo } from '../formats/qcow2/luks-header.js';
import type { ChainNode } from './chain-node.js';
import { hasProtocol, pathCombine } from './open-policy.js';

/** `SnapshotInfo`: one internal snapshot as qemu-img lists it. */
export interface SnapshotInfo {
  id: string;
  name: string;
  /** Signed 64-bit; a bigint only when beyond ±2^53. */
  'vm-state-size': number | bigint;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  /** Absent when the snapshot records no instruction count. Signed 64-bit. */
  icount?: number | bigint;
}

/** `Qcow2BitmapInfo`. */
export interface Qcow2BitmapInfo {
  name: string;
  granularity: number;
  flags: Array<'in-use' | 'auto'>;
}

/** `ImageInfoSpecificQCow2Encryption`. */
export type Qcow2EncryptInfo = { format: 'aes' } | ({ format: 'luks' } & LuksInfo);

/** `ImageInfoSpecificQCow2`. */
export interface Qcow2SpecificInfo {
  compat: '0.10' | '1.1';
  'data-file'?: string;
  'data-file-raw'?: boolean;
  'extended-l2'?: boolean;
  'lazy-refcounts'?: boolean;
  corrupt?: boolean;
  'refcount-bits': number;
  encrypt?: Qcow2EncryptInfo;
  bitmaps?: Qcow2BitmapInfo[];
  'compression-type': 'zlib' | 'zstd';
}

/** `ImageInfo` as qemu-img 7.2 prints it. */
export interface ImageInfo {
  filename: string;
  format: string;
  'dirty-flag': boolean;
  'actual-size': number;
  'virtual-size': number;
  'cluster-size'?: number;
  encrypted?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  /** Present only when the image has at least one internal snapshot. */
  snapshots?: SnapshotInfo[];
  'format-specific'?: { type: 'qcow2'; data: Qcow2SpecificInfo };
}

/** Sizes of QEMU's `QEMUSnapshotInfo.id_str` and `.name` buffers (`pstrcpy` keeps one byte for the NUL). */
const SNAPSHOT_ID_BUF = 128;
const SNAPSHOT_NAME_BUF = 256;
const ICOUNT_NONE = 0xffffffffffffffffn;

/** A signed 64-bit value as a number when exact, else as a bigint. */
function int64(v: bigint): number | bigint {
  const s = BigInt.asIntN(64, v);
  return s >= BigInt(Number.MIN_SAFE_INTEGER) && s <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(s) : s;
}

/** `qcow2_snapshot_list` + `bdrv_query_snapshot_info_list` for one table entry. */
export function snapshotInfo(e: SnapshotTableEntry): SnapshotInfo {
  const info: SnapshotInfo = {
    id: qemuCString(e.idBytes, SNAPSHOT_ID_BUF - 1),
    name: qemuCString(e.nameBytes, SNAPSHOT_NAME_BUF - 1),
    'vm-state-size': int64(e.vmStateSize),
    'date-sec': e.dateSec,
    'date-nsec': e.dateNsec,
    'vm-clock-sec': Number(e.vmClockNsec / 1_000_000_000n),
    'vm-clock-nsec': Number(e.vmClockNsec % 1_000_000_000n),
  };
  if (e.icount !== null && e.icount !== ICOUNT_NONE) info.icount = int64(e.icount);
  return info;
}

/**
 * QEMU's `bdrv_get_full_backing_filename` for a file-backed image: protocol and absolute
 * names as they are, relative ones against the directory part of the image's name.
 */
export function fullBackingFilename(imageFilename: string, backingName: string): string {
  return hasProtocol(backingName) ? backingName : pathCombine(imageFilename, backingName);
}

/** The qcow2 part of the info: `format-specific`, snapshots and the encrypted flag. */
async function qcow2Info(d: Qcow2Driver, info: ImageInfo, filename: string): Promise<void> {
  const h = d.header;
  const file = d.file;
  let encrypt: Qcow2EncryptInfo | undefined;
  if (h.cryptMethod === CRYPT_AES) encrypt = { format: 'aes' };
  if (h.cryptMethod === CRYPT_LUKS && d.extensions.crypto !== null) {
    encrypt = { format: 'luks', ...(d.luks ?? (await readLuksInfo(file, d.extensions.crypto))) };
  }
  const snapshots = (await readSnapshotTable(file, h)).map(snapshotInfo);
  let bitmaps: Qcow2BitmapInfo[] | undefined;
  if (h.version === 3 && d.extensions.bitmaps !== null) {
    const ctx = { file: file.path, clusterSize: d.clusterSize, virtualSize: d.length };
    bitmaps = (await loadBitmaps(file, d.extensions.bitmaps, ctx)).map((b) => ({
      name: qemuCString(b.nameBytes),
      granularity: b.granularity,
      flags: [...(b.inUse ? (['in-use'] as const) : []), ...(b.auto ? (['auto'] as const) : [])],
    }));
  }

  if (encrypt !== undefined) info.encrypted = true;
  if (d.backing !== null) {
    info['backing-filename'] = d.backing.name;
    info['full-backing-filename'] = fullBackingFilename(filename, d.backing.name);
    if (d.backing.format !== null && d.backing.format !== '') info['backing-filename-format'] = d.backing.format;
  }
  if (snapshots.length > 0) info.snapshots = snapshots;

  const v3 = h.version === 3;
  const dataFile = d.extensions.dataFile;
  const data: Qcow2SpecificInfo = {
    compat: v3 ? '1.1' : '0.10',
    ...(v3 && dataFile !== null ? { 'data-file': dataFile } : {}),
    ...(v3 && d.hasDataFile ? { 'data-file-raw': d.dataFileRaw } : {}),
    ...(v3 ? { 'extended-l2': (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n } : {}),
    ...(v3 ? { 'lazy-refcounts': (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n } : {}),
    ...(v3 ? { corrupt: (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n } : {}),
    'refcount-bits': 2 ** h.refcountOrder,
    ...(encrypt !== undefined ? { encrypt } : {}),
    ...(bitmaps !== undefined ? { bitmaps } : {}),
    // v2 images never record a compression type; QEMU leaves the field at 0 (zlib).
    'compression-type': v3 && h.compressionType === COMPRESSION_ZSTD ? 'zstd' : 'zlib',
  };
  info['format-specific'] = { type: 'qcow2', data };
}

/**
 * Info of `node`'s layer; its backing file is described by name, not opened.
 *
 * Errors: whatever reading the snapshot table, the bitmap directory or the LUKS header
 * finds broken (`QCOW2_SNAPSHOT_TABLE`, `QCOW2_BITMAP_DIRECTORY`, `QCOW2_BITMAP_TABLE`,
 * `QCOW2_LUKS_HEADER`), as qemu-img refuses to open such images.
 */
export async function imageInfo(node: ChainNode): Promise<ImageInfo> {
  const d = node.driver;
  const info: ImageInfo = {
    filename: node.filename,
    format: d.format,
    'dirty-flag': d instanceof Qcow2Driver && (d.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
    'actual-size': d.file.identity().allocatedBytes,
    'virtual-size': d.length,
  };
  if (d instanceof Qcow2Driver) {
    info['cluster-size'] = d.clusterSize;
    await qcow2Info(d, info, node.filename);
  }
  return info;
}
