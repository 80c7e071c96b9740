/**
 * The library's entry point: an opened image chain with block-status queries in either
 * mode, allocation queries, extent iteration, info and work counters.
 *
 * ```ts
 * await using img = await openImage('disk.qcow2');
 * for await (const e of img.extents({ mode: 'allocation' })) console.log(e);
 * ```
 */
import { InvalidArgumentError } from './errors.js';
import {
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_EOF,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_ZERO,
  type StatusMode,
} from './formats/driver.js';
import type { RandomAccessFile } from './io/random-access-file.js';
import { blockStatusAbove, type ChainAnswer } from './status/above.js';
import type { ChainNode } from './status/chain-node.js';
import { imageInfo, type ImageInfo } from './status/image-info.js';
import { mapEntries, type MapEntry } from './status/map-entries.js';
import type { StatusCounters } from './status/one-layer.js';
import { openChain, type ChainOptions } from './status/open-chain.js';
import { Qcow2Driver } from './formats/qcow2/qcow2-driver.js';
import { createRequire } from 'node:module';
import type { Readable } from 'node:stream';
import {
  contentRunBatches,
  contentRuns,
  dataExtents,
  readChunks,
  sourcedRunBatches,
  type ContentRun,
  type DataExtent,
  type DataExtentOptions,
  type SourcedRun,
} from './status/data-extents.js';
import { planChain, readChain, type ReadSink } from './status/read.js';
import { canWalkFlat, flatMapFileName, walkFlatMap, type MapBatchSink } from './status/flat-map.js';
import type { MapBatch } from './status/map-batch.js';
import { changedRuns, dirtyRuns, listBitmaps, type BitmapInfo, type ChangedRun } from './status/bitmap-status.js';
import type { DirtyRun } from './formats/qcow2/bitmap-table.js';
import { listSnapshots } from './status/snapshot-list.js';
import type { SnapshotInfo } from './status/image-info.js';
import { statSync } from 'node:fs';
import { IoError } from './errors.js';

async function statIdentity(path: string): Promise<{ dev: bigint; ino: bigint }> {
  try {
    const st = statSync(path, { bigint: true });
    return { dev: st.dev, ino: st.ino };
  } catch (e) {
    throw new IoError('IO_OPEN', `cannot open '${path}': ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { file: path, cause: e });
  }
}

/** Options of {@link openImage}. */
export type OpenOptions = ChainOptions;

/** One block-status answer, decoded. */
export interface BlockStatus {
  /** Guest offset the answer starts at. */
  readonly offset: number;
  /** Bytes covered (may be less than asked; never more). */
  readonly length: number;
  /** Bytes are read from the answering layer's storage. */
  readonly data: boolean;
  /** The range reads as zeroes. */
  readonly zero: boolean;
  /** The answering layer decides the content (QEMU ALLOCATED). */
  readonly allocated: boolean;
  /** The range runs to the end of the image. */
  readonly eof: boolean;
  /** Host offset of `offset` in `file`, when known. */
  readonly hostOffset: number | null;
  /** The host file's name, when the host offset is known. */
  readonly file: string | null;
  /** Index of the answering layer (0 = top), as QEMU's depth − 1; the last visited layer when unallocated. */
  readonly depth: number;
  /** Raw BDRV_BLOCK_* flags. */
  readonly flags: number;
}

/** An extent of an allocation map (`--mode=allocation`). */
export interface AllocationExtent {
  readonly start: number;
  readonly length: number;
  /** The layer that decides the content (0 = top); when not present, the bottom layer's index. */
  readonly depth: number;
  /** Some layer of the chain decides the content. */
  readonly present: boolean;
}

/** Work done so far, summed over every file of the chain. */
export interface WorkCounters {
  /** Calls into format drivers. */
  readonly driverCalls: number;
  /** SEEK_DATA/SEEK_HOLE system calls. */
  readonly holeProbes: number;
  /** Positioned reads. */
  readonly reads: number;
  /** Bytes read (metadata: vdisk reads no guest data for status queries). */
  readonly metadataBytesRead: number;
}

/** Options of {@link Image.extents}. */
export interface ExtentOptions {
  /** First guest offset (default 0). */
  readonly start?: number;
  /** Maximum bytes (default: to the end). */
  readonly length?: number;
}

/** An opened image and its chain. */
export class Image implements AsyncDisposable {
  private readonly statusCounters: StatusCounters = { driverCalls: 0 };
  private closed = false;

  private constructor(
    /** The top layer; `.backing` links down the chain. */
    readonly top: ChainNode,
  ) {}

  /** Opens `path` (see {@link openImage}). */
  static async open(path: string, options: OpenOptions = {}): Promise<Image> {
    return new Image(await openChain(path, options));
  }

  /** Virtual size in bytes (as QEMU's block layer sees it: whole 512-byte sectors). */
  get virtualSize(): number {
    return this.top.driver.length;
  }

  /** The layers, top first. */
  get layers(): ChainNode[] {
    return [...this.top.layers()];
  }

  /** `qemu-img info` facts of the top layer. */
  info(): Promise<ImageInfo> {
    return imageInfo(this.top);
  }

  /** Status of the top layer alone (QEMU `bdrv_block_status`). Default mode: mapping. */
  async blockStatus(offset: number, bytes: number, mode: StatusMode = 'mapping'): Promise<BlockStatus> {
    this.checkRange(offset, bytes);
    return this.decode(offset, await blockStatusAbove(this.top, this.top.backing, false, mode, offset, bytes, this.statusCounters));
  }

  /**
   * Status over the chain down to `base` (a layer index, exclusive; null: the whole chain)
   * (QEMU `bdrv_block_status_above`). Default mode: mapping.
   */
  async blockStatusAbove(base: number | null, offset: number, bytes: number, mode: StatusMode = 'mapping'): Promise<BlockStatus> {
    this.checkRange(offset, bytes);
    const b = this.layerAt(base);
    return this.decode(offset, await blockStatusAbove(this.top, b, false, mode, offset, bytes, this.statusCounters));
  }

  /** Whether the top layer allocates the range's start, and for how many bytes that holds (QEMU `bdrv_is_allocated`). */
  async isAllocated(offset: number, bytes: number): Promise<{ allocated: boolean; length: number }> {
    this.checkRange(offset, bytes);
    const r = await blockStatusAbove(this.top, this.top, true, 'allocation', offset, bytes, this.statusCounters);
    return { allocated: (r.flags & BDRV_BLOCK_ALLOCATED) !== 0, length: r.pnum };
  }

  /**
   * QEMU `bdrv_is_allocated_above(top, base, includeBase)`: the depth (1 = top) of the layer
   * that allocates the range's start, or 0 when no layer above `base` (or down to it, with
   * `includeBase`) does; and for how many bytes the answer holds. `base` is a layer index,
   * null for the whole chain. Never probes for holes.
   */
  async isAllocatedAbove(
    base: number | null,
    includeBase: boolean,
    offset: number,
    bytes: number,
  ): Promise<{ depth: number; length: number }> {
    this.checkRange(offset, bytes);
    const b = this.layerAt(base);
    if (includeBase && b === null) {
      throw new InvalidArgumentError('ARG_INCLUDE_BASE', 'includeBase needs a base layer', { field: 'includeBase' });
    }
    const r = await blockStatusAbove(this.top, b, includeBase, 'allocation', offset, bytes, this.statusCounters);
    return { depth: (r.flags & BDRV_BLOCK_ALLOCATED) !== 0 ? r.depth : 0, length: r.pnum };
  }

  /** Merged mapping extents, exactly as `qemu-img map --output=json` lists them. */
  async *mapExtents(options: ExtentOptions = {}): AsyncGenerator<MapEntry> {
    const { start, end } = this.span(options);
    for await (const batch of mapEntries(this.top, { start, end, human: false }, this.statusCounters)) yield* batch;
  }

  /**
   * The JSON map walk without per-entry objects, for chains of qcow2 layers without
   * encryption: `sink` gets `batch` filled with the next merged entries, in order, until the
   * last one. Returns false, doing nothing, when the chain is not of that kind (use
   * {@link Image.mapEntryBatches}).
   */
  async walkFlatMap(options: ExtentOptions, batch: MapBatch, sink: MapBatchSink): Promise<boolean> {
    if (!this.canWalkFlat) return false;
    const { start, end } = this.span(options);
    await walkFlatMap(this.top, start, end, this.statusCounters, batch, sink);
    return true;
  }

  /** Whether {@link walkFlatMap} serves this chain (qcow2 layers with byte alignment, all opened). */
  get canWalkFlat(): boolean {
    return canWalkFlat(this.top);
  }

  /** The host file name of {@link walkFlatMap}'s entries from layer `depth` that have an offset. */
  flatMapFileName(depth: number): string {
    return flatMapFileName(this.top, depth);
  }

  /** Batches of `qemu-img map` entries (human output merges more: `human: true`). */
  mapEntryBatches(options: ExtentOptions & { human?: boolean } = {}): AsyncGenerator<MapEntry[]> {
    const { start, end } = this.span(options);
    return mapEntries(this.top, { start, end, human: options.human ?? false }, this.statusCounters);
  }

  /**
   * Merged allocation extents over the whole chain (QEMU `bdrv_is_allocated_above` with no
   * base, as `qemu:allocation-depth` reports it). No hole probes are made.
   *
   * With `base` (a layer index), only the layers above it count (`bdrv_is_allocated_above(top,
   * base, false)`): `present` marks what those layers changed over the base, the input of an
   * incremental backup over external snapshots; where nothing above changed, `depth` is the
   * base's index.
   */
  async *allocationExtents(options: ExtentOptions & { base?: number | null } = {}): AsyncGenerator<AllocationExtent> {
    const { start, end } = this.span(options);
    const base = this.layerAt(options.base ?? null);
    const bottom = base === null ? this.layers.length - 1 : base.index;
    let cur: { start: number; length: number; depth: number; present: boolean } | null = null;
    let offset = start;
    while (offset < end) {
      let r = blockStatusAbove(this.top, base, false, 'allocation', offset, end - offset, this.statusCounters);
      if (r instanceof Promise) r = await r;
      const present = (r.flags & BDRV_BLOCK_ALLOCATED) !== 0;
      const depth = present ? r.depth - 1 : bottom;
      if (cur !== null && cur.present === present && cur.depth === depth) {
        cur.length += r.pnum;
      } else {
        if (cur !== null) yield cur;
        cur = { start: offset, length: r.pnum, depth, present };
      }
      offset += r.pnum;
    }
    if (cur !== null) yield cur;
  }

  /** The index of the layer whose file is `path` (same device and inode), or null. */
  async layerIndexOf(path: string): Promise<number | null> {
    const st = await statIdentity(path);
    for (const l of this.layers) {
      const id = l.driver.file.identity();
      if (id.dev === st.dev && id.ino === st.ino) return l.index;
    }
    return null;
  }

  /** The internal snapshots of the top layer, as `qemu-img snapshot -l` lists them (none for raw images). */
  snapshots(): Promise<SnapshotInfo[]> {
    return listSnapshots(this.top);
  }

  /** The persistent dirty bitmaps of the top layer (none for raw or v2 images). */
  bitmaps(): Promise<BitmapInfo[]> {
    return listBitmaps(this.top);
  }

  /**
   * Merged dirty and clean runs of the top layer's bitmap `name`, covering the range (what
   * `qemu-nbd -B NAME` reports as `qemu:dirty-bitmap:NAME`). An in-use bitmap fails with
   * `QCOW2_BITMAP_INCONSISTENT`; an unknown name with `ARG_BITMAP_NOT_FOUND`.
   */
  dirtyExtents(name: string, options: ExtentOptions = {}): AsyncGenerator<DirtyRun> {
    const { start, end } = this.span(options);
    return dirtyRuns(this.top, name, start, end);
  }

  /**
   * Like {@link dirtyExtents}, with dirty runs split by what the chain reads now: dirty runs
   * that read as zero (trimmed, discarded, zeroed) carry `zero: true` and need no data copy.
   */
  changedExtents(name: string, options: ExtentOptions = {}): AsyncGenerator<ChangedRun> {
    const { start, end } = this.span(options);
    return changedRuns(this.top, name, start, end, this.statusCounters);
  }

  /**
   * Reads `length` guest bytes at `offset` through the chain, into `into` at `intoOffset`
   * or a new buffer. The range must lie within the virtual size.
   */
  async read(offset: number, length: number, into?: Uint8Array, intoOffset = 0): Promise<Uint8Array> {
    this.checkRange(offset, length);
    if (offset + length > this.virtualSize) {
      throw new InvalidArgumentError(
        'ARG_RANGE_PAST_END',
        `read of ${length} bytes at ${offset} goes past the virtual size ${this.virtualSize}`,
        { field: 'length', value: offset + length, limit: this.virtualSize },
      );
    }
    const dst = into ?? new Uint8Array(length);
    if (intoOffset < 0 || intoOffset + length > dst.length) {
      throw new InvalidArgumentError('ARG_BUFFER', `buffer of ${dst.length} bytes cannot take ${length} bytes at ${intoOffset}`, {
        field: 'into', value: dst.length, limit: intoOffset + length,
      });
    }
    await readChain(this.top, offset, dst, intoOffset, length);
    return dst;
  }

  /**
   * Walks the runs of `[offset, offset + length)` (within the virtual size) without reading
   * them, giving each to `sink` with its destination: its offset from `offset`, plus `at`
   * (for engines that read elsewhere: the conversion's worker threads, several ranges in one
   * buffer).
   */
  async planRead(offset: number, length: number, sink: ReadSink, at = 0): Promise<void> {
    this.checkRange(offset, length);
    await planChain(this.top, offset, at, length, sink);
  }

  /**
   * A Node `Readable` of the guest bytes in `[start, start + length)` (default: the whole
   * disk), read in chunks with a few reads in flight.
   */
  createReadStream(options: ExtentOptions & { chunkSize?: number; readAhead?: number } = {}): Readable {
    const { start, end } = this.span(options);
    const top = this.top;
    async function* chunks(): AsyncGenerator<Buffer> {
      for await (const c of readChunks(top, [{ start, length: end - start }], options)) yield c.data;
    }
    // node:stream is loaded here, not at start-up (2 ms of every start otherwise).
    const { Readable: ReadableClass } = createRequire(import.meta.url)('node:stream') as typeof import('node:stream');
    return ReadableClass.from(chunks(), { objectMode: false });
  }

  /**
   * The guest data that does not read as zero, as `{ start, length, data }` chunks in
   * order (what a backup tool copies); zero ranges are skipped. Memory stays bounded by
   * `chunkSize × readAhead`.
   */
  dataExtents(options: ExtentOptions & DataExtentOptions = {}): AsyncGenerator<DataExtent> {
    const { start, end } = this.span(options);
    return dataExtents(this.top, start, end, this.statusCounters, options);
  }

  /** {@link contentRuns} a batch at a time (one await per batch; for consumers of many runs). */
  contentRunBatches(options: ExtentOptions = {}): AsyncGenerator<readonly ContentRun[]> {
    const { start, end } = this.span(options);
    return contentRunBatches(this.top, start, end, this.statusCounters);
  }

  /**
   * {@link contentRunBatches} with the file and host offset of the runs of plain stored
   * data, where the status walk knows them (for the conversion: those runs need no second
   * walk through the chain to plan their reads).
   */
  sourcedRunBatches(options: ExtentOptions = {}): AsyncGenerator<readonly SourcedRun[]> {
    const { start, end } = this.span(options);
    return sourcedRunBatches(this.top, start, end, this.statusCounters);
  }

  /** Merged runs over the chain marking where it reads as zero (mapping mode). */
  contentRuns(options: ExtentOptions = {}): AsyncGenerator<ContentRun> {
    const { start, end } = this.span(options);
    return contentRuns(this.top, start, end, this.statusCounters);
  }

  /** Work done so far. */
  counters(): WorkCounters {
    let holeProbes = 0;
    let reads = 0;
    let bytes = 0;
    for (const f of this.files()) {
      holeProbes += f.counters.holeProbes;
      reads += f.counters.reads;
      bytes += f.counters.bytesRead;
    }
    return { driverCalls: this.statusCounters.driverCalls, holeProbes, reads, metadataBytesRead: bytes };
  }

  /** Closes every file of the chain. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.files()].map((f) => f.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  private *files(): Generator<RandomAccessFile> {
    for (const n of this.top.layers()) {
      yield n.driver.file;
      if (n.driver instanceof Qcow2Driver && n.driver.externalDataFile !== null) yield n.driver.externalDataFile;
    }
  }

  private layerAt(index: number | null): ChainNode | null {
    if (index === null) return null;
    const l = this.layers[index];
    if (l === undefined) {
      throw new InvalidArgumentError('ARG_BASE_LAYER', `base layer ${index} does not exist (the chain has ${this.layers.length} layers)`, {
        field: 'base', value: index, limit: this.layers.length - 1,
      });
    }
    return l;
  }

  private span(options: ExtentOptions): { start: number; end: number } {
    const start = options.start ?? 0;
    if (!Number.isSafeInteger(start) || start < 0) {
      throw new InvalidArgumentError('ARG_START', `start offset ${start} must be a non-negative integer`, { field: 'start', value: start });
    }
    let end = this.virtualSize;
    if (options.length !== undefined) {
      if (!Number.isSafeInteger(options.length) || options.length < 0) {
        throw new InvalidArgumentError('ARG_LENGTH', `length ${options.length} must be a non-negative integer`, { field: 'length', value: options.length });
      }
      end = Math.min(end, start + options.length);
    }
    return { start, end };
  }

  private checkRange(offset: number, bytes: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(bytes) || bytes < 0) {
      throw new InvalidArgumentError('ARG_RANGE', `range (${offset}, ${bytes}) must be non-negative integers`, {
        field: 'offset', value: offset,
      });
    }
  }

  private decode(offset: number, r: ChainAnswer): BlockStatus {
    const ov = (r.flags & BDRV_BLOCK_OFFSET_VALID) !== 0;
    return {
      offset,
      length: r.pnum,
      data: (r.flags & BDRV_BLOCK_DATA) !== 0,
      zero: (r.flags & BDRV_BLOCK_ZERO) !== 0,
      allocated: (r.flags & BDRV_BLOCK_ALLOCATED) !== 0,
      eof: (r.flags & BDRV_BLOCK_EOF) !== 0,
      hostOffset: ov ? r.map : null,
      file: ov && r.file !== null ? r.file.path : null,
      depth: Math.max(0, r.depth - 1),
      flags: r.flags,
    };
  }
}

/**
 * Opens an image and, under the open policy, its backing chain and data files.
 * Errors are {@link VdiskError}s with stable codes.
 */
export function openImage(path: string, options: OpenOptions = {}): Promise<Image> {
  return Image.open(path, options);
}
