/**
 * The human table's batch printer (src/cli/format/map-human-batch.ts) must print exactly
 * the rows of the per-entry printer `mapEntryHuman` (which map-format.test.ts holds to
 * qemu-img's bytes) and stop at the same entry — a data entry without an offset — for
 * batches in JavaScript arrays and for the flat walk kernel's batches, which encode their
 * rows in WebAssembly: random entries with numbers of every digit count up to 2^53 - 1,
 * every flag combination, names of every length (UTF-8 too), names too long for the
 * kernel's room (the JavaScript rows then), and batches that take several kernel calls.
 */
import { describe, expect, it } from 'vitest';
import { rng } from '../helpers/prng.js';
import { asciiSink } from '../helpers/ascii-sink.js';
import { mapEntryHuman } from '../../src/cli/format/map-format.js';
import { writeMapBatchHuman, type HumanMapNames } from '../../src/cli/format/map-human-batch.js';
import { MAP_DATA, MAP_PRESENT, MAP_ZERO, MapBatch } from '../../src/status/map-batch.js';
import type { MapEntry } from '../../src/status/map-entries.js';
import { KernelMapBatch, newKernelMapBatch } from '../../src/status/flat-walk-kernel.js';

/** A number with a random count of hex digits, 2^53 - 1 at most. */
function anyNumber(r: () => number): number {
  const bits = Math.floor(r() * 54);
  return Math.min(Number.MAX_SAFE_INTEGER, Math.floor(r() * 2 ** bits));
}

function kernelBatch(capacity: number): KernelMapBatch {
  const b = newKernelMapBatch(capacity);
  if (b === null) throw new Error('the flat walk kernel (dist/wasm/flat-walk.wasm) is missing: run npm run build');
  return b;
}

/** What the batch printer wrote, and where it stopped. */
async function print(batch: MapBatch, names: readonly string[]): Promise<{ text: string; stop: number }> {
  const bytes = names.map((n) => Buffer.from(n + '\n', 'utf8'));
  const byName: HumanMapNames = { of: (d) => bytes[d] as Uint8Array, all: () => bytes };
  const { out, text } = asciiSink();
  const stop = writeMapBatchHuman(out, batch, byName);
  return { text: Buffer.from(await text(), 'latin1').toString('utf8'), stop };
}

/** The per-entry printer's rows up to the first data entry without an offset, and its index. */
function want(entries: readonly MapEntry[]): { text: string; stop: number } {
  let text = '';
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as MapEntry;
    if (e.data && e.offset === null) return { text, stop: i };
    text += mapEntryHuman(e);
  }
  return { text, stop: -1 };
}

/** Fills `batch` with `entries`. */
function fill(batch: MapBatch, entries: readonly MapEntry[]): void {
  entries.forEach((e, k) => {
    batch.start[k] = e.start;
    batch.length[k] = e.length;
    batch.depth[k] = e.depth;
    batch.attrs[k] = (e.present ? MAP_PRESENT : 0) | (e.zero ? MAP_ZERO : 0) | (e.data ? MAP_DATA : 0);
    batch.offset[k] = e.offset ?? -1;
  });
  batch.count = entries.length;
}

/** Random entries over `names` layers; `unmappable`: how likely a data entry lacks an offset. */
function randomEntries(r: () => number, n: number, names: readonly string[], unmappable: number): MapEntry[] {
  return Array.from({ length: n }, () => {
    const depth = Math.floor(r() * names.length);
    const attrs = Math.floor(r() * 8);
    const data = (attrs & MAP_DATA) !== 0;
    const offset = data && r() < unmappable ? null : r() < 0.1 ? 0 : anyNumber(r);
    return {
      start: r() < 0.05 ? 0 : anyNumber(r), length: anyNumber(r), depth,
      present: (attrs & MAP_PRESENT) !== 0, zero: (attrs & MAP_ZERO) !== 0, data,
      offset, filename: offset === null ? null : (names[depth] as string),
    };
  });
}

describe('writeMapBatchHuman', () => {
  it('prints the per-entry printer\'s rows, in JavaScript and in the kernel, for 200 random batches', async () => {
    const r = rng(4242);
    let stops = 0;
    for (let t = 0; t < 200; t++) {
      const layers = 1 + Math.floor(r() * 6);
      const names = Array.from({ length: layers }, (_, d) => {
        const len = [0, 1, 12, 200, 4000][Math.floor(r() * 5)] as number;
        return (d % 2 === 0 ? 'layer-' : 'schicht-ü-') + 'x'.repeat(len) + d;
      });
      const entries = randomEntries(r, 1 + Math.floor(r() * 600), names, t % 3 === 0 ? 0.01 : 0);
      const expected = want(entries);
      if (expected.stop >= 0) stops++;
      const js = new MapBatch(entries.length);
      fill(js, entries);
      expect(await print(js, names)).toEqual(expected);
      const k = kernelBatch(entries.length);
      fill(k, entries);
      expect(await print(k, names), `batch ${t}`).toEqual(expected);
    }
    expect(stops).toBeGreaterThan(10);
  });

  it('takes several kernel calls for a batch of long names, and the JavaScript rows when the names do not fit the kernel\'s room', async () => {
    const r = rng(99);
    const long = Array.from({ length: 4 }, (_, d) => `${'n'.repeat(4000)}-${d}`);
    const entries = randomEntries(r, 3000, long, 0).map((e) => ({ ...e, data: true, zero: false, offset: anyNumber(r) }));
    for (const e of entries) e.filename = long[e.depth] as string;
    const k = kernelBatch(entries.length);
    fill(k, entries);
    expect(await print(k, long)).toEqual(want(entries));
    expect(k.humanEntries()).toBeLessThan(entries.length);
    // 20 names of 4 KiB: more than the kernel's room for names.
    const many = Array.from({ length: 20 }, (_, d) => `${'m'.repeat(4096)}-${d}`);
    const spread = entries.map((e, i) => ({ ...e, depth: i % 20, filename: many[i % 20] as string }));
    const k2 = kernelBatch(spread.length);
    fill(k2, spread);
    expect(k2.useHumanNames(many.map((n) => Buffer.from(n + '\n')))).toBe(false);
    expect(await print(k2, many)).toEqual(want(spread));
  });
});
