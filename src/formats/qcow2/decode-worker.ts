/**
 * A decode worker (decode-pool.ts): reads the payloads of a batch of compressed clusters
 * from the image by descriptor, decompresses each straight into its target (a shared buffer
 * of the caller's) or into one reply buffer of `count × clusterSize` bytes transferred back. Payloads that lie close together in the file (as
 * `qemu-img convert -c` writes them) are read with one read.
 *
 * Runs as its own module on a worker thread; the main thread keeps every check and every
 * typed error, the worker only reports what failed, per cluster, as text.
 */
import { parentPort } from 'node:worker_threads';
import { preadExactSync } from '../../io/pread-sync.js';
import { decodeClusterInto, COMPRESSION_ZSTD } from './cluster-decode.js';
import { loadZstd } from './zstd.js';
import type { DecodeReply, DecodeRequest } from './decode-protocol.js';

/** Gap between payloads still read together, and the largest single read. */
const MAX_GAP = 64 * 1024;
const MAX_SPAN = 4 * 1024 * 1024;

const port = parentPort;
if (port === null) throw new Error('decode-worker.js runs on a worker thread');

port.on('message', (m: DecodeRequest) => {
  void handle(m).then((reply) => port.postMessage(reply, [reply.buffer]));
});

async function handle(m: DecodeRequest): Promise<DecodeReply> {
  const n = m.jobs.length / 2;
  const buffer = new ArrayBuffer(m.targets.every((t) => t !== null) ? 0 : n * m.clusterSize);
  const errors: { index: number; io: boolean; message: string }[] = [];
  let reads = 0;
  let bytesRead = 0;
  if (m.compressionType === COMPRESSION_ZSTD) await loadZstd();
  for (let i = 0; i < n; ) {
    // Jobs i..j-1 are read together when each payload starts near where the previous ended.
    const start = m.jobs[2 * i] as number;
    let end = start + (m.jobs[2 * i + 1] as number);
    let j = i + 1;
    while (j < n) {
      const s = m.jobs[2 * j] as number;
      const e = s + (m.jobs[2 * j + 1] as number);
      if (s < start || s > end + MAX_GAP || Math.max(end, e) - start > MAX_SPAN) break;
      end = Math.max(end, e);
      j++;
    }
    const span = new Uint8Array(end - start);
    const failed = preadExactSync(m.fd, span, start, span.length);
    reads++;
    if (failed !== null) {
      for (let k = i; k < j; k++) errors.push({ index: k, io: true, message: failed });
    } else {
      bytesRead += span.length;
      for (let k = i; k < j; k++) {
        const off = (m.jobs[2 * k] as number) - start;
        const payload = span.subarray(off, off + (m.jobs[2 * k + 1] as number));
        try {
          const target = m.targets[k] ?? null;
          const out = target !== null
            ? new Uint8Array(target, m.targetOffsets[k] as number, m.clusterSize)
            : new Uint8Array(buffer, k * m.clusterSize, m.clusterSize);
          decodeClusterInto(payload, out, m.compressionType);
        } catch (e) {
          errors.push({ index: k, io: false, message: e instanceof Error ? e.message : String(e) });
        }
      }
    }
    i = j;
  }
  return { id: m.id, buffer, errors, reads, bytesRead };
}
