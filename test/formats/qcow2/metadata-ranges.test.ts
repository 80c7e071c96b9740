/**
 * The sorted map of metadata structures (formats/qcow2/metadata-ranges.ts): building it
 * (sorting, dropping empty ranges, merging uniform blocks, refusing overlaps) and finding
 * the structure a range overlaps at every boundary.
 */
import { describe, expect, it } from 'vitest';
import { CorruptImageError } from '../../../src/errors.js';
import { MetadataRanges } from '../../../src/formats/qcow2/metadata-ranges.js';

const cs = 0x10000;
const layout = [
  { kind: 'active L1 table', start: 0x30000, end: 0x30008 },
  { kind: 'header', start: 0, end: cs },
  { kind: 'refcount table', start: 0x10000, end: 0x20000 },
  { kind: 'snapshot table', start: 0x80000, end: 0x80000 }, // empty: dropped
];

describe('MetadataRanges', () => {
  const m = MetadataRanges.build('x.qcow2', layout, { kind: 'refcount block', starts: Float64Array.from([0x50000, 0x20000]), length: cs });

  it('sorts, drops empty ranges and merges uniform blocks', () => {
    expect(m.size).toBe(5);
    expect(m.maxEnd).toBe(0x60000);
    expect(m.find(0x20000, 0x20001)).toEqual({ kind: 'refcount block', start: 0x20000, end: 0x30000 });
    expect(m.find(0x50000 + cs - 1, 0x50000 + cs)).toEqual({ kind: 'refcount block', start: 0x50000, end: 0x60000 });
  });

  it('finds overlaps at the boundaries, and nothing in the gaps', () => {
    expect(m.find(0, 1)?.kind).toBe('header');
    expect(m.find(cs - 1, cs)?.kind).toBe('header');
    expect(m.find(0x30004, 0x40000)?.kind).toBe('active L1 table');
    expect(m.find(0x30008, 0x40000)).toBeNull(); // the L1 table is only 8 bytes
    expect(m.find(0x2ffff, 0x30000)?.kind).toBe('refcount block');
    expect(m.find(0x2ffff, 0x30001)).not.toBeNull(); // touches both: either is reported
    expect(m.find(0x40000, 0x50000)).toBeNull();
    expect(m.find(0x60000, 0x70000)).toBeNull();
    expect(m.find(2 ** 52, 2 ** 52 + cs)).toBeNull();
  });

  it('check() throws QCOW2_METADATA_OVERLAP naming both structures', () => {
    expect(() => m.check('host cluster of L2 entry 0x0', 0x30000, 0x40000, 'L2 entry')).toThrow(CorruptImageError);
    try {
      m.check('host cluster of L2 entry 0x0', 0x30000, 0x40000, 'L2 entry');
    } catch (e) {
      expect(e).toMatchObject({ code: 'QCOW2_METADATA_OVERLAP', details: { file: 'x.qcow2', field: 'L2 entry', value: 0x30000, offset: 0x30000 } });
      expect((e as Error).message).toBe('host cluster of L2 entry 0x0 at 0x30000..0x40000 overlaps the active L1 table at 0x30000..0x30008');
    }
    expect(() => m.check('x', 0x40000, 0x50000, 'f')).not.toThrow();
  });

  it('refuses metadata structures that overlap each other', () => {
    expect(() => MetadataRanges.build('x', [...layout, { kind: 'bitmap directory', start: 0x10008, end: 0x10010 }])).toThrow(/bitmap directory at 0x10008\.\.0x10010 overlaps the refcount table/);
    expect(() => MetadataRanges.build('x', layout, { kind: 'refcount block', starts: Float64Array.from([0x30000]), length: cs })).toThrow(/overlaps the refcount block|overlaps the active L1 table/);
    expect(() => MetadataRanges.build('x', layout, { kind: 'refcount block', starts: Float64Array.from([0x40000, 0x40000]), length: cs })).toThrow(/refcount block at 0x40000.*overlaps the refcount block at 0x40000/);
  });

  it('keeps 18 bytes per structure in the budget', () => {
    expect(MetadataRanges.bytesFor(1_000_000)).toBe(18_000_000);
  });
});
