/**
 * The qcow2 snapshot table (docs/interop/qcow2.txt "Snapshots"; QEMU 7.2
 * `qcow2_do_read_snapshots`).
 *
 * The table is `nb_snapshots` entries stored back to back from `snapshots_offset`, each
 * starting on an 8-byte boundary:
 *
 * | bytes | field |
 * |---|---|
 * | 0–7 | l1_table_offset |
 * | 8–11 | l1_size |
 * | 12–13 | id_str_size |
 * | 14–15 | name_size |
 * | 16–19 | date_sec |
 * | 20–23 | date_nsec |
 * | 24–31 | vm_clock_nsec |
 * | 32–35 | vm_state_size (32-bit) |
 * | 36–39 | extra_data_size |
 *
 * followed by `extra_data_size` bytes of extra data (`u64 vm_state_size_large`,
 * `u64 disk_size`, `u64 icount`, each present only if the extra data reaches its end),
 * the id string and the name (neither NUL-terminated on disk).
 *
 * QEMU's limits are applied in QEMU's order: at most 65536 entries (checked with the
 * header), at most 1024 bytes of extra data per entry ("Too much extra metadata"), and a
 * table of at most 64 MiB ("Snapshot table is too big"). Unlike QEMU, which reads zeroes
 * past the end of the file, a table running past the end of the file is an error. The
 * table is read through a small window, so memory stays bounded by the 64 MiB limit no
 * matter what the counts say.
 */
import { qemuCString } from '../../binary/c-string.js';
import { CorruptImageError, UnsupportedImageError } from '../../errors.js';
import type { RandomAccessFile } from '../../io/random-access-file.js';
import { INT_MAX, QCOW_MAX_SNAPSHOTS, QCOW_MAX_SNAPSHOT_EXTRA_DATA, QCOW_MAX_SNAPSHOTS_SIZE } from './constants.js';

/** Size of the fixed part of a snapshot table entry (`QCowSnapshotHeader`). */
export const SNAPSHOT_HEADER_SIZE = 40;
/** Size of the extra data QEMU 7.2 knows (`QCowSnapshotExtraData`: three u64). */
export const SNAPSHOT_KNOWN_EXTRA_SIZE = 24;

/** One decoded snapshot table entry. 64-bit fields stay bigint: they are never offsets vdisk follows. */
export interface SnapshotTableEntry {
  /** Index of the entry in the table (0-based). */
  readonly index: number;
  /** Byte offset of the entry in the image file. */
  readonly offset: number;
  readonly l1TableOffset: bigint;
  readonly l1Size: number;
  /** The id string's bytes as stored. */
  readonly idBytes: Uint8Array;
  /** The name's bytes as stored. */
  readonly nameBytes: Uint8Array;
  /** The id string as QEMU decodes it (up to the first NUL, invalid UTF-8 as U+FFFD). */
  readonly id: string;
  /** The name as QEMU decodes it (up to the first NUL, invalid UTF-8 as U+FFFD). */
  readonly name: string;
  readonly dateSec: number;
  readonly dateNsec: number;
  readonly vmClockNsec: bigint;
  /** VM state size: `vm_state_size_large` when the extra data has it, else the 32-bit field. */
  readonly vmStateSize: bigint;
  readonly extraDataSize: number;
  /** `disk_size` from the extra data, or null when the extra data is too short to hold it. */
  readonly diskSize: bigint | null;
  /** `icount` from the extra data (2^64 − 1 means "icount off"), or null when absent. */
  readonly icount: bigint | null;
}

/** Where the table is, from the header. */
export interface SnapshotTableLocation {
  readonly nbSnapshots: number;
  readonly snapshotsOffset: number;
}

/**
 * Reads a table front to back through one reusable window of at least 64 KiB. When a
 * request starts inside the window, the bytes already there are kept and only the rest is
 * read, so each byte of the table is read about once.
 */
class WindowReader {
  private store = new Uint8Array(0);
  /** File offset of `store[0]` and number of valid bytes. */
  private start = 0;
  private valid = 0;

  constructor(private readonly file: RandomAccessFile) {}

  /** `length` bytes at `position` (valid until the next call); the caller has bounds-checked them. */
  async bytes(position: number, length: number): Promise<Uint8Array> {
    if (position < this.start || position + length > this.start + this.valid) {
      const size = Math.min(Math.max(length, 65536), this.file.size - position);
      const keep = position >= this.start && position < this.start + this.valid ? this.start + this.valid - position : 0;
      const next = this.store.length >= size ? this.store : new Uint8Array(size);
      if (keep > 0) next.set(this.store.subarray(position - this.start, position - this.start + keep), 0);
      await this.file.read(next, position + keep, size - keep, keep);
      this.store = next;
      this.start = position;
      this.valid = size;
    }
    return this.store.subarray(position - this.start, position - this.start + length);
  }
}

function corrupt(file: string, message: string, details: { field: string; value: number | bigint; limit: number | string; offset?: number }): CorruptImageError {
  return new CorruptImageError('QCOW2_SNAPSHOT_TABLE', message, { file, ...details });
}

/**
 * Reads and checks the snapshot table at `loc` in `file`.
 *
 * Errors: {@link CorruptImageError} with code `QCOW2_SNAPSHOT_TABLE` for a count above
 * 65536, extra data above 1024 bytes, a table above 64 MiB, or any entry running past the
 * end of the file; each names the entry, the field, the value and the limit.
 */
export async function readSnapshotTable(file: RandomAccessFile, loc: SnapshotTableLocation): Promise<SnapshotTableEntry[]> {
  const entries: SnapshotTableEntry[] = [];
  await scanSnapshotTable(file, loc, (e) => entries.push(e));
  return entries;
}

/**
 * Walks the snapshot table with the checks of {@link readSnapshotTable}, handing each entry
 * to `onEntry` without keeping it (memory: one entry and a 64 KiB window). Returns the
 * table's length in bytes (0 without snapshots).
 */
export async function scanSnapshotTable(
  file: RandomAccessFile,
  loc: SnapshotTableLocation,
  onEntry: (e: SnapshotTableEntry) => void,
): Promise<number> {
  const path = file.path;
  const { nbSnapshots, snapshotsOffset } = loc;
  if (!Number.isSafeInteger(nbSnapshots) || nbSnapshots < 0 || nbSnapshots > QCOW_MAX_SNAPSHOTS) {
    throw corrupt(path, `snapshot table too large: nb_snapshots is ${nbSnapshots}, at most ${QCOW_MAX_SNAPSHOTS}`, {
      field: 'nb_snapshots', value: nbSnapshots, limit: QCOW_MAX_SNAPSHOTS,
    });
  }
  if (!Number.isSafeInteger(snapshotsOffset) || snapshotsOffset < 0) {
    throw new UnsupportedImageError('QCOW2_SNAPSHOT_TABLE', `snapshots_offset ${snapshotsOffset} is not representable`, {
      file: path, field: 'snapshots_offset', value: snapshotsOffset,
    });
  }
  const reader = new WindowReader(file);
  const need = (i: number, what: string, position: number, length: number): void => {
    if (position + length > file.size) {
      throw corrupt(path, `snapshot table entry ${i}: ${what} (${length} bytes at offset ${position}) runs past the end of the file (${file.size} bytes)`, {
        field: what, value: position + length, limit: file.size, offset: position,
      });
    }
  };
  let offset = snapshotsOffset;
  for (let i = 0; i < nbSnapshots; i++) {
    offset = Math.ceil(offset / 8) * 8;
    const entryOffset = offset;
    need(i, 'snapshot header', offset, SNAPSHOT_HEADER_SIZE);
    const h = await reader.bytes(offset, SNAPSHOT_HEADER_SIZE);
    const dv = new DataView(h.buffer, h.byteOffset, h.byteLength);
    const l1TableOffset = dv.getBigUint64(0);
    const l1Size = dv.getUint32(8);
    const idSize = dv.getUint16(12);
    const nameSize = dv.getUint16(14);
    const dateSec = dv.getUint32(16);
    const dateNsec = dv.getUint32(20);
    const vmClockNsec = dv.getBigUint64(24);
    let vmStateSize = BigInt(dv.getUint32(32));
    const extraDataSize = dv.getUint32(36);
    offset += SNAPSHOT_HEADER_SIZE;
    if (extraDataSize > QCOW_MAX_SNAPSHOT_EXTRA_DATA) {
      throw corrupt(path, `too much extra metadata in snapshot table entry ${i}: extra_data_size is ${extraDataSize}, at most ${QCOW_MAX_SNAPSHOT_EXTRA_DATA}`, {
        field: 'extra_data_size', value: extraDataSize, limit: QCOW_MAX_SNAPSHOT_EXTRA_DATA, offset: entryOffset,
      });
    }
    need(i, 'extra data, id and name', offset, extraDataSize + idSize + nameSize);
    const rest = await reader.bytes(offset, extraDataSize + idSize + nameSize);
    const ev = new DataView(rest.buffer, rest.byteOffset, rest.byteLength);
    if (extraDataSize >= 8) vmStateSize = ev.getBigUint64(0);
    const diskSize = extraDataSize >= 16 ? ev.getBigUint64(8) : null;
    const icount = extraDataSize >= 24 ? ev.getBigUint64(16) : null;
    const idBytes = rest.slice(extraDataSize, extraDataSize + idSize);
    const nameBytes = rest.slice(extraDataSize + idSize, extraDataSize + idSize + nameSize);
    offset += extraDataSize + idSize + nameSize;
    const tableLength = offset - snapshotsOffset;
    if (tableLength > QCOW_MAX_SNAPSHOTS_SIZE || tableLength > INT_MAX) {
      throw corrupt(path, `snapshot table is too big: ${tableLength} bytes after entry ${i} of ${nbSnapshots}, at most ${QCOW_MAX_SNAPSHOTS_SIZE}`, {
        field: 'snapshot table size', value: tableLength, limit: QCOW_MAX_SNAPSHOTS_SIZE, offset: entryOffset,
      });
    }
    onEntry({
      index: i,
      offset: entryOffset,
      l1TableOffset,
      l1Size,
      idBytes,
      nameBytes,
      id: qemuCString(idBytes),
      name: qemuCString(nameBytes),
      dateSec,
      dateNsec,
      vmClockNsec,
      vmStateSize,
      extraDataSize,
      diskSize,
      icount,
    });
  }
  return offset - snapshotsOffset;
}
