/**
 * Block status over a chain of layers (QEMU `bdrv_co_common_block_status_above`).
 *
 * Walks from `top` down towards `base`, narrowing the run to what every visited layer
 * agrees on, and stops at the first layer that allocates the range. A lower layer that is
 * shorter than the range's start counts as allocated zeroes there. `depth` is the number of
 * layers visited (1 = top), as QEMU counts it.
 */
import { BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_EOF, BDRV_BLOCK_ZERO, type StatusMode } from '../formats/driver.js';
import type { ChainNode } from './chain-node.js';
import { andThen, type MaybePromise } from './maybe-async.js';
import { oneLayerStatus, type LayerAnswer, type StatusCounters } from './one-layer.js';

/** An answer over the chain, with the depth at which it was decided. */
export interface ChainAnswer extends LayerAnswer {
  /** Layers visited: 1 = `top`; 0 when nothing was queried. */
  depth: number;
}

/**
 * Status of `[offset, offset + bytes)` from `top` down to `base` (null: the whole chain).
 * With `includeBase`, `base` itself is also asked (needs a non-null base).
 */
export function blockStatusAbove(
  top: ChainNode,
  base: ChainNode | null,
  includeBase: boolean,
  mode: StatusMode,
  offset: number,
  bytes: number,
  counters: StatusCounters,
): MaybePromise<ChainAnswer> {
  if (!includeBase && top === base) return { flags: 0, pnum: bytes, map: 0, file: null, depth: 0 };
  return andThen(oneLayerStatus(top, mode, offset, bytes, counters), (first) => {
    const r: ChainAnswer = { ...first, depth: 1 };
    if (r.pnum === 0 || (r.flags & BDRV_BLOCK_ALLOCATED) !== 0 || top === base) return r;
    const eof = (r.flags & BDRV_BLOCK_EOF) !== 0 ? offset + r.pnum : -1;
    const step = (p: ChainNode | null, rest: number, depth: number, last: ChainAnswer): MaybePromise<ChainAnswer> => {
      if (p === null || (!includeBase && p === base)) return done(last, offset, eof);
      return andThen(oneLayerStatus(p, mode, offset, rest, counters), (a) => {
        const cur: ChainAnswer = { ...a, depth: depth + 1 };
        if (cur.pnum === 0) {
          // p is shorter than the layer above: beyond its end it reads as zero.
          return done({ flags: BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED, pnum: rest, map: 0, file: null, depth: depth + 1 }, offset, eof);
        }
        if ((cur.flags & BDRV_BLOCK_ALLOCATED) !== 0) {
          cur.flags &= ~BDRV_BLOCK_EOF;
          return done(cur, offset, eof);
        }
        if (p === base) return done(cur, offset, eof);
        return step(p.backing, cur.pnum, depth + 1, cur);
      });
    };
    return step(top.backing, r.pnum, 1, r);
  });
}

function done(r: ChainAnswer, offset: number, eof: number): ChainAnswer {
  if (eof >= 0 && offset + r.pnum === eof) r.flags |= BDRV_BLOCK_EOF;
  return r;
}
