/**
 * Compressed clusters: descriptor decoding and bounded decompression (zlib raw deflate with
 * a 4 KiB window, zstd frames), including every way a payload can be wrong.
 */
import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { rngInt } from '../../helpers/prng.js';
import { CorruptImageError } from '../../../src/errors.js';
import { decodeCompressedDescriptor, decompressCluster } from '../../../src/formats/qcow2/compressed.js';
import { readZstdFrame } from '../../../src/formats/qcow2/zstd-frames.js';
import { zstdFrames } from '../../helpers/zstd-encode.js';

const CS = 65536;
const where = { file: 'c.qcow2', guestOffset: 0, hostOffset: 0x50000 };

function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  const r = rngInt(seed);
  for (let i = 0; i < n; i++) b[i] = i % 7 === 0 ? r(256) : 0x41 + (i % 13);
  return b;
}

describe('decodeCompressedDescriptor', () => {
  it('splits offset and sector count at bit 62 - (cluster_bits - 8)', () => {
    // 64 KiB clusters: x = 54; offset 0x50123, 3 extra sectors.
    const e = (3n << 54n) | 0x50123n;
    const hi = Number((e >> 32n) | (1n << 30n)); // with the COMPRESSED flag
    const lo = Number(e & 0xffffffffn);
    expect(decodeCompressedDescriptor(hi, lo, 16)).toEqual({ hostOffset: 0x50123, length: 4 * 512 - 0x123 });
  });

  it('handles the largest counts and offsets above 2^32 exactly', () => {
    const x = 62n - (21n - 8n); // 2 MiB clusters: 49 offset bits
    const off = (1n << 45n) + 7n;
    const e = (((1n << 13n) - 1n) << x) | off;
    const d = decodeCompressedDescriptor(Number(e >> 32n), Number(e & 0xffffffffn), 21);
    expect(d.hostOffset).toBe(Number(off));
    expect(d.length).toBe(2 ** 13 * 512 - 7); // two clusters minus the offset in the sector
  });
});

describe('decompressCluster: zlib', () => {
  const data = pattern(CS);
  const stream = deflateRawSync(data, { windowBits: 12 });

  it('inflates exactly one cluster, ignoring bytes after the stream', async () => {
    const payload = new Uint8Array(stream.length + 300);
    payload.set(stream);
    payload.fill(0xee, stream.length);
    expect(Buffer.from(await decompressCluster(payload, CS, 0, where)).equals(Buffer.from(data))).toBe(true);
  });

  it.each([
    ['a stream that inflates past the cluster', deflateRawSync(pattern(CS * 4), { windowBits: 12 })],
    ['a stream that stops short', deflateRawSync(pattern(CS - 1), { windowBits: 12 })],
    ['a truncated stream', stream.subarray(0, stream.length - 20)],
    ['garbage', new Uint8Array(600).fill(0xff)],
    ['an empty payload', new Uint8Array(0)],
  ])('refuses %s with QCOW2_COMPRESSED_DATA', async (_name, payload) => {
    const err = await decompressCluster(payload, CS, 0, where).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptImageError);
    expect(err).toMatchObject({ code: 'QCOW2_COMPRESSED_DATA', details: { file: 'c.qcow2', offset: 0x50000 } });
  });
});

describe('decompressCluster: zstd', () => {
  const data = pattern(CS, 7);

  it('decodes one frame, and several frames, with trailing bytes', async () => {
    const one = await zstdFrames([data]);
    const two = await zstdFrames([data.subarray(0, 1000), data.subarray(1000)]);
    for (const frames of [one, two]) {
      const payload = new Uint8Array(frames.length + 100);
      payload.set(frames);
      payload.fill(0x55, frames.length);
      expect(Buffer.from(await decompressCluster(payload, CS, 1, where)).equals(Buffer.from(data))).toBe(true);
    }
  });

  it('skips skippable frames', async () => {
    const frame = await zstdFrames([data]);
    const skip = new Uint8Array(8 + 5);
    new DataView(skip.buffer).setUint32(0, 0x184d2a5a, true);
    new DataView(skip.buffer).setUint32(4, 5, true);
    const payload = new Uint8Array(skip.length + frame.length);
    payload.set(skip);
    payload.set(frame, skip.length);
    expect(Buffer.from(await decompressCluster(payload, CS, 1, where)).equals(Buffer.from(data))).toBe(true);
  });

  it.each([
    ['a frame declaring more than the cluster', async () => zstdFrames([pattern(CS * 4)])],
    ['frames that stop short', async () => zstdFrames([pattern(CS - 1)])],
    ['a truncated frame', async () => (await zstdFrames([data])).subarray(0, 40)],
    ['garbage', async () => new Uint8Array(600).fill(0xff)],
    ['only skippable frames', async () => new Uint8Array([0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0])],
  ])('refuses %s with QCOW2_COMPRESSED_DATA', async (_name, make) => {
    const err = await decompressCluster(await make(), CS, 1, where).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptImageError);
    expect(err).toMatchObject({ code: 'QCOW2_COMPRESSED_DATA' });
  });
});

describe('readZstdFrame', () => {
  it('finds the end of a frame and its declared content size', async () => {
    const f = await zstdFrames([pattern(5000)]);
    const r = readZstdFrame(f);
    expect(r).toMatchObject({ kind: 'data', size: f.length, contentSize: 5000 });
  });

  it('reports truncation and bad magic as invalid', async () => {
    const f = await zstdFrames([pattern(5000)]);
    expect(readZstdFrame(f.subarray(0, f.length - 1)).kind).toBe('invalid');
    expect(readZstdFrame(new Uint8Array([1, 2, 3, 4, 5])).kind).toBe('invalid');
    expect(readZstdFrame(new Uint8Array(2)).kind).toBe('invalid');
  });
});
