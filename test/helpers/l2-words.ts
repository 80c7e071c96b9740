/**
 * Native (hi, lo) words of 64-bit table entries, as vdisk's L1/L2 caches hold them after the
 * big-endian decode: for tests that build tables from `bigint` entries.
 */

/** The words of `values`, in a table of `total` entries (the rest zero). */
export function l2Words(values: readonly bigint[], total = values.length): Uint32Array {
  const a = new Uint32Array(total * 2);
  values.forEach((v, i) => {
    a[2 * i] = Number(v >> 32n);
    a[2 * i + 1] = Number(v & 0xffffffffn);
  });
  return a;
}
