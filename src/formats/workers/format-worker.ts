/**
 * A worker of the pool (pool.ts), on its own thread. Two jobs (protocol.ts):
 *
 * - `decode`: reads the payloads of a batch of compressed clusters by descriptor and
 *   decompresses each straight into its target (a shared buffer of the caller's). Payloads that lie close together in the file (as
 *   `qemu-img convert -c` writes them) are read with one read.
 * - `copy`: fills one conversion chunk from its read plan (file reads, whole compressed
 *   clusters, zeroes), then writes the chunk's non-zero 4 KiB blocks to the output
 *   (copy-job.ts).
 * - `writer`: writes the non-zero blocks of chunks the main thread filled, from a queue in
 *   shared memory, until the queue is closed (writer-loop.ts).
 *
 * The main thread keeps every check and every typed error; a worker only reports what
 * failed, as text.
 */
import { parentPort } from 'node:worker_threads';
import { preadExactSync } from '../../io/pread-sync.js';
import { COMPRESSION_ZSTD, decodeClusterInto } from '../qcow2/cluster-decode.js';
import { loadZstd } from '../qcow2/zstd.js';
import { runWriter } from './writer-loop.js';
import { runCopyJob } from './copy-job.js';
import { joinPayload } from './payload-span.js';
import {
  type DecodeReply,
  type DecodeRequest,
  type JobError,
  type WorkerRequest,
} from './protocol.js';


const port = parentPort;
if (port === null) throw new Error('format-worker runs on a worker thread');

port.on('message', (m: WorkerRequest) => {
  if (m.kind === 'decode') void decode(m).then((reply) => port.postMessage(reply));
  else if (m.kind === 'writer') port.postMessage(runWriter(m));
  else void runCopyJob(m).then((reply) => port.postMessage(reply));
});

async function decode(m: DecodeRequest): Promise<DecodeReply> {
  const n = m.jobs.length / 2;
  const errors: JobError[] = [];
  let reads = 0;
  let bytesRead = 0;
  if (m.compressionType === COMPRESSION_ZSTD) await loadZstd();
  for (let i = 0; i < n; ) {
    // Jobs i..j-1 are read together when each payload starts near where the previous ended.
    const start = m.jobs[2 * i] as number;
    let end = start + (m.jobs[2 * i + 1] as number);
    let j = i + 1;
    while (j < n) {
      const next = joinPayload(start, end, m.jobs[2 * j] as number, m.jobs[2 * j + 1] as number);
      if (next < 0) break;
      end = next;
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
          const out = new Uint8Array(m.targets[k] as SharedArrayBuffer, m.targetOffsets[k] as number, m.clusterSize);
          decodeClusterInto(payload, out, m.compressionType);
        } catch (e) {
          errors.push({ index: k, io: false, message: e instanceof Error ? e.message : String(e) });
        }
      }
    }
    i = j;
  }
  return { kind: 'decode', id: m.id, errors, reads, bytesRead };
}
