/**
 * Refcounts (src/formats/qcow2/refcount.ts): `readEntry` for every refcount order 0..6
 * (QEMU's `get_refcount_ro0`..`ro6`: sub-byte widths packed from the least significant bit,
 * whole bytes big-endian; QEMU-SEMANTICS.md §7.3) and `RefcountReader` over an in-memory
 * image: table/block lookup, missing blocks, bounds, the unaligned-refblock error and caching;
 * `countNonZero` against `readEntry` for every order, range and limit.
 */
import { describe, expect, it } from 'vitest';
import { rngInt } from '../../helpers/prng.js';
import { CorruptImageError } from '../../../src/errors.js';
import { RefcountReader, readEntry, readEntryNumber } from '../../../src/formats/qcow2/refcount.js';
import { countNonZero } from '../../../src/formats/qcow2/refcount-entries.js';
import { MemoryFile } from '../../helpers/memory-file.js';
import { be64, cat } from '../../helpers/qcow2-builder.js';

describe('readEntry', () => {
  it('order 0 (1 bit): LSB first', () => {
    const block = Uint8Array.of(0b10100101, 0b00000001);
    expect([0, 1, 2, 3, 4, 5, 6, 7, 8, 9].map((i) => readEntry(block, i, 0))).toEqual([1n, 0n, 1n, 0n, 0n, 1n, 0n, 1n, 1n, 0n]);
  });

  it('order 1 (2 bits): LSB first', () => {
    const block = Uint8Array.of(0b11100100, 0b00000011);
    expect([0, 1, 2, 3, 4, 5].map((i) => readEntry(block, i, 1))).toEqual([0n, 1n, 2n, 3n, 3n, 0n]);
  });

  it('order 2 (4 bits): low nibble first', () => {
    const block = Uint8Array.of(0xa5, 0x0f);
    expect([0, 1, 2, 3].map((i) => readEntry(block, i, 2))).toEqual([5n, 10n, 15n, 0n]);
  });

  it('order 3 (8 bits)', () => {
    const block = Uint8Array.of(0, 1, 0xff);
    expect([0, 1, 2].map((i) => readEntry(block, i, 3))).toEqual([0n, 1n, 255n]);
  });

  it('order 4 (16 bits, big-endian)', () => {
    const block = Uint8Array.of(0x00, 0x01, 0x12, 0x34, 0xff, 0xff);
    expect([0, 1, 2].map((i) => readEntry(block, i, 4))).toEqual([1n, 0x1234n, 0xffffn]);
  });

  it('order 5 (32 bits, big-endian)', () => {
    const block = Uint8Array.of(0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0);
    expect([0, 1, 2].map((i) => readEntry(block, i, 5))).toEqual([1n, 0xffffffffn, 0x80000000n]);
  });

  it('order 6 (64 bits, big-endian, exact above 2^53)', () => {
    const block = cat(be64(1n), be64(0xffffffffffffffffn), be64(0x0020000000000001n));
    expect([0, 1, 2].map((i) => readEntry(block, i, 6))).toEqual([1n, 0xffffffffffffffffn, 0x0020000000000001n]);
  });

  it('entries past the end of the block read as 0', () => {
    expect(readEntry(new Uint8Array(2), 100, 4)).toBe(0n);
    expect(readEntry(new Uint8Array(1), 100, 0)).toBe(0n);
    expect(readEntryNumber(new Uint8Array(2), 100, 4)).toBe(0);
    expect(readEntryNumber(new Uint8Array(1), 100, 0)).toBe(0);
  });

  it('readEntryNumber: the same values as numbers, for every order up to 5 (32 bits)', () => {
    const block = new Uint8Array(512);
    let x = 12345;
    for (let i = 0; i < block.length; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      block[i] = i % 7 === 0 ? 0xff : x >>> 24;
    }
    for (let order = 0; order <= 5; order++) {
      const entries = (block.length * 8) / 2 ** order;
      for (let i = 0; i < entries; i++) expect(readEntryNumber(block, i, order), `order ${order} entry ${i}`).toBe(Number(readEntry(block, i, order)));
    }
    expect(readEntryNumber(Uint8Array.of(0xff, 0xff, 0xff, 0xff), 0, 5)).toBe(0xffffffff);
  });
});

describe('RefcountReader', () => {
  const cb = 9; // 512-byte clusters: 256 16-bit refcounts per block
  const cs = 512;

  /** An image with the reftable at cluster 1 (given entries) and blocks written at given offsets. */
  function image(reftable: bigint[], blocks: Array<[number, Uint8Array]>, size = 16 * cs): MemoryFile {
    const bytes = new Uint8Array(size);
    bytes.set(cat(...reftable.map((e) => be64(e))), cs);
    for (const [off, b] of blocks) bytes.set(b, off);
    return new MemoryFile(bytes, { path: 'r.qcow2' });
  }

  /** A 16-bit refcount block with `values` at the given indexes. */
  function block16(values: Record<number, number>): Uint8Array {
    const b = new Uint8Array(cs);
    const dv = new DataView(b.buffer);
    for (const [i, v] of Object.entries(values)) dv.setUint16(Number(i) * 2, v);
    return b;
  }

  it('looks up refcounts through the table and blocks (order 4)', async () => {
    const f = image([BigInt(2 * cs), BigInt(3 * cs)], [
      [2 * cs, block16({ 0: 1, 1: 1, 5: 2 })],
      [3 * cs, block16({ 0: 7, 255: 0xffff })],
    ]);
    const r = new RefcountReader(f, cb, 4, cs, 1);
    expect(await r.get(0)).toBe(1n);
    expect(await r.get(5)).toBe(2n);
    expect(await r.get(6)).toBe(0n);
    expect(await r.get(256)).toBe(7n);
    expect(await r.get(511)).toBe(0xffffn);
  });

  it('a zero table entry means refcount 0 without reading a block', async () => {
    const f = image([0n, BigInt(2 * cs)], [[2 * cs, block16({ 0: 3 })]]);
    const r = new RefcountReader(f, cb, 4, cs, 1);
    expect(await r.get(10)).toBe(0n);
    expect(f.counters.reads).toBe(1); // the table only
    expect(await r.get(256)).toBe(3n);
  });

  it('indexes beyond the table are 0', async () => {
    const f = image([BigInt(2 * cs)], [[2 * cs, block16({ 0: 1 })]]);
    const r = new RefcountReader(f, cb, 4, cs, 1);
    // One table cluster = 64 entries of 256 refcounts.
    expect(await r.get(64 * 256)).toBe(0n);
    expect(await r.get(2 ** 40)).toBe(0n);
  });

  it('the reserved low bits of a table entry are masked off', async () => {
    const f = image([BigInt(2 * cs) | 0x1ffn], [[2 * cs, block16({ 4: 9 })]]);
    expect(await new RefcountReader(f, cb, 4, cs, 1).get(4)).toBe(9n);
  });

  it('other refcount orders: entries per block follow the width (order 0 and 6)', async () => {
    const b0 = new Uint8Array(cs);
    b0[1] = 0b00000100; // index 10
    const f0 = image([BigInt(2 * cs), BigInt(3 * cs)], [[2 * cs, b0], [3 * cs, Uint8Array.of(0b1)]]);
    const r0 = new RefcountReader(f0, cb, 0, cs, 1);
    expect(await r0.get(10)).toBe(1n);
    expect(await r0.get(11)).toBe(0n);
    expect(await r0.get(4096)).toBe(1n); // 512 * 8 entries per block
    const b6 = cat(be64(0n), be64(0x123456789abcdef0n));
    const f6 = image([BigInt(2 * cs), BigInt(3 * cs)], [[2 * cs, b6], [3 * cs, be64(5n)]]);
    const r6 = new RefcountReader(f6, cb, 6, cs, 1);
    expect(await r6.get(1)).toBe(0x123456789abcdef0n);
    expect(await r6.get(64)).toBe(5n); // 512 / 8 entries per block
  });

  it('an unaligned refcount block offset is CorruptImageError QCOW2_REFBLOCK_OFFSET (T16)', async () => {
    const f = image([0x2a00n], []);
    const err = await new RefcountReader(f, 12, 4, cs, 1).get(0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptImageError);
    expect((err as CorruptImageError).code).toBe('QCOW2_REFBLOCK_OFFSET');
    expect((err as CorruptImageError).message).toContain('0x2a00');
  });

  it('a refcount block offset of 2^53 or more is QCOW2_REFBLOCK_OFFSET', async () => {
    const f = image([0xffffff00000000n], []);
    await expect(new RefcountReader(f, cb, 4, cs, 1).get(0)).rejects.toMatchObject({ code: 'QCOW2_REFBLOCK_OFFSET' });
  });

  it('a refcount block past EOF is QCOW2_REFBLOCK_BEYOND_EOF', async () => {
    const f = image([BigInt(100 * cs)], []);
    await expect(new RefcountReader(f, cb, 4, cs, 1).get(0)).rejects.toMatchObject({ code: 'QCOW2_REFBLOCK_BEYOND_EOF' });
  });

  it('reads the table once and each block once', async () => {
    const f = image([BigInt(2 * cs), BigInt(3 * cs)], [[2 * cs, block16({ 0: 1 })], [3 * cs, block16({ 0: 1 })]]);
    const r = new RefcountReader(f, cb, 4, cs, 1);
    for (let i = 0; i < 512; i++) await r.get(i);
    expect(f.counters.reads).toBe(3);
    expect(f.counters.bytesRead).toBe(3 * cs);
  });

  it('keeps at most 8 blocks: a ninth evicts the oldest', async () => {
    const table = Array.from({ length: 9 }, (_, i) => BigInt((2 + i) * cs));
    const f = image(table, [], 32 * cs);
    const r = new RefcountReader(f, cb, 4, cs, 1);
    for (let i = 0; i < 9; i++) await r.get(i * 256);
    expect(f.counters.reads).toBe(10);
    await r.get(8 * 256); // still cached
    expect(f.counters.reads).toBe(10);
    await r.get(0); // evicted
    expect(f.counters.reads).toBe(11);
  });

  describe('countReferenced', () => {
    it('counts clusters with a non-zero refcount in [0, nbClusters)', async () => {
      const f = image([BigInt(2 * cs), 0n, BigInt(3 * cs)], [
        [2 * cs, block16({ 0: 1, 1: 1, 2: 0, 3: 2, 255: 1 })],
        [3 * cs, block16({ 0: 1, 10: 1 })],
      ]);
      const r = new RefcountReader(f, cb, 4, cs, 1);
      expect(await r.countReferenced(1000, Infinity)).toBe(6);
      expect(await r.countReferenced(4, Infinity)).toBe(3);
      expect(await r.countReferenced(256, Infinity)).toBe(4);
      expect(await r.countReferenced(513, Infinity)).toBe(5);
      expect(await r.countReferenced(0, Infinity)).toBe(0);
    });

    it('stops once the limit is reached', async () => {
      const f = image([BigInt(2 * cs)], [[2 * cs, block16(Object.fromEntries(Array.from({ length: 256 }, (_, i) => [i, 1])))]]);
      const r = new RefcountReader(f, cb, 4, cs, 1);
      expect(await r.countReferenced(256, 10)).toBe(10);
      expect(await r.countReferenced(256, 0)).toBe(0);
    });

    it('skips missing refcount blocks without reading them, whatever the cluster count claims', async () => {
      const f = image([0n, 0n, BigInt(2 * cs)], [[2 * cs, block16({ 7: 1 })]]);
      const r = new RefcountReader(f, cb, 4, cs, 1);
      expect(await r.countReferenced(2 ** 50, Infinity)).toBe(1);
      expect(f.counters.reads).toBe(2); // the table and one block
    });
  });
});


describe('countNonZero', () => {
  it('counts the entries readEntry finds non-zero, for every order, range and limit', () => {
    const r = rngInt(7);
    for (let order = 0; order <= 6; order++) {
      for (let round = 0; round < 30; round++) {
        // Mostly zero bytes, so that wide entries are zero often.
        const block = Uint8Array.from({ length: 512 }, () => (r(4) === 0 ? r(256) : 0));
        const entries = (512 * 8) / 2 ** order;
        const first = r(entries);
        const end = first + r(entries - first + 1);
        const limit = r(3) === 0 ? 1 + r(20) : entries;
        let want = 0;
        for (let i = first; i < end && want < limit; i++) if (readEntry(block, i, order) !== 0n) want++;
        expect(countNonZero(block, first, end, order, limit), `order ${order}`).toBe(want);
      }
    }
  });
});
