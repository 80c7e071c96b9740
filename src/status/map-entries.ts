/**
 * `qemu-img map`'s walk (QEMU 7.2 `img_map` / `get_block_status` / `entry_mergeable`):
 * per offset, ask each layer alone in mapping mode until one has DATA or ZERO, counting
 * backing hops as depth; then merge neighbours that agree on every printed attribute, the
 * host file and host contiguity.
 *
 * Entries come out in batches so that the common case (metadata cached) runs without a
 * microtask per entry.
 */
import {
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_ZERO,
} from '../formats/driver.js';
import type { ChainNode } from './chain-node.js';
import type { MaybePromise } from './maybe-async.js';
import { oneLayerStatus, type LayerAnswer, type StatusCounters } from './one-layer.js';

/** One `qemu-img map` entry (MapEntry in QEMU's QAPI). */
export interface MapEntry {
  start: number;
  length: number;
  /** Backing hops to the layer that answered (0 = top). */
  depth: number;
  /** The answering layer decides the content (ALLOCATED). */
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Host offset, when known. */
  offset: number | null;
  /** The host file's name, when the offset is known (not printed in JSON, but it blocks merges). */
  filename: string | null;
}

/** Options of the walk. */
export interface MapWalkOptions {
  /** First guest offset (not aligned). */
  readonly start: number;
  /** End of the walk (exclusive), at most the image length. */
  readonly end: number;
  /**
   * Human output merges more: after an entry is printed, a following entry that is not
   * plain data is normalised to `zero: true, data: false` (QEMU's `dump_map_entry`).
   */
  readonly human: boolean;
  /** Entries per batch (default 4096). */
  readonly batch?: number;
}

/** `get_block_status` in qemu-img.c. */
export function mapStatusAt(top: ChainNode, offset: number, bytes: number, counters: StatusCounters): MaybePromise<MapEntry> {
  return mapFrom(top, 0, offset, bytes, counters);
}

/** Asks `bs` and the layers below it until one has DATA or ZERO. */
function mapFrom(bs: ChainNode, depth: number, offset: number, n: number, counters: StatusCounters): MaybePromise<MapEntry> {
  for (;;) {
    const r = oneLayerStatus(bs, 'mapping', offset, n, counters);
    if (r instanceof Promise) return r.then((x) => afterLayer(bs, depth, offset, x, counters));
    const e = entryFor(bs, depth, offset, r);
    if (e !== null) return e;
    bs = bs.backing as ChainNode;
    depth++;
    n = r.pnum;
  }
}

function afterLayer(bs: ChainNode, depth: number, offset: number, r: LayerAnswer, counters: StatusCounters): MaybePromise<MapEntry> {
  const e = entryFor(bs, depth, offset, r);
  return e !== null ? e : mapFrom(bs.backing as ChainNode, depth + 1, offset, r.pnum, counters);
}

/** The entry for `r`, or null when the layer below must be asked. */
function entryFor(bs: ChainNode, depth: number, offset: number, r: LayerAnswer): MapEntry | null {
  let flags = r.flags;
  if ((flags & (BDRV_BLOCK_ZERO | BDRV_BLOCK_DATA)) === 0) {
    if (bs.backing !== null) return null;
    flags = 0;
  }
  const hasOffset = (flags & BDRV_BLOCK_OFFSET_VALID) !== 0;
  return {
    start: offset,
    length: r.pnum,
    depth,
    present: (flags & BDRV_BLOCK_ALLOCATED) !== 0,
    zero: (flags & BDRV_BLOCK_ZERO) !== 0,
    data: (flags & BDRV_BLOCK_DATA) !== 0,
    offset: hasOffset ? r.map : null,
    filename: hasOffset && r.file !== null ? r.file.path : null,
  };
}

/** `entry_mergeable`. */
export function entryMergeable(curr: MapEntry, next: MapEntry): boolean {
  if (curr.length === 0) return false;
  if (
    curr.zero !== next.zero ||
    curr.data !== next.data ||
    curr.depth !== next.depth ||
    curr.present !== next.present ||
    (curr.filename === null) !== (next.filename === null) ||
    (curr.offset === null) !== (next.offset === null)
  ) {
    return false;
  }
  if (curr.filename !== null && curr.filename !== next.filename) return false;
  if (curr.offset !== null && curr.offset + curr.length !== next.offset) return false;
  return true;
}

/** QEMU's probe size per call: up to 1 GiB at a time. */
const PROBE_BYTES = 1024 * 1024 * 1024;

/**
 * The merged entries `qemu-img map` prints for `[start, end)`, in batches. When
 * `start >= end` a single zero-length entry is produced, as qemu-img does.
 */
export async function* mapEntries(top: ChainNode, options: MapWalkOptions, counters: StatusCounters): AsyncGenerator<MapEntry[]> {
  const { end, human } = options;
  const batchSize = options.batch ?? 4096;
  let batch: MapEntry[] = [];
  let curr: MapEntry = {
    start: options.start, length: 0, depth: 0, present: false, zero: false, data: false, offset: null, filename: null,
  };
  while (curr.start + curr.length < end) {
    const offset = curr.start + curr.length;
    let next: MaybePromise<MapEntry>;
    try {
      next = mapStatusAt(top, offset, Math.min(PROBE_BYTES, end - offset), counters);
      if (next instanceof Promise) next = await next;
    } catch (e) {
      // qemu-img has printed every entry finished before the failure: hand those out first.
      if (batch.length > 0) yield batch;
      throw e;
    }
    if (entryMergeable(curr, next)) {
      curr.length += next.length;
      continue;
    }
    if (curr.length > 0) {
      batch.push(curr);
      if (human && curr.data && curr.offset === null) break; // the printer fails here
      if (human && (!next.data || next.zero)) {
        next.data = false;
        next.zero = true;
      }
      if (batch.length >= batchSize) {
        yield batch;
        batch = [];
      }
    }
    curr = next;
  }
  const last = batch[batch.length - 1];
  if (!(human && last !== undefined && last.data && last.offset === null)) batch.push(curr);
  yield batch;
}
