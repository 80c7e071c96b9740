/**
 * `findAllocation` (src/io/holes.ts): every case of QEMU's `find_allocation` table
 * (block/file-posix.c; QEMU-SEMANTICS.md §5.1) driven through a fake lseek that returns
 * scripted offsets or errnos, and the null-binding fallback.
 */
import { describe, expect, it } from 'vitest';
import { findAllocation } from '../../src/io/holes.js';
import { EINVAL, ENXIO, SEEK_DATA, SEEK_HOLE, type LseekFn, type LseekResult } from '../../src/io/lseek-binding.js';

const EBADF = 9;
const EOPNOTSUPP = 95;

/** A fake lseek answering SEEK_DATA and SEEK_HOLE from scripts, recording every call. */
function fakeLseek(onData: LseekResult, onHole?: LseekResult): { fn: LseekFn; calls: Array<[number, number, number]> } {
  const calls: Array<[number, number, number]> = [];
  const fn: LseekFn = (fd, offset, whence) => {
    calls.push([fd, offset, whence]);
    if (whence === SEEK_DATA) return onData;
    if (whence === SEEK_HOLE && onHole !== undefined) return onHole;
    throw new Error(`unexpected lseek(${fd}, ${offset}, ${whence})`);
  };
  return { fn, calls };
}

describe('findAllocation', () => {
  it('D1+H1: start in data, data runs to the next hole', () => {
    const { fn, calls } = fakeLseek({ offset: 4096 }, { offset: 12288 });
    expect(findAllocation(fn, 7, 4096)).toEqual({ kind: 'data', end: 12288 });
    expect(calls).toEqual([
      [7, 4096, SEEK_DATA],
      [7, 4096, SEEK_HOLE],
    ]);
  });

  it('D1+H1: EOF counts as a hole (data up to the end of the file)', () => {
    const { fn } = fakeLseek({ offset: 0 }, { offset: 1000 });
    expect(findAllocation(fn, 3, 0)).toEqual({ kind: 'data', end: 1000 });
  });

  it('D2: start in a hole that ends where data starts; no SEEK_HOLE call', () => {
    const { fn, calls } = fakeLseek({ offset: 196608 });
    expect(findAllocation(fn, 3, 0)).toEqual({ kind: 'hole', end: 196608 });
    expect(calls).toHaveLength(1);
  });

  it('D2 with an unaligned start inside the hole', () => {
    const { fn } = fakeLseek({ offset: 8192 });
    expect(findAllocation(fn, 3, 100)).toEqual({ kind: 'hole', end: 8192 });
  });

  it('D3: SEEK_DATA fails with ENXIO -> trailing hole (or past EOF)', () => {
    const { fn, calls } = fakeLseek({ errno: ENXIO });
    expect(findAllocation(fn, 3, 1000)).toEqual({ kind: 'trailing-hole' });
    expect(calls).toHaveLength(1);
  });

  it.each([
    ['EINVAL', EINVAL],
    ['EBADF', EBADF],
    ['EOPNOTSUPP', EOPNOTSUPP],
  ])('D4: SEEK_DATA fails with %s -> unknown (pretend no holes)', (_name, errno) => {
    const { fn, calls } = fakeLseek({ errno });
    expect(findAllocation(fn, 3, 0)).toEqual({ kind: 'unknown' });
    expect(calls).toHaveLength(1);
  });

  it('D4: SEEK_DATA returns an offset below start (impossible) -> unknown', () => {
    const { fn, calls } = fakeLseek({ offset: 4096 });
    expect(findAllocation(fn, 3, 8192)).toEqual({ kind: 'unknown' });
    expect(calls).toHaveLength(1);
  });

  it('H2: SEEK_HOLE returns start (a hole appeared meanwhile, QEMU -EBUSY) -> unknown', () => {
    const { fn } = fakeLseek({ offset: 4096 }, { offset: 4096 });
    expect(findAllocation(fn, 3, 4096)).toEqual({ kind: 'unknown' });
  });

  it('H3: SEEK_HOLE fails with ENXIO (file truncated meanwhile) -> unknown, not trailing hole', () => {
    const { fn } = fakeLseek({ offset: 0 }, { errno: ENXIO });
    expect(findAllocation(fn, 3, 0)).toEqual({ kind: 'unknown' });
  });

  it('H4: SEEK_HOLE fails otherwise -> unknown', () => {
    const { fn } = fakeLseek({ offset: 0 }, { errno: EINVAL });
    expect(findAllocation(fn, 3, 0)).toEqual({ kind: 'unknown' });
  });

  it('H4: SEEK_HOLE returns an offset below start -> unknown', () => {
    const { fn } = fakeLseek({ offset: 8192 }, { offset: 4096 });
    expect(findAllocation(fn, 3, 8192)).toEqual({ kind: 'unknown' });
  });

  it('startIsData (an earlier SEEK_DATA returned start): only SEEK_HOLE is asked', () => {
    const { fn, calls } = fakeLseek({ errno: EINVAL }, { offset: 20480 });
    expect(findAllocation(fn, 5, 16384, true)).toEqual({ kind: 'data', end: 20480 });
    expect(calls).toEqual([[5, 16384, SEEK_HOLE]]);
  });

  it.each([
    ['H2 (returns start)', { offset: 16384 }],
    ['H3 (ENXIO)', { errno: ENXIO }],
    ['H4 (other errno)', { errno: EINVAL }],
    ['H4 (below start)', { offset: 4096 }],
  ] as Array<[string, LseekResult]>)('startIsData with %s -> unknown', (_n, onHole) => {
    const { fn, calls } = fakeLseek({ errno: EINVAL }, onHole);
    expect(findAllocation(fn, 5, 16384, true)).toEqual({ kind: 'unknown' });
    expect(calls).toHaveLength(1);
  });

  it('no binding (null) -> unknown', () => {
    expect(findAllocation(null, 3, 0)).toEqual({ kind: 'unknown' });
    expect(findAllocation(null, 3, 0, true)).toEqual({ kind: 'unknown' });
    expect(findAllocation(null, 3, 123456)).toEqual({ kind: 'unknown' });
  });
});
