/**
 * zstd decoding on worker threads, so long runs of zstd clusters (convert, streams) use
 * every core, as zlib does through libuv's thread pool.
 *
 * The main thread walks and bounds the frames (`zstd-frames.ts`); a worker only turns exact
 * frames into bytes with the same WebAssembly decoder. Workers start lazily, after enough
 * clusters were decoded inline to make the start-up worth it, and never keep the process
 * alive (they are unref'd while idle).
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Clusters decoded inline before the pool starts. */
const INLINE_BEFORE_POOL = 64;

/** The worker's program (plain JavaScript, evaluated; loads the decoder by resolved path). */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const z = require(workerData.decoder);
z.init().then(() => {
  parentPort.on('message', (m) => {
    try {
      const outs = m.frames.map((f, i) => z.decompress(f, { defaultHeapSize: Math.max(1, m.capacities[i]) }));
      parentPort.postMessage({ id: m.id, outs }, outs.map((o) => o.buffer));
    } catch (e) {
      parentPort.postMessage({ id: m.id, error: String(e && e.message || e) });
    }
  });
  parentPort.postMessage({ ready: true });
});
`;

interface Reply {
  readonly id?: number;
  readonly outs?: Uint8Array[];
  readonly error?: string;
  readonly ready?: boolean;
}

interface Slot {
  readonly worker: Worker;
  busy: number;
}

/** A small pool of zstd workers. */
class ZstdPool {
  private readonly slots: Slot[] = [];
  private readonly waiting = new Map<number, { resolve(v: Uint8Array[]): void; reject(e: Error): void; slot: Slot }>();
  private nextId = 1;

  constructor(size: number) {
    const decoder = createRequire(import.meta.url).resolve('@bokuweb/zstd-wasm');
    for (let i = 0; i < size; i++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { decoder } });
      const slot: Slot = { worker, busy: 0 };
      worker.on('message', (m: Reply) => this.onReply(slot, m));
      worker.on('error', (e) => this.failAll(slot, e));
      // After the listeners: adding a 'message' listener refs the worker's port again.
      worker.unref();
      this.slots.push(slot);
    }
  }

  /** Decodes exact `frames` (each into at most its capacity) on the least busy worker. */
  decode(frames: Uint8Array[], capacities: number[]): Promise<Uint8Array[]> {
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, slot });
      if (slot.busy++ === 0) slot.worker.ref();
      slot.worker.postMessage({ id, frames, capacities });
    });
  }

  private onReply(slot: Slot, m: Reply): void {
    if (m.id === undefined) return;
    const w = this.waiting.get(m.id);
    if (w === undefined) return;
    this.waiting.delete(m.id);
    if (--slot.busy === 0) slot.worker.unref();
    if (m.error !== undefined || m.outs === undefined) w.reject(new Error(m.error ?? 'zstd worker failed'));
    else w.resolve(m.outs);
  }

  private failAll(slot: Slot, e: Error): void {
    for (const [id, w] of this.waiting) {
      if (w.slot !== slot) continue;
      this.waiting.delete(id);
      w.reject(e);
    }
    slot.busy = 0;
    slot.worker.unref();
  }
}

let pool: ZstdPool | null = null;
let inlineCount = 0;

/**
 * The pool to decode on, or null to decode inline: inline for the first clusters of a
 * process (small reads stay cheap), then on workers when more than one core is available.
 */
export function zstdPool(): ZstdPool | null {
  if (pool !== null) return pool;
  if (++inlineCount <= INLINE_BEFORE_POOL) return null;
  const cores = availableParallelism();
  if (cores < 2) return null;
  pool = new ZstdPool(Math.min(2, cores));
  return pool;
}
