/**
 * An in-memory `RandomAccessFile` for unit tests: exact reads over a byte array (a short
 * read throws `ShortReadError` like `NodeFile`), the same work counters, and a configurable
 * fake `probeAllocation` (default: `unknown`, as without an lseek binding). Every probe is
 * recorded so tests can assert how often the host file was asked about holes.
 */
import { ShortReadError } from '../../src/errors.js';
import {
  newCounters,
  type AllocationProbe,
  type FileIdentity,
  type IoCounters,
  type RandomAccessFile,
} from '../../src/io/random-access-file.js';

/** Options of {@link MemoryFile}. */
export interface MemoryFileOptions {
  /** Path reported for messages and map output (default `mem.img`). */
  readonly path?: string;
  /** Fake SEEK_DATA/SEEK_HOLE answer (default: always `unknown`). */
  readonly probe?: (offset: number) => AllocationProbe;
  /** Overrides of the fstat identity (default: dev 1, a fresh inode, allocated = size). */
  readonly identity?: Partial<FileIdentity>;
  /** Size reported instead of `data.length` (reads still stop at `data.length`). */
  readonly size?: number;
}

let nextIno = 1000n;

/** A read-only file held in memory. */
export class MemoryFile implements RandomAccessFile {
  readonly counters: IoCounters = newCounters();
  readonly path: string;
  readonly size: number;
  /** Offsets passed to `probeAllocation`, in call order. */
  readonly probes: number[] = [];
  /** Number of `close()` calls. */
  closeCalls = 0;
  private readonly ident: FileIdentity;
  private readonly probeFn: ((offset: number) => AllocationProbe) | undefined;

  constructor(
    readonly data: Uint8Array,
    options: MemoryFileOptions = {},
  ) {
    this.path = options.path ?? 'mem.img';
    this.size = options.size ?? data.length;
    this.probeFn = options.probe;
    this.ident = {
      dev: options.identity?.dev ?? 1n,
      ino: options.identity?.ino ?? nextIno++,
      allocatedBytes: options.identity?.allocatedBytes ?? data.length,
    };
  }

  read(buffer: Uint8Array, position: number, length = buffer.length, bufferOffset = 0): Promise<void> {
    this.counters.reads++;
    const avail = Math.max(0, Math.min(length, this.data.length - position));
    buffer.set(this.data.subarray(position, position + avail), bufferOffset);
    this.counters.bytesRead += avail;
    if (avail < length) {
      return Promise.reject(
        new ShortReadError('IO_SHORT_READ', `short read in '${this.path}': wanted ${length} bytes at ${position}`, {
          file: this.path,
          offset: position,
          value: avail,
          limit: length,
        }),
      );
    }
    return Promise.resolve();
  }

  probeAllocation(offset: number): AllocationProbe {
    this.probes.push(offset);
    this.counters.holeProbes++;
    return this.probeFn === undefined ? { kind: 'unknown' } : this.probeFn(offset);
  }

  identity(): FileIdentity {
    return this.ident;
  }

  close(): Promise<void> {
    this.closeCalls++;
    return Promise.resolve();
  }
}

/**
 * A fake probe with SEEK_DATA/SEEK_HOLE semantics over a file of `size` bytes whose data
 * lives in the sorted, disjoint `[start, end)` ranges of `data` (everything else is a hole;
 * the end of the file counts as a hole, a hole running to EOF is the trailing hole).
 */
export function extentsProbe(size: number, data: ReadonlyArray<readonly [number, number]>): (offset: number) => AllocationProbe {
  return (offset) => {
    if (offset >= size) return { kind: 'trailing-hole' };
    for (const [s, e] of data) {
      if (offset >= s && offset < e) return { kind: 'data', end: Math.min(e, size) };
      if (offset < s) return { kind: 'hole', end: s };
    }
    return { kind: 'trailing-hole' };
  };
}
