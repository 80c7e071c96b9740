/**
 * The library API over a committed 3-layer chain (images/chain-*.qcow2: base 1 MiB with
 * data at 0 and 512 KiB, mid 1 MiB with data at 64 KiB, top 2 MiB with a zero cluster at
 * 512 KiB and data at 1.5 MiB — QEMU-SEMANTICS §8 E3).
 */
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, openImage, type Image } from '../src/index.js';

const images = fileURLToPath(new URL('../images', import.meta.url));
const KiB = 1024;
const MiB = 1024 * KiB;

async function withTop<T>(f: (img: Image) => Promise<T>): Promise<T> {
  const img = await openImage(path.join(images, 'chain-top.qcow2'));
  try {
    return await f(img);
  } finally {
    await img.close();
  }
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('Image over a backing chain', () => {
  it('opens every layer, top first, with QEMU-style names', async () => {
    await withTop(async (img) => {
      expect(img.layers.map((l) => path.basename(l.filename))).toEqual(['chain-top.qcow2', 'chain-mid.qcow2', 'chain-base.qcow2']);
      expect(img.virtualSize).toBe(2 * MiB);
    });
  });

  it('isAllocated looks at the top layer only', async () => {
    await withTop(async (img) => {
      expect((await img.isAllocated(0, 64 * KiB)).allocated).toBe(false);
      expect((await img.isAllocated(512 * KiB, 64 * KiB)).allocated).toBe(true);
    });
  });

  it('isAllocatedAbove returns QEMU depths (1 = top, 0 = nowhere)', async () => {
    await withTop(async (img) => {
      expect((await img.isAllocatedAbove(null, false, 0, 64 * KiB)).depth).toBe(3);
      expect((await img.isAllocatedAbove(null, false, 64 * KiB, 64 * KiB)).depth).toBe(2);
      expect((await img.isAllocatedAbove(null, false, 128 * KiB, 64 * KiB)).depth).toBe(0);
      // Above mid (index 1): only the top counts.
      expect((await img.isAllocatedAbove(1, false, 0, 64 * KiB)).depth).toBe(0);
      expect((await img.isAllocatedAbove(1, false, 512 * KiB, 64 * KiB)).depth).toBe(1);
      // Down to mid, included.
      expect((await img.isAllocatedAbove(1, true, 64 * KiB, 64 * KiB)).depth).toBe(2);
      // Beyond the end of the shorter mid layer: allocated zeroes at mid.
      expect(await img.isAllocatedAbove(null, false, MiB, 64 * KiB)).toEqual({ depth: 2, length: 64 * KiB });
      await expect(img.isAllocatedAbove(null, true, 0, 1)).rejects.toBeInstanceOf(InvalidArgumentError);
    });
  });

  it('mapping and allocation differ only past the end of the shorter backing file', async () => {
    await withTop(async (img) => {
      const top = await img.blockStatus(MiB, 64 * KiB);
      expect(top).toMatchObject({ zero: true, allocated: false, depth: 0, length: 64 * KiB });
      const alloc = await img.blockStatusAbove(null, MiB, 64 * KiB, 'allocation');
      expect(alloc).toMatchObject({ zero: true, allocated: true, depth: 1 });

      const mapping = await collect(img.mapExtents());
      const allocation = await collect(img.allocationExtents());
      const presentAt = (list: { start: number; length: number; present: boolean }[], o: number): boolean | undefined =>
        list.find((e) => o >= e.start && o < e.start + e.length)?.present;
      for (let o = 0; o < img.virtualSize; o += 64 * KiB) {
        // §3 of the semantics brief: past mid's end (1 MiB) the two notions differ.
        if (o >= MiB && o !== 1.5 * MiB) continue;
        expect(presentAt(allocation, o), `offset ${o}`).toBe(presentAt(mapping, o));
      }
      expect(allocation.map((e) => [e.start, e.depth, e.present])).toEqual([
        [0, 2, true],
        [64 * KiB, 1, true],
        [128 * KiB, 2, false],
        [512 * KiB, 0, true],
        [576 * KiB, 2, false],
        [MiB, 1, true],
        [1.5 * MiB, 0, true],
        [1.5 * MiB + 64 * KiB, 1, true],
      ]);
    });
  });

  it('counts the work done and closes idempotently', async () => {
    const img = await openImage(path.join(images, 'chain-top.qcow2'));
    await collect(img.allocationExtents());
    const c = img.counters();
    expect(c.driverCalls).toBeGreaterThan(0);
    expect(c.metadataBytesRead).toBeGreaterThan(0);
    expect(c.holeProbes).toBe(0);
    await img[Symbol.asyncDispose]();
    await img.close();
  });

  it('rejects invalid ranges with typed errors', async () => {
    await withTop(async (img) => {
      await expect(img.blockStatus(-1, 10)).rejects.toMatchObject({ code: 'ARG_RANGE' });
      await expect(img.blockStatusAbove(7, 0, 10)).rejects.toMatchObject({ code: 'ARG_BASE_LAYER' });
      await expect(collect(img.allocationExtents({ start: 1.5 }))).rejects.toBeInstanceOf(InvalidArgumentError);
    });
  });
});
