/**
 * The stored side of a consistency check (QEMU 7.2 block/qcow2-refcount.c `check_refblocks`,
 * `compare_refcounts`, `check_oflag_copied`), read-only.
 *
 * {@link StoredRefcounts} reads the refcount table and blocks as QEMU's
 * `qcow2_get_refcount` does: the part of the table inside the file (the rest reads as
 * zeroes), blocks through a small cache, bytes past the end of the file as zeroes; an
 * unaligned block offset makes that lookup fail (QEMU signals corruption and returns EIO).
 */
import { readRefcount } from './refcount.js';
import type { RandomAccessFile } from '../../io/random-access-file.js';
import { altHex, readZeroFilled, word64, type CheckState } from './check-refcounts.js';
import { clusterType, ClusterType } from './l2-entry.js';

const REFT_OFFSET_MASK = 0xfffffffffffffe00n;

/** A stored refcount: a number up to 32 bits, a BigInt for 64-bit refcounts. */
export type Refcount = number | bigint;

/** A refcount lookup failed: the refcount block offset is not cluster-aligned. */
export class RefblockUnaligned {
  constructor(readonly blockOffset: bigint, readonly tableIndex: number) {}
}

/** A refcount block as {@link StoredRefcounts.blockAt} finds it. */
export type RefcountBlock = Uint8Array | null | RefblockUnaligned;

/** The refcounts the image stores. */
export class StoredRefcounts {
  /** Raw refcount table entries inside the file (entries past the end of the file are 0). */
  readonly table: BigUint64Array;
  /** Entries the header declares (`refcount_table_clusters × cluster_size / 8`). */
  readonly tableSize: number;
  readonly entriesPerBlock: number;
  private readonly blocks = new Map<bigint, Uint8Array>();
  /** The table index whose block was used last, and that block. */
  private lastIndex = -1;
  private lastBlock: Uint8Array = new Uint8Array(0);

  private constructor(
    private readonly file: RandomAccessFile,
    private readonly clusterSize: number,
    readonly refcountOrder: number,
    table: BigUint64Array,
    tableSize: number,
  ) {
    this.table = table;
    this.tableSize = tableSize;
    this.entriesPerBlock = (clusterSize * 8) / 2 ** refcountOrder;
  }

  /** Reads the table at `offset` (`clusters` clusters); memory is bounded by the file size. */
  static async load(file: RandomAccessFile, clusterSize: number, refcountOrder: number, offset: number, clusters: number): Promise<StoredRefcounts> {
    const tableSize = (clusters * clusterSize) / 8;
    const inFile = Math.max(0, Math.min(tableSize * 8, file.size - offset));
    const entries = Math.floor(inFile / 8);
    const bytes = await readZeroFilled(file, offset, entries * 8);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const table = new BigUint64Array(entries);
    for (let i = 0; i < entries; i++) table[i] = dv.getBigUint64(i * 8);
    return new StoredRefcounts(file, clusterSize, refcountOrder, table, tableSize);
  }

  /** Raw table entry `i` (0 past what the file holds). */
  entry(i: number): bigint {
    return this.table[i] ?? 0n;
  }

  /**
   * `qcow2_get_refcount` of cluster `index`; synchronous when the refcount block is cached
   * (the usual case in a walk), so a walk over millions of clusters makes no promise each.
   * A number for refcounts of at most 32 bits (exact, and no BigInt per cluster), a BigInt
   * for 64-bit ones (`refcount_order` 6), except 0 (a number) where there is no block.
   */
  get(index: number): Refcount | RefblockUnaligned | Promise<Refcount | RefblockUnaligned> {
    const ti = Math.floor(index / this.entriesPerBlock);
    const block = this.blockAt(ti);
    if (block instanceof Promise) return block.then(() => this.get(index));
    if (block === null) return 0;
    if (block instanceof RefblockUnaligned) return block;
    return readRefcount(block, index - ti * this.entriesPerBlock, this.refcountOrder);
  }

  /**
   * The refcount block of table entry `ti`, for walks that read a block's entries in a row:
   * its bytes, null when there is none (past the table, or offset 0: every refcount reads
   * 0), or the lookup's failure; a promise when the block is not cached yet.
   */
  blockAt(ti: number): RefcountBlock | Promise<RefcountBlock> {
    if (ti >= this.tableSize) return null;
    if (ti === this.lastIndex) return this.lastBlock;
    const blockOffset = this.entry(ti) & REFT_OFFSET_MASK;
    if (blockOffset === 0n) return null;
    if (blockOffset % BigInt(this.clusterSize) !== 0n) return new RefblockUnaligned(blockOffset, ti);
    const block = this.blocks.get(blockOffset);
    if (block === undefined) return this.load(blockOffset).then(() => this.blockAt(ti));
    this.lastIndex = ti;
    this.lastBlock = block;
    return block;
  }

  private async load(blockOffset: bigint): Promise<void> {
    const block = await readZeroFilled(this.file, blockOffset, this.clusterSize);
    if (this.blocks.size >= 16) {
      const first = this.blocks.keys().next();
      if (first.done !== true) this.blocks.delete(first.value);
      this.lastIndex = -1;
    }
    this.blocks.set(blockOffset, block);
  }
}

/** QEMU prints this once when a refcount lookup meets an unaligned block (non-fatal: the check opens read-only). */
function signalUnaligned(st: CheckState, u: RefblockUnaligned, signaled: { done: boolean }): void {
  if (signaled.done) return;
  signaled.done = true;
  st.report(
    `qcow2: Image is corrupt: Refblock offset ${altHex(u.blockOffset)} unaligned (reftable index: ${altHex(u.tableIndex)}); further non-fatal corruption events will be suppressed`,
  );
}

/** `check_refblocks`: counts every refcount block and checks the table entries. */
export function checkRefblocks(st: CheckState, stored: StoredRefcounts): void {
  const cs = BigInt(st.geometry.clusterSize);
  for (let i = 0; i < stored.tableSize; i++) {
    const e = stored.entry(i);
    const offset = e & REFT_OFFSET_MASK;
    if ((e & 0x1ffn) !== 0n) {
      st.report(`ERROR refcount table entry ${i} has reserved bits set`);
      st.counts.corruptions++;
      continue;
    }
    if (offset % cs !== 0n) {
      st.report(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
      st.counts.corruptions++;
      continue;
    }
    const cluster = offset / cs;
    if (cluster >= BigInt(st.refcounts.size)) {
      st.counts.corruptions++;
      st.report(`ERROR refcount block ${i} is outside image`);
      continue;
    }
    if (offset !== 0n) {
      st.inc(offset, st.geometry.clusterSize);
      const r = st.refcounts.get(Number(cluster));
      if (r !== 1) {
        st.report(`ERROR refcount block ${i} refcount=${r}`);
        st.counts.corruptions++;
      }
    }
  }
}

/**
 * `compare_refcounts`: stored against recomputed refcounts for every cluster of the file;
 * returns the highest cluster either side counts (0 when none). Walks a refcount block at a
 * time: one lookup per block, not per cluster.
 */
export async function compareRefcounts(st: CheckState, stored: StoredRefcounts, signaled: { done: boolean }): Promise<number> {
  let highest = 0;
  const n = st.refcounts.size;
  const perBlock = stored.entriesPerBlock;
  for (let from = 0; from < n; ) {
    const ti = Math.floor(from / perBlock);
    const to = Math.min(n, (ti + 1) * perBlock);
    let block = stored.blockAt(ti);
    if (block instanceof Promise) block = await block;
    if (block instanceof RefblockUnaligned) {
      for (let i = from; i < to; i++) {
        signalUnaligned(st, block, signaled);
        st.report(`Can't get refcount for cluster ${i}: Input/output error`);
        st.counts.checkErrors++;
      }
    } else {
      highest = compareBlock(st, block, stored.refcountOrder, ti * perBlock, from, to, highest);
    }
    from = to;
  }
  return highest;
}

/**
 * Compares clusters `[from, to)`, whose stored refcounts are in `block` (entry 0 is cluster
 * `first`; null: all 0), with the recomputed ones; returns the new highest counted cluster.
 */
function compareBlock(st: CheckState, block: Uint8Array | null, order: number, first: number, from: number, to: number, highest: number): number {
  const counted = st.refcounts;
  for (let i = from; i < to; i++) {
    // Numbers up to 32 bits; 64-bit refcounts as BigInts (the recomputed one always fits a number).
    const r1: Refcount = block === null ? 0 : readRefcount(block, i - first, order);
    const c = counted.get(i);
    const r2: Refcount = typeof r1 === 'number' ? c : BigInt(c);
    if (r1 > 0 || r2 > 0) highest = i;
    if (r1 !== r2) {
      st.report(`${r1 < r2 ? 'ERROR' : 'Leaked'} cluster ${i} refcount=${r1} reference=${r2}`);
      if (r1 < r2) st.counts.corruptions++;
      else st.counts.leaks++;
    }
  }
  return highest;
}

/** `check_oflag_copied`: COPIED must be set exactly where the stored refcount is 1 (active L1 only). */
export async function checkOflagCopied(st: CheckState, stored: StoredRefcounts, l1: Uint32Array, signaled: { done: boolean }): Promise<void> {
  const g = st.geometry;
  const cs = g.clusterSize;
  const entrySize = g.extendedL2 ? 16 : 8;
  const entries = cs / entrySize;
  for (let i = 0; i * 2 < l1.length; i++) {
    const hi = l1[i * 2] ?? 0;
    const lo = l1[i * 2 + 1] ?? 0;
    const l2Offset = (hi & 0x00ffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
    if (l2Offset === 0) continue;
    let r = stored.get(Math.floor(l2Offset / cs));
    if (r instanceof Promise) r = await r;
    if (r instanceof RefblockUnaligned) {
      signalUnaligned(st, r, signaled);
    } else if (isOne(r) !== ((hi & 0x80000000) !== 0)) {
      st.counts.corruptions++;
      st.report(`ERROR OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${word64(hi, lo).toString(16)} refcount=${r}`);
    }
    if (r instanceof RefblockUnaligned) continue;
    const table = await readZeroFilled(st.file, l2Offset, cs);
    const dv = new DataView(table.buffer, table.byteOffset, cs);
    const wait: { block: Promise<RefcountBlock> | null } = { block: null };
    for (let j = 0; j < entries; ) {
      j = oflagEntries(st, stored, dv, j, entries, signaled, wait);
      if (wait.block !== null) await wait.block;
      wait.block = null;
    }
  }
}

/**
 * The data-cluster part of `check_oflag_copied` for entries `[from, entries)` of the L2
 * table `dv`, synchronously (a loop with an await in it keeps its variables in the heap):
 * returns where it stopped for a refcount block that is not cached yet, whose load it puts
 * in `wait` (the caller awaits it and goes on from there), or `entries`.
 */
function oflagEntries(
  st: CheckState, stored: StoredRefcounts, dv: DataView, from: number, entries: number, signaled: { done: boolean },
  wait: { block: Promise<RefcountBlock> | null },
): number {
  const g = st.geometry;
  const entrySize = g.extendedL2 ? 16 : 8;
  const order = stored.refcountOrder;
  const perBlock = stored.entriesPerBlock;
  const clusterBits = g.clusterBits;
  const clustersPerHi = 2 ** (32 - clusterBits);
  // The block of the last lookup and its clusters [first, first + perBlock): data clusters
  // mostly follow each other, so most lookups need neither a division nor a call.
  let block: RefcountBlock = null;
  let first = -1;
  for (let j = from; j < entries; j++) {
    const eh = dv.getUint32(j * entrySize);
    const el = dv.getUint32(j * entrySize + 4);
    const t = clusterType(eh, el, g.extendedL2, g.hasDataFile);
    if (t !== ClusterType.Normal && t !== ClusterType.ZeroAlloc) continue;
    let refcount: Refcount;
    if (g.hasDataFile) {
      refcount = 1;
    } else {
      // The data offset's cluster, without a division: cluster sizes are 2^9..2^21.
      const cluster = (eh & 0x00ffffff) * clustersPerHi + (el >>> clusterBits);
      if (first < 0 || cluster < first || cluster - first >= perBlock) {
        const ti = Math.floor(cluster / perBlock);
        const b = stored.blockAt(ti);
        if (b instanceof Promise) {
          wait.block = b;
          return j;
        }
        block = b;
        first = ti * perBlock;
      }
      if (block instanceof RefblockUnaligned) {
        signalUnaligned(st, block, signaled);
        continue;
      }
      refcount = block === null ? 0 : readRefcount(block, cluster - first, order);
    }
    if (isOne(refcount) !== ((eh & 0x80000000) !== 0)) {
      st.counts.corruptions++;
      st.report(`ERROR OFLAG_COPIED data cluster: l2_entry=${word64(eh, el).toString(16)} refcount=${refcount}`);
    }
  }
  return entries;
}

/** Whether a stored refcount is 1 (a number or a BigInt). */
function isOne(r: Refcount): boolean {
  return r === 1 || r === 1n;
}
