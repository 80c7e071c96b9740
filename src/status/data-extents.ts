/**
 * Guest data for consumers: merged status runs over the whole chain (mapping mode, as
 * `qemu-img convert` asks) and, for the runs that do not read as zero, their bytes in
 * bounded chunks with a few reads in flight.
 */
import { BDRV_BLOCK_ZERO } from '../formats/driver.js';
import { blockStatusAbove } from './above.js';
import type { ChainNode } from './chain-node.js';
import type { StatusCounters } from './one-layer.js';
import type { ChunkBuffers } from './chunk-buffers.js';
import { readChain } from './read.js';
import { canWalkFlat } from './flat-map.js';
import { flatContentRunBatches, flatContentRuns, flatSourcedRunBatches } from './flat-content-runs.js';
import type { RandomAccessFile } from '../io/random-access-file.js';

/** A range of guest data with its bytes. */
export interface DataExtent {
  readonly start: number;
  readonly length: number;
  readonly data: Uint8Array;
}

/** A run of the chain: reads as zero, or holds data. */
export interface ContentRun {
  readonly start: number;
  readonly length: number;
  readonly zero: boolean;
}

/**
 * A {@link ContentRun} that also says, when the run is plain data stored in one file, where:
 * byte `i` of the run is byte `hostOffset + i` of `file`. `file` is null for zero runs and
 * for data that must be read through the chain (compressed clusters, or a range the walk's
 * answer cannot vouch for).
 */
export interface SourcedRun extends ContentRun {
  readonly file: RandomAccessFile | null;
  readonly hostOffset: number;
}

/**
 * The runs of {@link contentRunBatches} with their sources where the flat map walk knows
 * them (a run per stored extent, not merged across them); through the general walk every
 * run has `file` null.
 */
export async function* sourcedRunBatches(top: ChainNode, start: number, end: number, counters: StatusCounters): AsyncGenerator<readonly SourcedRun[]> {
  if (canWalkFlat(top)) {
    yield* flatSourcedRunBatches(top, start, end, counters);
    return;
  }
  for await (const runs of contentRunBatches(top, start, end, counters)) yield runs.map((r) => ({ ...r, file: null, hostOffset: 0 }));
}

/**
 * Merged runs of `[start, end)`: `zero` where the chain reads as zero (QEMU ZERO flag).
 * Chains of plain qcow2 layers go through the flat map walk (flat-content-runs.ts).
 */
export async function* contentRuns(top: ChainNode, start: number, end: number, counters: StatusCounters): AsyncGenerator<ContentRun> {
  if (canWalkFlat(top)) yield* flatContentRuns(top, start, end, counters);
  else yield* generalContentRuns(top, start, end, counters);
}

/** {@link contentRuns} in batches (in order): one await per batch, for consumers of many runs. */
export async function* contentRunBatches(top: ChainNode, start: number, end: number, counters: StatusCounters): AsyncGenerator<readonly ContentRun[]> {
  if (canWalkFlat(top)) {
    yield* flatContentRunBatches(top, start, end, counters);
    return;
  }
  let batch: ContentRun[] = [];
  for await (const r of generalContentRuns(top, start, end, counters)) {
    batch.push(r);
    if (batch.length >= 256) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

/** {@link contentRuns} through `blockStatusAbove`, for any chain. */
export async function* generalContentRuns(top: ChainNode, start: number, end: number, counters: StatusCounters): AsyncGenerator<ContentRun> {
  let cur: { start: number; length: number; zero: boolean } | null = null;
  let pos = start;
  while (pos < end) {
    let r = blockStatusAbove(top, null, false, 'mapping', pos, end - pos, counters);
    if (r instanceof Promise) r = await r;
    const zero = (r.flags & BDRV_BLOCK_ZERO) !== 0;
    if (cur !== null && cur.zero === zero) cur.length += r.pnum;
    else {
      if (cur !== null) yield cur;
      cur = { start: pos, length: r.pnum, zero };
    }
    pos += r.pnum;
  }
  if (cur !== null) yield cur;
}

/** Options of {@link dataExtents}. */
export interface DataExtentOptions {
  /** Largest chunk returned (default 1 MiB). */
  readonly chunkSize?: number;
  /** Chunks read ahead (default 4). */
  readonly readAhead?: number;
  /**
   * Where chunk buffers come from (default: a fresh buffer per chunk). With a pool, the
   * consumer gives each chunk's buffer back (`buffers.give(data)`) when done with it; its
   * shared buffers also let worker threads decode compressed clusters straight into them.
   */
  readonly buffers?: ChunkBuffers;
}

/**
 * The bytes of `ranges`, in order, in chunks of at most `chunkSize` bytes, with at most
 * `readAhead` chunks read ahead (each chunk one `readChain`, all of its reads in flight).
 */
export async function* readChunks(
  top: ChainNode,
  ranges: AsyncIterable<{ readonly start: number; readonly length: number }> | Iterable<{ readonly start: number; readonly length: number }>,
  options: DataExtentOptions = {},
): AsyncGenerator<DataExtent & { readonly data: Buffer }> {
  const chunkSize = options.chunkSize ?? 1024 * 1024;
  const readAhead = Math.max(1, options.readAhead ?? 4);
  const queue: Promise<DataExtent & { readonly data: Buffer }>[] = [];
  try {
    for await (const range of ranges) {
      for (let o = range.start; o < range.start + range.length; o += chunkSize) {
        const len = Math.min(chunkSize, range.start + range.length - o);
        // readChain fills every byte. (Not fresh shared memory: a worker that wrote into a
        // SharedArrayBuffer keeps it alive until its own GC runs, 200+ MiB on a long stream.)
        const data = options.buffers?.take(len) ?? Buffer.allocUnsafe(len);
        const at = o;
        const p = readChain(top, at, data, 0, len).then(() => ({ start: at, length: len, data }));
        p.catch(() => undefined); // awaited in order below; never an unhandled rejection meanwhile
        queue.push(p);
        if (queue.length >= readAhead) yield await (queue.shift() as Promise<DataExtent & { data: Buffer }>);
      }
    }
    while (queue.length > 0) yield await (queue.shift() as Promise<DataExtent & { data: Buffer }>);
  } finally {
    await Promise.allSettled(queue);
  }
}

/**
 * The data of `[start, end)` that does not read as zero, in chunks of at most `chunkSize`
 * bytes, in order. At most `readAhead` chunks are buffered.
 */
export function dataExtents(
  top: ChainNode,
  start: number,
  end: number,
  counters: StatusCounters,
  options: DataExtentOptions = {},
): AsyncGenerator<DataExtent> {
  return readChunks(top, nonZeroRuns(contentRuns(top, start, end, counters)), options);
}

async function* nonZeroRuns(runs: AsyncIterable<ContentRun>): AsyncGenerator<ContentRun> {
  for await (const run of runs) if (!run.zero) yield run;
}
