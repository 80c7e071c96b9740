/**
 * The `qemu-img map` walk (JSON form) over a chain of qcow2 layers without encryption,
 * without intermediate objects. It makes exactly the queries `mapEntries` makes — per
 * offset, each layer alone from the top, narrowed to the run found above, until one layer
 * has DATA or ZERO (QEMU 7.2 `get_block_status` in qemu-img.c) — but applies the block
 * layer's rules inline on plain numbers (ALLOCATED; ZERO for unallocated ranges of the
 * bottom layer and past the end of a shorter backing file; the RECURSE probe of the host
 * file when a layer is metadata-preallocated), merges with `entry_mergeable`'s rules, and
 * writes the merged entries into a {@link MapBatch}. A layer asked again from inside its
 * last unallocated run (a layer below answered a shorter piece) is answered from that run
 * without a call. Plain unallocated and zero entries
 * are read through the driver's `plainRun` shortcut; their runs may end sooner than the full
 * lookup's, which changes no merged entry (entries are merged per byte). The human form
 * merges more (`mapEntries` with `human`), but only entries it does not print: its rows are
 * this walk's plain data entries, so `vdisk map` prints them from this walk too
 * (cli/format/map-human-batch.ts). Tests hold this walk to `mapEntries` and the
 * differential suite to qemu-img.
 */
import { BDRV_BLOCK_EOF, BDRV_BLOCK_ZERO } from '../formats/driver.js';
import { newHostMappingOut } from '../formats/qcow2/host-offset.js';
import { SubclusterType } from '../formats/qcow2/l2-entry.js';
import { Qcow2Driver, WALK_READ_AHEAD } from '../formats/qcow2/qcow2-driver.js';
import type { ChainNode } from './chain-node.js';
import { MAP_DATA, MAP_PRESENT, MAP_ZERO, type MapBatch } from './map-batch.js';
import { oneLayerStatus, type StatusCounters } from './one-layer.js';
import { kernelWalk, type FlatWalkResume } from './flat-walk-kernel.js';

/** Hands a full (or the last) batch to the printer; the walk refills it afterwards. */
export type MapBatchSink = (batch: MapBatch) => Promise<void> | undefined;

/** Entries in the first batch handed out. */
const FIRST_BATCH = 16;

/** QEMU's probe size per call (as in `mapEntries`). */
const PROBE_BYTES = 1024 * 1024 * 1024;

/** Whether {@link walkFlatMap} can serve the chain from `top`: qcow2 layers only, none encrypted, all opened. */
export function canWalkFlat(top: ChainNode): boolean {
  for (const n of top.layers()) {
    if (!(n.driver instanceof Qcow2Driver) || n.backingSkipped || n.driver.alignment !== 1) return false;
  }
  return true;
}

/**
 * The name of the host file of the entries the flat walk gives layer `depth` (0 = `top`)
 * with an offset — the file its host offsets point into, as `oneLayerStatus` answers (the
 * human map prints it).
 */
export function flatMapFileName(top: ChainNode, depth: number): string {
  let n: ChainNode | null = top;
  for (let i = 0; i < depth && n !== null; i++) n = n.backing;
  if (n === null || !(n.driver instanceof Qcow2Driver)) throw new RangeError(`no qcow2 layer at depth ${depth} of a flat chain`);
  return n.driver.hostFile.path;
}

/**
 * Walks `[start, end)` of the chain from `top` (see {@link canWalkFlat}), filling `batch`
 * with the merged entries in order and handing it to `sink` whenever it is full and at the
 * end. As `qemu-img map`, a walk with `start >= end` produces one zero-length entry. When a
 * query fails, the entries finished before it are handed out first, then the error is thrown.
 */
export async function walkFlatMap(
  top: ChainNode,
  start: number,
  end: number,
  counters: StatusCounters,
  batch: MapBatch,
  sink: MapBatchSink,
): Promise<void> {
  const nodes = [...top.layers()];
  const drivers = nodes.map((n) => n.driver as Qcow2Driver);
  let resume: FlatWalkResume | undefined;
  if (start < end) {
    // Where tables are read through the thread pool, every layer's first ones are read at
    // once, not one layer after another as the walk first reaches each (the reads overlap;
    // a table never needed costs one read, no error). Synchronous page-cache reads do not
    // overlap: the walk reads each table when it needs it, into a recycled buffer (read
    // ahead, every table of every layer was held at once, in fresh memory: W5-map ~1.5 ms).
    for (const d of drivers) if (!d.readsL2Sync) d.prefetchL2(start, WALK_READ_AHEAD);
    const k = await kernelWalk(drivers, start, end, batch.capacity, counters, sink);
    if (k === 'done') return;
    if (k !== null) resume = k;
  }
  await walkFlatMapJs(nodes, drivers, resume === undefined ? start : resume.pos, end, counters, resume?.batch ?? batch, sink, resume);
}

/**
 * The walk in JavaScript, from `start`; `resume` (where the kernel stopped) gives the
 * batch's finished entries and the merged entry in progress.
 */
async function walkFlatMapJs(
  nodes: readonly ChainNode[],
  drivers: readonly Qcow2Driver[],
  start: number,
  end: number,
  counters: StatusCounters,
  batch: MapBatch,
  sink: MapBatchSink,
  resume: FlatWalkResume | undefined,
): Promise<void> {
  const lengths = drivers.map((d) => d.length);
  const bottom = nodes.length - 1;
  /** Per layer: whether mapping answers probe the host file (known after the first query). */
  const recurses: Array<boolean | undefined> = nodes.map(() => undefined);
  const m = newHostMappingOut();
  /** Per layer: the end and type of its last unallocated run that ended before the span asked. */
  const runEnd = new Float64Array(nodes.length).fill(-1);
  const runType = new Int32Array(nodes.length);
  const { start: bStart, length: bLength, offset: bOffset, depth: bDepth, attrs: bAttrs, capacity } = batch;
  let k = resume?.count ?? 0;
  // The first batch is short: the printer starts at once, and the hand-over path has run
  // before the optimising compiler sees this loop (a path it has not seen costs a deopt).
  let limit = resume !== undefined ? capacity : Math.min(capacity, FIRST_BATCH);
  let cStart = resume?.start ?? start;
  let cLen = resume?.length ?? 0;
  let cDepth = resume?.depth ?? 0;
  let cAttrs = resume?.attrs ?? 0;
  let cOff = resume?.offset ?? -1;
  let pos = start;
  try {
    while (pos < end) {
      let n = Math.min(PROBE_BYTES, end - pos);
      let depth = 0;
      let attrs = 0;
      let pnum = 0;
      let off = -1;
      for (;;) {
        const d = drivers[depth] as Qcow2Driver;
        let recurse = recurses[depth];
        if (recurse === undefined) recurse = recurses[depth] = await d.mappingRecurses();
        // bdrv_co_block_status step 1 (never at or past the end here: see the short-backing rule).
        const len = lengths[depth] as number;
        if (n > len - pos) n = len - pos;
        let t: SubclusterType;
        let bytes: number;
        let map = 0;
        if (pos < (runEnd[depth] as number)) {
          // Inside this layer's last unallocated run: the driver would answer its remainder.
          t = runType[depth] as SubclusterType;
          bytes = (runEnd[depth] as number) - pos;
        } else {
          const plain = d.plainRun(pos, n);
          if (plain !== 0) {
            t = plain > 0 ? SubclusterType.UnallocatedPlain : SubclusterType.ZeroPlain;
            bytes = plain > 0 ? plain : -plain;
          } else {
            const need = d.lookupInto(pos, n, m);
            if (need !== 0) {
              // Synchronously when the file allows it (as QEMU's coroutine waits).
              const p = d.loadL2ForWalk(need, pos);
              if (p !== undefined) await p;
              continue;
            }
            t = m.type;
            bytes = m.bytes;
            map = m.hostOffset;
          }
          counters.driverCalls++;
          if (bytes < n && (t === SubclusterType.UnallocatedPlain || t === SubclusterType.UnallocatedAlloc)) {
            // The run ended before the span asked (at another entry or the table's end): the
            // driver asked again from inside it answers exactly its remainder, over entries
            // it has already checked. Only unallocated runs are asked again (a layer below
            // answered a shorter piece); every other answer ends its piece.
            runEnd[depth] = pos + bytes;
            runType[depth] = t;
          }
        }
        const hasOffset = t === SubclusterType.Normal || t === SubclusterType.ZeroAlloc || t === SubclusterType.UnallocatedAlloc;
        let zero = t === SubclusterType.ZeroPlain || t === SubclusterType.ZeroAlloc;
        const data = t === SubclusterType.Normal || t === SubclusterType.Compressed;
        pnum = bytes < n ? bytes : n;
        const present = zero || data;
        if (!present) {
          // Step 7: unallocated reads as zero without a backing file, and (mapping mode)
          // at or past the end of the backing file; otherwise qemu-img asks the layer below.
          if (depth === bottom || pos >= (lengths[depth + 1] as number)) {
            zero = true;
          } else {
            n = pnum;
            depth++;
            continue;
          }
        }
        if (recurse && data && hasOffset) {
          // Step 8: ask the host file whether the data is a hole.
          let f = oneLayerStatus((nodes[depth] as ChainNode).fileNode(d.offsetFile()), 'mapping', map, pnum, counters);
          if (f instanceof Promise) f = await f;
          if ((f.flags & BDRV_BLOCK_EOF) !== 0 && (f.pnum === 0 || (f.flags & BDRV_BLOCK_ZERO) !== 0)) zero = true;
          else {
            pnum = f.pnum;
            zero = (f.flags & BDRV_BLOCK_ZERO) !== 0;
          }
        }
        attrs = (present ? MAP_PRESENT : 0) | (zero ? MAP_ZERO : 0) | (data ? MAP_DATA : 0);
        off = hasOffset ? map : -1;
        break;
      }
      if (cLen > 0 && cDepth === depth && cAttrs === attrs && (cOff < 0) === (off < 0) && (off < 0 || cOff + cLen === off)) {
        cLen += pnum;
      } else {
        if (cLen > 0) {
          bStart[k] = cStart;
          bLength[k] = cLen;
          bDepth[k] = cDepth;
          bAttrs[k] = cAttrs;
          bOffset[k] = cOff;
          if (++k === limit) {
            batch.count = k;
            k = 0;
            limit = capacity;
            const p = sink(batch);
            if (p !== undefined) await p;
          }
        }
        cStart = pos;
        cLen = pnum;
        cDepth = depth;
        cAttrs = attrs;
        cOff = off;
      }
      pos += pnum;
    }
  } catch (e) {
    // qemu-img has printed every entry finished before the failure.
    if (k > 0) {
      batch.count = k;
      const p = sink(batch);
      if (p !== undefined) await p;
    }
    throw e;
  }
  bStart[k] = cStart;
  bLength[k] = cLen;
  bDepth[k] = cDepth;
  bAttrs[k] = cAttrs;
  bOffset[k] = cOff;
  batch.count = k + 1;
  const p = sink(batch);
  if (p !== undefined) await p;
}
