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
  /** Tables the cache holds at most. */
  readonly capacity: number;
  /** The most recently used table: repeated lookups in one table skip the LRU update. */
  private lastOffset = -1;
  private lastTable: L2Words | undefined;
  /** Tables read from the file so far. */
  loads = 0;
  /** Evicted tables, reused for the next reads. */
  private readonly spare: L2Words[] = [];
  /** Batch read buffers (each `batchBytes` long), reused. */
  private readonly batches: Buffer[] = [];
  /** Bytes read at most in one batch (about 1 MiB, at least one table). */
  private readonly batchBytes: number;

  constructor(
    private readonly file: RandomAccessFile,
    private readonly tableBytes: number,
    budgetBytes: number = DEFAULT_L2_CACHE_BYTES,
    /** Checks a table before it is cached (l2-table-check.ts); a table it refuses is not cached. */
    private readonly validate: ((offset: number, words: L2Words) => void) | null = null,
  ) {
    this.capacity = Math.max(2, Math.floor(budgetBytes / tableBytes));
    this.batchBytes = Math.max(tableBytes, Math.floor((1024 * 1024) / tableBytes) * tableBytes);
    // (With tables of 1 MiB or more a batch is one table, read without a batch buffer.)
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

  /**
   * Loads several tables, reading runs of adjacent ones (as metadata preallocation lays
   * them out) with one read of up to `maxBatch` tables. Tables already cached or loading
   * are skipped. Failures reject only the returned promise.
   */
  loadMany(offsets: readonly number[], maxBatch = this.batchBytes / this.tableBytes): Promise<void> {
    const todo = [...new Set(offsets)]
      .filter((o) => this.tables.get(o) === undefined && !this.loading.has(o))
      .sort((a, b) => a - b);
    const reads: Promise<unknown>[] = [];
    for (let i = 0; i < todo.length; ) {
      let j = i + 1;
      while (j < todo.length && j - i < maxBatch && todo[j] === (todo[j - 1] as number) + this.tableBytes) j++;
      const run = todo.slice(i, j);
      const batch = this.readRun(run);
      run.forEach((o, k) => {
        const p = batch.then((tables) => tables[k] as L2Words).finally(() => this.loading.delete(o));
        p.catch(() => undefined);
        this.loading.set(o, p);
      });
      reads.push(batch);
      i = j;
    }
    return Promise.all(reads).then(() => undefined);
  }

  private async read(offset: number): Promise<L2Words> {
    return (await this.readRun([offset]))[0] as L2Words;
  }

  /**
   * Reads adjacent tables starting at `run[0]` with one read into a pooled batch buffer,
   * then copies each into a table buffer of its own (recycled from evicted tables), so the
   * memory held is the cache's budget, not whole batches kept alive by one cached table.
   */
  private async readRun(run: readonly number[]): Promise<L2Words[]> {
    const first = run[0] as number;
    const per = this.tableBytes / 4;
    if (run.length === 1) {
      // One table: read straight into its own buffer.
      const words = this.spare.pop() ?? new Uint32Array(per);
      const bytes = Buffer.from(words.buffer, words.byteOffset, this.tableBytes);
      try {
        await this.file.read(bytes, first, this.tableBytes);
        bytes.swap32();
        this.validate?.(first, words);
      } catch (e) {
        this.recycle(words);
        throw e;
      }
      this.loads++;
      this.insert(first, words);
      return [words];
    }
    const bytes = this.tableBytes * run.length;
    const full = this.batches.pop() ?? Buffer.allocUnsafeSlow(this.batchBytes);
    const buf = full.subarray(0, bytes);
    try {
      await this.file.read(buf, first, bytes);
      buf.swap32();
      const all = new Uint32Array(buf.buffer, buf.byteOffset, bytes / 4);
      const out: L2Words[] = [];
      for (let k = 0; k < run.length; k++) {
        const words = this.spare.pop() ?? new Uint32Array(per);
        words.set(all.subarray(k * per, (k + 1) * per));
        try {
          this.validate?.(first + k * this.tableBytes, words);
        } catch (e) {
          this.recycle(words);
          throw e;
        }
        this.loads++;
        this.insert(first + k * this.tableBytes, words);
        out.push(words);
      }
      return out;
    } finally {
      if (this.batches.length === 0) this.batches.push(full);
    }
  }

  /** Keeps an unused table for reuse: a few, and never more than about 1 MiB of them. */
  private recycle(words: L2Words): void {
    if (this.spare.length < Math.min(8, Math.floor((1024 * 1024) / this.tableBytes))) this.spare.push(words);
  }

  private insert(offset: number, words: L2Words): void {
    this.tables.set(offset, words);
    if (this.tables.size > this.capacity) {
      const oldest = this.tables.entries().next();
      if (oldest.done !== true) {
        const [evicted, table] = oldest.value;
        this.tables.delete(evicted);
        if (evicted === this.lastOffset) {
          this.lastOffset = -1;
          this.lastTable = undefined;
        }
        // Lookups use tables synchronously and never keep one across an await: reusable.
        this.recycle(table);
      }
    }
  }
}
