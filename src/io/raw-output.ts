/**
 * A raw output file written sparsely and published atomically: bytes go to a temporary
 * file next to the destination, which is sized up front (so unwritten ranges are holes)
 * and renamed over the destination only when everything succeeded. On failure the
 * temporary file is removed, so no partial output is ever left looking complete.
 */
import { write as fsWrite } from 'node:fs';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { IoError } from '../errors.js';

/** A sparse raw file being written. */
export class RawOutput {
  private finished = false;

  private constructor(
    readonly destination: string,
    private readonly tempPath: string,
    private readonly handle: FileHandle,
  ) {}

  /** Creates the temporary file for `destination`, `size` bytes long (all holes). */
  static async create(destination: string, size: number): Promise<RawOutput> {
    const dir = path.dirname(destination);
    const tempPath = path.join(dir, `.${path.basename(destination)}.vdisk-${process.pid}-${Date.now()}.partial`);
    let handle: FileHandle;
    try {
      handle = await open(tempPath, 'wx', 0o644);
    } catch (e) {
      throw new IoError('IO_CREATE', `cannot create output next to '${destination}': ${code(e)}`, { file: destination, cause: e });
    }
    try {
      await handle.truncate(size);
    } catch (e) {
      await handle.close().catch(() => undefined);
      await unlink(tempPath).catch(() => undefined);
      throw new IoError('IO_WRITE', `cannot size output '${destination}' to ${size} bytes: ${code(e)}`, { file: destination, cause: e });
    }
    return new RawOutput(destination, tempPath, handle);
  }

  /** The descriptor of the temporary file while it is open (for writes on worker threads). */
  get fd(): number {
    return this.handle.fd;
  }

  /** Writes `data[from, to)` at `position`. */
  async write(data: Uint8Array, from: number, to: number, position: number): Promise<void> {
    let done = 0;
    const length = to - from;
    while (done < length) {
      let n: number;
      try {
        n = await pwriteAsync(this.handle.fd, data, from + done, length - done, position + done);
      } catch (e) {
        throw new IoError('IO_WRITE', `write of ${length} bytes at ${position} to '${this.destination}' failed: ${code(e)}`, {
          file: this.destination, offset: position, cause: e,
        });
      }
      if (n === 0) throw new IoError('IO_WRITE', `write to '${this.destination}' made no progress at ${position + done}`, { file: this.destination });
      done += n;
    }
  }

  /**
   * Closes the file and renames it over the destination; with `sync`, flushes it to stable
   * storage first (qemu-img convert's default cache mode, "unsafe", does not).
   */
  async commit(sync = false): Promise<void> {
    if (this.finished) return;
    try {
      if (sync) await this.handle.sync();
      await this.handle.close();
      await rename(this.tempPath, this.destination);
      this.finished = true;
    } catch (e) {
      await this.abort();
      throw new IoError('IO_WRITE', `cannot finish output '${this.destination}': ${code(e)}`, { file: this.destination, cause: e });
    }
  }

  /** Closes and removes the temporary file. Idempotent. */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    await this.handle.close().catch(() => undefined);
    await unlink(this.tempPath).catch(() => undefined);
  }
}

function code(e: unknown): string {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : String(e);
}

/** One positioned write through `fs.write`'s callback (less main-thread CPU than `FileHandle.write`). */
function pwriteAsync(fd: number, data: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    fsWrite(fd, data, offset, length, position, (err, n) => (err !== null ? reject(err) : resolve(n)));
  });
}
