/**
 * Compressed clusters (spec "Compressed Clusters Descriptor"; QEMU `qcow2_co_preadv_compressed`
 * and `qcow2-threads.c`).
 *
 * The descriptor gives a byte offset and a sector count; the payload is at most two
 * clusters. Decompression yields exactly one cluster: raw deflate (window 2^12) for zlib,
 * one or more zstd frames for zstd. Stricter than QEMU: a zlib stream that would inflate
 * past the cluster is refused (QEMU truncates it), and so is any stream that stops short,
 * never ends within the payload, or is garbage (cluster-decode.ts). Long runs are decoded
 * on worker threads (decode-pool.ts), a few clusters inline.
 */
import { CorruptImageError, IoError, hex } from '../../errors.js';
import type { RandomAccessFile } from '../../io/random-access-file.js';
import { COMPRESSION_ZSTD, decodeClusterInto } from './cluster-decode.js';
import { countInlineDecode } from '../workers/pool.js';
import { DecodeBatcher } from './decode-batcher.js';
import { loadZstd } from './zstd.js';

/** Where a compressed cluster's payload lies. */
export interface CompressedDescriptor {
  /** Host byte offset of the payload. */
  readonly hostOffset: number;
  /** Bytes the descriptor covers (sector count × 512 − offset within the first sector). */
  readonly length: number;
}

/** Decodes the descriptor bits (0..61) of an L2 entry given as native words. */
export function decodeCompressedDescriptor(hi: number, lo: number, clusterBits: number): CompressedDescriptor {
  const e = (BigInt(hi & 0x3fffffff) << 32n) | BigInt(lo >>> 0);
  const x = BigInt(62 - (clusterBits - 8));
  const offset = e & ((1n << x) - 1n);
  const sectors = ((e >> x) & ((1n << BigInt(clusterBits - 8)) - 1n)) + 1n;
  const length = sectors * 512n - (offset & 511n);
  return { hostOffset: Number(offset), length: Number(length) };
}

/** Where a cluster is, for messages. */
export interface CompressedWhere {
  readonly file: string;
  readonly guestOffset: number;
  readonly hostOffset: number;
}

/** The typed error of a payload that does not decode. */
function dataError(payloadLength: number, compressionType: number, where: CompressedWhere, e: unknown): CorruptImageError {
  return new CorruptImageError(
    'QCOW2_COMPRESSED_DATA',
    `compressed cluster at guest offset ${where.guestOffset} (payload ${payloadLength} bytes at host ${hex(where.hostOffset)}): ${e instanceof Error ? e.message : String(e)}`,
    { file: where.file, field: compressionType === COMPRESSION_ZSTD ? 'zstd payload' : 'deflate payload', offset: where.hostOffset, cause: e },
  );
}

/**
 * Decompresses one cluster from its payload, on this thread. `payload` is the descriptor's
 * bytes (clipped at the end of the file); `compressionType` 0 is zlib, 1 zstd. Failures are
 * `CorruptImageError`s (`QCOW2_COMPRESSED_DATA`) naming the guest and host offsets.
 */
export async function decompressCluster(
  payload: Uint8Array,
  clusterSize: number,
  compressionType: number,
  where: CompressedWhere,
): Promise<Uint8Array> {
  if (compressionType === COMPRESSION_ZSTD) await loadZstd();
  const out = new Uint8Array(clusterSize);
  try {
    decodeClusterInto(payload, out, compressionType);
  } catch (e) {
    throw dataError(payload.length, compressionType, where, e);
  }
  return out;
}

/**
 * Reads and decompresses the compressed clusters of one image: on the decode workers when
 * the pool is in use (a batch per turn of the event loop), else inline.
 */
export class CompressedReader {
  private readonly batcher: DecodeBatcher;

  constructor(
    private readonly file: RandomAccessFile,
    private readonly clusterSize: number,
    private readonly compressionType: number,
  ) {
    this.batcher = new DecodeBatcher(file, clusterSize, compressionType);
  }

  /** The cluster whose payload is `[hostOffset, hostOffset + length)`, clipped at the end of the file. */
  read(hostOffset: number, length: number, guestOffset: number): Promise<Uint8Array> {
    return this.decode(hostOffset, length, guestOffset, null, 0);
  }

  /**
   * The same cluster decoded into `dst` at `dstOffset`: by a worker, with no copy here, when
   * `dst` is backed by a `SharedArrayBuffer` and the pool is in use.
   */
  async readInto(hostOffset: number, length: number, guestOffset: number, dst: Uint8Array, dstOffset: number): Promise<void> {
    const shared = dst.buffer instanceof SharedArrayBuffer ? dst.buffer : null;
    const data = await this.decode(hostOffset, length, guestOffset, shared, dst.byteOffset + dstOffset);
    if (data.buffer !== shared) dst.set(data, dstOffset);
  }

  /** The typed error of the cluster at `hostOffset` whose payload does not decode. */
  dataError(hostOffset: number, length: number, guestOffset: number, message: string): CorruptImageError {
    const clipped = Math.min(length, this.file.size - hostOffset);
    return dataError(clipped, this.compressionType, { file: this.file.path, guestOffset, hostOffset }, new Error(message));
  }

  private async decode(hostOffset: number, length: number, guestOffset: number, target: SharedArrayBuffer | null, targetOffset: number): Promise<Uint8Array> {
    const clipped = Math.min(length, this.file.size - hostOffset);
    const where = { file: this.file.path, guestOffset, hostOffset };
    const pooled = this.batcher.decode(hostOffset, clipped, target, targetOffset);
    if (pooled !== null) {
      const r = await pooled;
      if (r.kind === 'ok') return r.data;
      if (r.kind === 'failed') {
        if (!r.io) throw dataError(clipped, this.compressionType, where, new Error(r.message));
        throw new IoError('IO_READ', `'${this.file.path}': ${r.message}`, { file: this.file.path, offset: hostOffset });
      }
    }
    const payload = new Uint8Array(clipped);
    await this.file.read(payload, hostOffset);
    countInlineDecode();
    return decompressCluster(payload, this.clusterSize, this.compressionType, where);
  }
}
