/**
 * The `qemu-img map` walk for the commonest case — one qcow2 layer, no backing file, no
 * encryption — without intermediate objects: each answer of the qcow2 lookup goes through
 * the block layer's rules inline (ALLOCATED, ZERO for unallocated ranges without a backing
 * file, the RECURSE probe of the host file when the image is metadata-preallocated) and
 * is merged on plain numbers with `entry_mergeable`'s rules. Results are exactly those of
 * `mapEntries` (JSON form; the human form merges differently and uses the general walk);
 * the differential tests hold both to qemu-img's output.
 */
import {
  BDRV_BLOCK_EOF,
  BDRV_BLOCK_ZERO,
} from '../formats/driver.js';
import { newHostMappingOut } from '../formats/qcow2/host-offset.js';
import { SubclusterType } from '../formats/qcow2/l2-entry.js';
import { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import type { ChainNode } from './chain-node.js';
import { oneLayerStatus, type StatusCounters } from './one-layer.js';

/** Receives merged entries; `offset` is -1 when the entry has none. Depth is always 0. */
export type FlatMapSink = (start: number, length: number, present: boolean, zero: boolean, data: boolean, offset: number) => void;

/** L2 tables read ahead of the walk. */
const L2_READ_AHEAD = 32;

/** QEMU's probe size per call (as in `mapEntries`). */
const PROBE_BYTES = 1024 * 1024 * 1024;

/** Whether {@link walkFlatMap} can serve `top`. */
export function canWalkFlat(top: ChainNode): boolean {
  return top.driver instanceof Qcow2Driver && top.backing === null && !top.backingSkipped && top.driver.alignment === 1;
}

/**
 * Walks `[start, end)` of a single qcow2 layer (see {@link canWalkFlat}), calling `sink`
 * for every merged entry in order, and `pause` every few thousand answers (to flush
 * output). As `qemu-img map`, a walk with `start >= end` produces one zero-length entry.
 */
export async function walkFlatMap(
  top: ChainNode,
  start: number,
  end: number,
  counters: StatusCounters,
  sink: FlatMapSink,
  pause: () => Promise<void> | undefined,
): Promise<void> {
  const d = top.driver as Qcow2Driver;
  const recurse = start < end && (await d.mappingRecurses());
  const m = newHostMappingOut();
  let cStart = start;
  let cLen = 0;
  let cPresent = false;
  let cZero = false;
  let cData = false;
  let cOff = -1;
  let pos = start;
  let answers = 0;
  while (pos < end) {
    const need = d.lookupInto(pos, Math.min(PROBE_BYTES, end - pos), m);
    if (need !== 0) {
      if (!d.loadL2Sync(need)) {
        d.prefetchL2(pos, L2_READ_AHEAD);
        await d.loadL2(need);
      }
      continue;
    }
    counters.driverCalls++;
    const t = m.type;
    const hasOffset = t === SubclusterType.Normal || t === SubclusterType.ZeroAlloc || t === SubclusterType.UnallocatedAlloc;
    let zero = t === SubclusterType.ZeroPlain || t === SubclusterType.ZeroAlloc;
    const data = t === SubclusterType.Normal || t === SubclusterType.Compressed;
    const present = zero || data;
    if (!present) zero = true; // no backing file: unallocated reads as zero
    let pnum = m.bytes;
    const map = m.hostOffset;
    if (recurse && data && hasOffset) {
      // bdrv_co_block_status step 8: ask the host file whether the data is a hole.
      let f = oneLayerStatus(top.fileNode(d.offsetFile()), 'mapping', map, pnum, counters);
      if (f instanceof Promise) f = await f;
      if ((f.flags & BDRV_BLOCK_EOF) !== 0 && (f.pnum === 0 || (f.flags & BDRV_BLOCK_ZERO) !== 0)) zero = true;
      else {
        pnum = f.pnum;
        zero = (f.flags & BDRV_BLOCK_ZERO) !== 0;
      }
    }
    if (
      cLen > 0 &&
      cZero === zero &&
      cData === data &&
      cPresent === present &&
      (cOff >= 0) === hasOffset &&
      (!hasOffset || cOff + cLen === map)
    ) {
      cLen += pnum;
    } else {
      if (cLen > 0) sink(cStart, cLen, cPresent, cZero, cData, cOff);
      cStart = pos;
      cLen = pnum;
      cPresent = present;
      cZero = zero;
      cData = data;
      cOff = hasOffset ? map : -1;
    }
    pos += pnum;
    if ((++answers & 4095) === 0) {
      const p = pause();
      if (p !== undefined) await p;
    }
  }
  sink(cStart, cLen, cPresent, cZero, cData, cOff);
}
