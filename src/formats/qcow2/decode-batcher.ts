/**
 * Batching the compressed clusters of one image for the worker pool (workers/pool.ts):
 * requests made in one turn of the event loop go as one batch (up to about 1 MiB of
 * output), each cluster decoded straight into the caller's shared memory. The pool is used
 * once a process has decoded enough clusters inline to make its start-up worth it, and only
 * for destinations in a `SharedArrayBuffer`; otherwise, or when it breaks, callers decode
 * inline.
 */
import type { RandomAccessFile } from '../../io/random-access-file.js';
import { countWorkerDecodes, runningPool, workerPool, type WorkerPool } from '../workers/pool.js';
import { dropBeforeSnapshot } from '../../io/snapshot-state.js';

/** Clusters decoded inline in a process before the pool is started for decoding. */
const INLINE_BEFORE_POOL = 64;
/** Output bytes per batch (at least one cluster). */
const BATCH_BYTES = 1024 * 1024;

let inlineCount = 0;
// A run counts its own inline decodes.
dropBeforeSnapshot(() => {
  inlineCount = 0;
});

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
  readonly target: SharedArrayBuffer;
  readonly targetOffset: number;
  readonly resolve: (r: PoolResult) => void;
}

/** The pool to decode on, or null to decode inline (the first clusters of a process). */
function decodePool(): WorkerPool | null {
  const running = runningPool();
  if (running !== null) return running;
  if (++inlineCount <= INLINE_BEFORE_POOL) return null;
  return workerPool();
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
   * file), to be decoded into `target` at `targetOffset` (the result's `data` is then that
   * range); null — decode inline — without a shared target, a descriptor or the pool.
   */
  decode(hostOffset: number, length: number, target: SharedArrayBuffer | null, targetOffset: number): Promise<PoolResult> | null {
    // Only into shared memory: results in buffers of their own would be garbage made per
    // batch, whose collection lags (tens of MiB of peak RSS, measured).
    if (this.file.fd === undefined || target === null) return null;
    const p = decodePool();
    if (p === null) return null;
    return new Promise((resolve) => {
      this.pending.push({ hostOffset, length, target, targetOffset, resolve });
      if (this.pending.length === 1) queueMicrotask(() => this.flush(p));
      else if (this.pending.length >= this.batchClusters) this.flush(p);
    });
  }

  private flush(p: WorkerPool): void {
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
    void p.decode({ fd, clusterSize: this.clusterSize, compressionType: this.compressionType, jobs, targets, targetOffsets }).then((reply) => {
      if (reply === null) {
        for (const c of batch) c.resolve({ kind: 'inline' });
        return;
      }
      this.file.counters.reads += reply.reads;
      this.file.counters.bytesRead += reply.bytesRead;
      const failed = new Map(reply.errors.map((e) => [e.index, e]));
      countWorkerDecodes(batch.length - reply.errors.length);
      batch.forEach((c, k) => {
        const e = failed.get(k);
        c.resolve(
          e !== undefined
            ? { kind: 'failed', io: e.io, message: e.message }
            : {
                kind: 'ok',
                data: new Uint8Array(c.target, c.targetOffset, this.clusterSize),
              },
        );
      });
    });
  }
}
