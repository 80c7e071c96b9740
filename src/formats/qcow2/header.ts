/**
 * The qcow2 header (v2 and v3): decoding every field from the first bytes of the file and
 * validating it with QEMU's open-time rules (`qcow2_do_open`), in QEMU's order, each broken
 * rule a typed error naming the field, the value and the limit.
 *
 * 64-bit fields are decoded as bigint and converted to number only after they are bounded.
 */
import { CorruptImageError, NotThisFormatError, UnsupportedImageError, hex } from '../../errors.js';
import {
  CRYPT_AES,
  CRYPT_LUKS,
  CRYPT_NONE,
  INCOMPAT_COMPRESSION,
  INCOMPAT_EXTL2,
  INT_MAX,
  INT64_MAX,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  MIN_SUBCLUSTER_SIZE,
  QCOW2_MAGIC,
  QCOW_MAX_L1_SIZE,
  QCOW_MAX_REFTABLE_SIZE,
  QCOW_MAX_SNAPSHOTS,
  SUBCLUSTERS_PER_CLUSTER_EXTL2,
  V2_HEADER_LENGTH,
  V3_MIN_HEADER_LENGTH,
  COMPRESSION_ZLIB,
  COMPRESSION_ZSTD,
  INCOMPAT_KNOWN_MASK,
} from './constants.js';
import { scanFeatureNames, unknownIncompatibleFeatures } from './extensions.js';

/** Every field of the qcow2 header, as stored (v2 images get QEMU's implied v3 values). */
export interface Qcow2Header {
  readonly version: 2 | 3;
  readonly backingFileOffset: number;
  readonly backingFileSize: number;
  readonly clusterBits: number;
  /** Virtual size in bytes as stored (bigint: may exceed 2^53). */
  readonly size: bigint;
  readonly cryptMethod: number;
  readonly l1Size: number;
  readonly l1TableOffset: number;
  readonly refcountTableOffset: number;
  readonly refcountTableClusters: number;
  readonly nbSnapshots: number;
  readonly snapshotsOffset: number;
  readonly incompatibleFeatures: bigint;
  readonly compatibleFeatures: bigint;
  readonly autoclearFeatures: bigint;
  readonly refcountOrder: number;
  readonly headerLength: number;
  /** 0 zlib, 1 zstd; 0 when the header has no such field. */
  readonly compressionType: number;
}

/** Bytes of the header QEMU reads before deciding anything (sizeof(QCowHeader) = 112 in 7.2 incl. padding). */
export const HEADER_PROBE_BYTES = 112;

/** True when `bytes` starts with the qcow2 magic. */
export function hasQcow2Magic(bytes: Uint8Array): boolean {
  if (bytes.length < 4) return false;
  return new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0) === QCOW2_MAGIC;
}

/**
 * Decodes the header from the first bytes of the file (`head`: the first cluster, or at
 * least `min(fileSize, 112)` bytes; missing bytes past the end of the file are an error, not
 * zeros). Checks run in `qcow2_do_open`'s order, up to and including the L1 table limits;
 * the crypt method is checked last, as `qcow2_update_options` does after that.
 */
export function decodeHeader(head: Uint8Array, file: string): Qcow2Header {
  const field = (name: string, offset: number, width: number): void => {
    if (head.length < offset + width) {
      throw new CorruptImageError(
        'QCOW2_HEADER_TRUNCATED',
        `qcow2 header too short: field ${name} at byte ${offset} lies past the end of the file (${head.length} bytes)`,
        { file, field: name, value: head.length, limit: offset + width },
      );
    }
  };
  if (!hasQcow2Magic(head)) {
    throw new NotThisFormatError('QCOW2_BAD_MAGIC', `'${file}' is not in qcow2 format (magic is not QFI\\xfb)`, {
      file,
      field: 'magic',
    });
  }
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  field('version', 4, 4);
  const version = dv.getUint32(4);
  if (version !== 2 && version !== 3) {
    throw new UnsupportedImageError('QCOW2_VERSION', `unsupported qcow2 version ${version} (supported: 2, 3)`, {
      file,
      field: 'version',
      value: version,
      limit: '2 or 3',
    });
  }
  field('v2 header', 0, V2_HEADER_LENGTH);
  const clusterBits = dv.getUint32(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new UnsupportedImageError(
      'QCOW2_CLUSTER_BITS',
      `unsupported cluster size: cluster_bits is ${clusterBits}, must be between ${MIN_CLUSTER_BITS} and ${MAX_CLUSTER_BITS}`,
      { file, field: 'cluster_bits', value: clusterBits, limit: `${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}` },
    );
  }
  const clusterSize = 2 ** clusterBits;

  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let refcountOrder = 4;
  let headerLength = V2_HEADER_LENGTH;
  let compressionType = COMPRESSION_ZLIB;
  if (version === 3) {
    field('header_length', 100, 4);
    incompatibleFeatures = dv.getBigUint64(72);
    compatibleFeatures = dv.getBigUint64(80);
    autoclearFeatures = dv.getBigUint64(88);
    refcountOrder = dv.getUint32(96);
    headerLength = dv.getUint32(100);
    if (headerLength < V3_MIN_HEADER_LENGTH) {
      throw new CorruptImageError(
        'QCOW2_HEADER_LENGTH',
        `qcow2 header too short: header_length is ${headerLength}, must be at least ${V3_MIN_HEADER_LENGTH}`,
        { file, field: 'header_length', value: headerLength, limit: V3_MIN_HEADER_LENGTH },
      );
    }
    if (headerLength > clusterSize) {
      throw new CorruptImageError(
        'QCOW2_HEADER_LENGTH',
        `qcow2 header exceeds cluster size: header_length is ${headerLength}, cluster size is ${clusterSize}`,
        { file, field: 'header_length', value: headerLength, limit: clusterSize },
      );
    }
    if (headerLength > V3_MIN_HEADER_LENGTH) {
      field('compression_type', 104, 1);
      compressionType = dv.getUint8(104);
    }
  }

  const backingFileOffsetBig = dv.getBigUint64(8);
  if (backingFileOffsetBig > BigInt(clusterSize)) {
    throw new CorruptImageError(
      'QCOW2_BACKING_FILE_OFFSET',
      `invalid backing file offset: backing_file_offset is ${hex(backingFileOffsetBig)}, must not exceed the cluster size ${clusterSize}`,
      { file, field: 'backing_file_offset', value: backingFileOffsetBig, limit: clusterSize },
    );
  }

  // Compression type (qcow2_update_options_prepare / validate_compression_type).
  if (compressionType !== COMPRESSION_ZLIB && compressionType !== COMPRESSION_ZSTD) {
    throw new UnsupportedImageError(
      'QCOW2_COMPRESSION_TYPE',
      `unknown compression type: compression_type is ${compressionType}, must be 0 (zlib) or 1 (zstd)`,
      { file, field: 'compression_type', value: compressionType, limit: '0 or 1' },
    );
  }
  const compressionBit = (incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n;
  if (compressionType !== COMPRESSION_ZLIB && !compressionBit) {
    throw new CorruptImageError(
      'QCOW2_COMPRESSION_BIT',
      `compression type ${compressionType} needs incompatible feature bit 3 (compression type), which is not set`,
      { file, field: 'incompatible_features', value: incompatibleFeatures, limit: 'bit 3 set when compression_type != 0' },
    );
  }
  if (compressionType === COMPRESSION_ZLIB && compressionBit) {
    throw new CorruptImageError(
      'QCOW2_COMPRESSION_BIT',
      `incompatible feature bit 3 (compression type) is set but compression_type is 0 (zlib)`,
      { file, field: 'incompatible_features', value: incompatibleFeatures, limit: 'bit 3 clear when compression_type = 0' },
    );
  }

  const unknownIncompat = incompatibleFeatures & ~INCOMPAT_KNOWN_MASK;
  if (unknownIncompat !== 0n) {
    const names = scanFeatureNames(head, version === 3 ? headerLength : V2_HEADER_LENGTH,
      backingFileOffsetBig !== 0n ? Number(backingFileOffsetBig) : clusterSize);
    throw new UnsupportedImageError(
      'QCOW2_INCOMPATIBLE_FEATURE',
      `unsupported qcow2 feature(s): ${unknownIncompatibleFeatures(unknownIncompat, names)} (incompatible_features 0x${incompatibleFeatures.toString(16)}, known mask 0x1f)`,
      { file, field: 'incompatible_features', value: unknownIncompat, limit: INCOMPAT_KNOWN_MASK },
    );
  }
  const extendedL2 = (incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
  if (extendedL2 && clusterSize / SUBCLUSTERS_PER_CLUSTER_EXTL2 < MIN_SUBCLUSTER_SIZE) {
    throw new UnsupportedImageError(
      'QCOW2_SUBCLUSTER_SIZE',
      `unsupported subcluster size: ${clusterSize / SUBCLUSTERS_PER_CLUSTER_EXTL2} bytes, at least ${MIN_SUBCLUSTER_SIZE} (extended L2 needs cluster_bits >= 14)`,
      { file, field: 'cluster_bits', value: clusterBits, limit: 14 },
    );
  }
  if (refcountOrder > 6) {
    throw new CorruptImageError(
      'QCOW2_REFCOUNT_ORDER',
      `reference count entry width too large: refcount_order is ${refcountOrder}, may not exceed 6 (64 bits)`,
      { file, field: 'refcount_order', value: refcountOrder, limit: 6 },
    );
  }

  const refcountTableClusters = dv.getUint32(56);
  const refcountTableOffset = dv.getBigUint64(48);
  if (refcountTableClusters === 0) {
    throw new CorruptImageError(
      'QCOW2_REFCOUNT_TABLE',
      'image does not contain a reference count table: refcount_table_clusters is 0',
      { file, field: 'refcount_table_clusters', value: 0, limit: 'at least 1' },
    );
  }
  validateTable(file, 'refcount table', 'refcount_table_offset', refcountTableOffset,
    refcountTableClusters, clusterSize, QCOW_MAX_REFTABLE_SIZE, clusterSize);

  const nbSnapshots = dv.getUint32(60);
  const snapshotsOffset = dv.getBigUint64(64);
  if (nbSnapshots > QCOW_MAX_SNAPSHOTS) {
    throw new CorruptImageError(
      'QCOW2_SNAPSHOT_TABLE',
      `snapshot table too large: nb_snapshots is ${nbSnapshots}, at most ${QCOW_MAX_SNAPSHOTS}`,
      { file, field: 'nb_snapshots', value: nbSnapshots, limit: QCOW_MAX_SNAPSHOTS },
    );
  }
  validateTable(file, 'snapshot table', 'snapshots_offset', snapshotsOffset, nbSnapshots, 40,
    40 * QCOW_MAX_SNAPSHOTS, clusterSize);

  const l1Size = dv.getUint32(36);
  const l1TableOffset = dv.getBigUint64(40);
  if (l1Size > QCOW_MAX_L1_SIZE / 8) {
    throw new CorruptImageError(
      'QCOW2_L1_TABLE',
      `active L1 table too large: l1_size is ${l1Size} entries, at most ${QCOW_MAX_L1_SIZE / 8}`,
      { file, field: 'l1_size', value: l1Size, limit: QCOW_MAX_L1_SIZE / 8 },
    );
  }
  validateTable(file, 'active L1 table', 'l1_table_offset', l1TableOffset, l1Size, 8, QCOW_MAX_L1_SIZE, clusterSize);
  const size = dv.getBigUint64(24);
  const l2Bits = clusterBits - (extendedL2 ? 4 : 3);
  const bytesPerL1 = 1n << BigInt(clusterBits + l2Bits);
  const neededL1 = (size + bytesPerL1 - 1n) / bytesPerL1;
  if (neededL1 > BigInt(INT_MAX)) {
    throw new UnsupportedImageError(
      'QCOW2_SIZE',
      `image is too big: size ${size} needs ${neededL1} L1 entries, at most ${INT_MAX}`,
      { file, field: 'size', value: size, limit: INT_MAX },
    );
  }
  if (BigInt(l1Size) < neededL1) {
    throw new CorruptImageError(
      'QCOW2_L1_TABLE',
      `L1 table is too small: l1_size is ${l1Size}, size ${size} needs ${neededL1} entries`,
      { file, field: 'l1_size', value: l1Size, limit: neededL1 },
    );
  }
  // Sizes and offsets beyond 2^53 cannot be handled exactly as numbers: refuse them.
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new UnsupportedImageError(
      'QCOW2_SIZE',
      `virtual size ${size} is larger than vdisk supports (${Number.MAX_SAFE_INTEGER})`,
      { file, field: 'size', value: size, limit: Number.MAX_SAFE_INTEGER },
    );
  }

  const cryptMethod = dv.getUint32(32);
  if (cryptMethod !== CRYPT_NONE && cryptMethod !== CRYPT_AES && cryptMethod !== CRYPT_LUKS) {
    throw new UnsupportedImageError(
      'QCOW2_CRYPT_METHOD',
      `unsupported encryption method ${cryptMethod} (known: 0 none, 1 aes, 2 luks)`,
      { file, field: 'crypt_method', value: cryptMethod, limit: '0, 1 or 2' },
    );
  }

  return {
    version,
    backingFileOffset: Number(backingFileOffsetBig),
    backingFileSize: dv.getUint32(16),
    clusterBits,
    size,
    cryptMethod,
    l1Size,
    l1TableOffset: Number(l1TableOffset),
    refcountTableOffset: Number(refcountTableOffset),
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset: Number(snapshotsOffset),
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionType,
  };
}

/**
 * QEMU's `qcow2_validate_table`: `entries × entryLen ≤ maxBytes`, offset cluster-aligned and
 * `offset + bytes` not past INT64_MAX. Also refuses offsets beyond 2^53 (not representable).
 */
function validateTable(
  file: string,
  table: string,
  fieldName: string,
  offset: bigint,
  entries: number,
  entryLen: number,
  maxBytes: number,
  clusterSize: number,
): void {
  const bytes = entries * entryLen;
  if (bytes > maxBytes) {
    throw new CorruptImageError('QCOW2_TABLE_TOO_LARGE', `${table} too large: ${bytes} bytes, at most ${maxBytes}`, {
      file,
      field: table,
      value: bytes,
      limit: maxBytes,
    });
  }
  if (offset % BigInt(clusterSize) !== 0n || INT64_MAX - BigInt(bytes) < offset || offset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CorruptImageError(
      'QCOW2_TABLE_OFFSET',
      `${table} offset invalid: ${fieldName} is ${hex(offset)}, must be a multiple of the cluster size ${clusterSize} and fit the file`,
      { file, field: fieldName, value: offset, limit: `aligned to ${clusterSize}` },
    );
  }
}
