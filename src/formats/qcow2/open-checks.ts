/**
 * What a qcow2 layer checks when it is opened, after the header, the extensions, the L1
 * table and the backing name (qcow2-driver.ts):
 *
 * 1. as QEMU 7.2 does in `qcow2_do_open`, which refuses the image otherwise: the LUKS header
 *    (`qcrypto_block_open` with NO_IO), the snapshot table (`qcow2_read_snapshots`) and the
 *    bitmap directory and tables (`qcow2_load_dirty_bitmaps`);
 * 2. what QEMU lacks (`vdiskChecks`, on by default; `vdisk check` turns it off so that it
 *    can report these problems instead): the refcount table and its blocks must lie in the
 *    file and be aligned; snapshot L1 tables must be aligned and within QEMU's L1 limit;
 *    the metadata structures must not overlap each other; the active L1 table must not
 *    have reserved bits or name an L2 table twice. It then builds the L2 table checker
 *    (l2-table-check.ts) that every L2 table passes before it is cached.
 *
 * Everything kept is reserved in the chain's metadata budget first.
 */
import { CorruptImageError, hex } from '../../errors.js';
import { readPreferSync, type RandomAccessFile } from '../../io/random-access-file.js';
import type { MetadataBudget } from '../budget.js';
import { loadBitmaps } from './bitmaps.js';
import { CRYPT_LUKS, INCOMPAT_DATA_FILE, INCOMPAT_EXTL2, QCOW_MAX_L1_SIZE } from './constants.js';
import type { HeaderExtensions } from './extensions.js';
import type { Qcow2Header } from './header.js';
import { L2TableChecker, scanL1 } from './l2-table-check.js';
import { readLuksInfo, type LuksInfo } from './luks-header.js';
import { MetadataRanges, type MetadataRange } from './metadata-ranges.js';
import { scanSnapshotTable } from './snapshots.js';

/** What the open-time checks produce for the driver. */
export interface OpenCheckResult {
  /** The decoded LUKS header (crypt_method 2), or null. */
  readonly luks: LuksInfo | null;
  /** The refcount table, when it was read (vdisk's checks on). */
  readonly refcountTable: BigUint64Array | null;
  /** The per-L2-table checks, or null when vdisk's checks are off. */
  readonly l2Checker: L2TableChecker | null;
}

/** Inputs of {@link runOpenChecks}. */
export interface OpenCheckInput {
  readonly file: RandomAccessFile;
  readonly header: Qcow2Header;
  readonly extensions: HeaderExtensions;
  /** The active L1 table as native words (hi, lo per entry). */
  readonly l1: Uint32Array;
  /** Virtual size as the block layer sees it (whole sectors). */
  readonly length: number;
  /** Run vdisk's checks beyond QEMU's (default true). */
  readonly vdiskChecks: boolean;
  readonly budget: MetadataBudget | null;
}

/** Runs the checks; throws the first problem found as a typed error. */
export async function runOpenChecks(input: OpenCheckInput): Promise<OpenCheckResult> {
  const { file, header: h, extensions: ext, vdiskChecks, budget } = input;
  const path = file.path;
  const cs = 2 ** h.clusterBits;

  // 1. What QEMU refuses at open.
  const luks = h.cryptMethod === CRYPT_LUKS && ext.crypto !== null ? await readLuksInfo(file, ext.crypto) : null;
  const snapshotL1: Array<{ index: number; offset: bigint; size: number; at: number }> = [];
  const snapshotBytes = await scanSnapshotTable(file, h, (e) => {
    if (vdiskChecks && (e.l1TableOffset % BigInt(cs) !== 0n || e.l1Size > QCOW_MAX_L1_SIZE / 8)) {
      snapshotL1.push({ index: e.index, offset: e.l1TableOffset, size: e.l1Size, at: e.offset });
    }
  });
  const bad = snapshotL1[0];
  if (bad !== undefined) {
    const unaligned = bad.offset % BigInt(cs) !== 0n;
    throw new CorruptImageError(
      'QCOW2_SNAPSHOT_L1',
      unaligned
        ? `snapshot ${bad.index + 1}: L1 table offset ${hex(bad.offset)} is not cluster aligned (cluster size ${cs}); snapshot table entry corrupted`
        : `snapshot ${bad.index + 1}: L1 table of ${bad.size} entries is too large (at most ${QCOW_MAX_L1_SIZE / 8}); snapshot table entry corrupted`,
      {
        file: path, field: unaligned ? 'snapshot l1_table_offset' : 'snapshot l1_size',
        value: unaligned ? bad.offset : bad.size, limit: unaligned ? `aligned to ${cs}` : QCOW_MAX_L1_SIZE / 8, offset: bad.at,
      },
    );
  }
  if (h.version === 3 && ext.bitmaps !== null) {
    await loadBitmaps(file, ext.bitmaps, { file: path, clusterSize: cs, virtualSize: input.length });
  }
  if (!vdiskChecks) return { luks, refcountTable: null, l2Checker: null };

  // 2. What QEMU lacks.
  const ranges: MetadataRange[] = [
    { kind: 'header', start: 0, end: cs },
    { kind: 'active L1 table', start: h.l1TableOffset, end: h.l1TableOffset + h.l1Size * 8 },
  ];
  const { table: refcountTable, blocks } = await readRefcountTable(file, h, budget, ranges);
  if (snapshotBytes > 0) ranges.push({ kind: 'snapshot table', start: h.snapshotsOffset, end: h.snapshotsOffset + snapshotBytes });
  if (h.version === 3 && ext.bitmaps !== null) {
    const b = ext.bitmaps;
    ranges.push({ kind: 'bitmap directory', start: b.bitmapDirectoryOffset, end: b.bitmapDirectoryOffset + b.bitmapDirectorySize });
  }
  if (luks !== null && ext.crypto !== null) {
    ranges.push({ kind: 'LUKS header', start: ext.crypto.offset, end: ext.crypto.offset + ext.crypto.length });
  }
  budget?.reserve(MetadataRanges.bytesFor(ranges.length + blocks.length), 'metadata map', path);
  const metadata = MetadataRanges.build(path, ranges, { kind: 'refcount block', starts: blocks, length: cs });

  const l2Count = countAllocated(input.l1);
  budget?.reserve(l2Count * 8, 'index of L2 tables', path);
  const l2Tables = scanL1(path, input.l1, h.l1TableOffset);
  const l2Checker = new L2TableChecker(
    {
      file: path,
      fileSize: file.size,
      clusterBits: h.clusterBits,
      clusterSize: cs,
      extendedL2: (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n,
      hasDataFile: (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n,
    },
    metadata,
    l2Tables,
  );
  return { luks, refcountTable, l2Checker };
}

/** A zero chunk to compare refcount table chunks against. */
const ZERO_CHUNK = new Uint8Array(4096);

/** Allocated entries of an L1 table (offset bits not all zero). */
function countAllocated(l1: Uint32Array): number {
  let n = 0;
  for (let i = 0; i < l1.length; i += 2) if (((l1[i] as number) & 0x00ffffff) !== 0 || ((l1[i + 1] as number) & 0xfffffe00) !== 0) n++;
  return n;
}

/**
 * Reads the refcount table (bounded at 8 MiB by the header checks) and adds it and its
 * refcount blocks to `ranges`. Blocks must be cluster-aligned and lie in the file.
 */
async function readRefcountTable(
  file: RandomAccessFile,
  h: Qcow2Header,
  budget: MetadataBudget | null,
  ranges: MetadataRange[],
): Promise<{ table: BigUint64Array; blocks: Float64Array }> {
  const path = file.path;
  const cs = 2 ** h.clusterBits;
  const bytes = h.refcountTableClusters * cs;
  if (h.refcountTableOffset + bytes > file.size) {
    throw new CorruptImageError(
      'QCOW2_REFCOUNT_TABLE_BEYOND_EOF',
      `refcount table (${bytes} bytes at ${hex(h.refcountTableOffset)}) runs past the end of the file (${file.size} bytes)`,
      { file: path, field: 'refcount_table_offset', value: h.refcountTableOffset, limit: file.size, offset: h.refcountTableOffset },
    );
  }
  budget?.reserve(bytes, 'refcount table', path);
  const buf = Buffer.allocUnsafeSlow(bytes);
  await readPreferSync(file, buf, h.refcountTableOffset, bytes);
  // Big-endian entries to native order (as the L1 and L2 tables; hosts are little-endian):
  // the table as 64-bit values for RefcountReader, and as (lo, hi) words for the scan.
  buf.swap64();
  const table = new BigUint64Array(buf.buffer, buf.byteOffset, bytes / 8);
  const words = new Uint32Array(buf.buffer, buf.byteOffset, bytes / 4);
  ranges.push({ kind: 'refcount table', start: h.refcountTableOffset, end: h.refcountTableOffset + bytes });
  // Most of a refcount table is zero: skip zero chunks with a native compare.
  const chunks: number[] = [];
  let blocks = 0;
  for (let c = 0; c < bytes; c += ZERO_CHUNK.length) {
    const n = Math.min(ZERO_CHUNK.length, bytes - c);
    if (buf.subarray(c, c + n).equals(ZERO_CHUNK.subarray(0, n))) continue;
    chunks.push(c);
    for (let i = c / 4; i < (c + n) / 4; i += 2) if (((words[i] as number) & 0xfffffe00) !== 0 || (words[i + 1] as number) !== 0) blocks++;
  }
  const starts = new Float64Array(blocks);
  let k = 0;
  for (const c of chunks) for (let i = c / 8; i < Math.min(bytes, c + ZERO_CHUNK.length) / 8; i++) {
    const lo = (words[2 * i] as number) & 0xfffffe00;
    const hi = words[2 * i + 1] as number;
    if (lo === 0 && hi === 0) continue;
    const at = h.refcountTableOffset + i * 8;
    if (lo % cs !== 0 || hi >= 0x200000) {
      const off = (BigInt(hi) << 32n) | BigInt(lo >>> 0);
      throw new CorruptImageError('QCOW2_REFBLOCK_OFFSET', `refblock offset ${hex(off)} unaligned (reftable index: ${hex(i)})`, {
        file: path, field: 'refcount table entry', value: off, limit: `aligned to ${cs}`, offset: at,
      });
    }
    const start = hi * 0x100000000 + (lo >>> 0);
    if (start + cs > file.size) {
      throw new CorruptImageError(
        'QCOW2_REFBLOCK_BEYOND_EOF',
        `refcount block at ${hex(start)} (reftable index: ${hex(i)}) lies past the end of the file (${file.size} bytes)`,
        { file: path, field: 'refcount table entry', value: start, limit: file.size, offset: at },
      );
    }
    starts[k++] = start;
  }
  return { table, blocks: starts };
}
