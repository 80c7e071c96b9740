/**
 * A batch of merged `qemu-img map` entries in typed arrays (one slot per entry), so that a
 * walk can hand thousands of entries to a printer without an object, a string or a boxed
 * number per entry.
 */

/** `present` bit of {@link MapBatch.attrs}. */
export const MAP_PRESENT = 4;
/** `zero` bit of {@link MapBatch.attrs}. */
export const MAP_ZERO = 2;
/** `data` bit of {@link MapBatch.attrs}. */
export const MAP_DATA = 1;

/** Merged entries `[0, count)`; the arrays hold `capacity` slots. */
export class MapBatch {
  /** Entries filled. */
  count = 0;
  readonly start: Float64Array;
  readonly length: Float64Array;
  /** Host offset, or -1 when the entry has none. */
  readonly offset: Float64Array;
  /** Backing hops to the answering layer (0 = top). */
  readonly depth: Uint32Array;
  /** {@link MAP_PRESENT} | {@link MAP_ZERO} | {@link MAP_DATA}. */
  readonly attrs: Uint8Array;

  constructor(readonly capacity = 4096) {
    this.start = new Float64Array(capacity);
    this.length = new Float64Array(capacity);
    this.offset = new Float64Array(capacity);
    this.depth = new Uint32Array(capacity);
    this.attrs = new Uint8Array(capacity);
  }
}
