/**
 * The flat JSON map walk (src/status/flat-map.ts) against the general walk
 * (src/status/map-entries.ts): on random qcow2 chains made with qemu-img and qemu-io (one to
 * four layers; 4K to 64K clusters, extended L2, metadata preallocation, backing files
 * shorter and longer than their overlays; data, zero, unmapped-zero, discarded and
 * compressed writes), over the whole image and over random ranges, both walks must give
 * the same merged entries; its content runs equal the general walk's, and its sourced runs
 * (the conversion's) point at the chain's bytes. Also checks which chains the flat walk takes.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImage, type Image } from '../../src/index.js';
import { MAP_DATA, MAP_PRESENT, MAP_ZERO, MapBatch } from '../../src/status/map-batch.js';
import { canWalkFlat } from '../../src/status/flat-map.js';
import { KernelMapBatch, kernelWalkCounts, useFlatWalkKernel } from '../../src/status/flat-walk-kernel.js';
import { flatContentRuns, flatSourcedRunBatches } from '../../src/status/flat-content-runs.js';
import { generalContentRuns, type ContentRun } from '../../src/status/data-extents.js';
import { rngInt } from '../helpers/prng.js';
import { makeChain } from '../helpers/random-chain.js';
import { hasTool } from '../helpers/qemu.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

const hasQemu = hasTool('qemu-img') && hasTool('qemu-io');
if (!hasQemu) console.warn('flat-map.test.ts: SKIPPED: qemu-img and/or qemu-io not found: the flat walk was NOT compared on qemu-img chains');

type View = [start: number, length: number, depth: number, present: boolean, zero: boolean, data: boolean, offset: number | null];

async function generalEntries(img: Image, range: { start?: number; length?: number }): Promise<View[]> {
  const out: View[] = [];
  for await (const e of img.mapExtents(range)) out.push([e.start, e.length, e.depth, e.present, e.zero, e.data, e.offset]);
  return out;
}

async function flatEntries(
  img: Image, range: { start?: number; length?: number }, capacity: number, seen: (b: MapBatch) => void = () => undefined,
): Promise<View[]> {
  const out: View[] = [];
  const ok = await img.walkFlatMap(range, new MapBatch(capacity), (b) => {
    seen(b);
    for (let i = 0; i < b.count; i++) {
      const a = b.attrs[i] as number;
      const o = b.offset[i] as number;
      out.push([
        b.start[i] as number, b.length[i] as number, b.depth[i] as number,
        (a & MAP_PRESENT) !== 0, (a & MAP_ZERO) !== 0, (a & MAP_DATA) !== 0, o < 0 ? null : o,
      ]);
    }
    // Asynchronous now and then, as a flushing printer is.
    return b.count % 2 === 0 ? Promise.resolve() : undefined;
  });
  expect(ok).toBe(true);
  return out;
}



describe.skipIf(!hasQemu)('flat JSON map walk', () => {
  let dir = '';
  beforeAll(() => {
    dir = makeTempDir('vdisk-flat-');
  });
  afterAll(() => removeTempDir(dir));

  it.each([
    ['in its WebAssembly kernel (handing over to JavaScript at preallocated layers)', true],
    ['in JavaScript alone', false],
  ])('gives the general walk\'s entries on 60 random chains, whole and in random ranges, %s', async (_how, kernel) => {
    useFlatWalkKernel(kernel);
    let kernelBatches = 0;
    const handovers = kernelWalkCounts.handovers;
    try {
      for (let seed = 1; seed <= 60; seed++) {
        const top = makeChain(dir, seed);
        const img = await openImage(top, { format: 'qcow2' });
        try {
          expect(canWalkFlat(img.top)).toBe(true);
          const r = rngInt(seed * 7919);
          const ranges: Array<{ start?: number; length?: number }> = [{}];
          for (let k = 0; k < 4; k++) ranges.push({ start: r(img.virtualSize + 4096), length: 1 + r(img.virtualSize) });
          ranges.push({ start: img.virtualSize });
          for (const range of ranges) {
            const want = await generalEntries(img, range);
            const got = await flatEntries(img, range, 1 + r(8), (b) => {
              if (b instanceof KernelMapBatch) kernelBatches++;
            });
            expect(got, `seed ${seed} range ${JSON.stringify(range)}`).toEqual(want);
          }
        } finally {
          await img.close();
        }
      }
    } finally {
      useFlatWalkKernel(true);
    }
    if (kernel) {
      expect(kernelBatches).toBeGreaterThan(100);
      expect(kernelWalkCounts.handovers - handovers).toBeGreaterThan(10);
    } else {
      expect(kernelBatches).toBe(0);
    }
  }, 300_000);

  it('gives the general walk\'s content runs (convert\'s zero / data split) on 30 random chains, and stops when the consumer does', async () => {
    const counters = { driverCalls: 0 };
    const collect = async (g: AsyncGenerator<ContentRun>, max = Infinity): Promise<ContentRun[]> => {
      const out: ContentRun[] = [];
      for await (const c of g) {
        out.push({ start: c.start, length: c.length, zero: c.zero });
        if (out.length >= max) break;
      }
      return out;
    };
    for (let seed = 1; seed <= 30; seed++) {
      const top = makeChain(dir, seed);
      const img = await openImage(top, { format: 'qcow2' });
      try {
        const r = rngInt(seed * 104729);
        const ranges: Array<[number, number]> = [[0, img.virtualSize]];
        for (let k = 0; k < 3; k++) {
          const s = r(img.virtualSize);
          ranges.push([s, s + 1 + r(img.virtualSize - s)]);
        }
        for (const [s, e] of ranges) {
          const want = await collect(generalContentRuns(img.top, s, e, counters));
          const got = await collect(flatContentRuns(img.top, s, e, counters));
          expect(got, `seed ${seed} [${s}, ${e})`).toEqual(want);
          expect(await collect(flatContentRuns(img.top, s, e, counters), 1)).toEqual(want.slice(0, 1));
        }
      } finally {
        await img.close();
      }
    }
  }, 300_000);

  it('gives sourced runs with the content runs\' zero / data split, whose files hold the chain\'s bytes at their offsets (30 random chains)', async () => {
    const counters = { driverCalls: 0 };
    let sourced = 0;
    let throughChain = 0;
    for (let seed = 1; seed <= 30; seed++) {
      const top = makeChain(dir, seed);
      const img = await openImage(top, { format: 'qcow2' });
      try {
        const want: ContentRun[] = [];
        for await (const c of flatContentRuns(img.top, 0, img.virtualSize, counters)) want.push({ start: c.start, length: c.length, zero: c.zero });
        const merged: ContentRun[] = [];
        for await (const runs of flatSourcedRunBatches(img.top, 0, img.virtualSize, counters)) {
          for (const run of runs) {
            const last = merged[merged.length - 1];
            if (last !== undefined && last.zero === run.zero && last.start + last.length === run.start) merged[merged.length - 1] = { ...last, length: last.length + run.length };
            else merged.push({ start: run.start, length: run.length, zero: run.zero });
            if (run.zero) {
              expect(run.file, `seed ${seed} at ${run.start}`).toBeNull();
              continue;
            }
            const guest = new Uint8Array(run.length);
            await img.read(run.start, run.length, guest);
            if (run.file === null) {
              throughChain++;
              continue;
            }
            sourced++;
            const host = new Uint8Array(run.length);
            await run.file.read(host, run.hostOffset, run.length, 0);
            expect(Buffer.from(host).equals(Buffer.from(guest)), `seed ${seed} run at ${run.start}`).toBe(true);
          }
        }
        expect(merged, `seed ${seed}`).toEqual(want);
      } finally {
        await img.close();
      }
    }
    // Both kinds occur: stored data, and compressed clusters read through the chain.
    expect(sourced).toBeGreaterThan(30);
    expect(throughChain).toBeGreaterThan(0);
  }, 300_000);

  it('is not taken for a raw layer in the chain', async () => {
    const raw = path.join(dir, 'b.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
    const top = path.join(dir, 'over-raw.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'b.raw', '-F', 'raw', top, '1M'], { cwd: dir });
    const img = await openImage(top, { format: 'qcow2' });
    try {
      expect(canWalkFlat(img.top)).toBe(false);
      expect(await img.walkFlatMap({}, new MapBatch(), () => undefined)).toBe(false);
    } finally {
      await img.close();
    }
  });
});
