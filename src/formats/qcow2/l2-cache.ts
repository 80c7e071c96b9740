/**
 * A byte-budgeted LRU cache of decoded L2 tables, keyed by host offset.
 *
 * A table is read with one positioned read and decoded in bulk (`swap32` of the whole
 * cluster, then a `Uint32Array` view), so each entry is two native words. Concurrent misses
 * on one table share a single read.
 */
import type { RandomAccessFile } from '../../io/random-access-file.js';

/** One decoded L2 table: big-endian words swapped to native order. */
export type L2Words = Uint32Array;

/** Default budget: QEMU's default L2 cache size on Linux (32 MiB). */
export const DEFAULT_L2_CACHE_BYTES = 32 * 1024 * 1024;

/** LRU of L2 tables. `budgetBytes` is kept but at least two tables always fit (QEMU's minimum). */
export class L2Cache {
  private readonly tables = new Map<number, L2Words>();
  private readonly loading = new Map<number, Promise<L2Words>>();
  private readonly capacity: number;
  /** The most recently used table: repeated lookups in one table skip the LRU update. */
  private lastOffset = -1;
  private lastTable: L2Words | undefined;
  /** Tables read from the file so far. */
  loads = 0;

  constructor(
    private readonly file: RandomAccessFile,
    private readonly tableBytes: number,
    budgetBytes: number = DEFAULT_L2_CACHE_BYTES,
  ) {
    this.capacity = Math.max(2, Math.floor(budgetBytes / tableBytes));
  }

  /** The table at `offset` if cached (refreshes its LRU position), else undefined. */
  peek(offset: number): L2Words | undefined {
    if (offset === this.lastOffset) return this.lastTable;
    const t = this.tables.get(offset);
    if (t !== undefined) {
      this.lastOffset = offset;
      this.lastTable = t;
    }
    if (t !== undefined && this.tables.size > 1) {
      this.tables.delete(offset);
      this.tables.set(offset, t);
    }
    return t;
  }

  /** Loads the table at `offset` (one read), caching it. */
  load(offset: number): Promise<L2Words> {
    const cached = this.peek(offset);
    if (cached !== undefined) return Promise.resolve(cached);
    let p = this.loading.get(offset);
    if (p === undefined) {
      p = this.read(offset).finally(() => this.loading.delete(offset));
      this.loading.set(offset, p);
    }
    return p;
  }

  private async read(offset: number): Promise<L2Words> {
    const buf = Buffer.allocUnsafeSlow(this.tableBytes);
    await this.file.read(buf, offset, this.tableBytes);
    buf.swap32();
    const words = new Uint32Array(buf.buffer, buf.byteOffset, this.tableBytes / 4);
    this.loads++;
    this.tables.set(offset, words);
    if (this.tables.size > this.capacity) {
      const oldest = this.tables.keys().next();
      if (oldest.done !== true) {
        this.tables.delete(oldest.value);
        if (oldest.value === this.lastOffset) {
          this.lastOffset = -1;
          this.lastTable = undefined;
        }
      }
    }
    return words;
  }
}
