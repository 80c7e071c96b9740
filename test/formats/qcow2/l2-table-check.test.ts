/**
 * The checks of the active L1 table at open and of each L2 table before it is cached
 * (formats/qcow2/l2-table-check.ts): hex-literal entries, one rule at a time.
 */
import { describe, expect, it } from 'vitest';
import { l2Words } from '../../helpers/l2-words.js';
import { CorruptImageError, type VdiskError } from '../../../src/errors.js';
import { L2TableChecker, compressedPayload, compressedPayloadLength, compressedPayloadStart, scanL1 } from '../../../src/formats/qcow2/l2-table-check.js';
import { rng } from '../../helpers/prng.js';
import { MetadataRanges } from '../../../src/formats/qcow2/metadata-ranges.js';

const cs = 0x10000;


function fails(f: () => unknown): VdiskError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(CorruptImageError);
    return e as VdiskError;
  }
  throw new Error('did not throw');
}

describe('scanL1', () => {
  it('returns the L2 table offsets sorted, skipping unallocated entries (COPIED alone is unallocated)', () => {
    const t = scanL1('x', l2Words([0x8000000000070000n, 0n, 0x8000000000000000n, 0x8000000000040000n]), 0x30000);
    expect([...t]).toEqual([0x40000, 0x70000]);
  });

  it('refuses reserved bits, naming the entry', () => {
    for (const e of [0x8100000000040000n, 0x8000000000040001n, 0x80000000000401ffn, 0x4000000000040000n]) {
      const err = fails(() => scanL1('x', l2Words([0n, e]), 0x30000));
      expect(err.code).toBe('QCOW2_RESERVED_BITS');
      expect(err.details).toMatchObject({ field: 'L1 entry', value: e, offset: 0x30008 });
      expect(err.message).toMatch(/^L1 entry 0x1 is 0x[0-9a-f]{16}: reserved bits are set \(mask 0x7f000000000001ff\)$/);
    }
  });

  it('refuses an L2 table named twice, naming both L1 entries, sorted or not', () => {
    const a = fails(() => scanL1('x', l2Words([0x8000000000040000n, 0x8000000000050000n, 0x8000000000040000n]), 0x30000));
    expect(a.code).toBe('QCOW2_L2_DUPLICATE');
    expect(a.message).toBe('L1 entries 0x0 and 0x2 both name the L2 table at 0x40000: an L2 table belongs to one L1 entry');
    const b = fails(() => scanL1('x', l2Words([0x8000000000040000n, 0x8000000000040000n]), 0));
    expect(b.details).toMatchObject({ value: 0x40000, offset: 8 });
  });
});

describe('compressedPayload', () => {
  it('decodes offset and length exactly, also at 2^53 and above', () => {
    expect(compressedPayload(0x40000000, 0x00050000, 16)).toEqual({ hostOffset: 0x50000, hostOffsetBig: 0x50000n, length: 512 });
    expect(compressedPayload(0x7fc00000, 0x00060000, 16)).toMatchObject({ hostOffset: 0x60000, length: 256 * 512 });
    expect(compressedPayload(0x40000000, 0x00050123, 16)).toMatchObject({ hostOffset: 0x50123, length: 512 - 0x123 });
    const big = compressedPayload(0x7fff0000, 0x00050000, 16); // offset bits 0..53 = 0x3f000000050000
    expect(big.hostOffsetBig).toBe(0x3f000000050000n);
    expect(big.hostOffset).toBe(Infinity);
  });

  it('is matched by the number-only start and length the checks use, for every cluster size and random descriptors', () => {
    const rand = rng(777);
    for (let clusterBits = 9; clusterBits <= 21; clusterBits++) {
      for (let k = 0; k < 2000; k++) {
        // Random high words (the compressed flag set, COPIED now and then), their offset
        // bits now and then all set (offsets from 2^53), and random low words.
        let hi = (0x40000000 | Math.floor(rand() * 0x40000000) | (rand() < 0.1 ? 0x80000000 : 0)) >>> 0;
        if (rand() < 0.2) hi = (hi | ((1 << (30 - (clusterBits - 8))) - 1)) >>> 0;
        if (rand() < 0.2) hi = (hi & ~((1 << (30 - (clusterBits - 8))) - 1)) >>> 0;
        const lo = Math.floor(rand() * 2 ** 32);
        const d = compressedPayload(hi, lo, clusterBits);
        expect(compressedPayloadStart(hi, lo, clusterBits), `${clusterBits} ${hi} ${lo}`).toBe(d.hostOffset);
        expect(compressedPayloadLength(hi, lo, clusterBits), `${clusterBits} ${hi} ${lo}`).toBe(d.length);
      }
    }
    // The last offset below 2^53, and 2^53 itself (64 KiB clusters: 22 offset bits in the high word).
    expect(compressedPayloadStart(0x401fffff, 0xfffffe00, 16)).toBe(2 ** 53 - 512);
    expect(compressedPayloadStart(0x40200000, 0, 16)).toBe(Infinity);
  });
});

describe('L2TableChecker', () => {
  const ranges = MetadataRanges.build('x.qcow2', [
    { kind: 'header', start: 0, end: cs },
    { kind: 'refcount table', start: 0x10000, end: 0x20000 },
    { kind: 'active L1 table', start: 0x30000, end: 0x30008 },
  ], { kind: 'refcount block', starts: Float64Array.from([0x20000]), length: cs });
  const ctx = { file: 'x.qcow2', fileSize: 0x100000, clusterBits: 16, clusterSize: cs, extendedL2: false, hasDataFile: false };
  const checker = new L2TableChecker(ctx, ranges, Float64Array.from([0x40000, 0x90000]));
  const table = (entries: readonly bigint[]): Uint32Array => {
    const all = new Array<bigint>(cs / 8).fill(0n);
    entries.forEach((e, i) => (all[i] = e));
    return l2Words(all);
  };

  it('accepts ordinary entries: data, zero, preallocated zero, unallocated, aliased data, unaligned and huge offsets (left to the lookup)', () => {
    expect(() => checker.check(0x40000, table([
      0x8000000000050000n, 1n, 0x8000000000060001n, 0n, 0x8000000000000000n, 0x8000000000050000n,
      0x8000000000050200n, 0x8080000000000000n, 0x40000000000a0000n,
    ]))).not.toThrow();
  });

  it('refuses an L2 table over metadata', () => {
    const e = fails(() => checker.check(0x10000, table([])));
    expect(e.code).toBe('QCOW2_METADATA_OVERLAP');
    expect(e.message).toBe('L2 table at 0x10000..0x20000 overlaps the refcount table at 0x10000..0x20000');
  });

  it('refuses reserved bits in standard entries, and COPIED in compressed ones', () => {
    for (const [e, why] of [
      [0x8100000000050000n, /reserved bits are set \(mask 0x3f000000000001fe\)/],
      [0x80000000000500fen, /reserved bits are set/],
      [0xc000000000050000n, /a compressed cluster with COPIED set/],
    ] as const) {
      const err = fails(() => checker.check(0x40000, table([0n, e])));
      expect(err.code).toBe('QCOW2_RESERVED_BITS');
      expect(err.message).toMatch(why);
      expect(err.details).toMatchObject({ field: 'L2 entry', value: e, offset: 0x40008 });
    }
  });

  it('refuses host clusters past the end of the file', () => {
    const e = fails(() => checker.check(0x40000, table([0n, 0n, 0x8000000010000000n])));
    expect(e.code).toBe('QCOW2_DATA_BEYOND_EOF');
    expect(e.message).toBe('L2 entry 0x2 of the L2 table at 0x40000 names the host cluster at 0x10000000, past the end of the file (1048576 bytes)');
    expect(fails(() => checker.check(0x40000, table([0x0000000010000001n]))).code).toBe('QCOW2_DATA_BEYOND_EOF'); // preallocated zero too
  });

  it('refuses host clusters over metadata or an active L2 table', () => {
    expect(fails(() => checker.check(0x40000, table([0x8000000000030000n]))).message).toMatch(/host cluster of L2 entry 0x0 \(L2 table at 0x40000\) at 0x30000\.\.0x40000 overlaps the active L1 table/);
    expect(fails(() => checker.check(0x40000, table([0x8000000000020000n]))).message).toMatch(/overlaps the refcount block at 0x20000/);
    expect(fails(() => checker.check(0x40000, table([0x8000000000090000n]))).message).toMatch(/overlaps the active L2 table at 0x90000/);
    expect(fails(() => checker.check(0x40000, table([0x8000000000040000n]))).message).toMatch(/overlaps the active L2 table at 0x40000/);
  });

  it('refuses compressed payloads past the end of the file or over metadata and L2 tables', () => {
    const past = fails(() => checker.check(0x40000, table([0x4000000010000000n])));
    expect(past.code).toBe('QCOW2_COMPRESSED_BEYOND_EOF');
    expect(fails(() => checker.check(0x40000, table([0x7fff000000050000n]))).message).toMatch(/starts at 0x3f000000050000/);
    expect(fails(() => checker.check(0x40000, table([0x4000000000030000n]))).code).toBe('QCOW2_METADATA_OVERLAP');
    // 256 sectors from 0x80000 reach into the L2 table at 0x90000.
    expect(fails(() => checker.check(0x40000, table([0x7fc0000000080000n]))).message).toMatch(/compressed payload .* overlaps the active L2 table at 0x90000/);
    expect(() => checker.check(0x40000, table([0x40000000000a0000n, 0x7fc00000000c0000n]))).not.toThrow();
  });

  it('with an external data file, host offsets are not checked against the image file', () => {
    const df = new L2TableChecker({ ...ctx, hasDataFile: true }, ranges, Float64Array.from([0x40000]));
    expect(() => df.check(0x40000, table([0x8000000000000000n, 0x8000000000030000n, 0x8000000010000000n]))).not.toThrow();
    expect(fails(() => df.check(0x40000, table([0x8100000000050000n]))).code).toBe('QCOW2_RESERVED_BITS');
  });

  it('extended L2: a compressed entry with a subcluster bitmap is refused', () => {
    const x = new L2TableChecker({ ...ctx, extendedL2: true }, ranges, Float64Array.from([0x40000]));
    const all = new Array<bigint>(cs / 8).fill(0n);
    all[0] = 0x8000000000050000n; // entry 0: data
    all[1] = 0x00000000ffffffffn; // its bitmap: all allocated
    all[2] = 0x40000000000a0000n; // entry 1: compressed
    all[3] = 0x0000000100000000n; // with a non-zero bitmap
    const e = fails(() => x.check(0x40000, l2Words(all)));
    expect(e.message).toMatch(/L2 entry 0x1 .* a compressed cluster with a non-zero subcluster bitmap/);
    expect(e.details).toMatchObject({ offset: 0x40010 });
  });

  it('forL1 checks a snapshot view against its own L2 tables', () => {
    const view = checker.forL1(l2Words([0x8000000000070000n]));
    expect(() => view.check(0x40000, table([0x8000000000090000n]))).not.toThrow();
    expect(fails(() => view.check(0x40000, table([0x8000000000070000n]))).code).toBe('QCOW2_METADATA_OVERLAP');
  });
});
