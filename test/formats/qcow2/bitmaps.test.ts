/**
 * Bitmap directory decoding from hand-made bytes: valid directories, each of QEMU's
 * `check_dir_entry` constraints, count mismatches, broken directories, bitmap tables, and
 * the open-time checks of `loadBitmaps` (duplicate names, table entries, table size).
 */
import { describe, expect, it } from 'vitest';
import { CorruptImageError, ShortReadError, UnsupportedImageError, type VdiskError } from '../../../src/errors.js';
import {
  checkBitmapTable,
  decodeBitmapDirectory,
  expectedBitmapTableSize,
  loadBitmaps,
  readBitmapDirectory,
  type BitmapContext,
  type BitmapDirectoryEntry,
} from '../../../src/formats/qcow2/bitmaps.js';
import { newCounters, type RandomAccessFile } from '../../../src/io/random-access-file.js';

const CS = 65536;
const ctx: BitmapContext = { file: 'test.qcow2', clusterSize: CS, virtualSize: 1 << 20 };

interface Spec {
  tableOffset?: bigint;
  tableSize?: number;
  flags?: number;
  type?: number;
  granularityBits?: number;
  name?: string;
  nameSize?: number;
  extraDataSize?: number;
  extra?: number;
}

/** Serialises directory entries (each padded to 8 bytes). */
function dir(...specs: Spec[]): Uint8Array {
  const out: number[] = [];
  for (const s of specs) {
    const name = new TextEncoder().encode(s.name ?? 'bm');
    const h = new Uint8Array(24);
    const dv = new DataView(h.buffer);
    dv.setBigUint64(0, s.tableOffset ?? 0x40000n);
    dv.setUint32(8, s.tableSize ?? 1);
    dv.setUint32(12, s.flags ?? 2);
    dv.setUint8(16, s.type ?? 1);
    dv.setUint8(17, s.granularityBits ?? 16);
    dv.setUint16(18, s.nameSize ?? name.length);
    dv.setUint32(20, s.extraDataSize ?? 0);
    out.push(...h, ...new Uint8Array(s.extra ?? 0), ...name);
    while (out.length % 8 !== 0) out.push(0);
  }
  return Uint8Array.from(out);
}

function fails(f: () => unknown): VdiskError {
  try {
    f();
  } catch (e) {
    return e as VdiskError;
  }
  throw new Error('expected an error');
}

function memoryFile(bytes: Uint8Array): RandomAccessFile & { maxRead: number } {
  const f = {
    path: 'test.qcow2',
    size: bytes.length,
    counters: newCounters(),
    maxRead: 0,
    async read(buffer: Uint8Array, position: number, length = buffer.length, bufferOffset = 0): Promise<void> {
      if (position + length > bytes.length) throw new ShortReadError('IO_SHORT_READ', 'short read', {});
      f.maxRead = Math.max(f.maxRead, length);
      buffer.set(bytes.subarray(position, position + length), bufferOffset);
    },
    probeAllocation: () => ({ kind: 'unknown' as const }),
    identity: () => ({ dev: 0n, ino: 0n, allocatedBytes: 0 }),
    close: async () => undefined,
  };
  return f;
}

describe('decodeBitmapDirectory: valid directories', () => {
  it('decodes names, flags, granularity and tables; entries are 8-byte padded', () => {
    const d = dir({ name: 'b0', flags: 2 }, { name: 'bitmap two', flags: 0, granularityBits: 9, tableSize: 1 }, { name: 'iu', flags: 3, granularityBits: 31 });
    const e = decodeBitmapDirectory(d, 3, ctx);
    expect(e.map((x) => [x.name, x.inUse, x.auto, x.granularity])).toEqual([
      ['b0', false, true, 65536],
      ['bitmap two', false, false, 512],
      ['iu', true, true, 2147483648],
    ]);
    expect(e[0]).toMatchObject({ index: 0, bitmapTableOffset: 0x40000, bitmapTableSize: 1, type: 1, granularityBits: 16 });
  });

  it('accepts a 1023-byte name and non-ASCII names', () => {
    const long = 'n'.repeat(1023);
    const e = decodeBitmapDirectory(dir({ name: long }, { name: 'bé😀' }), 2, ctx);
    expect(e.map((x) => x.name)).toEqual([long, 'bé😀']);
  });

  it('lets an in-use bitmap be too small for the disk (QEMU allows stale in-use bitmaps)', () => {
    const big = { ...ctx, virtualSize: 2 ** 40 };
    expect(decodeBitmapDirectory(dir({ flags: 1, granularityBits: 9 }), 1, big)).toHaveLength(1);
    expect(fails(() => decodeBitmapDirectory(dir({ flags: 0, granularityBits: 9 }), 1, big)).message).toMatch(/doesn't satisfy the constraints/);
  });
});

describe('decodeBitmapDirectory: constraint violations (check_dir_entry)', () => {
  const cases: Array<[string, Spec, string]> = [
    ['table size 0', { tableSize: 0 }, 'bitmap_table_size'],
    ['table offset 0', { tableOffset: 0n }, 'bitmap_table_offset'],
    ['unaligned table offset', { tableOffset: 0x40200n }, 'bitmap_table_offset'],
    ['table size above 0x8000000', { tableSize: 0x8000001 }, 'bitmap_table_size'],
    ['granularity bits 8', { granularityBits: 8 }, 'granularity_bits'],
    ['granularity bits 32', { granularityBits: 32 }, 'granularity_bits'],
    ['reserved flag bit 2 (QEMU 7.2 refuses extra_data_compatible)', { flags: 4 }, 'flags'],
    ['reserved flag bit 31', { flags: 0x80000002 }, 'flags'],
    ['name size 1024', { name: 'n'.repeat(1024) }, 'name_size'],
    ['empty name', { name: '' }, 'name_size'],
    ['type 2', { type: 2 }, 'type'],
    ['bitmap above 512 MiB of clusters', { tableSize: 8193 }, 'bitmap_table_size'],
  ];
  for (const [what, spec, field] of cases) {
    it(`refuses ${what}`, () => {
      const e = fails(() => decodeBitmapDirectory(dir(spec), 1, ctx));
      expect(e).toBeInstanceOf(CorruptImageError);
      expect(e.code).toBe('QCOW2_BITMAP_DIRECTORY');
      expect(e.details.field).toBe(field);
      expect(e.details.limit).toBeDefined();
    });
  }

  it('refuses extra data as unsupported', () => {
    const e = fails(() => decodeBitmapDirectory(dir({ extraDataSize: 8, extra: 8 }), 1, ctx));
    expect(e).toBeInstanceOf(UnsupportedImageError);
    expect(e.details).toMatchObject({ field: 'extra_data_size', value: 8, limit: 0 });
  });
});

describe('decodeBitmapDirectory: directory shape', () => {
  it('refuses more entries than nb_bitmaps, and fewer', () => {
    expect(fails(() => decodeBitmapDirectory(dir({ name: 'a' }, { name: 'b' }), 1, ctx)).message).toMatch(/more bitmaps found/);
    expect(fails(() => decodeBitmapDirectory(dir({ name: 'a' }), 2, ctx)).message).toMatch(/less bitmaps found/);
  });

  it('refuses an empty directory, a cut-off entry and an entry overrunning the directory', () => {
    expect(fails(() => decodeBitmapDirectory(new Uint8Array(0), 1, ctx)).message).toMatch(/size is zero/);
    expect(fails(() => decodeBitmapDirectory(new Uint8Array(16), 1, ctx)).message).toMatch(/broken bitmap directory/);
    const d = dir({ name: 'abcdefghijkl' });
    expect(fails(() => decodeBitmapDirectory(d.subarray(0, d.length - 8), 1, ctx)).message).toMatch(/broken bitmap directory/);
  });

  it('refuses a name_size pointing far past the directory without reading it', () => {
    const e = fails(() => decodeBitmapDirectory(dir({ name: 'a', nameSize: 65535 }), 1, ctx));
    expect(e.message).toMatch(/broken bitmap directory/);
  });

  it('refuses a directory running past the end of the file', async () => {
    const file = memoryFile(new Uint8Array(4096));
    const e: unknown = await readBitmapDirectory(file, { nbBitmaps: 1, bitmapDirectorySize: 4096, bitmapDirectoryOffset: 65536 }, ctx).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CorruptImageError);
    expect((e as CorruptImageError).message).toMatch(/past the end of the file/);
  });

  it('refuses a directory larger than 1024 * 65535 bytes before allocating it', async () => {
    const file = memoryFile(new Uint8Array(64));
    const e: unknown = await readBitmapDirectory(file, { nbBitmaps: 1, bitmapDirectorySize: 1024 * 65535 + 8, bitmapDirectoryOffset: 0 }, ctx).catch((x: unknown) => x);
    expect((e as CorruptImageError).details.field).toBe('bitmap_directory_size');
  });
});

describe('bitmap tables (load_bitmap)', () => {
  it('computes the table size QEMU expects', () => {
    expect(expectedBitmapTableSize(1 << 20, 16, CS)).toBe(1);
    expect(expectedBitmapTableSize(2 ** 40, 9, 512)).toBe(524288);
    expect(expectedBitmapTableSize(512 * 1024 * 8 * 64 + 1, 9, 65536)).toBe(2);
    expect(expectedBitmapTableSize(0, 16, CS)).toBe(0);
  });

  function image(entries: bigint[], tableSize = entries.length): { file: RandomAccessFile & { maxRead: number }; entry: BitmapDirectoryEntry } {
    const bytes = new Uint8Array(0x50000);
    const dv = new DataView(bytes.buffer);
    entries.forEach((e, i) => dv.setBigUint64(0x40000 + 8 * i, e));
    const entry = decodeBitmapDirectory(dir({ tableSize, flags: 2 }), 1, ctx)[0] as BitmapDirectoryEntry;
    return { file: memoryFile(bytes), entry };
  }

  it('accepts zero, all-ones and aligned data entries', async () => {
    for (const e of [0n, 1n, 0x30000n]) {
      const { file, entry } = image([e]);
      await expect(checkBitmapTable(file, entry, ctx)).resolves.toBeUndefined();
    }
  });

  it('refuses reserved bits, bit 0 with an offset, and unaligned offsets', async () => {
    for (const bad of [2n, 1n << 63n, 0x30001n, 0x30200n]) {
      const { file, entry } = image([bad]);
      const e: unknown = await checkBitmapTable(file, entry, ctx).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(CorruptImageError);
      expect((e as CorruptImageError).code).toBe('QCOW2_BITMAP_TABLE');
    }
  });

  it('refuses a table of the wrong size unless the bitmap is in use', async () => {
    const { file, entry } = image([0n, 0n]);
    const e: unknown = await checkBitmapTable(file, entry, ctx).catch((x: unknown) => x);
    expect((e as CorruptImageError).details).toMatchObject({ field: 'bitmap_table_size', value: 2, limit: 1 });
    await expect(checkBitmapTable(file, { ...entry, inUse: true }, ctx)).resolves.toBeUndefined();
  });

  it('refuses a table past the end of the file, and reads big tables in 64 KiB chunks', async () => {
    const { file, entry } = image([0n], 1);
    const far = { ...entry, bitmapTableOffset: 0x100000 };
    await expect(checkBitmapTable(file, far, ctx)).rejects.toThrow(/past the end of the file/);
    const bigCtx = { ...ctx, clusterSize: 512, virtualSize: 2 ** 40 };
    const bytes = new Uint8Array(0x40000 + 524288 * 8);
    const big = memoryFile(bytes);
    const e = decodeBitmapDirectory(dir({ tableSize: 524288, granularityBits: 9 }), 1, bigCtx)[0] as BitmapDirectoryEntry;
    await checkBitmapTable(big, e, bigCtx);
    expect(big.maxRead).toBe(65536);
  });

  it('loadBitmaps refuses duplicate names (QEMU: "Bitmap already exists")', async () => {
    const d = dir({ name: 'same', tableOffset: 0x40000n }, { name: 'same', tableOffset: 0x40000n });
    const bytes = new Uint8Array(0x50000);
    bytes.set(d, 0x10000);
    const e: unknown = await loadBitmaps(memoryFile(bytes), { nbBitmaps: 2, bitmapDirectorySize: d.length, bitmapDirectoryOffset: 0x10000 }, ctx).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CorruptImageError);
    expect((e as CorruptImageError).message).toMatch(/already exists/);
  });

  it('loadBitmaps reports the first repeated name in directory order, after the tables of the bitmaps before it', async () => {
    const load = (specs: Spec[]): Promise<unknown> => {
      const d = dir(...specs);
      const bytes = new Uint8Array(0x50000);
      bytes.set(d, 0x10000);
      return loadBitmaps(memoryFile(bytes), { nbBitmaps: specs.length, bitmapDirectorySize: d.length, bitmapDirectoryOffset: 0x10000 }, ctx).catch((x: unknown) => x);
    };
    // 'b' repeats at index 3, 'a' at index 4: the error names 'b'.
    let e = await load(['a', 'b', 'c', 'b', 'a'].map((name) => ({ name })));
    expect((e as CorruptImageError).message).toMatch(/already exists: 'b'/);
    // A bad table after the first repeat is not reached; one before it is reported instead.
    e = await load([{ name: 'a' }, { name: 'b' }, { name: 'a' }, { name: 'c', tableOffset: 0x100000n }]);
    expect((e as CorruptImageError).message).toMatch(/already exists: 'a'/);
    e = await load([{ name: 'a' }, { name: 'b', tableOffset: 0x100000n }, { name: 'a' }]);
    expect((e as CorruptImageError).message).toMatch(/runs past the end of the file/);
    // Names that differ are fine, however many (a sort, not a hash set, finds repeats).
    e = await load(Array.from({ length: 300 }, (_, i) => ({ name: `bm${i}` })));
    expect(Array.isArray(e)).toBe(true);
  });
});
