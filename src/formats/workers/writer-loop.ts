/**
 * The output writer's loop, on a worker thread (format-worker.ts): takes the entries the
 * main thread queues in shared memory (protocol.ts `WriterStart`), fills a chunk from its
 * reads when the entry carries them, finds the chunk's zero blocks and writes the rest, one
 * write at a time and under the output's write lock, until the queue is closed and empty.
 * No message per chunk: the main thread publishes an entry with a few atomic stores, and
 * learns that a chunk is done from its slot's counter.
 */
import { preadExactSync, pwriteExactSync } from '../../io/pread-sync.js';
import { nonZeroSpans } from '../../io/zero-blocks.js';
import {
  OP_READ,
  OP_WORDS,
  OP_ZERO,
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

/** Serves the queue of `m` until it is closed and drained; blocks this thread meanwhile. */
export function runWriter(m: WriterStart): WriterEnd {
  const control = new Int32Array(m.control);
  const queue = new Float64Array(m.queue);
  const pending = new Int32Array(m.pending);
  const lock = new Int32Array(m.writeLock);
  const chunks = m.chunks.map((c) => Buffer.from(c));
  const ops = m.ops.map((o) => new Float64Array(o));
  const reads = new Map<number, [number, number]>();
  const capacity = queue.length / WRITER_ENTRY_WORDS;
  let tail = Atomics.load(control, WRITER_TAIL);
  let error: (JobError & { slot: number }) | null = null;
  let written = 0;

  /** Fills `chunk` from `count` operations of `list`; null, or what failed. */
  const fill = (chunk: Buffer, list: Float64Array, count: number): JobError | null => {
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
        const r = reads.get(fd) ?? [0, 0];
        r[0]++;
        r[1] += length;
        reads.set(fd, r);
      } else return { index: i, io: false, message: `operation kind ${kind} is not the writer's` };
    }
    return null;
  };
  /** Writes the non-zero blocks of `chunk[from, to)` (all of it when `scanned`); null, or what failed. */
  const write = (chunk: Buffer, from: number, to: number, position: number, scanned: boolean): JobError | null => {
    for (const [a, b] of scanned ? [[from, to] as const] : nonZeroSpans(chunk, position, from, to)) {
      while (Atomics.compareExchange(lock, 0, 0, 1) !== 0) Atomics.wait(lock, 0, 1);
      let failed: string | null;
      try {
        failed = pwriteExactSync(m.outFd, chunk, a, b - a, position + a);
      } finally {
        Atomics.store(lock, 0, 0);
        Atomics.notify(lock, 0, 1);
      }
      if (failed !== null) return { index: -1, io: true, message: failed };
      written += b - a;
    }
    return null;
  };

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
    if (error === null && Atomics.load(control, WRITER_CANCELLED) === 0) {
      const chunk = chunks[slot] as Buffer;
      const failed =
        fill(chunk, ops[slot] as Float64Array, queue[e + 4] as number) ??
        write(chunk, queue[e + 1] as number, queue[e + 2] as number, queue[e + 3] as number, queue[e + 5] === 1);
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
  return { kind: 'writer', id: m.id, error, written, reads: [...reads].map(([fd, [n, b]]) => [fd, n, b] as const) };
}
