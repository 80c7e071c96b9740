/**
 * Unit tests of snapshot lookup and snapshot L1 loading (src/formats/qcow2/snapshot-view.ts).
 */
import { describe, expect, it } from 'vitest';
import { findSnapshot, readSnapshotL1 } from '../../../src/formats/qcow2/snapshot-view.js';
import type { Qcow2Driver } from '../../../src/formats/qcow2/qcow2-driver.js';
import type { SnapshotTableEntry } from '../../../src/formats/qcow2/snapshots.js';
import { MemoryFile } from '../../helpers/memory-file.js';

function sn(id: string, name: string, over: Partial<SnapshotTableEntry> = {}): SnapshotTableEntry {
  const enc = new TextEncoder();
  return {
    index: 0, offset: 0, l1TableOffset: 65536n, l1Size: 2, idBytes: enc.encode(id), nameBytes: enc.encode(name), id, name,
    dateSec: 0, dateNsec: 0, vmClockNsec: 0n, vmStateSize: 0n, extraDataSize: 24, diskSize: 0n, icount: null, ...over,
  };
}

describe('findSnapshot', () => {
  const table = [sn('1', '2'), sn('2', 'b'), sn('3', 'b')];
  it('tries ids first, then names, first match in table order', () => {
    expect(findSnapshot(table, '2')?.name).toBe('b');
    expect(findSnapshot(table, 'b')?.id).toBe('2');
    expect(findSnapshot(table, 'x')).toBeNull();
  });
});

describe('readSnapshotL1', () => {
  const bytes = new Uint8Array(65536 + 16);
  const dv = new DataView(bytes.buffer);
  dv.setBigUint64(65536, 0x8000000000050000n);
  dv.setBigUint64(65544, 0x0000000000060000n);
  const file = new MemoryFile(bytes, { path: 's.qcow2' });
  const d = { file, clusterSize: 65536 } as unknown as Qcow2Driver;

  it('reads the table as native words (hi, lo)', async () => {
    expect([...(await readSnapshotL1(d, sn('1', 'a')))]).toEqual([0x80000000, 0x50000, 0, 0x60000]);
  });
  it('refuses tables that are too large, unaligned or past the end of the file', async () => {
    await expect(readSnapshotL1(d, sn('1', 'a', { l1Size: 4 * 1024 * 1024 + 1 }))).rejects.toMatchObject({ code: 'QCOW2_SNAPSHOT_L1' });
    await expect(readSnapshotL1(d, sn('1', 'a', { l1TableOffset: 65536n + 512n }))).rejects.toMatchObject({ code: 'QCOW2_SNAPSHOT_L1' });
    await expect(readSnapshotL1(d, sn('1', 'a', { l1Size: 3 }))).rejects.toMatchObject({ code: 'QCOW2_SNAPSHOT_L1_BEYOND_EOF' });
    await expect(readSnapshotL1(d, sn('1', 'a', { l1TableOffset: 1n << 60n }))).rejects.toMatchObject({ code: 'QCOW2_OFFSET_TOO_LARGE' });
  });
  it('an empty table needs no read', async () => {
    expect((await readSnapshotL1(d, sn('1', 'a', { l1Size: 0, l1TableOffset: 1n << 40n }))).length).toBe(0);
  });
});
