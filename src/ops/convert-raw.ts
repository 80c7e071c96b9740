/**
 * `convert -O raw`: the guest bytes of an image into a sparse raw file, byte-identical to
 * `qemu-img convert -O raw` and at least as sparse. Ranges the chain reports as zero are
 * never read; within data, 4 KiB blocks (aligned in the output) that hold only zeroes are
 * not written either (qemu-img's default `-S 4k`), so they stay holes.
 */
import type { Image } from '../image.js';
import { RawOutput } from '../io/raw-output.js';
import { workerPool, workersAllowed } from '../formats/workers/pool.js';
import { convertChunks } from './convert-parallel.js';

/**
 * Chunks in flight by default (each in a shared slot of `chunkSize` bytes, plus one slot
 * being filled). Four keep the writer thread, or both pool workers, supplied. Against
 * eight: 10 MiB of slots instead of 18 (about 2,100 page faults fewer); W4's plain
 * conversion 350 against 362 ms (medians of 61 alternating runs, faster in 36 of them),
 * W5's and the compressed images' unchanged (BENCHMARKS.md, tenth round).
 */
export const DEFAULT_IN_FLIGHT = 4;

/** Progress callback: bytes of the guest covered so far, and the total. */
export type ProgressFn = (done: number, total: number) => void;

/** Options of {@link convertToRaw}. */
export interface ConvertOptions {
  readonly onProgress?: ProgressFn;
  /** Flush the output to stable storage before publishing it (default false, as qemu-img). */
  readonly sync?: boolean;
  /** Bytes per chunk (default 2 MiB) and chunks in flight (default 4: see `DEFAULT_IN_FLIGHT`). */
  readonly chunkSize?: number;
  readonly inFlight?: number;
  /**
   * Whether worker threads may be used — for chunks with compressed clusters, and to write
   * the output (default: with two or more cores; `VDISK_DECODE_WORKERS=0` turns workers off).
   */
  readonly workers?: boolean;
}

/** Converts `img` into the raw file `destination` (replaced atomically on success). */
export async function convertToRaw(img: Image, destination: string, options: ConvertOptions = {}): Promise<void> {
  const total = img.virtualSize;
  const out = await RawOutput.create(destination, total);
  try {
    await convertChunks(img, out, {
      chunkSize: options.chunkSize ?? 2 * 1024 * 1024,
      inFlight: Math.max(1, options.inFlight ?? DEFAULT_IN_FLIGHT),
      pool: options.workers === false ? () => null : workerPool,
      writerThread: options.workers !== false && workersAllowed(),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
    await out.commit(options.sync === true);
    options.onProgress?.(total, total);
  } catch (e) {
    await out.abort();
    throw e;
  }
}
