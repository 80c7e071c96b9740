/**
 * Run lists of standard L2 tables (src/formats/qcow2/l2-runs.ts): on random tables made of
 * runs and near-runs (COPIED differences, zero flags, reserved bits, compressed entries,
 * offsets above 2^32 and near 2^53, unaligned offsets, an external data file), every lookup
 * answers as the scan without a run list does, and the per-run table check accepts and
 * refuses exactly the tables the entry-by-entry check does, with the same error.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { getHostOffset } from '../../../src/formats/qcow2/host-offset.js';
import { L2TableChecker } from '../../../src/formats/qcow2/l2-table-check.js';
import { buildL2Runs, runAt, runEnd, onlyPlainEntries } from '../../../src/formats/qcow2/l2-runs.js';
import { MetadataRanges } from '../../../src/formats/qcow2/metadata-ranges.js';
import { rng } from '../../helpers/prng.js';
import { COMPRESSED, COPIED, exactRunsTable, geometry, randomTable } from '../../helpers/l2-tables.js';
import { useTableScanKernel } from '../../../src/formats/qcow2/table-scan.js';

/** The metadata of the check tests' images (64 KiB clusters): header, refcount and L1 tables, a snapshot table, two refcount blocks. */
function checkRanges(): MetadataRanges {
  const cs = 0x10000;
  return MetadataRanges.build('r.qcow2', [
    { kind: 'header', start: 0, end: cs },
    { kind: 'refcount table', start: 0x10000, end: 0x20000 },
    { kind: 'active L1 table', start: 0x30000, end: 0x30008 },
    { kind: 'snapshot table', start: 0x2000000, end: 0x2010000 },
  ], { kind: 'refcount block', starts: Float64Array.from([0x20000, 0x3000000]), length: cs });
}

function outcome<T>(fn: () => T): T | { threw: string } {
  try {
    return fn();
  } catch (e) {
    return { threw: `${(e as { code?: string }).code ?? ''}: ${(e as Error).message}` };
  }
}

describe('buildL2Runs', () => {
  it('finds runs in a small table, compressed entries alone', () => {
    const w = Uint32Array.from([
      COPIED, 0x10000, COPIED, 0x20000, 0, 0x30000, // data x3: COPIED differences do not break a run
      0, 1, COPIED, 1, // zero x2
      COMPRESSED, 5, COMPRESSED, 6, // compressed x2
      0, 0, 0, 0, // unallocated x2
      COPIED | 1, 0xffff0000, COPIED | 2, 0, COPIED | 2, 0x10000, // across 2^33
    ].map((x) => x >>> 0));
    const r = buildL2Runs(w, 0x10000, false);
    expect([...r.ends]).toEqual([3, 5, 6, 7, 9, 12]);
    expect(r.compressed).toBe(2);
    expect(runAt(r, 0)).toBe(0);
    expect(runAt(r, 5)).toBe(2);
    expect(runEnd(r, 10)).toBe(12);
  });

  it('ends a run where the low word wraps without the high word moving on', () => {
    const C1 = (COPIED | 1) >>> 0;
    const w = Uint32Array.from([
      C1, 0xfffe0000, C1, 0xffff0000, // 0x1fffe0000, 0x1ffff0000
      C1, 0, C1, 0x10000, // 0x100000000 (not 0x200000000), 0x100010000
      (COPIED | 2) >>> 0, 0, // 0x200000000: not after 0x100010000
      (COPIED | 2) >>> 0, 0x10000, 2, 0x20000, 2, 0x30001, // COPIED differs: one run; then a zero flag
    ]);
    expect([...buildL2Runs(w, 0x10000, false).ends]).toEqual([2, 4, 7, 8]);
  });

  it('finds a whole table of consecutive clusters as one run, and a break in it', () => {
    const n = 8192;
    const w = new Uint32Array(2 * n);
    for (let i = 0; i < n; i++) {
      const h = 0xfff00000 + i * 0x10000; // crosses 2^32 at entry 16
      w[2 * i] = (COPIED | Math.floor(h / 2 ** 32)) >>> 0;
      w[2 * i + 1] = h % 2 ** 32;
    }
    const whole = buildL2Runs(w, 0x10000, false);
    expect([...whole.ends]).toEqual([n]);
    expect(whole.orLo).toBe(w.filter((_, k) => k % 2 === 1).reduce((a, b) => a | b, 0));
    w[2 * 5000 + 1] = (w[2 * 5000 + 1] as number) | 4; // reserved bit: still a run, OR shows it
    w[2 * 6000 + 1] = (w[2 * 6000 + 1] as number) + 0x10000; // not the next cluster
    const broken = buildL2Runs(w, 0x10000, false);
    expect([...broken.ends]).toEqual([6000, 6001, n]);
    expect(broken.orLo & 4).toBe(4);
  });

  it('ORs exactly the words of the entries that are not compressed (exact runs summed without a per-entry OR)', () => {
    for (const clusterBits of [9, 12, 16, 21]) {
      const g = geometry(clusterBits, false);
      const rand = rng(1000 + clusterBits);
      for (let t = 0; t < 20; t++) {
        const w = t % 2 === 0
          ? randomTable(rand, g, Math.floor(rand() * 2 ** 40 / g.clusterSize) * g.clusterSize, t % 4 === 0 ? 0.02 : 0)
          : exactRunsTable(rand, g);
        let hi = 0;
        let lo = 0;
        for (let i = 0; i < w.length; i += 2) {
          if (((w[i] as number) & COMPRESSED) !== 0) continue;
          hi |= w[i] as number;
          lo |= w[i + 1] as number;
        }
        const runs = buildL2Runs(w, g.clusterSize, false);
        expect(runs.orHi).toBe(hi);
        expect(runs.orLo).toBe(lo);
      }
    }
  });

  for (const [clusterBits, hasDataFile] of [[9, false], [12, false], [16, false], [12, true]] as const) {
    it(`lookups with runs equal the scan on random tables (${2 ** clusterBits}-byte clusters${hasDataFile ? ', data file' : ''})`, () => {
      const g = geometry(clusterBits, hasDataFile);
      const rand = rng(clusterBits * 7 + (hasDataFile ? 1 : 0));
      const l2At = 0x400000;
      const l1 = Uint32Array.from([COPIED >>> 0, l2At]);
      for (let t = 0; t < (clusterBits >= 16 ? 6 : 40); t++) {
        const w = randomTable(rand, g, t % 2 === 0 ? 0x800000 : 5 * 2 ** 32, t % 3 === 0 ? 0.02 : 0);
        const withRuns = { words: w, runs: buildL2Runs(w, g.clusterSize, g.hasDataFile) };
        const scan = { words: w, runs: null };
        const span = g.l2Entries * g.clusterSize;
        for (let k = 0; k < 200; k++) {
          const off = Math.floor(rand() * span);
          const bytes = 1 + Math.floor(rand() * (rand() < 0.5 ? 4 * g.clusterSize : span));
          expect(outcome(() => getHostOffset(g, l1, () => withRuns, off, bytes))).toEqual(outcome(() => getHostOffset(g, l1, () => scan, off, bytes)));
        }
        // Every entry start, to the end of the table.
        for (let i = 0; i < g.l2Entries; i += 1 + Math.floor(rand() * (g.l2Entries / 128))) {
          const off = i * g.clusterSize;
          expect(outcome(() => getHostOffset(g, l1, () => withRuns, off, span))).toEqual(outcome(() => getHostOffset(g, l1, () => scan, off, span)));
        }
      }
    });
  }
});

describe.each([
  ['in the table-scan kernel', true],
  ['in JavaScript', false],
])('L2TableChecker with run lists, checked %s', (_how, kernel) => {
  beforeEach(() => useTableScanKernel(kernel));
  afterEach(() => useTableScanKernel(true));

  it('accepts and refuses exactly what the entry-by-entry check does', () => {
    const cs = 0x10000;
    const g = geometry(16, false);
    const ranges = checkRanges();
    const rand = rng(99);
    let refused = 0;
    for (const hasDataFile of [false, true]) {
      for (let t = 0; t < 300; t++) {
        const fileSize = 0x800000 + Math.floor(rand() * 64) * cs + (rand() < 0.5 ? 0 : 0x1234);
        const checker = new L2TableChecker(
          { file: 'r.qcow2', fileSize, clusterBits: 16, clusterSize: cs, extendedL2: false, hasDataFile },
          ranges,
          Float64Array.from([0x40000, 0x500000 + Math.floor(rand() * 8) * cs]),
        );
        const noise = t % 4 === 0 ? 0 : t % 4 === 1 ? 0.001 : 0.01;
        const w = randomTable(rand, g, rand() < 0.8 ? 0x40000 + Math.floor(rand() * 4) * cs : 0x1000000, noise);
        if (t % 5 === 0) for (let i = 0; i < w.length; i += 2) if (((w[i] as number) & COMPRESSED) !== 0) w[i] = w[i + 1] = 0;
        const runs = buildL2Runs(w, cs, hasDataFile);
        const a = outcome(() => checker.check(0x40000, w, runs));
        const b = outcome(() => checker.check(0x40000, w));
        expect(a).toEqual(b);
        if (b !== undefined) refused++;
      }
    }
    // The random tables hit both outcomes.
    expect(refused).toBeGreaterThan(20);
    expect(refused).toBeLessThan(560);
  });

  it('judges compressed payloads as the entry-by-entry check does: inside the file, and at the edges of the file, metadata and L2 tables', () => {
    const cs = 0x10000;
    const ranges = checkRanges();
    const l2Tables = Float64Array.from([0x40000, 0x500000]);
    /** Payload starts just before, at and after the edges (the file's end is 0x4000000 or 0x4001234). */
    const edges = [0x20000, 0x30000, 0x30008, 0x40000, 0x50000, 0x500000, 0x510000, 0x2000000, 0x2010000, 0x3000000, 0x3010000, 0x4000000, 0x4001234];
    const rand = rng(5151);
    let refused = 0;
    let clean = 0;
    for (let t = 0; t < 400; t++) {
      const fileSize = t % 2 === 0 ? 0x4000000 : 0x4001234;
      const hasDataFile = t % 10 === 9;
      const checker = new L2TableChecker({ file: 'r.qcow2', fileSize, clusterBits: 16, clusterSize: cs, extendedL2: false, hasDataFile }, ranges, l2Tables);
      const w = new Uint32Array(2 * (cs / 8));
      // A run of data clear of everything, then compressed entries: most inside the file's
      // free space, a few at an edge.
      for (let i = 0; i < 16; i++) {
        const h = 0x1000000 + i * cs;
        w[2 * i] = COPIED;
        w[2 * i + 1] = h;
      }
      const count = 1 + Math.floor(rand() * 40);
      for (let k = 0; k < count; k++) {
        const i = 16 + Math.floor(rand() * (cs / 8 - 16));
        const nearEdge = rand() < 0.03;
        const sectors = 1 + Math.floor(rand() * (rand() < 0.1 ? 256 : 8));
        // Near an edge: the payload's start, or its end, within two sectors of it.
        const edge = (edges[Math.floor(rand() * edges.length)] as number) - (rand() < 0.5 ? sectors * 512 : 0);
        const start = nearEdge
          ? Math.max(0, edge + Math.floor(rand() * 5 - 2) * 512 + (rand() < 0.3 ? Math.floor(rand() * 512) : 0))
          : 0x600000 + Math.floor(rand() * 0x1900000);
        w[2 * i] = (COMPRESSED | ((sectors - 1) << 22) | Math.floor(start / 2 ** 32) | (rand() < 0.01 ? COPIED : 0)) >>> 0;
        w[2 * i + 1] = start % 2 ** 32;
      }
      const runs = buildL2Runs(w, cs, hasDataFile);
      const a = outcome(() => checker.check(0x40000, w, runs));
      const b = outcome(() => checker.check(0x40000, w));
      expect(a, `table ${t}`).toEqual(b);
      // The per-run verdict itself, in the kernel and in JavaScript (a "not clean" only costs
      // the entries' checks, so the outcomes above would not show a difference).
      const judge = (inKernel: boolean): boolean => {
        useTableScanKernel(inKernel);
        try {
          return (checker as unknown as { runsClean(x: Uint32Array, r: typeof runs): boolean }).runsClean(w, runs);
        } finally {
          useTableScanKernel(kernel);
        }
      };
      const verdict = judge(true);
      expect(verdict, `table ${t}`).toBe(judge(false));
      if (b !== undefined) refused++;
      else if (verdict && !hasDataFile) clean++;
    }
    // Both outcomes, and tables with compressed entries passed per run, without the entries' checks.
    expect(refused).toBeGreaterThan(40);
    expect(clean).toBeGreaterThan(100);
  });
});

describe('onlyPlainEntries', () => {
  it('is true only when every entry is all zero or a bare zero flag', () => {
    const t = new Uint32Array(2 * 64);
    expect(onlyPlainEntries(t)).toBe(true);
    for (let i = 0; i < 64; i += 2) t[2 * i + 1] = 1;
    expect(onlyPlainEntries(t)).toBe(true);
    for (const [at, v] of [[0, 0x80000000], [1, 0x10000], [1, 3], [127, 0x200], [126, 1]] as const) {
      const u = t.slice();
      u[at] = v;
      expect(onlyPlainEntries(u), `word ${at} = ${v.toString(16)}`).toBe(false);
    }
  });
});
