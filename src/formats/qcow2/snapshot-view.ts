/**
 * Reading an internal snapshot's state (QEMU 7.2 `bdrv_snapshot_load_tmp_by_id_or_name`,
 * `qcow2_snapshot_load_tmp`): find the snapshot by id, else by name; check its L1 table as
 * `qcow2_validate_table(…, "Snapshot L1 table")` does; read it. The driver then answers
 * through that L1 table ({@link Qcow2Driver.withL1}) with the active virtual size, as QEMU.
 */
import { CorruptImageError, InvalidArgumentError, UnsupportedImageError, hex } from '../../errors.js';
import { INT64_MAX, QCOW_MAX_L1_SIZE } from './constants.js';
import type { L1Words } from './host-offset.js';
import type { Qcow2Driver } from './qcow2-driver.js';
import { readSnapshotTable, type SnapshotTableEntry } from './snapshots.js';

/**
 * The snapshot `idOrName` names: the first entry whose id is `idOrName`, else the first
 * whose name is (QEMU tries the id first, then the name). Null when none matches.
 */
export function findSnapshot(entries: readonly SnapshotTableEntry[], idOrName: string): SnapshotTableEntry | null {
  return entries.find((e) => e.id === idOrName) ?? entries.find((e) => e.name === idOrName) ?? null;
}

/** Checks and reads the L1 table of snapshot `sn` of `d` as native words (hi, lo per entry). */
export async function readSnapshotL1(d: Qcow2Driver, sn: SnapshotTableEntry): Promise<L1Words> {
  const file = d.file;
  const what = `snapshot '${sn.name}' (id ${sn.id})`;
  if (sn.l1Size > QCOW_MAX_L1_SIZE / 8) {
    throw new CorruptImageError('QCOW2_SNAPSHOT_L1', `${what}: snapshot L1 table too large (l1_size ${sn.l1Size}, at most ${QCOW_MAX_L1_SIZE / 8})`, {
      file: file.path, field: 'snapshot l1_size', value: sn.l1Size, limit: QCOW_MAX_L1_SIZE / 8, offset: sn.offset,
    });
  }
  const bytes = sn.l1Size * 8;
  if (sn.l1TableOffset % BigInt(d.clusterSize) !== 0n || sn.l1TableOffset > INT64_MAX - BigInt(bytes)) {
    throw new CorruptImageError('QCOW2_SNAPSHOT_L1', `${what}: snapshot L1 table offset invalid (${hex(sn.l1TableOffset)})`, {
      file: file.path, field: 'snapshot l1_table_offset', value: sn.l1TableOffset, limit: `aligned to ${d.clusterSize}`, offset: sn.offset,
    });
  }
  if (sn.l1TableOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new UnsupportedImageError('QCOW2_OFFSET_TOO_LARGE', `${what}: L1 table offset ${hex(sn.l1TableOffset)} is 2^53 or more`, {
      file: file.path, field: 'snapshot l1_table_offset', value: sn.l1TableOffset, limit: Number.MAX_SAFE_INTEGER,
    });
  }
  const offset = Number(sn.l1TableOffset);
  if (bytes > 0 && offset + bytes > file.size) {
    throw new CorruptImageError(
      'QCOW2_SNAPSHOT_L1_BEYOND_EOF',
      `${what}: L1 table (${bytes} bytes at ${offset}) runs past the end of the file (${file.size} bytes)`,
      { file: file.path, field: 'snapshot l1_table_offset', value: offset, limit: file.size, offset: sn.offset },
    );
  }
  const buf = Buffer.alloc(bytes);
  if (bytes > 0) await file.read(buf, offset, bytes);
  buf.swap32();
  return new Uint32Array(buf.buffer, buf.byteOffset, bytes / 4);
}

/** `d` as it was at snapshot `idOrName` (id first, then name). */
export async function openSnapshotView(d: Qcow2Driver, idOrName: string, options: { l2CacheBytes?: number } = {}): Promise<Qcow2Driver> {
  const entries = await readSnapshotTable(d.file, d.header);
  const sn = findSnapshot(entries, idOrName);
  if (sn === null) {
    throw new InvalidArgumentError('ARG_SNAPSHOT_NOT_FOUND', `can't find snapshot '${idOrName}' in '${d.file.path}'`, {
      file: d.file.path, field: 'snapshot', value: idOrName,
    });
  }
  const l1 = await readSnapshotL1(d, sn);
  return d.withL1(l1, options.l2CacheBytes === undefined ? {} : { l2CacheBytes: options.l2CacheBytes });
}
