/**
 * Exact positioned reads and writes by file descriptor, synchronously: for worker threads
 * that use files the main thread opened (`RandomAccessFile.fd`). Same contract as
 * `RandomAccessFile.read`: a short read is an error, never a partial buffer. Errors are
 * returned as text (a worker passes them back by message), not thrown as typed errors.
 */
import { readSync, writeSync } from 'node:fs';

/** Reads exactly `length` bytes at `position` into `buffer` (from 0); null, or what failed. */
export function preadExactSync(fd: number, buffer: Uint8Array, position: number, length: number): string | null {
  let done = 0;
  while (done < length) {
    let n: number;
    try {
      n = readSync(fd, buffer, done, length - done, position + done);
    } catch (e) {
      return `read of ${length} bytes at ${position} failed: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
    }
    if (n === 0) return `short read: wanted ${length} bytes at offset ${position}, the file ends at ${position + done}`;
    done += n;
  }
  return null;
}

/** Writes exactly `length` bytes of `buffer` from `offset` at `position`; null, or what failed. */
export function pwriteExactSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): string | null {
  let done = 0;
  while (done < length) {
    let n: number;
    try {
      n = writeSync(fd, buffer, offset + done, length - done, position + done);
    } catch (e) {
      return `write of ${length} bytes at ${position} failed: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
    }
    if (n === 0) return `write made no progress at ${position + done}`;
    done += n;
  }
  return null;
}
