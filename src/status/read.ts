/**
 * Reading guest data through a chain, as QEMU reads it (`qcow2_co_preadv_part` and the
 * block layer's zero-fill past a layer's end): each run comes from the layer that owns it —
 * stored data, zeroes (zero clusters and subclusters, unallocated ranges without a backing
 * file, anything past the end of a shorter backing file), a decompressed cluster, or the
 * layer below. The reads of one call are all issued before any is awaited.
 */
import type { ChainNode } from './chain-node.js';

/** Fills `dst[dstOffset, dstOffset + length)` with the guest bytes of `node` at `offset`. */
export async function readChain(node: ChainNode, offset: number, dst: Uint8Array, dstOffset: number, length: number): Promise<void> {
  const pending: Promise<void>[] = [];
  let failure: unknown = null;
  try {
    await plan(node, offset, dst, dstOffset, length, pending);
  } catch (e) {
    failure = e;
  }
  // Never return while a read into `dst` is still running.
  const results = await Promise.allSettled(pending);
  if (failure !== null) throw failure;
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/** Walks the runs of `[offset, offset + length)` in `node`, filling or queueing reads. */
async function plan(
  node: ChainNode,
  offset: number,
  dst: Uint8Array,
  dstOffset: number,
  length: number,
  pending: Promise<void>[],
): Promise<void> {
  const d = node.driver;
  const end = offset + length;
  let pos = offset;
  while (pos < end) {
    const at = dstOffset + (pos - offset);
    if (pos >= d.length) {
      dst.fill(0, at, dstOffset + length);
      return;
    }
    const want = Math.min(end, d.length) - pos;
    let r = d.readExtent(pos, want);
    if (r instanceof Promise) r = await r;
    const n = Math.min(r.length, want);
    switch (r.kind) {
      case 'zero':
        dst.fill(0, at, at + n);
        break;
      case 'backing':
        if (node.backing === null) dst.fill(0, at, at + n);
        else await plan(node.backing, pos, dst, at, n, pending);
        break;
      case 'data':
        track(pending, r.file.read(dst, r.hostOffset, n, at));
        break;
      case 'compressed': {
        const from = r.offsetInCluster;
        if (from === 0 && n === r.clusterSize) track(pending, r.clusterInto(dst, at));
        else track(pending, r.cluster().then((c) => dst.set(c.subarray(from, from + n), at)));
        break;
      }
    }
    pos += n;
  }
}

/** Queues `p`, marking it handled now; `readChain` reports its failure once all settle. */
function track(pending: Promise<void>[], p: Promise<void>): void {
  p.catch(() => undefined);
  pending.push(p);
}
