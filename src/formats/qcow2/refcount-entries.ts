/**
 * Tests of refcount block entries in place (no value decoded per entry): how many of a
 * range are not zero, and whether one is. Entries are `2^order` bits wide (order 0..6):
 * below a byte packed from the low bits up, from a byte on big-endian.
 */

/**
 * How many of entries `[first, end)` of a refcount block are not zero, counting no further
 * than `limit`. Entries of a byte or more are tested byte by byte in one loop (no call per
 * entry: a metadata-preallocation check tests every cluster of every layer at open).
 */
export function countNonZero(block: Uint8Array, first: number, end: number, order: number, limit: number): number {
  let found = 0;
  const bits = 1 << order; // order 0..6: no wrap; `2 ** order` is a call to pow() per entry
  if (bits < 8) {
    for (let i = first; i < end && found < limit; i++) if (entryNonZero(block, i, order)) found++;
    return found;
  }
  const width = bits / 8;
  const stop = Math.min(end * width, block.length);
  if (width === 2) {
    for (let k = first * 2; k < stop && found < limit; k += 2) if (((block[k] as number) | (block[k + 1] as number)) !== 0) found++;
    return found;
  }
  for (let k = first * width; k < stop && found < limit; k += width) {
    let v = 0;
    for (let j = 0; j < width; j++) v |= block[k + j] as number;
    if (v !== 0) found++;
  }
  return found;
}

/** Whether entry `i` of a refcount block (entries `2^order` bits wide) is not zero. */
export function entryNonZero(block: Uint8Array, i: number, order: number): boolean {
  const bits = 1 << order; // order 0..6: no wrap; `2 ** order` is a call to pow() per entry
  if (bits < 8) {
    const perByte = 8 / bits;
    return (((block[Math.floor(i / perByte)] ?? 0) >> ((i % perByte) * bits)) & ((1 << bits) - 1)) !== 0;
  }
  const width = bits / 8;
  for (let k = i * width; k < (i + 1) * width; k++) if ((block[k] ?? 0) !== 0) return true;
  return false;
}
