/**
 * The raw format over a host file, with file-posix's block status (`raw_co_block_status`).
 *
 * In `mapping` mode one SEEK_DATA/SEEK_HOLE probe (`find_allocation`) decides each answer:
 * data runs to the next hole, holes to the next data, the trailing hole (ENXIO) and
 * anything the probe cannot tell as QEMU does. In `allocation` mode nothing is probed: the
 * whole request is data. Every answer carries OFFSET_VALID with `map = offset` (raw is
 * an identity mapping). The length is the file size rounded up to 512 bytes, so the tail
 * of an unaligned file reads as a zero run (trailing hole).
 */
import type { RandomAccessFile } from '../../io/random-access-file.js';
import {
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_ZERO,
  type BlockDriver,
  type DriverStatus,
  type ReadExtent,
  type StatusMode,
} from '../driver.js';

/** Rounds a byte count up to whole 512-byte sectors (QEMU keeps node sizes in sectors). */
export function roundUpToSector(n: number): number {
  return Math.ceil(n / 512) * 512;
}

/** A raw image, or the protocol node under a qcow2 image. */
export class RawDriver implements BlockDriver {
  readonly format = 'raw' as const;
  readonly alignment = 1;
  readonly supportsBacking = false;
  readonly backing = null;
  readonly dataFileName = null;
  readonly length: number;

  constructor(readonly file: RandomAccessFile) {
    this.length = roundUpToSector(file.size);
  }

  blockStatus(offset: number, bytes: number, mode: StatusMode): DriverStatus {
    const file = this.file;
    if (mode === 'allocation') {
      return { flags: BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID, pnum: bytes, map: offset, file };
    }
    const probe = file.probeAllocation(offset);
    let flags: number;
    let pnum: number;
    switch (probe.kind) {
      case 'trailing-hole':
        flags = BDRV_BLOCK_ZERO;
        pnum = bytes;
        break;
      case 'unknown':
        flags = BDRV_BLOCK_DATA;
        pnum = bytes;
        break;
      case 'data':
        flags = BDRV_BLOCK_DATA;
        pnum = probe.end - offset;
        break;
      case 'hole':
        flags = BDRV_BLOCK_ZERO;
        pnum = probe.end - offset;
        break;
    }
    return { flags: flags | BDRV_BLOCK_OFFSET_VALID, pnum, map: offset, file };
  }

  readExtent(offset: number, bytes: number): ReadExtent {
    // Past the real end of the file (up to the 512-byte rounded length) reads as zero.
    const inFile = this.file.size - offset;
    if (inFile <= 0) return { kind: 'zero', length: bytes };
    return { kind: 'data', length: Math.min(bytes, inFile), file: this.file, hostOffset: offset };
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
