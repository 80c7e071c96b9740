/**
 * What a qcow2 layer checks at open (formats/qcow2/open-checks.ts), on images built in
 * memory: QEMU's checks always, vdisk's own only with `vdiskChecks` (the default), and the
 * metadata budget reserved before anything is allocated.
 */
import { describe, expect, it } from 'vitest';
import { MetadataBudget } from '../../../src/formats/budget.js';
import { Qcow2Driver } from '../../../src/formats/qcow2/qcow2-driver.js';
import { MemoryFile } from '../../helpers/memory-file.js';
import { COPIED, buildQcow2, type ImageSpec } from '../../helpers/qcow2-builder.js';

const cs = 65536;

/** A 1 MiB v3 image: L1 at 3cs → L2 at 4cs → data at 5cs. */
function image(over: ImageSpec = {}): Uint8Array {
  return buildQcow2({
    l1: [COPIED | BigInt(4 * cs)],
    tables: [{ offset: 4 * cs, entries: [COPIED | BigInt(5 * cs)] }],
    fileSize: 6 * cs,
    ...over,
  });
}

const open = (bytes: Uint8Array, options = {}): Promise<Qcow2Driver> => Qcow2Driver.open(new MemoryFile(bytes, { path: 't.qcow2' }), options);

describe('open-time checks', () => {
  it('a clean image opens and keeps its refcount table', async () => {
    const d = await open(image());
    expect(d.luks).toBeNull();
    expect(d.length).toBe(1024 * 1024);
  });

  it('vdisk checks: metadata overlapping metadata, refcount structures outside the file', async () => {
    // The L1 table in the refcount block's cluster.
    await expect(open(image({ header: { l1TableOffset: 2 * cs } }))).rejects.toMatchObject({ code: 'QCOW2_METADATA_OVERLAP' });
    // An L2 table past the end of the file is an error only when it is loaded.
    await expect(open(image({ fileSize: 4 * cs, tables: [] }))).resolves.toBeInstanceOf(Qcow2Driver);
    await expect(open(image({ patches: [{ offset: cs, data: Uint8Array.from([0, 0, 0, 0, 0, 0x70, 0, 0]) }] }))).rejects.toMatchObject({ code: 'QCOW2_REFBLOCK_BEYOND_EOF' });
    await expect(open(image({ header: { refcountTableOffset: 8 * cs } }))).rejects.toMatchObject({ code: 'QCOW2_REFCOUNT_TABLE_BEYOND_EOF' });
  });

  it('vdiskChecks: false opens what only vdisk refuses (for check), never what QEMU refuses', async () => {
    await expect(open(image({ header: { l1TableOffset: 2 * cs } }), { vdiskChecks: false })).resolves.toBeInstanceOf(Qcow2Driver);
    await expect(open(image({ l1: [COPIED | BigInt(4 * cs) | 0x100000000000000n] }), { vdiskChecks: false })).resolves.toBeInstanceOf(Qcow2Driver);
    await expect(open(image({ l1: [COPIED | BigInt(4 * cs) | 0x100000000000000n] }))).rejects.toMatchObject({ code: 'QCOW2_RESERVED_BITS' });
    // A snapshot table entry with too much extra data: QEMU refuses it at open, so do we, either way.
    const snap = new Uint8Array(40);
    new DataView(snap.buffer).setUint32(36, 2048);
    const withSnap = image({ header: { nbSnapshots: 1, snapshotsOffset: 5 * cs }, patches: [{ offset: 5 * cs, data: snap }] });
    await expect(open(withSnap, { vdiskChecks: false })).rejects.toMatchObject({ code: 'QCOW2_SNAPSHOT_TABLE' });
  });

  it('a snapshot L1 table must be aligned and within the L1 limit', async () => {
    const snap = new Uint8Array(48);
    const dv = new DataView(snap.buffer);
    dv.setBigUint64(0, 0x12345n);
    dv.setUint32(8, 1);
    const bytes = image({ header: { nbSnapshots: 1, snapshotsOffset: 5 * cs }, patches: [{ offset: 5 * cs, data: snap }] });
    await expect(open(bytes)).rejects.toMatchObject({ code: 'QCOW2_SNAPSHOT_L1', details: { field: 'snapshot l1_table_offset', value: 0x12345n } });
    await expect(open(bytes, { vdiskChecks: false })).resolves.toBeInstanceOf(Qcow2Driver);
  });

  it('each L2 table is checked once, when it is loaded, and a refused table is not cached', async () => {
    const bytes = image({ tables: [{ offset: 4 * cs, entries: [COPIED | BigInt(3 * cs)] }] }); // data cluster = the L1 table
    const d = await open(bytes);
    await expect(d.loadL2(4 * cs)).rejects.toMatchObject({ code: 'QCOW2_METADATA_OVERLAP' });
    await expect(d.loadL2(4 * cs)).rejects.toMatchObject({ code: 'QCOW2_METADATA_OVERLAP' });
    expect(d.l2Loads).toBe(0);
    const relaxed = await open(bytes, { vdiskChecks: false });
    await relaxed.loadL2(4 * cs);
    expect(relaxed.l2Loads).toBe(1);
  });

  it('reserves the L1 table, refcount table and L2 cache in the budget; a layer that does not fit is refused', async () => {
    const b = new MetadataBudget(64 * 1024 * 1024);
    await open(image(), { budget: b });
    expect(b.reserved).toBeGreaterThanOrEqual(8 + cs + 2 * cs);
    const tight = new MetadataBudget(cs);
    await expect(open(image(), { budget: tight })).rejects.toMatchObject({ code: 'LIMIT_METADATA_MEMORY' });
  });
});
