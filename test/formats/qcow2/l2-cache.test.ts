/**
 * The L2 cache's scan resistance (l2-cache.ts): a sequential walk cycles through a few
 * buffers instead of filling the budget; a table used again after another one joins the
 * LRU and survives a long scan; the cache never holds more than its capacity; every table
 * comes back with its own bytes, whatever buffer it was read into; a table that fails its
 * checks in a batch read fails alone.
 */
import { describe, expect, it } from 'vitest';
import { rngInt } from '../../helpers/prng.js';
import { L2Cache } from '../../../src/formats/qcow2/l2-cache.js';
import { MemoryFile } from '../../helpers/memory-file.js';

const TABLE = 4096;
const TABLES = 600;

/** A file of TABLES tables whose first word (native after the swap) is the table number. */
function file(): MemoryFile {
  const data = new Uint8Array(TABLE * TABLES);
  const dv = new DataView(data.buffer);
  for (let t = 0; t < TABLES; t++) dv.setUint32(t * TABLE, t, false);
  return new MemoryFile(data);
}

async function get(cache: L2Cache, t: number): Promise<Uint32Array> {
  const hit = cache.peek(t * TABLE);
  const table = hit ?? (await cache.load(t * TABLE));
  cache.peek(t * TABLE); // a walk looks it up right after the load
  return table.words;
}

describe('L2Cache', () => {
  it('walks 600 tables sequentially through a few buffers, each table read once', async () => {
    const cache = new L2Cache(file(), TABLE, 256 * TABLE); // room for 256 tables
    const buffers = new Set<ArrayBufferLike>();
    for (let t = 0; t < TABLES; t++) {
      const w = await get(cache, t);
      expect(w[0]).toBe(t);
      buffers.add(w.buffer);
    }
    expect(cache.loads).toBe(TABLES);
    // Probation holds about 2 MiB of tables (capped by the capacity), plus a few spares.
    expect(cache.size).toBeLessThanOrEqual(256);
    expect(buffers.size).toBeLessThan(256 + 16);
    expect(buffers.size).toBeLessThan(TABLES);
  });

  it('keeps a table used again after another one through a long scan', async () => {
    const cache = new L2Cache(file(), TABLE, 64 * TABLE); // 64 tables: probation may take all
    const small = new L2Cache(file(), TABLE, 512 * TABLE); // probation 514 tables, capped at 512
    for (const c of [cache, small]) {
      await get(c, 0);
      await get(c, 1);
      await get(c, 0); // back to table 0: promoted
      const loads = c.loads;
      for (let t = 2; t < 300; t++) await get(c, t);
      expect(c.loads).toBe(loads + 298);
      expect(c.peek(0)?.words[0]).toBe(0);
      expect(c.size).toBeLessThanOrEqual(c.capacity);
    }
    // Table 0 survived the scan of 298 others in both (what is evicted first is what was
    // not used again).
    expect(small.peek(0)?.words[0]).toBe(0);
    expect(cache.peek(0)?.words[0]).toBe(0);
  });

  it('never holds more than its capacity, and returns the right bytes, under random revisits', async () => {
    const cache = new L2Cache(file(), TABLE, 40 * TABLE);
    const r = rngInt(12345);
    for (let i = 0; i < 5000; i++) {
      const t = r(i % 3 === 0 ? 30 : TABLES);
      const w = await get(cache, t);
      expect(w[0]).toBe(t);
      expect(cache.size).toBeLessThanOrEqual(cache.capacity);
    }
    expect(cache.loads).toBeLessThan(5000);
  });

  it('drops a released table and reads the next one into its buffer', async () => {
    const cache = new L2Cache(file(), TABLE, 64 * TABLE);
    const first = await get(cache, 0);
    cache.release(0);
    expect(cache.size).toBe(0);
    expect(cache.peek(0)).toBeUndefined();
    cache.release(0); // no longer cached: nothing happens
    cache.release(7 * TABLE); // never read: nothing happens
    const next = await get(cache, 1);
    expect(next.buffer).toBe(first.buffer);
    expect(next[0]).toBe(1);
    // A walk that releases each table once used goes through one buffer; a released table
    // asked for again is read again, with its own bytes.
    const buffers = new Set<ArrayBufferLike>();
    for (let t = 2; t < 100; t++) {
      const w = await get(cache, t);
      expect(w[0]).toBe(t);
      buffers.add(w.buffer);
      cache.release(t * TABLE);
    }
    expect(buffers).toEqual(new Set([first.buffer]));
    expect((await get(cache, 0))[0]).toBe(0);
    expect(cache.loads).toBe(101);
    expect(cache.size).toBe(2); // tables 1 and 0, not released
  });

  it('fails only the table whose checks fail when several are read at once, caching the others', async () => {
    // Tables 3..8 are read in one batch; table 5 fails its checks.
    const cache = new L2Cache(file(), TABLE, 64 * TABLE, (offset) => {
      if (offset === 5 * TABLE) throw new Error('table 5 is bad');
      return null;
    });
    const offsets = [3, 4, 5, 6, 7, 8].map((t) => t * TABLE);
    await expect(cache.loadMany(offsets)).rejects.toThrow('table 5 is bad');
    for (const t of [3, 4, 6, 7, 8]) expect(cache.peek(t * TABLE)?.words[0], `table ${t}`).toBe(t);
    expect(cache.peek(5 * TABLE)).toBeUndefined();
    // Each table's own load: the good ones resolve, the bad one rejects.
    const again = new L2Cache(file(), TABLE, 64 * TABLE, (offset) => {
      if (offset === 5 * TABLE) throw new Error('table 5 is bad');
      return null;
    });
    void again.loadMany(offsets).catch(() => undefined);
    expect((await again.load(4 * TABLE)).words[0]).toBe(4);
    await expect(again.load(5 * TABLE)).rejects.toThrow('table 5 is bad');
    expect((await again.load(6 * TABLE)).words[0]).toBe(6);
  });
});

