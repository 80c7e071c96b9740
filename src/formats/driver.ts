/**
 * The format-driver contract (QEMU's `BlockDriver.bdrv_co_block_status`, one layer only).
 *
 * A driver answers for its own layer: it never opens or walks backing files (the status
 * layer does, through the open policy) and never sets ALLOCATED or EOF (the block layer
 * does). Flags carry QEMU's values so the rules of `bdrv_co_block_status` can be applied
 * literally by `src/status`.
 */
import type { RandomAccessFile } from '../io/random-access-file.js';

/** The range's allocation is tied to this layer: bytes are read from its storage. */
export const BDRV_BLOCK_DATA = 0x01;
/** The range reads as zeroes. */
export const BDRV_BLOCK_ZERO = 0x02;
/** `map` is a valid offset into `file` where the guest bytes live. */
export const BDRV_BLOCK_OFFSET_VALID = 0x04;
/** Set by the status layer only: this layer decides the content. */
export const BDRV_BLOCK_ALLOCATED = 0x10;
/** Set by the status layer only: the range runs to the end of the layer. */
export const BDRV_BLOCK_EOF = 0x20;
/** Driver request: also ask `file` at `map` whether the range reads as zero. */
export const BDRV_BLOCK_RECURSE = 0x40;

/**
 * The purpose of a query (QEMU `want_zero` / `BDRV_WANT_*`), never a boolean.
 * - `mapping`: precise answers for maps; may probe the host file for holes.
 * - `allocation`: only "which layer decides this range"; never probes for holes.
 */
export type StatusMode = 'mapping' | 'allocation';

/** One layer's answer for a run starting at the queried offset. */
export interface DriverStatus {
  /** BDRV_BLOCK_* flags (DATA, ZERO, OFFSET_VALID, RECURSE only). */
  readonly flags: number;
  /** Length of the run, > 0; may exceed the requested length (it is a hint). */
  readonly pnum: number;
  /** Host offset in `file` when OFFSET_VALID, else 0. */
  readonly map: number;
  /** The file `map` points into when OFFSET_VALID, else null. */
  readonly file: RandomAccessFile | null;
}

/** The name and format an image records for its backing file; not yet opened. */
export interface BackingReference {
  /** The name as stored in the image. */
  readonly name: string;
  /** The recorded backing format, or null when the image records none. */
  readonly format: string | null;
  /** False when the stored name is not valid UTF-8, so `name` is not what is stored; never opened then. */
  readonly nameExact?: boolean;
  /** False when the stored format has bytes after a NUL or is not valid UTF-8. */
  readonly formatExact?: boolean;
}

/**
 * Where the guest bytes of a run come from, for reading (one layer only).
 * `length` > 0 and may exceed what was asked.
 */
export type ReadExtent =
  /** Bytes stored in `file` at `hostOffset`. */
  | { readonly kind: 'data'; readonly length: number; readonly file: RandomAccessFile; readonly hostOffset: number }
  /** Reads as zeroes. */
  | { readonly kind: 'zero'; readonly length: number }
  /** Not allocated here: read the backing file (zeroes when there is none). */
  | { readonly kind: 'backing'; readonly length: number }
  /** Part of a compressed cluster: `cluster()` gives the whole decompressed cluster. */
  | {
      readonly kind: 'compressed';
      readonly length: number;
      readonly offsetInCluster: number;
      /** Bytes of the whole decompressed cluster. */
      readonly clusterSize: number;
      cluster(): Promise<Uint8Array>;
      /**
       * Decodes the whole cluster into `dst` at `dstOffset` (for callers that want all of
       * it, `offsetInCluster` 0). When `dst` is backed by a `SharedArrayBuffer` the bytes
       * may be written by a worker thread, with no copy on the caller's thread.
       */
      clusterInto(dst: Uint8Array, dstOffset: number): Promise<void>;
      /** Where the compressed bytes are, for decoding elsewhere (a worker thread). */
      readonly payload: CompressedPayload;
    };

/** The stored form of a compressed cluster. */
export interface CompressedPayload {
  readonly file: RandomAccessFile;
  readonly hostOffset: number;
  /** Bytes from `hostOffset`, clipped at the end of the file. */
  readonly length: number;
  /** 0 zlib, 1 zstd. */
  readonly compressionType: number;
  /** The typed error for a payload that does not decode, `message` saying why. */
  dataError(message: string): Error;
}

/** Formats vdisk reads. */
export type FormatName = 'qcow2' | 'raw';

/** One opened layer. */
export interface BlockDriver {
  readonly format: FormatName;
  /** The file the layer's metadata lives in. */
  readonly file: RandomAccessFile;
  /** Length in bytes as QEMU's block layer sees it (virtual size in 512-byte sectors). */
  readonly length: number;
  /** Request alignment (1, or 512 for encrypted qcow2). */
  readonly alignment: number;
  /** Whether unallocated ranges defer to a backing file (qcow2: yes; raw: no). */
  readonly supportsBacking: boolean;
  /** The backing file the image names, if any. */
  readonly backing: BackingReference | null;
  /** The external data file the image names, if any (opened by the chain opener). */
  readonly dataFileName: string | null;
  /**
   * Status of `[offset, offset + bytes)` in this layer only.
   *
   * Contract: the caller guarantees `0 <= offset < length`, `bytes > 0`, `offset + bytes <=
   * length`, both aligned to `alignment`. The driver returns `pnum > 0`, a multiple of
   * `alignment` (except at the end of the layer), possibly larger than `bytes`. It does no
   * extra I/O to lengthen the run. May answer synchronously when no I/O is needed; callers
   * must accept either form. Errors are `VdiskError`s.
   */
  blockStatus(offset: number, bytes: number, mode: StatusMode): DriverStatus | Promise<DriverStatus>;
  /**
   * Where the bytes of `[offset, offset + bytes)` come from, starting at `offset` (same
   * preconditions as `blockStatus`). Encrypted data is an `UnsupportedImageError`.
   */
  readExtent(offset: number, bytes: number): ReadExtent | Promise<ReadExtent>;
  /** Releases the files the driver owns. */
  close(): Promise<void>;
}
