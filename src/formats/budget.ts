/**
 * A memory budget for metadata kept while a chain is open.
 *
 * Every table vdisk keeps in memory is bounded by QEMU's limits before it is allocated (an
 * L1 table ≤ 32 MiB, a refcount table ≤ 8 MiB, …), but a chain multiplies them: sixteen
 * layers with 32 MiB L1 tables would hold 512 MiB. The chain opener gives all its layers
 * one budget; each layer reserves what it keeps (L1 table, refcount table, the index of its
 * L2 tables, its L2 cache and decompression cache) before allocating it, and a layer that
 * does not fit is refused with `LIMIT_METADATA_MEMORY` instead of exhausting memory.
 */
import { UnsupportedImageError } from '../errors.js';

/** Default budget for a whole chain: room for one maximal image plus ordinary backing layers. */
export const DEFAULT_MAX_METADATA_BYTES = 128 * 1024 * 1024;

/** Bytes reserved so far and the limit, shared by the layers of one chain. */
export class MetadataBudget {
  private used = 0;
  private caches = 0;

  constructor(readonly limitBytes: number = DEFAULT_MAX_METADATA_BYTES) {}

  /** Bytes still available. */
  get available(): number {
    return Math.max(0, this.limitBytes - this.used);
  }

  /** Bytes reserved so far. */
  get reserved(): number {
    return this.used;
  }

  /** Reserves `bytes` for `what` of `file`, or throws `LIMIT_METADATA_MEMORY`. */
  reserve(bytes: number, what: string, file: string): void {
    if (bytes <= 0) return;
    if (this.used + bytes > this.limitBytes) {
      throw new UnsupportedImageError(
        'LIMIT_METADATA_MEMORY',
        `'${file}' needs ${mib(bytes)} for its ${what}, but the chain's metadata budget of ${mib(this.limitBytes)} has ${mib(this.available)} left (raise maxMetadataBytes / --max-metadata-memory to allow it)`,
        { file, field: what, value: this.used + bytes, limit: this.limitBytes },
      );
    }
    this.used += bytes;
  }

  /**
   * Size for the next layer's cache, which wants `wanted` bytes and needs `minimum`: the
   * k-th cache sized (k = 0 for the top layer) gets at most `available / (4 (k+1)²)`, so the
   * top layer gets a full cache and deep chains still find room for every layer's minimum.
   * The caller reserves the result.
   */
  cacheSize(wanted: number, minimum: number): number {
    const k = this.caches++;
    return Math.max(minimum, Math.min(wanted, Math.floor(this.available / (4 * (k + 1) * (k + 1)))));
  }
}

function mib(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${(bytes / (1024 * 1024)).toFixed(1)} MiB` : `${bytes} bytes`;
}
