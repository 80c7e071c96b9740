/**
 * The LUKS1 header decoder (formats/qcow2/luks-header.ts): valid and hostile headers from
 * hand-made bytes, and reading the header the crypto header extension points at.
 */
import { describe, expect, it } from 'vitest';
import { CorruptImageError, UnsupportedImageError, type VdiskError } from '../../../src/errors.js';
import { LUKS_HEADER_SIZE, decodeLuksHeader, readLuksInfo } from '../../../src/formats/qcow2/luks-header.js';
import { newCounters, type RandomAccessFile } from '../../../src/io/random-access-file.js';

// ---------------------------------------------------------------------------------------
// LUKS headers from bytes
// ---------------------------------------------------------------------------------------

interface LuksSpec {
  magic?: number[];
  version?: number;
  cipher?: string;
  mode?: string;
  hash?: string;
  payload?: number;
  keyBytes?: number;
  mkIters?: number;
  uuid?: string;
  slots?: Array<{ active: number; iters: number; offset: number; stripes: number }>;
}

/** A LUKS1 header as QEMU creates it by default (aes-256 xts-plain64 sha256, slot 0 active). */
function luks(s: LuksSpec = {}): Uint8Array {
  const h = new Uint8Array(LUKS_HEADER_SIZE);
  const dv = new DataView(h.buffer);
  h.set(s.magic ?? [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe], 0);
  dv.setUint16(6, s.version ?? 1);
  const str = (o: number, v: string): void => h.set(new TextEncoder().encode(v), o);
  str(8, s.cipher ?? 'aes');
  str(40, s.mode ?? 'xts-plain64');
  str(72, s.hash ?? 'sha256');
  dv.setUint32(104, s.payload ?? 4040);
  dv.setUint32(108, s.keyBytes ?? 64);
  dv.setUint32(164, s.mkIters ?? 7314);
  str(168, s.uuid ?? '923afdf5-413e-4fda-88f9-b31a7425926a');
  const slots = s.slots ?? Array.from({ length: 8 }, (_, i) => ({ active: i === 0 ? 0x00ac71f3 : 0xdead, iters: i === 0 ? 28220 : 0, offset: 8 + 504 * i, stripes: 4000 }));
  slots.forEach((sl, i) => {
    const o = 208 + 48 * i;
    dv.setUint32(o, sl.active);
    dv.setUint32(o + 4, sl.iters);
    dv.setUint32(o + 40, sl.offset);
    dv.setUint32(o + 44, sl.stripes);
  });
  return h;
}

function luksFails(spec: LuksSpec): VdiskError {
  try {
    decodeLuksHeader(luks(spec), 'x.qcow2');
  } catch (e) {
    expect((e as VdiskError).code).toBe('QCOW2_LUKS_HEADER');
    return e as VdiskError;
  }
  throw new Error('expected an error');
}

describe('decodeLuksHeader', () => {
  it('reports what qcrypto_block_luks_get_info reports', () => {
    const i = decodeLuksHeader(luks(), 'x.qcow2');
    expect(i).toMatchObject({ 'cipher-alg': 'aes-256', 'cipher-mode': 'xts', 'ivgen-alg': 'plain64', 'hash-alg': 'sha256',
      'payload-offset': 2068480, 'master-key-iters': 7314, uuid: '923afdf5-413e-4fda-88f9-b31a7425926a' });
    expect(i).not.toHaveProperty('ivgen-hash-alg');
    expect(i.slots[0]).toEqual({ active: true, iters: 28220, stripes: 4000, 'key-offset': 4096 });
    expect(i.slots[7]).toEqual({ active: false, 'key-offset': 1810432 });
  });

  it('names other ciphers, modes and ESSIV hashes', () => {
    expect(decodeLuksHeader(luks({ mode: 'cbc-essiv:sha256', keyBytes: 16, cipher: 'aes' }), 'x')).toMatchObject({ 'cipher-alg': 'aes-128', 'cipher-mode': 'cbc', 'ivgen-alg': 'essiv', 'ivgen-hash-alg': 'sha256' });
    expect(decodeLuksHeader(luks({ cipher: 'serpent', keyBytes: 64, hash: 'sha512' }), 'x')['cipher-alg']).toBe('serpent-256');
    expect(decodeLuksHeader(luks({ cipher: 'cast5', mode: 'cbc-plain64', keyBytes: 16, hash: 'sha224' }), 'x')['cipher-alg']).toBe('cast5-128');
    // A hash after plain/plain64 is parsed but ignored (dm-crypt compatibility).
    expect(decodeLuksHeader(luks({ mode: 'xts-plain64:sha1' }), 'x')).not.toHaveProperty('ivgen-hash-alg');
  });

  it('uses QEMU 32-bit arithmetic for key material sizes (a wrapped size is accepted)', () => {
    const slots = Array.from({ length: 8 }, (_, i) => ({ active: 0xdead, iters: 0, offset: 8 + 504 * i, stripes: 4000 }));
    slots[0] = { active: 0x00ac71f3, iters: 1, offset: 8, stripes: 0x4000000 };
    expect(decodeLuksHeader(luks({ slots }), 'x').slots[0]).toMatchObject({ stripes: 0x4000000 });
  });

  const corrupt: Array<[string, LuksSpec, RegExp]> = [
    ['a bad magic', { magic: [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbf] }, /not in LUKS format/],
    ['zero stripes', { slots: Array.from({ length: 8 }, (_, i) => ({ active: 0xdead, iters: 0, offset: 8 + 504 * i, stripes: i === 3 ? 0 : 4000 })) }, /keyslot 3 is corrupted \(stripes == 0\)/],
    ['a bad slot state', { slots: Array.from({ length: 8 }, (_, i) => ({ active: i === 2 ? 1 : 0xdead, iters: 0, offset: 8 + 504 * i, stripes: 4000 })) }, /keyslot 2 state/],
    ['key material over the payload', { payload: 4000 }, /keyslot 7 is overlapping with the encrypted payload/],
    ['overlapping slots', { slots: Array.from({ length: 8 }, (_, i) => ({ active: 0xdead, iters: 0, offset: i === 5 ? 8 + 504 * 4 + 8 : 8 + 504 * i, stripes: 4000 })) }, /keyslots 4 and 5 are overlapping/],
  ];
  for (const [what, spec, re] of corrupt) {
    it(`refuses ${what} as corrupt`, () => {
      const e = luksFails(spec);
      expect(e).toBeInstanceOf(CorruptImageError);
      expect(e.message).toMatch(re);
    });
  }

  const unsupported: Array<[string, LuksSpec, RegExp]> = [
    ['version 2', { version: 2 }, /LUKS version 2 is not supported/],
    ['a mode without an IV generator', { mode: 'xts' }, /unexpected cipher mode string format xts/],
    ['an unknown IV hash (checked first)', { mode: 'bogus-essiv:sha3' }, /hash algorithm sha3 not supported/],
    ['an unknown mode', { mode: 'gcm-plain64' }, /cipher mode gcm not supported/],
    ['an unknown cipher', { cipher: 'sm4' }, /algorithm sm4 with key size 32 bytes not supported/],
    ['a key size the cipher lacks (xts halves it)', { keyBytes: 40 }, /algorithm aes with key size 20 bytes/],
    ['an unknown hash', { hash: 'whirlpool' }, /hash algorithm whirlpool not supported/],
    ['an inherited property name as hash', { hash: 'constructor' }, /hash algorithm constructor not supported/],
    ['an unknown IV generator', { mode: 'xts-benbi' }, /IV generator benbi not supported/],
    ['ESSIV without a hash', { mode: 'cbc-essiv', keyBytes: 32 }, /missing IV generator hash/],
    ['ESSIV with a hash no AES key fits', { mode: 'cbc-essiv:sha1', keyBytes: 16 }, /no AES cipher with key size 20/],
    ['ESSIV with cast5 and a 32-byte hash', { cipher: 'cast5', mode: 'cbc-essiv:sha256', keyBytes: 16 }, /cipher cast5-128 not supported with essiv/],
  ];
  for (const [what, spec, re] of unsupported) {
    it(`refuses ${what} as unsupported`, () => {
      const e = luksFails(spec);
      expect(e).toBeInstanceOf(UnsupportedImageError);
      expect(e.message).toMatch(re);
    });
  }

  it('refuses a crypto header extension shorter than the header, and a header past the end of the file', async () => {
    const bytes = new Uint8Array(4096);
    const file: RandomAccessFile = {
      path: 'x.qcow2', size: bytes.length, counters: newCounters(),
      read: async (buf, pos, len = buf.length, off = 0) => { buf.set(bytes.subarray(pos, pos + len), off); },
      probeAllocation: () => ({ kind: 'unknown' }), identity: () => ({ dev: 0n, ino: 0n, allocatedBytes: 0 }), close: async () => undefined,
    };
    await expect(readLuksInfo(file, { offset: 0, length: 591 })).rejects.toThrow(/outside of extension header/);
    await expect(readLuksInfo(file, { offset: 65536, length: 2 ** 21 })).rejects.toThrow(/past the end of the file/);
    bytes.set(luks(), 0);
    await expect(readLuksInfo(file, { offset: 0, length: 2 ** 21 })).resolves.toMatchObject({ 'cipher-alg': 'aes-256' });
  });
});

