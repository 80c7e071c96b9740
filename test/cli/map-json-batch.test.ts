/**
 * The batch JSON printer (src/cli/format/map-json-batch.ts) must print exactly the bytes of
 * the per-entry printer `writeMapEntryJson` (which map-format.test.ts holds to qemu-img's
 * bytes), `,\n` between entries: random entries with numbers of every digit count up to
 * 2^53 - 1, depths with and without templates, every flag combination, with and without
 * offsets, runs of entries repeating length and flags, batches that fill several output
 * chunks, and batches that do not open the list — for batches in JavaScript arrays and for
 * the flat walk kernel's batches, which encode themselves in WebAssembly.
 */
import { describe, expect, it } from 'vitest';
import { rng } from '../helpers/prng.js';
import { asciiSink as sink } from '../helpers/ascii-sink.js';
import { writeMapEntryJson } from '../../src/cli/format/map-format.js';
import { writeMapBatchJson } from '../../src/cli/format/map-json-batch.js';
import { MAP_DATA, MAP_PRESENT, MAP_ZERO, MapBatch } from '../../src/status/map-batch.js';
import type { MapEntry } from '../../src/status/map-entries.js';
import { KernelMapBatch, newKernelMapBatch } from '../../src/status/flat-walk-kernel.js';


/** A number with a random count of digits, 2^53 - 1 at most. */
function anyNumber(r: () => number): number {
  const digits = 1 + Math.floor(r() * 16);
  return Math.min(Number.MAX_SAFE_INTEGER, Math.floor(r() * 10 ** digits));
}

/** The two kinds of batch: JavaScript arrays, and the flat walk kernel's (which encodes itself). */
const KINDS = [
  ['JavaScript batches', (capacity: number): MapBatch => new MapBatch(capacity)],
  ['kernel batches', (capacity: number): MapBatch => {
    const b = newKernelMapBatch(capacity);
    if (b === null) throw new Error('the flat walk kernel (dist/wasm/flat-walk.wasm) is missing: run npm run build');
    return b;
  }],
] as const;

/** Prints `entries` both ways (the batch printer with batches of `capacity`) and compares. */
async function expectSameBytes(entries: readonly MapEntry[], capacity: number, make: (capacity: number) => MapBatch): Promise<void> {
  const want = sink();
  entries.forEach((e, i) => {
    if (i > 0) want.out.text(',\n');
    writeMapEntryJson(want.out, e);
  });

  const got = sink();
  const batch = make(capacity);
  let printed = 0;
  const flush = (): void => {
    writeMapBatchJson(got.out, batch, printed === 0);
    printed += batch.count;
    batch.count = 0;
  };
  for (const e of entries) {
    const k = batch.count++;
    batch.start[k] = e.start;
    batch.length[k] = e.length;
    batch.depth[k] = e.depth;
    batch.attrs[k] = (e.present ? MAP_PRESENT : 0) | (e.zero ? MAP_ZERO : 0) | (e.data ? MAP_DATA : 0);
    batch.offset[k] = e.offset ?? -1;
    if (batch.count === batch.capacity) flush();
  }
  flush();
  expect(await got.text()).toBe(await want.text());
}

describe.each(KINDS)('writeMapBatchJson, %s', (_kind, make) => {
  it('prints the per-entry printer\'s bytes for random entries', async () => {
    const r = rng(12345);
    const entries: MapEntry[] = [];
    for (let i = 0; i < 20000; i++) {
      const a = Math.floor(r() * 8);
      entries.push({
        start: anyNumber(r),
        length: anyNumber(r),
        depth: r() < 0.05 ? 16 + Math.floor(r() * 70000) : Math.floor(r() * 16),
        present: (a & MAP_PRESENT) !== 0,
        zero: (a & MAP_ZERO) !== 0,
        data: (a & MAP_DATA) !== 0,
        offset: r() < 0.5 ? null : anyNumber(r),
        filename: null,
      });
    }
    entries.push({ start: Number.MAX_SAFE_INTEGER, length: 0, depth: 0, present: false, zero: false, data: false, offset: 0, filename: null });

    await expectSameBytes(entries, 3000, make);
  });

  it('prints repeated lengths and flags (copied within the buffer) exactly', async () => {
    const entries: MapEntry[] = [];
    let start = 0;
    for (let i = 0; i < 50000; i++) {
      const length = i % 1000 < 990 ? 65536 : 4096 * (1 + (i % 7));
      entries.push({
        start, length, depth: i % 5000 < 4990 ? 0 : 20 + (i % 3), present: i % 2 === 0, zero: i % 4 < 2, data: i % 3 === 0,
        offset: i % 100 < 50 ? null : 2 ** 40 + i * 65536, filename: null,
      });
      start += length;
    }
    await expectSameBytes(entries, 4096, make);
    await expectSameBytes(entries, 7, make);
  });
});

describe('kernel batches', () => {
  it('are what the kernel makes when it is available', () => {
    expect(newKernelMapBatch(4)).toBeInstanceOf(KernelMapBatch);
  });
});
