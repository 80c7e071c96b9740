/**
 * Reading refcounts (spec "Host cluster management"; QEMU `qcow2_get_refcount`).
 *
 * The refcount table is loaded whole (bounded at open: at most 8 MiB); refcount blocks are
 * read on demand and kept in a small LRU. Entries are `refcount_bits` wide (1..64),
 * sub-byte widths packed from the least significant bit. Both are read synchronously when
 * the file can (a page-cache read of one cluster takes microseconds, a thread-pool round
 * trip behind a walk's L2 read-ahead took 4–7 ms: the first mapping query waits for this).
 */
import { CorruptImageError, hex } from '../../errors.js';
import { readPreferSync, type RandomAccessFile } from '../../io/random-access-file.js';
import { countNonZeroEntries } from './table-scan.js';

/** Refcount lookup for one image. */
export class RefcountReader {
  private table: BigUint64Array | null = null;
  private readonly blocks = new Map<number, Uint8Array>();
  private readonly entriesPerBlock: number;

  constructor(
    private readonly file: RandomAccessFile,
    private readonly clusterBits: number,
    private readonly refcountOrder: number,
    private readonly tableOffset: number,
    private readonly tableClusters: number,
    /** The refcount table when the caller has read it already (open-checks.ts). */
    table: BigUint64Array | null = null,
  ) {
    this.entriesPerBlock = 2 ** (clusterBits + 3 - refcountOrder);
    this.table = table;
  }

  /** Refcount of host cluster `index` (0 when no refcount block covers it). */
  async get(index: number): Promise<bigint> {
    const table = await this.loadTable();
    const ti = Math.floor(index / this.entriesPerBlock);
    if (ti >= table.length) return 0n;
    const entry = table[ti] ?? 0n;
    const blockOffset = entry & 0xfffffffffffffe00n;
    if (blockOffset === 0n) return 0n;
    if (blockOffset % BigInt(2 ** this.clusterBits) !== 0n || blockOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CorruptImageError(
        'QCOW2_REFBLOCK_OFFSET',
        `refblock offset ${hex(blockOffset)} unaligned (reftable index: ${hex(ti)})`,
        { file: this.file.path, field: 'refcount table entry', value: blockOffset, offset: this.tableOffset + ti * 8 },
      );
    }
    const block = await this.loadBlock(Number(blockOffset));
    return readEntry(block, index % this.entriesPerBlock, this.refcountOrder);
  }

  /**
   * Counts host clusters in `[0, nbClusters)` with a non-zero refcount, stopping once
   * `limit` are found. Clusters without a refcount block are skipped a block at a time, so
   * the work follows the refcount structures, not the (untrusted) file length.
   */
  async countReferenced(nbClusters: number, limit: number): Promise<number> {
    const table = await this.loadTable();
    let found = 0;
    const perBlock = this.entriesPerBlock;
    for (let ti = 0; ti < table.length && ti * perBlock < nbClusters && found < limit; ti++) {
      if (((table[ti] ?? 0n) & 0xfffffffffffffe00n) === 0n) continue;
      const end = Math.min(nbClusters, (ti + 1) * perBlock);
      // One lookup validates and loads the block; its entries are then tested in place.
      await this.get(ti * perBlock);
      const block = this.blocks.get(Number((table[ti] ?? 0n) & 0xfffffffffffffe00n));
      if (block === undefined) continue;
      found += countNonZeroEntries(block, 0, end - ti * perBlock, this.refcountOrder, limit - found);
    }
    return found;
  }

  private async loadTable(): Promise<BigUint64Array> {
    if (this.table !== null) return this.table;
    const bytes = this.tableClusters * 2 ** this.clusterBits;
    if (this.tableOffset + bytes > this.file.size) {
      throw new CorruptImageError(
        'QCOW2_REFCOUNT_TABLE_BEYOND_EOF',
        `refcount table (${bytes} bytes at ${hex(this.tableOffset)}) runs past the end of the file (${this.file.size} bytes)`,
        { file: this.file.path, field: 'refcount_table_offset', value: this.tableOffset, limit: this.file.size, offset: this.tableOffset },
      );
    }
    const buf = Buffer.allocUnsafeSlow(bytes);
    await readPreferSync(this.file, buf, this.tableOffset, bytes);
    const dv = new DataView(buf.buffer, buf.byteOffset, bytes);
    const t = new BigUint64Array(bytes / 8);
    for (let i = 0; i < t.length; i++) t[i] = dv.getBigUint64(i * 8);
    this.table = t;
    return t;
  }

  private async loadBlock(offset: number): Promise<Uint8Array> {
    const hit = this.blocks.get(offset);
    if (hit !== undefined) return hit;
    const size = 2 ** this.clusterBits;
    if (offset + size > this.file.size) {
      throw new CorruptImageError(
        'QCOW2_REFBLOCK_BEYOND_EOF',
        `refcount block at ${hex(offset)} lies past the end of the file (${this.file.size} bytes)`,
        { file: this.file.path, field: 'refcount table entry', value: offset, limit: this.file.size },
      );
    }
    const buf = new Uint8Array(size);
    await readPreferSync(this.file, buf, offset, size);
    if (this.blocks.size >= 8) {
      const first = this.blocks.keys().next();
      if (first.done !== true) this.blocks.delete(first.value);
    }
    this.blocks.set(offset, buf);
    return buf;
  }
}

/**
 * {@link readEntry} as a number, for entries of at most 32 bits (`order` ≤ 5), where it is
 * exact: no BigInt per entry (converting a number to a BigInt costs V8 a runtime call, and a
 * check of a 1 TiB image reads 16 million entries).
 */
export function readEntryNumber(block: Uint8Array, i: number, order: number): number {
  const bits = 1 << order; // order 0..6: no wrap; `2 ** order` is a call to pow() per entry
  if (bits < 8) {
    const perByte = 8 / bits;
    const byte = block[Math.floor(i / perByte)] ?? 0;
    return (byte >> ((i % perByte) * bits)) & ((1 << bits) - 1);
  }
  const width = bits / 8;
  const at = i * width;
  let v = 0;
  for (let k = 0; k < width; k++) v = v * 256 + (block[at + k] ?? 0);
  return v;
}

/**
 * Entry `i` of a refcount block as the check compares it: a number for entries of at most
 * 32 bits ({@link readEntryNumber}), a BigInt for 64-bit ones ({@link readEntry}).
 */
export function readRefcount(block: Uint8Array, i: number, order: number): number | bigint {
  return order <= 5 ? readEntryNumber(block, i, order) : readEntry(block, i, order);
}

/** Entry `i` of a refcount block with entries `2^order` bits wide, big-endian for whole bytes. */
export function readEntry(block: Uint8Array, i: number, order: number): bigint {
  if (order <= 5) return BigInt(readEntryNumber(block, i, order));
  // 64-bit entries, as two exact 32-bit halves.
  const at = i * 8;
  let hi = 0;
  let lo = 0;
  for (let k = 0; k < 4; k++) hi = hi * 256 + (block[at + k] ?? 0);
  for (let k = 4; k < 8; k++) lo = lo * 256 + (block[at + k] ?? 0);
  return (BigInt(hi) << 32n) | BigInt(lo);
}
