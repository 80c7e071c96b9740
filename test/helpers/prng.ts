/**
 * A small deterministic PRNG for tests (mulberry32): the same seed gives the same tables,
 * chains and offsets on every machine. (bench/lib/prng.mjs is the benchmark's own copy,
 * plain JavaScript outside the test build.)
 */

/** Floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Integers in [0, n). */
export function rngInt(seed: number): (n: number) => number {
  const next = rng(seed);
  return (n) => Math.floor(next() * n);
}
