/**
 * The conversion engine: this thread walks the chain's non-zero runs and plans each chunk
 * (status/read-plan.ts) into one of a fixed set of shared chunk slots — runs of plain
 * stored data straight from the walk's answers (their file and host offset: no second walk
 * through the layers), anything else (compressed clusters) through the chain.
 *
 * - A chunk with compressed clusters goes to a pool worker, which reads it (file reads and
 *   whole compressed clusters by descriptor), finds its zero blocks and writes the rest.
 * - Any other chunk goes to the output writer thread (formats/workers/output-writer.ts),
 *   which finds the zero blocks and writes the rest while this thread plans the next
 *   chunks. While the writer keeps up, it also does the chunk's reads; when it falls
 *   behind, this thread reads and scans the chunk itself first, with synchronous page-cache
 *   reads (a read handed to the thread pool cost this thread about as much as doing it,
 *   plus the wait). And when this thread has no slot left to fill, it takes back the reads
 *   of the newest queued chunk the writer has not reached, rather than wait. In a
 *   compressed image whose pool already runs, these chunks go to the pool too.
 * - Where io_uring can be used (uring-writer.ts), the kernel writes those chunks instead
 *   of the writer thread: this thread reads and scans each one and queues its non-zero
 *   spans, and no writer thread is started (~40 ms of CPU).
 * - Short runs (overlay clusters scattered over the disk: one 64 KiB run each) share a
 *   chunk, as pieces that go to their own output offsets: one slot and one queue entry per
 *   chunk rather than per run.
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
import { PIECE_WORDS, WRITER_MAX_OPS, WRITER_MAX_PIECES } from '../formats/workers/protocol.js';
import { ReadPlan } from '../status/read-plan.js';
import { nonZeroPieceSpans } from '../io/zero-blocks.js';
import { UringWriter } from './uring-writer.js';
import { ChunkSlots } from './chunk-slots.js';

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

/**
 * Guest data planned into one slot: pieces of `PIECE_WORDS` numbers — `from, to, position`
 * (bytes `[from, to)` of the slot go to output offset `position + i`; protocol.ts
 * `CopyRequest.pieces`) — filling the slot up to `fill`; `end` is the guest end of the last.
 */
interface Batch {
  readonly slot: number;
  readonly plan: ReadPlan;
  readonly pieces: number[];
  fill: number;
  end: number;
}

/** Operations after which a batch is full (the writer carries up to `WRITER_MAX_OPS`). */
const MAX_BATCH_OPS = WRITER_MAX_OPS / 2;

/** Converts the non-zero runs of `img` into `out`. */
export async function convertChunks(img: Image, out: RawOutput, options: ChunkConvertOptions): Promise<void> {
  const total = img.virtualSize;
  const slots = new ChunkSlots(options.inFlight + 1, options.chunkSize);
  /** Slots this thread is not filling (their queued writes may still be running). */
  const free = Array.from({ length: slots.count }, (_, i) => i);
  const inFlight: Promise<void>[] = [];
  const writeLock = new SharedArrayBuffer(4);
  /**
   * Started with the first chunk without compressed clusters, unless the pool runs by then (a
   * compressed image: its other chunks go to the pool too, rather than a third worker
   * costing ~40 ms of CPU to start). Until it is up (~30 ms) this thread does its work.
   */
  let writer: OutputWriter | null = null;
  /** Instead of the writer thread where io_uring can be used: this thread reads, the kernel writes (uring-writer.ts). */
  let uring: UringWriter | null = null;
  let failure: unknown = null;
  /** The plan of each slot's chunk (a writer's failure names a slot), and the files of the reads handed to it. */
  const handed = new Array<ReadPlan | null>(slots.count).fill(null);
  const handedFiles = new Map<number, RandomAccessFile>();
  /** Whether to stop queuing chunks: one failed, or a queued write did. */
  const stopping = (): boolean => failure !== null || writer?.failed === true || uring?.failed === true;

  /** Writes the non-zero spans of a filled batch's pieces from this thread (no worker, or the pool broke), through the thread pool. */
  const batchHere = async (b: Batch): Promise<void> => {
    const chunk = slots.view(b.slot);
    const spans = nonZeroPieceSpans(chunk, b.pieces);
    const writes: Promise<void>[] = [];
    for (let k = 0; k < spans.length; k += 3) {
      const a = spans[k] as number;
      writes.push(out.write(chunk, a, spans[k + 1] as number, (spans[k + 2] as number) + a));
    }
    const results = await Promise.allSettled(writes);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  };
  const copyBatch = async (b: Batch): Promise<void> => {
    const { slot, plan, pieces } = b;
    const chunk = slots.view(slot);
    let pool = plan.hasDecode ? options.pool() : null;
    if (pool === null && writer === null && uring === null && options.writerThread) {
      pool = runningPool();
      if (pool === null) {
        uring = UringWriter.create(out.fd, slots);
        if (uring === null) writer = new OutputWriter(out.fd, slots.all(), writeLock);
      }
    }
    if (pool === null && uring !== null) {
      handed[slot] = plan;
      // Page-cache reads are done when this returns: the spans are queued at once, before
      // the next chunk is planned and read (awaiting would let that read go first).
      if (!plan.startHere()) await plan.settleLocal();
      uring.write(slot, nonZeroPieceSpans(chunk, pieces));
      return;
    }
    if (pool === null) {
      const w = writer;
      handed[slot] = plan;
      const ops = w !== null && w.backlog <= WRITER_FEED ? plan.ops() : null;
      if (w !== null && ops !== null && OutputWriter.canCarry(ops)) {
        await plan.settleLocal();
        for (const [fd, f] of plan.filesByFd()) handedFiles.set(fd, f);
        if (w.full) await w.room();
        w.write(slot, pieces, ops);
        return;
      }
      await plan.runHere();
      if (w === null) return batchHere(b);
      // The writer is behind, or cannot carry the operations: this thread finds the zero
      // blocks too, and queues the non-zero spans as the pieces of one entry (a slot's room
      // holds every span its pieces can have: protocol.ts writerPieceRoom).
      if (w.full) await w.room();
      w.write(slot, nonZeroPieceSpans(chunk, pieces), null, true);
      return;
    }
    await plan.settleLocal();
    const reply = await pool.copy({
      chunk: slots.buffer(slot), length: b.fill, ops: plan.ops(), outFd: out.fd, pieces: Float64Array.from(pieces), writeLock,
    });
    // The pool broke: this batch on this thread. A worker stopped while it held the output's
    // write lock would leave the writer thread waiting for ever: the lock is released here.
    if (reply === null) {
      releaseWriteLock(new Int32Array(writeLock));
      for (let p = 0; p < pieces.length; p += PIECE_WORDS) {
        const from = pieces[p] as number;
        const to = pieces[p + 1] as number;
        await img.read((pieces[p + 2] as number) + from, to - from, chunk.subarray(from, to));
      }
      return batchHere(b);
    }
    countReads(plan.filesByFd(), reply.reads);
    if (reply.error !== null) throw plan.error(reply.error, out.destination);
  };
  /** A slot to fill: one this thread is done with and whose queued writes are over. */
  const takeSlot = async (): Promise<number> => {
    for (;;) {
      const w = writer ?? uring;
      const k = w === null ? (free.length > 0 ? 0 : -1) : free.findIndex((s) => w.isIdle(s));
      if (k >= 0) return free.splice(k, 1)[0] as number;
      if (free.length > 0 && w !== null) {
        // Rather than wait for the writer, this thread does reads the writer has not reached.
        if (writer === null || !writer.steal()) await w.idle(free[0] as number);
      } else await inFlight.shift()?.catch(() => undefined);
    }
  };
  /** Hands a batch to the thread that writes it. */
  const dispatch = async (b: Batch): Promise<void> => {
    const end = b.end;
    const p = copyBatch(b).then(() => options.onProgress?.(end, total)).finally(() => free.push(b.slot));
    p.catch((e: unknown) => {
      if (failure === null) failure = e;
    });
    inFlight.push(p);
    if (inFlight.length >= options.inFlight) await inFlight.shift()?.catch(() => undefined);
  };
  let batch: Batch | null = null;
  try {
    for await (const runs of img.sourcedRunBatches()) for (const run of runs) {
      if (run.zero) continue;
      for (let o = run.start; o < run.start + run.length; o += options.chunkSize) {
        const len = Math.min(options.chunkSize, run.start + run.length - o);
        // Short runs share a slot: one batch, one queue entry or copy job (overlay clusters
        // scattered over the disk are one 64 KiB run each: a slot and an entry per run cost
        // this thread more than their reads, and kept the writer waiting for work).
        if (batch !== null && (batch.fill + len > options.chunkSize || batch.pieces.length >= WRITER_MAX_PIECES * PIECE_WORDS || batch.plan.opCount >= MAX_BATCH_OPS)) {
          const b = batch;
          batch = null;
          await dispatch(b);
        }
        if (stopping()) break;
        if (batch === null) {
          const slot = await takeSlot();
          if (stopping()) {
            free.push(slot);
            break;
          }
          batch = { slot, plan: new ReadPlan(slots.view(slot), { syncReads: true }), pieces: [], fill: 0, end: 0 };
        }
        // Plain stored data as the status walk found it; anything else through the chain.
        if (run.file !== null) batch.plan.data(run.file, run.hostOffset + (o - run.start), len, batch.fill);
        else await img.planRead(o, len, batch.plan, batch.fill);
        batch.pieces.push(batch.fill, batch.fill + len, o - batch.fill);
        batch.fill += len;
        batch.end = o + len;
      }
      if (stopping()) break;
    }
    if (batch !== null && !stopping()) {
      const b = batch;
      batch = null;
      await dispatch(b);
    }
  } catch (e) {
    if (failure === null) failure = e;
  } finally {
    await Promise.allSettled(inFlight);
  }
  const w = (writer as OutputWriter | null) ?? (uring as UringWriter | null); // assigned in copyBatch
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

/**
 * Largest writer backlog (entries) at which a batch's reads still go to the writer; beyond
 * it this thread reads and scans the batch itself at once (the writer's share is then
 * writing, which only one thread can do at a time).
 */
const WRITER_FEED = 1;

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
