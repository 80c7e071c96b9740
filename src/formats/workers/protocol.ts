/**
 * The messages between the worker pool (pool.ts) and its workers (format-worker.ts).
 *
 * Two jobs: `decode` (compressed clusters of one image, for readers) and `copy` (one chunk
 * of a conversion: fill it from its read plan, then write its non-zero blocks to the
 * output). Files are passed as descriptors the main thread keeps open for the job's
 * duration; chunk memory is a `SharedArrayBuffer` the main thread does not touch meanwhile.
 */

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
 * descriptor) were done by the main thread before the job was sent. Then the chunk's
 * 4 KiB blocks (aligned in the output) that are not all zero are written at
 * `outPosition + offset`.
 */
export interface CopyRequest {
  readonly kind: 'copy';
  readonly id: number;
  readonly chunk: SharedArrayBuffer;
  readonly length: number;
  readonly ops: Float64Array;
  readonly outFd: number;
  readonly outPosition: number;
  /**
   * One int32 shared by the jobs of one output: a worker holds it while it writes, so two
   * workers never write the same file at once (measured: concurrent writers of one file
   * spent about half their time in the kernel, contending for the inode).
   */
  readonly writeLock: SharedArrayBuffer;
}

export type WorkerRequest = DecodeRequest | CopyRequest;

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
  readonly reads: readonly (readonly [number, number, number])[];
  /** Bytes written to the output. */
  readonly written: number;
}

export type WorkerReply = DecodeReply | CopyReply;
