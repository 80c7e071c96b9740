/**
 * The output's write lock: one int32 in shared memory that the threads writing one output
 * (pool workers, the output writer) hold while a write runs, so that they take turns
 * instead of contending for the file's inode lock in the kernel (measured: concurrent
 * writers of one file spent about half their time there). It only keeps writers from
 * contending; two writes at once would still be correct.
 */
import { pwriteExactSync } from '../../io/pread-sync.js';

/**
 * Writes `length` bytes of `buffer` from `offset` at `position` of `fd` with the lock held
 * (without a lock when `lock` is null); null, or what failed.
 */
export function pwriteLocked(lock: Int32Array | null, fd: number, buffer: Uint8Array, offset: number, length: number, position: number): string | null {
  if (lock === null) return pwriteExactSync(fd, buffer, offset, length, position);
  while (Atomics.compareExchange(lock, 0, 0, 1) !== 0) Atomics.wait(lock, 0, 1);
  try {
    return pwriteExactSync(fd, buffer, offset, length, position);
  } finally {
    releaseWriteLock(lock, 1);
  }
}

/**
 * Releases the lock and wakes `waiters` of the threads waiting for it (all by default).
 * Also for a lock whose holder was stopped while it held it: since the lock only keeps
 * writers from contending, releasing it under a live holder is still correct.
 */
export function releaseWriteLock(lock: Int32Array, waiters = Infinity): void {
  Atomics.store(lock, 0, 0);
  Atomics.notify(lock, 0, waiters);
}
