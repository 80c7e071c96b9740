// Seeded PRNG for the benchmark image recipes: the same seed gives the same offsets and
// patterns on every machine, so an image is described completely by its recipe.

/** mulberry32: a small 32-bit generator; returns a function giving uint32 values. */
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Uniform integer in [0, n) for 1 <= n <= 2^32 (rejection sampling, no modulo bias). */
export function randInt(rng, n) {
  if (!(n >= 1 && n <= 0x100000000)) throw new RangeError(`randInt: bad n ${n}`);
  const limit = Math.floor(0x100000000 / n) * n;
  let x;
  do x = rng(); while (x >= limit);
  return x % n;
}
