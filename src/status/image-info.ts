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
import { CorruptImageError, UnsupportedImageError } from '../errors.js';
import { CRYPT_AES, CRYPT_LUKS, COMPAT_LAZY_REFCOUNTS, COMPRESSION_ZSTD, INCOMPAT_CORRUPT, INCOMPAT_DIRTY, INCOMPAT_EXTL2 } from '../formats/qcow2/constants.js';
import { loadBitmaps } from '../formats/qcow2/bitmaps.js';
import { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import { readSnapshotTable, type SnapshotTableEntry } from '../formats/qcow2/snapshots.js';
import type { CryptoHeaderExtension } from '../formats/qcow2/extensions.js';
import type { RandomAccessFile } from '../io/random-access-file.js';
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
const MIN_CP = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

/**
 * A C string as QEMU sees it: the bytes up to the first NUL (and at most `maxBytes`),
 * decoded the way `mod_utf8_codepoint` does: each invalid sequence (bad lead byte, missing
 * continuation, overlong form, surrogate, beyond U+10FFFF) becomes one U+FFFD; `C0 80` is
 * U+0000. Noncharacters are kept (the JSON printer turns them into `\uFFFD`).
 */
export function qemuCString(bytes: Uint8Array, maxBytes = Infinity): string {
  let end = bytes.indexOf(0);
  if (end < 0) end = bytes.length;
  end = Math.min(end, maxBytes);
  let out = '';
  let i = 0;
  while (i < end) {
    const b = bytes[i] ?? 0;
    if (b < 0x80) {
      out += String.fromCharCode(b);
      i++;
      continue;
    }
    if (b >= 0xfe || (b & 0x40) === 0) {
      out += '\ufffd';
      i++;
      continue;
    }
    let len = 0;
    let mask = 0x80;
    for (; b & mask; mask >>= 1) len++;
    let cp = b & (mask - 1);
    let used = 1;
    for (; used < len; used++) {
      const c = i + used < end ? (bytes[i + used] ?? 0) : 0;
      if ((c & 0xc0) !== 0x80) {
        cp = -1;
        break;
      }
      cp = cp * 64 + (c & 0x3f);
    }
    i += used;
    const overlong = cp >= 0 && cp < (MIN_CP[len - 2] ?? 0) && !(cp === 0 && len === 2);
    if (cp < 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || overlong) out += '\ufffd';
    else out += String.fromCodePoint(cp);
  }
  return out;
}

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
    encrypt = { format: 'luks', ...(await readLuksInfo(file, d.extensions.crypto)) };
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

// ---------------------------------------------------------------------------------------
// LUKS1 header (qcow2 `encrypt.format=luks`): what QEMU 7.2's `qcrypto_block_luks_open`
// with QCRYPTO_BLOCK_OPEN_NO_IO reads and checks, and what `qcrypto_block_luks_get_info`
// reports. No key material is read and nothing is decrypted.
//
// On-disk layout (big-endian, 592 bytes): magic[6] "LUKS\xba\xbe", u16 version (1),
// cipher_name[32], cipher_mode[32], hash_spec[32], u32 payload_offset (sectors),
// u32 key_bytes, mk_digest[20], mk_digest_salt[32], u32 mk_digest_iterations, uuid[40],
// then 8 key slots of {u32 active, u32 iterations, salt[32], u32 key_material_offset
// (sectors), u32 stripes}.
// ---------------------------------------------------------------------------------------

/** `QCryptoBlockInfoLUKSSlot`. */
export interface LuksSlotInfo {
  active: boolean;
  iters?: number;
  stripes?: number;
  'key-offset': number;
}

/** `QCryptoBlockInfoLUKS` (without the `format` discriminator). */
export interface LuksInfo {
  'cipher-alg': string;
  'cipher-mode': string;
  'ivgen-alg': string;
  'ivgen-hash-alg'?: string;
  'hash-alg': string;
  'payload-offset': number;
  'master-key-iters': number;
  uuid: string;
  slots: LuksSlotInfo[];
}

/** Size of the LUKS1 header without key material. */
export const LUKS_HEADER_SIZE = 592;
const LUKS_MAGIC = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];
const LUKS_SECTOR = 512;
const LUKS_HEADER_SECTORS = 4096 / LUKS_SECTOR;
const LUKS_SLOT_ENABLED = 0x00ac71f3;
const LUKS_SLOT_DISABLED = 0x0000dead;
/** Cipher name → key bytes → QAPI `QCryptoCipherAlgorithm` name (block-luks.c name map). */
const LUKS_CIPHERS: Record<string, Record<number, string>> = {
  aes: { 16: 'aes-128', 24: 'aes-192', 32: 'aes-256' },
  cast5: { 16: 'cast5-128' },
  serpent: { 16: 'serpent-128', 24: 'serpent-192', 32: 'serpent-256' },
  twofish: { 16: 'twofish-128', 24: 'twofish-192', 32: 'twofish-256' },
};
const LUKS_MODES = ['ecb', 'cbc', 'xts', 'ctr'];
const LUKS_IVGENS = ['plain', 'plain64', 'essiv'];
/** `QCryptoHashAlgorithm` names and digest lengths. */
const LUKS_HASHES: Record<string, number> = { md5: 16, sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64, ripemd160: 20 };

function luksError(file: string, unsupported: boolean, message: string, field: string, value: number | string, limit: number | string): CorruptImageError | UnsupportedImageError {
  const Ctor = unsupported ? UnsupportedImageError : CorruptImageError;
  return new Ctor('QCOW2_LUKS_HEADER', `LUKS header: ${message}`, { file, field, value, limit });
}

/** A fixed-size C string field (ends at the first NUL or at the field's end). */
function luksString(h: Uint8Array, offset: number, length: number): string {
  return qemuCString(h.subarray(offset, offset + length));
}

/** `qcrypto_block_luks_essiv_cipher`: the check that an ESSIV hash suits the cipher. */
function checkEssiv(file: string, cipherAlg: string, hashAlg: string): void {
  const digest = LUKS_HASHES[hashAlg] ?? 0;
  const keyLen = Number(/-(\d+)$/.exec(cipherAlg)?.[1] ?? '0') / 8;
  if (digest === keyLen) return;
  if (cipherAlg.startsWith('cast5') || ![16, 24, 32].includes(digest)) {
    const family = cipherAlg.split('-')[0] ?? cipherAlg;
    const msg = cipherAlg.startsWith('cast5')
      ? `cipher ${cipherAlg} not supported with essiv`
      : `no ${family === 'aes' ? 'AES' : family === 'serpent' ? 'Serpent' : 'Twofish'} cipher with key size ${digest} available`;
    throw luksError(file, true, msg, 'cipher_mode', hashAlg, 'an ESSIV hash whose digest fits the cipher');
  }
}

/** Decodes and checks a LUKS1 header (at least {@link LUKS_HEADER_SIZE} bytes). */
export function decodeLuksHeader(h: Uint8Array, file: string): LuksInfo {
  if (h.length < LUKS_HEADER_SIZE) throw luksError(file, false, `only ${h.length} bytes, need ${LUKS_HEADER_SIZE}`, 'header', h.length, LUKS_HEADER_SIZE);
  const dv = new DataView(h.buffer, h.byteOffset, h.byteLength);
  if (!LUKS_MAGIC.every((b, i) => h[i] === b)) throw luksError(file, false, 'volume is not in LUKS format (bad magic)', 'magic', '', 'LUKS\\xba\\xbe');
  const version = dv.getUint16(6);
  if (version !== 1) throw luksError(file, true, `LUKS version ${version} is not supported`, 'version', version, 1);
  const keyBytes = dv.getUint32(108);
  const payloadSector = dv.getUint32(104);
  const slots = Array.from({ length: 8 }, (_, i) => {
    const o = 208 + 48 * i;
    const stripes = dv.getUint32(o + 44);
    // qcrypto_block_luks_splitkeylen_sectors, in QEMU's 32-bit unsigned arithmetic.
    const splitSectors = Math.ceil((Math.imul(keyBytes, stripes) >>> 0) / LUKS_SECTOR);
    return { active: dv.getUint32(o), iters: dv.getUint32(o + 4), start: dv.getUint32(o + 40), stripes,
      len: (Math.ceil(splitSectors / LUKS_HEADER_SECTORS) * LUKS_HEADER_SECTORS) >>> 0 };
  });
  slots.forEach((s, i) => {
    if (s.stripes === 0) throw luksError(file, false, `keyslot ${i} is corrupted (stripes == 0)`, `key slot ${i} stripes`, 0, 'non-zero');
    if (s.active !== LUKS_SLOT_ENABLED && s.active !== LUKS_SLOT_DISABLED) {
      throw luksError(file, false, `keyslot ${i} state (active/disable) is corrupted`, `key slot ${i} active`, s.active, '0x00ac71f3 or 0x0000dead');
    }
    const end = (s.start + s.len) >>> 0;
    if (end > payloadSector) throw luksError(file, false, `keyslot ${i} is overlapping with the encrypted payload`, `key slot ${i} key material offset`, s.start, payloadSector);
    slots.forEach((t, j) => {
      if (j > i && end > t.start && ((t.start + t.len) >>> 0) > s.start) {
        throw luksError(file, false, `keyslots ${i} and ${j} are overlapping in the header`, `key slot ${i} key material offset`, s.start, `outside key slot ${j}`);
      }
    });
  });

  // qcrypto_block_luks_parse_header: "<mode>-<ivgen>[:<ivhash>]".
  const cipherName = luksString(h, 8, 32);
  const cipherModeSpec = luksString(h, 40, 32);
  const hashSpec = luksString(h, 72, 32);
  const dash = cipherModeSpec.indexOf('-');
  if (dash < 0) throw luksError(file, true, `unexpected cipher mode string format ${cipherModeSpec}`, 'cipher_mode', cipherModeSpec, '<mode>-<ivgen>[:<hash>]');
  const mode = cipherModeSpec.slice(0, dash);
  const ivSpec = cipherModeSpec.slice(dash + 1);
  const colon = ivSpec.indexOf(':');
  const ivgen = colon < 0 ? ivSpec : ivSpec.slice(0, colon);
  const ivHash = colon < 0 ? null : ivSpec.slice(colon + 1);
  const unsupported = (what: string, name: string, field: string): UnsupportedImageError | CorruptImageError => luksError(file, true, `${what} ${name} not supported`, field, name, 'a QEMU 7.2 algorithm');
  if (ivHash !== null && !Object.hasOwn(LUKS_HASHES, ivHash)) throw unsupported('hash algorithm', ivHash, 'cipher_mode');
  if (!LUKS_MODES.includes(mode)) throw unsupported('cipher mode', mode, 'cipher_mode');
  const cipherKeyBytes = mode === 'xts' ? Math.floor(keyBytes / 2) : keyBytes;
  const cipherAlg = Object.hasOwn(LUKS_CIPHERS, cipherName) ? LUKS_CIPHERS[cipherName]?.[cipherKeyBytes] : undefined;
  if (cipherAlg === undefined) {
    throw luksError(file, true, `algorithm ${cipherName} with key size ${cipherKeyBytes} bytes not supported`, 'cipher_name', cipherName, 'aes, cast5, serpent or twofish with a matching key size');
  }
  if (!Object.hasOwn(LUKS_HASHES, hashSpec)) throw unsupported('hash algorithm', hashSpec, 'hash_spec');
  if (!LUKS_IVGENS.includes(ivgen)) throw unsupported('IV generator', ivgen, 'cipher_mode');
  if (ivgen === 'essiv') {
    if (ivHash === null) throw luksError(file, true, 'missing IV generator hash specification', 'cipher_mode', cipherModeSpec, '<mode>-essiv:<hash>');
    checkEssiv(file, cipherAlg, ivHash);
  }

  return {
    'cipher-alg': cipherAlg,
    'cipher-mode': mode,
    'ivgen-alg': ivgen,
    ...(ivgen === 'essiv' && ivHash !== null ? { 'ivgen-hash-alg': ivHash } : {}),
    'hash-alg': hashSpec,
    'payload-offset': payloadSector * LUKS_SECTOR,
    'master-key-iters': dv.getUint32(164),
    uuid: qemuCString(h.subarray(168, 208)),
    slots: slots.map((s) => ({
      active: s.active === LUKS_SLOT_ENABLED,
      ...(s.active === LUKS_SLOT_ENABLED ? { iters: s.iters, stripes: s.stripes } : {}),
      'key-offset': s.start * LUKS_SECTOR,
    })),
  };
}

/**
 * Reads the LUKS header the qcow2 crypto header extension points at. As in QEMU's
 * `qcow2_crypto_hdr_read_func`, the header must fit in the extension's declared length;
 * unlike QEMU (which reads zeroes), it must also lie inside the file.
 */
export async function readLuksInfo(file: RandomAccessFile, crypto: CryptoHeaderExtension): Promise<LuksInfo> {
  if (LUKS_HEADER_SIZE > crypto.length) {
    throw luksError(file.path, false, `request for data outside of extension header: the header needs ${LUKS_HEADER_SIZE} bytes, the crypto header extension declares ${crypto.length}`,
      'crypto header length', crypto.length, LUKS_HEADER_SIZE);
  }
  if (crypto.offset + LUKS_HEADER_SIZE > file.size) {
    throw luksError(file.path, false, `the header at offset ${crypto.offset} runs past the end of the file (${file.size} bytes)`, 'crypto header offset', crypto.offset, file.size);
  }
  const h = new Uint8Array(LUKS_HEADER_SIZE);
  await file.read(h, crypto.offset);
  return decodeLuksHeader(h, file.path);
}
