/**
 * The conversion engine: this thread walks the chain's non-zero runs and plans each chunk
 * (status/read-plan.ts); a chunk with compressed clusters goes to a worker thread, which
 * reads it (file reads and whole compressed clusters by descriptor), finds its zero blocks
 * and writes the rest to the output; any other chunk is read and written from this thread
 * (page-cache copies, where a worker's start-up and hand-offs cost more than they save,
 * measured). Chunks are written at their own offsets, several at once.
 *
 * The result is the same file either way (the same 4 KiB zero detection, aligned in the
 * output). Without a pool (one core, `VDISK_DECODE_WORKERS=0`, or a broken worker) every
 * chunk runs on this thread.
 */
import type { Image } from '../image.js';
import type { RawOutput } from '../io/raw-output.js';
import type { WorkerPool } from '../formats/workers/pool.js';
import { ChunkBuffers } from '../status/chunk-buffers.js';
import { ReadPlan } from '../status/read-plan.js';
import { nonZeroSpans } from '../io/zero-blocks.js';

/** Options of {@link convertChunks}. */
export interface ChunkConvertOptions {
  readonly chunkSize: number;
  /** Chunks planned, read or written at once. */
  readonly inFlight: number;
  /** The worker pool, started on first use; null when workers may not be used. */
  readonly pool: () => WorkerPool | null;
  readonly onProgress?: (done: number, total: number) => void;
}

/** Converts the non-zero runs of `img` into `out`. */
export async function convertChunks(img: Image, out: RawOutput, options: ChunkConvertOptions): Promise<void> {
  const total = img.virtualSize;
  const buffers = new ChunkBuffers(options.chunkSize, options.inFlight + 1);
  const inFlight: Promise<void>[] = [];
  const writeLock = new SharedArrayBuffer(4);
  let failure: unknown = null;
  const here = async (plan: ReadPlan | null, chunk: Buffer, start: number, length: number): Promise<void> => {
    if (plan !== null) await plan.runHere();
    else await img.read(start, length, chunk);
    const writes: Promise<void>[] = [];
    for (const [from, to] of nonZeroSpans(chunk, start)) writes.push(out.write(chunk, from, to, start + from));
    const results = await Promise.allSettled(writes);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  };
  const copyChunk = async (start: number, length: number): Promise<void> => {
    const chunk = buffers.take(length);
    try {
      const plan = new ReadPlan(chunk);
      await img.planRead(start, length, plan);
      const pool = plan.hasDecode ? options.pool() : null;
      if (pool === null) return await here(plan, chunk, start, length);
      await plan.settleLocal();
      const reply = await pool.copy({
        chunk: chunk.buffer as SharedArrayBuffer, length, ops: plan.ops(), outFd: out.fd, outPosition: start, writeLock,
      });
      // The pool broke: this chunk on this thread.
      if (reply === null) return await here(null, chunk, start, length);
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
    for await (const runs of img.contentRunBatches()) for (const run of runs) {
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
