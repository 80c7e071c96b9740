/**
 * The conversion on worker threads: this thread walks the chain and plans each chunk of
 * data (status/read-plan.ts); a worker reads it (file reads and whole compressed clusters
 * by descriptor), finds its zero blocks and writes the rest to the output. Chunks are
 * written at their own offsets, so several run at once on both cores, and this thread
 * copies no byte.
 *
 * Used by convert-raw.ts when the worker pool runs; the result is the same file as the
 * single-thread path (the same 4 KiB zero detection, aligned in the output).
 */
import type { Image } from '../image.js';
import type { RawOutput } from '../io/raw-output.js';
import type { WorkerPool } from '../formats/workers/pool.js';
import { ChunkBuffers } from '../status/chunk-buffers.js';
import { ReadPlan } from '../status/read-plan.js';
import { nonZeroSpans } from './convert-raw.js';

/** Options of {@link convertOnWorkers}. */
export interface ParallelConvertOptions {
  readonly chunkSize: number;
  /** Chunks planned or copying at once. */
  readonly inFlight: number;
  readonly onProgress?: (done: number, total: number) => void;
}

/** Converts the non-zero runs of `img` into `out` on the pool's workers. */
export async function convertOnWorkers(img: Image, out: RawOutput, pool: WorkerPool, options: ParallelConvertOptions): Promise<void> {
  const total = img.virtualSize;
  const buffers = new ChunkBuffers(options.chunkSize, options.inFlight + 1);
  const inFlight: Promise<void>[] = [];
  let failure: unknown = null;
  const copyChunk = async (start: number, length: number): Promise<void> => {
    const chunk = buffers.take(length);
    try {
      const plan = new ReadPlan(chunk);
      await img.planRead(start, length, plan);
      await plan.settleLocal();
      const reply = await pool.copy({
        chunk: chunk.buffer as SharedArrayBuffer, length, ops: plan.ops(), outFd: out.fd, outPosition: start,
      });
      if (reply === null) {
        // The pool broke: this chunk on this thread.
        await img.read(start, length, chunk);
        for (const [from, to] of nonZeroSpans(chunk, start)) await out.write(chunk, from, to, start + from);
        return;
      }
      const files = plan.filesByFd();
      for (const [fd, reads, bytes] of reply.reads) {
        const f = files.get(fd);
        if (f !== undefined) {
          f.counters.reads += reads;
          f.counters.bytesRead += bytes;
        }
      }
      if (reply.error !== null) throw plan.error(reply.error, out.destination);
    } finally {
      buffers.give(chunk);
    }
  };
  try {
    for await (const run of img.contentRuns()) {
      if (run.zero) continue;
      for (let o = run.start; o < run.start + run.length; o += options.chunkSize) {
        const len = Math.min(options.chunkSize, run.start + run.length - o);
        const end = o + len;
        const p = copyChunk(o, len).then(() => options.onProgress?.(end, total));
        p.catch((e: unknown) => {
          if (failure === null) failure = e;
        });
        inFlight.push(p);
        if (inFlight.length >= options.inFlight) await inFlight.shift()?.catch(() => undefined);
        if (failure !== null) throw failure;
      }
    }
  } finally {
    await Promise.allSettled(inFlight);
  }
  if (failure !== null) throw failure;
}
