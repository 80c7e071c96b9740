/**
 * A read-only consistency check of a qcow2 image, as `qemu-img check` (no `-r`) does it
 * (QEMU 7.2 `qcow2_co_check_locked` → `qcow2_check_refcounts`):
 *
 * 1. recompute every cluster's refcount from the header, the active L1/L2 tables, every
 *    snapshot's L1/L2 tables, the snapshot table, the refcount table and blocks, the LUKS
 *    header and the bitmaps (directory, tables, data clusters), checking entries on the way;
 * 2. compare with the stored refcounts: a stored count below the real one is a corruption,
 *    above it a leak;
 * 3. check that OFLAG_COPIED is set exactly on entries whose cluster has refcount 1.
 *
 * Findings are reported line by line (QEMU's stderr texts) and counted; the counts give
 * `qemu-img check`'s output and exit status. Memory is bounded by the file's real size
 * (one counter per cluster of the file) plus a few clusters of tables.
 */
import { UnsupportedImageError } from '../errors.js';
import type { Image } from '../image.js';
import { hasIgnoredBitmapsExtension, ignoredBitmapsWarning } from '../formats/qcow2/bitmap-table.js';
import { loadBitmaps, readBitmapDirectory } from '../formats/qcow2/bitmaps.js';
import { checkOflagCopied, checkRefblocks, compareRefcounts, StoredRefcounts } from '../formats/qcow2/check-compare.js';
import { altHex, checkRefcountsL1, CheckState, readZeroFilled, type CheckCounts } from '../formats/qcow2/check-refcounts.js';
import { INCOMPAT_DATA_FILE, INCOMPAT_EXTL2, INT_MAX, QCOW_MAX_L1_SIZE } from '../formats/qcow2/constants.js';
import { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import { readSnapshotTable, SNAPSHOT_HEADER_SIZE } from '../formats/qcow2/snapshots.js';

/** The outcome of a check. */
export interface CheckResult {
  readonly filename: string;
  readonly format: string;
  readonly counts: CheckCounts;
  /** Why the check itself failed (`qemu-img: Check failed: …`), or null. */
  readonly failure: string | null;
}

/** Options of {@link checkImage}. */
export interface CheckOptions {
  /** Receives each finding, in QEMU's words and order (qemu-img prints them on stderr). */
  readonly onMessage?: (line: string) => void;
  /** Receives warnings QEMU prints when it opens the image (default: `onMessage`). */
  readonly onWarning?: (line: string) => void;
  /** Receives text QEMU prints without a newline. */
  readonly onRaw?: (text: string) => void;
}

const TABLE_CHUNK = 65536;

/**
 * Checks the top layer of `img`. Raw images fail with `CHECK_NOT_SUPPORTED` (qemu-img:
 * "This image format does not support checks"). Structures QEMU refuses when it opens the
 * image (snapshot table, bitmap directory and tables) fail as they do on open.
 */
export async function checkImage(img: Image, options: CheckOptions = {}): Promise<CheckResult> {
  const d = img.top.driver;
  if (!(d instanceof Qcow2Driver)) {
    throw new UnsupportedImageError('CHECK_NOT_SUPPORTED', 'This image format does not support checks', {
      file: img.top.filename, field: 'format', value: d.format, limit: 'qcow2',
    });
  }
  const h = d.header;
  const file = d.file;
  const cs = d.clusterSize;
  const bitmapCtx = { file: file.path, clusterSize: cs, virtualSize: d.length };
  // What QEMU reads and checks when it opens the image.
  const snapshots = await readSnapshotTable(file, h);
  const warn = options.onWarning ?? options.onMessage ?? (() => undefined);
  if (await hasIgnoredBitmapsExtension(file, h)) {
    // QEMU prints the warning, then this sentence without a newline.
    warn(`warning: ${ignoredBitmapsWarning(h.version)}`);
    options.onRaw?.("Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix.");
  }
  const bitmapsExt = h.version === 3 ? d.extensions.bitmaps : null;
  if (bitmapsExt !== null) await loadBitmaps(file, bitmapsExt, bitmapCtx);

  const st = new CheckState(
    file,
    {
      clusterBits: h.clusterBits,
      clusterSize: cs,
      refcountOrder: h.refcountOrder,
      extendedL2: (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n,
      hasDataFile: (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n,
    },
    options.onMessage ?? (() => undefined),
  );
  const result = (failure: string | null): CheckResult => ({ filename: img.top.filename, format: 'qcow2', counts: st.counts, failure });
  st.counts.totalClusters = Math.ceil(d.length / cs);
  if (st.refcounts.size > INT_MAX) {
    st.counts.checkErrors++;
    return result('File too large');
  }

  // calculate_refcounts
  st.inc(0, cs);
  await checkRefcountsL1(st, h.l1TableOffset, h.l1Size, true);
  if (st.geometry.hasDataFile && snapshots.length > 0) {
    st.report(`ERROR ${snapshots.length} snapshots in image with data file`);
    st.counts.corruptions++;
  }
  for (const sn of snapshots) {
    if (sn.l1TableOffset % BigInt(cs) !== 0n) {
      st.report(`ERROR snapshot ${sn.id} (${sn.name}) l1_offset=${altHex(sn.l1TableOffset)}: L1 table is not cluster aligned; snapshot table entry corrupted`);
      st.counts.corruptions++;
      continue;
    }
    if (sn.l1Size > QCOW_MAX_L1_SIZE / 8) {
      st.report(`ERROR snapshot ${sn.id} (${sn.name}) l1_size=${altHex(sn.l1Size)}: L1 table is too large; snapshot table entry corrupted`);
      st.counts.corruptions++;
      continue;
    }
    await checkRefcountsL1(st, sn.l1TableOffset, sn.l1Size, false);
  }
  const last = snapshots[snapshots.length - 1];
  if (last !== undefined) {
    const end = last.offset + SNAPSHOT_HEADER_SIZE + last.extraDataSize + last.idBytes.length + last.nameBytes.length;
    st.inc(h.snapshotsOffset, end - h.snapshotsOffset);
  }
  st.inc(h.refcountTableOffset, h.refcountTableClusters * cs);
  const crypto = d.extensions.crypto;
  if (crypto !== null && crypto.length > 0) st.inc(crypto.offset, crypto.length);
  if (bitmapsExt !== null) {
    st.inc(bitmapsExt.bitmapDirectoryOffset, bitmapsExt.bitmapDirectorySize);
    for (const bm of await readBitmapDirectory(file, bitmapsExt, bitmapCtx)) {
      st.inc(bm.bitmapTableOffset, bm.bitmapTableSize * 8);
      await countBitmapTable(st, bm.bitmapTableOffset, bm.bitmapTableSize);
    }
  }
  const stored = await StoredRefcounts.load(file, cs, h.refcountOrder, h.refcountTableOffset, h.refcountTableClusters);
  checkRefblocks(st, stored);

  const signaled = { done: false };
  const highest = await compareRefcounts(st, stored, signaled);
  // Only the part of the active L1 table inside the file: entries past its end read as 0.
  const l1InFile = Math.floor(Math.max(0, Math.min(h.l1Size * 8, file.size - h.l1TableOffset)) / 8);
  const l1Bytes = await readZeroFilled(file, h.l1TableOffset, l1InFile * 8);
  const l1 = new Uint32Array(l1InFile * 2);
  const dv = new DataView(l1Bytes.buffer, l1Bytes.byteOffset, l1Bytes.byteLength);
  for (let i = 0; i < l1.length; i++) l1[i] = dv.getUint32(i * 4);
  await checkOflagCopied(st, stored, l1, signaled);
  st.counts.imageEndOffset = (highest + 1) * cs;
  return result(null);
}

/** The bitmap part of `qcow2_check_bitmaps_refcounts` for one bitmap table. */
async function countBitmapTable(st: CheckState, offset: number, entries: number): Promise<void> {
  const cs = BigInt(st.geometry.clusterSize);
  const total = entries * 8;
  for (let done = 0; done < total; done += TABLE_CHUNK) {
    const n = Math.min(TABLE_CHUNK, total - done);
    const chunk = await readZeroFilled(st.file, offset + done, n);
    const dv = new DataView(chunk.buffer, chunk.byteOffset, n);
    for (let p = 0; p < n; p += 8) {
      const e = dv.getBigUint64(p);
      const dataOffset = e & 0x00fffffffffffe00n;
      const bad = (e & 0xff000000000001fen) !== 0n || (dataOffset !== 0n && ((e & 1n) !== 0n || dataOffset % cs !== 0n));
      if (bad) {
        st.counts.corruptions++;
        continue;
      }
      if (dataOffset !== 0n) st.inc(dataOffset, st.geometry.clusterSize);
    }
  }
}
