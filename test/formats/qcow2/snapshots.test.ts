/**
 * Snapshot table decoding from hand-made bytes: layouts QEMU writes (extra data of 24, 16
 * and 0 bytes, 8-byte alignment), QEMU's limits, and hostile tables (counts, extra data,
 * total size, past the end of the file) with bounded reads.
 */
import { describe, expect, it } from 'vitest';
import { CorruptImageError, ShortReadError, UnsupportedImageError } from '../../../src/errors.js';
import { readSnapshotTable, type SnapshotTableEntry } from '../../../src/formats/qcow2/snapshots.js';
import { newCounters, type RandomAccessFile } from '../../../src/io/random-access-file.js';

/** A read-only file whose byte at `p` is `byteAt(p)`; counts reads and bytes. */
function syntheticFile(size: number, byteAt: (p: number) => number): RandomAccessFile & { maxRead: number } {
  const f = {
    path: 'synthetic.qcow2',
    size,
    counters: newCounters(),
    maxRead: 0,
    async read(buffer: Uint8Array, position: number, length = buffer.length, bufferOffset = 0): Promise<void> {
      if (position + length > size) throw new ShortReadError('IO_SHORT_READ', 'short read', { file: 'synthetic.qcow2' });
      f.counters.reads++;
      f.counters.bytesRead += length;
      f.maxRead = Math.max(f.maxRead, length);
      for (let i = 0; i < length; i++) buffer[bufferOffset + i] = byteAt(position + i);
    },
    probeAllocation: () => ({ kind: 'unknown' as const }),
    identity: () => ({ dev: 0n, ino: 0n, allocatedBytes: 0 }),
    close: async () => undefined,
  };
  return f;
}

function memoryFile(bytes: Uint8Array): RandomAccessFile & { maxRead: number } {
  return syntheticFile(bytes.length, (p) => bytes[p] ?? 0);
}

interface EntrySpec {
  l1TableOffset?: bigint;
  l1Size?: number;
  id: string;
  name: string;
  dateSec?: number;
  dateNsec?: number;
  vmClockNsec?: bigint;
  vmStateSize32?: number;
  /** Extra data bytes to write (its length is extra_data_size). */
  extra?: Uint8Array;
  /** Override of id_str_size / name_size / extra_data_size as stored. */
  idSize?: number;
  nameSize?: number;
  extraSize?: number;
}

const enc = new TextEncoder();

function u64s(...v: bigint[]): Uint8Array {
  const b = new Uint8Array(8 * v.length);
  const dv = new DataView(b.buffer);
  v.forEach((x, i) => dv.setBigUint64(8 * i, x));
  return b;
}

/** Serialises entries the way qcow2_write_snapshots lays them out, starting at `base`. */
function table(entries: EntrySpec[], base = 0): Uint8Array {
  const parts: number[] = [];
  let off = base;
  for (const e of entries) {
    while (off % 8 !== 0) {
      parts.push(0);
      off++;
    }
    const id = enc.encode(e.id);
    const name = enc.encode(e.name);
    const extra = e.extra ?? new Uint8Array(0);
    const h = new Uint8Array(40);
    const dv = new DataView(h.buffer);
    dv.setBigUint64(0, e.l1TableOffset ?? 0x30000n);
    dv.setUint32(8, e.l1Size ?? 1);
    dv.setUint16(12, e.idSize ?? id.length);
    dv.setUint16(14, e.nameSize ?? name.length);
    dv.setUint32(16, e.dateSec ?? 0);
    dv.setUint32(20, e.dateNsec ?? 0);
    dv.setBigUint64(24, e.vmClockNsec ?? 0n);
    dv.setUint32(32, e.vmStateSize32 ?? 0);
    dv.setUint32(36, e.extraSize ?? extra.length);
    for (const b of [...h, ...extra, ...id, ...name]) parts.push(b);
    off += 40 + extra.length + id.length + name.length;
  }
  return Uint8Array.from(parts);
}

/** An image-like file: `pad` bytes of zeros, then the table. */
function withTable(entries: EntrySpec[], pad = 4096): { file: RandomAccessFile & { maxRead: number }; loc: { nbSnapshots: number; snapshotsOffset: number } } {
  const t = table(entries, pad);
  const bytes = new Uint8Array(pad + t.length);
  bytes.set(t, pad);
  return { file: memoryFile(bytes), loc: { nbSnapshots: entries.length, snapshotsOffset: pad } };
}

async function rejects(p: Promise<unknown>): Promise<CorruptImageError> {
  const e: unknown = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(CorruptImageError);
  return e as CorruptImageError;
}

describe('readSnapshotTable: valid tables', () => {
  it('returns nothing for an empty table without reading', async () => {
    const file = memoryFile(new Uint8Array(512));
    expect(await readSnapshotTable(file, { nbSnapshots: 0, snapshotsOffset: 0 })).toEqual([]);
    expect(file.counters.reads).toBe(0);
  });

  it('decodes entries with 24, 16 and 0 bytes of extra data, each 8-byte aligned', async () => {
    const { file, loc } = withTable([
      { id: '1', name: 'first', dateSec: 1700000000, dateNsec: 123, vmClockNsec: 3_723_456_789_012n, vmStateSize32: 7,
        extra: u64s(0x1_0000_0000n, 1048576n, 42n) },
      { id: '22', name: 'sé', vmStateSize32: 9, extra: u64s(5n, 2097152n) },
      { id: '333', name: 'v2 style', vmStateSize32: 11 },
    ]);
    const s = await readSnapshotTable(file, loc);
    expect(s.map((e) => [e.index, e.offset % 8, e.id, e.name])).toEqual([
      [0, 0, '1', 'first'],
      [1, 0, '22', 'sé'],
      [2, 0, '333', 'v2 style'],
    ]);
    const [a, b, c] = s as [SnapshotTableEntry, SnapshotTableEntry, SnapshotTableEntry];
    expect(a).toMatchObject({ dateSec: 1700000000, dateNsec: 123, vmClockNsec: 3_723_456_789_012n, vmStateSize: 0x1_0000_0000n,
      extraDataSize: 24, diskSize: 1048576n, icount: 42n, l1TableOffset: 0x30000n, l1Size: 1 });
    expect(b).toMatchObject({ vmStateSize: 5n, diskSize: 2097152n, icount: null, extraDataSize: 16 });
    expect(c).toMatchObject({ vmStateSize: 11n, diskSize: null, icount: null, extraDataSize: 0 });
    expect(Array.from(b.nameBytes)).toEqual([0x73, 0xc3, 0xa9]);
  });

  it('keeps unknown extra data out of the id and name, and only 8 bytes of extra data set the VM state size', async () => {
    const extra = new Uint8Array(40);
    extra.set(u64s(77n), 0);
    extra.fill(0xee, 24);
    const { file, loc } = withTable([{ id: 'x', name: 'y', vmStateSize32: 3, extra }, { id: 'a', name: 'b', vmStateSize32: 4, extra: new Uint8Array(7) }]);
    const [e0, e1] = (await readSnapshotTable(file, loc)) as [SnapshotTableEntry, SnapshotTableEntry];
    expect(e0).toMatchObject({ id: 'x', name: 'y', vmStateSize: 77n, extraDataSize: 40 });
    expect(e1).toMatchObject({ id: 'a', name: 'b', vmStateSize: 4n, diskSize: null });
  });

  it('decodes ids and names as C strings (up to a NUL) but keeps the stored bytes', async () => {
    const { file, loc } = withTable([{ id: '1', name: 'ab\0cd' }]);
    const [e] = (await readSnapshotTable(file, loc)) as [SnapshotTableEntry];
    expect(e.name).toBe('ab');
    expect(e.nameBytes.length).toBe(5);
  });

  it('accepts extra data of exactly 1024 bytes', async () => {
    const { file, loc } = withTable([{ id: '1', name: 'n', extra: new Uint8Array(1024) }]);
    expect(await readSnapshotTable(file, loc)).toHaveLength(1);
  });
});

describe('readSnapshotTable: hostile tables', () => {
  it('refuses more than 65536 snapshots before reading anything', async () => {
    const file = memoryFile(new Uint8Array(4096));
    const e = await rejects(readSnapshotTable(file, { nbSnapshots: 65537, snapshotsOffset: 0 }));
    expect(e.code).toBe('QCOW2_SNAPSHOT_TABLE');
    expect(e.details).toMatchObject({ field: 'nb_snapshots', value: 65537, limit: 65536 });
    expect(file.counters.reads).toBe(0);
  });

  it('refuses extra data above 1024 bytes ("Too much extra metadata"), naming the entry', async () => {
    const { file, loc } = withTable([{ id: '1', name: 'ok' }, { id: '2', name: 'bad', extra: new Uint8Array(8), extraSize: 1025 }]);
    const e = await rejects(readSnapshotTable(file, loc));
    expect(e.code).toBe('QCOW2_SNAPSHOT_TABLE');
    expect(e.message).toMatch(/extra metadata in snapshot table entry 1/);
    expect(e.details).toMatchObject({ field: 'extra_data_size', value: 1025, limit: 1024 });
  });

  it('refuses a huge extra_data_size without allocating it', async () => {
    const { file, loc } = withTable([{ id: '1', name: 'n', extraSize: 0xffffffff }]);
    const e = await rejects(readSnapshotTable(file, loc));
    expect(e.details.value).toBe(0xffffffff);
    expect(file.maxRead).toBeLessThanOrEqual(65536);
  });

  it('refuses a table whose first entry starts past the end of the file', async () => {
    const file = memoryFile(new Uint8Array(4096));
    const e = await rejects(readSnapshotTable(file, { nbSnapshots: 3, snapshotsOffset: 65536 }));
    expect(e.code).toBe('QCOW2_SNAPSHOT_TABLE');
    expect(e.message).toMatch(/entry 0: snapshot header .* past the end of the file/);
  });

  it('refuses a table cut off inside a name, and one claiming more entries than present', async () => {
    const { file, loc } = withTable([{ id: '1', name: 'long name here' }]);
    const bytes = new Uint8Array(file.size - 3);
    await file.read(bytes, 0, bytes.length);
    const e = await rejects(readSnapshotTable(memoryFile(bytes), loc));
    expect(e.message).toMatch(/entry 0: extra data, id and name/);
    const e2 = await rejects(readSnapshotTable(file, { ...loc, nbSnapshots: 2 }));
    expect(e2.message).toMatch(/entry 1/);
  });

  it('refuses a table above 64 MiB ("Snapshot table is too big") with bounded reads', async () => {
    // Every entry: 1024 bytes of extra data, a 65535-byte id and a 65535-byte name.
    const entrySize = Math.ceil((40 + 1024 + 65535 + 65535) / 8) * 8;
    const header = new Uint8Array(40);
    const dv = new DataView(header.buffer);
    dv.setUint16(12, 65535);
    dv.setUint16(14, 65535);
    dv.setUint32(36, 1024);
    const count = 600;
    const file = syntheticFile(entrySize * count, (p) => {
      const q = p % entrySize;
      return q < 40 ? (header[q] ?? 0) : 0x41;
    });
    const e = await rejects(readSnapshotTable(file, { nbSnapshots: count, snapshotsOffset: 0 }));
    expect(e.message).toMatch(/snapshot table is too big/);
    expect(e.details.limit).toBe(64 * 1024 * 1024);
    expect(file.maxRead).toBeLessThanOrEqual(2 * 65536 + 1024);
    expect(file.counters.bytesRead).toBeLessThan(64 * 1024 * 1024 + 4 * 65536 + 2 * entrySize);
  });

  it('refuses an offset that is not a safe integer', async () => {
    const file = memoryFile(new Uint8Array(64));
    const e: unknown = await readSnapshotTable(file, { nbSnapshots: 1, snapshotsOffset: 2 ** 60 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(UnsupportedImageError);
  });
});
