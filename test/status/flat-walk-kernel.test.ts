/**
 * The flat map walk's WebAssembly kernel (src/status/flat-walk-kernel.ts) against the
 * JavaScript walk alone, on two-layer chains built entry by entry (test/helpers/qcow2-builder.ts):
 * runs of data whose host clusters continue into preallocated zero clusters (and back),
 * zero, unallocated and compressed entries (the kernel walks all four), backing files
 * shorter and longer than the top, version 2 images, and entries QEMU refuses (unaligned
 * offsets, offsets of 2^53 or more, zero flags in version 2: the kernel hands over). Both walks must hand out the same entries and, where the walk
 * fails, the same entries before the same error.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImage } from '../../src/index.js';
import { MAP_DATA, MAP_PRESENT, MAP_ZERO, MapBatch } from '../../src/status/map-batch.js';
import { kernelWalkCounts, useFlatWalkKernel } from '../../src/status/flat-walk-kernel.js';
import { Qcow2Driver } from '../../src/formats/qcow2/qcow2-driver.js';
import { COMPRESSED, COPIED, EXT, ZERO_FLAG, ascii, buildQcow2 } from '../helpers/qcow2-builder.js';
import { rng } from '../helpers/prng.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

const CS = 4096;
const L2_ENTRIES = CS / 8;
/** Host clusters from here on hold data; L2 tables sit at 4..7 clusters. */
const DATA_FROM = 16 * CS;

/** Random L2 entries for `clusters` guest clusters (version 3 unless `v2`; one entry QEMU refuses if `hostile`). */
function randomEntries(rand: () => number, clusters: number, v2: boolean, hostile: boolean, compressed: boolean): bigint[] {
  const out: bigint[] = [];
  let host = DATA_FROM + Math.floor(rand() * 64) * CS;
  while (out.length < clusters) {
    const len = 1 + Math.floor(rand() * (rand() < 0.2 ? 40 : 4));
    const kind = Math.floor(rand() * 10);
    for (let k = 0; k < len && out.length < clusters; k++) {
      const copied = rand() < 0.6 ? COPIED : 0n;
      if (kind <= 2) {
        // Data, and now and then the next host cluster preallocated zero (a run QEMU splits).
        const zero = !v2 && rand() < 0.15 ? ZERO_FLAG : 0n;
        out.push(copied | BigInt(host) | zero);
        host += CS;
      } else if (kind === 3 && !v2) {
        out.push(copied | BigInt(host) | ZERO_FLAG);
        host += CS;
      } else if (kind === 4 && !v2) {
        out.push(ZERO_FLAG);
      } else if (kind === 5 && compressed && rand() < 0.3) {
        // Compressed: one to four sectors of payload at a data cluster, now and then not on
        // a sector boundary (bit 0 then set: an offset bit in a compressed descriptor). With
        // 4 KiB clusters the sector count is bits 58 to 61.
        const at = DATA_FROM + Math.floor(rand() * 32) * CS + (rand() < 0.3 ? 1 + Math.floor(rand() * 511) : 0);
        out.push(COMPRESSED | (BigInt(Math.floor(rand() * 4)) << 58n) | BigInt(at));
      } else {
        out.push(rand() < 0.1 ? COPIED : 0n);
      }
    }
    if (rand() < 0.3) host += Math.floor(rand() * 3) * CS;
    // Host clusters stay inside the file (data may alias: the walk does not mind).
    if (host >= DATA_FROM + 140 * CS) host = DATA_FROM + Math.floor(rand() * 8) * CS;
  }
  if (hostile) {
    const at = Math.floor(rand() * clusters);
    const bad = [
      BigInt(DATA_FROM + 512) | COPIED, // unaligned host cluster
      1n << 54n, // offset of 2^53 or more
      ZERO_FLAG, // a zero flag (refused in version 2 only)
      BigInt(DATA_FROM) | ZERO_FLAG,
    ][Math.floor(rand() * 4)] as bigint;
    out[at] = bad;
  }
  return out;
}

/** Writes a qcow2 layer of `size` bytes with `entries` (L2 tables from cluster 4). */
function writeLayer(file: string, size: number, entries: readonly bigint[], v2: boolean, backing: string | null): void {
  const tables: Array<{ offset: number; entries: bigint[] }> = [];
  const l1: bigint[] = [];
  for (let t = 0; t * L2_ENTRIES < entries.length; t++) {
    const offset = (4 + t) * CS;
    tables.push({ offset, entries: entries.slice(t * L2_ENTRIES, (t + 1) * L2_ENTRIES) });
    l1.push(COPIED | BigInt(offset));
  }
  const bytes = buildQcow2({
    header: { version: v2 ? 2 : 3, clusterBits: 12, size, l1Size: l1.length },
    ...(backing === null ? {} : { backingFile: backing, extensions: [{ magic: EXT.BACKING_FORMAT, data: ascii('qcow2') }] }),
    l1,
    tables,
    fileSize: DATA_FROM + 160 * CS,
  });
  writeFileSync(file, bytes);
}

type Outcome = { entries: string[]; error: string | null };

async function walk(top: string, kernel: boolean, capacity: number, range: { start?: number; length?: number } = {}): Promise<Outcome> {
  useFlatWalkKernel(kernel);
  const entries: string[] = [];
  let error: string | null = null;
  const img = await openImage(top, { format: 'qcow2' });
  try {
    await img.walkFlatMap(range, new MapBatch(capacity), (b) => {
      for (let i = 0; i < b.count; i++) {
        const a = b.attrs[i] as number;
        entries.push(`${b.start[i]} ${b.length[i]} d${b.depth[i]} ${(a & MAP_PRESENT) !== 0 ? 'P' : ''}${(a & MAP_ZERO) !== 0 ? 'Z' : ''}${(a & MAP_DATA) !== 0 ? 'D' : ''} @${b.offset[i]}`);
      }
      return undefined;
    });
  } catch (e) {
    error = `${(e as { code?: string }).code ?? ''}: ${(e as Error).message}`;
  } finally {
    await img.close();
    useFlatWalkKernel(true);
  }
  return { entries, error };
}

describe('flat walk kernel against the JavaScript walk', () => {
  let dir = '';
  beforeAll(() => {
    dir = makeTempDir('vdisk-kernel-');
  });
  afterAll(() => removeTempDir(dir));

  it('gives the same entries, and the same entries before the same error, on 300 built chains', async () => {
    const rand = rng(2026);
    let failed = 0;
    let handedOver = 0;
    /** Chains with compressed clusters and nothing the kernel leaves to JavaScript, and their hand-overs. */
    let compressedOnly = 0;
    let compressedHandedOver = 0;
    for (let c = 0; c < 300; c++) {
      const v2 = c % 6 === 5;
      const hostile = c % 4 === 3;
      // Compressed clusters (data without a host offset, which the kernel walks itself) in
      // a third of the chains, and in every version 2 chain.
      const withCompressed = c % 3 === 0 || v2;
      const topClusters = 256 + Math.floor(rand() * 1024);
      const baseClusters = rand() < 0.3 ? Math.floor(topClusters / 2) : topClusters + Math.floor(rand() * 64);
      const base = path.join(dir, `c${c}-base.qcow2`);
      const top = path.join(dir, `c${c}-top.qcow2`);
      writeLayer(base, baseClusters * CS - (rand() < 0.3 ? 512 * (1 + Math.floor(rand() * 7)) : 0), randomEntries(rand, baseClusters, v2, false, withCompressed), v2, null);
      writeLayer(top, topClusters * CS, randomEntries(rand, topClusters, v2, hostile, withCompressed), v2, path.basename(base));
      const before = kernelWalkCounts.handovers;
      const capacity = 1 + Math.floor(rand() * 300);
      const got = await walk(top, true, capacity);
      handedOver += kernelWalkCounts.handovers - before;
      if (withCompressed && !hostile && !v2) {
        compressedOnly++;
        compressedHandedOver += kernelWalkCounts.handovers - before;
      }
      const want = await walk(top, false, capacity);
      expect(got, `chain ${c}`).toEqual(want);
      // A range starting and ending inside clusters (queries from the middle of an entry).
      const start = Math.floor(rand() * topClusters * CS);
      const range = { start, length: 1 + Math.floor(rand() * (topClusters * CS - start)) };
      expect(await walk(top, true, capacity, range), `chain ${c} range ${JSON.stringify(range)}`).toEqual(await walk(top, false, capacity, range));
      if (want.error !== null) failed++;
    }
    // The chains reach both ends: walks that fail, and walks handed over to JavaScript (at
    // the entries QEMU refuses and the zero flags of version 2 images).
    expect(failed).toBeGreaterThan(20);
    expect(handedOver).toBeGreaterThan(15);
    // Compressed clusters are no reason to hand over.
    expect(compressedOnly).toBeGreaterThan(50);
    expect(compressedHandedOver).toBe(0);
  }, 120_000);

  it('reads each L2 table once, when the walk reaches it, and keeps none of them cached behind it', async () => {
    // Two layers of 12 and 10 tables (512 entries each; the tables end before the data's
    // clusters), data and holes throughout.
    /** Runs of 1 to 8 data clusters (host clusters within the file), zero and unallocated entries. */
    const entries = (n: number, seed: number): bigint[] => {
      const rand = rng(seed);
      const out: bigint[] = [];
      let host = 0;
      while (out.length < n) {
        const kind = Math.floor(rand() * 3);
        for (let k = 1 + Math.floor(rand() * 8); k > 0 && out.length < n; k--) {
          if (kind === 0) out.push(COPIED | BigInt(DATA_FROM + (host++ % 100) * CS));
          else out.push(kind === 1 ? ZERO_FLAG : 0n);
        }
      }
      return out;
    };
    const base = path.join(dir, 'tables-base.qcow2');
    const top = path.join(dir, 'tables-top.qcow2');
    writeLayer(base, 10 * L2_ENTRIES * CS, entries(10 * L2_ENTRIES, 77), false, null);
    writeLayer(top, 12 * L2_ENTRIES * CS, entries(12 * L2_ENTRIES, 78), false, path.basename(base));
    const handovers = kernelWalkCounts.handovers;
    const img = await openImage(top, { format: 'qcow2' });
    try {
      let entries = 0;
      await img.walkFlatMap({}, new MapBatch(64), (b) => {
        entries += b.count;
        return undefined;
      });
      expect(entries).toBeGreaterThan(100);
      expect(kernelWalkCounts.handovers).toBe(handovers);
      const drivers = [...img.top.layers()].map((n) => n.driver as Qcow2Driver);
      expect(drivers.map((d) => d.l2Loads)).toEqual([12, 10]);
      // Each was handed to the kernel's slot and recycled (read ahead instead, all 22 were
      // held at once, each in fresh memory).
      expect(drivers.map((d) => d.l2Cached)).toEqual([0, 0]);
    } finally {
      await img.close();
    }
  });
});
