/**
 * The qcow2 driver: opens an image (header, extensions, backing name, L1 table), and answers
 * one layer's block status the way `qcow2_co_block_status` does.
 *
 * It never opens other files: the backing file and the external data file are named here
 * and opened by `src/status` through the open policy; the data file is then attached with
 * {@link Qcow2Driver.attachDataFile}. Lookups are synchronous when the L2 table is cached.
 */
import { decodeCString, type DecodedCString } from '../../binary/c-string.js';
import { CorruptImageError, IoError, UnsupportedImageError, hex } from '../../errors.js';
import { readPreferSync, type RandomAccessFile } from '../../io/random-access-file.js';
import {
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_RECURSE,
  BDRV_BLOCK_ZERO,
  type BackingReference,
  type BlockDriver,
  type DriverStatus,
  type ReadExtent,
  type StatusMode,
} from '../driver.js';
import { CompressedReader, decodeCompressedDescriptor } from './compressed.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  CRYPT_LUKS,
  CRYPT_NONE,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2,
  MAX_BACKING_NAME,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  SUBCLUSTERS_PER_CLUSTER_EXTL2,
} from './constants.js';
import { decodeExtensions, type HeaderExtensions } from './extensions.js';
import { HEADER_PROBE_BYTES, decodeHeader, type Qcow2Header } from './header.js';
import {
  emptyRunMemo,
  getHostOffset,
  lookupHostOffset,
  type HostMapping,
  type HostMappingOut,
  type L1Words,
  type MappingGeometry,
} from './host-offset.js';
import { DEFAULT_L2_CACHE_BYTES, L2Cache, type L2Table } from './l2-cache.js';
import { scanL2Table } from './table-scan.js';
import { emptyPlainRunMemo, plainRun } from './plain-run.js';
import { SubclusterType } from './l2-entry.js';
import { RefcountReader } from './refcount.js';
import { runOpenChecks, type OpenCheckResult } from './open-checks.js';
import { compressedPayload } from './l2-table-check.js';
import type { LuksInfo } from './luks-header.js';
import type { MetadataBudget } from '../budget.js';

/** L2 tables read ahead when a status query misses the cache. */
const STATUS_READ_AHEAD = 16;

/** L2 tables read ahead by a map walk (flat-map.ts): at its start, and from where it misses. */
export const WALK_READ_AHEAD = 32;

/** Options for opening a qcow2 layer. */
export interface Qcow2OpenOptions {
  /** L2 cache budget in bytes (default 32 MiB, QEMU's default). */
  readonly l2CacheBytes?: number;
  /** The chain's metadata budget: the L1 table, refcount table, L2 index and caches are reserved in it. */
  readonly budget?: MetadataBudget;
  /** vdisk's checks beyond QEMU's, at open and on each L2 table load (open-checks.ts); default true. */
  readonly vdiskChecks?: boolean;
}

/** Decompressed clusters kept per layer: up to 8, at most 4 MiB. */
function decompressedCacheEntries(clusterSize: number): number {
  return Math.max(1, Math.min(8, Math.floor((4 * 1024 * 1024) / clusterSize)));
}

/** An open qcow2 layer. */
export class Qcow2Driver implements BlockDriver {
  readonly format = 'qcow2' as const;
  readonly supportsBacking = true;
  readonly length: number;
  readonly alignment: number;
  readonly backing: BackingReference | null;
  readonly dataFileName: string | null;
  readonly clusterSize: number;
  readonly geometry: MappingGeometry;
  private readonly l2Cache: L2Cache;
  private readonly refcounts: RefcountReader;
  private dataFile: RandomAccessFile | null = null;
  private readonly runMemo = emptyRunMemo();
  private readonly plainMemo = emptyPlainRunMemo();
  /** Recently decompressed clusters by payload host offset (a few, bounded). */
  private readonly decompressed = new Map<number, Promise<Uint8Array>>();
  private metadataPreallocation: Promise<boolean> | boolean | undefined;
  private readonly decompressedMax: number;
  /** Reads and decodes compressed clusters (on worker threads for long runs). */
  private readonly compressed: CompressedReader;
  /** The LUKS header, decoded and checked at open (crypt_method 2), else null. */
  readonly luks: LuksInfo | null;

  private constructor(
    readonly file: RandomAccessFile,
    readonly header: Qcow2Header,
    readonly extensions: HeaderExtensions,
    private readonly backingName: DecodedCString | null,
    private readonly l1: L1Words,
    options: Qcow2OpenOptions,
    private readonly checks: OpenCheckResult,
  ) {
    this.clusterSize = 2 ** header.clusterBits;
    // bs->total_sectors = size / 512: the block layer rounds a qcow2 size down to sectors.
    this.length = Number(header.size / 512n) * 512;
    this.alignment = header.cryptMethod !== CRYPT_NONE ? 512 : 1;
    this.backing = backingName === null ? null : {
      name: backingName.text, format: extensions.backingFormat, nameExact: !backingName.replaced, formatExact: extensions.backingFormatExact,
    };
    this.luks = checks.luks;
    const hasDataFile = (header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
    this.dataFileName = hasDataFile ? extensions.dataFile : null;
    const extendedL2 = (header.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
    const spc = extendedL2 ? SUBCLUSTERS_PER_CLUSTER_EXTL2 : 1;
    this.geometry = {
      file: file.path,
      version: header.version,
      clusterBits: header.clusterBits,
      clusterSize: this.clusterSize,
      l2Entries: this.clusterSize / (extendedL2 ? 16 : 8),
      extendedL2,
      subclustersPerCluster: spc,
      subclusterSize: this.clusterSize / spc,
      hasDataFile,
    };
    let l2Bytes = options.l2CacheBytes ?? DEFAULT_L2_CACHE_BYTES;
    if (options.budget !== undefined) {
      l2Bytes = options.budget.cacheSize(l2Bytes, 2 * this.clusterSize);
      options.budget.reserve(l2Bytes, 'L2 cache', file.path);
    }
    const checker = checks.l2Checker;
    const cs = this.clusterSize;
    this.l2Cache = new L2Cache(file, cs, l2Bytes, (o, w) => {
      const runs = extendedL2 ? null : scanL2Table(w, cs, hasDataFile);
      checker?.check(o, w, runs);
      return runs;
    });
    this.decompressedMax = decompressedCacheEntries(this.clusterSize);
    this.compressed = new CompressedReader(file, this.clusterSize, header.compressionType);
    this.refcounts = new RefcountReader(
      file,
      header.clusterBits,
      header.refcountOrder,
      header.refcountTableOffset,
      header.refcountTableClusters,
      checks.refcountTable,
    );
  }

  /** Opens and validates a qcow2 image on `file`. */
  static async open(file: RandomAccessFile, options: Qcow2OpenOptions = {}): Promise<Qcow2Driver> {
    const probe = new Uint8Array(Math.min(HEADER_PROBE_BYTES, file.size));
    // Open-time reads are waited for at once: synchronous when the file allows.
    await readPreferSync(file, probe, 0, probe.length);
    // The first cluster holds the extension area (feature names for the header checks).
    const bits = probe.length >= 24 ? new DataView(probe.buffer).getUint32(20) : 0;
    let head = probe;
    if (bits >= MIN_CLUSTER_BITS && bits <= MAX_CLUSTER_BITS && file.size > probe.length) {
      head = new Uint8Array(Math.min(2 ** bits, file.size));
      await readPreferSync(file, head, 0, head.length);
    }
    const header = decodeHeader(head, file.path);

    const l1Bytes = header.l1Size * 8;
    if (header.l1TableOffset + l1Bytes > file.size && l1Bytes > 0) {
      throw new CorruptImageError(
        'QCOW2_L1_BEYOND_EOF',
        `active L1 table (${l1Bytes} bytes at ${header.l1TableOffset}) runs past the end of the file (${file.size} bytes)`,
        { file: file.path, field: 'l1_table_offset', value: header.l1TableOffset, limit: file.size },
      );
    }
    options.budget?.reserve(l1Bytes, 'active L1 table', file.path);
    const l1Buf = Buffer.allocUnsafeSlow(l1Bytes);
    if (l1Bytes > 0) await readPreferSync(file, l1Buf, header.l1TableOffset, l1Bytes);
    l1Buf.swap32();
    const l1 = new Uint32Array(l1Buf.buffer, l1Buf.byteOffset, l1Bytes / 4);

    const extensions = decodeExtensions(head, header, file.path);
    if (header.cryptMethod === CRYPT_LUKS && extensions.crypto === null) {
      throw new CorruptImageError('QCOW2_MISSING_CRYPTO_HEADER', 'missing CRYPTO header for crypt method 2 (luks)', {
        file: file.path, field: 'crypto header extension', value: header.cryptMethod,
      });
    }
    const hasDataFile = (header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
    if (hasDataFile && extensions.dataFile === null) {
      throw new CorruptImageError('QCOW2_DATA_FILE_MISSING', `'data-file' is required for this image: incompatible bit 2 is set but no data file name is recorded`, {
        file: file.path, field: 'external data file extension',
      });
    }
    if (!hasDataFile && (header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n) {
      throw new CorruptImageError('QCOW2_DATA_FILE_RAW', 'data-file-raw requires a data file (autoclear bit 1 set without incompatible bit 2)', {
        file: file.path, field: 'autoclear_features', value: header.autoclearFeatures,
      });
    }
    const backingName = await readBackingName(file, header, head);
    const checks = await runOpenChecks({
      file, header, extensions, l1, length: Number(header.size / 512n) * 512,
      vdiskChecks: options.vdiskChecks ?? true, budget: options.budget ?? null,
    });
    return new Qcow2Driver(file, header, extensions, backingName, l1, options, checks);
  }

  /** Whether the image uses an external data file. */
  get hasDataFile(): boolean {
    return this.geometry.hasDataFile;
  }

  /** Whether the data file is raw (autoclear bit 1). */
  get dataFileRaw(): boolean {
    return (this.header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
  }

  /** Gives the driver its external data file, opened by the chain opener under the policy. */
  attachDataFile(file: RandomAccessFile): void {
    this.dataFile = file;
  }

  /**
   * A view of this image through another L1 table (an internal snapshot's; QEMU
   * `qcow2_snapshot_load_tmp`): same file, header, backing and data file, and, as in QEMU,
   * the active virtual size. The view shares the file: close only one of the two.
   */
  withL1(l1: L1Words, options: Qcow2OpenOptions = {}): Qcow2Driver {
    const checker = this.checks.l2Checker?.forL1(l1) ?? null;
    const view = new Qcow2Driver(this.file, this.header, this.extensions, this.backingName, l1, options, { ...this.checks, l2Checker: checker });
    if (this.dataFile !== null) view.attachDataFile(this.dataFile);
    return view;
  }

  /** The attached external data file, if any. */
  get externalDataFile(): RandomAccessFile | null {
    return this.dataFile;
  }

  /**
   * The file the host offsets of this image's clusters point into: the external data file
   * (which must be attached), else the image's own file.
   */
  get hostFile(): RandomAccessFile {
    return this.hasDataFile ? this.requireDataFile() : this.file;
  }

  /** Number of L2 tables read so far. */
  get l2Loads(): number {
    return this.l2Cache.loads;
  }

  blockStatus(offset: number, bytes: number, mode: StatusMode): DriverStatus | Promise<DriverStatus> {
    if (mode === 'mapping' && typeof this.metadataPreallocation !== 'boolean') {
      return this.detectMetadataPreallocation().then(() => this.blockStatus(offset, bytes, mode));
    }
    const m = getHostOffset(this.geometry, this.l1, (o) => this.l2Cache.peek(o), offset, bytes, this.runMemo);
    if ('needL2' in m) {
      if (this.loadL2Sync(m.needL2)) return this.blockStatus(offset, bytes, mode);
      // Status walks go forward: read the next tables along with this one.
      this.prefetchL2(offset, STATUS_READ_AHEAD);
      return this.loadL2(m.needL2).then(() => this.blockStatus(offset, bytes, mode));
    }
    return this.toStatus(m, mode);
  }

  /** The mapping of one run (for readers): loads L2 tables as needed. */
  async mapping(offset: number, bytes: number): Promise<HostMapping> {
    for (;;) {
      const m = getHostOffset(this.geometry, this.l1, (o) => this.l2Cache.peek(o), offset, bytes);
      if (!('needL2' in m)) return m;
      await this.loadL2(m.needL2);
    }
  }

  readExtent(offset: number, bytes: number): ReadExtent | Promise<ReadExtent> {
    const m = getHostOffset(this.geometry, this.l1, (o) => this.l2Cache.peek(o), offset, bytes, this.runMemo);
    if ('needL2' in m) return this.loadL2(m.needL2).then(() => this.readExtent(offset, bytes));
    switch (m.type) {
      case SubclusterType.ZeroPlain:
      case SubclusterType.ZeroAlloc:
        return { kind: 'zero', length: m.bytes };
      case SubclusterType.UnallocatedPlain:
      case SubclusterType.UnallocatedAlloc:
        return { kind: 'backing', length: m.bytes };
      case SubclusterType.Compressed: {
        this.refuseEncrypted(offset);
        const d = decodeCompressedDescriptor(m.entryHi, m.entryLo, this.header.clusterBits);
        const offsetInCluster = offset % this.clusterSize;
        if (d.hostOffset >= this.file.size) throw compressedBeyondEof(this.file, m.entryHi, m.entryLo, this.header.clusterBits, offset - offsetInCluster);
        return {
          kind: 'compressed',
          length: m.bytes,
          offsetInCluster,
          clusterSize: this.clusterSize,
          cluster: () => this.decompress(d.hostOffset, d.length, offset - offsetInCluster),
          payload: {
            file: this.file,
            hostOffset: d.hostOffset,
            length: Math.min(d.length, this.file.size - d.hostOffset),
            compressionType: this.header.compressionType,
            dataError: (message) => this.compressed.dataError(d.hostOffset, d.length, offset - offsetInCluster, message),
          },
          clusterInto: (dst, at) => {
            const cached = this.decompressed.get(d.hostOffset);
            if (cached !== undefined) return cached.then((c) => dst.set(c, at));
            return this.compressed.readInto(d.hostOffset, d.length, offset - offsetInCluster, dst, at);
          },
        };
      }
      default: {
        this.refuseEncrypted(offset);
        const file = this.hasDataFile ? this.requireDataFile() : this.file;
        const end = m.hostOffset + Math.min(m.bytes, bytes);
        if (end > file.size) {
          throw new CorruptImageError(
            'QCOW2_DATA_BEYOND_EOF',
            `data for guest offset ${offset} lies at host ${hex(m.hostOffset)}..${hex(end)}, past the end of '${file.path}' (${file.size} bytes)`,
            { file: file.path, field: 'L2 entry', value: m.hostOffset, limit: file.size },
          );
        }
        return { kind: 'data', length: m.bytes, file, hostOffset: m.hostOffset };
      }
    }
  }

  private refuseEncrypted(offset: number): void {
    if (this.header.cryptMethod !== CRYPT_NONE) {
      throw new UnsupportedImageError(
        'QCOW2_ENCRYPTED_DATA',
        `reading encrypted data is not supported (crypt_method ${this.header.cryptMethod}, guest offset ${offset}); map and info work without a key`,
        { file: this.file.path, field: 'crypt_method', value: this.header.cryptMethod },
      );
    }
  }

  /** The decompressed cluster whose payload is at `hostOffset` (cached: a few clusters). */
  private decompress(hostOffset: number, length: number, guestCluster: number): Promise<Uint8Array> {
    let p = this.decompressed.get(hostOffset);
    if (p !== undefined) return p;
    p = (async () => {
      if (hostOffset >= this.file.size) {
        throw new CorruptImageError(
          'QCOW2_COMPRESSED_BEYOND_EOF',
          `compressed cluster at guest offset ${guestCluster} has its payload at host ${hex(hostOffset)}, past the end of the file (${this.file.size} bytes)`,
          { file: this.file.path, field: 'compressed descriptor', value: hostOffset, limit: this.file.size },
        );
      }
      return this.compressed.read(hostOffset, length, guestCluster);
    })();
    this.decompressed.set(hostOffset, p);
    p.catch(() => this.decompressed.delete(hostOffset));
    if (this.decompressed.size > this.decompressedMax) {
      const first = this.decompressed.keys().next();
      if (first.done !== true) this.decompressed.delete(first.value);
    }
    return p;
  }

  /**
   * The raw lookup behind `blockStatus`, into a scratch object: returns 0 when `out` holds
   * the run at `offset`, or the offset of an L2 table to load with {@link loadL2} first.
   */
  lookupInto(offset: number, bytes: number, out: HostMappingOut): number {
    return lookupHostOffset(this.geometry, this.l1, this.peekL2, offset, bytes, this.runMemo, out);
  }

  /**
   * The unallocated (> 0) or zero (< 0) plain run at `offset` in bytes, when the entry there
   * is one and its L2 table is cached; else 0 (use {@link lookupInto}). See plain-run.ts.
   */
  plainRun(offset: number, bytes: number): number {
    return plainRun(this.geometry, this.l1, this.peekL2, offset, bytes, this.plainMemo);
  }

  /** Cached L2 table lookup, bound once (no closure per lookup). */
  private readonly peekL2 = (o: number): L2Table | undefined => this.l2Cache.peek(o);

  /** Whether mapping queries ask the host file about holes (QEMU's metadata-preallocation heuristic); runs the detection once. */
  mappingRecurses(): Promise<boolean> {
    return typeof this.metadataPreallocation === 'boolean'
      ? Promise.resolve(this.metadataPreallocation)
      : this.detectMetadataPreallocation();
  }

  /** The file host offsets point into (the external data file, or the image file). */
  offsetFile(): RandomAccessFile {
    return this.hasDataFile ? this.requireDataFile() : this.file;
  }

  /** Loads (and caches) the L2 table at `l2Offset`. */
  async loadL2(l2Offset: number): Promise<void> {
    this.refuseL2BeyondEof(l2Offset);
    await this.l2Cache.load(l2Offset);
  }

  /**
   * Loads (and caches) the L2 table at `l2Offset` with a synchronous read when the file
   * allows it (a walk waits for the table anyway; this skips the thread-pool round trip).
   * Returns false, doing nothing, when it cannot: then use {@link loadL2}.
   */
  loadL2Sync(l2Offset: number): boolean {
    this.refuseL2BeyondEof(l2Offset);
    return this.l2Cache.loadSync(l2Offset) !== undefined;
  }

  /**
   * The words (native order, hi/lo per entry) of the L2 table at `l2Offset` when it is
   * cached — loaded and checked — else undefined. Valid until the next load.
   */
  cachedL2Words(l2Offset: number): Uint32Array | undefined {
    return this.l2Cache.peek(l2Offset)?.words;
  }

  /**
   * Drops the cached L2 table at `l2Offset` once a sequential walk has copied it (see
   * `L2Cache.release`); a later lookup reads it again.
   */
  releaseL2(l2Offset: number): void {
    this.l2Cache.release(l2Offset);
  }

  /** Tables in the L2 cache now. */
  get l2Cached(): number {
    return this.l2Cache.size;
  }

  /** Whether L2 tables are read synchronously (page-cache reads need no read-ahead to overlap). */
  get readsL2Sync(): boolean {
    return this.file.readSync !== undefined;
  }

  /** The active L1 table's words (native order, hi/lo per entry). Not to be modified. */
  get l1Words(): Uint32Array {
    return this.l1;
  }

  /**
   * Loads the L2 table at `l2Offset` for a walk standing at `guestOffset`: with one
   * synchronous read when the file allows it (undefined: done), else the promise of the
   * load. A table the walk's read-ahead is reading already is waited for without reading
   * further ahead (the tables after it are then read synchronously again: read-ahead from
   * there on kept a walk on thread-pool reads, W1 ~100 ms slower); otherwise the next
   * {@link WALK_READ_AHEAD} tables from `guestOffset` are read with it.
   */
  loadL2ForWalk(l2Offset: number, guestOffset: number): Promise<void> | undefined {
    if (this.loadL2Sync(l2Offset)) return undefined;
    if (!this.l2Loading(l2Offset)) this.prefetchL2(guestOffset, WALK_READ_AHEAD);
    return this.loadL2(l2Offset);
  }

  /** Whether a read of the L2 table at `l2Offset` is under way (a read-ahead's). */
  l2Loading(l2Offset: number): boolean {
    return this.l2Cache.isLoading(l2Offset);
  }

  private refuseL2BeyondEof(l2Offset: number): void {
    if (l2Offset + this.clusterSize > this.file.size) {
      throw new CorruptImageError(
        'QCOW2_L2_BEYOND_EOF',
        `L2 table at ${l2Offset} runs past the end of the file (${this.file.size} bytes)`,
        { file: this.file.path, field: 'L1 entry', value: l2Offset, limit: this.file.size },
      );
    }
  }

  /**
   * Starts loading the L2 tables of the next `count` L1 entries from the one covering
   * `guestOffset` (sequential walks: map, convert), so reads overlap instead of waiting one
   * by one. Failures are not reported here; they surface when a table is actually needed.
   */
  prefetchL2(guestOffset: number, count: number): void {
    const g = this.geometry;
    const first = Math.floor(guestOffset / g.clusterSize / g.l2Entries);
    // Never more than half the cache, nor more than about 2 MiB of tables at once.
    const limit = Math.max(1, Math.min(count, Math.floor(this.l2Cache.capacity / 2), Math.floor((2 * 1024 * 1024) / g.clusterSize)));
    const last = Math.min(this.header.l1Size, first + limit);
    const offsets: number[] = [];
    for (let i = first; i < last; i++) {
      const hi = this.l1[i * 2] ?? 0;
      const lo = this.l1[i * 2 + 1] ?? 0;
      const off = (hi & 0xffffff) * 0x100000000 + ((lo & 0xfffffe00) >>> 0);
      if (off === 0 || off % g.clusterSize !== 0 || off + g.clusterSize > this.file.size) continue;
      offsets.push(off);
    }
    this.l2Cache.loadMany(offsets).catch(() => undefined);
  }

  private toStatus(m: HostMapping, mode: StatusMode): DriverStatus {
    let flags = 0;
    let map = 0;
    let file: RandomAccessFile | null = null;
    const t = m.type;
    if (
      (t === SubclusterType.Normal || t === SubclusterType.ZeroAlloc || t === SubclusterType.UnallocatedAlloc) &&
      this.header.cryptMethod === CRYPT_NONE
    ) {
      map = m.hostOffset;
      file = this.hostFile;
      flags |= BDRV_BLOCK_OFFSET_VALID;
    }
    if (t === SubclusterType.ZeroPlain || t === SubclusterType.ZeroAlloc) flags |= BDRV_BLOCK_ZERO;
    else if (t !== SubclusterType.UnallocatedPlain && t !== SubclusterType.UnallocatedAlloc) flags |= BDRV_BLOCK_DATA;
    if (
      mode === 'mapping' &&
      this.metadataPreallocation === true &&
      (flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID)) === (BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID)
    ) {
      flags |= BDRV_BLOCK_RECURSE;
    }
    return { flags, pnum: m.bytes, map, file };
  }

  private requireDataFile(): RandomAccessFile {
    if (this.dataFile === null) {
      throw new IoError('QCOW2_DATA_FILE_NOT_OPEN', `the external data file '${this.dataFileName ?? ''}' of '${this.file.path}' is not open`, {
        file: this.file.path, field: 'data file',
      });
    }
    return this.dataFile;
  }

  /**
   * `qcow2_detect_metadata_preallocation`: far more clusters refcounted than the host file
   * has allocated means the image was created with preallocation=metadata; only then do
   * mapping queries ask the host file about holes. Runs once, on the first mapping query.
   */
  private detectMetadataPreallocation(): Promise<boolean> {
    if (this.metadataPreallocation instanceof Promise) return this.metadataPreallocation;
    const p = (async () => {
      const fileLength = Math.ceil(this.file.size / 512) * 512;
      const realClusters = Math.floor(this.file.identity().allocatedBytes / this.clusterSize);
      const threshold = Math.max(Math.floor((realClusters * 10) / 9), realClusters + 2);
      const nbClusters = Math.ceil(fileLength / this.clusterSize);
      this.metadataPreallocation = (await this.refcounts.countReferenced(nbClusters, threshold)) >= threshold;
      return this.metadataPreallocation;
    })();
    this.metadataPreallocation = p;
    return p;
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

/** `QCOW2_COMPRESSED_BEYOND_EOF` with the exact payload offset (it may be 2^53 or more). */
function compressedBeyondEof(file: RandomAccessFile, hi: number, lo: number, clusterBits: number, guestCluster: number): CorruptImageError {
  const exact = compressedPayload(hi, lo, clusterBits).hostOffsetBig;
  return new CorruptImageError(
    'QCOW2_COMPRESSED_BEYOND_EOF',
    `compressed cluster at guest offset ${guestCluster} has its payload at host ${hex(exact)}, past the end of the file (${file.size} bytes)`,
    { file: file.path, field: 'compressed descriptor', value: exact, limit: file.size },
  );
}

/**
 * Reads and checks the backing file name (`Backing file name too long`, no NUL inside),
 * decoded as QEMU does (binary/c-string.ts); `replaced` says the bytes were not UTF-8.
 */
async function readBackingName(file: RandomAccessFile, header: Qcow2Header, head: Uint8Array): Promise<DecodedCString | null> {
  if (header.backingFileOffset === 0) return null;
  const len = header.backingFileSize;
  if (len === 0) {
    throw new CorruptImageError('QCOW2_BACKING_NAME_INVALID', `backing file name is empty: backing_file_offset is ${header.backingFileOffset} but backing_file_size is 0`, {
      file: file.path, field: 'backing_file_size', value: 0, limit: 'at least 1',
    });
  }
  const clusterSize = 2 ** header.clusterBits;
  if (len > MAX_BACKING_NAME || len > clusterSize - header.backingFileOffset) {
    throw new CorruptImageError(
      'QCOW2_BACKING_NAME_TOO_LONG',
      `backing file name too long: backing_file_size is ${len}, at most ${Math.min(MAX_BACKING_NAME, clusterSize - header.backingFileOffset)}`,
      { file: file.path, field: 'backing_file_size', value: len, limit: Math.min(MAX_BACKING_NAME, clusterSize - header.backingFileOffset) },
    );
  }
  if (header.backingFileOffset + len > head.length) {
    throw new CorruptImageError('QCOW2_BACKING_NAME_BEYOND_EOF', `backing file name (${len} bytes at ${header.backingFileOffset}) runs past the end of the file`, {
      file: file.path, field: 'backing_file_offset', value: header.backingFileOffset, limit: head.length,
    });
  }
  const bytes = head.subarray(header.backingFileOffset, header.backingFileOffset + len);
  if (bytes.includes(0)) {
    throw new CorruptImageError('QCOW2_BACKING_NAME_INVALID', 'backing file name contains a NUL byte', {
      file: file.path, field: 'backing file name', value: len,
    });
  }
  return decodeCString(bytes);
}
