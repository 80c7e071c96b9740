/**
 * qcow2 header extensions (src/formats/qcow2/extensions.ts; QEMU `qcow2_read_extensions`,
 * QEMU-SEMANTICS.md §7.2, HOSTILE-IMAGES.md §1 and §6b): backing format, feature-name table,
 * external data file name, bitmaps (valid and every invalid case), crypto header rules,
 * oversized extensions, unknown extensions, the end marker, and the message naming unknown
 * incompatible features.
 */
import { describe, expect, it } from 'vitest';
import { CorruptImageError } from '../../../src/errors.js';
import { decodeExtensions, unknownIncompatibleFeatures } from '../../../src/formats/qcow2/extensions.js';
import { decodeHeader, type Qcow2Header } from '../../../src/formats/qcow2/header.js';
import {
  EXT,
  ascii,
  be64,
  bitmapsExtData,
  cat,
  encodeExtensions,
  encodeHeader,
  featureEntry,
  type Extension,
  type HeaderFields,
} from '../../helpers/qcow2-builder.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

/** A first cluster: header from `fields`, extension area bytes at header_length. */
function firstCluster(fields: HeaderFields, area: Uint8Array): { head: Uint8Array; header: Qcow2Header } {
  const bytes = encodeHeader(fields);
  const header = decodeHeader(bytes, 'e.qcow2');
  const head = new Uint8Array(2 ** header.clusterBits);
  head.set(bytes.subarray(0, header.version === 2 ? 72 : header.headerLength));
  head.set(area, header.version === 2 ? 72 : header.headerLength);
  return { head, header };
}

const decodeWith = (exts: Extension[], fields: HeaderFields = {}, end = true) => {
  const { head, header } = firstCluster(fields, encodeExtensions(exts, end));
  return decodeExtensions(head, header, 'e.qcow2');
};

const expectCode = (fn: () => unknown, code: string): CorruptImageError => {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(CorruptImageError);
  expect((caught as CorruptImageError).code).toBe(code);
  return caught as CorruptImageError;
};

describe('decodeExtensions', () => {
  it('an empty area (end marker at once) gives nothing', () => {
    expect(decodeWith([])).toEqual({
      backingFormat: null,
      backingFormatExact: true,
      featureNames: [],
      dataFile: null,
      dataFileExact: true,
      bitmaps: null,
      crypto: null,
      unknown: [],
    });
  });

  it('reads the backing format of a v2 image from a qemu-img 7.2 byte literal (area ends at backing_file_offset)', () => {
    // `qemu-img create -f qcow2 -o compat=0.10 -b a.qcow2 -F qcow2`: ext at 72, end marker, name at 0x60.
    const head = hex(`
      514649fb 00000002 00000000 00000060 00000007 00000010 00000000 00100000
      00000000 00000001 00000000 00030000 00000000 00010000 00000001 00000000
      00000000 00000000 e2792aca 00000005 71636f77 32000000 00000000 00000000
      612e7163 6f773200 00000000 00000000`);
    const header = decodeHeader(head, 'v2.qcow2');
    expect(decodeExtensions(head, header, 'v2.qcow2')).toMatchObject({ backingFormat: 'qcow2', unknown: [] });
  });

  it('backing format: up to 15 bytes; stops at a NUL', () => {
    expect(decodeWith([{ magic: EXT.BACKING_FORMAT, data: ascii('raw') }]).backingFormat).toBe('raw');
    expect(decodeWith([{ magic: EXT.BACKING_FORMAT, data: ascii('qcow2\0xx') }]).backingFormat).toBe('qcow2');
    expect(decodeWith([{ magic: EXT.BACKING_FORMAT, data: ascii('a'.repeat(15)) }]).backingFormat).toBe('a'.repeat(15));
  });

  it('backing format of 16 bytes is QCOW2_EXT_BACKING_FORMAT (E3)', () => {
    const e = expectCode(() => decodeWith([{ magic: EXT.BACKING_FORMAT, data: ascii('a'.repeat(16)) }]), 'QCOW2_EXT_BACKING_FORMAT');
    expect(e.details).toMatchObject({ value: 16, offset: 112 });
  });

  it('feature-name table: 48-byte entries, names cut at NUL or at 46 bytes', () => {
    const table = cat(
      featureEntry(0, 0, 'dirty bit'),
      featureEntry(1, 0, 'lazy refcounts'),
      featureEntry(2, 1, 'raw external data'),
      featureEntry(0, 63, 'x'.repeat(46)),
    );
    const r = decodeWith([{ magic: EXT.FEATURE_TABLE, data: table }]);
    expect(r.featureNames).toEqual([
      { type: 0, bit: 0, name: 'dirty bit' },
      { type: 1, bit: 0, name: 'lazy refcounts' },
      { type: 2, bit: 1, name: 'raw external data' },
      { type: 0, bit: 63, name: 'x'.repeat(46) },
    ]);
  });

  it('feature-name table: a partial trailing entry (len 47) is ignored', () => {
    const r = decodeWith([{ magic: EXT.FEATURE_TABLE, data: featureEntry(0, 5, 'five').subarray(0, 47) }]);
    expect(r.featureNames).toEqual([]);
  });

  it('external data file name', () => {
    expect(decodeWith([{ magic: EXT.DATA_FILE, data: ascii('d.data') }]).dataFile).toBe('d.data');
  });

  it('several extensions in one area, with padding to 8 bytes', () => {
    const r = decodeWith([
      { magic: EXT.BACKING_FORMAT, data: ascii('qcow2') },
      { magic: 0x12345678, data: ascii('abc') },
      { magic: EXT.DATA_FILE, data: ascii('data.img') },
    ]);
    expect(r).toMatchObject({ backingFormat: 'qcow2', dataFile: 'data.img', unknown: [0x12345678] });
  });

  it('unknown extensions are listed in order and skipped', () => {
    const r = decodeWith([
      { magic: 0xdeadbeef, data: new Uint8Array(20) },
      { magic: 0x00000001 },
      { magic: 0xffffffff, data: new Uint8Array(8) },
    ]);
    expect(r.unknown).toEqual([0xdeadbeef, 1, 0xffffffff]);
  });

  it('the end marker stops parsing: bytes after it are not read', () => {
    const area = cat(encodeExtensions([], true), encodeExtensions([{ magic: EXT.DATA_FILE, data: ascii('late') }], false));
    const { head, header } = firstCluster({}, area);
    expect(decodeExtensions(head, header, 'e.qcow2').dataFile).toBeNull();
  });

  it('8000 zero-length unknown extensions terminate at the end of the cluster (E7)', () => {
    const exts = Array.from({ length: 8000 }, () => ({ magic: 0x0badcafe }));
    const r = decodeWith(exts, {}, false);
    expect(r.unknown).toHaveLength(8000);
  });

  it('an area filling the cluster exactly, without an end marker, is fine', () => {
    // 112 + 8 * 8178 = 65536
    const r = decodeWith(Array.from({ length: 8178 }, () => ({ magic: 7 })), {}, false);
    expect(r.unknown).toHaveLength(8178);
  });

  it('a v3 image with header_length 120 starts the area at 120', () => {
    const fields = { headerLength: 120 };
    const bytes = encodeHeader(fields);
    const header = decodeHeader(bytes, 'e.qcow2');
    const head = new Uint8Array(65536);
    head.set(bytes.subarray(0, 112));
    head.set(encodeExtensions([{ magic: EXT.DATA_FILE, data: ascii('x') }]), 120);
    expect(decodeExtensions(head, header, 'e.qcow2').dataFile).toBe('x');
  });

  describe('extension too large', () => {
    it.each([0xffffffff, 0x7fffffff, 65536])('len %d runs past the cluster: QCOW2_EXT_TOO_LARGE (E1)', (len) => {
      const e = expectCode(() => decodeWith([{ magic: 0x12345678, len }]), 'QCOW2_EXT_TOO_LARGE');
      expect(e.details).toMatchObject({ value: len, offset: 112 });
    });

    it('an extension crossing backing_file_offset: QCOW2_EXT_TOO_LARGE (E2)', () => {
      expectCode(
        () => decodeWith([{ magic: 0x12345678, data: new Uint8Array(0x40) }], { backingFileOffset: 0x80, backingFileSize: 4 }),
        'QCOW2_EXT_TOO_LARGE',
      );
    });

    it('an extension ending exactly at backing_file_offset is fine', () => {
      const r = decodeWith([{ magic: 0x12345678, data: new Uint8Array(0x08) }], { backingFileOffset: 0x80, backingFileSize: 4 }, false);
      expect(r.unknown).toEqual([0x12345678]);
    });

    it('an extension header (8 bytes) that does not fit before the end: QCOW2_EXT_TOO_LARGE', () => {
      // Area [112, 116): not even room for magic + len.
      expectCode(() => decodeWith([{ magic: 0x12345678 }], { backingFileOffset: 116, backingFileSize: 4 }, false), 'QCOW2_EXT_TOO_LARGE');
    });

    it('a known extension too large is refused before its own checks', () => {
      expectCode(() => decodeWith([{ magic: EXT.BACKING_FORMAT, len: 0xffffffff }]), 'QCOW2_EXT_TOO_LARGE');
    });
  });

  describe('bitmaps extension', () => {
    const on = { autoclearFeatures: 1n };

    it('valid: decoded when autoclear bit 0 is set', () => {
      const r = decodeWith([{ magic: EXT.BITMAPS, data: bitmapsExtData(2, 96, 0x50000) }], on);
      expect(r.bitmaps).toEqual({ nbBitmaps: 2, bitmapDirectorySize: 96, bitmapDirectoryOffset: 0x50000 });
    });

    it('limits are inclusive: 65535 bitmaps, directory of 1024 * 65535 bytes', () => {
      const r = decodeWith([{ magic: EXT.BITMAPS, data: bitmapsExtData(65535, 1024 * 65535, 0x50000) }], on);
      expect(r.bitmaps).toEqual({ nbBitmaps: 65535, bitmapDirectorySize: 67107840, bitmapDirectoryOffset: 0x50000 });
    });

    it('ignored (null) when autoclear bit 0 is clear, even with invalid contents', () => {
      expect(decodeWith([{ magic: EXT.BITMAPS, data: bitmapsExtData(2, 96, 0x50000) }]).bitmaps).toBeNull();
      expect(decodeWith([{ magic: EXT.BITMAPS, data: bitmapsExtData(0, 0x7fffffff, 8, 1) }]).bitmaps).toBeNull();
    });

    it.each([
      ['length 8', { magic: EXT.BITMAPS, data: new Uint8Array(8) }],
      ['length 32', { magic: EXT.BITMAPS, data: new Uint8Array(32) }],
      ['reserved32 not zero', { magic: EXT.BITMAPS, data: bitmapsExtData(1, 96, 0x50000, 1) }],
      ['65536 bitmaps', { magic: EXT.BITMAPS, data: bitmapsExtData(65536, 96, 0x50000) }],
      ['zero bitmaps', { magic: EXT.BITMAPS, data: bitmapsExtData(0, 96, 0x50000) }],
      ['unaligned directory offset', { magic: EXT.BITMAPS, data: bitmapsExtData(1, 96, 0x50008) }],
      ['directory offset beyond 2^53', { magic: EXT.BITMAPS, data: bitmapsExtData(1, 96, 0xffffffffffff0000n) }],
      ['directory size 0x7fffffff', { magic: EXT.BITMAPS, data: bitmapsExtData(1, 0x7fffffff, 0x50000) }],
      ['directory size 1024 * 65535 + 1', { magic: EXT.BITMAPS, data: bitmapsExtData(1, 1024 * 65535 + 1, 0x50000) }],
    ])('%s is QCOW2_EXT_BITMAPS (E5)', (_name, ext) => {
      expectCode(() => decodeWith([ext], on), 'QCOW2_EXT_BITMAPS');
    });

    // QEMU 7.2 qcow2_read_extensions checks `ext.len != sizeof(bitmaps_ext)` ("bitmaps_ext:
    // Invalid extension length") BEFORE testing the autoclear bit; only a well-sized
    // extension is ignored with a warning. qemu-img 7.2.22 refuses such an image:
    // "Could not open 'd.qcow2': bitmaps_ext: Invalid extension length".
    it('a wrong length is refused even when autoclear bit 0 is clear (QEMU checks the length first)', () => {
      expectCode(() => decodeWith([{ magic: EXT.BITMAPS, data: new Uint8Array(8) }]), 'QCOW2_EXT_BITMAPS');
    });
  });

  describe('crypto header extension', () => {
    const luks = { cryptMethod: 2 };
    const payload = (off: bigint | number, len: bigint | number) => cat(be64(off), be64(len));

    it('with LUKS: offset and length decoded', () => {
      const r = decodeWith([{ magic: EXT.CRYPTO, data: payload(0x20000, 0x7000) }], luks);
      expect(r.crypto).toEqual({ offset: 0x20000, length: 0x7000 });
    });

    it.each([
      ['no encryption', 0],
      ['aes', 1],
    ])('with crypt_method %s it is QCOW2_EXT_CRYPTO (E6)', (_n, cryptMethod) => {
      expectCode(() => decodeWith([{ magic: EXT.CRYPTO, data: payload(0x20000, 0x7000) }], { cryptMethod }), 'QCOW2_EXT_CRYPTO');
    });

    it.each([8, 24])('length %d (not 16) is QCOW2_EXT_CRYPTO', (n) => {
      expectCode(() => decodeWith([{ magic: EXT.CRYPTO, data: new Uint8Array(n) }], luks), 'QCOW2_EXT_CRYPTO');
    });

    it('an offset that is not cluster-aligned is QCOW2_EXT_CRYPTO', () => {
      expectCode(() => decodeWith([{ magic: EXT.CRYPTO, data: payload(0x20200, 0x7000) }], luks), 'QCOW2_EXT_CRYPTO');
    });
  });
});

describe('unknownIncompatibleFeatures', () => {
  it('without names: QEMU\'s "Unknown incompatible feature: <hex mask>"', () => {
    expect(unknownIncompatibleFeatures(0x20n, [])).toBe('Unknown incompatible feature: 20');
    expect(unknownIncompatibleFeatures(1n << 63n, [])).toBe('Unknown incompatible feature: 8000000000000000');
  });

  it('named bits use the image\'s incompatible (type 0) names; others stay in the mask', () => {
    const names = [
      { type: 0, bit: 5, name: 'future feature' },
      { type: 1, bit: 6, name: 'compatible six' },
    ];
    expect(unknownIncompatibleFeatures(0x20n, names)).toBe('future feature');
    expect(unknownIncompatibleFeatures(0x60n, names)).toBe('future feature, Unknown incompatible feature: 40');
  });
});
