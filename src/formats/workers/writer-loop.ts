/**
 * The output writer's loop, on a worker thread (format-worker.ts): takes the entries the
 * main thread queues in shared memory (protocol.ts `WriterStart`), fills a chunk from its
 * reads when the entry carries them, finds the chunk's zero blocks and writes the rest, one
 * write at a time and under the output's write lock, until the queue is closed and empty.
 * No message per chunk: the main thread publishes an entry with a few atomic stores, and
 * learns that a chunk is done from its slot's counter.
 */
import { preadExactSync } from '../../io/pread-sync.js';
import { nonZeroSpans } from '../../io/zero-blocks.js';
import { ReadCounts } from './read-counts.js';
import { pwriteLocked } from './write-lock.js';
import {
  CLAIM_FAILED,
  CLAIM_FILLED,
  CLAIM_MAIN,
  CLAIM_OPEN,
  CLAIM_SCANNED,
  CLAIM_WRITER,
  OP_READ,
  OP_WORDS,
  OP_ZERO,
  PIECE_WORDS,
  WRITER_CANCELLED,
  WRITER_CLOSED,
  WRITER_ENTRY_WORDS,
  WRITER_FAILED,
  WRITER_HEAD,
  WRITER_READY,
  WRITER_SEQ,
  WRITER_TAIL,
  type JobError,
  type WriterEnd,
  type WriterStart,
} from './protocol.js';

/** What queue entries are carried out on, and what they did. */
export interface EntryContext {
  readonly outFd: number;
  /** The chunk slots, the room for each slot's operations, and for its pieces. */
  readonly chunks: readonly Buffer[];
  readonly ops: readonly Float64Array[];
  readonly pieces: readonly Float64Array[];
  /** The output's write lock (write-lock.ts), or null to write without it. */
  readonly lock: Int32Array | null;
  readonly reads: ReadCounts;
  written: number;
}

/**
 * Fills slot `slot` from its first `count` operations (reads and zeroes); null, or what
 * failed.
 */
export function fillChunk(c: EntryContext, slot: number, count: number): JobError | null {
  const chunk = c.chunks[slot] as Buffer;
  const list = c.ops[slot] as Float64Array;
  for (let i = 0; i < count; i++) {
    const o = i * OP_WORDS;
    const kind = list[o] as number;
    const fd = list[o + 1] as number;
    const length = list[o + 3] as number;
    const at = list[o + 4] as number;
    if (kind === OP_ZERO) chunk.fill(0, at, at + length);
    else if (kind === OP_READ) {
      const failed = preadExactSync(fd, chunk.subarray(at, at + length), list[o + 2] as number, length);
      if (failed !== null) return { index: i, io: true, message: failed };
      c.reads.add(fd, length);
    } else return { index: i, io: false, message: `operation kind ${kind} is not the writer's` };
  }
  return null;
}

/**
 * Carries out one queue entry (protocol.ts `WriterStart`): fills slot `slot` from its first
 * `count` operations, then writes the non-zero blocks of each of its pieces (each piece as
 * it is when `scanned`); null, or what failed.
 */
export function runEntry(c: EntryContext, slot: number, count: number, scanned: boolean): JobError | null {
  const failedRead = fillChunk(c, slot, count);
  if (failedRead !== null) return failedRead;
  const chunk = c.chunks[slot] as Buffer;
  const pieces = c.pieces[slot] as Float64Array;
  const end = 1 + (pieces[0] as number) * PIECE_WORDS;
  for (let p = 1; p < end; p += PIECE_WORDS) {
    const from = pieces[p] as number;
    const to = pieces[p + 1] as number;
    const position = pieces[p + 2] as number;
    for (const [a, b] of scanned ? [[from, to] as const] : nonZeroSpans(chunk, position, from, to)) {
      const failed = pwriteLocked(c.lock, c.outFd, chunk, a, b - a, position + a);
      if (failed !== null) return { index: -1, io: true, message: failed };
      c.written += b - a;
    }
  }
  return null;
}

/**
 * Takes the reads of slot `slot`'s entry for the writer thread (protocol.ts `claims`):
 * `CLAIM_WRITER` when this thread is to do them; else what the main thread did with them
 * (`CLAIM_FILLED`, `CLAIM_SCANNED` or `CLAIM_FAILED`), waited for while it does them.
 */
export function claimReads(claims: Int32Array, slot: number): number {
  let state = Atomics.compareExchange(claims, slot, CLAIM_OPEN, CLAIM_WRITER);
  if (state === CLAIM_OPEN) return CLAIM_WRITER;
  while (state === CLAIM_MAIN) {
    Atomics.wait(claims, slot, CLAIM_MAIN);
    state = Atomics.load(claims, slot);
  }
  return state;
}

/** Serves the queue of `m` until it is closed and drained; blocks this thread meanwhile. */
export function runWriter(m: WriterStart): WriterEnd {
  const control = new Int32Array(m.control);
  const queue = new Float64Array(m.queue);
  const pending = new Int32Array(m.pending);
  const claims = new Int32Array(m.claims);
  const c: EntryContext = {
    outFd: m.outFd, chunks: m.chunks.map((b) => Buffer.from(b)), ops: m.ops.map((o) => new Float64Array(o)),
    pieces: m.pieces.map((p) => new Float64Array(p)), lock: new Int32Array(m.writeLock), reads: new ReadCounts(), written: 0,
  };
  const capacity = queue.length / WRITER_ENTRY_WORDS;
  let tail = Atomics.load(control, WRITER_TAIL);
  let error: (JobError & { slot: number }) | null = null;

  Atomics.store(control, WRITER_READY, 1);
  for (;;) {
    // SEQ first: a publish or close after this load makes the wait below return at once.
    const seq = Atomics.load(control, WRITER_SEQ);
    if (tail === Atomics.load(control, WRITER_HEAD)) {
      if (Atomics.load(control, WRITER_CLOSED) !== 0) break;
      Atomics.wait(control, WRITER_SEQ, seq);
      continue;
    }
    const e = (tail % capacity) * WRITER_ENTRY_WORDS;
    const slot = queue[e] as number;
    let count = queue[e + 1] as number;
    let scanned = queue[e + 2] === 1;
    const claim = count > 0 ? claimReads(claims, slot) : CLAIM_WRITER;
    if (claim !== CLAIM_WRITER) count = 0;
    if (claim === CLAIM_SCANNED) scanned = true;
    if (error === null && claim !== CLAIM_FAILED && Atomics.load(control, WRITER_CANCELLED) === 0) {
      const failed = runEntry(c, slot, count, scanned);
      if (failed !== null) {
        error = { ...failed, slot };
        Atomics.store(control, WRITER_FAILED, 1);
      }
    }
    tail++;
    Atomics.store(control, WRITER_TAIL, tail);
    Atomics.sub(pending, slot, 1);
    Atomics.notify(pending, slot);
  }
  return { kind: 'writer', id: m.id, error, written: c.written, reads: c.reads.list() };
}
