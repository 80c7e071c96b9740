/**
 * Values that are either ready or still coming.
 *
 * Drivers answer synchronously when no I/O is needed (a cached L2 table); the status layer
 * chains such answers without a microtask per call, which keeps per-extent work cheap on
 * images with millions of tiny extents.
 */

/** A value, or a promise of one. */
export type MaybePromise<T> = T | Promise<T>;

/** Applies `f` now if `v` is ready, else when it resolves. */
export function andThen<T, U>(v: MaybePromise<T>, f: (t: T) => MaybePromise<U>): MaybePromise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}
