/**
 * Reading guest data through a chain, as QEMU reads it (`qcow2_co_preadv_part` and the
 * block layer's zero-fill past a layer's end): each run comes from the layer that owns it —
 * stored data, zeroes (zero clusters and subclusters, unallocated ranges without a backing
 * file, anything past the end of a shorter backing file), a decompressed cluster, or the
 * layer below.
 *
 * One walk ({@link planChain}) finds the runs and hands each to a {@link ReadSink}, a
 * {@link ReadPlan}: {@link readChain} carries the plan out on this thread (all reads issued
 * before any is awaited); a conversion may send it to a worker thread instead.
 */
import type { RandomAccessFile } from '../io/random-access-file.js';
import type { ReadExtent } from '../formats/driver.js';
import type { ChainNode } from './chain-node.js';
import { ReadPlan } from './read-plan.js';

/** A part of a compressed cluster as the chain gives it. */
export type CompressedExtent = Extract<ReadExtent, { kind: 'compressed' }>;

/** Receives the runs of a read, in order; `at` is the byte offset in the destination. */
export interface ReadSink {
  /** `[at, at + n)` reads as zeroes. */
  zero(at: number, n: number): void;
  /** `[at, at + n)` is stored in `file` at `hostOffset`. */
  data(file: RandomAccessFile, hostOffset: number, n: number, at: number): void;
  /** `[at, at + n)` is bytes `[r.offsetInCluster, r.offsetInCluster + n)` of a compressed cluster. */
  compressed(r: CompressedExtent, n: number, at: number): void;
}

/**
 * Fills `dst[dstOffset, dstOffset + length)` with the guest bytes of `node` at `offset`: the
 * runs are planned first (read-plan.ts; adjacent reads of one file merge), then all reads
 * are issued at once. Never returns while a read into `dst` is still running.
 */
export async function readChain(node: ChainNode, offset: number, dst: Uint8Array, dstOffset: number, length: number): Promise<void> {
  const plan = new ReadPlan(dst);
  try {
    await planChain(node, offset, dstOffset, length, plan);
  } catch (e) {
    await plan.settleLocal().catch(() => undefined);
    throw e;
  }
  await plan.runHere();
}

/** Walks the runs of `[offset, offset + length)` in `node`, giving each to `sink` (destination offsets from `dstOffset`). */
export async function planChain(node: ChainNode, offset: number, dstOffset: number, length: number, sink: ReadSink): Promise<void> {
  const d = node.driver;
  const end = offset + length;
  let pos = offset;
  while (pos < end) {
    const at = dstOffset + (pos - offset);
    if (pos >= d.length) {
      sink.zero(at, dstOffset + length - at);
      return;
    }
    const want = Math.min(end, d.length) - pos;
    let r = d.readExtent(pos, want);
    if (r instanceof Promise) r = await r;
    const n = Math.min(r.length, want);
    switch (r.kind) {
      case 'zero':
        sink.zero(at, n);
        break;
      case 'backing':
        if (node.backing === null) sink.zero(at, n);
        else await planChain(node.backing, pos, at, n, sink);
        break;
      case 'data':
        sink.data(r.file, r.hostOffset, n, at);
        break;
      case 'compressed':
        sink.compressed(r, n, at);
        break;
    }
    pos += n;
  }
}
