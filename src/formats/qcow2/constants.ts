/**
 * qcow2 constants: magic, feature bits, extension magics, entry masks and QEMU's limits.
 * Numbers come from docs/interop/qcow2.txt and QEMU's block/qcow2.h.
 */

/** `QFI\xfb`. */
export const QCOW2_MAGIC = 0x514649fb;

/** QEMU accepts cluster_bits in [MIN_CLUSTER_BITS, MAX_CLUSTER_BITS] (512 B .. 2 MiB). */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;

/** Header sizes: v2 is 72 bytes, v3 at least 104. */
export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;

/** Incompatible feature bits. */
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
export const INCOMPAT_KNOWN_MASK = 0x1fn;

/** Compatible feature bits. */
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;

/** Autoclear feature bits. */
export const AUTOCLEAR_BITMAPS = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;

/** Header extension magics. */
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_BITMAPS = 0x23852875;
export const EXT_DATA_FILE = 0x44415441;

/** crypt_method values. */
export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;

/** compression_type values. */
export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

/** L1/L2 entry bits. */
export const OFLAG_COPIED = 1n << 63n;
export const OFLAG_COMPRESSED = 1n << 62n;
export const OFLAG_ZERO = 1n;
/** Host-offset bits 9..55 of L1 and standard L2 entries. */
export const L1E_OFFSET_MASK = 0x00fffffffffffe00n;
export const L2E_OFFSET_MASK = 0x00fffffffffffe00n;
export const L1E_RESERVED_MASK = 0x7f000000000001ffn;
export const L2E_STD_RESERVED_MASK = 0x3f000000000001fen;
export const REFT_OFFSET_MASK = 0xfffffffffffffe00n;

/** QEMU's open-time table limits (block/qcow2.h). */
export const QCOW_MAX_REFTABLE_SIZE = 8 * 1024 * 1024;
export const QCOW_MAX_L1_SIZE = 32 * 1024 * 1024;
export const QCOW_MAX_SNAPSHOTS = 65536;
export const QCOW_MAX_SNAPSHOT_EXTRA_DATA = 1024;
/** Whole snapshot table (QCOW_MAX_SNAPSHOTS_SIZE). */
export const QCOW_MAX_SNAPSHOTS_SIZE = 1024 * QCOW_MAX_SNAPSHOTS;
/** Bitmaps: at most 65535 bitmaps, directory at most 1024 × 65535 bytes. */
export const QCOW2_MAX_BITMAPS = 65535;
export const QCOW2_MAX_BITMAP_DIRECTORY_SIZE = 1024 * QCOW2_MAX_BITMAPS;
/** Backing file names: at most 1023 bytes. */
export const MAX_BACKING_NAME = 1023;
/** Backing format names must be shorter than 16 bytes. */
export const MAX_BACKING_FORMAT = 15;
/** Extended L2: 32 subclusters per cluster, each at least 512 bytes. */
export const SUBCLUSTERS_PER_CLUSTER_EXTL2 = 32;
export const MIN_SUBCLUSTER_SIZE = 512;
/** INT_MAX / INT64_MAX, the bounds QEMU checks sizes and offsets against. */
export const INT_MAX = 0x7fffffff;
export const INT64_MAX = 0x7fffffffffffffffn;

/**
 * Bitmaps (docs/interop/qcow2.txt "Bitmaps"; QEMU block/qcow2-bitmap.c): directory entry
 * limits checked by `check_dir_entry`, and bitmap table entry masks.
 */
/** Size of the fixed part of a directory entry (`Qcow2BitmapDirEntry`). */
export const BITMAP_DIR_ENTRY_SIZE = 24;
/** Largest bitmap table, in entries (`BME_MAX_TABLE_SIZE`). */
export const BME_MAX_TABLE_SIZE = 0x8000000;
/** Largest bitmap in bytes of clusters (`BME_MAX_PHYS_SIZE`, 512 MiB). */
export const BME_MAX_PHYS_SIZE = 0x20000000;
/** Granularity bounds (`BME_MIN_GRANULARITY_BITS`, `BME_MAX_GRANULARITY_BITS`). */
export const BME_MIN_GRANULARITY_BITS = 9;
export const BME_MAX_GRANULARITY_BITS = 31;
/** Longest bitmap name (`BME_MAX_NAME_SIZE`). */
export const BME_MAX_NAME_SIZE = 1023;
/** Flags QEMU 7.2 knows; any other bit is refused (`BME_RESERVED_FLAGS` = 0xfffffffc). */
export const BME_FLAG_IN_USE = 1 << 0;
export const BME_FLAG_AUTO = 1 << 1;
export const BME_RESERVED_FLAGS = 0xfffffffc;
/** The only bitmap type (`BT_DIRTY_TRACKING_BITMAP`). */
export const BT_DIRTY_TRACKING_BITMAP = 1;
/** Bitmap table entry masks. */
export const BME_TABLE_ENTRY_RESERVED_MASK = 0xff000000000001fen;
export const BME_TABLE_ENTRY_OFFSET_MASK = 0x00fffffffffffe00n;
export const BME_TABLE_ENTRY_FLAG_ALL_ONES = 1n;

/** LUKS1 (QEMU crypto/block-luks.c), for qcow2 crypt_method 2. */
/** Size of the LUKS1 header without key material. */
export const LUKS_HEADER_SIZE = 592;
/** `LUKS\xba\xbe`. */
export const LUKS_MAGIC: readonly number[] = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];
/** LUKS sector size, and the alignment of key material in sectors (4 KiB). */
export const LUKS_SECTOR = 512;
export const LUKS_HEADER_SECTORS = 4096 / LUKS_SECTOR;
/** Key slot states. */
export const LUKS_SLOT_ENABLED = 0x00ac71f3;
export const LUKS_SLOT_DISABLED = 0x0000dead;

/**
 * The entry masks above on the two native 32-bit words of an entry, as decoded tables hold
 * them (high word = bits 32..63, low word = bits 0..31).
 */
export const WORD_COPIED_HI = 0x80000000;
export const WORD_COMPRESSED_HI = 0x40000000;
export const WORD_OFFSET_HI = 0x00ffffff;
export const WORD_OFFSET_LO = 0xfffffe00;
export const WORD_L1_RESERVED_HI = 0x7f000000;
export const WORD_L1_RESERVED_LO = 0x000001ff;
export const WORD_L2_RESERVED_HI = 0x3f000000;
export const WORD_L2_RESERVED_LO = 0x000001fe;
