/**
 * Prints a {@link MapBatch} as `qemu-img map --output=json` entries (the bytes of
 * `writeMapEntryJson`, entry by entry) in one loop straight into the output buffer: each
 * entry is three constant byte runs — the part from `depth` to the flags is one template
 * per depth and flag combination — and its decimal numbers, with no number boxed per
 * entry; when length and template repeat an earlier entry's, those bytes are copied.
 */
import { MAP_DATA, MAP_PRESENT, MAP_ZERO, MapBatch } from '../../status/map-batch.js';
import type { AsciiBuffer } from '../ascii-buffer.js';
import { KernelMapBatch } from '../../status/flat-walk-kernel.js';
import { dropBeforeSnapshot } from '../../io/snapshot-state.js';

/** Plain Uint8Arrays (not Buffers), so every copy sees one kind of array. */
const enc = (t: string): Uint8Array => new Uint8Array(Buffer.from(t, 'latin1'));

/** `,\n` then the start of an entry; the first entry skips the two separator bytes. */
const SEP_START = enc(',\n{ "start": ');
const START = SEP_START.subarray(2);
const LENGTH = enc(', "length": ');

/** Depths that have ready-made templates (deeper entries are assembled from parts). */
const TEMPLATE_DEPTHS = 16;

function flagsText(attrs: number): string {
  return `, "present": ${(attrs & MAP_PRESENT) !== 0}, "zero": ${(attrs & MAP_ZERO) !== 0}, "data": ${(attrs & MAP_DATA) !== 0}`;
}

/**
 * `, "depth": D, "present": P, "zero": Z, "data": X` followed by `}` (no offset) or by
 * `, "offset": ` (index `((depth * 8 + attrs) * 2) + hasOffset`).
 */
const TAILS: Uint8Array[] = [];
for (let depth = 0; depth < TEMPLATE_DEPTHS; depth++) {
  for (let attrs = 0; attrs < 8; attrs++) {
    const head = `, "depth": ${depth}${flagsText(attrs)}`;
    TAILS.push(enc(head + '}'), enc(head + ', "offset": '));
  }
}
const DEPTH = enc(', "depth": ');
const FLAGS_END = Array.from({ length: 8 }, (_, a) => enc(flagsText(a) + '}'));
const FLAGS_OFFSET = Array.from({ length: 8 }, (_, a) => enc(flagsText(a) + ', "offset": '));

/** Most bytes one entry takes (three 16-digit numbers, a long depth, the longest flags). */
const MAX_ENTRY_BYTES = 256;

/** "00".."99" as byte pairs. */
const PAIRS = new Uint8Array(200);
for (let i = 0; i < 100; i++) {
  PAIRS[i * 2] = 48 + Math.floor(i / 10);
  PAIRS[i * 2 + 1] = 48 + (i % 10);
}

/** Copies `src` to `b` at `p`; returns the end. A native copy: 3x faster than a loop even for 12 bytes. */
function put(b: Uint8Array, p: number, src: Uint8Array): number {
  b.set(src, p);
  return p + src.length;
}

/** Writes `n` (an integer, 0 <= n < 10^8) in decimal at `p`; returns the end. */
function putSmall(b: Uint8Array, p: number, n: number): number {
  const digits = n < 10000
    ? (n < 100 ? (n < 10 ? 1 : 2) : n < 1000 ? 3 : 4)
    : n < 1000000 ? (n < 100000 ? 5 : 6) : n < 10000000 ? 7 : 8;
  const e = p + digits;
  let q = e;
  while (n >= 100) {
    const t = (n / 100) | 0;
    const r = (n - t * 100) * 2;
    b[--q] = PAIRS[r + 1] as number;
    b[--q] = PAIRS[r] as number;
    n = t;
  }
  if (n >= 10) {
    b[--q] = PAIRS[n * 2 + 1] as number;
    b[--q] = PAIRS[n * 2] as number;
  } else {
    b[--q] = 48 + n;
  }
  return e;
}

/** Writes `n` (an integer, 0 <= n < 10^8) as exactly eight digits at `p`; returns the end. */
function putEight(b: Uint8Array, p: number, n: number): number {
  for (let q = p + 8; q > p; ) {
    const t = (n / 100) | 0;
    const r = (n - t * 100) * 2;
    b[--q] = PAIRS[r + 1] as number;
    b[--q] = PAIRS[r] as number;
    n = t;
  }
  return p + 8;
}

/** Writes a safe non-negative integer in decimal at `p`; returns the end. */
function putUint(b: Uint8Array, p: number, n: number): number {
  if (n < 100000000) return putSmall(b, p, n);
  const hi = Math.floor(n / 100000000); // < 10^8 for safe integers
  return putEight(b, putSmall(b, p, hi), n - hi * 100000000);
}

/**
 * Per template: the length of the last entry written with it in this call, and where its
 * bytes from `, "length": ` to the end of the template lie in the buffer. Maps of uniform
 * clusters repeat these bytes entry after entry; copying them is cheaper than writing them.
 */
const seenLength = new Float64Array(TAILS.length);
const seenAt = new Int32Array(TAILS.length);
const seenEnd = new Int32Array(TAILS.length);

/**
 * Encodes entries `[from, to)` of `batch` into `b` at `p` (room for `MAX_ENTRY_BYTES` per
 * entry is the caller's business); returns the end. `first` says entry `from` opens the
 * list: no `,\n` before it.
 */
function encodeEntries(b: Uint8Array, p: number, batch: MapBatch, from: number, to: number, first: boolean): number {
  const { start, length, offset, depth, attrs } = batch;
  seenLength.fill(-1);
  for (let i = from; i < to; i++) {
    p = put(b, p, first && i === from ? START : SEP_START);
    p = putUint(b, p, start[i] as number);
    const len = length[i] as number;
    const d = depth[i] as number;
    const a = attrs[i] as number;
    const o = offset[i] as number;
    if (d < TEMPLATE_DEPTHS) {
      const tail = (d * 8 + a) * 2 + (o < 0 ? 0 : 1);
      if (seenLength[tail] === len) {
        // The same bytes as an earlier entry of this call: copy them within the buffer.
        const from = seenAt[tail] as number;
        const end = seenEnd[tail] as number;
        b.copyWithin(p, from, end);
        p += end - from;
      } else {
        const at = p;
        p = put(b, p, LENGTH);
        p = putUint(b, p, len);
        p = put(b, p, TAILS[tail] as Uint8Array);
        seenLength[tail] = len;
        seenAt[tail] = at;
        seenEnd[tail] = p;
      }
    } else {
      p = put(b, p, LENGTH);
      p = putUint(b, p, len);
      p = put(b, p, DEPTH);
      p = putUint(b, p, d);
      p = put(b, p, (o < 0 ? FLAGS_END[a] : FLAGS_OFFSET[a]) as Uint8Array);
    }
    if (o >= 0) {
      p = putUint(b, p, o);
      b[p++] = 0x7d; // }
    }
  }
  return p;
}

/**
 * Writes the batch's entries; `first` says the first of them opens the list (no `,\n`
 * before it). Between entries comes `,\n`, as qemu-img prints it once the next is known.
 */
export function writeMapBatchJson(out: AsciiBuffer, batch: MapBatch, first: boolean): void {
  const count = batch.count;
  if (batch instanceof KernelMapBatch) {
    // A batch of the walk's kernel encodes itself there (the same bytes).
    for (let i = 0; i < count; i += KernelMapBatch.jsonEntries) {
      out.bytes(batch.encodeJson(i, Math.min(count, i + KernelMapBatch.jsonEntries), first && i === 0));
    }
    return;
  }
  if (!seeded) {
    seeded = true;
    seedFeedback();
  }
  for (let i = 0; i < count; ) {
    const p = out.reserve(MAX_ENTRY_BYTES);
    const b = out.target;
    const to = Math.min(count, i + Math.floor((b.length - p) / MAX_ENTRY_BYTES));
    out.commit(encodeEntries(new Uint8Array(b.buffer, b.byteOffset, b.length), p, batch, i, to, first && i === 0));
    i = to;
  }
}

/**
 * Type feedback before the first real batch: a map prints for well under a second, so the
 * optimising compiler must not first speculate on small integers and then throw its code
 * away once offsets pass 2^31 (each recompilation cost ~40 ms of a 2-core machine). Encoding
 * a few entries with large numbers, offsets, deep and shallow depths once, before the first
 * batch this code encodes, fixes the feedback as general numbers. Batches of the walk's
 * kernel encode themselves: a map made of those alone never pays for this (0.3 ms).
 */
function seedFeedback(): void {
  // Every digit count from 1 to 16, each flag combination, with and without offsets.
  const batch = new MapBatch(32);
  for (let i = 0; i < 32; i++) {
    const digits = (i % 16) + 1;
    batch.start[i] = 10 ** (digits - 1) + i;
    batch.length[i] = 10 ** digits - 1;
    batch.offset[i] = i % 3 === 0 ? -1 : 10 ** (16 - (i % 16)) - 1;
    batch.depth[i] = i === 31 ? TEMPLATE_DEPTHS + 1 : i % 4;
    batch.attrs[i] = i % 8;
  }
  batch.count = 32;
  const scratch = new Uint8Array(MAX_ENTRY_BYTES * 32);
  encodeEntries(scratch, 0, batch, 0, 32, true);
  encodeEntries(scratch, 0, batch, 0, 32, false);
}

/** Whether this process seeded the feedback: a start-up snapshot keeps none, so it is reset before the heap is saved. */
let seeded = false;
dropBeforeSnapshot(() => {
  seeded = false;
});
