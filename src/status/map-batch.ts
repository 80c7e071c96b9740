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

  /**
   * A batch of `capacity` slots, in arrays of its own or, given `memory` (8-byte aligned),
   * laid out there: start, length and offset as float64 arrays, depth as uint32, attrs
   * as uint8 — {@link MapBatch.bytes} bytes (the flat walk's kernel fills such a batch).
   */
  constructor(readonly capacity = 4096, memory?: { readonly buffer: ArrayBuffer; readonly byteOffset: number }) {
    if (memory === undefined) {
      this.start = new Float64Array(capacity);
      this.length = new Float64Array(capacity);
      this.offset = new Float64Array(capacity);
      this.depth = new Uint32Array(capacity);
      this.attrs = new Uint8Array(capacity);
    } else {
      const { buffer, byteOffset: at } = memory;
      this.start = new Float64Array(buffer, at, capacity);
      this.length = new Float64Array(buffer, at + capacity * 8, capacity);
      this.offset = new Float64Array(buffer, at + capacity * 16, capacity);
      this.depth = new Uint32Array(buffer, at + capacity * 24, capacity);
      this.attrs = new Uint8Array(buffer, at + capacity * 28, capacity);
    }
  }

  /** Bytes a batch of `capacity` slots takes laid out in memory. */
  static bytes(capacity: number): number {
    return capacity * 29;
  }
}
