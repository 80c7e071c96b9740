/**
 * The output writer of a conversion, on a thread of its own: the main thread plans chunks
 * and queues each one here, filled already or with its reads; the writer thread reads what
 * it was given, finds the zero blocks and writes the rest, one write at a time
 * (writer-loop.ts). Queuing is a few atomic stores in shared memory, not a message or a
 * promise per chunk, and the writes no longer wait for the main thread's event loop between
 * them, nor contend for the file's inode lock as concurrent writes on the thread pool did.
 * The caller hands the reads over with the chunk, and when it has no slot left to fill it
 * takes back the reads of the newest chunk the writer has not reached ({@link steal}), so
 * both threads stay busy whichever side the work is on.
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
import { fillChunk, runEntry, type EntryContext } from './writer-loop.js';
import { nonZeroPieceSpans } from '../../io/zero-blocks.js';
import {
  CLAIM_FAILED,
  CLAIM_FILLED,
  CLAIM_MAIN,
  CLAIM_OPEN,
  CLAIM_SCANNED,
  OP_READ,
  OP_WORDS,
  OP_ZERO,
  PIECE_WORDS,
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
  writerPieceRoom,
  type JobError,
  type WorkerReply,
  type WriterEnd,
} from './protocol.js';

/** `Atomics.waitAsync` (ES2024; in Node since 16), typed here for the ES2023 library. */
type WaitAsync = (a: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
/** `Atomics.waitAsync`, looked up when called (the start-up snapshot is built without `Atomics`). */
function waitAsync(a: Int32Array, index: number, value: number): ReturnType<WaitAsync> {
  return (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync(a, index, value);
}

/** Entries the queue holds (one per chunk). */
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
  private readonly claims: Int32Array;
  private readonly ops: Float64Array[];
  private readonly pieces: Float64Array[];
  /** Per slot, of its last entry that carried operations: their number, and the entry's number. */
  private readonly opCount: Int32Array;
  private readonly queuedAt: Float64Array;
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
    const pieces = slots.map((s) => new SharedArrayBuffer(8 * (1 + PIECE_WORDS * writerPieceRoom(s.byteLength))));
    this.pieces = pieces.map((p) => new Float64Array(p));
    // Without the write lock, as before the thread is up or after it is gone.
    this.here = {
      outFd, chunks: slots.map((s) => Buffer.from(s)), ops: this.ops, pieces: this.pieces, lock: null, reads: new ReadCounts(), written: 0,
    };
    this.pending = new Int32Array(new SharedArrayBuffer(4 * slots.length));
    this.claims = new Int32Array(new SharedArrayBuffer(4 * slots.length)).fill(CLAIM_FILLED);
    this.opCount = new Int32Array(slots.length);
    this.queuedAt = new Float64Array(slots.length);
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
      kind: 'writer', id: 0, outFd, chunks: slots, ops, pieces, control: this.control.buffer as SharedArrayBuffer,
      queue: this.queue.buffer as SharedArrayBuffer, pending: this.pending.buffer as SharedArrayBuffer,
      claims: this.claims.buffer as SharedArrayBuffer, writeLock,
    });
  }

  /**
   * Whether the writer thread serves the queue: entries queued from now on are its (until
   * then, and once it is gone, {@link write} does each entry on this thread at once).
   */
  get threaded(): boolean {
    return !this.inline && Atomics.load(this.control, WRITER_READY) !== 0;
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
   * reads them), then each piece of `pieces` written (protocol.ts `CopyRequest.pieces`:
   * `from, to, position` each, at most protocol.ts `writerPieceRoom`) — its non-zero blocks, or, when
   * `scanned` (the caller found the pieces non-zero), all of it. The queue must not be
   * {@link full}; the slot must not change until {@link idle} says it is done.
   */
  write(slot: number, pieces: ArrayLike<number>, ops: Float64Array | null = null, scanned = false): void {
    const count = ops === null ? 0 : ops.length / OP_WORDS;
    if (ops !== null) (this.ops[slot] as Float64Array).set(ops);
    const room = this.pieces[slot] as Float64Array;
    room[0] = pieces.length / PIECE_WORDS;
    room.set(pieces, 1);
    if (!this.threaded) {
      this.doHere(slot, count, scanned);
      return;
    }
    if (count > 0) {
      this.opCount[slot] = count;
      this.queuedAt[slot] = this.head;
      Atomics.store(this.claims, slot, CLAIM_OPEN);
    }
    const e = (this.head % QUEUE_ENTRIES) * WRITER_ENTRY_WORDS;
    this.queue[e] = slot;
    this.queue[e + 1] = count;
    this.queue[e + 2] = scanned ? 1 : 0;
    Atomics.add(this.pending, slot, 1);
    Atomics.store(this.control, WRITER_HEAD, ++this.head);
    Atomics.add(this.control, WRITER_SEQ, 1);
    Atomics.notify(this.control, WRITER_SEQ, 1);
  }

  /**
   * Does on this thread the reads of the newest queued entry the writer thread has not
   * started (for a caller with no slot to fill, which would otherwise wait while the writer
   * has reads still to do), and finds the chunk's zero blocks; whether there was one. A
   * failed read is reported as the writer's failures are; that entry and those taken after
   * it are not written.
   */
  steal(): boolean {
    if (this.inline) return false;
    for (;;) {
      let slot = -1;
      for (let s = 0; s < this.claims.length; s++) {
        if (Atomics.load(this.claims, s) === CLAIM_OPEN && (slot < 0 || (this.queuedAt[s] as number) > (this.queuedAt[slot] as number))) slot = s;
      }
      if (slot < 0) return false;
      if (Atomics.compareExchange(this.claims, slot, CLAIM_OPEN, CLAIM_MAIN) !== CLAIM_OPEN) continue;
      // After a failure here, entries taken are skipped (as the writer skips those after its own).
      let state = CLAIM_FAILED;
      if (this.inlineError === null) {
        const failed = fillChunk(this.here, slot, this.opCount[slot] as number);
        if (failed !== null) this.inlineError = { ...failed, slot };
        else state = this.listSpans(slot) ? CLAIM_SCANNED : CLAIM_FILLED;
      }
      Atomics.store(this.claims, slot, state);
      Atomics.notify(this.claims, slot);
      return true;
    }
  }

  /**
   * Replaces the pieces of slot `slot` by their non-zero spans, for the writer to write as
   * they are (protocol.ts `CLAIM_SCANNED`); false, leaving them, when the spans do not fit.
   */
  private listSpans(slot: number): boolean {
    const room = this.pieces[slot] as Float64Array;
    const spans = nonZeroPieceSpans(this.here.chunks[slot] as Buffer, room, 1, 1 + (room[0] as number) * PIECE_WORDS);
    if (1 + spans.length > room.length) return false;
    room[0] = spans.length / PIECE_WORDS;
    room.set(spans, 1);
    return true;
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
      const q = this.queue;
      // Reads the main thread did (or failed) are not done again; the writer's, if it
      // died in them, are.
      const claim = (q[e + 1] as number) > 0 ? Atomics.load(this.claims, slot) : CLAIM_OPEN;
      if (claim !== CLAIM_FAILED && Atomics.load(this.control, WRITER_CANCELLED) === 0 && Atomics.load(this.control, WRITER_FAILED) === 0) {
        const filled = claim === CLAIM_FILLED || claim === CLAIM_SCANNED;
        this.doHere(slot, filled ? 0 : (q[e + 1] as number), claim === CLAIM_SCANNED || q[e + 2] === 1);
      }
      Atomics.store(this.control, WRITER_TAIL, t + 1);
      Atomics.sub(this.pending, slot, 1);
      Atomics.notify(this.pending, slot);
    }
  }

  /** One entry on this thread: as the writer thread would do it. */
  private doHere(slot: number, count: number, scanned: boolean): void {
    if (this.inlineError !== null) return;
    const failed = runEntry(this.here, slot, count, scanned);
    if (failed !== null) this.inlineError = { ...failed, slot };
  }
}
