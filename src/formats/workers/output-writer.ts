/**
 * The output writer of a conversion, on a thread of its own: the main thread fills chunks
 * (page-cache reads, which cost it less than handing each read to the thread pool) and
 * queues each one here; the writer thread finds the zero blocks and writes the rest, one
 * write at a time (writer-loop.ts). Queuing is a few atomic stores in shared memory, not a
 * message or a promise per chunk, and the writes no longer wait for the main thread's event
 * loop between them, nor contend for the file's inode lock as concurrent writes on the
 * thread pool did.
 *
 * Chunks live in a fixed set of shared slots; a slot may be refilled once {@link idle}
 * says its queued writes are done. When the writer thread cannot start or dies, the entries
 * it left are written by this thread, and so is everything queued after: the writer is an
 * accelerator, never a new way to fail.
 */
import type { Worker } from 'node:worker_threads';
import { pwriteExactSync } from '../../io/pread-sync.js';
import { nonZeroSpans } from '../../io/zero-blocks.js';
import { spawnFormatWorker } from './pool.js';
import {
  WRITER_CANCELLED,
  WRITER_CLOSED,
  WRITER_CONTROL_WORDS,
  WRITER_ENTRY_WORDS,
  WRITER_FAILED,
  WRITER_HEAD,
  WRITER_SEQ,
  WRITER_TAIL,
  type WorkerReply,
  type WriterEnd,
} from './protocol.js';

/** `Atomics.waitAsync` (ES2024; in Node since 16), typed here for the ES2023 library. */
type WaitAsync = (a: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

/** What the writer did, once finished. */
export interface WriterResult {
  /** The first failed write (entries after it were not written), or null. */
  readonly error: string | null;
  readonly written: number;
}

/** A writer thread serving one output. */
export class OutputWriter {
  private readonly control = new Int32Array(new SharedArrayBuffer(4 * WRITER_CONTROL_WORDS));
  private readonly queue: Float64Array;
  private readonly pending: Int32Array;
  private readonly chunks: Buffer[];
  private worker: Worker | null = null;
  private head = 0;
  /** Set when the thread is gone: this thread writes instead. */
  private inline = false;
  private inlineError: string | null = null;
  private inlineWritten = 0;
  private end: Promise<WriterEnd | null>;

  /**
   * Starts the writer thread for the output `outFd`, writing from `slots` (the chunk
   * buffers); `writeLock` is the output's write lock (protocol.ts).
   */
  constructor(
    private readonly outFd: number,
    slots: readonly SharedArrayBuffer[],
    writeLock: SharedArrayBuffer,
  ) {
    this.chunks = slots.map((s) => Buffer.from(s));
    this.pending = new Int32Array(new SharedArrayBuffer(4 * slots.length));
    // One entry per slot at most is ever pending, so the queue never fills.
    this.queue = new Float64Array(new SharedArrayBuffer(8 * WRITER_ENTRY_WORDS * slots.length));
    let settle: (r: WriterEnd | null) => void = () => undefined;
    this.end = new Promise((r) => {
      settle = r;
    });
    let worker: Worker;
    try {
      worker = spawnFormatWorker();
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
      kind: 'writer', id: 0, outFd, chunks: slots, control: this.control.buffer as SharedArrayBuffer,
      queue: this.queue.buffer as SharedArrayBuffer, pending: this.pending.buffer as SharedArrayBuffer, writeLock,
    });
  }

  /** Whether a write failed (queued chunks after it are not written). */
  get failed(): boolean {
    return this.inlineError !== null || Atomics.load(this.control, WRITER_FAILED) !== 0;
  }

  /**
   * Queues bytes `[from, to)` of slot `slot`, whose byte 0 belongs at output offset
   * `position`. The slot must not change until {@link idle} resolves for it.
   */
  write(slot: number, from: number, to: number, position: number): void {
    if (this.inline) {
      this.writeHere(slot, from, to, position);
      return;
    }
    const capacity = this.queue.length / WRITER_ENTRY_WORDS;
    const e = (this.head % capacity) * WRITER_ENTRY_WORDS;
    this.queue[e] = slot;
    this.queue[e + 1] = from;
    this.queue[e + 2] = to;
    this.queue[e + 3] = position;
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
    if (r === null) return { error: this.inlineError, written: this.inlineWritten };
    return { error: r.error ?? this.inlineError, written: r.written + this.inlineWritten };
  }

  /** The thread is gone: write what it left, and everything from now on, here. */
  private goInline(): void {
    this.inline = true;
    const capacity = this.queue.length / WRITER_ENTRY_WORDS;
    for (let t = Atomics.load(this.control, WRITER_TAIL); t < this.head; t++) {
      const e = (t % capacity) * WRITER_ENTRY_WORDS;
      const slot = this.queue[e] as number;
      if (Atomics.load(this.control, WRITER_CANCELLED) === 0 && Atomics.load(this.control, WRITER_FAILED) === 0) {
        this.writeHere(slot, this.queue[e + 1] as number, this.queue[e + 2] as number, this.queue[e + 3] as number);
      }
      Atomics.store(this.control, WRITER_TAIL, t + 1);
      Atomics.sub(this.pending, slot, 1);
      Atomics.notify(this.pending, slot);
    }
  }

  private writeHere(slot: number, from: number, to: number, position: number): void {
    if (this.inlineError !== null) return;
    const chunk = this.chunks[slot] as Buffer;
    for (const [a, b] of nonZeroSpans(chunk, position, from, to)) {
      const failed = pwriteExactSync(this.outFd, chunk, a, b - a, position + a);
      if (failed !== null) {
        this.inlineError = failed;
        return;
      }
      this.inlineWritten += b - a;
    }
  }
}
