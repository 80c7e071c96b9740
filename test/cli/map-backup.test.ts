/**
 * Formatting of the backup map variants (src/cli/commands/map-backup.ts).
 */
import { describe, expect, it } from 'vitest';
import { bitmapEntryHuman, bitmapEntryJson, HUMAN_BITMAP_HEADER } from '../../src/cli/commands/map-backup.js';

describe('bitmap map entries', () => {
  it('JSON in the map layout, zero only when split by allocation', () => {
    expect(bitmapEntryJson({ start: 0, length: 65536, dirty: false })).toBe('{ "start": 0, "length": 65536, "dirty": false}');
    expect(bitmapEntryJson({ start: 65536, length: 4096, dirty: true, zero: true })).toBe(
      '{ "start": 65536, "length": 4096, "dirty": true, "zero": true}',
    );
  });
  it('human rows in 16-character columns', () => {
    expect(HUMAN_BITMAP_HEADER).toBe('Offset          Length          State\n');
    expect(bitmapEntryHuman({ start: 0, length: 0x20000, dirty: true })).toBe('0               0x20000         dirty\n');
    expect(bitmapEntryHuman({ start: 0x200000, length: 0x10000, dirty: true, zero: true })).toBe('0x200000        0x10000         dirty, zero\n');
  });
});
