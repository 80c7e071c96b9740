/**
 * The output writer's loop, on a worker thread (format-worker.ts): takes the entries the
 * main thread queues in shared memory (protocol.ts `WriterStart`), finds each chunk's zero
 * blocks and writes the rest, one write at a time and under the output's write lock, until
 * the queue is closed and empty. No message per chunk: the main thread publishes an entry
 * with a few atomic stores, and learns that a chunk is written from its slot's counter.
 */
import { pwriteExactSync } from '../../io/pread-sync.js';
import { nonZeroSpans } from '../../io/zero-blocks.js';
import {
  WRITER_CANCELLED,
  WRITER_CLOSED,
  WRITER_ENTRY_WORDS,
  WRITER_FAILED,
  WRITER_HEAD,
  WRITER_SEQ,
  WRITER_TAIL,
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
  const capacity = queue.length / WRITER_ENTRY_WORDS;
  let tail = Atomics.load(control, WRITER_TAIL);
  let error: string | null = null;
  let written = 0;
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
      const from = queue[e + 1] as number;
      const to = queue[e + 2] as number;
      const position = queue[e + 3] as number;
      for (const [a, b] of nonZeroSpans(chunk, position, from, to)) {
        while (Atomics.compareExchange(lock, 0, 0, 1) !== 0) Atomics.wait(lock, 0, 1);
        let failed: string | null;
        try {
          failed = pwriteExactSync(m.outFd, chunk, a, b - a, position + a);
        } finally {
          Atomics.store(lock, 0, 0);
          Atomics.notify(lock, 0, 1);
        }
        if (failed !== null) {
          error = failed;
          Atomics.store(control, WRITER_FAILED, 1);
          break;
        }
        written += b - a;
      }
    }
    tail++;
    Atomics.store(control, WRITER_TAIL, tail);
    Atomics.sub(pending, slot, 1);
    Atomics.notify(pending, slot);
  }
  return { kind: 'writer', id: m.id, error, written };
}
