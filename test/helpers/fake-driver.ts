/**
 * A fake format driver for status-layer tests: answers block status from fixed segments,
 * records its calls, and can answer asynchronously.
 */
import {
  BDRV_BLOCK_OFFSET_VALID,
  type BlockDriver,
  type DriverStatus,
  type FormatName,
  type StatusMode,
} from '../../src/formats/driver.js';
import type { RandomAccessFile } from '../../src/io/random-access-file.js';
import { MemoryFile } from './memory-file.js';

const OV = BDRV_BLOCK_OFFSET_VALID;

/** One run of a fake layer: `[start, end)` answered with `flags`; `map` is the host offset at `start`. */
export interface Seg {
  readonly start: number;
  readonly end: number;
  readonly flags: number;
  readonly map?: number;
  readonly file?: RandomAccessFile;
}

/** A fake driver answering from segments; records calls; optionally asynchronous. */
export class FakeDriver implements BlockDriver {
  readonly format: FormatName = 'qcow2';
  readonly backing = null;
  readonly dataFileName = null;
  readonly calls: Array<{ offset: number; bytes: number; mode: StatusMode }> = [];
  readonly file: RandomAccessFile;
  readonly alignment: number;
  readonly supportsBacking: boolean;

  constructor(
    readonly length: number,
    private readonly segs: readonly Seg[],
    o: { alignment?: number; supportsBacking?: boolean; async?: boolean; file?: RandomAccessFile } = {},
  ) {
    this.alignment = o.alignment ?? 1;
    this.supportsBacking = o.supportsBacking ?? true;
    this.file = o.file ?? new MemoryFile(new Uint8Array(0), { path: 'top.qcow2' });
    this.async = o.async ?? false;
  }

  private readonly async: boolean;

  blockStatus(offset: number, bytes: number, mode: StatusMode): DriverStatus | Promise<DriverStatus> {
    this.calls.push({ offset, bytes, mode });
    const s = this.segs.find((x) => offset >= x.start && offset < x.end);
    if (s === undefined) throw new Error(`no segment at ${offset}`);
    const r: DriverStatus = {
      flags: s.flags,
      pnum: s.end - offset,
      map: (s.flags & OV) !== 0 ? (s.map ?? 0) + (offset - s.start) : 0,
      file: (s.flags & OV) !== 0 ? (s.file ?? this.file) : null,
    };
    return this.async ? Promise.resolve(r) : r;
  }

  /** Not used by the status layer. */
  readExtent(): never {
    throw new Error('FakeDriver.readExtent is not used by the status layer');
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
