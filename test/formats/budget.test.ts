/**
 * The chain-wide metadata budget (formats/budget.ts).
 */
import { describe, expect, it } from 'vitest';
import { UnsupportedImageError } from '../../src/errors.js';
import { DEFAULT_MAX_METADATA_BYTES, MetadataBudget } from '../../src/formats/budget.js';

const MiB = 1024 * 1024;

describe('MetadataBudget', () => {
  it('reserves until the limit, then refuses with LIMIT_METADATA_MEMORY naming the file and the structure', () => {
    const b = new MetadataBudget(10 * MiB);
    b.reserve(6 * MiB, 'active L1 table', 'a.qcow2');
    expect(b.reserved).toBe(6 * MiB);
    expect(b.available).toBe(4 * MiB);
    let err: unknown;
    try {
      b.reserve(5 * MiB, 'active L1 table', 'b.qcow2');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnsupportedImageError);
    expect(err).toMatchObject({ code: 'LIMIT_METADATA_MEMORY', details: { file: 'b.qcow2', field: 'active L1 table', value: 11 * MiB, limit: 10 * MiB } });
    expect((err as Error).message).toMatch(/b\.qcow2' needs 5\.0 MiB for its active L1 table.*budget of 10\.0 MiB has 4\.0 MiB left/);
    expect(b.reserved).toBe(6 * MiB); // a refused reservation takes nothing
    b.reserve(0, 'nothing', 'c');
    b.reserve(-1, 'nothing', 'c');
    expect(b.reserved).toBe(6 * MiB);
  });

  it('sizes caches so the top layer gets a full cache and deep chains still fit their minimum', () => {
    const b = new MetadataBudget(DEFAULT_MAX_METADATA_BYTES);
    const sizes: number[] = [];
    for (let i = 0; i < 300; i++) {
      const s = b.cacheSize(32 * MiB, 128 * 1024);
      b.reserve(s, 'L2 cache', `layer-${i}`);
      sizes.push(s);
    }
    expect(sizes[0]).toBe(32 * MiB);
    expect(sizes[1]).toBeLessThan(32 * MiB);
    expect(sizes[299]).toBe(128 * 1024);
    expect(b.reserved).toBeLessThan(DEFAULT_MAX_METADATA_BYTES);
  });
});
