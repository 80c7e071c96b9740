/**
 * A byte-budgeted LRU cache of decoded L2 tables, keyed by host offset.
 *
 * A table is read with one positioned read and decoded in bulk (`swap32` of the whole
 * cluster, then a `Uint32Array` view), so each entry is two native words; then prepared
 * once (its run list found and the table checked, see the driver) before it is cached.
 * Concurrent misses on one table share a single read.
 */
import { readPreferSync, type RandomAccessFile } from '../../io/random-access-file.js';
import { runsBytes, type L2Runs } from './l2-runs.js';

/** One decoded L2 table: big-endian words swapped to native order. */
export type L2Words = Uint32Array;

/** A cached L2 table: its words, and its runs (standard L2 tables; null for extended L2). */
export interface L2Table {
  readonly words: L2Words;
  readonly runs: L2Runs | null;
}

/**
 * Prepares a freshly read table before it is cached: returns its run list (or null), or
 * throws to refuse the table (l2-table-check.ts); a refused table is not cached.
 */
export type L2Prepare = (offset: number, words: L2Words) => L2Runs | null;

/** Default budget: QEMU's default L2 cache size on Linux (32 MiB). */
export const DEFAULT_L2_CACHE_BYTES = 32 * 1024 * 1024;

/** Bytes of tables kept on probation at most (see {@link L2Cache}): the read-ahead (2 MiB) and a little more. */
const PROBATION_BYTES = 2 * 1024 * 1024;

/**
 * LRU of L2 tables. `budgetBytes` is kept but at least two tables always fit (QEMU's minimum).
 *
 * Scan-resistant: a table read enters a small probation queue (FIFO, about 2 MiB of tables)
 * and moves to the LRU only when it is used again after another table was (a walk coming
 * back to it, a chain's layers taking turns). A sequential walk, which never comes back,
 * then cycles through the same few buffers, still in the CPU's caches, instead of filling
 * the whole budget with fresh memory (W3: ~25 ms and 30 MB of peak RSS less, measured).
 */
export class L2Cache {
  private readonly tables = new Map<number, L2Table>();
  /** Tables read but not used again yet (insertion order); `true` once used after the read. */
  private readonly probation = new Map<number, { table: L2Table; seen: boolean }>();
  private readonly probationMax: number;
  private readonly loading = new Map<number, Promise<L2Table>>();
  /** Tables the cache holds at most. */
  readonly capacity: number;
  /** The most recently used table: repeated lookups in one table skip the LRU update. */
  private lastOffset = -1;
  private lastTable: L2Table | undefined;
  /** Bytes the cached tables and their run lists hold. */
  private heldBytes = 0;
  /** Tables read from the file so far. */
  loads = 0;
  /** Evicted tables, reused for the next reads. */
  private readonly spare: L2Words[] = [];
  /** Batch read buffers (each `batchBytes` long), reused. */
  private readonly batches: Buffer[] = [];
  /** Bytes read at most in one batch (about 1 MiB, at least one table). */
  private readonly batchBytes: number;
  /** Bytes the cache may hold (tables and run lists; at least two tables). */
  private readonly budgetBytes: number;

  constructor(
    private readonly file: RandomAccessFile,
    private readonly tableBytes: number,
    budgetBytes: number = DEFAULT_L2_CACHE_BYTES,
    private readonly prepare: L2Prepare = () => null,
  ) {
    this.capacity = Math.max(2, Math.floor(budgetBytes / tableBytes));
    this.probationMax = Math.min(this.capacity, Math.max(2, Math.floor(PROBATION_BYTES / tableBytes) + 2));
    this.budgetBytes = this.capacity * tableBytes;
    this.batchBytes = Math.max(tableBytes, Math.floor((1024 * 1024) / tableBytes) * tableBytes);
    // (With tables of 1 MiB or more a batch is one table, read without a batch buffer.)
  }

  /** Tables cached now (on probation and in the LRU; never more than {@link capacity}). */
  get size(): number {
    return this.tables.size + this.probation.size;
  }

  /** The table at `offset` if cached (refreshes its LRU position), else undefined. */
  peek(offset: number): L2Table | undefined {
    if (offset === this.lastOffset) return this.lastTable;
    const p = this.probation.get(offset);
    if (p !== undefined) {
      if (p.seen) {
        // Used again after another table: into the LRU.
        this.probation.delete(offset);
        this.tables.set(offset, p.table);
      }
      p.seen = true;
      this.lastOffset = offset;
      this.lastTable = p.table;
      return p.table;
    }
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

  /** Whether a read of the table at `offset` is under way. */
  isLoading(offset: number): boolean {
    return this.loading.has(offset);
  }

  /** Loads the table at `offset` (one read), caching it. */
  load(offset: number): Promise<L2Table> {
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
   * Loads the table at `offset` now, with one synchronous read, when the file can read
   * synchronously and no read of it is under way; returns undefined otherwise (then use
   * {@link load}). Errors are thrown, and the table is not cached, as with `load`.
   */
  loadSync(offset: number): L2Table | undefined {
    const cached = this.peek(offset);
    if (cached !== undefined) return cached;
    if (this.file.readSync === undefined || this.loading.has(offset)) return undefined;
    const words = this.spare.pop() ?? new Uint32Array(this.tableBytes / 4);
    const bytes = Buffer.from(words.buffer, words.byteOffset, this.tableBytes);
    let runs: L2Runs | null;
    try {
      this.file.readSync(bytes, offset, this.tableBytes);
      bytes.swap32();
      runs = this.prepare(offset, words);
    } catch (e) {
      this.recycle(words);
      throw e;
    }
    this.loads++;
    return this.insert(offset, { words, runs });
  }

  /**
   * Loads several tables, reading runs of adjacent ones (as metadata preallocation lays
   * them out) with one read of up to `maxBatch` tables. Tables already cached or loading
   * are skipped. Failures reject only the returned promise.
   */
  loadMany(offsets: readonly number[], maxBatch = this.batchBytes / this.tableBytes): Promise<void> {
    const todo = [...new Set(offsets)]
      .filter((o) => !this.tables.has(o) && !this.probation.has(o) && !this.loading.has(o))
      .sort((a, b) => a - b);
    const reads: Promise<unknown>[] = [];
    for (let i = 0; i < todo.length; ) {
      let j = i + 1;
      while (j < todo.length && j - i < maxBatch && todo[j] === (todo[j - 1] as number) + this.tableBytes) j++;
      const run = todo.slice(i, j);
      const batch = this.readRun(run);
      run.forEach((o, k) => {
        const p = batch.then((tables) => {
          const t = tables[k] as L2Table | TableFailure;
          if (t instanceof TableFailure) throw t.error;
          return t;
        }).finally(() => this.loading.delete(o));
        p.catch(() => undefined);
        this.loading.set(o, p);
      });
      reads.push(batch.then((tables) => {
        for (const t of tables) if (t instanceof TableFailure) throw t.error;
      }));
      i = j;
    }
    return Promise.all(reads).then(() => undefined);
  }

  private async read(offset: number): Promise<L2Table> {
    const t = (await this.readRun([offset]))[0] as L2Table | TableFailure;
    if (t instanceof TableFailure) throw t.error;
    return t;
  }

  /**
   * Reads adjacent tables starting at `run[0]` with one read (synchronous when the file
   * can: a thread-pool round trip costs more than a page-cache read of the tables, and the
   * walk waits for them at once) into a pooled batch buffer,
   * then copies each into a table buffer of its own (recycled from evicted tables), so the
   * memory held is the cache's budget, not whole batches kept alive by one cached table.
   * A table that fails its checks fails alone (a {@link TableFailure} in its place): the
   * tables before and after it are cached, so a walk that needs only those does not see
   * the error of a table read with them (QEMU reads tables one by one). A failed read
   * fails them all.
   */
  private async readRun(run: readonly number[]): Promise<Array<L2Table | TableFailure>> {
    const first = run[0] as number;
    const per = this.tableBytes / 4;
    if (run.length === 1) {
      // One table: read straight into its own buffer.
      const words = this.spare.pop() ?? new Uint32Array(per);
      const bytes = Buffer.from(words.buffer, words.byteOffset, this.tableBytes);
      let runs: L2Runs | null;
      try {
        await readPreferSync(this.file, bytes, first, this.tableBytes);
        bytes.swap32();
        runs = this.prepare(first, words);
      } catch (e) {
        this.recycle(words);
        throw e;
      }
      this.loads++;
      return [this.insert(first, { words, runs })];
    }
    if (this.file.readvSync !== undefined) return this.readRunInPlace(run, this.file.readvSync.bind(this.file));
    const bytes = this.tableBytes * run.length;
    const full = this.batches.pop() ?? Buffer.allocUnsafeSlow(this.batchBytes);
    const buf = full.subarray(0, bytes);
    try {
      await readPreferSync(this.file, buf, first, bytes);
      buf.swap32();
      const all = new Uint32Array(buf.buffer, buf.byteOffset, bytes / 4);
      return run.map((offset, k) => {
        const words = this.spare.pop() ?? new Uint32Array(per);
        words.set(all.subarray(k * per, (k + 1) * per));
        return this.admit(offset, words);
      });
    } finally {
      if (this.batches.length === 0) this.batches.push(full);
    }
  }

  /**
   * {@link readRun} with one vectored read straight into each table's own buffer: no batch
   * buffer, no copy. A failed read fails them all; a table that fails its checks, alone.
   */
  private readRunInPlace(run: readonly number[], readv: (buffers: readonly Uint8Array[], position: number) => void): Array<L2Table | TableFailure> {
    const first = run[0] as number;
    const per = this.tableBytes / 4;
    const tables = run.map(() => this.spare.pop() ?? new Uint32Array(per));
    const views = tables.map((w) => Buffer.from(w.buffer, w.byteOffset, this.tableBytes));
    try {
      readv(views, first);
    } catch (e) {
      for (const w of tables) this.recycle(w);
      throw e;
    }
    return run.map((offset, k) => {
      (views[k] as Buffer).swap32();
      return this.admit(offset, tables[k] as L2Words);
    });
  }

  /** Table `words` read at `offset` (native words): checked and cached, or its failure in its place. */
  private admit(offset: number, words: L2Words): L2Table | TableFailure {
    let runs: L2Runs | null;
    try {
      runs = this.prepare(offset, words);
    } catch (e) {
      this.recycle(words);
      return new TableFailure(e);
    }
    this.loads++;
    return this.insert(offset, { words, runs });
  }

  /** Keeps an unused table for reuse: a few, and never more than about 1 MiB of them. */
  private recycle(words: L2Words): void {
    if (this.spare.length < Math.min(8, Math.floor((1024 * 1024) / this.tableBytes))) this.spare.push(words);
  }

  private bytesOf(table: L2Table): number {
    return this.tableBytes + (table.runs === null ? 0 : runsBytes(table.runs));
  }

  private insert(offset: number, table: L2Table): L2Table {
    const before = this.tables.get(offset) ?? this.probation.get(offset)?.table;
    if (before !== undefined) {
      this.heldBytes -= this.bytesOf(before);
      this.tables.delete(offset);
    }
    this.probation.set(offset, { table, seen: false });
    this.heldBytes += this.bytesOf(table);
    if (offset === this.lastOffset) this.lastTable = table;
    while (this.probation.size > this.probationMax) this.evictOldest(this.probation);
    for (;;) {
      const size = this.tables.size + this.probation.size;
      if (size <= this.capacity && (this.heldBytes <= this.budgetBytes || size <= 2)) break;
      // Probation's oldest first (tables not used again yet), but never the table just
      // read (the newest); the LRU's oldest when probation holds only that one.
      if (!this.evictOldest(this.probation.size > 1 || this.tables.size === 0 ? this.probation : this.tables)) break;
    }
    return table;
  }

  /**
   * Drops the table at `offset`, whose user has copied what it needs and will not ask for it
   * again (the map kernel's sequential walk), and keeps its buffer for the next read: such a
   * walk then reads into a few recycled buffers instead of fresh memory for every table
   * (each fresh 64 KiB costs 16 page faults). Nothing happens when it is not cached.
   */
  release(offset: number): void {
    const t = this.probation.get(offset)?.table ?? this.tables.get(offset);
    if (t === undefined) return;
    this.probation.delete(offset);
    this.tables.delete(offset);
    this.discard(offset, t);
  }

  /** Evicts the first entry of `from`; false when it is empty. */
  private evictOldest(from: Map<number, L2Table> | Map<number, { table: L2Table }>): boolean {
    const oldest = from.entries().next();
    if (oldest.done === true) return false;
    const [evicted, v] = oldest.value;
    const old = 'words' in v ? v : v.table;
    from.delete(evicted);
    this.discard(evicted, old);
    return true;
  }

  /** Accounts for table `table` at `offset`, just taken out of the maps, and recycles its buffer. */
  private discard(offset: number, table: L2Table): void {
    this.heldBytes -= this.bytesOf(table);
    if (offset === this.lastOffset) {
      this.lastOffset = -1;
      this.lastTable = undefined;
    }
    // Lookups use tables synchronously and never keep one across an await: reusable.
    this.recycle(table.words);
  }
}

/** A table of a batch read that failed its checks (the error its load rejects with). */
class TableFailure {
  constructor(readonly error: unknown) {}
}
