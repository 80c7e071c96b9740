/**
 * Decompressing compressed clusters on worker threads, so long runs of them (convert,
 * streams, dataExtents) use every core: the main thread only plans and copies, the workers
 * (decode-worker.ts) read the payloads by file descriptor and decode them, a batch at a
 * time.
 *
 * Requests made in one turn of the event loop are batched per image (up to about 1 MiB of
 * output per batch) and sent to the least busy worker. The pool starts lazily, once a
 * process has decoded enough clusters inline to make its start-up worth it, and only with
 * two or more cores; its workers never keep the process alive while idle. When a worker
 * cannot start or dies, the pool is given up and the clusters concerned are decoded inline
 * by the caller: the pool is an accelerator, never a new way to fail.
 */
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import type { RandomAccessFile } from '../../io/random-access-file.js';
import type { DecodeReply, DecodeRequest } from './decode-protocol.js';

/** `node:worker_threads`, loaded when the pool starts (3 ms of every start otherwise). */
function workerThreads(): typeof import('node:worker_threads') {
  return createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
}

/** Clusters decoded inline in a process before the pool starts. */
const INLINE_BEFORE_POOL = 64;
/** Output bytes per batch (at least one cluster). */
const BATCH_BYTES = 1024 * 1024;

/** What became of one cluster sent to the pool. */
export type PoolResult =
  | { readonly kind: 'ok'; readonly data: Uint8Array }
  /** A read or the data failed: `message` says what. */
  | { readonly kind: 'failed'; readonly io: boolean; readonly message: string }
  /** The pool is gone: decode this cluster inline. */
  | { readonly kind: 'inline' };

interface Pending {
  readonly hostOffset: number;
  readonly length: number;
  readonly target: SharedArrayBuffer | null;
  readonly targetOffset: number;
  readonly resolve: (r: PoolResult) => void;
}

interface Slot {
  readonly worker: Worker;
  busy: number;
  readonly inFlight: Map<number, (r: DecodeReply | null) => void>;
}

/** The worker threads (one pool per process). */
class DecodePool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  broken = false;

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const worker = new (workerThreads().Worker)(new URL('./decode-worker.js', import.meta.url));
      const slot: Slot = { worker, busy: 0, inFlight: new Map() };
      worker.on('message', (m: DecodeReply) => this.settle(slot, m.id, m));
      worker.on('error', () => this.fail());
      worker.on('exit', () => this.fail());
      // After the listeners: adding a 'message' listener refs the worker's port again.
      worker.unref();
      this.slots.push(slot);
    }
  }

  /** Runs one batch; resolves null when the pool broke meanwhile. */
  run(request: Omit<DecodeRequest, 'id'>): Promise<DecodeReply | null> {
    if (this.broken) return Promise.resolve(null);
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a));
    const id = this.nextId++;
    return new Promise((resolve) => {
      slot.inFlight.set(id, resolve);
      if (slot.busy++ === 0) slot.worker.ref();
      slot.worker.postMessage({ ...request, id } satisfies DecodeRequest);
    });
  }

  private settle(slot: Slot, id: number, reply: DecodeReply | null): void {
    const done = slot.inFlight.get(id);
    if (done === undefined) return;
    slot.inFlight.delete(id);
    if (--slot.busy === 0) slot.worker.unref();
    done(reply);
  }

  /** A worker failed to start or died: every batch in flight falls back to inline decoding. */
  private fail(): void {
    if (this.broken) return;
    this.broken = true;
    for (const slot of this.slots) {
      for (const id of [...slot.inFlight.keys()]) this.settle(slot, id, null);
      void slot.worker.terminate();
    }
  }
}

let pool: DecodePool | null = null;
let inlineCount = 0;

/** Clusters decoded in this process so far, by where (for tests and benchmarks). */
export interface DecodeStats {
  /** On this thread. */
  inline: number;
  /** On the workers. */
  onWorkers: number;
  /** Workers started (0 until the pool starts). */
  workers: number;
  /** The pool failed and was given up. */
  broken: boolean;
}

const stats: DecodeStats = { inline: 0, onWorkers: 0, workers: 0, broken: false };

/** A snapshot of {@link DecodeStats}. */
export function decodeStats(): DecodeStats {
  return { ...stats, broken: pool?.broken ?? false };
}

/** Counts a cluster decoded on this thread (compressed.ts). */
export function countInlineDecode(): void {
  stats.inline++;
}

/** The pool, or null to decode inline (early in a process, on one core, or after a failure). */
function currentPool(): DecodePool | null {
  if (pool !== null) return pool.broken ? null : pool;
  if (++inlineCount <= INLINE_BEFORE_POOL) return null;
  const cores = availableParallelism();
  if (cores < 2 || process.env['VDISK_DECODE_WORKERS'] === '0') return null;
  pool = new DecodePool(Math.min(2, cores));
  stats.workers = Math.min(2, cores);
  return pool;
}

/**
 * Batches the compressed clusters of one image for the pool. `decode` returns null when the
 * pool is not in use, and the caller decodes inline.
 */
export class DecodeBatcher {
  private pending: Pending[] = [];
  private readonly batchClusters: number;

  constructor(
    private readonly file: RandomAccessFile,
    private readonly clusterSize: number,
    private readonly compressionType: number,
  ) {
    this.batchClusters = Math.max(1, Math.floor(BATCH_BYTES / clusterSize));
  }

  /**
   * Queues the cluster whose payload is `[hostOffset, hostOffset + length)` (within the
   * file), to be decoded into `target` at `targetOffset` when given (the result's `data` is
   * then that range), else into a buffer of the pool's.
   */
  decode(hostOffset: number, length: number, target: SharedArrayBuffer | null = null, targetOffset = 0): Promise<PoolResult> | null {
    if (this.file.fd === undefined) return null;
    const p = currentPool();
    if (p === null) return null;
    return new Promise((resolve) => {
      this.pending.push({ hostOffset, length, target, targetOffset, resolve });
      if (this.pending.length === 1) queueMicrotask(() => this.flush(p));
      else if (this.pending.length >= this.batchClusters) this.flush(p);
    });
  }

  private flush(p: DecodePool): void {
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    const fd = this.file.fd;
    const jobs = new Float64Array(batch.length * 2);
    const targetOffsets = new Float64Array(batch.length);
    const targets = batch.map((c, k) => {
      jobs[2 * k] = c.hostOffset;
      jobs[2 * k + 1] = c.length;
      targetOffsets[k] = c.targetOffset;
      return c.target;
    });
    if (fd === undefined) {
      for (const c of batch) c.resolve({ kind: 'inline' });
      return;
    }
    void p.run({ fd, clusterSize: this.clusterSize, compressionType: this.compressionType, jobs, targets, targetOffsets }).then((reply) => {
      if (reply === null) {
        for (const c of batch) c.resolve({ kind: 'inline' });
        return;
      }
      this.file.counters.reads += reply.reads;
      this.file.counters.bytesRead += reply.bytesRead;
      const failed = new Map(reply.errors.map((e) => [e.index, e]));
      stats.onWorkers += batch.length - reply.errors.length;
      batch.forEach((c, k) => {
        const e = failed.get(k);
        c.resolve(
          e !== undefined
            ? { kind: 'failed', io: e.io, message: e.message }
            : {
                kind: 'ok',
                data: c.target !== null
                  ? new Uint8Array(c.target, c.targetOffset, this.clusterSize)
                  : new Uint8Array(reply.buffer, k * this.clusterSize, this.clusterSize),
              },
        );
      });
    });
  }
}
