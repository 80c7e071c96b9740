/**
 * Reusable chunk buffers for long reads (convert): each chunk read into a fresh buffer
 * would cost page faults, an munmap and garbage collection per chunk; a consumer that says
 * when it is done with a chunk gets the same few buffers back instead.
 *
 * The buffers are backed by `SharedArrayBuffer`s, so decode workers can write compressed
 * clusters straight into them (ReadExtent `clusterInto`).
 */

/** A free list of equal-sized shared buffers. */
export class ChunkBuffers {
  private readonly free: Buffer[] = [];

  constructor(
    /** Size of every buffer (the largest chunk). */
    readonly size: number,
    /** Buffers kept when given back; more are dropped. */
    private readonly keep = 16,
  ) {}

  /** A buffer of at least `length` bytes, viewed as exactly `length` bytes. */
  take(length: number): Buffer {
    if (length > this.size) return Buffer.allocUnsafe(length);
    const b = this.free.pop() ?? Buffer.from(new SharedArrayBuffer(this.size));
    return b.subarray(0, length);
  }

  /** Gives back a buffer from {@link take} once nothing reads or writes it any more. */
  give(buffer: Uint8Array): void {
    if (!(buffer.buffer instanceof SharedArrayBuffer) || buffer.buffer.byteLength !== this.size) return;
    if (this.free.length < this.keep) this.free.push(Buffer.from(buffer.buffer, 0, this.size));
  }
}
