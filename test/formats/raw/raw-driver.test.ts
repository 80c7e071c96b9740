/**
 * The raw driver (src/formats/raw/raw-driver.ts) against QEMU's file-posix
 * `raw_co_block_status` (QEMU-SEMANTICS.md §5.2, §5.4): allocation mode answers the whole
 * request as data without probing; mapping mode turns each probe kind into DATA or ZERO
 * with the right length; every answer is OFFSET_VALID with map = offset; the length is the
 * file size rounded up to 512.
 */
import { describe, expect, it } from 'vitest';
import { BDRV_BLOCK_DATA, BDRV_BLOCK_OFFSET_VALID, BDRV_BLOCK_ZERO } from '../../../src/formats/driver.js';
import { RawDriver, roundUpToSector } from '../../../src/formats/raw/raw-driver.js';
import type { AllocationProbe } from '../../../src/io/random-access-file.js';
import { MemoryFile, extentsProbe } from '../../helpers/memory-file.js';

const DATA = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
const ZERO = BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID;

const fileOf = (size: number, probe?: (o: number) => AllocationProbe) =>
  new MemoryFile(new Uint8Array(size), probe === undefined ? { path: 'r.raw' } : { path: 'r.raw', probe });

describe('roundUpToSector / length', () => {
  it.each([
    [0, 0],
    [1, 512],
    [511, 512],
    [512, 512],
    [1000, 1024],
    [1048576, 1048576],
    [2 ** 40 + 1, 2 ** 40 + 512],
  ])('%d -> %d', (n, r) => {
    expect(roundUpToSector(n)).toBe(r);
  });

  it('the driver length is the file size rounded up to 512 (a 1000-byte file is 1024, E5)', () => {
    expect(new RawDriver(fileOf(1000)).length).toBe(1024);
    expect(new RawDriver(fileOf(0)).length).toBe(0);
  });

  it('static properties: raw, alignment 1, no backing, no data file', () => {
    const f = fileOf(4096);
    const d = new RawDriver(f);
    expect(d).toMatchObject({ format: 'raw', alignment: 1, supportsBacking: false, backing: null, dataFileName: null });
    expect(d.file).toBe(f);
  });
});

describe('blockStatus in allocation mode', () => {
  it('the whole request is DATA|OFFSET_VALID at map = offset, without probing', () => {
    const f = fileOf(1 << 20, () => {
      throw new Error('allocation mode must not probe');
    });
    const d = new RawDriver(f);
    expect(d.blockStatus(4096, 12345, 'allocation')).toEqual({ flags: DATA, pnum: 12345, map: 4096, file: f });
    expect(d.blockStatus(0, 1 << 20, 'allocation')).toEqual({ flags: DATA, pnum: 1 << 20, map: 0, file: f });
    expect(f.probes).toEqual([]);
  });
});

describe('blockStatus in mapping mode', () => {
  // 1 MiB file: data [192K, 196K), holes elsewhere (like E5's r2.raw).
  const size = 1 << 20;
  const probe = extentsProbe(size, [[196608, 200704]]);

  it('in a hole: ZERO up to where data starts', () => {
    const f = fileOf(size, probe);
    expect(new RawDriver(f).blockStatus(0, size, 'mapping')).toEqual({ flags: ZERO, pnum: 196608, map: 0, file: f });
    expect(f.probes).toEqual([0]);
  });

  it('in data: DATA up to the next hole, from an unaligned offset', () => {
    const f = fileOf(size, probe);
    expect(new RawDriver(f).blockStatus(198000, 3000, 'mapping')).toEqual({ flags: DATA, pnum: 2704, map: 198000, file: f });
  });

  it('in the trailing hole (ENXIO): ZERO for the whole request', () => {
    const f = fileOf(size, probe);
    expect(new RawDriver(f).blockStatus(200704, size - 200704, 'mapping')).toEqual({
      flags: ZERO,
      pnum: size - 200704,
      map: 200704,
      file: f,
    });
  });

  it('unknown (no binding, or lseek could not tell): DATA for the whole request', () => {
    const f = fileOf(size);
    expect(new RawDriver(f).blockStatus(4096, 8192, 'mapping')).toEqual({ flags: DATA, pnum: 8192, map: 4096, file: f });
    expect(f.probes).toEqual([4096]);
  });

  it('the answer may run past the request (bytes is a hint)', () => {
    const f = fileOf(size, probe);
    expect(new RawDriver(f).blockStatus(0, 512, 'mapping').pnum).toBe(196608);
  });

  it('an unaligned EOF: data to the real end, then the tail up to the sector is a trailing hole (E5)', () => {
    const f = fileOf(1000, extentsProbe(1000, [[0, 1000]]));
    const d = new RawDriver(f);
    expect(d.blockStatus(0, 1024, 'mapping')).toEqual({ flags: DATA, pnum: 1000, map: 0, file: f });
    expect(d.blockStatus(1000, 24, 'mapping')).toEqual({ flags: ZERO, pnum: 24, map: 1000, file: f });
  });

  it('one probe per call', () => {
    const f = fileOf(size, probe);
    const d = new RawDriver(f);
    d.blockStatus(0, size, 'mapping');
    d.blockStatus(196608, size - 196608, 'mapping');
    d.blockStatus(200704, size - 200704, 'mapping');
    expect(f.probes).toEqual([0, 196608, 200704]);
  });
});

describe('close', () => {
  it('closes the file', async () => {
    const f = fileOf(512);
    await new RawDriver(f).close();
    expect(f.closeCalls).toBe(1);
  });
});
