/**
 * {@link contentRuns} through the flat map walk (flat-map.ts) when it can serve the chain:
 * the same zero / non-zero runs, from the merged `qemu-img map` entries (an entry reads as
 * zero exactly when its ZERO flag is set, in mapping mode, as `bdrv_block_status_above`
 * reports it to `qemu-img convert`), without the general walk's objects per layer answer.
 *
 * The walk pushes batches; this generator pulls them, holding at most two batches of
 * entries, and stops the walk when the consumer stops early.
 */
import { MAP_DATA, MAP_ZERO, MapBatch } from './map-batch.js';
import type { ChainNode } from './chain-node.js';
import type { ContentRun, SourcedRun } from './data-extents.js';
import type { RandomAccessFile } from '../io/random-access-file.js';
import type { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import { walkFlatMap } from './flat-map.js';
import type { StatusCounters } from './one-layer.js';

/** Thrown into the walk when the consumer is gone. */
class Stopped extends Error {}

/** Merged runs of `[start, end)` (see {@link contentRuns}); the chain must pass `canWalkFlat`. */
export async function* flatContentRuns(top: ChainNode, start: number, end: number, counters: StatusCounters): AsyncGenerator<ContentRun> {
  for await (const runs of flatContentRunBatches(top, start, end, counters)) yield* runs;
}

/** The same runs, a batch (one walk batch's worth, in order) at a time: one await per batch, not per run. */
export function flatContentRunBatches(top: ChainNode, start: number, end: number, counters: StatusCounters): AsyncGenerator<ContentRun[]> {
  return runBatches(top, start, end, counters, false);
}

/**
 * The same batches, where each run of plain data stored in one file also says where
 * (data-extents.ts `SourcedRun`: the walk's host offset, in the file of the entry's layer);
 * such runs merge only while that file and its offsets continue.
 */
export function flatSourcedRunBatches(top: ChainNode, start: number, end: number, counters: StatusCounters): AsyncGenerator<SourcedRun[]> {
  return runBatches(top, start, end, counters, true) as AsyncGenerator<SourcedRun[]>;
}

/** The batches of either kind: runs are `SourcedRun`s when `sourced`. */
async function* runBatches(top: ChainNode, start: number, end: number, counters: StatusCounters, sourced: boolean): AsyncGenerator<ContentRun[]> {
  if (start >= end) return;
  const queue: ContentRun[][] = [];
  let cur: { start: number; length: number; zero: boolean; file: RandomAccessFile | null; hostOffset: number } | null = null;
  /** A finished run as handed out: without the source fields unless `sourced`. */
  const out = (r: SourcedRun): ContentRun => (sourced ? r : { start: r.start, length: r.length, zero: r.zero });
  const layers = [...top.layers()];
  /** Per depth: the file host offsets point into; null when it cannot be had (reads then go through the chain and report why). */
  const files: Array<RandomAccessFile | null | undefined> = layers.map(() => undefined);
  const fileAt = (depth: number): RandomAccessFile | null => {
    let f = files[depth];
    if (f === undefined) {
      try {
        f = ((layers[depth] as ChainNode).driver as Qcow2Driver).offsetFile();
      } catch {
        f = null;
      }
      files[depth] = f;
    }
    return f;
  };
  let wake: (() => void) | null = null;
  let resume: (() => void) | null = null;
  let stopped = false;
  let finished = false;
  let failure: unknown = null;
  const signal = (): void => {
    const w = wake;
    wake = null;
    w?.();
  };
  const sink = (b: MapBatch): Promise<void> => {
    if (stopped) return Promise.reject(new Stopped());
    const runs: ContentRun[] = [];
    for (let k = 0; k < b.count; k++) {
      const s = b.start[k] as number;
      const len = b.length[k] as number;
      const attrs = b.attrs[k] as number;
      const zero = (attrs & MAP_ZERO) !== 0;
      if (len === 0) continue;
      let file: RandomAccessFile | null = null;
      let hostOffset = 0;
      if (sourced && !zero && (attrs & MAP_DATA) !== 0 && (b.offset[k] as number) >= 0) {
        file = fileAt(b.depth[k] as number);
        hostOffset = b.offset[k] as number;
        // Data past the end of the file is an error the chain's read reports.
        if (file !== null && hostOffset + len > file.size) file = null;
      }
      if (
        cur !== null && cur.zero === zero && cur.start + cur.length === s &&
        cur.file === file && (file === null || cur.hostOffset + cur.length === hostOffset)
      ) cur.length += len;
      else {
        if (cur !== null) runs.push(out(cur));
        cur = { start: s, length: len, zero, file, hostOffset };
      }
    }
    b.count = 0;
    queue.push(runs);
    signal();
    return new Promise((r) => {
      resume = r;
    });
  };
  const walk = walkFlatMap(top, start, end, counters, new MapBatch(4096), sink).then(
    () => {
      if (cur !== null) queue.push([out(cur)]);
      finished = true;
    },
    (e: unknown) => {
      if (!(e instanceof Stopped)) failure = e;
      finished = true;
    },
  ).finally(signal);
  try {
    for (;;) {
      const runs = queue.shift();
      if (runs !== undefined) {
        const r = resume as (() => void) | null;
        resume = null;
        r?.(); // the walk fills the next batch while these are consumed
        if (runs.length > 0) yield runs;
        continue;
      }
      if (finished) break;
      await new Promise<void>((r) => {
        wake = r;
      });
    }
    if (failure !== null) throw failure;
  } finally {
    stopped = true;
    const r = resume as (() => void) | null;
    resume = null;
    r?.();
    await walk;
  }
}
