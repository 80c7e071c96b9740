/**
 * The caller's purpose decides the work: allocation mode never probes the host file for
 * holes (qcow2 or raw); mapping mode probes exactly where QEMU does (raw files always,
 * qcow2 only when the image looks metadata-preallocated).
 */
import { mkdtemp, open, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImage, type Image } from '../../src/index.js';
import { loadLseek } from '../../src/io/lseek-binding.js';
import { sparseCopy } from '../helpers/sparse.js';

const images = fileURLToPath(new URL('../../images', import.meta.url));
const haveBinding = loadLseek() !== null;
if (!haveBinding) console.warn('mode.test: no lseek binding (koffi); hole-probe counts in mapping mode are not asserted');

let dir: string;
let sparseRaw: string;
let prealloc: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vdisk-mode-'));
  sparseRaw = path.join(dir, 'sparse.raw');
  await writeFile(sparseRaw, '');
  await truncate(sparseRaw, 1 << 20);
  const fh = await open(sparseRaw, 'r+');
  await fh.write(Buffer.alloc(4096, 0xab), 0, 4096, 256 * 1024);
  await fh.close();
  prealloc = path.join(dir, 'prealloc.qcow2');
  await sparseCopy(path.join(images, 'prealloc-metadata.qcow2'), prealloc);
});

afterAll(async () => {
  await Promise.all(opened.map((i) => i.close()));
  await rm(dir, { recursive: true, force: true });
});

const opened: Image[] = [];
async function track(p: Promise<Image>): Promise<Image> {
  const img = await p;
  opened.push(img);
  return img;
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('allocation mode', () => {
  it('makes no hole probes on a sparse raw file and reports it as one data extent', async () => {
    const img = await track(openImage(sparseRaw, { format: 'raw' }));
    const ext = await collect(img.allocationExtents());
    expect(ext).toEqual([{ start: 0, length: 1 << 20, depth: 0, present: true }]);
    expect(img.counters().holeProbes).toBe(0);
  });

  it('makes no hole probes on a metadata-preallocated qcow2 with a sparse host file', async () => {
    const img = await track(openImage(prealloc));
    await collect(img.allocationExtents());
    const st = await img.blockStatusAbove(null, 0, img.virtualSize, 'allocation');
    expect(st.allocated).toBe(true);
    expect(img.counters().holeProbes).toBe(0);
  });

  it('makes no hole probes on any committed qcow2 fixture', async () => {
    for (const name of ['sample.qcow2', 'chain-top.qcow2', 'kinds.qcow2', 'subclusters.qcow2', 'datafile.qcow2', 'datafile-raw.qcow2']) {
      const img = await track(openImage(path.join(images, name)));
      await collect(img.allocationExtents());
      expect(img.counters().holeProbes, name).toBe(0);
    }
  });
});

describe('mapping mode', () => {
  it.skipIf(!haveBinding)('probes a sparse raw file and reports its holes as zero', async () => {
    const img = await track(openImage(sparseRaw, { format: 'raw' }));
    const ext = await collect(img.mapExtents());
    expect(img.counters().holeProbes).toBeGreaterThan(0);
    expect(ext.map((e) => [e.start, e.length, e.zero, e.data])).toEqual([
      [0, 256 * 1024, true, false],
      [256 * 1024, 4096, false, true],
      [260 * 1024, (1 << 20) - 260 * 1024, true, false],
    ]);
  });

  it('does not probe a qcow2 image that is not metadata-preallocated', async () => {
    const img = await track(openImage(path.join(images, 'sample.qcow2')));
    await collect(img.mapExtents());
    expect(img.counters().holeProbes).toBe(0);
  });

  it.skipIf(!haveBinding)('probes a metadata-preallocated qcow2 and reports host holes as zero data', async () => {
    const st = await stat(prealloc);
    expect(st.blocks * 512).toBeLessThan(st.size);
    const img = await track(openImage(prealloc));
    const ext = await collect(img.mapExtents());
    expect(img.counters().holeProbes).toBeGreaterThan(0);
    expect(ext.some((e) => e.zero && e.data && e.offset !== null)).toBe(true);
  });

  it('reports a sparse raw file as data everywhere when hole probing is unavailable', async () => {
    const img = await track(openImage(sparseRaw, { format: 'raw', lseek: null }));
    const ext = await collect(img.mapExtents());
    expect(ext).toEqual([
      { start: 0, length: 1 << 20, depth: 0, present: true, zero: false, data: true, offset: 0, filename: sparseRaw },
    ]);
    expect(img.counters().holeProbes).toBe(0);
  });
});
