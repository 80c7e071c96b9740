/**
 * Random standard L2 tables for tests of run lists and table checks: runs of consecutive
 * host clusters, and tables of data, zero, unallocated and compressed runs with noise
 * (COPIED differences, reserved bits, unaligned offsets, offsets across 2^32 and near 2^53).
 */
import type { MappingGeometry } from '../../src/formats/qcow2/host-offset.js';

export const COPIED = 0x80000000;
export const COMPRESSED = 0x40000000;

/** Native words of a table of long runs of consecutive clusters, each with one flag set (as allocation writes them). */
export function exactRunsTable(rand: () => number, g: MappingGeometry): Uint32Array {
  const n = g.l2Entries;
  const w = new Uint32Array(2 * n);
  for (let i = 0; i < n; ) {
    const len = 1 + Math.floor(rand() * n);
    const flags = rand() < 0.5 ? COPIED : 0;
    const host = Math.floor(rand() * 2 ** 24) * g.clusterSize;
    for (let k = 0; k < len && i < n; k++, i++) {
      const h = host + k * g.clusterSize;
      w[2 * i] = (flags | Math.floor(h / 2 ** 32)) >>> 0;
      w[2 * i + 1] = h % 2 ** 32;
    }
  }
  return w;
}

/** The mapping geometry of a version 3 image with standard L2 tables. */
export function geometry(clusterBits: number, hasDataFile: boolean): MappingGeometry {
  const clusterSize = 2 ** clusterBits;
  return {
    file: 'r.qcow2', version: 3, clusterBits, clusterSize, l2Entries: clusterSize / 8, extendedL2: false,
    subclustersPerCluster: 1, subclusterSize: clusterSize, hasDataFile,
  };
}

/** Native words of a random table: runs of data, zero and unallocated entries, with noise. */
export function randomTable(rand: () => number, g: MappingGeometry, hostBase: number, noise: number): Uint32Array {
  const n = g.l2Entries;
  const w = new Uint32Array(2 * n);
  const cs = g.clusterSize;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  let i = 0;
  while (i < n) {
    const len = 1 + Math.floor(rand() * (rand() < 0.3 ? n / 2 : 6));
    const kind = pick(['data', 'data', 'zero-alloc', 'zero', 'unallocated', 'compressed'] as const);
    let host = hostBase + Math.floor(rand() * 64) * cs + (rand() < noise ? 512 : 0);
    if (rand() < 0.1) host = 2 ** 32 - 2 * cs; // runs across the 2^32 word boundary
    if (rand() < 0.05) host = 2 ** 53 - 2 * cs; // runs into offsets of 2^53 and more
    for (let k = 0; k < len && i < n; k++, i++) {
      let hi = 0;
      let lo = 0;
      if (kind === 'data' || kind === 'zero-alloc') {
        const h = host + k * cs + (rand() < noise ? cs : 0);
        hi = Math.floor(h / 2 ** 32);
        lo = h % 2 ** 32;
        if (rand() < 0.7) hi |= COPIED;
        if (kind === 'zero-alloc') lo |= 1;
      } else if (kind === 'zero') {
        lo = 1;
        if (rand() < 0.2) hi = COPIED;
      } else if (kind === 'compressed') {
        hi = COMPRESSED | Math.floor(rand() * 0x100);
        lo = (hostBase + Math.floor(rand() * 0x10000)) >>> 0;
      } else if (rand() < 0.1) {
        hi = COPIED;
      }
      if (rand() < noise / 4) hi |= 1 << (24 + Math.floor(rand() * 6)); // reserved high bits
      if (rand() < noise / 4) lo |= 2 << Math.floor(rand() * 8); // reserved low bits
      w[2 * i] = hi >>> 0;
      w[2 * i + 1] = lo >>> 0;
    }
  }
  return w;
}
