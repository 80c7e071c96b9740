/**
 * The copy job of a conversion chunk (protocol.ts `CopyRequest`): fill the chunk from its
 * plan (file reads, whole compressed clusters, zeroes), then write the non-zero 4 KiB
 * blocks of its pieces under the output's write lock. Run by the pool's workers (format-worker.ts), and
 * by the main thread itself for its share of a compressed image's chunks (ops).
 */
import { preadExactSync } from '../../io/pread-sync.js';
import { ReadCounts } from './read-counts.js';
import { joinPayload } from './payload-span.js';
import { pwriteLocked } from './write-lock.js';
import { SPARSE_BLOCK, nonZeroSpans } from '../../io/zero-blocks.js';
import { COMPRESSION_ZSTD, decodeClusterInto } from '../qcow2/cluster-decode.js';
import { loadZstd } from '../qcow2/zstd.js';
import { OP_DECODE, OP_READ, OP_WORDS, OP_ZERO, PIECE_WORDS, type CopyReply, type CopyRequest, type JobError } from './protocol.js';

/** Payload buffer of the copy jobs, grown as needed. */
let payloadBuf = new Uint8Array(256 * 1024);

/**
 * Carries out one copy job (protocol.ts `CopyRequest`) on this thread, synchronously once
 * the zstd decoder is loaded: the chunk's reads and decodes in order, each part scanned for
 * zero blocks and written as soon as it is filled.
 */
export async function runCopyJob(m: CopyRequest): Promise<CopyReply> {
  const chunk = Buffer.from(m.chunk, 0, m.length);
  const reads = new ReadCounts();
  const reply = (error: JobError | null, written: number): CopyReply => ({ kind: 'copy', id: m.id, error, written, reads: reads.list() });
  // Each part is scanned for zero blocks and written as soon as it is filled, while its
  // bytes are still in the CPU's caches (a whole 2 MiB chunk written at the end is read
  // back from memory: measured twice the system time per byte written).
  const lock = new Int32Array(m.writeLock);
  const pieces = m.pieces;
  let written = 0;
  /** The piece being written, and how far. */
  let piece = 0;
  let scanPos = 0;
  /**
   * Writes the non-zero spans of the output-aligned 4 KiB blocks of the pieces that end at
   * or before chunk offset `limit` (pieces are in chunk order).
   */
  const scanTo = (limit: number): string | null => {
    for (; piece * PIECE_WORDS < pieces.length; piece++) {
      const p = piece * PIECE_WORDS;
      const from = pieces[p] as number;
      const to = pieces[p + 1] as number;
      const position = pieces[p + 2] as number;
      if (scanPos < from) scanPos = from;
      const end = limit >= to ? to : limit - ((position + limit) % SPARSE_BLOCK);
      if (end > scanPos) {
        for (const [a, b] of nonZeroSpans(chunk, position, scanPos, end)) {
          const failed = pwriteLocked(lock, m.outFd, chunk, a, b - a, position + a);
          if (failed !== null) return failed;
          written += b - a;
        }
        scanPos = end;
      }
      if (end < to) return null;
    }
    return null;
  };
  const nOps = m.ops.length / OP_WORDS;
  // The decoder is loaded before the first operation: from there on the job runs without a
  // pause, so two jobs of one thread never interleave over the shared `payloadBuf`.
  for (let o = 0; o < m.ops.length; o += OP_WORDS) {
    if (m.ops[o] === OP_DECODE && m.ops[o + 5] === COMPRESSION_ZSTD) {
      await loadZstd();
      break;
    }
  }
  // `payloadBuf` holds bytes [spanStart, spanEnd) of file `spanFd`: the payloads of
  // consecutive compressed clusters, read at once (`qemu-img convert -c` writes them one
  // after the other: one read per chunk instead of one per cluster).
  let spanFd = -1;
  let spanStart = 0;
  let spanEnd = 0;
  /** Reads bytes [start, end) of `fd` into `payloadBuf`; null, or what failed. */
  const readSpan = (fd: number, start: number, end: number): string | null => {
    if (payloadBuf.length < end - start) payloadBuf = new Uint8Array(end - start);
    const failed = preadExactSync(fd, payloadBuf.subarray(0, end - start), start, end - start);
    if (failed !== null) return failed;
    reads.add(fd, end - start);
    spanFd = fd;
    spanStart = start;
    spanEnd = end;
    return null;
  };
  /** Reads the payload of operation `i` (and those close after it) into `payloadBuf`; null, or what failed. */
  const readPayloads = (i: number, fd: number, host: number, length: number): string | null => {
    let e = host + length;
    for (let j = i + 1; j < nOps; j++) {
      const q = j * OP_WORDS;
      if (m.ops[q] !== OP_DECODE || m.ops[q + 1] !== fd) break;
      const next = joinPayload(host, e, m.ops[q + 2] as number, m.ops[q + 3] as number);
      if (next < 0) break;
      e = next;
    }
    // A span that cannot be read is retried as this payload alone, so a failure names its cluster.
    if (e > host + length && readSpan(fd, host, e) === null) return null;
    return readSpan(fd, host, host + length);
  };
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
      reads.add(fd, length);
    } else if (kind === OP_DECODE) {
      const compressionType = m.ops[o + 5] as number;
      const clusterSize = m.ops[o + 6] as number;
      end = at + clusterSize;
      if (fd !== spanFd || host < spanStart || host + length > spanEnd) {
        const failed = readPayloads(i, fd, host, length);
        if (failed !== null) return reply({ index: i, io: true, message: failed }, written);
      }
      const payload = payloadBuf.subarray(host - spanStart, host - spanStart + length);
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
