/**
 * The messages between the worker pool (pool.ts) and its workers (format-worker.ts).
 *
 * Three jobs: `decode` (compressed clusters of one image, for readers), `copy` (one chunk
 * of a conversion: fill it from its read plan, then write its non-zero blocks to the
 * output) and `writer` (write the non-zero blocks of chunks the main thread filled, from a
 * queue in shared memory). Files are passed as descriptors the main thread keeps open for the job's
 * duration; chunk memory is a `SharedArrayBuffer` the main thread does not touch meanwhile.
 */
import type { ReadCountList } from './read-counts.js';

/** A batch of compressed clusters of one image to read and decode. */
export interface DecodeRequest {
  readonly kind: 'decode';
  readonly id: number;
  /** Descriptor of the image file (open for as long as the batch runs). */
  readonly fd: number;
  readonly clusterSize: number;
  /** 0 zlib, 1 zstd. */
  readonly compressionType: number;
  /** Per cluster: payload host offset, payload length (clipped at the end of the file). */
  readonly jobs: Float64Array;
  /** Where each cluster goes: a shared buffer and the byte offset in it. */
  readonly targets: readonly SharedArrayBuffer[];
  readonly targetOffsets: Float64Array;
}

/** Doubles per operation of a copy plan. */
export const OP_WORDS = 7;
/** Doubles per piece of a chunk ({@link CopyRequest.pieces}). */
export const PIECE_WORDS = 3;

/** Operation kinds of a copy plan (first double of each operation). */
export const OP_ZERO = 0;
export const OP_READ = 1;
export const OP_DECODE = 2;

/**
 * One chunk of a conversion. `ops` holds `OP_WORDS` doubles per operation, each writing
 * bytes `[at, at + length)` of the chunk:
 * - `OP_ZERO, 0, 0, length, at`: zeroes;
 * - `OP_READ, fd, hostOffset, length, at`: bytes of a file;
 * - `OP_DECODE, fd, payloadOffset, payloadLength, at, compressionType, clusterSize`: one
 *   whole compressed cluster (`clusterSize` bytes at `at`).
 * Operations the worker cannot do (parts of compressed clusters, files without a
 * descriptor) were done by the main thread before the job was sent. The chunk holds one
 * or more pieces of guest data, `PIECE_WORDS` doubles each in `pieces` — `from, to,
 * position`: bytes `[from, to)` of the chunk, in order, whose byte `i` goes to output
 * offset `position + i`. Of each piece, the 4 KiB blocks (aligned in the output) that are
 * not all zero are written.
 */
export interface CopyRequest {
  readonly kind: 'copy';
  readonly id: number;
  readonly chunk: SharedArrayBuffer;
  readonly length: number;
  readonly ops: Float64Array;
  readonly outFd: number;
  readonly pieces: Float64Array;
  /**
   * One int32 shared by the jobs of one output (write-lock.ts): a worker holds it while it writes, so two
   * workers never write the same file at once (measured: concurrent writers of one file
   * spent about half their time in the kernel, contending for the inode).
   */
  readonly writeLock: SharedArrayBuffer;
}

/**
 * Starts a worker as the output writer of one conversion (writer.ts): it then serves a
 * queue in shared memory until the queue is closed, and answers with {@link WriterEnd}.
 *
 * `control` holds {@link WRITER_CONTROL_WORDS} int32 at the `WRITER_*` indexes; `queue`
 * holds {@link WRITER_ENTRY_WORDS} doubles per entry — chunk slot, number of operations,
 * scanned (1 or 0) — and `pending` one int32 per slot: the entries of that slot not
 * finished yet. An entry asks for the slot's chunk to be filled first by its operations,
 * when it has any (`ops[slot]`, in the form of {@link CopyRequest.ops}, reads and zeroes
 * only), then for its pieces to be written (`pieces[slot]`: their number, then
 * {@link PIECE_WORDS} doubles each, as {@link CopyRequest.pieces}): the non-zero 4 KiB blocks
 * (aligned in the output) of each — or, when the main thread has scanned them already, each
 * piece as it is.
 *
 * `claims` holds one int32 per slot, the `CLAIM_*` state of the reads of the slot's entry
 * that carries operations: the writer takes them (`CLAIM_OPEN` → `CLAIM_WRITER`) when it
 * reaches the entry, unless the main thread took them first (`CLAIM_MAIN`, while it had no
 * slot to fill); the writer then waits until the main thread has filled the chunk and
 * listed its non-zero spans as the slot's pieces (`CLAIM_SCANNED`, then writes them as they
 * are), filled it only (`CLAIM_FILLED`, then scans and writes it) or failed to
 * (`CLAIM_FAILED`, then skips the entry).
 */
export interface WriterStart {
  readonly kind: 'writer';
  readonly id: number;
  readonly outFd: number;
  readonly chunks: readonly SharedArrayBuffer[];
  /** Per slot: room for {@link WRITER_MAX_OPS} operations. */
  readonly ops: readonly SharedArrayBuffer[];
  /** Per slot: room for its pieces ({@link writerPieceRoom}). */
  readonly pieces: readonly SharedArrayBuffer[];
  readonly control: SharedArrayBuffer;
  readonly queue: SharedArrayBuffer;
  readonly pending: SharedArrayBuffer;
  readonly claims: SharedArrayBuffer;
  /** The output's write lock (as {@link CopyRequest.writeLock}). */
  readonly writeLock: SharedArrayBuffer;
}

/** Index of the writer's control words: entries published by the main thread. */
export const WRITER_HEAD = 0;
/** Entries the writer has finished. */
export const WRITER_TAIL = 1;
/** Bumped on every publish and on close: what the writer sleeps on. */
export const WRITER_SEQ = 2;
/** 1: no more entries will come. */
export const WRITER_CLOSED = 3;
/** 1: skip the remaining entries (the conversion failed). */
export const WRITER_CANCELLED = 4;
/** 1: a write failed; the entries after it were skipped. */
export const WRITER_FAILED = 5;
/** 1: the writer thread serves the queue (until then the main thread writes itself). */
export const WRITER_READY = 6;
export const WRITER_CONTROL_WORDS = 7;
export const WRITER_ENTRY_WORDS = 3;
/** Operations an entry may carry. */
export const WRITER_MAX_OPS = 512;
/** Pieces of guest data a batch may have (one entry carries them all). */
export const WRITER_MAX_PIECES = 64;

/**
 * Pieces a slot of `chunkBytes` bytes has room for: its pieces, or the non-zero spans the
 * main thread found in them (a piece of `n` bytes touches at most `n / 4096 + 2` blocks, so
 * has at most `n / 8192 + 2` spans: with at most {@link WRITER_MAX_PIECES} pieces, all fit).
 */
export function writerPieceRoom(chunkBytes: number): number {
  return 2 * WRITER_MAX_PIECES + Math.ceil(chunkBytes / 8192) + 1;
}

/** Claim states of a slot's reads ({@link WriterStart.claims}): queued, nobody's yet. */
export const CLAIM_OPEN = 0;
/** The writer thread does them. */
export const CLAIM_WRITER = 1;
/** The main thread does them. */
export const CLAIM_MAIN = 2;
/** The main thread did them: the chunk is filled (the writer finds its zero blocks). */
export const CLAIM_FILLED = 3;
/** The main thread's reads failed: the entry is not written (the main thread reports it). */
export const CLAIM_FAILED = 4;
/** The main thread did them and replaced the slot's pieces by their non-zero spans. */
export const CLAIM_SCANNED = 5;

/** The writer's answer when its queue is closed and drained (its thread is free again). */
export interface WriterEnd {
  readonly kind: 'writer';
  readonly id: number;
  /** The first failure (entries after it were skipped), or null; `index` -1 is the write. */
  readonly error: (JobError & { readonly slot: number }) | null;
  /** Bytes written. */
  readonly written: number;
  /** Reads made per descriptor (fd → [reads, bytes]), for the files' counters. */
  readonly reads: ReadCountList;
}

export type WorkerRequest = DecodeRequest | CopyRequest | WriterStart;

/** What failed in a job: a read or write (`io`), or the data of a compressed cluster. */
export interface JobError {
  /** Cluster index (decode) or operation index (copy); -1 for the output write. */
  readonly index: number;
  readonly io: boolean;
  readonly message: string;
}

/** A decoded batch: every cluster but the failed ones was written to its target. */
export interface DecodeReply {
  readonly kind: 'decode';
  readonly id: number;
  /** Clusters that failed (their bytes are undefined). */
  readonly errors: readonly JobError[];
  /** Reads made and bytes they returned (added to the file's counters). */
  readonly reads: number;
  readonly bytesRead: number;
}

/** A copied chunk: done, or the first thing that failed (nothing after it was done). */
export interface CopyReply {
  readonly kind: 'copy';
  readonly id: number;
  readonly error: JobError | null;
  /** Reads made per descriptor (fd → [reads, bytes]), for the files' counters. */
  readonly reads: ReadCountList;
  /** Bytes written to the output. */
  readonly written: number;
}

export type WorkerReply = DecodeReply | CopyReply | WriterEnd;
