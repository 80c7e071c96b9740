/**
 * The output writer of a conversion, on a thread of its own: the main thread plans chunks
 * and queues each one here, filled already or with its reads; the writer thread reads what
 * it was given, finds the zero blocks and writes the rest, one write at a time
 * (writer-loop.ts). Queuing is a few atomic stores in shared memory, not a message or a
 * promise per chunk, and the writes no longer wait for the main thread's event loop between
 * them, nor contend for the file's inode lock as concurrent writes on the thread pool did.
 * The caller hands reads over while the writer keeps up ({@link backlog}), and does them
 * itself otherwise, so both threads stay busy whichever side the work is on.
 *
 * Chunks live in a fixed set of shared slots; a slot may be refilled once {@link idle}
 * says its queued writes are done. Until the writer thread is up (a worker takes some
 * 30 ms to start), and for good when it cannot start or dies, this thread does the work of
 * each entry itself, synchronously — including what a dead writer left: the writer is an
 * accelerator, never a wait or a new way to fail.
 */
import type { Worker } from 'node:worker_threads';
import { spawnFormatWorker } from './pool.js';
import { ReadCounts, type ReadCountList } from './read-counts.js';
import { runEntry, type EntryContext } from './writer-loop.js';
import {
  OP_READ,
  OP_WORDS,
  OP_ZERO,
  WRITER_CANCELLED,
  WRITER_CLOSED,
  WRITER_CONTROL_WORDS,
  WRITER_ENTRY_WORDS,
  WRITER_FAILED,
  WRITER_HEAD,
  WRITER_MAX_OPS,
  WRITER_READY,
  WRITER_SEQ,
  WRITER_TAIL,
  type JobError,
  type WorkerReply,
  type WriterEnd,
} from './protocol.js';

/** `Atomics.waitAsync` (ES2024; in Node since 16), typed here for the ES2023 library. */
type WaitAsync = (a: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** Entries the queue holds (a chunk is one entry, or one per non-zero span when scanned here). */
const QUEUE_ENTRIES = 1024;

/** What the writer did, once finished. */
export interface WriterResult {
  /**
   * The first failure (entries after it were skipped), or null: an operation of the entry
   * of `slot` (`index`), or its write (`index` -1).
   */
  readonly error: (JobError & { readonly slot: number }) | null;
  readonly written: number;
  /** Reads made per descriptor, for the files' counters. */
  readonly reads: ReadCountList;
}

/** A writer thread serving one output. */
export class OutputWriter {
  private readonly control = new Int32Array(new SharedArrayBuffer(4 * WRITER_CONTROL_WORDS));
  private readonly queue: Float64Array;
  private readonly pending: Int32Array;
  private readonly ops: Float64Array[];
  private worker: Worker | null = null;
  private head = 0;
  /** Set when the thread is gone: this thread writes instead. */
  private inline = false;
  /** Entries done on this thread, and the first of them that failed. */
  private readonly here: EntryContext;
  private inlineError: (JobError & { slot: number }) | null = null;
  private end: Promise<WriterEnd | null>;

  /**
   * Starts the writer thread for the output `outFd`, writing from `slots` (the chunk
   * buffers); `writeLock` is the output's write lock (protocol.ts). `spawn` starts the
   * thread (tests pass threads that fail).
   */
  constructor(
    outFd: number,
    slots: readonly SharedArrayBuffer[],
    writeLock: SharedArrayBuffer,
    spawn: () => Worker = spawnFormatWorker,
  ) {
    const ops = slots.map(() => new SharedArrayBuffer(8 * OP_WORDS * WRITER_MAX_OPS));
    this.ops = ops.map((o) => new Float64Array(o));
    // Without the write lock, as before the thread is up or after it is gone.
    this.here = { outFd, chunks: slots.map((s) => Buffer.from(s)), ops: this.ops, lock: null, reads: new ReadCounts(), written: 0 };
    this.pending = new Int32Array(new SharedArrayBuffer(4 * slots.length));
    this.queue = new Float64Array(new SharedArrayBuffer(8 * WRITER_ENTRY_WORDS * QUEUE_ENTRIES));
    let settle: (r: WriterEnd | null) => void = () => undefined;
    this.end = new Promise((r) => {
      settle = r;
    });
    let worker: Worker;
    try {
      worker = spawn();
    } catch {
      this.goInline();
      settle(null);
      return;
    }
    this.worker = worker;
    worker.on('message', (m: WorkerReply) => {
      if (m.kind === 'writer') settle(m);
    });
    const lost = (): void => {
      if (this.worker === null) return;
      this.worker = null;
      this.goInline();
      settle(null);
    };
    worker.on('error', lost);
    worker.on('exit', lost);
    worker.postMessage({
      kind: 'writer', id: 0, outFd, chunks: slots, ops, control: this.control.buffer as SharedArrayBuffer,
      queue: this.queue.buffer as SharedArrayBuffer, pending: this.pending.buffer as SharedArrayBuffer, writeLock,
    });
  }

  /** Whether a write failed (queued chunks after it are not written). */
  get failed(): boolean {
    return this.inlineError !== null || Atomics.load(this.control, WRITER_FAILED) !== 0;
  }

  /** Entries queued and not finished: 0 means the writer thread waits for work. */
  get backlog(): number {
    return this.head - Atomics.load(this.control, WRITER_TAIL);
  }

  /** Whether an entry may carry `ops` (reads and zeroes only, at most `WRITER_MAX_OPS`). */
  static canCarry(ops: Float64Array): boolean {
    if (ops.length > OP_WORDS * WRITER_MAX_OPS) return false;
    for (let o = 0; o < ops.length; o += OP_WORDS) if (ops[o] !== OP_READ && ops[o] !== OP_ZERO) return false;
    return true;
  }

  /** Whether the queue has room for {@link write}. */
  get full(): boolean {
    return this.backlog >= QUEUE_ENTRIES;
  }

  /** Resolves when the queue has room again. */
  async room(): Promise<void> {
    for (;;) {
      const tail = Atomics.load(this.control, WRITER_TAIL);
      if (this.inline || this.head - tail < QUEUE_ENTRIES) return;
      const w = waitAsync(this.control, WRITER_TAIL, tail);
      if (w.async) await w.value;
    }
  }

  /**
   * Queues slot `slot`: first filled by `ops` when given (see {@link canCarry}; the writer
   * reads them), then the non-zero blocks of bytes `[from, to)` written, byte 0 at output
   * offset `position` — or, when `scanned` (the caller found them non-zero), all of them.
   * The queue must not be {@link full}; the slot must not change until {@link idle} says
   * it is done.
   */
  write(slot: number, from: number, to: number, position: number, ops: Float64Array | null = null, scanned = false): void {
    const count = ops === null ? 0 : ops.length / OP_WORDS;
    if (ops !== null) (this.ops[slot] as Float64Array).set(ops);
    if (this.inline || Atomics.load(this.control, WRITER_READY) === 0) {
      this.doHere(slot, from, to, position, count, scanned);
      return;
    }
    const capacity = QUEUE_ENTRIES;
    const e = (this.head % capacity) * WRITER_ENTRY_WORDS;
    this.queue[e] = slot;
    this.queue[e + 1] = from;
    this.queue[e + 2] = to;
    this.queue[e + 3] = position;
    this.queue[e + 4] = count;
    this.queue[e + 5] = scanned ? 1 : 0;
    Atomics.add(this.pending, slot, 1);
    Atomics.store(this.control, WRITER_HEAD, ++this.head);
    Atomics.add(this.control, WRITER_SEQ, 1);
    Atomics.notify(this.control, WRITER_SEQ, 1);
  }

  /** Whether slot `slot` has no queued writes left. */
  isIdle(slot: number): boolean {
    return Atomics.load(this.pending, slot) === 0;
  }

  /** Resolves when slot `slot` has no queued writes left. */
  async idle(slot: number): Promise<void> {
    for (;;) {
      const n = Atomics.load(this.pending, slot);
      if (n === 0) return;
      const w = waitAsync(this.pending, slot, n);
      if (w.async) await w.value;
    }
  }

  /** Closes the queue and waits until everything queued is written (or skipped after a failure). */
  async finish(): Promise<WriterResult> {
    return this.close(false);
  }

  /** Skips what is still queued and stops the writer (the conversion failed). */
  async cancel(): Promise<void> {
    await this.close(true);
  }

  private async close(cancel: boolean): Promise<WriterResult> {
    if (cancel) Atomics.store(this.control, WRITER_CANCELLED, 1);
    Atomics.store(this.control, WRITER_CLOSED, 1);
    Atomics.add(this.control, WRITER_SEQ, 1);
    Atomics.notify(this.control, WRITER_SEQ, 1);
    const r = await this.end;
    const w = this.worker;
    this.worker = null;
    if (w !== null) await w.terminate();
    const reads = new ReadCounts();
    reads.addList(this.here.reads.list());
    reads.addList(r?.reads ?? []);
    return { error: r?.error ?? this.inlineError, written: (r?.written ?? 0) + this.here.written, reads: reads.list() };
  }

  /** The thread is gone: write what it left, and everything from now on, here. */
  private goInline(): void {
    this.inline = true;
    const capacity = QUEUE_ENTRIES;
    for (let t = Atomics.load(this.control, WRITER_TAIL); t < this.head; t++) {
      const e = (t % capacity) * WRITER_ENTRY_WORDS;
      const slot = this.queue[e] as number;
      if (Atomics.load(this.control, WRITER_CANCELLED) === 0 && Atomics.load(this.control, WRITER_FAILED) === 0) {
        const q = this.queue;
        this.doHere(slot, q[e + 1] as number, q[e + 2] as number, q[e + 3] as number, q[e + 4] as number, q[e + 5] === 1);
      }
      Atomics.store(this.control, WRITER_TAIL, t + 1);
      Atomics.sub(this.pending, slot, 1);
      Atomics.notify(this.pending, slot);
    }
  }

  /** One entry on this thread: as the writer thread would do it. */
  private doHere(slot: number, from: number, to: number, position: number, count: number, scanned: boolean): void {
    if (this.inlineError !== null) return;
    const failed = runEntry(this.here, slot, from, to, position, count, scanned);
    if (failed !== null) this.inlineError = { ...failed, slot };
  }
}
