/**
 * The LUKS1 header of a qcow2 image with `encrypt.format=luks` (crypt_method 2): what QEMU
 * 7.2's `qcrypto_block_luks_open` with QCRYPTO_BLOCK_OPEN_NO_IO reads and checks at open,
 * and what `qcrypto_block_luks_get_info` reports. No key material is read and nothing is
 * decrypted.
 *
 * On-disk layout (big-endian, 592 bytes): magic[6] "LUKS\xba\xbe", u16 version (1),
 * cipher_name[32], cipher_mode[32], hash_spec[32], u32 payload_offset (sectors),
 * u32 key_bytes, mk_digest[20], mk_digest_salt[32], u32 mk_digest_iterations, uuid[40],
 * then 8 key slots of {u32 active, u32 iterations, salt[32], u32 key_material_offset
 * (sectors), u32 stripes}.
 */
import { qemuCString } from '../../binary/c-string.js';
import { CorruptImageError, UnsupportedImageError } from '../../errors.js';
import type { RandomAccessFile } from '../../io/random-access-file.js';
import {
  LUKS_HEADER_SECTORS,
  LUKS_HEADER_SIZE,
  LUKS_MAGIC,
  LUKS_SECTOR,
  LUKS_SLOT_DISABLED,
  LUKS_SLOT_ENABLED,
} from './constants.js';
import type { CryptoHeaderExtension } from './extensions.js';

export { LUKS_HEADER_SIZE };

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
