/**
 * The plain-run shortcut (src/formats/qcow2/plain-run.ts) against the full lookup
 * (`getHostOffset`): on random standard L2 tables mixing plain unallocated and zero entries
 * with every other kind (COPIED-only, data, preallocated zero, compressed), from random
 * offsets and lengths, the shortcut answers only plain entries, with the lookup's type, and
 * never a longer run, with or without the memo of the previous run; it declines v2 zero entries, extended L2, uncached tables, missing L2
 * tables and L1 entries the lookup refuses.
 */
import { describe, expect, it } from 'vitest';
import { l2Words } from '../../helpers/l2-words.js';
import { rngInt } from '../../helpers/prng.js';
import { getHostOffset, type HostMapping, type MappingGeometry } from '../../../src/formats/qcow2/host-offset.js';
import { SubclusterType } from '../../../src/formats/qcow2/l2-entry.js';
import { emptyPlainRunMemo, plainRun as plainRunWith } from '../../../src/formats/qcow2/plain-run.js';
import type { L2Table } from '../../../src/formats/qcow2/l2-cache.js';

/** Without a memo carried between calls. */
const plainRun: (...a: [MappingGeometry, Uint32Array, (o: number) => L2Table | undefined, number, number]) => number = (...a) =>
  plainRunWith(...a, emptyPlainRunMemo());

const COPIED = 1n << 63n;
const COMPRESSED = 1n << 62n;
const L2_AT = 0x400000;

function geometry(clusterBits: number, o: { extendedL2?: boolean; version?: 2 | 3 } = {}): MappingGeometry {
  const clusterSize = 2 ** clusterBits;
  const extendedL2 = o.extendedL2 ?? false;
  const spc = extendedL2 ? 32 : 1;
  return {
    file: 'p.qcow2', version: o.version ?? 3, clusterBits, clusterSize,
    l2Entries: clusterSize / (extendedL2 ? 16 : 8), extendedL2,
    subclustersPerCluster: spc, subclusterSize: clusterSize / spc, hasDataFile: false,
  };
}


const l1 = l2Words([COPIED | BigInt(L2_AT)]);
const peek = (l2: Uint32Array) => (o: number): L2Table | undefined => (o === L2_AT ? { words: l2, runs: null } : undefined);

describe('plainRun', () => {
  it('answers plain entries as the full lookup does, and only those', () => {
    const r = rngInt(99);
    const g = geometry(12); // 4 KiB clusters, 512 entries
    const cs = g.clusterSize;
    let answered = 0;
    for (let round = 0; round < 200; round++) {
      const entries: bigint[] = [];
      for (let i = 0; i < g.l2Entries; ) {
        const run = 1 + r(6);
        const kind = r(7);
        for (let k = 0; k < run && i < g.l2Entries; k++, i++) {
          const host = BigInt(0x1000000 + i * cs);
          entries.push(
            [0n, 0n, 1n, 1n, COPIED, COPIED | host, COPIED | host | 1n][kind] ?? 0n,
          );
        }
        if (r(10) === 0) entries[entries.length - 1] = COMPRESSED | 0x2000000n;
      }
      const l2 = l2Words(entries);
      const memo = emptyPlainRunMemo();
      let last = 0;
      for (let q = 0; q < 40; q++) {
        // Half the queries start inside the previous answer, as a walk's next piece does.
        const offset = q % 2 === 1 && last > 0 ? Math.min(g.l2Entries * cs - 1, last + r(8 * cs)) : r(g.l2Entries * cs);
        const bytes = 1 + r(64 * cs);
        const got = plainRun(g, l1, peek(l2), offset, bytes);
        // A memo carried from query to query changes no answer.
        expect(plainRunWith(g, l1, peek(l2), offset, bytes, memo)).toBe(got);
        last = offset;
        const want = getHostOffset(g, l1, peek(l2), offset, bytes) as HostMapping;
        const e = entries[Math.floor(offset / cs)] ?? -1n;
        if (e === 0n || e === 1n) {
          answered++;
          expect(got).not.toBe(0);
          expect(want.type).toBe(got > 0 ? SubclusterType.UnallocatedPlain : SubclusterType.ZeroPlain);
          expect(Math.abs(got)).toBeLessThanOrEqual(want.bytes);
          // Identical entries up to the lookup's end give the lookup's length.
          const end = Math.ceil((offset + want.bytes) / cs);
          if (entries.slice(Math.floor(offset / cs), end).every((x) => x === e)) expect(Math.abs(got)).toBe(want.bytes);
        } else {
          expect(got).toBe(0);
        }
      }
    }
    expect(answered).toBeGreaterThan(1000);
  });

  it('declines what it does not know for sure', () => {
    const g = geometry(12);
    const l2 = l2Words([0n, 1n]);
    expect(plainRun(g, l1, peek(l2), 0, 4096)).toBe(4096);
    expect(plainRun(g, l1, peek(l2), 4096, 4096)).toBe(-4096);
    expect(plainRun(g, l1, peek(l2), 100, 10)).toBe(10);
    // A v2 zero flag is corruption: the lookup reports it.
    expect(plainRun(geometry(12, { version: 2 }), l1, peek(l2), 4096, 4096)).toBe(0);
    // Extended L2, an uncached table, no table, an unaligned or too large table offset.
    expect(plainRun(geometry(14, { extendedL2: true }), l1, peek(l2), 0, 4096)).toBe(0);
    expect(plainRun(g, l1, () => undefined, 0, 4096)).toBe(0);
    expect(plainRun(g, l2Words([0n]), peek(l2), 0, 4096)).toBe(0);
    expect(plainRun(g, l2Words([BigInt(L2_AT + 512)]), peek(l2), 0, 4096)).toBe(0);
    expect(plainRun(g, l2Words([1n << 54n]), peek(l2), 0, 4096)).toBe(0);
    // Past the L1 table.
    expect(plainRun(g, l1, peek(l2), 512 * 4096, 4096)).toBe(0);
  });
});
