/**
 * Recomputing refcounts for a consistency check (QEMU 7.2 block/qcow2-refcount.c:
 * `qcow2_inc_refcounts_imrt`, `check_refcounts_l1`, `check_refcounts_l2`), read-only.
 *
 * The in-memory refcount table (IMRT) has one counter per host cluster of the file as it
 * really is: `ceil(file size / cluster size)` counters, plus one for a last cluster that is
 * only partly in the file (QEMU accepts a reference that ends less than a cluster past the
 * end of the file). A reference reaching a cluster or more past the end is reported and not
 * counted, so no offset read from the image ever sizes an allocation. Tables are read in
 * bounded pieces (an L2 table or 64 KiB of L1 at a time), with bytes past the end of the
 * file reading as zeroes, as QEMU's block layer returns them.
 *
 * Messages are QEMU's, word for word, and go to `report` in QEMU's order.
 */
import { UnsupportedImageError } from '../../errors.js';
import { clusterType, ClusterType } from './l2-entry.js';
import { readPreferSync, type RandomAccessFile } from '../../io/random-access-file.js';
import {
  WORD_L1_RESERVED_HI as L1E_RESERVED_HI,
  WORD_L1_RESERVED_LO as L1E_RESERVED_LO,
  WORD_L2_RESERVED_HI as L2E_STD_RESERVED_HI,
  WORD_L2_RESERVED_LO as L2E_STD_RESERVED_LO,
  WORD_OFFSET_HI as OFFSET_HI,
  WORD_OFFSET_LO as OFFSET_LO,
  WORD_COPIED_HI as COPIED_HI,
  WORD_COMPRESSED_HI as COMPRESSED_HI,
} from './constants.js';

/** Counters of a check (QEMU `BdrvCheckResult` without the repair fields). */
export interface CheckCounts {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  imageEndOffset: number;
}

/** Geometry of the image under check. */
export interface CheckGeometry {
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly refcountOrder: number;
  readonly extendedL2: boolean;
  readonly hasDataFile: boolean;
}

/** `%#x`-style hex: `0` for zero, else `0x…`. */
export function altHex(v: number | bigint): string {
  return v === 0 || v === 0n ? '0' : '0x' + v.toString(16);
}

/** 64-bit value of native words (hi, lo). */
export function word64(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/**
 * Reads `length` bytes at `position` of `file`; bytes past its end read as zeroes (QEMU's
 * block layer pads reads past EOF). `length` is small (a cluster or a 64 KiB chunk). A
 * synchronous read when the file can: the check waits for each read at once, and a
 * thread-pool round trip per table (4,096 in a check of a 1 TiB image) kept it idle
 * for 0.4 s.
 */
export async function readZeroFilled(file: RandomAccessFile, position: number | bigint, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  if (typeof position === 'bigint') {
    if (position >= BigInt(file.size)) return out;
    position = Number(position);
  }
  if (position >= file.size) return out;
  const n = Math.min(length, file.size - position);
  if (n > 0) await readPreferSync(file, out, position, n);
  return out;
}

/** The in-memory refcount table, with QEMU's refcount width limit. */
export class RefcountArray {
  private readonly data: Uint8Array | Uint16Array | Uint32Array;
  /** Logical number of counters (QEMU's `nb_clusters`, grown by references). */
  size: number;
  /** `refcount_max`, capped at 2^32 − 1 for 64-bit refcounts (unreachable in practice). */
  readonly max: number;

  constructor(nbClusters: number, refcountOrder: number) {
    const bits = 2 ** refcountOrder;
    this.max = bits >= 32 ? 0xffffffff : 2 ** bits - 1;
    const capacity = nbClusters + 1;
    try {
      this.data = bits <= 8 ? new Uint8Array(capacity) : bits === 16 ? new Uint16Array(capacity) : new Uint32Array(capacity);
    } catch (e) {
      throw new UnsupportedImageError('CHECK_TOO_LARGE', `cannot hold ${capacity} refcounts in memory for the check`, {
        field: 'file size in clusters', value: capacity, cause: e,
      });
    }
    this.size = nbClusters;
  }

  get(k: number): number {
    return k < this.size ? (this.data[k] ?? 0) : 0;
  }

  /** Adds one to cluster `k`; false when at the maximum. `k` is at most the initial size. */
  increment(k: number): boolean {
    if (k >= this.size) this.size = k + 1;
    const v = this.data[k] ?? 0;
    if (v >= this.max) return false;
    this.data[k] = v + 1;
    return true;
  }
}

/** State shared by the steps of one check. */
export class CheckState {
  readonly counts: CheckCounts = {
    corruptions: 0, leaks: 0, checkErrors: 0, totalClusters: 0,
    allocatedClusters: 0, fragmentedClusters: 0, compressedClusters: 0, imageEndOffset: 0,
  };
  readonly refcounts: RefcountArray;

  constructor(
    readonly file: RandomAccessFile,
    readonly geometry: CheckGeometry,
    readonly report: (line: string) => void,
  ) {
    this.refcounts = new RefcountArray(Math.ceil(file.size / geometry.clusterSize), geometry.refcountOrder);
  }

  /** `qcow2_inc_refcounts_imrt`: counts one reference to every cluster of `[offset, offset + size)`. */
  inc(offset: number | bigint, size: number): void {
    if (size <= 0) return;
    const cs = this.geometry.clusterSize;
    const fileLen = this.file.size;
    // Numbers are exact here: offsets below 2^53 (larger ones are bigints or fail the test).
    if (typeof offset === 'bigint' || offset + size - fileLen >= cs) {
      const big = BigInt(offset);
      if (big + BigInt(size) - BigInt(fileLen) >= BigInt(cs)) {
        this.report(
          `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${big.toString(16)} size 0x${size.toString(16)}`,
        );
        this.counts.corruptions++;
        return;
      }
    }
    const off = Number(offset);
    const first = Math.floor(off / cs);
    const last = Math.floor((off + size - 1) / cs);
    for (let k = first; k <= last; k++) if (!this.refcounts.increment(k)) this.overflow(k);
  }

  /** {@link inc} of the one cluster at `offset`, cluster-aligned (the usual reference, made cheap). */
  incCluster(offset: number): void {
    const cs = this.geometry.clusterSize;
    if (offset >= this.file.size) this.inc(offset, cs);
    else if (!this.refcounts.increment(offset / cs)) this.overflow(offset / cs);
  }

  private overflow(k: number): void {
    this.report(`ERROR: overflow cluster offset=0x${(k * this.geometry.clusterSize).toString(16)}`);
    this.report('Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing');
    this.counts.corruptions++;
  }
}


/** Bits 9..55 of an entry (exact: at most 47 significant bits). */
function entryOffset(hi: number, lo: number): number {
  return (hi & OFFSET_HI) * 0x100000000 + ((lo & OFFSET_LO) >>> 0);
}

/** Bytes of L1 read per piece. */
const L1_CHUNK = 65536;

/**
 * `check_refcounts_l1`: counts the L1 table, its L2 tables and every cluster they reference.
 * `fragInfo` (the active table only) also counts allocated, fragmented and compressed
 * clusters.
 */
export async function checkRefcountsL1(st: CheckState, l1Offset: number | bigint, l1Size: number, fragInfo: boolean): Promise<void> {
  if (l1Size === 0) return;
  st.inc(l1Offset, l1Size * 8);
  const total = l1Size * 8;
  for (let done = 0; done < total; done += L1_CHUNK) {
    const n = Math.min(L1_CHUNK, total - done);
    const chunk = await readZeroFilled(st.file, BigInt(l1Offset) + BigInt(done), n);
    const dv = new DataView(chunk.buffer, chunk.byteOffset, n);
    for (let p = 0; p < n; p += 8) {
      const hi = dv.getUint32(p);
      const lo = dv.getUint32(p + 4);
      if (hi === 0 && lo === 0) continue;
      if ((hi & L1E_RESERVED_HI) !== 0 || (lo & L1E_RESERVED_LO) !== 0) {
        st.report(`ERROR found L1 entry with reserved bits set: ${word64(hi, lo).toString(16)}`);
        st.counts.corruptions++;
      }
      const l2Offset = entryOffset(hi, lo);
      st.inc(l2Offset, st.geometry.clusterSize);
      if (l2Offset % st.geometry.clusterSize !== 0) {
        st.report(`ERROR l2_offset=${l2Offset.toString(16)}: Table is not cluster aligned; L1 entry corrupted`);
        st.counts.corruptions++;
      }
      await checkRefcountsL2(st, l2Offset, fragInfo);
    }
  }
}

/** `check_refcounts_l2`: counts the clusters one L2 table references, checking its entries. */
async function checkRefcountsL2(st: CheckState, l2Offset: number, fragInfo: boolean): Promise<void> {
  const g = st.geometry;
  const cs = g.clusterSize;
  const table = await readZeroFilled(st.file, l2Offset, cs);
  const dv = new DataView(table.buffer, table.byteOffset, cs);
  const entrySize = g.extendedL2 ? 16 : 8;
  const entries = cs / entrySize;
  const csizeShift = 62 - (g.clusterBits - 8);
  let nextContiguous = 0;
  // Bits that keep an entry off the quick path: compressed, reserved, and offset bits below
  // the cluster size.
  const quick = !g.extendedL2 && !g.hasDataFile;
  const slowHi = COMPRESSED_HI | L2E_STD_RESERVED_HI;
  const slowLo = L2E_STD_RESERVED_LO | (OFFSET_LO & (cs - 1));
  for (let i = 0; i < entries; i++) {
    const at = i * entrySize;
    let hi = dv.getUint32(at);
    const lo = dv.getUint32(at + 4);
    /** The host cluster a Normal or ZeroAlloc entry references (counted below), or -1. */
    let host = -1;
    let aligned = true;
    if (quick && (hi & slowHi) === 0 && (lo & slowLo) === 0 && ((hi & OFFSET_HI) !== 0 || (lo & OFFSET_LO) !== 0)) {
      // The usual entry (16.8 million in W1's image), without the tests below, which it
      // passes: standard, a host cluster, no reserved bits, cluster-aligned.
      host = entryOffset(hi, lo);
    } else {
      // Extended L2 bitmap: bits 0..31 "allocated" (low word), 32..63 "reads as zero".
      const zeroBits = g.extendedL2 ? dv.getUint32(at + 8) : 0;
      const allocBits = g.extendedL2 ? dv.getUint32(at + 12) : 0;
      const type = clusterType(hi, lo, g.extendedL2, g.hasDataFile);
      if (type !== ClusterType.Compressed && ((hi & L2E_STD_RESERVED_HI) !== 0 || (lo & L2E_STD_RESERVED_LO) !== 0)) {
        st.report(`ERROR found l2 entry with reserved bits set: ${word64(hi, lo).toString(16)}`);
        st.counts.corruptions++;
      }
      switch (type) {
        case ClusterType.Compressed: {
          const offsetMask = (1n << BigInt(csizeShift)) - 1n;
          if ((hi & COPIED_HI) !== 0) {
            st.report(`ERROR: coffset=0x${(word64(hi, lo) & offsetMask).toString(16)}: copied flag must never be set for compressed clusters`);
            hi = (hi & ~COPIED_HI) >>> 0;
            st.counts.corruptions++;
          }
          if (g.hasDataFile) {
            st.report(`ERROR compressed cluster ${i} with data file, entry=0x${word64(hi, lo).toString(16)}`);
            st.counts.corruptions++;
            break;
          }
          if (zeroBits !== 0 || allocBits !== 0) {
            st.report(`ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=0x${word64(hi, lo).toString(16)}`);
            st.counts.corruptions++;
            break;
          }
          const e = word64(hi, lo);
          const coffset = e & offsetMask;
          const sectors = Number((e >> BigInt(csizeShift)) & ((1n << BigInt(g.clusterBits - 8)) - 1n)) + 1;
          st.inc(coffset, sectors * 512 - Number(coffset & 511n));
          if (fragInfo) {
            st.counts.allocatedClusters++;
            st.counts.compressedClusters++;
            st.counts.fragmentedClusters++;
          }
          break;
        }
        case ClusterType.ZeroAlloc:
        case ClusterType.Normal: {
          const offset = entryOffset(hi, lo);
          // `offset % cs` without a floating-point remainder (a call per entry): the offset's
          // bits below the cluster size are in the low word.
          const isAligned = (lo & OFFSET_LO & (cs - 1)) === 0;
          if ((zeroBits & allocBits) !== 0) {
            st.counts.corruptions++;
            st.report(`ERROR offset=${offset.toString(16)}: Allocated cluster has corrupted subcluster allocation bitmap`);
          }
          if (!isAligned) {
            st.counts.corruptions++;
            const containsData = g.extendedL2 ? allocBits !== 0 : (lo & 1) === 0;
            st.report(containsData
              ? `ERROR offset=${offset.toString(16)}: Data cluster is not properly aligned; L2 entry corrupted.`
              : `ERROR offset=${offset.toString(16)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
          }
          host = offset;
          aligned = isAligned;
          break;
        }
        case ClusterType.ZeroPlain:
          break;
        case ClusterType.Unallocated:
          if (allocBits !== 0) {
            st.counts.corruptions++;
            st.report('ERROR: Unallocated cluster has non-zero subcluster allocation map');
          }
          break;
      }
    }
    if (host >= 0) {
      if (fragInfo) {
        st.counts.allocatedClusters++;
        if (nextContiguous !== 0 && host !== nextContiguous) st.counts.fragmentedClusters++;
        nextContiguous = host + cs;
      }
      if (!g.hasDataFile) {
        if (aligned) st.incCluster(host);
        else st.inc(host, cs);
      }
    }
  }
}
