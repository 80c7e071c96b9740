/**
 * Worker threads for the heavy byte work, so long reads use every core: decompressing
 * compressed clusters (qcow2/decode-batcher.ts) and copying conversion chunks (ops). The
 * workers (format-worker.ts) use the files by descriptor; jobs go to the least busy one.
 *
 * One pool per process, started on first demand and only with two or more cores (or not at
 * all with `VDISK_DECODE_WORKERS=0`); its workers never keep the process alive while idle.
 * When a worker cannot start or dies, the pool is given up, every job in flight resolves
 * null, and callers do the work on their own thread: the pool is an accelerator, never a
 * new way to fail.
 */
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import type { CopyReply, CopyRequest, DecodeReply, DecodeRequest, WorkerReply, WorkerRequest } from './protocol.js';
import { dropBeforeSnapshot } from '../../io/snapshot-state.js';

interface Slot {
  readonly worker: Worker;
  busy: number;
  readonly inFlight: Map<number, (r: WorkerReply | null) => void>;
}

/** `node:worker_threads`, loaded when the pool starts (3 ms of every start otherwise). */
function workerThreads(): typeof import('node:worker_threads') {
  return createRequire(import.meta.url)('node:worker_threads') as typeof import('node:worker_threads');
}

/**
 * Starts one worker thread running format-worker.ts (the pool's, or an output writer), as
 * the CommonJS bundle the build puts next to this module (scripts/build-cli.mjs).
 */
export function spawnFormatWorker(): Worker {
  const w = early;
  if (w !== null) {
    early = null;
    w.off('error', forgetEarly).off('exit', forgetEarly);
    w.ref();
    return w;
  }
  return newFormatWorker();
}

function newFormatWorker(): Worker {
  return new (workerThreads().Worker)(new URL('./format-worker.cjs', import.meta.url));
}

/** A worker started ahead of need ({@link prestartFormatWorker}), not taken yet. */
let early: Worker | null = null;

/**
 * Starts one worker thread now, for the next {@link spawnFormatWorker} to take (an output
 * writer or the pool's first worker): a worker takes tens of milliseconds to start, which
 * a conversion otherwise waits for after opening its image and planning its first chunk.
 * Only when workers are allowed; the worker never keeps the process alive while nobody took
 * it, and one that stops before it is taken is forgotten (the next spawn starts another).
 * `start` starts the thread (tests pass threads that stop).
 */
export function prestartFormatWorker(start: () => Worker = newFormatWorker): void {
  if (early !== null || !workersAllowed()) return;
  let w: Worker;
  try {
    w = start();
  } catch {
    return;
  }
  w.on('error', forgetEarly);
  w.on('exit', forgetEarly);
  w.unref();
  early = w;
}

/** Forgets the early worker it is called on (as a listener: `this`) when it failed or stopped before anyone took it. */
function forgetEarly(this: Worker): void {
  if (early === this) early = null;
}

/** The worker threads. */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  broken = false;

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const worker = spawnFormatWorker();
      const slot: Slot = { worker, busy: 0, inFlight: new Map() };
      worker.on('message', (m: WorkerReply) => this.settle(slot, m.id, m));
      worker.on('error', () => this.fail());
      worker.on('exit', () => this.fail());
      // After the listeners: adding a 'message' listener refs the worker's port again.
      worker.unref();
      this.slots.push(slot);
    }
  }

  /** Workers in the pool. */
  get size(): number {
    return this.slots.length;
  }

  /** Decodes a batch of compressed clusters; resolves null when the pool broke meanwhile. */
  decode(request: Omit<DecodeRequest, 'id' | 'kind'>): Promise<DecodeReply | null> {
    return this.run((id) => ({ ...request, kind: 'decode', id })) as Promise<DecodeReply | null>;
  }

  /** Copies one conversion chunk; resolves null when the pool broke meanwhile. */
  copy(request: Omit<CopyRequest, 'id' | 'kind'>): Promise<CopyReply | null> {
    return this.run((id) => ({ ...request, kind: 'copy', id })) as Promise<CopyReply | null>;
  }

  private run(make: (id: number) => WorkerRequest): Promise<WorkerReply | null> {
    if (this.broken) return Promise.resolve(null);
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a));
    const id = this.nextId++;
    return new Promise((resolve) => {
      slot.inFlight.set(id, resolve);
      if (slot.busy++ === 0) slot.worker.ref();
      slot.worker.postMessage(make(id));
    });
  }

  private settle(slot: Slot, id: number, reply: WorkerReply | null): void {
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

let pool: WorkerPool | null = null;

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
// A run counts its own decodes.
dropBeforeSnapshot(() => {
  Object.assign(stats, { inline: 0, onWorkers: 0, workers: 0, broken: false });
});

/** A snapshot of {@link DecodeStats}. */
export function decodeStats(): DecodeStats {
  return { ...stats, broken: pool?.broken ?? false };
}

/** Counts a cluster decoded on this thread (compressed.ts). */
export function countInlineDecode(): void {
  stats.inline++;
}

/** Counts clusters decoded on the workers. */
export function countWorkerDecodes(n: number): void {
  stats.onWorkers += n;
}

/**
 * The pool (started now if need be), or null to work on this thread: on one core, with
 * `VDISK_DECODE_WORKERS=0`, or after a failure.
 */
export function workerPool(): WorkerPool | null {
  if (pool !== null) return pool.broken ? null : pool;
  if (!workersAllowed()) return null;
  pool = new WorkerPool(Math.min(2, availableParallelism()));
  stats.workers = pool.size;
  return pool;
}

/** Whether worker threads may be used: two or more cores, and not `VDISK_DECODE_WORKERS=0`. */
export function workersAllowed(): boolean {
  return availableParallelism() >= 2 && process.env['VDISK_DECODE_WORKERS'] !== '0';
}

/** The pool if it runs, without starting it. */
export function runningPool(): WorkerPool | null {
  return pool !== null && !pool.broken ? pool : null;
}

