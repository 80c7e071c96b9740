/**
 * The `lseek(2)` binding used for SEEK_DATA/SEEK_HOLE.
 *
 * Node's `fs` has no lseek. The optional dependency `koffi` calls libc's `lseek` directly
 * (loaded by ffi.ts). When koffi is missing, cannot load libc, or `VDISK_NO_SEEK_HOLE=1` is
 * set, there is no binding and hole probing falls back to "everything is data" (see
 * `holes.ts`).
 */
import { loadKoffi, loadLibc } from './ffi.js';
import { dropBeforeSnapshot } from './snapshot-state.js';

/** Result of one lseek call: the new offset, or the errno it failed with. */
export type LseekResult = { readonly offset: number } | { readonly errno: number };

/** A callable lseek: `(fd, offset, whence)`. */
export type LseekFn = (fd: number, offset: number, whence: number) => LseekResult;

/** Linux values of the whence constants. */
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
/** Linux errno values the probe logic distinguishes. */
export const ENXIO = 6;
export const EINVAL = 22;

let cached: LseekFn | null | undefined;
// Whether a run can probe holes is the run's to find out (its environment, its koffi).
dropBeforeSnapshot(() => {
  cached = undefined;
});

/** Loads the binding once; returns null when hole probing is not available. */
export function loadLseek(): LseekFn | null {
  if (cached !== undefined) return cached;
  cached = null;
  if (process.env['VDISK_NO_SEEK_HOLE'] === '1' || process.platform !== 'linux') return cached;
  const koffi = loadKoffi();
  const libc = loadLibc();
  if (koffi === null || libc === null) return cached;
  try {
    const lseek = libc.func('int64_t lseek(int fd, int64_t offset, int whence)');
    cached = (fd, offset, whence) => {
      const r = lseek(fd, offset, whence);
      const n = typeof r === 'bigint' ? Number(r) : r;
      if (n < 0) return { errno: koffi.errno() };
      return { offset: n };
    };
  } catch {
    cached = null;
  }
  return cached;
}
