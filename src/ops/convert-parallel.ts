/**
 * The conversion engine: this thread walks the chain's non-zero runs and plans each chunk
 * (status/read-plan.ts) into one of a fixed set of shared chunk slots.
 *
 * - A chunk with compressed clusters goes to a pool worker, which reads it (file reads and
 *   whole compressed clusters by descriptor), finds its zero blocks and writes the rest.
 * - Any other chunk goes to the output writer thread (formats/workers/output-writer.ts),
 *   which finds the zero blocks and writes the rest while this thread plans the next
 *   chunks. While the writer keeps up, it also does the chunk's reads; when it falls
 *   behind, this thread reads the chunk itself first, with synchronous page-cache reads (a
 *   read handed to the thread pool cost this thread about as much as doing it, plus the
 *   wait). In a compressed image whose pool already runs, these chunks go to the pool too.
 *
 * The result is the same file either way (the same 4 KiB zero detection, aligned in the
 * output). Without worker threads (one core, `VDISK_DECODE_WORKERS=0`, `workers: false`)
 * every chunk is read and written from this thread, its writes through the thread pool.
 */
import type { Image } from '../image.js';
import { IoError } from '../errors.js';
import type { RawOutput } from '../io/raw-output.js';
import type { RandomAccessFile } from '../io/random-access-file.js';
import { runningPool, type WorkerPool } from '../formats/workers/pool.js';
import { OutputWriter } from '../formats/workers/output-writer.js';
import type { ReadCountList } from '../formats/workers/read-counts.js';
import { releaseWriteLock } from '../formats/workers/write-lock.js';
import { ReadPlan } from '../status/read-plan.js';
import { nonZeroSpans } from '../io/zero-blocks.js';

/** Options of {@link convertChunks}. */
export interface ChunkConvertOptions {
  readonly chunkSize: number;
  /** Chunks planned, read or written at once. */
  readonly inFlight: number;
  /** The worker pool, started on first use; null when workers may not be used. */
  readonly pool: () => WorkerPool | null;
  /** Whether an output writer thread may be used (as the pool: two or more cores, workers allowed). */
  readonly writerThread: boolean;
  readonly onProgress?: (done: number, total: number) => void;
}

/** Converts the non-zero runs of `img` into `out`. */
export async function convertChunks(img: Image, out: RawOutput, options: ChunkConvertOptions): Promise<void> {
  const total = img.virtualSize;
  const slots = Array.from({ length: options.inFlight + 1 }, () => new SharedArrayBuffer(options.chunkSize));
  const views = slots.map((s) => Buffer.from(s));
  /** Slots this thread is not filling (their queued writes may still be running). */
  const free = slots.map((_, i) => i);
  const inFlight: Promise<void>[] = [];
  const writeLock = new SharedArrayBuffer(4);
  /**
   * Started with the first chunk without compressed clusters, unless the pool runs by then (a
   * compressed image: its other chunks go to the pool too, rather than a third worker
   * costing ~40 ms of CPU to start). Until it is up (~30 ms) this thread does its work.
   */
  let writer: OutputWriter | null = null;
  let failure: unknown = null;
  /** The plan of each slot's chunk (a writer's failure names a slot), and the files of the reads handed to it. */
  const handed: Array<ReadPlan | null> = slots.map(() => null);
  const handedFiles = new Map<number, RandomAccessFile>();
  /** Whether to stop queuing chunks: one failed, or a queued write did. */
  const stopping = (): boolean => failure !== null || writer?.failed === true;

  /** Writes `chunk` from this thread (no writer thread): non-zero spans through the thread pool. */
  const writeHere = async (chunk: Buffer, start: number): Promise<void> => {
    const writes: Promise<void>[] = [];
    for (const [from, to] of nonZeroSpans(chunk, start)) writes.push(out.write(chunk, from, to, start + from));
    const results = await Promise.allSettled(writes);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  };
  const copyChunk = async (slot: number, start: number, length: number): Promise<void> => {
    const chunk = (views[slot] as Buffer).subarray(0, length);
    const plan = new ReadPlan(chunk, { syncReads: true });
    await img.planRead(start, length, plan);
    let pool = plan.hasDecode ? options.pool() : null;
    if (pool === null && writer === null && options.writerThread) {
      pool = runningPool();
      if (pool === null) writer = new OutputWriter(out.fd, slots, writeLock);
    }
    if (pool === null) {
      const w = writer;
      handed[slot] = plan;
      const ops = w !== null && w.backlog <= WRITER_FEED ? plan.ops() : null;
      if (w !== null && ops !== null && OutputWriter.canCarry(ops)) {
        await plan.settleLocal();
        for (const [fd, f] of plan.filesByFd()) handedFiles.set(fd, f);
        w.write(slot, 0, length, start, ops);
        return;
      }
      await plan.runHere();
      if (w !== null) {
        // The writer is behind: this thread finds the zero blocks too.
        for (const [from, to] of nonZeroSpans(chunk, start)) {
          if (w.full) await w.room();
          w.write(slot, from, to, start, null, true);
        }
      } else {
        await writeHere(chunk, start);
      }
      return;
    }
    await plan.settleLocal();
    const reply = await pool.copy({
      chunk: slots[slot] as SharedArrayBuffer, length, ops: plan.ops(), outFd: out.fd, outPosition: start, writeLock,
    });
    // The pool broke: this chunk on this thread. A worker stopped while it held the output's
    // write lock would leave the writer thread waiting for ever: the lock is released here.
    if (reply === null) {
      releaseWriteLock(new Int32Array(writeLock));
      await img.read(start, length, chunk);
      return writeHere(chunk, start);
    }
    countReads(plan.filesByFd(), reply.reads);
    if (reply.error !== null) throw plan.error(reply.error, out.destination);
  };
  /** A slot to fill: one this thread is done with and whose queued writes are over. */
  const takeSlot = async (): Promise<number> => {
    for (;;) {
      const w = writer;
      const k = w === null ? (free.length > 0 ? 0 : -1) : free.findIndex((s) => w.isIdle(s));
      if (k >= 0) return free.splice(k, 1)[0] as number;
      if (free.length > 0 && w !== null) await w.idle(free[0] as number);
      else await inFlight.shift()?.catch(() => undefined);
    }
  };
  try {
    for await (const runs of img.contentRunBatches()) for (const run of runs) {
      if (run.zero) continue;
      for (let o = run.start; o < run.start + run.length; o += options.chunkSize) {
        const len = Math.min(options.chunkSize, run.start + run.length - o);
        const end = o + len;
        const slot = await takeSlot();
        if (stopping()) break;
        const p = copyChunk(slot, o, len).then(() => options.onProgress?.(end, total)).finally(() => free.push(slot));
        p.catch((e: unknown) => {
          if (failure === null) failure = e;
        });
        inFlight.push(p);
        if (inFlight.length >= options.inFlight) await inFlight.shift()?.catch(() => undefined);
      }
      if (stopping()) break;
    }
  } catch (e) {
    if (failure === null) failure = e;
  } finally {
    await Promise.allSettled(inFlight);
  }
  const w = writer as OutputWriter | null; // assigned in copyChunk
  if (failure !== null) {
    await w?.cancel();
    throw failure;
  }
  if (w !== null) {
    const r = await w.finish();
    countReads(handedFiles, r.reads);
    if (r.error !== null) {
      const plan = handed[r.error.slot] ?? null;
      throw plan !== null ? plan.error(r.error, out.destination) : new IoError('IO_WRITE', `'${out.destination}': ${r.error.message}`, { file: out.destination });
    }
  }
}

/** Adds reads another thread made by descriptor to the counters of the files behind them. */
function countReads(files: ReadonlyMap<number, RandomAccessFile>, reads: ReadCountList): void {
  for (const [fd, n, bytes] of reads) {
    const f = files.get(fd);
    if (f !== undefined) {
      f.counters.reads += n;
      f.counters.bytesRead += bytes;
    }
  }
}

/** Largest writer backlog (entries) at which a chunk's reads still go to the writer. */
const WRITER_FEED = 1;
