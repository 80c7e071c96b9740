/**
 * The table-scan kernel (wasm/table-scan.ts, through src/formats/qcow2/table-scan.ts) against
 * the JavaScript functions that define its results: run lists of random standard L2 tables
 * (every cluster size, with and without an external data file, all-plain tables), and the
 * non-zero entries of random refcount blocks of every entry width, and the per-run table
 * check's verdict on random tables, files and metadata layouts (l2-runs.test.ts holds that
 * check to the entry-by-entry one, with the kernel and without).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { buildL2Runs, onlyPlainEntries } from '../../../src/formats/qcow2/l2-runs.js';
import { countNonZero } from '../../../src/formats/qcow2/refcount-entries.js';
import { countNonZeroEntries, scanL2Table, useTableScanKernel } from '../../../src/formats/qcow2/table-scan.js';
import { wasmKernel } from '../../../src/io/wasm-kernel.js';
import { COMPRESSED, exactRunsTable, geometry, randomTable } from '../../helpers/l2-tables.js';
import { L2TableChecker } from '../../../src/formats/qcow2/l2-table-check.js';
import { MetadataRanges } from '../../../src/formats/qcow2/metadata-ranges.js';
import { rng } from '../../helpers/prng.js';

afterEach(() => useTableScanKernel(true));

/** A table of short runs — data, preallocated zero, zero, unallocated — whose host clusters increase, with gaps. */
function spreadTable(rand: () => number, entries: number, cs: number): Uint32Array {
  const w = new Uint32Array(2 * entries);
  let host = 0x3000000;
  for (let i = 0; i < entries; ) {
    const len = 1 + Math.floor(rand() * 8);
    const kind = Math.floor(rand() * 4);
    for (let k = 0; k < len && i < entries; k++, i++) {
      if (kind < 2) {
        w[2 * i] = Math.floor(host / 2 ** 32);
        w[2 * i + 1] = (host % 2 ** 32) + kind;
        host += cs;
      } else if (kind === 2) {
        w[2 * i + 1] = 1;
      }
    }
    host += Math.floor(rand() * 4) * cs;
  }
  return w;
}

describe('table-scan kernel', () => {
  it('is built (dist/wasm/table-scan.wasm)', () => {
    expect(wasmKernel('table-scan')).not.toBeNull();
  });

  for (const clusterBits of [9, 12, 16, 21]) {
    for (const hasDataFile of [false, true]) {
      it(`finds buildL2Runs' run lists (${2 ** clusterBits}-byte clusters${hasDataFile ? ', data file' : ''})`, () => {
        const g = geometry(clusterBits, hasDataFile);
        const rand = rng(clusterBits * 31 + (hasDataFile ? 7 : 0));
        for (let t = 0; t < (clusterBits >= 21 ? 3 : clusterBits >= 16 ? 8 : 60); t++) {
          const w = t % 5 === 4
            ? exactRunsTable(rand, g)
            : randomTable(rand, g, t % 2 === 0 ? 0x800000 : Math.floor(rand() * 2 ** 40 / g.clusterSize) * g.clusterSize, [0, 0.001, 0.02][t % 3] as number);
          const want = onlyPlainEntries(w) ? null : buildL2Runs(w, g.clusterSize, hasDataFile);
          const got = scanL2Table(w, g.clusterSize, hasDataFile);
          expect(got, `table ${t}`).toEqual(want);
          useTableScanKernel(false);
          expect(scanL2Table(w, g.clusterSize, hasDataFile), `table ${t}, JavaScript`).toEqual(want);
          useTableScanKernel(true);
        }
      });
    }
  }

  it('answers null for tables of plain entries only (unallocated, bare zero flags)', () => {
    const rand = rng(5);
    for (let t = 0; t < 20; t++) {
      const w = new Uint32Array(2 * 8192);
      for (let i = 1; i < w.length; i += 2) if (rand() < 0.3) w[i] = 1;
      expect(scanL2Table(w, 65536, false)).toBeNull();
      w[2 * Math.floor(rand() * 8192) + Math.floor(rand() * 2)] = rand() < 0.5 ? 0x80000000 : 0x200;
      expect(scanL2Table(w, 65536, false)).toEqual(buildL2Runs(w, 65536, false));
    }
  });

  it('counts countNonZero\'s non-zero refcount entries for every entry width, range and limit', () => {
    const rand = rng(77);
    for (let order = 0; order <= 6; order++) {
      for (let t = 0; t < 40; t++) {
        const block = new Uint8Array(512 << Math.floor(rand() * 5));
        const density = rand();
        for (let i = 0; i < block.length; i++) if (rand() < density) block[i] = 1 << Math.floor(rand() * 8);
        const entries = (block.length * 8) >> order;
        const first = Math.floor(rand() * entries);
        // Ends past the block are allowed (the entries there count as zero).
        const end = first + Math.floor(rand() * (entries - first + 8));
        const limit = rand() < 0.3 ? Infinity : Math.floor(rand() * entries);
        expect(countNonZeroEntries(block, first, end, order, limit), `order ${order} [${first}, ${end}) limit ${limit}`).toBe(countNonZero(block, first, end, order, limit));
        // An end far past the block (2^50) counts as the block's end.
        expect(countNonZeroEntries(block, first, 2 ** 50, order, limit)).toBe(countNonZero(block, first, entries, order, limit));
      }
    }
  });

  it('judges runs clean exactly as the checker\'s JavaScript does (random tables; files, metadata and L2 tables at the edges of their runs)', () => {
    const cs = 0x10000;
    const g = geometry(16, false);
    const rand = rng(4242);
    const near = (x: number): number => x + [-cs, -512, -1, 0, 1, 512, cs][Math.floor(rand() * 7)]!;
    let clean = 0;
    let total = 0;
    for (let t = 0; t < 1200; t++) {
      const hasDataFile = t % 9 === 8;
      // Tables whose runs name host clusters of their own (an edge near one run is near no other), or random ones.
      const w = t % 5 < 3 ? spreadTable(rand, g.l2Entries, cs) : randomTable(rand, g, 0x3000000 + Math.floor(rand() * 64) * cs, [0.001, 0.01][t % 5 - 3] as number);
      if (t % 3 !== 0) for (let i = 0; i < w.length; i += 2) if (((w[i] as number) & COMPRESSED) !== 0) w[i] = w[i + 1] = 0;
      const runs = buildL2Runs(w, cs, hasDataFile);
      // The host span of a random run of data, to put the file's end, metadata and L2 tables near.
      let host = 0x3000000;
      let hostEnd = host + cs;
      for (let k = 0; k < 20; k++) {
        const r = Math.floor(rand() * runs.ends.length);
        const first = r === 0 ? 0 : (runs.ends[r - 1] as number);
        const hi = (w[2 * first] as number) & 0xffffff;
        const lo = ((w[2 * first + 1] as number) & 0xfffffe00) >>> 0;
        if (hi === 0 && lo === 0) continue;
        host = hi * 2 ** 32 + lo;
        hostEnd = host + ((runs.ends[r] as number) - first) * cs;
        break;
      }
      const edge = (): number => (rand() < 0.5 ? near(host) : near(hostEnd));
      // One edge per table in turn: the file's end, a metadata range, an L2 table; then all three.
      const kind = t % 4;
      const fileSize = kind === 0 || (kind === 3 && rand() < 0.5) ? near(hostEnd - cs) : 0x40000000000;
      const few = [
        { kind: 'header', start: 0, end: cs },
        { kind: 'refcount table', start: 0x10000, end: 0x20000 },
      ];
      if (kind === 1 || (kind === 3 && rand() < 0.5)) {
        const at = edge();
        few.push(rand() < 0.5 ? { kind: 'snapshot table', start: at, end: at + cs } : { kind: 'snapshot table', start: at - cs, end: at });
      }
      const ranges = MetadataRanges.build('r.qcow2', few, { kind: 'refcount block', starts: Float64Array.from([0x20000]), length: cs });
      const tableCount = kind === 2 ? 1 + Math.floor(rand() * 2) : kind === 3 ? Math.floor(rand() * 3) : 0;
      const tables = Float64Array.from({ length: tableCount }, () => Math.floor(Math.max(0, rand() < 0.8 ? edge() : rand() * 2 ** 30) / 512) * 512).sort();
      const checker = new L2TableChecker({ file: 'r.qcow2', fileSize, clusterBits: 16, clusterSize: cs, extendedL2: false, hasDataFile }, ranges, tables);
      const judge = (): boolean => (checker as unknown as { runsClean(words: Uint32Array, r: typeof runs): boolean }).runsClean(w, runs);
      const inKernel = judge();
      useTableScanKernel(false);
      const inJs = judge();
      useTableScanKernel(true);
      expect(inKernel, `table ${t}`).toBe(inJs);
      if (inJs) clean++;
      total++;
    }
    // Both answers occur.
    expect(clean).toBeGreaterThan(total / 10);
    expect(clean).toBeLessThan(total - total / 10);
  });
});

