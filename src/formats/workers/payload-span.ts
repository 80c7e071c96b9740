/**
 * Reading the payloads of several compressed clusters with one read: `qemu-img convert -c`
 * writes them one after the other, so a read that runs on over the next payloads (small
 * gaps included) replaces one read per cluster. Used by the workers' decode and copy jobs.
 */

/** Gap between payloads still read together, and the largest single read. */
const MAX_GAP = 64 * 1024;
const MAX_SPAN = 4 * 1024 * 1024;

/**
 * The end of the read `[start, end)` extended over the payload `[s, s + length)`, or -1 when
 * that payload does not join it: it starts before `start`, too far after `end`, or the read
 * would grow past its limit.
 */
export function joinPayload(start: number, end: number, s: number, length: number): number {
  const e = s + length;
  if (s < start || s > end + MAX_GAP || Math.max(end, e) - start > MAX_SPAN) return -1;
  return Math.max(end, e);
}
