/**
 * `qemu-img map` output formatting (src/cli/format/map-format.ts; QEMU 7.2 `dump_map_entry`,
 * QEMU-SEMANTICS.md §6.3-6.4): JSON entries with fixed key order and an `offset` only when
 * known; the human table's `%#-16x` columns (0 prints as `0`, wider values are not cut),
 * rows only for plain data.
 */
import { describe, expect, it } from 'vitest';
import { asciiSink } from '../helpers/ascii-sink.js';
import { HUMAN_MAP_HEADER, HUMAN_MAP_UNMAPPABLE, mapEntryHuman, writeMapEntryJson } from '../../src/cli/format/map-format.js';
import type { MapEntry } from '../../src/status/map-entries.js';

const e = (o: Partial<MapEntry> = {}): MapEntry => ({
  start: 0,
  length: 65536,
  depth: 0,
  present: true,
  zero: false,
  data: true,
  offset: 327680,
  filename: 'a.qcow2',
  ...o,
});

/** The bytes writeMapEntryJson prints for one entry, as a string. */
async function json(entry: MapEntry): Promise<string> {
  const { out, text } = asciiSink();
  writeMapEntryJson(out, entry);
  return text();
}

describe('writeMapEntryJson', async () => {
  it('prints qemu-img 7.2\'s exact bytes, offset last (E1)', async () => {
    expect(await json(e())).toBe('{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680}');
  });

  it('omits the offset when unknown', async () => {
    expect(await json(e({ start: 65536, length: 983040, present: false, zero: true, data: false, offset: null, filename: null }))).toBe(
      '{ "start": 65536, "length": 983040, "depth": 0, "present": false, "zero": true, "data": false}',
    );
  });

  it('prints offset 0 (it is known) and large numbers in decimal', async () => {
    expect(await json(e({ start: 2 ** 40, length: 2 ** 45, depth: 2, offset: 0 }))).toBe(
      '{ "start": 1099511627776, "length": 35184372088832, "depth": 2, "present": true, "zero": false, "data": true, "offset": 0}',
    );
  });

  it('never prints the file name (it only blocks merges)', async () => {
    expect(await json(e({ filename: 'secret/path.raw' }))).not.toContain('secret');
  });

  it('the zero-length entry for start >= end (§6.1)', async () => {
    expect(await json({ start: 2097152, length: 0, depth: 0, present: false, zero: false, data: false, offset: null, filename: null })).toBe(
      '{ "start": 2097152, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}',
    );
  });
});

describe('mapEntryHuman', () => {
  it('the header line', () => {
    expect(HUMAN_MAP_HEADER).toBe('Offset          Length          Mapped to       File\n');
  });

  it('%#-16x columns: 0 prints as "0", others with 0x, left-justified (E3)', () => {
    expect(mapEntryHuman(e({ start: 0, length: 0x10000, offset: 0x50000, filename: 'base.qcow2' }))).toBe(
      '0               0x10000         0x50000         base.qcow2\n',
    );
    expect(mapEntryHuman(e({ start: 0x180000, length: 0x10000, offset: 0x50000, filename: 'top.qcow2' }))).toBe(
      '0x180000        0x10000         0x50000         top.qcow2\n',
    );
  });

  it('a host offset of 0 prints as "0"', () => {
    expect(mapEntryHuman(e({ start: 0x10000, length: 0x10000, offset: 0, filename: 'd.data' }))).toBe(
      '0x10000         0x10000         0               d.data\n',
    );
  });

  it('values wider than 16 columns are printed whole, without padding', () => {
    expect(mapEntryHuman(e({ start: 0x1000000000000000, length: 0x10, offset: 0x123456789abcd0, filename: 'f' }))).toBe(
      '0x1000000000000000' + '0x10            ' + '0x123456789abcd0' + 'f\n',
    );
  });

  it('hex digits are lowercase', () => {
    expect(mapEntryHuman(e({ start: 0xabcdef, length: 0xff, offset: 0xdead0000 }))).toMatch(/^0xabcdef +0xff +0xdead0000 +a\.qcow2\n$/);
  });

  it.each([
    ['zero', { zero: true, data: false }],
    ['zero|data (RECURSE-detected zero)', { zero: true, data: true }],
    ['unallocated', { zero: true, data: false, present: false, offset: null }],
    ['not data, not zero', { zero: false, data: false, offset: null }],
  ])('no row for %s', (_n, o) => {
    expect(mapEntryHuman(e(o))).toBe('');
  });

  it('a missing file name prints as empty', () => {
    expect(mapEntryHuman(e({ filename: null }))).toBe('0               0x10000         0x50000         \n');
  });

  it('qemu-img\'s failure text for data without an offset', () => {
    expect(HUMAN_MAP_UNMAPPABLE).toBe('File contains external, encrypted or compressed clusters.');
  });
});

describe('AsciiBuffer.hexColumn', () => {
  /** C's `%#-16x`, as mapEntryHuman prints it. */
  const ref = (v: number): string => (v === 0 ? '0' : '0x' + v.toString(16)).padEnd(16);

  it('prints C\'s %#-16x: 0 alone, else 0x and lowercase digits, padded to 16 columns', async () => {
    const values = [0, 1, 9, 10, 15, 16, 255, 0x7fffffff, 0x80000000, 0xffffffff, 2 ** 32, 2 ** 32 + 0xabc, 2 ** 40 - 1, 2 ** 52, Number.MAX_SAFE_INTEGER];
    // Random values of every magnitude, around the 2^31 and 2^32 edges too.
    let x = 12345;
    for (let i = 0; i < 2000; i++) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      const bits = i % 54;
      values.push(Math.floor((x / 2 ** 31) * 2 ** bits));
    }
    const { out, text } = asciiSink();
    for (const v of values) out.hexColumn(v);
    expect(await text()).toBe(values.map(ref).join(''));
  });
});
