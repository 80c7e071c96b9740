/**
 * The conversion's chunk slots (src/ops/chunk-slots.ts): each is allocated at its first
 * use, once; a slot's Buffer and SharedArrayBuffer are the same memory; `all()` allocates
 * the rest; a slot outside the set is refused.
 */
import { describe, expect, it } from 'vitest';
import { ChunkSlots } from '../../src/ops/chunk-slots.js';

describe('ChunkSlots', () => {
  it('allocates a slot at its first use, and only once', () => {
    const s = new ChunkSlots(4, 65536);
    expect(s.allocated).toBe(0);
    const b = s.buffer(2);
    expect(b).toBeInstanceOf(SharedArrayBuffer);
    expect(b.byteLength).toBe(65536);
    expect(s.allocated).toBe(1);
    expect(s.buffer(2)).toBe(b);
    expect(s.view(2)).toBe(s.view(2));
    expect(s.allocated).toBe(1);
  });

  it("gives a slot's Buffer over its SharedArrayBuffer's memory", () => {
    const s = new ChunkSlots(2, 4096);
    s.view(1)[100] = 42;
    expect(new Uint8Array(s.buffer(1))[100]).toBe(42);
    expect(s.view(0).length).toBe(4096);
  });

  it('allocates every slot for all(), keeping those already made', () => {
    const s = new ChunkSlots(3, 1024);
    const first = s.buffer(0);
    const all = s.all();
    expect(all).toHaveLength(3);
    expect(all[0]).toBe(first);
    expect(new Set(all).size).toBe(3);
    expect(s.allocated).toBe(3);
  });

  it('refuses a slot outside 0..count-1', () => {
    const s = new ChunkSlots(2, 1024);
    for (const i of [-1, 2, 0.5, Number.NaN]) expect(() => s.buffer(i)).toThrow(RangeError);
    expect(() => s.view(5)).toThrow(RangeError);
    expect(s.allocated).toBe(0);
  });
});
