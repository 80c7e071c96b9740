/**
 * The chunk slots of a conversion (ops/convert-parallel.ts): a fixed number of shared
 * buffers of one size, each allocated when first used. A new SharedArrayBuffer is zeroed
 * and its pages faulted in — about 0.5 ms per 2 MiB slot — so allocating the five slots
 * at once held the first read back by ~2.5 ms; one at a time, the later ones are allocated
 * while the first chunks are being written.
 */

/** `count` shared buffers of `size` bytes, allocated on first use. */
export class ChunkSlots {
  private readonly buffers: Array<SharedArrayBuffer | undefined>;
  private readonly views: Array<Buffer | undefined>;

  constructor(readonly count: number, readonly size: number) {
    this.buffers = new Array<SharedArrayBuffer | undefined>(count).fill(undefined);
    this.views = new Array<Buffer | undefined>(count).fill(undefined);
  }

  /** Slot `i`'s buffer (0 ≤ i < count), allocated now if it was not yet. */
  buffer(i: number): SharedArrayBuffer {
    if (!Number.isInteger(i) || i < 0 || i >= this.count) throw new RangeError(`chunk slot ${i} out of 0..${this.count - 1}`);
    let b = this.buffers[i];
    if (b === undefined) {
      b = new SharedArrayBuffer(this.size);
      this.buffers[i] = b;
    }
    return b;
  }

  /** Slot `i` as a Buffer (the same memory as {@link buffer}). */
  view(i: number): Buffer {
    let v = this.views[i];
    if (v === undefined) {
      v = Buffer.from(this.buffer(i));
      this.views[i] = v;
    }
    return v;
  }

  /** Every slot's buffer, allocating those not used yet (a writer thread maps them all at its start). */
  all(): SharedArrayBuffer[] {
    return Array.from({ length: this.count }, (_, i) => this.buffer(i));
  }

  /** How many slots have been allocated so far. */
  get allocated(): number {
    return this.buffers.filter((b) => b !== undefined).length;
  }
}
