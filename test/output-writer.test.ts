/**
 * The output writer thread of conversions (formats/workers/output-writer.ts), through the
 * built package (`dist/`, where the worker module exists): entries filled by the caller,
 * entries carrying their reads, and entries already scanned give the expected sparse file
 * whether the thread serves them or (before it is up, or without it) the caller's thread
 * does; a failed write and a failed read are reported with the entry's slot and operation;
 * `cancel` skips what is queued; a writer thread that dies with entries queued, or cannot
 * start, leaves them to the caller's thread, which writes them. (Conversions through it are
 * compared with qemu-img by the conversion tests.)
 */
import { open, readFile, stat, truncate } from 'node:fs/promises';
import { openSync, closeSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from './helpers/cli.js';
import { makeTempDir, removeTempDir } from './helpers/tmp.js';
import { OP_READ, OP_WORDS, OP_ZERO, WRITER_READY } from '../src/formats/workers/protocol.js';

type WriterModule = typeof import('../src/formats/workers/output-writer.js');
let W: WriterModule['OutputWriter'];
let dir = '';

const SLOT = 64 * 1024;

beforeAll(async () => {
  dir = await makeTempDir('output-writer-');
  const mod = (await import(pathToFileURL(path.join(REPO_ROOT, 'dist', 'formats', 'workers', 'output-writer.js')).href)) as WriterModule;
  W = mod.OutputWriter;
});

afterAll(async () => {
  if (dir !== '') await removeTempDir(dir);
});

/** A source file of `n` bytes: byte i is (i * 7 + 1) & 0xff, with zero 4 KiB blocks every 16 KiB. */
function source(name: string, n: number): { file: string; bytes: Buffer } {
  const bytes = Buffer.alloc(n);
  for (let i = 0; i < n; i++) bytes[i] = Math.floor(i / 4096) % 4 === 1 ? 0 : ((i * 7 + 1) & 0xff);
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return { file, bytes };
}

/** Resolves once `cond()` holds (polled; a test that waits for ever times out). */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}

/** A stand-in writer thread: says it is up, takes nothing, and exits a second later. */
function dying(): Worker {
  return new Worker(
    `const { parentPort } = require('node:worker_threads');
     parentPort.once('message', (m) => { Atomics.store(new Int32Array(m.control), ${WRITER_READY}, 1); setTimeout(() => process.exit(3), 1000); });`,
    { eval: true },
  );
}

function ops(list: readonly (readonly number[])[]): Float64Array {
  const f = new Float64Array(list.length * OP_WORDS);
  list.forEach((op, i) => f.set(op, i * OP_WORDS));
  return f;
}

describe('OutputWriter', () => {
  it('writes filled, read and scanned entries as a sparse file, on the thread and (right after the start) on the caller\'s', async () => {
    const { file, bytes } = source('src.bin', 4 * SLOT);
    for (const wait of [false, true]) {
      const outPath = path.join(dir, `out-${String(wait)}.raw`);
      await (await open(outPath, 'w')).close();
      await truncate(outPath, 8 * SLOT);
      const out = openSync(outPath, 'r+');
      const inFd = openSync(file, 'r');
      const slots = [0, 1, 2].map(() => new SharedArrayBuffer(SLOT));
      const w = new W(out, slots, new SharedArrayBuffer(4));
      if (wait) await until(() => w.threaded);
      // Slot 0: filled here, at output 0.
      Buffer.from(slots[0] as SharedArrayBuffer).set(bytes.subarray(0, SLOT));
      w.write(0, [0, SLOT, 0]);
      // Slot 1: reads of the source (two pieces) and a zero fill, at output 2 * SLOT.
      Buffer.from(slots[1] as SharedArrayBuffer).fill(0xee);
      w.write(1, [0, SLOT, 2 * SLOT], ops([[OP_READ, inFd, SLOT, SLOT / 2, 0], [OP_READ, inFd, SLOT + SLOT / 2, SLOT / 4, SLOT / 2], [OP_ZERO, 0, 0, SLOT / 4, (3 * SLOT) / 4]]));
      // Slot 2: scanned here; only [4096, 8192) is written, though the rest is not zero.
      Buffer.from(slots[2] as SharedArrayBuffer).fill(0x55);
      w.write(2, [4096, 8192, 5 * SLOT], null, true);
      await Promise.all([0, 1, 2].map((s) => w.idle(s)));
      const r = await w.finish();
      closeSync(inFd);
      closeSync(out);
      expect(r.error).toBeNull();
      const got = await readFile(outPath);
      const want = Buffer.alloc(8 * SLOT);
      want.set(bytes.subarray(0, SLOT), 0);
      want.set(bytes.subarray(SLOT, SLOT + (3 * SLOT) / 4), 2 * SLOT);
      want.fill(0x55, 5 * SLOT + 4096, 5 * SLOT + 8192);
      expect(got.equals(want)).toBe(true);
      // Zero blocks stay holes: 12 of slot 0's 16 blocks, 9 of the 12 read into slot 1, the scanned one.
      const nonZeroBlocks = 12 + 9 + 1;
      expect((await stat(outPath)).blocks * 512).toBe(nonZeroBlocks * 4096);
      expect(r.written).toBe(nonZeroBlocks * 4096);
      expect(r.reads).toEqual([[inFd, 2, SLOT / 2 + SLOT / 4]]);
    }
  });

  it('reports a failed write with its slot, and a failed read with its operation', async () => {
    const { file } = source('src2.bin', SLOT);
    const outPath = path.join(dir, 'ro.raw');
    writeFileSync(outPath, Buffer.alloc(0));
    for (const wait of [false, true]) {
      const ro = openSync(outPath, 'r'); // writes to it fail (EBADF)
      const slots = [0, 1].map(() => new SharedArrayBuffer(SLOT));
      const w = new W(ro, slots, new SharedArrayBuffer(4));
      if (wait) await until(() => w.threaded);
      Buffer.from(slots[1] as SharedArrayBuffer).fill(1);
      w.write(1, [0, SLOT, 0]);
      await w.idle(1);
      expect(w.failed).toBe(true);
      const r = await w.finish();
      closeSync(ro);
      expect(r.error).toMatchObject({ slot: 1, index: -1, io: true });
      expect(r.error?.message).toMatch(/EBADF/);
    }
    for (const wait of [false, true]) {
      const out = openSync(path.join(dir, 'r.raw'), 'w');
      const inFd = openSync(file, 'r');
      const slots = [0].map(() => new SharedArrayBuffer(SLOT));
      const w = new W(out, slots, new SharedArrayBuffer(4));
      if (wait) await until(() => w.threaded);
      // The second read runs past the end of the source.
      w.write(0, [0, SLOT, 0], ops([[OP_READ, inFd, 0, 4096, 0], [OP_READ, inFd, SLOT - 100, 4096, 4096]]));
      await w.idle(0);
      const r = await w.finish();
      closeSync(inFd);
      closeSync(out);
      expect(r.error).toMatchObject({ slot: 0, index: 1, io: true });
      expect(r.error?.message).toMatch(/short read/);
    }
  });

  it('writes each piece of a batch to its own output offset, on the thread and on the caller\'s', async () => {
    const { file, bytes } = source('pieces.bin', 2 * SLOT);
    for (const wait of [false, true]) {
      const outPath = path.join(dir, `pieces-${String(wait)}.raw`);
      const out = openSync(outPath, 'w');
      const inFd = openSync(file, 'r');
      const slots = [new SharedArrayBuffer(SLOT)];
      const w = new W(out, slots, new SharedArrayBuffer(4));
      if (wait) await until(() => w.threaded);
      // Three pieces read side by side into the slot, written far apart: [0, 8 KiB) of the
      // source at output 40 KiB, [16 KiB, 24 KiB) at 4 KiB (its first block is zero) and
      // [32 KiB, 36 KiB) at 100 KiB + 2 KiB (not block-aligned in the output).
      const K = 1024;
      w.write(0, [0, 8 * K, 40 * K, 8 * K, 16 * K, 4 * K - 8 * K, 16 * K, 20 * K, 102 * K - 16 * K], ops([
        [OP_READ, inFd, 0, 8 * K, 0], [OP_READ, inFd, 16 * K, 8 * K, 8 * K], [OP_READ, inFd, 32 * K, 4 * K, 16 * K],
      ]));
      await w.idle(0);
      const r = await w.finish();
      closeSync(inFd);
      closeSync(out);
      expect(r.error).toBeNull();
      const want = Buffer.alloc(106 * K);
      want.set(bytes.subarray(0, 8 * K), 40 * K);
      want.set(bytes.subarray(16 * K, 24 * K), 4 * K);
      want.set(bytes.subarray(32 * K, 36 * K), 102 * K);
      expect((await readFile(outPath)).equals(want)).toBe(true);
      // Source blocks 1 and 5 are zero: the second half of the first two pieces is not written.
      expect(r.written).toBe(4 * K + 4 * K + 4 * K);
    }
  });

  it('lets the caller take the reads of an entry the writer has not reached, and reports a failed one there', async () => {
    const { file, bytes } = source('steal.bin', 2 * SLOT);
    const outPath = path.join(dir, 'steal.raw');
    const out = openSync(outPath, 'w');
    const inFd = openSync(file, 'r');
    const slots = [0, 1, 2].map(() => new SharedArrayBuffer(SLOT));
    const lock = new Int32Array(new SharedArrayBuffer(4));
    const w = new W(out, slots, lock.buffer as SharedArrayBuffer);
    await until(() => w.threaded);
    expect(w.steal()).toBe(false); // nothing queued
    Atomics.store(lock, 0, 1); // the writer waits on the output's lock at its first write
    // Slot 0, filled here: the writer stops at its write, before slots 1 and 2.
    Buffer.from(slots[0] as SharedArrayBuffer).set(bytes.subarray(0, SLOT));
    w.write(0, [0, SLOT, 0]);
    w.write(1, [0, SLOT, SLOT], ops([[OP_READ, inFd, 0, 4096, 0], [OP_READ, inFd, 2 * SLOT - 100, 4096, 4096]]));
    w.write(2, [0, SLOT, 2 * SLOT], ops([[OP_READ, inFd, SLOT, SLOT, 0]]));
    expect(w.steal()).toBe(true); // slot 2, the newest: read and scanned here
    expect(w.failed).toBe(false);
    expect(w.steal()).toBe(true); // slot 1: its second read fails
    expect(w.failed).toBe(true);
    expect(w.steal()).toBe(false); // slot 0 has no reads to take
    Atomics.store(lock, 0, 0);
    Atomics.notify(lock, 0);
    const r = await w.finish();
    closeSync(inFd);
    closeSync(out);
    expect(r.error).toMatchObject({ slot: 1, index: 1, io: true });
    // Slots 0 and 2 are written (2 from the spans found here); slot 1 is not.
    const want = Buffer.alloc(3 * SLOT);
    want.set(bytes.subarray(0, SLOT), 0);
    want.set(bytes.subarray(SLOT), 2 * SLOT);
    expect((await readFile(outPath)).equals(want)).toBe(true);
    expect(r.written).toBe((2 * SLOT * 3) / 4);
    expect(r.reads).toEqual([[inFd, 2, SLOT + 4096]]);
  });

  it('skips what is still queued when cancelled', async () => {
    const outPath = path.join(dir, 'cancel.raw');
    const out = openSync(outPath, 'w');
    const slots = [0, 1].map(() => new SharedArrayBuffer(4096));
    const lock = new Int32Array(new SharedArrayBuffer(4));
    const w = new W(out, slots, lock.buffer as SharedArrayBuffer);
    await until(() => w.threaded);
    Atomics.store(lock, 0, 1); // the output's write lock, held here: the writer waits on it
    Buffer.from(slots[0] as SharedArrayBuffer).fill(1);
    Buffer.from(slots[1] as SharedArrayBuffer).fill(2);
    w.write(0, [0, 4096, 0]);
    w.write(1, [0, 4096, 4096]);
    // Until the writer waits on the lock to write slot 0: waking one waiter proves it is
    // there (it finds the lock still held and waits again).
    await until(() => Atomics.notify(lock, 0, 1) === 1);
    const cancelled = w.cancel();
    Atomics.store(lock, 0, 0);
    Atomics.notify(lock, 0);
    await cancelled;
    closeSync(out);
    // The entry under way when cancelled is finished; the one queued after it is not.
    expect((await readFile(outPath)).equals(Buffer.alloc(4096, 1))).toBe(true);
  });

  it('writes on the caller\'s thread what a writer that died left queued, and whatever comes after', async () => {
    const failing = (): Worker => {
      throw new Error('no threads here');
    };
    for (const [name, spawn] of [['dying', dying], ['failing', failing]] as const) {
      const outPath = path.join(dir, `${name}.raw`);
      const out = openSync(outPath, 'w');
      const slots = [0, 1].map(() => new SharedArrayBuffer(4096));
      const w = new W(out, slots, new SharedArrayBuffer(4), spawn);
      if (name === 'dying') await until(() => w.threaded); // the stand-in says it is up
      else expect(w.threaded).toBe(false);
      Buffer.from(slots[0] as SharedArrayBuffer).fill(1);
      w.write(0, [0, 4096, 0]);
      if (name === 'dying') expect(w.isIdle(0)).toBe(false); // queued, and nobody takes it
      await w.idle(0); // resolves once the caller's thread has written it
      Buffer.from(slots[1] as SharedArrayBuffer).fill(2);
      w.write(1, [0, 4096, 4096]);
      expect(w.isIdle(1)).toBe(true); // written at once now
      const r = await w.finish();
      closeSync(out);
      expect(r.error).toBeNull();
      expect(r.written).toBe(8192);
      expect((await readFile(outPath)).equals(Buffer.concat([Buffer.alloc(4096, 1), Buffer.alloc(4096, 2)]))).toBe(true);
    }
  });

  it('does not read again, when the writer died, the reads the caller took from it', async () => {
    const { file, bytes } = source('taken.bin', SLOT);
    const outPath = path.join(dir, 'taken.raw');
    const out = openSync(outPath, 'w');
    const inFd = openSync(file, 'r');
    const slots = [new SharedArrayBuffer(SLOT)];
    const w = new W(out, slots, new SharedArrayBuffer(4), dying);
    await until(() => w.threaded); // the stand-in says it is up
    w.write(0, [0, SLOT, 0], ops([[OP_READ, inFd, 0, SLOT, 0]]));
    expect(w.steal()).toBe(true); // read and scanned here; the stand-in never takes it
    closeSync(inFd); // a second read of it would fail now
    await w.idle(0); // written on this thread once the stand-in is gone
    const r = await w.finish();
    closeSync(out);
    expect(r.error).toBeNull();
    expect((await readFile(outPath)).equals(bytes)).toBe(true);
    expect(r.reads).toEqual([[inFd, 1, SLOT]]);
  });
});
