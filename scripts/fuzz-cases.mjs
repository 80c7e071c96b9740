/**
 * The fuzzing property and its inputs (used by scripts/fuzz.mjs; runs against dist/).
 *
 * An input is a valid qemu-img-made base image (images/bad/base/) and a list of mutations:
 * header bytes and fields, header extension bytes, L1 and L2 entries (offsets aimed at
 * metadata, data, the end of the file, unaligned and huge values, with and without the
 * COPIED/COMPRESSED/ZERO flags and reserved bits), compressed payloads and descriptors,
 * snapshot table and bitmap directory bytes, and truncation. Values come from QEMU's image
 * fuzzer vectors (tests/image-fuzzer, HOSTILE-IMAGES.md §4).
 *
 * The property: open the image, read its info, walk its map and allocation map, and read
 * the data ranges the map reports. Success and typed errors (VdiskError) are fine;
 * anything else — another exception, an unhandled rejection, a case over its time budget,
 * process RSS over the limit — is a finding.
 */
import fc from 'fast-check';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BASE_DIR = path.join(REPO, 'images', 'bad', 'base');

/** Bases and the files they need next to them. */
export const BASES = [
  { name: 'base.qcow2' },
  { name: 'v2.qcow2' },
  { name: 'zlib.qcow2' },
  { name: 'zstd.qcow2' },
  { name: 'extl2.qcow2' },
  { name: 'snap.qcow2' },
  { name: 'bitmap.qcow2' },
  { name: 'luks.qcow2' },
  { name: 'datafile.qcow2', needs: ['datafile.raw'] },
  { name: 'chain-top.qcow2', needs: ['chain-base.qcow2'] },
  { name: 'raw-top.qcow2', needs: ['raw-backing.raw'] },
];

const U32 = [0, 1, 2, 8, 9, 16, 21, 22, 31, 32, 63, 64, 72, 104, 112, 0x100, 0x1000, 0xfff0, 0x10000, 0x10008, 0x100000, 0x400000, 0x400001,
  0x3fffffff, 0x7ffffffe, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
const U64 = [...U32.map(BigInt), 0x1000000n, 0x10000000n, 0x100000000n, 0x3fffe01n, (1n << 40n), (1n << 42n), (1n << 51n), (1n << 53n) - 1n, 1n << 53n,
  1n << 55n, 1n << 61n, 1n << 62n, 1n << 63n, 0x7fffffffffff0000n, 0xffffffffffff0000n, (1n << 64n) - 1n];
const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;

/** Where things are in a base image (read from its header). */
export function layout(buf) {
  const r32 = (o) => (o + 4 <= buf.length ? buf.readUInt32BE(o) : 0);
  const r64 = (o) => (o + 8 <= buf.length ? buf.readBigUInt64BE(o) : 0n);
  const cs = 2 ** Math.min(21, Math.max(9, r32(20)));
  const version = r32(4);
  const hl = version === 3 ? r32(100) : 72;
  const l1 = Number(r64(40) & 0xffffffffffffn);
  const l2 = Number(r64(l1) & 0x00fffffffffffe00n);
  const reft = Number(r64(48) & 0xffffffffffffn);
  const refblock = Number(r64(reft) & 0x00fffffffffffe00n);
  const snap = Number(r64(64) & 0xffffffffffffn);
  let bitmapDir = 0;
  for (let p = hl; p + 8 <= Math.min(cs, buf.length);) {
    const m = r32(p);
    const len = r32(p + 4);
    if (m === 0 || len > cs) break;
    if (m === 0x23852875 && len === 24) bitmapDir = Number(r64(p + 8 + 16) & 0xffffffffffffn);
    p += 8 + Math.ceil(len / 8) * 8;
  }
  const l2Entries = [];
  for (let i = 0; i < 32 && l2 > 0 && l2 + 8 * i + 8 <= buf.length; i++) l2Entries.push(r64(l2 + 8 * i));
  const data = l2Entries.map((e) => Number(e & 0x00fffffffffffe00n)).filter((o) => o > 0);
  return { cs, version, hl, l1, l2, reft, refblock, snap, bitmapDir, data, size: buf.length };
}

/** Arbitrary host offsets aimed at interesting places; resolved against a layout. */
const offsetTarget = fc.oneof(
  fc.constantFrom('zero', 'header', 'l1', 'l2', 'reft', 'refblock', 'snap', 'bitmapDir', 'data', 'eof', 'eofMinusCluster', 'pastEof'),
  fc.record({ abs: fc.constantFrom(...U64) }),
  fc.record({ frac: fc.double({ min: 0, max: 1, noNaN: true }), unaligned: fc.integer({ min: 0, max: 127 }) }),
);

function resolveOffset(t, L) {
  if (typeof t === 'object' && 'abs' in t) return t.abs;
  if (typeof t === 'object') return BigInt(Math.floor((t.frac * L.size) / L.cs) * L.cs + t.unaligned * 512);
  switch (t) {
    case 'zero': return 0n;
    case 'header': return 0n;
    case 'l1': return BigInt(L.l1);
    case 'l2': return BigInt(L.l2);
    case 'reft': return BigInt(L.reft);
    case 'refblock': return BigInt(L.refblock);
    case 'snap': return BigInt(L.snap);
    case 'bitmapDir': return BigInt(L.bitmapDir);
    case 'data': return BigInt(L.data[0] ?? L.l2 + L.cs);
    case 'eof': return BigInt(Math.ceil(L.size / L.cs) * L.cs);
    case 'eofMinusCluster': return BigInt(Math.max(0, Math.ceil(L.size / L.cs) * L.cs - L.cs));
    default: return BigInt(L.size) + (1n << 30n);
  }
}

/** An L1/L2 entry: flags, reserved bits and an offset aimed somewhere. */
const entryValue = fc.record({
  copied: fc.boolean(),
  compressed: fc.boolean(),
  zero: fc.boolean(),
  reserved: fc.constantFrom(0n, 0n, 0n, 1n << 56n, 0x1fen, 1n << 61n, 2n),
  target: offsetTarget,
  sectors: fc.integer({ min: 0, max: 255 }),
});

function resolveEntry(v, L) {
  const off = resolveOffset(v.target, L);
  if (v.compressed) {
    const bits = BigInt(Math.log2(L.cs));
    const x = 62n - (bits - 8n);
    const sectors = BigInt(v.sectors) & ((1n << (bits - 8n)) - 1n);
    return (COMPRESSED | (v.copied ? COPIED : 0n) | (sectors << x) | (off & ((1n << x) - 1n))) & ((1n << 64n) - 1n);
  }
  return ((v.copied ? COPIED : 0n) | (off & 0x00fffffffffffe00n) | v.reserved | (v.zero ? 1n : 0n)) & ((1n << 64n) - 1n);
}

const REGIONS = ['header', 'ext', 'l1', 'l2', 'payload', 'snap', 'bitmapDir', 'reft', 'anywhere'];

/** One mutation. */
const mutation = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('field32'), at: fc.constantFrom(4, 16, 20, 32, 36, 56, 60, 96, 100), value: fc.constantFrom(...U32) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('field64'), at: fc.constantFrom(8, 24, 40, 48, 64, 72, 80, 88), value: fc.constantFrom(...U64) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('bit64'), at: fc.constantFrom(72, 80, 88), bit: fc.integer({ min: 0, max: 63 }) }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('byte'), region: fc.constantFrom(...REGIONS), pos: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('flip'), region: fc.constantFrom(...REGIONS), pos: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('word'), region: fc.constantFrom(...REGIONS), pos: fc.nat(), value: fc.constantFrom(...U64) }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('entry'), table: fc.constantFrom('l1', 'l2', 'l2', 'reft'), index: fc.integer({ min: 0, max: 40 }), value: entryValue }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate'), frac: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('extension'), magic: fc.constantFrom(0, 0xe2792aca, 0x6803f857, 0x0537be77, 0x23852875, 0x44415441, 0x12345678), len: fc.constantFrom(0, 1, 3, 8, 15, 16, 24, 48, 0x7fffffff, 0xffffffff), fill: fc.integer({ min: 0, max: 255 }) }) },
);

/** A fuzz input: a base and 1..6 mutations. */
export const fuzzInput = fc.record({
  base: fc.integer({ min: 0, max: BASES.length - 1 }),
  mutations: fc.array(mutation, { minLength: 1, maxLength: 6 }),
});

function regionSpan(region, L, buf) {
  switch (region) {
    case 'header': return [0, Math.min(buf.length, 112)];
    case 'ext': return [Math.min(L.hl, buf.length), Math.min(buf.length, L.hl + 0x200)];
    case 'l1': return [L.l1, L.l1 + 64];
    case 'l2': return [L.l2, L.l2 + 512];
    case 'payload': return [L.data[0] ?? 0, (L.data[0] ?? 0) + 1024];
    case 'snap': return [L.snap, L.snap + 128];
    case 'bitmapDir': return [L.bitmapDir, L.bitmapDir + 64];
    case 'reft': return [L.reft, L.reft + 64];
    default: return [0, buf.length];
  }
}

/** Applies `input` to its base; returns the image bytes. */
export function applyMutations(input) {
  let buf = Buffer.from(fs.readFileSync(path.join(BASE_DIR, BASES[input.base].name)));
  const L = layout(buf);
  const put = (at, n, write) => {
    if (at < 0 || !Number.isSafeInteger(at) || at + n > 64 * 1024 * 1024) return;
    if (at + n > buf.length) buf = Buffer.concat([buf, Buffer.alloc(at + n - buf.length)]);
    write(at);
  };
  for (const m of input.mutations) {
    switch (m.kind) {
      case 'field32': put(m.at, 4, (o) => buf.writeUInt32BE(m.value >>> 0, o)); break;
      case 'field64': put(m.at, 8, (o) => buf.writeBigUInt64BE(m.value, o)); break;
      case 'bit64': put(m.at, 8, (o) => buf.writeBigUInt64BE(buf.readBigUInt64BE(o) ^ (1n << BigInt(m.bit)), o)); break; // put() grew buf first
      case 'byte':
      case 'flip':
      case 'word': {
        const [a, b] = regionSpan(m.region, L, buf);
        if (b <= a) break;
        const at = a + (m.pos % (b - a));
        if (m.kind === 'byte') put(at, 1, (o) => { buf[o] = m.value; });
        else if (m.kind === 'flip') put(at, 1, (o) => { buf[o] ^= 1 << m.bit; });
        else put(at - (at % 8), 8, (o) => buf.writeBigUInt64BE(m.value, o));
        break;
      }
      case 'entry': {
        const base = m.table === 'l1' ? L.l1 : m.table === 'reft' ? L.reft : L.l2;
        if (base <= 0) break;
        const width = m.table === 'l2' && L.version === 3 && buf.length >= 80 && (buf.readBigUInt64BE(72) & 16n) !== 0n ? 16 : 8;
        put(base + m.index * width, 8, (o) => buf.writeBigUInt64BE(resolveEntry(m.value, L), o));
        break;
      }
      case 'truncate':
        buf = buf.subarray(0, Math.floor(m.frac * buf.length));
        break;
      case 'extension': {
        const at = Math.min(L.hl, buf.length);
        const body = Buffer.alloc(Math.min(m.len, 64), m.fill);
        put(at, 8 + body.length + 8, (o) => {
          buf.writeUInt32BE(m.magic, o);
          buf.writeUInt32BE(m.len, o + 4);
          body.copy(buf, o + 8);
        });
        break;
      }
    }
  }
  return buf;
}

/** Copies the files bases need into `dir` (once per worker). */
export function prepareDir(dir) {
  fs.mkdirSync(dir, { recursive: true });
  for (const b of BASES) for (const n of b.needs ?? []) fs.copyFileSync(path.join(BASE_DIR, n), path.join(dir, n));
}

/** Most map entries a case walks, data ranges it reads. */
const MAX_ENTRIES = 200_000;
const MAX_READS = 64;

/**
 * The property body: runs info, map, allocation map and reads on `file` with `lib`
 * (dist/index.js). Returns normally for success and typed errors; throws anything else.
 */
export async function exercise(lib, file) {
  const ops = [
    async (img) => { await img.info(); },
    async (img) => {
      let n = 0;
      const data = [];
      for await (const batch of img.mapEntryBatches()) {
        for (const e of batch) if (e.data && data.length < MAX_READS) data.push(e);
        n += batch.length;
        if (n > MAX_ENTRIES) break;
      }
      const buf = new Uint8Array(65536);
      for (const e of data) {
        const len = Math.min(65536, e.length, img.virtualSize - e.start);
        if (len > 0) await img.read(e.start, len, buf, 0);
      }
    },
    async (img) => {
      let n = 0;
      for await (const _ of img.allocationExtents()) if (++n > MAX_ENTRIES) break;
    },
  ];
  for (const op of ops) {
    let img;
    try {
      img = await lib.openImage(file, { openDataFile: true });
      await op(img);
    } catch (e) {
      if (!lib.isVdiskError(e)) throw e;
    } finally {
      if (img !== undefined) await img.close();
    }
  }
}
