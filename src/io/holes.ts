/**
 * Hole probing: QEMU's `find_allocation` (block/file-posix.c) over an lseek binding.
 *
 * The outcomes of `lseek(SEEK_DATA, start)`:
 *  - D1: returns `start`            → start is in data; continue with SEEK_HOLE.
 *  - D2: returns `data > start`     → start is in a hole that ends at `data`.
 *  - D3: fails with ENXIO           → start is in the trailing hole, or at/after EOF.
 *  - D4: fails otherwise, or returns `< start` → we learned nothing: report `unknown`.
 * The outcomes of `lseek(SEEK_HOLE, start)` after D1:
 *  - H1: returns `hole > start`     → data runs from start to `hole` (EOF counts as a hole).
 *  - H2: returns `start`            → a hole appeared meanwhile (QEMU: -EBUSY): `unknown`.
 *  - H3: fails with ENXIO           → the file was truncated meanwhile: `unknown`.
 *  - H4: fails otherwise, or returns `< start` → `unknown`.
 * `unknown` makes callers pretend there are no holes, as QEMU does for any error but ENXIO.
 */
import type { AllocationProbe } from './random-access-file.js';
import { ENXIO, SEEK_DATA, SEEK_HOLE, type LseekFn } from './lseek-binding.js';

const UNKNOWN: AllocationProbe = { kind: 'unknown' };

/**
 * Runs the D/H case table above; `lseek` null means no binding (always `unknown`).
 * `startIsData` says an earlier SEEK_DATA already returned `start` (D1), so only the
 * SEEK_HOLE step is needed.
 */
export function findAllocation(lseek: LseekFn | null, fd: number, start: number, startIsData = false): AllocationProbe {
  if (lseek === null) return UNKNOWN;
  if (!startIsData) {
    const d = lseek(fd, start, SEEK_DATA);
    if ('errno' in d) return d.errno === ENXIO ? { kind: 'trailing-hole' } : UNKNOWN; // D3 / D4
    if (d.offset < start) return UNKNOWN; // D4
    if (d.offset > start) return { kind: 'hole', end: d.offset }; // D2
  }
  const h = lseek(fd, start, SEEK_HOLE); // D1
  if ('errno' in h) return UNKNOWN; // H3 / H4
  if (h.offset <= start) return UNKNOWN; // H2 / H4
  return { kind: 'data', end: h.offset }; // H1
}
