/**
 * `RandomAccessFile` over a file descriptor: exact positioned reads, fstat identity, and
 * SEEK_DATA/SEEK_HOLE probing through the optional lseek binding. The file is opened,
 * stat'ed and closed with synchronous calls: each is one system call on a local file, where
 * a thread-pool round trip would leave the opening of a chain waiting for nothing.
 *
 * Probe results are remembered per region (the last data region and the last hole region),
 * so asking again anywhere inside a region already probed costs no system call: one probe
 * per host extent, not one per guest extent. Images are opened read-only and assumed not to
 * change while open.
 */
import { closeSync, fstatSync, openSync, read as fsRead, readSync, readvSync } from 'node:fs';
import { IoError, ShortReadError, UnsupportedImageError } from '../errors.js';
import { findAllocation } from './holes.js';
import { loadLseek, type LseekFn } from './lseek-binding.js';
import {
  newCounters,
  type AllocationProbe,
  type FileIdentity,
  type IoCounters,
  type RandomAccessFile,
} from './random-access-file.js';

/** Options for {@link NodeFile.open}. */
export interface NodeFileOptions {
  /** Override the lseek binding (tests); `null` disables hole probing. */
  readonly lseek?: LseekFn | null;
}

/** A read-only host file. */
export class NodeFile implements RandomAccessFile {
  readonly counters: IoCounters = newCounters();
  private closed = false;
  private dataRegion: { start: number; end: number } | null = null;
  private holeRegion: { start: number; end: number } | null = null;
  /** The counting lseek, resolved at the first probe (undefined until then). */
  private lseek: LseekFn | null | undefined;

  private constructor(
    readonly path: string,
    /** The open descriptor (read-only). */
    private readonly descriptor: number,
    readonly size: number,
    private readonly ident: FileIdentity,
    /** The binding given by the caller; undefined: load the default one when first needed. */
    private readonly binding: LseekFn | null | undefined,
  ) {}

  /**
   * The lseek to probe with, counting calls. The binding (and with it koffi) is loaded only
   * when a probe is first asked for: allocation queries never load it.
   */
  private probeFn(): LseekFn | null {
    if (this.lseek !== undefined) return this.lseek;
    const raw = this.binding === undefined ? loadLseek() : this.binding;
    this.lseek =
      raw === null
        ? null
        : (fd, off, whence) => {
            this.counters.holeProbes++;
            return raw(fd, off, whence);
          };
    return this.lseek;
  }

  /** The open descriptor (see `RandomAccessFile.fd`); -1 once closed (the number may be reused). */
  get fd(): number {
    return this.closed ? -1 : this.descriptor;
  }

  /** Opens `path` read-only. Errors become `IoError` with code `IO_OPEN`. */
  static async open(path: string, options: NodeFileOptions = {}): Promise<NodeFile> {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw new IoError('IO_OPEN', `cannot open '${path}': ${errnoText(e)}`, { file: path, cause: e });
    }
    try {
      const st = fstatSync(fd, { bigint: true });
      if (st.size > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new UnsupportedImageError('IO_FILE_TOO_LARGE', `'${path}' is ${st.size} bytes, larger than vdisk supports (${Number.MAX_SAFE_INTEGER})`, {
          file: path, field: 'file size', value: st.size, limit: Number.MAX_SAFE_INTEGER,
        });
      }
      const ident: FileIdentity = { dev: st.dev, ino: st.ino, allocatedBytes: Number(st.blocks * 512n) };
      return new NodeFile(path, fd, Number(st.size), ident, options.lseek);
    } catch (e) {
      closeSync(fd);
      if (e instanceof UnsupportedImageError) throw e;
      throw new IoError('IO_STAT', `cannot stat '${path}': ${errnoText(e)}`, { file: path, cause: e });
    }
  }

  async read(buffer: Uint8Array, position: number, length = buffer.length, bufferOffset = 0): Promise<void> {
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        n = await preadAsync(this.fd, buffer, bufferOffset + done, length - done, position + done);
      } catch (e) {
        throw this.readFailed(length, position, e);
      }
      done = this.advance(n, done, length, position);
    }
  }

  readSync(buffer: Uint8Array, position: number, length = buffer.length, bufferOffset = 0): void {
    let done = 0;
    while (done < length) {
      let n: number;
      try {
        n = readSync(this.fd, buffer, bufferOffset + done, length - done, position + done);
      } catch (e) {
        throw this.readFailed(length, position, e);
      }
      done = this.advance(n, done, length, position);
    }
  }

  readvSync(buffers: readonly Uint8Array[], position: number): void {
    const length = buffers.reduce((n, b) => n + b.length, 0);
    let n: number;
    try {
      n = readvSync(this.fd, buffers as Uint8Array[], position);
    } catch (e) {
      throw this.readFailed(length, position, e);
    }
    let done = this.advance(n, 0, length, position);
    // A short preadv: the rest buffer by buffer (each read exact, or a short-read error).
    let at = 0;
    for (const b of buffers) {
      const end = at + b.length;
      if (done < end) {
        const from = Math.max(done, at) - at;
        this.readSync(b, position + at + from, b.length - from, from);
        done = end;
      }
      at = end;
    }
  }

  /** Counts a read that returned `n` bytes; throws on end of file; returns the new total. */
  private advance(n: number, done: number, length: number, position: number): number {
    this.counters.reads++;
    this.counters.bytesRead += n;
    if (n === 0) {
      throw new ShortReadError(
        'IO_SHORT_READ',
        `short read in '${this.path}': wanted ${length} bytes at offset ${position}, the file ends at ${position + done}`,
        { file: this.path, offset: position, value: done, limit: length },
      );
    }
    return done + n;
  }

  private readFailed(length: number, position: number, e: unknown): IoError {
    return new IoError('IO_READ', `read of ${length} bytes at ${position} in '${this.path}' failed: ${errnoText(e)}`, {
      file: this.path,
      offset: position,
      cause: e,
    });
  }

  probeAllocation(offset: number): AllocationProbe {
    const d = this.dataRegion;
    if (d !== null && offset >= d.start && offset < d.end) return { kind: 'data', end: d.end };
    const h = this.holeRegion;
    if (h !== null && offset >= h.start && offset < h.end) return { kind: 'hole', end: h.end };
    // SEEK_DATA at the start of the last hole returned its end: data starts there.
    const r = findAllocation(this.probeFn(), this.fd, offset, h !== null && offset === h.end);
    if (r.kind === 'data') this.dataRegion = { start: offset, end: r.end };
    else if (r.kind === 'hole') this.holeRegion = { start: offset, end: r.end };
    return r;
  }

  identity(): FileIdentity {
    return this.ident;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.descriptor);
  }
}

function errnoText(e: unknown): string {
  if (e instanceof Error && 'code' in e && typeof e.code === 'string') return e.code;
  return String(e);
}

/**
 * One positioned read through `fs.read`'s callback, on libuv's thread pool: about half the
 * main-thread CPU of `FileHandle.read` per call (measured: 10,000 reads of 64 KiB, 37–90 ms
 * of user time against 119–145 ms), which counts when a conversion makes thousands.
 */
function preadAsync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsRead(fd, buffer, offset, length, position, (err, n) => (err !== null ? reject(err) : resolve(n)));
  });
}
