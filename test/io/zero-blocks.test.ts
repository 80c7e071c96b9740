/**
 * The zero-block test of conversions (src/io/zero-blocks.ts): on random buffers made of
 * zero blocks, data blocks, blocks whose only non-zero byte is anywhere (first byte, just
 * past the peeked bytes, last byte) and long zero stretches, at random output positions and
 * sub-ranges, the spans equal those of a plain byte-by-byte reference; pieces of a chunk
 * each get their spans at their own output position.
 */
import { describe, expect, it } from 'vitest';
import { nonZeroPieceSpans, nonZeroSpans, SPARSE_BLOCK } from '../../src/io/zero-blocks.js';
import { rng } from '../helpers/prng.js';

/** The reference: every output-aligned block (cut by `from`/`to`) tested byte by byte, runs merged. */
function reference(data: Uint8Array, position: number, from: number, to: number): Array<[number, number]> {
  const spans: Array<[number, number]> = [];
  let i = from;
  while (i < to) {
    const end = Math.min(to, i + SPARSE_BLOCK - ((position + i) % SPARSE_BLOCK));
    let zero = true;
    for (let k = i; k < end; k++) if (data[k] !== 0) zero = false;
    if (!zero) {
      const last = spans[spans.length - 1];
      if (last !== undefined && last[1] === i) last[1] = end;
      else spans.push([i, end]);
    }
    i = end;
  }
  return spans;
}

function randomBuffer(rand: () => number, length: number): Uint8Array {
  const b = new Uint8Array(length);
  let i = 0;
  while (i < length) {
    const kind = rand();
    const n = Math.min(length - i, 1 + Math.floor(rand() * (kind < 0.3 ? 20 * SPARSE_BLOCK : 2 * SPARSE_BLOCK)));
    if (kind < 0.3) {
      // zeroes
    } else if (kind < 0.6) {
      for (let k = 0; k < n; k++) b[i + k] = 1 + Math.floor(rand() * 255);
    } else {
      // one non-zero byte at a telling place of a zero stretch
      const at = [0, 15, 16, 17, SPARSE_BLOCK - 1, SPARSE_BLOCK, Math.floor(rand() * n)][Math.floor(rand() * 7)] as number;
      if (at < n) b[i + at] = 0x80;
    }
    i += n;
  }
  return b;
}

describe('nonZeroSpans', () => {
  it('equals the byte-by-byte reference on random buffers, positions and ranges', () => {
    const rand = rng(4242);
    for (let t = 0; t < 300; t++) {
      const length = 1 + Math.floor(rand() * 300 * 1024);
      const data = randomBuffer(rand, length);
      const position = rand() < 0.5 ? 0 : Math.floor(rand() * 3 * SPARSE_BLOCK);
      const from = rand() < 0.5 ? 0 : Math.floor(rand() * length);
      const to = rand() < 0.5 ? length : from + Math.floor(rand() * (length - from + 1));
      expect([...nonZeroSpans(data, position, from, to)]).toEqual(reference(data, position, from, to));
    }
  });

  it('finds a lone byte after a long zero stretch, and none in all zeroes', () => {
    const data = new Uint8Array(1024 * 1024);
    expect([...nonZeroSpans(data, 0)]).toEqual([]);
    data[175 * SPARSE_BLOCK + 5] = 1;
    expect([...nonZeroSpans(data, 0)]).toEqual([[175 * SPARSE_BLOCK, 176 * SPARSE_BLOCK]]);
    // At output offset 100 the blocks start 100 bytes earlier in the data.
    expect([...nonZeroSpans(data, 100)]).toEqual([[175 * SPARSE_BLOCK - 100, 176 * SPARSE_BLOCK - 100]]);
  });

  it('tests the whole block, not only its first and last bytes (the quick answer for data)', () => {
    // Blocks at output offset 0: a set byte at each place of block 1, alone; blocks cut by `from`/`to` too.
    for (const at of [0, 1, 2047, 4094, 4095]) {
      const data = new Uint8Array(4 * SPARSE_BLOCK);
      data[SPARSE_BLOCK + at] = 7;
      expect(nonZeroSpans(data, 0)).toEqual([[SPARSE_BLOCK, 2 * SPARSE_BLOCK]]);
      // Cut: [SPARSE_BLOCK + 1, SPARSE_BLOCK + 4000): first and last bytes of the cut part are zero unless `at` is one of them.
      const cut = nonZeroSpans(data, 0, SPARSE_BLOCK + 1, SPARSE_BLOCK + 4000);
      expect(cut).toEqual(at >= 1 && at < 4000 ? [[SPARSE_BLOCK + 1, SPARSE_BLOCK + 4000]] : []);
    }
  });

  it('aligns blocks by output positions past 2^31, 2^32 and 2^53 - 2^12, as by the position modulo the block', () => {
    // Disks over 2 GiB put chunks there; the scan sees only the position's phase in the block.
    const rand = rng(77);
    const data = randomBuffer(rand, 200 * 1024);
    for (const position of [2 ** 31 - 100, 2 ** 31, 2 ** 32 + 1234, 8 * 2 ** 40 + 4095, Number.MAX_SAFE_INTEGER - 4095]) {
      const phase = position % SPARSE_BLOCK;
      expect(nonZeroSpans(data, position)).toEqual(reference(data, phase, 0, data.length));
      expect(nonZeroSpans(data, position, 333, 150_000)).toEqual(reference(data, phase, 333, 150_000));
      expect(nonZeroPieceSpans(data, [333, 150_000, position])).toEqual(reference(data, phase, 333, 150_000).flatMap(([a, b]) => [a, b, position]));
    }
  });

  it('aligns pieces whose position is below zero (placed in the slot past their output offset)', () => {
    const rand = rng(78);
    const data = randomBuffer(rand, 64 * 1024);
    for (const [from, to, position] of [[8192, 16384, -8192 + 100], [40_000, 65_536, -40_000], [5000, 6000, -4999]] as const) {
      expect(nonZeroSpans(data, position, from, to)).toEqual(reference(data, position, from, to));
      expect(nonZeroPieceSpans(data, [from, to, position])).toEqual(reference(data, position, from, to).flatMap(([a, b]) => [a, b, position]));
    }
  });

  it('gives the spans of several pieces, each at its own output position, in the pieces\' form', () => {
    const data = new Uint8Array(64 * 1024);
    data[100] = 1; // piece 1, output block of 0
    data[9000] = 2; // piece 2 at output 1,000,000 - 8192: block [8192 + 1808 ...)
    data[40000] = 3; // outside every piece
    const pieces = [0, 8192, 0, 8192, 16384, 1_000_000 - 8192];
    const want = [
      ...reference(data, 0, 0, 8192).flatMap(([a, b]) => [a, b, 0]),
      ...reference(data, 1_000_000 - 8192, 8192, 16384).flatMap(([a, b]) => [a, b, 1_000_000 - 8192]),
    ];
    expect(nonZeroPieceSpans(data, pieces)).toEqual(want);
    expect(want.length).toBe(6);
    // A sub-list: the second piece only, given from its first word.
    expect(nonZeroPieceSpans(data, [9, 9, 9, ...pieces], 6)).toEqual(want.slice(3));
  });
});
