/**
 * One layer's block status with the block layer's rules (src/status/one-layer.ts; QEMU 7.2
 * `bdrv_co_block_status`, QEMU-SEMANTICS.md §1.2) over fake drivers: EOF and clamping,
 * alignment widening, ALLOCATED synthesis, ZERO for unallocated ranges without a backing
 * file, short-backing ZERO only in mapping mode, and the RECURSE probe of the host file
 * (mapping mode only) with its EOF/zero rules. Driver calls are counted.
 */
import { describe, expect, it } from 'vitest';
import {
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_EOF,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_RECURSE,
  BDRV_BLOCK_ZERO,
  type BlockDriver,
  type StatusMode,
} from '../../src/formats/driver.js';
import type { AllocationProbe, RandomAccessFile } from '../../src/io/random-access-file.js';
import { ChainNode } from '../../src/status/chain-node.js';
import { oneLayerStatus, type StatusCounters } from '../../src/status/one-layer.js';
import { FakeDriver } from '../helpers/fake-driver.js';
import { MemoryFile, extentsProbe } from '../helpers/memory-file.js';

const D = BDRV_BLOCK_DATA;
const Z = BDRV_BLOCK_ZERO;
const OV = BDRV_BLOCK_OFFSET_VALID;
const A = BDRV_BLOCK_ALLOCATED;
const EOF = BDRV_BLOCK_EOF;
const R = BDRV_BLOCK_RECURSE;
const K = 1024;
const M = 1024 * 1024;


const counters = (): StatusCounters => ({ driverCalls: 0 });
const node = (d: BlockDriver, backing: ChainNode | null = null, skipped = false): ChainNode => {
  const n = new ChainNode(d, 'top.qcow2', 0, skipped);
  n.backing = backing;
  return n;
};
const run = async (n: ChainNode, mode: StatusMode, offset: number, bytes: number, c = counters()) => ({
  r: await oneLayerStatus(n, mode, offset, bytes, c),
  c,
});

describe('oneLayerStatus: range checks', () => {
  it.each([1 * M, 1 * M + 1, 4 * M])('offset %d at or past the end: EOF with pnum 0, no driver call', async (offset) => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: D }]);
    const { r, c } = await run(node(d), 'mapping', offset, 4096);
    expect(r).toEqual({ flags: EOF, pnum: 0, map: 0, file: null });
    expect(c.driverCalls).toBe(0);
    expect(d.calls).toEqual([]);
  });

  it('bytes 0: flags 0, pnum 0, no driver call', async () => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: D }]);
    const { r, c } = await run(node(d), 'mapping', 4096, 0);
    expect(r).toEqual({ flags: 0, pnum: 0, map: 0, file: null });
    expect(c.driverCalls).toBe(0);
  });

  it('the request is clamped to the layer length before the driver sees it; EOF when the run reaches the end', async () => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 2 * M, flags: D | OV, map: 0x50000 }]);
    const { r, c } = await run(node(d), 'mapping', 1 * M - 100, 1000);
    expect(d.calls).toEqual([{ offset: 1 * M - 100, bytes: 100, mode: 'mapping' }]);
    expect(r.pnum).toBe(100);
    expect(r.flags).toBe(D | OV | A | EOF);
    expect(r.map).toBe(0x50000 + 1 * M - 100);
    expect(c.driverCalls).toBe(1);
  });

  it('a driver answer longer than asked is cut to the request (no EOF before the end)', async () => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: D | OV, map: 0 }]);
    const { r } = await run(node(d), 'mapping', 0, 4096);
    expect(r).toMatchObject({ flags: D | OV | A, pnum: 4096, map: 0 });
  });

  it('a shorter driver answer is kept', async () => {
    const d = new FakeDriver(1 * M, [
      { start: 0, end: 64 * K, flags: D | OV, map: 0x50000 },
      { start: 64 * K, end: 1 * M, flags: 0 },
    ]);
    const { r } = await run(node(d), 'mapping', 10, 1 * M);
    expect(r).toMatchObject({ pnum: 64 * K - 10, map: 0x50000 + 10 });
  });

  it('accepts asynchronous driver answers', async () => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: D | OV, map: 0x50000 }], { async: true });
    const p = oneLayerStatus(node(d), 'mapping', 0, 1 * M, counters());
    expect(p).toBeInstanceOf(Promise);
    expect(await p).toMatchObject({ flags: D | OV | A | EOF, pnum: 1 * M });
  });

  it('answers synchronously when the driver does', () => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: D }]);
    expect(oneLayerStatus(node(d), 'mapping', 0, 1 * M, counters())).not.toBeInstanceOf(Promise);
  });
});

describe('oneLayerStatus: alignment widening (alignment 512)', () => {
  const d = () =>
    new FakeDriver(8 * K, [
      { start: 0, end: 1024, flags: D | OV, map: 0x10000 },
      { start: 1024, end: 8 * K, flags: Z },
    ], { alignment: 512 });

  it('the driver sees the request rounded outward; pnum and map are shifted back', async () => {
    const drv = d();
    const { r } = await run(node(drv), 'mapping', 100, 200);
    expect(drv.calls).toEqual([{ offset: 0, bytes: 512, mode: 'mapping' }]);
    expect(r).toMatchObject({ flags: D | OV | A, pnum: 200, map: 0x10000 + 100 });
  });

  it('a run ending before the request end keeps its aligned end', async () => {
    const drv = d();
    const { r } = await run(node(drv), 'mapping', 600, 2000);
    expect(drv.calls).toEqual([{ offset: 512, bytes: 2560, mode: 'mapping' }]);
    expect(r).toMatchObject({ pnum: 424, map: 0x10000 + 600 });
  });

  it('an unaligned start in a zero run: no map, pnum to the run end', async () => {
    const { r } = await run(node(d()), 'mapping', 1500, 10 * K);
    expect(r).toEqual({ flags: Z | A | EOF, pnum: 8 * K - 1500, map: 0, file: null });
  });
});

describe('oneLayerStatus: ALLOCATED and ZERO synthesis', () => {
  it.each([
    ['DATA', D, D | A],
    ['DATA|OFFSET_VALID', D | OV, D | OV | A],
    ['ZERO', Z, Z | A],
    ['ZERO|OFFSET_VALID', Z | OV, Z | OV | A],
    ['DATA|ZERO', D | Z, D | Z | A],
  ])('%s gets ALLOCATED', async (_n, flags, want) => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags }]);
    expect((await run(node(d), 'mapping', 0, 64 * K)).r.flags).toBe(want);
  });

  it.each(['mapping', 'allocation'] as const)('no backing file: unallocated reads as ZERO, not ALLOCATED (%s mode)', async (mode) => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: 0 }]);
    expect((await run(node(d), mode, 0, 64 * K)).r).toEqual({ flags: Z, pnum: 64 * K, map: 0, file: null });
  });

  it('no backing file: UNALLOCATED_ALLOC keeps its offset and gets ZERO (E4)', async () => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: OV, map: 0x50000 }]);
    const { r } = await run(node(d), 'mapping', 512, 512);
    expect(r).toMatchObject({ flags: OV | Z, pnum: 512, map: 0x50200 });
    expect(r.file).toBe(d.file);
  });

  it('a layer whose backing file was deliberately not opened gets no ZERO', async () => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: 0 }]);
    expect((await run(node(d, null, true), 'mapping', 0, 64 * K)).r.flags).toBe(0);
  });

  it('a driver without backing support (raw) gets no ZERO for an empty answer', async () => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: OV }], { supportsBacking: false });
    expect((await run(node(d), 'mapping', 0, 64 * K)).r.flags).toBe(OV);
  });

  describe('short backing file', () => {
    const top = () => new FakeDriver(2 * M, [{ start: 0, end: 2 * M, flags: 0 }]);
    const backing = () => node(new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: D }]));

    it('mapping mode: at or past the backing end, unallocated reads as ZERO (not ALLOCATED)', async () => {
      const { r, c } = await run(node(top(), backing()), 'mapping', 1 * M, 512 * K);
      expect(r).toEqual({ flags: Z, pnum: 512 * K, map: 0, file: null });
      expect(c.driverCalls).toBe(1); // the backing layer is not asked
    });

    it('mapping mode: only the start offset is checked; pnum is not cut at the backing end', async () => {
      const { r } = await run(node(top(), backing()), 'mapping', 1 * M - 512, 1 * M);
      expect(r).toEqual({ flags: 0, pnum: 1 * M, map: 0, file: null });
    });

    it('allocation mode: no short-backing ZERO', async () => {
      const { r } = await run(node(top(), backing()), 'allocation', 1 * M, 512 * K);
      expect(r).toEqual({ flags: 0, pnum: 512 * K, map: 0, file: null });
    });

    it('below the backing end: plain unallocated (defer to the backing file)', async () => {
      const { r } = await run(node(top(), backing()), 'mapping', 0, 512 * K);
      expect(r.flags).toBe(0);
    });
  });
});

describe('oneLayerStatus: RECURSE into the host file', () => {
  const HOST = 0x50000;
  /** A layer answering DATA|OFFSET_VALID|RECURSE at HOST for 64 KiB, pointing into `host`. */
  const layer = (host: RandomAccessFile, extra = 0) =>
    new FakeDriver(1 * M, [
      { start: 0, end: 64 * K, flags: D | OV | R | extra, map: HOST, file: host },
      { start: 64 * K, end: 1 * M, flags: D | OV, map: 2 * M, file: host },
    ]);
  const hostFile = (size: number, probe: (o: number) => AllocationProbe) =>
    new MemoryFile(new Uint8Array(0), { path: 'host.qcow2', size, probe });

  it('a hole in the host file adds ZERO and limits pnum to the hole (E2)', async () => {
    const host = hostFile(4 * M, extentsProbe(4 * M, [[0, HOST], [HOST + 4 * K, 4 * M]]));
    const { r, c } = await run(node(layer(host)), 'mapping', 0, 1 * M);
    expect(r).toEqual({ flags: D | OV | Z | A, pnum: 4 * K, map: HOST, file: host });
    expect(host.probes).toEqual([HOST]);
    expect(c.driverCalls).toBe(2);
  });

  it('data in the host file: no ZERO, pnum limited to the data run', async () => {
    const host = hostFile(4 * M, extentsProbe(4 * M, [[HOST, HOST + 8 * K]]));
    const { r } = await run(node(layer(host)), 'mapping', 0, 1 * M);
    expect(r).toEqual({ flags: D | OV | A, pnum: 8 * K, map: HOST, file: host });
  });

  it('an unaligned query asks the host file at the shifted map', async () => {
    const host = hostFile(4 * M, extentsProbe(4 * M, [[HOST, HOST + 8 * K]]));
    const { r } = await run(node(layer(host)), 'mapping', 100, 1 * M);
    expect(host.probes).toEqual([HOST + 100]);
    expect(r).toMatchObject({ pnum: 8 * K - 100, map: HOST + 100 });
  });

  it('map at or past the end of the host file (file pnum 0, EOF): ZERO, pnum unchanged', async () => {
    const host = hostFile(HOST, () => {
      throw new Error('must not probe past EOF');
    });
    const { r, c } = await run(node(layer(host)), 'mapping', 0, 1 * M);
    expect(r).toEqual({ flags: D | OV | Z | A, pnum: 64 * K, map: HOST, file: host });
    expect(c.driverCalls).toBe(1);
  });

  it('a trailing hole running to the host EOF (EOF|ZERO): ZERO, pnum unchanged', async () => {
    const host = hostFile(HOST + 64 * K, extentsProbe(HOST + 64 * K, [[0, HOST]]));
    const { r } = await run(node(layer(host)), 'mapping', 0, 1 * M);
    expect(r).toEqual({ flags: D | OV | Z | A, pnum: 64 * K, map: HOST, file: host });
  });

  it('a host answer of unknown (no binding): data, no ZERO', async () => {
    const host = hostFile(4 * M, () => ({ kind: 'unknown' }));
    const { r } = await run(node(layer(host)), 'mapping', 0, 1 * M);
    expect(r).toEqual({ flags: D | OV | A, pnum: 64 * K, map: HOST, file: host });
  });

  it('RECURSE is never returned', async () => {
    const host = hostFile(4 * M, () => ({ kind: 'unknown' }));
    for (const mode of ['mapping', 'allocation'] as const) {
      expect((await run(node(layer(host)), mode, 0, 1 * M)).r.flags & R).toBe(0);
    }
  });

  it('allocation mode never asks the host file', async () => {
    const host = hostFile(4 * M, extentsProbe(4 * M, []));
    const { r, c } = await run(node(layer(host)), 'allocation', 0, 1 * M);
    expect(r).toEqual({ flags: D | OV | A, pnum: 64 * K, map: HOST, file: host });
    expect(host.probes).toEqual([]);
    expect(c.driverCalls).toBe(1);
  });

  it('no RECURSE flag: the host file is not asked', async () => {
    const host = hostFile(4 * M, extentsProbe(4 * M, []));
    await run(node(layer(host)), 'mapping', 64 * K, 64 * K);
    expect(host.probes).toEqual([]);
  });

  it('RECURSE without OFFSET_VALID is ignored', async () => {
    const d = new FakeDriver(1 * M, [{ start: 0, end: 1 * M, flags: D | R }]);
    const { r, c } = await run(node(d), 'mapping', 0, 64 * K);
    expect(r).toEqual({ flags: D | A, pnum: 64 * K, map: 0, file: null });
    expect(c.driverCalls).toBe(1);
  });

  it('the protocol node for a host file is created once and reused', async () => {
    const host = hostFile(4 * M, extentsProbe(4 * M, [[HOST, HOST + 8 * K]]));
    const n = node(layer(host));
    await run(n, 'mapping', 0, 1 * M);
    await run(n, 'mapping', 0, 1 * M);
    expect(n.fileNode(host)).toBe(n.fileNode(host));
    expect(n.fileNode(host).driver.file).toBe(host);
  });

  // QEMU 7.2 io.c recurses only when `(ret & BDRV_BLOCK_DATA) && !(ret & BDRV_BLOCK_ZERO) &&
  // (ret & BDRV_BLOCK_OFFSET_VALID)` (QEMU-SEMANTICS.md §1.2 step 8: "not ZERO"). A result
  // that already reads as zero must not be re-asked nor have its pnum cut by the file.
  // Latent: the qcow2 driver never sets DATA and ZERO together.
  it('RECURSE with ZERO already set does not query the host file (QEMU: "!(ret & BDRV_BLOCK_ZERO)")', async () => {
    const host = hostFile(4 * M, extentsProbe(4 * M, [[HOST, HOST + 8 * K]]));
    const { r, c } = await run(node(layer(host, Z)), 'mapping', 0, 1 * M);
    expect(host.probes).toEqual([]);
    expect(c.driverCalls).toBe(1);
    expect(r).toEqual({ flags: D | OV | Z | A, pnum: 64 * K, map: HOST, file: host });
  });
});
