/**
 * One layer's block status with the block layer's rules applied (QEMU 7.2
 * `bdrv_co_block_status`): clamping and EOF, alignment, ALLOCATED synthesis, ZERO for
 * unallocated ranges without a backing file (and, in mapping mode, past the end of a
 * shorter backing file), and the RECURSE probe of the host file in mapping mode only.
 */
import {
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_EOF,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_RECURSE,
  BDRV_BLOCK_ZERO,
  type DriverStatus,
  type StatusMode,
} from '../formats/driver.js';
import type { RandomAccessFile } from '../io/random-access-file.js';
import type { ChainNode } from './chain-node.js';
import type { MaybePromise } from './maybe-async.js';

/** A block-status answer for a run starting at the queried offset. */
export interface LayerAnswer {
  /** BDRV_BLOCK_* flags, including ALLOCATED and EOF. */
  flags: number;
  /** Bytes covered (0 only at or past the end of the layer). */
  pnum: number;
  /** Host offset when OFFSET_VALID. */
  map: number;
  /** File `map` points into when OFFSET_VALID. */
  file: RandomAccessFile | null;
}

/** Work counters of the status layer. */
export interface StatusCounters {
  /** Calls into format drivers (including protocol-node calls for RECURSE). */
  driverCalls: number;
}

/** `bdrv_co_block_status` on `node` alone. */
export function oneLayerStatus(
  node: ChainNode,
  mode: StatusMode,
  offset: number,
  bytes: number,
  counters: StatusCounters,
): MaybePromise<LayerAnswer> {
  const d = node.driver;
  const total = d.length;
  if (offset >= total) return { flags: BDRV_BLOCK_EOF, pnum: 0, map: 0, file: null };
  if (bytes === 0) return { flags: 0, pnum: 0, map: 0, file: null };
  if (bytes > total - offset) bytes = total - offset;
  const align = d.alignment;
  const alignedOffset = align === 1 ? offset : Math.floor(offset / align) * align;
  const alignedBytes = align === 1 ? bytes : Math.ceil((offset + bytes) / align) * align - alignedOffset;
  counters.driverCalls++;
  const r = d.blockStatus(alignedOffset, alignedBytes, mode);
  if (r instanceof Promise) return r.then((x) => afterDriver(node, mode, offset, bytes, alignedOffset, x, counters));
  return afterDriver(node, mode, offset, bytes, alignedOffset, r, counters);
}

/** Steps 5–9 of `bdrv_co_block_status` on the driver's answer `r`. */
function afterDriver(
  node: ChainNode,
  mode: StatusMode,
  offset: number,
  bytes: number,
  alignedOffset: number,
  r: DriverStatus,
  counters: StatusCounters,
): MaybePromise<LayerAnswer> {
  const d = node.driver;
  const total = d.length;
  const shift = offset - alignedOffset;
  let pnum = r.pnum - shift;
  if (pnum > bytes) pnum = bytes;
  let flags = r.flags;
  const map = (flags & BDRV_BLOCK_OFFSET_VALID) !== 0 ? r.map + shift : 0;
  if ((flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) !== 0) {
    flags |= BDRV_BLOCK_ALLOCATED;
  } else if (d.supportsBacking) {
    const backing = node.backing;
    if (backing === null) {
      if (!node.backingSkipped) flags |= BDRV_BLOCK_ZERO;
    } else if (mode === 'mapping' && offset >= backing.driver.length) {
      flags |= BDRV_BLOCK_ZERO;
    }
  }
  const answer: LayerAnswer = { flags: flags & ~BDRV_BLOCK_RECURSE, pnum, map, file: r.file };
  if (
    mode === 'mapping' &&
    (flags & BDRV_BLOCK_RECURSE) !== 0 &&
    (flags & BDRV_BLOCK_ZERO) === 0 &&
    r.file !== null &&
    (flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID)) === (BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID)
  ) {
    const f = oneLayerStatus(node.fileNode(r.file), mode, map, pnum, counters);
    if (f instanceof Promise) return f.then((x) => applyRecurse(answer, x, offset, total));
    return applyRecurse(answer, f, offset, total);
  }
  return finish(answer, offset, total);
}

/** Step 8: the host file's answer refines DATA into ZERO where it has holes. */
function applyRecurse(answer: LayerAnswer, f: LayerAnswer, offset: number, total: number): LayerAnswer {
  if ((f.flags & BDRV_BLOCK_EOF) !== 0 && (f.pnum === 0 || (f.flags & BDRV_BLOCK_ZERO) !== 0)) {
    answer.flags |= BDRV_BLOCK_ZERO;
  } else {
    answer.pnum = f.pnum;
    answer.flags |= f.flags & BDRV_BLOCK_ZERO;
  }
  return finish(answer, offset, total);
}

function finish(a: LayerAnswer, offset: number, total: number): LayerAnswer {
  if (offset + a.pnum === total) a.flags |= BDRV_BLOCK_EOF;
  return a;
}
