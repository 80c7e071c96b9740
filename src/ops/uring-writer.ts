/**
 * The conversion's output writes through io_uring (io/io-uring.ts), instead of a writer
 * thread: this thread reads each chunk and finds its zero blocks, as it does when the
 * writer thread is behind, and queues the non-zero spans; the kernel writes them on its
 * own worker thread while this thread reads the next chunks. No JavaScript thread is
 * started for the output (a Node worker costs ~40 ms of CPU to boot, on a machine whose
 * two cores this conversion keeps busy). While the output streams, each long write's range
 * is allocated just before it ({@link ALLOCATE_MIN_BYTES}).
 *
 * Same contract as the writer thread's queue (formats/workers/output-writer.ts) for the
 * calls ops/convert-parallel.ts makes of either: a slot may be refilled once
 * {@link isIdle} says its writes are done; the first failed write stops the queuing of
 * more and is reported by {@link finish}; a short write is completed by a write of its
 * rest.
 */
import { IoUring, errnoName } from '../io/io-uring.js';
import type { JobError } from '../formats/workers/protocol.js';
import type { WriterResult } from '../formats/workers/output-writer.js';
import type { ChunkSlots } from './chunk-slots.js';

/** Submission entries of the ring: writes in flight at once. */
const RING_ENTRIES = 256;

/**
 * Writes of at least this many bytes have their range allocated first (`fallocate`, linked
 * before the write in the ring) while the output streams ({@link SCATTERED_WRITES}). A
 * write into a new file's hole otherwise makes ext4 reserve each 4 KiB block for delayed
 * allocation (`ext4_da_get_block_prep`, its extent status tree, quota): 55 % of the kernel
 * writer's time in W4's conversion, which that writer bounded. Into allocated blocks a
 * write is a copy. A C test here, 696 MiB in 2 MiB writes to a new file: 110-118 ms, and
 * 70-76 ms with each write's range allocated first; 128 MiB in spans with holes between:
 * 256 KiB spans 28 against 19 ms, 64 KiB 36 against 32 ms, but 16 KiB 73 against 85 ms and
 * 4 KiB 143 against 294 ms (a call per few blocks costs more than it saves). Exactly the
 * written blocks are allocated: the output is as sparse as without (BENCHMARKS.md,
 * fourteenth round).
 */
export const ALLOCATE_MIN_BYTES = 1024 * 1024;

/**
 * After this many writes shorter than {@link ALLOCATE_MIN_BYTES}, no more ranges are
 * allocated first: the output is pieced together (a chain's overlay clusters between its
 * base's runs, say) rather than streamed. Ranges allocated as the writes come, between
 * short writes whose blocks ext4 allocates at write-back, left those apart from their
 * neighbours: W5's output in 806-1,341 fragments (`filefrag`) against qemu-img's 70, for
 * no faster conversion. W4's streamed output has 21 short writes among 361: 29 fragments
 * against qemu-img's 16-19.
 */
export const SCATTERED_WRITES = 64;

/** `ECANCELED`: a linked write whose allocation failed. */
const ECANCELED = 125;

/** Output writes of a conversion's slots through io_uring. */
export class UringWriter {
  /** Writes in flight per slot. */
  private readonly pending: Int32Array;
  private error: (JobError & { readonly slot: number }) | null = null;
  private written = 0;
  private readonly done = (tag: number, result: number): void => this.completed(tag, result);
  /** The spans of each write in flight, by tag: slot, address, length, output position, and whether an allocation was linked before it. */
  private readonly queued = new Map<number, readonly [number, number, number, number, boolean]>();
  /** Tags of the allocations in flight (`fallocate` before a write). */
  private readonly allocations = new Set<number>();
  private nextTag = 0;
  /** Writes queued shorter than {@link ALLOCATE_MIN_BYTES}. */
  private shortWrites = 0;
  /**
   * Whether long writes are allocated first ({@link ALLOCATE_MIN_BYTES}); off once the
   * output shows itself scattered ({@link SCATTERED_WRITES}), and after the first allocation
   * that fails (a file system without `fallocate`, say: its write is then queued again on
   * its own).
   */
  private allocate = true;

  /** Each slot's address, found at its first write (slots are allocated as they are first used: ops/chunk-slots.ts). */
  private readonly addresses: Array<number | null | undefined>;

  private constructor(
    private readonly ring: IoUring,
    private readonly outFd: number,
    private readonly slots: ChunkSlots,
  ) {
    this.pending = new Int32Array(slots.count);
    this.addresses = new Array<number | null | undefined>(slots.count).fill(undefined);
  }

  /** A writer for `slots` to `outFd`, or null where io_uring cannot be used. */
  static create(outFd: number, slots: ChunkSlots): UringWriter | null {
    // Slot 0 (the first one filled) tells whether koffi gives buffer addresses at all.
    const first = IoUring.addressOf(slots.view(0));
    if (first === null) return null;
    const ring = IoUring.create(RING_ENTRIES);
    if (ring === null) return null;
    const w = new UringWriter(ring, outFd, slots);
    w.addresses[0] = first;
    return w;
  }

  /** Whether long writes still allocate their range first (false once the output is scattered, or an allocation failed). */
  get allocating(): boolean {
    return this.allocate;
  }

  /** Whether a write failed (nothing more is queued after it). */
  get failed(): boolean {
    return this.error !== null;
  }

  /**
   * Queues the non-zero spans of slot `slot` — `from, to, position` each (bytes
   * `[from, to)` of the slot go to output offset `position + from`) — and submits them.
   */
  write(slot: number, spans: ArrayLike<number>): void {
    if (this.error !== null) return;
    const base = this.addressOf(slot);
    if (base === null) {
      this.error = { index: -1, io: true, message: `io_uring: no address for chunk slot ${slot}`, slot };
      return;
    }
    for (let k = 0; k + 2 < spans.length; k += 3) {
      const from = spans[k] as number;
      const to = spans[k + 1] as number;
      if (to > from) this.queue(slot, base + from, to - from, (spans[k + 2] as number) + from);
    }
    this.ring.complete(false, this.done);
  }

  /** Slot `slot`'s address (null if koffi gives none: then nothing of it is written). */
  private addressOf(slot: number): number | null {
    let a = this.addresses[slot];
    if (a === undefined) {
      a = IoUring.addressOf(this.slots.view(slot));
      this.addresses[slot] = a;
    }
    return a;
  }

  /** Whether slot `slot` has no writes in flight (taking the completions available). */
  isIdle(slot: number): boolean {
    if ((this.pending[slot] as number) > 0) this.ring.complete(false, this.done);
    return this.pending[slot] === 0;
  }

  /** Waits (blocking this thread in the kernel) until slot `slot` has no writes in flight. */
  idle(slot: number): Promise<void> {
    while ((this.pending[slot] as number) > 0) this.ring.complete(true, this.done);
    return Promise.resolve();
  }

  /** Waits for every write, releases the ring, and says what was written or what failed. */
  finish(): Promise<WriterResult> {
    this.ring.close(this.done);
    return Promise.resolve({ error: this.error, written: this.written, reads: [] });
  }

  /** The conversion failed: waits for the writes in flight (their memory is in use) and releases the ring. */
  cancel(): Promise<void> {
    this.ring.close(this.done);
    return Promise.resolve();
  }

  private queue(slot: number, address: number, length: number, position: number): void {
    const tag = this.nextTag++;
    if (length < ALLOCATE_MIN_BYTES && ++this.shortWrites > SCATTERED_WRITES) this.allocate = false;
    const linked = this.allocate && length >= ALLOCATE_MIN_BYTES;
    this.queued.set(tag, [slot, address, length, position, linked]);
    this.pending[slot] = (this.pending[slot] as number) + 1;
    if (linked) {
      const allocation = this.nextTag++;
      this.allocations.add(allocation);
      this.ring.write(this.outFd, address, length, position, tag, this.done, allocation);
    } else {
      this.ring.write(this.outFd, address, length, position, tag, this.done);
    }
  }

  private completed(tag: number, result: number): void {
    if (this.allocations.delete(tag)) {
      // A failed allocation: no more of them. Its write runs anyway, or is cancelled and
      // queued again on its own (below), as the kernel has it.
      if (result < 0) this.allocate = false;
      return;
    }
    const q = this.queued.get(tag);
    if (q === undefined) return;
    this.queued.delete(tag);
    const [slot, address, length, position, linked] = q;
    if (result >= length) this.written += length;
    else if (result === -ECANCELED && linked) {
      // Its allocation failed: the write on its own, and no more allocations.
      this.allocate = false;
      if (this.error === null) this.queue(slot, address, length, position);
    } else if (result > 0 && this.error === null) {
      // A short write: the rest as a write of its own.
      this.written += result;
      this.queue(slot, address + result, length - result, position + result);
    } else if (this.error === null) {
      const message = result === 0 ? `write made no progress at ${position}` : `write of ${length} bytes at ${position} failed: ${errnoName(-result)}`;
      this.error = { index: -1, io: true, message, slot };
    }
    this.pending[slot] = (this.pending[slot] as number) - 1;
  }
}
