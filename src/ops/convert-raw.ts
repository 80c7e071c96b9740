/**
 * `convert -O raw`: the guest bytes of an image into a sparse raw file, byte-identical to
 * `qemu-img convert -O raw` and at least as sparse. Ranges the chain reports as zero are
 * never read; within data, 4 KiB blocks (aligned in the output) that hold only zeroes are
 * not written either (qemu-img's default `-S 4k`), so they stay holes.
 */
import type { Image } from '../image.js';
import { RawOutput } from '../io/raw-output.js';
import { workerPool } from '../formats/workers/pool.js';
import { ChunkBuffers } from '../status/chunk-buffers.js';
import { convertOnWorkers } from './convert-parallel.js';

/** Size of the blocks checked for zeroes. */
export const SPARSE_BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(SPARSE_BLOCK);

/** Progress callback: bytes of the guest covered so far, and the total. */
export type ProgressFn = (done: number, total: number) => void;

/** Options of {@link convertToRaw}. */
export interface ConvertOptions {
  readonly onProgress?: ProgressFn;
  /** Writes in flight (default 4). */
  readonly writesInFlight?: number;
  /** Flush the output to stable storage before publishing it (default false, as qemu-img). */
  readonly sync?: boolean;
  /** Bytes read per chunk (default 2 MiB) and chunks read ahead (default 4). */
  readonly chunkSize?: number;
  readonly readAhead?: number;
  /**
   * Copy on worker threads (default: when the machine has two or more cores and the
   * image is at least 64 MiB; `VDISK_DECODE_WORKERS=0` turns workers off).
   */
  readonly workers?: boolean;
}

/** Images smaller than this are converted on this thread (workers cost a start-up). */
const WORKERS_MIN_SIZE = 64 * 1024 * 1024;

/** Converts `img` into the raw file `destination` (replaced atomically on success). */
export async function convertToRaw(img: Image, destination: string, options: ConvertOptions = {}): Promise<void> {
  const total = img.virtualSize;
  const out = await RawOutput.create(destination, total);
  const inFlight: Promise<void>[] = [];
  const limit = Math.max(1, options.writesInFlight ?? 4);
  const chunkSize = options.chunkSize ?? 2 * 1024 * 1024;
  const readAhead = options.readAhead ?? 4;
  const pool = (options.workers ?? total >= WORKERS_MIN_SIZE) ? workerPool() : null;
  if (pool !== null) {
    try {
      await convertOnWorkers(img, out, pool, { chunkSize, inFlight: 4 * pool.size, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
      await out.commit(options.sync === true);
      options.onProgress?.(total, total);
    } catch (e) {
      await out.abort();
      throw e;
    }
    return;
  }
  // Each chunk's buffer goes back to the pool once its writes are done.
  const buffers = new ChunkBuffers(chunkSize, readAhead + limit + 2);
  try {
    for await (const ext of img.dataExtents({ chunkSize, readAhead, buffers })) {
      const writes: Promise<void>[] = [];
      for (const [from, to] of nonZeroSpans(ext.data, ext.start)) {
        const w = out.write(ext.data, from, to, ext.start + from);
        w.catch(() => undefined); // observed below; never an unhandled rejection meanwhile
        writes.push(w);
      }
      const done = Promise.all(writes).then(() => buffers.give(ext.data));
      done.catch(() => undefined);
      inFlight.push(done);
      if (inFlight.length >= limit) await inFlight.shift();
      options.onProgress?.(ext.start + ext.length, total);
    }
    await Promise.all(inFlight.splice(0));
    await out.commit(options.sync === true);
    options.onProgress?.(total, total);
  } catch (e) {
    await Promise.allSettled(inFlight);
    await out.abort();
    throw e;
  }
}

/**
 * The spans of `data` (guest offset `start`) to write: runs of output-aligned 4 KiB blocks
 * that are not all zero, merged.
 */
export function* nonZeroSpans(data: Uint8Array, start: number): Generator<[number, number]> {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let runFrom = -1;
  let i = 0;
  while (i < data.length) {
    const blockEnd = Math.min(data.length, i + SPARSE_BLOCK - ((start + i) % SPARSE_BLOCK));
    const len = blockEnd - i;
    const zero = ZERO_BLOCK.compare(buf, i, blockEnd, 0, len) === 0;
    if (!zero && runFrom < 0) runFrom = i;
    if (zero && runFrom >= 0) {
      yield [runFrom, i];
      runFrom = -1;
    }
    i = blockEnd;
  }
  if (runFrom >= 0) yield [runFrom, data.length];
}
