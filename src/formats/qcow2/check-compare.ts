/**
 * The stored side of a consistency check (QEMU 7.2 block/qcow2-refcount.c `check_refblocks`,
 * `compare_refcounts`, `check_oflag_copied`), read-only.
 *
 * {@link StoredRefcounts} reads the refcount table and blocks as QEMU's
 * `qcow2_get_refcount` does: the part of the table inside the file (the rest reads as
 * zeroes), blocks through a small cache, bytes past the end of the file as zeroes; an
 * unaligned block offset makes that lookup fail (QEMU signals corruption and returns EIO).
 */
import { readEntry, readEntryNumber } from './refcount.js';
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
    private readonly refcountOrder: number,
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
   * for 64-bit ones (`refcount_order` 6).
   */
  get(index: number): Refcount | RefblockUnaligned | Promise<Refcount | RefblockUnaligned> {
    const ti = Math.floor(index / this.entriesPerBlock);
    if (ti >= this.tableSize) return 0;
    if (ti !== this.lastIndex) {
      const blockOffset = this.entry(ti) & REFT_OFFSET_MASK;
      if (blockOffset === 0n) return 0;
      if (blockOffset % BigInt(this.clusterSize) !== 0n) return new RefblockUnaligned(blockOffset, ti);
      const block = this.blocks.get(blockOffset);
      if (block === undefined) return this.load(blockOffset).then(() => this.get(index));
      this.lastIndex = ti;
      this.lastBlock = block;
    }
    const i = index % this.entriesPerBlock;
    return this.refcountOrder <= 5 ? readEntryNumber(this.lastBlock, i, this.refcountOrder) : readEntry(this.lastBlock, i, this.refcountOrder);
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
 * returns the highest cluster either side counts (0 when none).
 */
export async function compareRefcounts(st: CheckState, stored: StoredRefcounts, signaled: { done: boolean }): Promise<number> {
  let highest = 0;
  const n = st.refcounts.size;
  for (let i = 0; i < n; i++) {
    let r1 = stored.get(i);
      if (r1 instanceof Promise) r1 = await r1;
    if (r1 instanceof RefblockUnaligned) {
      signalUnaligned(st, r1, signaled);
      st.report(`Can't get refcount for cluster ${i}: Input/output error`);
      st.counts.checkErrors++;
      continue;
    }
    // Compared as numbers when the stored refcount is one (the recomputed one always is).
    const r2: Refcount = typeof r1 === 'number' ? st.refcounts.get(i) : BigInt(st.refcounts.get(i));
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
    for (let j = 0; j < entries; j++) {
      const eh = dv.getUint32(j * entrySize);
      const el = dv.getUint32(j * entrySize + 4);
      const t = clusterType(eh, el, g.extendedL2, g.hasDataFile);
      if (t !== ClusterType.Normal && t !== ClusterType.ZeroAlloc) continue;
      let refcount: Refcount;
      if (g.hasDataFile) {
        refcount = 1;
      } else {
        const dataOffset = (eh & 0x00ffffff) * 0x100000000 + ((el & 0xfffffe00) >>> 0);
        let rc = stored.get(Math.floor(dataOffset / cs));
      if (rc instanceof Promise) rc = await rc;
        if (rc instanceof RefblockUnaligned) {
          signalUnaligned(st, rc, signaled);
          continue;
        }
        refcount = rc;
      }
      if (isOne(refcount) !== ((eh & 0x80000000) !== 0)) {
        st.counts.corruptions++;
        st.report(`ERROR OFLAG_COPIED data cluster: l2_entry=${word64(eh, el).toString(16)} refcount=${refcount}`);
      }
    }
  }
}

/** Whether a stored refcount is 1 (a number or a BigInt). */
function isOne(r: Refcount): boolean {
  return r === 1 || r === 1n;
}
