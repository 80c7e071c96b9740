/**
 * A worker of the pool (pool.ts), on its own thread. Two jobs (protocol.ts):
 *
 * - `decode`: reads the payloads of a batch of compressed clusters by descriptor and
 *   decompresses each straight into its target (a shared buffer of the caller's). Payloads that lie close together in the file (as
 *   `qemu-img convert -c` writes them) are read with one read.
 * - `copy`: fills one conversion chunk from its read plan (file reads, whole compressed
 *   clusters, zeroes), then writes the chunk's non-zero 4 KiB blocks to the output.
 * - `writer`: writes the non-zero blocks of chunks the main thread filled, from a queue in
 *   shared memory, until the queue is closed (writer-loop.ts).
 *
 * The main thread keeps every check and every typed error; a worker only reports what
 * failed, as text.
 */
import { parentPort } from 'node:worker_threads';
import { preadExactSync, pwriteExactSync } from '../../io/pread-sync.js';
import { SPARSE_BLOCK, nonZeroSpans } from '../../io/zero-blocks.js';
import { COMPRESSION_ZSTD, decodeClusterInto } from '../qcow2/cluster-decode.js';
import { loadZstd } from '../qcow2/zstd.js';
import { runWriter } from './writer-loop.js';
import {
  OP_DECODE,
  OP_READ,
  OP_WORDS,
  OP_ZERO,
  type CopyReply,
  type CopyRequest,
  type DecodeReply,
  type DecodeRequest,
  type JobError,
  type WorkerRequest,
} from './protocol.js';

/** Gap between payloads still read together, and the largest single read. */
const MAX_GAP = 64 * 1024;
const MAX_SPAN = 4 * 1024 * 1024;

const port = parentPort;
if (port === null) throw new Error('format-worker.js runs on a worker thread');

port.on('message', (m: WorkerRequest) => {
  if (m.kind === 'decode') void decode(m).then((reply) => port.postMessage(reply));
  else if (m.kind === 'writer') port.postMessage(runWriter(m));
  else void copy(m).then((reply) => port.postMessage(reply));
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

/** Payload buffer of the copy jobs, grown as needed. */
let payloadBuf = new Uint8Array(256 * 1024);

async function copy(m: CopyRequest): Promise<CopyReply> {
  const chunk = Buffer.from(m.chunk, 0, m.length);
  const reads = new Map<number, [number, number]>();
  const count = (fd: number, bytes: number): void => {
    const r = reads.get(fd) ?? [0, 0];
    r[0]++;
    r[1] += bytes;
    reads.set(fd, r);
  };
  const reply = (error: JobError | null, written: number): CopyReply => ({
    kind: 'copy', id: m.id, error, written, reads: [...reads].map(([fd, [n, b]]) => [fd, n, b] as const),
  });
  // Each part is scanned for zero blocks and written as soon as it is filled, while its
  // bytes are still in the CPU's caches (a whole 2 MiB chunk written at the end is read
  // back from memory: measured twice the system time per byte written).
  const lock = new Int32Array(m.writeLock);
  let written = 0;
  let scanPos = 0;
  const write = (from: number, to: number): string | null => {
    while (Atomics.compareExchange(lock, 0, 0, 1) !== 0) Atomics.wait(lock, 0, 1);
    try {
      return pwriteExactSync(m.outFd, chunk, from, to - from, m.outPosition + from);
    } finally {
      Atomics.store(lock, 0, 0);
      Atomics.notify(lock, 0, 1);
      written += to - from;
    }
  };
  /** Writes the non-zero spans of the output-aligned 4 KiB blocks that end at or before `limit`. */
  const scanTo = (limit: number): string | null => {
    const end = limit >= m.length ? m.length : limit - ((m.outPosition + limit) % SPARSE_BLOCK);
    if (end <= scanPos) return null;
    for (const [from, to] of nonZeroSpans(chunk, m.outPosition, scanPos, end)) {
      const failed = write(from, to);
      if (failed !== null) return failed;
    }
    scanPos = end;
    return null;
  };
  const nOps = m.ops.length / OP_WORDS;
  for (let i = 0; i < nOps; i++) {
    const o = i * OP_WORDS;
    const kind = m.ops[o] as number;
    const fd = m.ops[o + 1] as number;
    const host = m.ops[o + 2] as number;
    const length = m.ops[o + 3] as number;
    const at = m.ops[o + 4] as number;
    let end = at + length;
    if (kind === OP_ZERO) {
      chunk.fill(0, at, at + length);
    } else if (kind === OP_READ) {
      const failed = preadExactSync(fd, chunk.subarray(at, at + length), host, length);
      if (failed !== null) return reply({ index: i, io: true, message: failed }, written);
      count(fd, length);
    } else if (kind === OP_DECODE) {
      const compressionType = m.ops[o + 5] as number;
      const clusterSize = m.ops[o + 6] as number;
      end = at + clusterSize;
      if (compressionType === COMPRESSION_ZSTD) await loadZstd();
      if (payloadBuf.length < length) payloadBuf = new Uint8Array(length);
      const payload = payloadBuf.subarray(0, length);
      const failed = preadExactSync(fd, payload, host, length);
      if (failed !== null) return reply({ index: i, io: true, message: failed }, written);
      count(fd, length);
      try {
        decodeClusterInto(payload, chunk.subarray(at, end), compressionType);
      } catch (e) {
        return reply({ index: i, io: false, message: e instanceof Error ? e.message : String(e) }, written);
      }
    }
    // The plan fills the chunk in order (parts done by the main thread lie before `at`).
    if (i === nOps - 1 || (m.ops[o + OP_WORDS + 4] as number) >= end) {
      const failed = scanTo(end);
      if (failed !== null) return reply({ index: -1, io: true, message: failed }, written);
    }
  }
  const failed = scanTo(m.length);
  if (failed !== null) return reply({ index: -1, io: true, message: failed }, written);
  return reply(null, written);
}
