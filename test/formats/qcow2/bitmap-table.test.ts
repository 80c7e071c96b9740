/**
 * Unit tests of bitmap table decoding and dirty-run iteration (src/formats/qcow2/bitmap-table.ts)
 * over hand-built bitmap tables in memory.
 */
import { describe, expect, it } from 'vitest';
import { bitmapDirtyRuns, decodeBitmapTableEntry, type DirtyRun } from '../../../src/formats/qcow2/bitmap-table.js';
import type { BitmapDirectoryEntry } from '../../../src/formats/qcow2/bitmaps.js';
import { MemoryFile } from '../../helpers/memory-file.js';

const CS = 512;
const G_BITS = 9; // 512 bytes per bit: one 512-byte cluster of bits covers 4096 × 512 = 2 MiB
const SIZE = 6 * 1024 * 1024; // three table entries

function entry(over: Partial<BitmapDirectoryEntry> = {}): BitmapDirectoryEntry {
  return {
    index: 0, bitmapTableOffset: 1024, bitmapTableSize: 3, flags: 0, inUse: false, auto: true, type: 1,
    granularityBits: G_BITS, granularity: 2 ** G_BITS, nameBytes: new TextEncoder().encode('b0'), name: 'b0', ...over,
  };
}

/** Table at 1024: [data cluster at 2048, all ones, all zeroes]; data bits 0-7 and 100 set. */
function image(table: bigint[] = [2048n, 1n, 0n]): MemoryFile {
  const bytes = new Uint8Array(4096);
  const dv = new DataView(bytes.buffer);
  table.forEach((e, i) => dv.setBigUint64(1024 + i * 8, e));
  bytes[2048] = 0xff; // bits 0..7
  bytes[2048 + 12] = 0x10; // bit 100
  return new MemoryFile(bytes, { path: 'bm.qcow2' });
}

const ctx = { file: 'bm.qcow2', clusterSize: CS, virtualSize: SIZE };

async function collect(g: AsyncGenerator<DirtyRun>): Promise<DirtyRun[]> {
  const out: DirtyRun[] = [];
  for await (const r of g) out.push(r);
  return out;
}

describe('decodeBitmapTableEntry', () => {
  it('decodes zeroes, ones and data clusters', () => {
    expect(decodeBitmapTableEntry(0n, CS)).toEqual({ kind: 'zeroes' });
    expect(decodeBitmapTableEntry(1n, CS)).toEqual({ kind: 'ones' });
    expect(decodeBitmapTableEntry(0x10000n, CS)).toEqual({ kind: 'data', offset: 0x10000 });
  });
  it('refuses reserved bits, unaligned offsets and the all-ones flag beside an offset', () => {
    expect(decodeBitmapTableEntry(2n, CS)).toBeNull();
    expect(decodeBitmapTableEntry(1n << 56n, CS)).toBeNull();
    expect(decodeBitmapTableEntry(0x10001n, CS)).toBeNull();
    expect(decodeBitmapTableEntry(0x10000n, 0x20000)).toBeNull();
  });
});

describe('bitmapDirtyRuns', () => {
  it('merges bits into runs covering the whole disk', async () => {
    const runs = await collect(bitmapDirtyRuns(image(), entry(), ctx, 0, SIZE));
    expect(runs).toEqual([
      { start: 0, length: 8 * 512, dirty: true },
      { start: 4096, length: 92 * 512, dirty: false },
      { start: 100 * 512, length: 512, dirty: true },
      { start: 101 * 512, length: 2 * 1024 * 1024 - 101 * 512, dirty: false },
      { start: 2 * 1024 * 1024, length: 2 * 1024 * 1024, dirty: true },
      { start: 4 * 1024 * 1024, length: 2 * 1024 * 1024, dirty: false },
    ]);
    expect(runs.reduce((n, r) => n + r.length, 0)).toBe(SIZE);
  });

  it('clips to an unaligned range', async () => {
    const runs = await collect(bitmapDirtyRuns(image(), entry(), ctx, 1000, 4096 + 10));
    expect(runs).toEqual([
      { start: 1000, length: 4096 - 1000, dirty: true },
      { start: 4096, length: 10, dirty: false },
    ]);
  });

  it('clips the last bit to the disk size', async () => {
    const small = { ...ctx, virtualSize: 4 * 1024 * 1024 + 100 };
    const runs = await collect(bitmapDirtyRuns(image(), entry(), small, 4 * 1024 * 1024 - 512, small.virtualSize));
    expect(runs).toEqual([
      { start: 4 * 1024 * 1024 - 512, length: 512, dirty: true },
      { start: 4 * 1024 * 1024, length: 100, dirty: false },
    ]);
  });

  it('refuses in-use bitmaps as inconsistent', async () => {
    await expect(collect(bitmapDirtyRuns(image(), entry({ inUse: true, flags: 1 }), ctx, 0, SIZE))).rejects.toMatchObject({
      code: 'QCOW2_BITMAP_INCONSISTENT',
    });
  });

  it('refuses invalid table entries and tables of the wrong size', async () => {
    await expect(collect(bitmapDirtyRuns(image([2049n, 1n, 0n]), entry(), ctx, 0, SIZE))).rejects.toMatchObject({
      code: 'QCOW2_BITMAP_TABLE',
    });
    await expect(collect(bitmapDirtyRuns(image(), entry({ bitmapTableSize: 2 }), ctx, 0, SIZE))).rejects.toMatchObject({
      code: 'QCOW2_BITMAP_TABLE',
    });
  });

  it('refuses data clusters past the end of the file', async () => {
    await expect(collect(bitmapDirtyRuns(image([0x100000n, 1n, 0n]), entry(), ctx, 0, SIZE))).rejects.toMatchObject({
      code: 'QCOW2_BITMAP_DATA_BEYOND_EOF',
    });
  });
});
