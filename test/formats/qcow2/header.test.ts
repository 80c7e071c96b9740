/**
 * qcow2 header decoding and open-time validation (src/formats/qcow2/header.ts): v2 and v3
 * headers from byte literals (dumped from qemu-img 7.2 images) and from field values, every
 * field; each validation rule of `qcow2_do_open` (HOSTILE-IMAGES.md §1 and §6a,
 * QEMU-SEMANTICS.md §7.1/§7.6) asserted by error class and `code`; 64-bit fields decoded
 * exactly as bigint.
 */
import { describe, expect, it } from 'vitest';
import { CorruptImageError, NotThisFormatError, UnsupportedImageError, type VdiskError } from '../../../src/errors.js';
import { HEADER_PROBE_BYTES, decodeHeader, hasQcow2Magic } from '../../../src/formats/qcow2/header.js';
import { encodeHeader, type HeaderFields } from '../../helpers/qcow2-builder.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

/** `qemu-img create -f qcow2 a.qcow2 1M` (7.2.22): v3, 64 KiB clusters, 112-byte header. */
const V3_DEFAULT = hex(`
  514649fb 00000003 00000000 00000000 00000000 00000010 00000000 00100000
  00000000 00000001 00000000 00030000 00000000 00010000 00000001 00000000
  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000
  00000004 00000070 00000000 00000000`);

/** `-o compat=0.10 -b a.qcow2 -F qcow2` (7.2.22): v2, backing name at 0x60, backing-format ext at 72. */
const V2_BACKING = hex(`
  514649fb 00000002 00000000 00000060 00000007 00000010 00000000 00100000
  00000000 00000001 00000000 00030000 00000000 00010000 00000001 00000000
  00000000 00000000 e2792aca 00000005 71636f77 32000000 00000000 00000000
  612e7163 6f773200 00000000 00000000`);

/** `-o lazy_refcounts=on,refcount_bits=8,compression_type=zstd,extended_l2=on,cluster_size=128k` 10M. */
const V3_FEATURES = hex(`
  514649fb 00000003 00000000 00000000 00000000 00000011 00000000 00a00000
  00000000 00000001 00000000 00060000 00000000 00020000 00000001 00000000
  00000000 00000000 00000000 00000018 00000000 00000001 00000000 00000000
  00000003 00000070 01000000 00000000`);

const decode = (f: HeaderFields, length?: number) => decodeHeader(encodeHeader(f, length), 't.qcow2');

/** Runs `fn`, expecting a VdiskError of class `cls` with `code`; returns it. */
function expectError(fn: () => unknown, cls: abstract new (...a: never[]) => VdiskError, code: string): VdiskError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, `expected ${cls.name} ${code}`).toBeInstanceOf(cls);
  expect((caught as VdiskError).code).toBe(code);
  expect((caught as VdiskError).details.file).toBe('t.qcow2');
  return caught as VdiskError;
}

describe('hasQcow2Magic', () => {
  it('recognises QFI\\xfb only', () => {
    expect(hasQcow2Magic(V3_DEFAULT)).toBe(true);
    expect(hasQcow2Magic(hex('514649fa'))).toBe(false);
    expect(hasQcow2Magic(hex('514649'))).toBe(false);
    expect(hasQcow2Magic(new Uint8Array(0))).toBe(false);
  });

  it('honours the byte offset of a subarray', () => {
    const b = new Uint8Array(8);
    b.set(hex('514649fb'), 4);
    expect(hasQcow2Magic(b.subarray(4))).toBe(true);
  });
});

describe('decodeHeader: byte literals from qemu-img 7.2', () => {
  it('a default v3 header, every field', () => {
    expect(HEADER_PROBE_BYTES).toBe(112);
    expect(decodeHeader(V3_DEFAULT, 'a.qcow2')).toEqual({
      version: 3,
      backingFileOffset: 0,
      backingFileSize: 0,
      clusterBits: 16,
      size: 1048576n,
      cryptMethod: 0,
      l1Size: 1,
      l1TableOffset: 0x30000,
      refcountTableOffset: 0x10000,
      refcountTableClusters: 1,
      nbSnapshots: 0,
      snapshotsOffset: 0,
      incompatibleFeatures: 0n,
      compatibleFeatures: 0n,
      autoclearFeatures: 0n,
      refcountOrder: 4,
      headerLength: 112,
      compressionType: 0,
    });
  });

  it('a v2 header gets the implied v3 values; bytes after 72 (extensions) are not header fields', () => {
    expect(decodeHeader(V2_BACKING, 'v2.qcow2')).toEqual({
      version: 2,
      backingFileOffset: 0x60,
      backingFileSize: 7,
      clusterBits: 16,
      size: 1048576n,
      cryptMethod: 0,
      l1Size: 1,
      l1TableOffset: 0x30000,
      refcountTableOffset: 0x10000,
      refcountTableClusters: 1,
      nbSnapshots: 0,
      snapshotsOffset: 0,
      incompatibleFeatures: 0n,
      compatibleFeatures: 0n,
      autoclearFeatures: 0n,
      refcountOrder: 4,
      headerLength: 72,
      compressionType: 0,
    });
  });

  it('a v2 header needs only 72 bytes', () => {
    expect(decodeHeader(V2_BACKING.subarray(0, 72), 'v2.qcow2').version).toBe(2);
  });

  it('a v3 header with zstd, extended L2, lazy refcounts, 8-bit refcounts, 128 KiB clusters', () => {
    const h = decodeHeader(V3_FEATURES, 'x.qcow2');
    expect(h).toMatchObject({
      version: 3,
      clusterBits: 17,
      size: 10485760n,
      l1Size: 1,
      l1TableOffset: 0x60000,
      refcountTableOffset: 0x20000,
      incompatibleFeatures: 0x18n,
      compatibleFeatures: 1n,
      autoclearFeatures: 0n,
      refcountOrder: 3,
      headerLength: 112,
      compressionType: 1,
    });
  });
});

describe('decodeHeader: field values', () => {
  // Unknown incompatible bits are refused by decodeHeader itself (QEMU checks them right
  // after the compression type), so only known bits appear here.
  it('decodes every field from the builder, at non-trivial values', () => {
    const h = decode({
      version: 3,
      backingFileOffset: 0x200,
      backingFileSize: 0x21,
      clusterBits: 12,
      size: 0x123456000n,
      cryptMethod: 0,
      l1Size: 0x920,
      l1TableOffset: 0x7000,
      refcountTableOffset: 0x5000,
      refcountTableClusters: 3,
      nbSnapshots: 65536,
      snapshotsOffset: 0x9000,
      incompatibleFeatures: 0x1n,
      compatibleFeatures: 0xfedcba9876543210n,
      autoclearFeatures: 0x8000000000000003n,
      refcountOrder: 6,
      headerLength: 120,
      compressionType: 0,
    });
    expect(h).toEqual({
      version: 3,
      backingFileOffset: 0x200,
      backingFileSize: 0x21,
      clusterBits: 12,
      size: 0x123456000n,
      cryptMethod: 0,
      l1Size: 0x920,
      l1TableOffset: 0x7000,
      refcountTableOffset: 0x5000,
      refcountTableClusters: 3,
      nbSnapshots: 65536,
      snapshotsOffset: 0x9000,
      incompatibleFeatures: 0x1n,
      compatibleFeatures: 0xfedcba9876543210n,
      autoclearFeatures: 0x8000000000000003n,
      refcountOrder: 6,
      headerLength: 120,
      compressionType: 0,
    });
  });

  it('64-bit feature masks above 2^53 are exact bigints', () => {
    const h = decode({ compatibleFeatures: (1n << 63n) | 1n, autoclearFeatures: 0xffffffffffffffffn });
    expect(h.compatibleFeatures).toBe(0x8000000000000001n);
    expect(h.autoclearFeatures).toBe(0xffffffffffffffffn);
  });

  it('header_length 104: no compression type byte is read (zlib)', () => {
    const b = encodeHeader({ headerLength: 104 }, 112);
    b[104] = 1; // would be zstd if it were read
    expect(decodeHeader(b, 't.qcow2')).toMatchObject({ headerLength: 104, compressionType: 0 });
    expect(decodeHeader(b.subarray(0, 104), 't.qcow2').compressionType).toBe(0);
  });

  it('the size is kept exactly, up to 2^53 - 1', () => {
    const max = 2n ** 53n - 1n;
    const h = decode({ clusterBits: 21, size: max, l1Size: 16384, l1TableOffset: 0x600000, refcountTableOffset: 0x200000 });
    expect(h.size).toBe(max);
  });

  it('cluster_bits 9 and 21 (the limits) are accepted', () => {
    expect(decode({ clusterBits: 9, headerLength: 112, l1Size: 32, l1TableOffset: 0x600, refcountTableOffset: 0x200 }).clusterBits).toBe(9);
    expect(decode({ clusterBits: 21, l1TableOffset: 0x600000, refcountTableOffset: 0x200000 }).clusterBits).toBe(21);
  });

  it('extended L2 with 16 KiB clusters (512-byte subclusters) is accepted', () => {
    const h = decode({ clusterBits: 14, incompatibleFeatures: 0x10n, l1TableOffset: 0xc000, refcountTableOffset: 0x4000, l1Size: 1 });
    expect(h.clusterBits).toBe(14);
  });
});

describe('decodeHeader: validation errors', () => {
  it('bad magic is NotThisFormatError QCOW2_BAD_MAGIC', () => {
    expectError(() => decode({ magic: 0x51464900 }), NotThisFormatError, 'QCOW2_BAD_MAGIC');
    expectError(() => decodeHeader(new Uint8Array(2), 't.qcow2'), NotThisFormatError, 'QCOW2_BAD_MAGIC');
  });

  it.each([1, 4, 0, 0xffffffff])('version %d is UnsupportedImageError QCOW2_VERSION', (version) => {
    const e = expectError(() => decode({ version }), UnsupportedImageError, 'QCOW2_VERSION');
    expect(e.details).toMatchObject({ field: 'version', value: version });
    expect(e.message).toContain(`version ${version}`);
  });

  it.each([0, 8, 22, 31, 32, 63, 0xffffffff])(
    'cluster_bits %d is UnsupportedImageError QCOW2_CLUSTER_BITS (no 1<<bits wrap)',
    (clusterBits) => {
      // With a wrapping shift, 1<<32 === 1 and 1<<31 < 0: make every other field consistent with such a wrap.
      const e = expectError(
        () => decode({ clusterBits, l1TableOffset: 0, refcountTableOffset: 0, headerLength: 104 }),
        UnsupportedImageError,
        'QCOW2_CLUSTER_BITS',
      );
      expect(e.details).toMatchObject({ field: 'cluster_bits', value: clusterBits });
    },
  );

  it.each([
    ['header too short (72 of 112 bytes, v3)', 72],
    ['header too short (100 bytes, v3)', 100],
    ['header too short (50 bytes)', 50],
  ])('%s is CorruptImageError QCOW2_HEADER_TRUNCATED', (_name, length) => {
    expectError(() => decodeHeader(encodeHeader({}, length), 't.qcow2'), CorruptImageError, 'QCOW2_HEADER_TRUNCATED');
  });

  it('header_length 112 with only 104 bytes available: the compression type is past EOF', () => {
    expectError(() => decodeHeader(encodeHeader({ headerLength: 112 }, 104), 't.qcow2'), CorruptImageError, 'QCOW2_HEADER_TRUNCATED');
  });

  it.each([0, 72, 100, 103])('v3 header_length %d (< 104) is CorruptImageError QCOW2_HEADER_LENGTH', (headerLength) => {
    const e = expectError(() => decode({ headerLength }), CorruptImageError, 'QCOW2_HEADER_LENGTH');
    expect(e.details).toMatchObject({ field: 'header_length', value: headerLength, limit: 104 });
  });

  it.each([0x10008, 0xffffffff])('header_length %d (> cluster size) is QCOW2_HEADER_LENGTH', (headerLength) => {
    const e = expectError(() => decode({ headerLength }), CorruptImageError, 'QCOW2_HEADER_LENGTH');
    expect(e.details).toMatchObject({ value: headerLength, limit: 65536 });
  });

  it('header_length equal to the cluster size is accepted', () => {
    expect(decode({ clusterBits: 9, headerLength: 512, l1Size: 32, l1TableOffset: 0x600, refcountTableOffset: 0x200 }).headerLength).toBe(512);
  });

  it.each([0x10001n, 0x7fffffffffff0000n, 0xffffffffffffffffn])(
    'backing_file_offset %s (> cluster size) is CorruptImageError QCOW2_BACKING_FILE_OFFSET, value exact',
    (backingFileOffset) => {
      const e = expectError(() => decode({ backingFileOffset }), CorruptImageError, 'QCOW2_BACKING_FILE_OFFSET');
      expect(e.details.value).toBe(backingFileOffset);
    },
  );

  it('backing_file_offset equal to the cluster size is accepted', () => {
    expect(decode({ backingFileOffset: 0x10000 }).backingFileOffset).toBe(0x10000);
  });

  it.each([7, 64, 0xffffffff])('refcount_order %d is CorruptImageError QCOW2_REFCOUNT_ORDER', (refcountOrder) => {
    const e = expectError(() => decode({ refcountOrder }), CorruptImageError, 'QCOW2_REFCOUNT_ORDER');
    expect(e.details).toMatchObject({ field: 'refcount_order', value: refcountOrder, limit: 6 });
  });

  it('compression type zstd without incompatible bit 3 is QCOW2_COMPRESSION_BIT', () => {
    expectError(() => decode({ compressionType: 1 }), CorruptImageError, 'QCOW2_COMPRESSION_BIT');
  });

  it('incompatible bit 3 with compression type zlib is QCOW2_COMPRESSION_BIT', () => {
    expectError(() => decode({ incompatibleFeatures: 8n, compressionType: 0 }), CorruptImageError, 'QCOW2_COMPRESSION_BIT');
  });

  it('incompatible bit 3 with header_length 104 (no compression field => zlib) is QCOW2_COMPRESSION_BIT (H12)', () => {
    expectError(() => decode({ incompatibleFeatures: 8n, headerLength: 104 }), CorruptImageError, 'QCOW2_COMPRESSION_BIT');
  });

  it('zstd with bit 3 is accepted', () => {
    expect(decode({ incompatibleFeatures: 8n, compressionType: 1 }).compressionType).toBe(1);
  });

  it.each([
    ['with bit 3', 8n],
    ['without bit 3', 0n],
  ])('unknown compression type 2 (%s) is UnsupportedImageError QCOW2_COMPRESSION_TYPE', (_n, incompatibleFeatures) => {
    const e = expectError(() => decode({ incompatibleFeatures, compressionType: 2 }), UnsupportedImageError, 'QCOW2_COMPRESSION_TYPE');
    expect(e.details.value).toBe(2);
  });

  it('refcount_table_clusters 0 is CorruptImageError QCOW2_REFCOUNT_TABLE', () => {
    expectError(() => decode({ refcountTableClusters: 0 }), CorruptImageError, 'QCOW2_REFCOUNT_TABLE');
  });

  it.each([129, 0xffffffff])('refcount_table_clusters %d (> 8 MiB) is QCOW2_TABLE_TOO_LARGE', (refcountTableClusters) => {
    const e = expectError(() => decode({ refcountTableClusters }), CorruptImageError, 'QCOW2_TABLE_TOO_LARGE');
    expect(e.details.limit).toBe(8 * 1024 * 1024);
  });

  it('refcount_table_clusters 128 (exactly 8 MiB) is accepted', () => {
    expect(decode({ refcountTableClusters: 128 }).refcountTableClusters).toBe(128);
  });

  it.each([0x10008n, 0x7fffffffffff0000n, 0xffffffffffff0000n])(
    'refcount_table_offset %s is CorruptImageError QCOW2_TABLE_OFFSET with the exact value',
    (refcountTableOffset) => {
      const e = expectError(() => decode({ refcountTableOffset }), CorruptImageError, 'QCOW2_TABLE_OFFSET');
      expect(e.details).toMatchObject({ field: 'refcount_table_offset', value: refcountTableOffset });
    },
  );

  it('nb_snapshots 65537 is CorruptImageError QCOW2_SNAPSHOT_TABLE', () => {
    const e = expectError(() => decode({ nbSnapshots: 65537, snapshotsOffset: 0x80000 }), CorruptImageError, 'QCOW2_SNAPSHOT_TABLE');
    expect(e.details).toMatchObject({ value: 65537, limit: 65536 });
  });

  it.each([0x80008n, 0x7fffffffffff0000n, 0xffffffffffff0000n])('snapshots_offset %s is QCOW2_TABLE_OFFSET', (snapshotsOffset) => {
    const e = expectError(() => decode({ nbSnapshots: 1, snapshotsOffset }), CorruptImageError, 'QCOW2_TABLE_OFFSET');
    expect(e.details.value).toBe(snapshotsOffset);
  });

  it('an unaligned snapshots_offset is refused even with zero snapshots (qcow2_validate_table)', () => {
    expectError(() => decode({ nbSnapshots: 0, snapshotsOffset: 8 }), CorruptImageError, 'QCOW2_TABLE_OFFSET');
  });

  it.each([0x400001, 0xffffffff])('l1_size %d is CorruptImageError QCOW2_L1_TABLE (too large, no u32 overflow)', (l1Size) => {
    const e = expectError(() => decode({ l1Size }), CorruptImageError, 'QCOW2_L1_TABLE');
    expect(e.details).toMatchObject({ field: 'l1_size', value: l1Size, limit: 0x400000 });
  });

  it('l1_size 0x400000 (32 MiB) is within the limit', () => {
    expect(decode({ l1Size: 0x400000 }).l1Size).toBe(0x400000);
  });

  it.each([0x30008n, 0x7fffffffffff0000n, 0xffffffffffff0000n])('l1_table_offset %s is QCOW2_TABLE_OFFSET', (l1TableOffset) => {
    const e = expectError(() => decode({ l1TableOffset }), CorruptImageError, 'QCOW2_TABLE_OFFSET');
    expect(e.details).toMatchObject({ field: 'l1_table_offset', value: l1TableOffset });
  });

  it.each([
    ['l1_size 0 for a 1 MiB disk', { l1Size: 0 }],
    ['size 2^42 with l1_size 1', { size: 2n ** 42n, l1Size: 1 }],
    ['one byte more than one L1 entry covers', { size: 2n ** 29n + 1n, l1Size: 1 }],
  ])('%s is CorruptImageError QCOW2_L1_TABLE (too small)', (_n, f) => {
    expectError(() => decode(f), CorruptImageError, 'QCOW2_L1_TABLE');
  });

  it('extended L2 halves the span of an L1 entry', () => {
    expect(decode({ size: 2n ** 29n, l1Size: 1 }).size).toBe(2n ** 29n);
    expectError(() => decode({ size: 2n ** 29n, l1Size: 1, incompatibleFeatures: 0x10n }), CorruptImageError, 'QCOW2_L1_TABLE');
    expect(decode({ size: 2n ** 28n, l1Size: 1, incompatibleFeatures: 0x10n }).size).toBe(2n ** 28n);
  });

  it('size 2^62 is UnsupportedImageError QCOW2_SIZE (image is too big)', () => {
    const e = expectError(() => decode({ size: 2n ** 62n, l1Size: 0x400000 }), UnsupportedImageError, 'QCOW2_SIZE');
    expect(e.details.value).toBe(2n ** 62n);
    expect(e.message).toContain('too big');
  });

  it('size 2^64 - 1 is refused without wrapping', () => {
    expectError(() => decode({ size: 0xffffffffffffffffn, l1Size: 0x400000 }), UnsupportedImageError, 'QCOW2_SIZE');
  });

  it.each([2n ** 53n, 2n ** 54n, 0x1fffffffffffffn + 1n])('size %s (> 2^53 - 1) is UnsupportedImageError QCOW2_SIZE', (size) => {
    const e = expectError(
      () => decode({ clusterBits: 21, size, l1Size: 0x8000, l1TableOffset: 0x600000, refcountTableOffset: 0x200000 }),
      UnsupportedImageError,
      'QCOW2_SIZE',
    );
    expect(e.details.value).toBe(size);
  });

  it('crypt_method 3 is UnsupportedImageError QCOW2_CRYPT_METHOD', () => {
    expectError(() => decode({ cryptMethod: 3 }), UnsupportedImageError, 'QCOW2_CRYPT_METHOD');
  });

  it('crypt_method 1 (aes) and 2 (luks) decode (refused or checked later)', () => {
    expect(decode({ cryptMethod: 1 }).cryptMethod).toBe(1);
    expect(decode({ cryptMethod: 2 }).cryptMethod).toBe(2);
  });

  it('extended L2 with 8 KiB clusters (256-byte subclusters) is UnsupportedImageError QCOW2_SUBCLUSTER_SIZE', () => {
    expectError(
      () => decode({ clusterBits: 13, incompatibleFeatures: 0x10n, l1TableOffset: 0x6000, refcountTableOffset: 0x2000, l1Size: 4 }),
      UnsupportedImageError,
      'QCOW2_SUBCLUSTER_SIZE',
    );
  });
});

/**
 * qcow2_do_open checks in a fixed order (QEMU-SEMANTICS.md §7.6); header.ts says it
 * validates "in QEMU's order". With several faults, the first in QEMU's order must be the
 * one reported. Each case was run against qemu-img 7.2.22 on a patched image.
 */
describe('decodeHeader: validation order (QEMU qcow2_do_open)', () => {
  // HOSTILE-IMAGES.md T11: `@20=u32:9` on an extended-L2 image -> "Unsupported subcluster size: 16" [seen].
  // The same patch also makes l1_size 1 too small for 1 MiB, which QEMU checks only later (step 11).
  it('extended L2 + cluster_bits 9 on a 1 MiB image: subcluster size is reported, not L1 too small', () => {
    expectError(
      () => decode({ clusterBits: 9, incompatibleFeatures: 0x10n, size: 1048576, l1Size: 1, l1TableOffset: 0x30000, refcountTableOffset: 0x10000 }),
      UnsupportedImageError,
      'QCOW2_SUBCLUSTER_SIZE',
    );
  });

  // qemu-img 7.2.22 on l1_size=0 + l1_table_offset=0x30200: "Active L1 table offset invalid".
  it('l1_size 0 with an unaligned L1 offset: the L1 offset is reported first', () => {
    expectError(() => decode({ l1Size: 0, l1TableOffset: 0x30200 }), CorruptImageError, 'QCOW2_TABLE_OFFSET');
  });

  // qemu-img 7.2.22 on refcount_order=7 + compression_type=1 without bit 3:
  // "qcow2: Compression type incompatible feature bit must be set".
  it('refcount_order 7 with zstd but no bit 3: the compression bit is reported first', () => {
    expectError(() => decode({ refcountOrder: 7, compressionType: 1 }), CorruptImageError, 'QCOW2_COMPRESSION_BIT');
  });
});
