/**
 * The storage contract every format driver reads through.
 *
 * A random-access file is a sized byte store with exact positioned reads and an optional
 * hole-probing capability. Drivers never import `node:fs`; they receive one of these.
 */

/** What one probe of the host file found at an offset (QEMU `find_allocation`). */
export type AllocationProbe =
  /** `offset` is in data; data runs up to `end` (a hole or EOF starts there). */
  | { readonly kind: 'data'; readonly end: number }
  /** `offset` is in a hole; the hole runs up to `end` (data starts there). */
  | { readonly kind: 'hole'; readonly end: number }
  /** `offset` is in the trailing hole or past the end of the file (ENXIO). */
  | { readonly kind: 'trailing-hole' }
  /** The binding or the filesystem could not tell: treat as data (no holes). */
  | { readonly kind: 'unknown' };

/** Identity and allocation facts of an open file (from fstat). */
export interface FileIdentity {
  readonly dev: bigint;
  readonly ino: bigint;
  /** Allocated bytes on the host (`st_blocks * 512`). */
  readonly allocatedBytes: number;
}

/** Work counters of one file; monotonically increasing. */
export interface IoCounters {
  /** Positioned reads issued. */
  reads: number;
  /** Bytes returned by those reads. */
  bytesRead: number;
  /** SEEK_DATA/SEEK_HOLE system calls made. */
  holeProbes: number;
}

/** A random-access, read-only byte store. */
export interface RandomAccessFile {
  /** The path the file was opened by, for messages and map output. */
  readonly path: string;
  /** Size in bytes at open time. */
  readonly size: number;
  /** Counters of the work done on this file. */
  readonly counters: IoCounters;
  /**
   * The OS file descriptor while the file is open, for synchronous positioned reads on
   * worker threads (`pread-sync.ts`); absent for stores that have none. Whoever reads
   * through it adds its reads to `counters` and must finish before `close()`.
   */
  readonly fd?: number;
  /**
   * Reads exactly `length` bytes at `position` into `buffer` at `bufferOffset`.
   * A short read (the file ends first) throws `ShortReadError`; I/O failures throw `IoError`.
   */
  read(buffer: Uint8Array, position: number, length?: number, bufferOffset?: number): Promise<void>;
  /**
   * The same read, made synchronously (same errors, thrown); absent for stores that cannot.
   * For small metadata reads a walk would wait for anyway (one L2 table, as QEMU's coroutine
   * waits): it saves the thread-pool round trip, but blocks the thread while the read runs.
   */
  readSync?(buffer: Uint8Array, position: number, length?: number, bufferOffset?: number): void;
  /**
   * Reads `buffers` whole, one after another, from `position` (one `preadv`: adjacent
   * tables into buffers of their own), synchronously, with the errors of {@link read};
   * absent for stores that cannot.
   */
  readvSync?(buffers: readonly Uint8Array[], position: number): void;
  /**
   * Probes allocation at `offset` with SEEK_DATA/SEEK_HOLE (QEMU `find_allocation`).
   * Returns `unknown` when holes cannot be probed here; never throws for that reason.
   */
  probeAllocation(offset: number): AllocationProbe;
  /** dev/ino and allocated bytes. */
  identity(): FileIdentity;
  /** Releases the file. Idempotent. */
  close(): Promise<void>;
}

/**
 * `file.read`, made with one synchronous read when the file can (`readSync`): for reads a
 * caller waits for at once, where a thread-pool round trip costs more than the read.
 * Returns null when the read is done; otherwise the promise of the read — the asynchronous
 * one, or the synchronous one's failure (the same errors either way).
 */
export function readPreferSync(file: RandomAccessFile, buffer: Uint8Array, position: number, length: number, bufferOffset = 0): Promise<void> | null {
  if (file.readSync === undefined) return file.read(buffer, position, length, bufferOffset);
  try {
    file.readSync(buffer, position, length, bufferOffset);
  } catch (e) {
    return Promise.reject(e);
  }
  return null;
}

/** Fresh zeroed counters. */
export function newCounters(): IoCounters {
  return { reads: 0, bytesRead: 0, holeProbes: 0 };
}
