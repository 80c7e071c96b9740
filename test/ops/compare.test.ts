/**
 * The compare operation's own parts (src/ops/compare.ts), without qemu (guest-data.test.ts
 * holds whole comparisons to `qemu-img compare`): `compareBuffers` against a sector-by-sector
 * reference, which image a read failure is charged to when both images are read at once,
 * and the batching of data steps' reads: one read for many steps, yet the same answer as
 * qemu-img's step-by-step comparison when a later step's read or status query fails.
 */
import { describe, expect, it } from 'vitest';
import { BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_DATA } from '../../src/formats/driver.js';
import type { Image } from '../../src/image.js';
import { CompareStepError, compareBuffers, compareImages } from '../../src/ops/compare.js';
import { rng } from '../helpers/prng.js';

/** qemu-img's `compare_buffers`, sector by sector. */
function reference(b1: Uint8Array, b2: Uint8Array, bytes: number): { differs: boolean; same: number } {
  const sectorDiffers = (i: number, len: number): boolean => {
    for (let k = i; k < i + len; k++) if (b1[k] !== b2[k]) return true;
    return false;
  };
  let i = Math.min(bytes, 512);
  const differs = sectorDiffers(0, i);
  while (i < bytes) {
    const len = Math.min(bytes - i, 512);
    if (sectorDiffers(i, len) !== differs) break;
    i += len;
  }
  return { differs, same: i };
}

describe('compareBuffers', () => {
  it('equals the sector-by-sector reference, differences anywhere or nowhere', () => {
    const rand = rng(77);
    for (let t = 0; t < 400; t++) {
      const bytes = 1 + Math.floor(rand() * 20_000);
      const b1 = new Uint8Array(bytes + 64).map(() => Math.floor(rand() * 256));
      const b2 = b1.slice();
      // Past `bytes` the buffers may differ: it must not count.
      b2[bytes + 3] = (b2[bytes + 3] ?? 0) ^ 1;
      const changes = [0, 1, 2, 5][Math.floor(rand() * 4)] as number;
      for (let c = 0; c < changes; c++) {
        const at = [0, 511, 512, bytes - 1, Math.floor(rand() * bytes)][Math.floor(rand() * 5)] as number;
        b2[at] = (b2[at] ?? 0) ^ 0x40;
      }
      // Every sector differing from some point on: `same` ends at a sector boundary.
      if (rand() < 0.2) for (let k = Math.floor(rand() * bytes); k < bytes; k += 512) b2[k] = (b2[k] ?? 0) ^ 2;
      expect(compareBuffers(b1, b2, bytes)).toEqual(reference(b1, b2, bytes));
    }
  });
});

describe('compareImages read failures', () => {
  /** An image of 4 MiB, all data, whose reads fail when `fails`. */
  function fake(fails: boolean): Image {
    return {
      virtualSize: 4 << 20,
      blockStatusAbove: async (_base: unknown, offset: number, length: number) => ({ flags: BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_DATA, length, offset }),
      read: async (_offset: number, length: number, into: Uint8Array) => {
        await new Promise((r) => setTimeout(r, fails ? 1 : 5));
        if (fails) throw new Error('read failed');
        into.fill(0, 0, length);
        return into;
      },
    } as unknown as Image;
  }

  it('charges the failure to image 1 when both fail, else to the one that failed (qemu-img reads image 1 first)', async () => {
    for (const [f1, f2, which] of [[true, true, 1], [false, true, 2], [true, false, 1]] as const) {
      const err = await compareImages(fake(f1), fake(f2), false).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CompareStepError);
      expect(err).toMatchObject({ step: 'read', image: which });
    }
    await expect(compareImages(fake(false), fake(false), false)).resolves.toMatchObject({ identical: true });
  });
});

describe('compareImages batches the reads of data steps', () => {
  const MiB = 1 << 20;
  const STEP = 65536;
  /**
   * An 8 MiB image, all data, in block-status steps of 64 KiB (as compressed clusters are):
   * sector `k` holds byte `k * 7 mod 256`, except sector `diffAt / 512` (when set). Reads
   * covering `readFailsAt`, and status queries at `statusFailsAt`, fail.
   */
  function image(o: { diffAt?: number; readFailsAt?: number; statusFailsAt?: number }, reads: number[]): Image {
    return {
      virtualSize: 8 * MiB,
      blockStatusAbove: async (_base: unknown, offset: number) => {
        if (offset === o.statusFailsAt) throw new Error('status failed');
        return { flags: BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_DATA, length: STEP - (offset % STEP), offset };
      },
      read: async (offset: number, length: number, into: Uint8Array) => {
        reads.push(length);
        if (o.readFailsAt !== undefined && o.readFailsAt >= offset && o.readFailsAt < offset + length) throw new Error('read failed');
        for (let i = 0; i < length; i += 512) into.fill((((offset + i) / 512) * 7) & 0xff, i, i + 512);
        if (o.diffAt !== undefined && o.diffAt >= offset && o.diffAt < offset + length) into[o.diffAt - offset] = (into[o.diffAt - offset] ?? 0) ^ 1;
        return into;
      },
    } as unknown as Image;
  }

  it('reads many steps at once, and finds the first differing sector in them', async () => {
    const r1: number[] = [];
    const r2: number[] = [];
    await expect(compareImages(image({}, r1), image({}, r2), false)).resolves.toMatchObject({ identical: true });
    // 128 steps of 64 KiB, read as far fewer, larger reads.
    expect(r1.length).toBeLessThanOrEqual(2);
    expect(r2.length).toBe(r1.length);
    const r = await compareImages(image({}, []), image({ diffAt: 5 * MiB + 700 }, []), false);
    expect(r).toMatchObject({ identical: false, message: `Content mismatch at offset ${5 * MiB + 512}!` });
  });

  it('reports a difference in an earlier step before a later step\'s failed read or status query, as qemu-img', async () => {
    const diff = { diffAt: 100 * 1024 + 3 };
    const at = `Content mismatch at offset ${100 * 1024}!`;
    await expect(compareImages(image({}, []), image({ ...diff, readFailsAt: 3 * MiB }, []), false)).resolves.toMatchObject({ message: at });
    await expect(compareImages(image({}, []), image({ ...diff, statusFailsAt: 1 * MiB }, []), false)).resolves.toMatchObject({ message: at });
    // Without a difference before them, the failures are reported, charged to the right image and step.
    await expect(compareImages(image({}, []), image({ readFailsAt: 3 * MiB }, []), false)).rejects.toMatchObject({ step: 'read', image: 2 });
    await expect(compareImages(image({ readFailsAt: 3 * MiB }, []), image({ readFailsAt: 3 * MiB }, []), false)).rejects.toMatchObject({ step: 'read', image: 1 });
    await expect(compareImages(image({}, []), image({ statusFailsAt: 1 * MiB }, []), false)).rejects.toMatchObject({ step: 'status', image: 2 });
  });
});
