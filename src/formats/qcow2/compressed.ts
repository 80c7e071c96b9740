/**
 * Compressed clusters (spec "Compressed Clusters Descriptor"; QEMU `qcow2_co_preadv_compressed`
 * and `qcow2-threads.c`).
 *
 * The descriptor gives a byte offset and a sector count; the payload is at most two
 * clusters. Decompression yields exactly one cluster: raw deflate (window 2^12) for zlib,
 * one or more zstd frames for zstd. Stricter than QEMU: a zlib stream that would inflate
 * past the cluster is refused (QEMU truncates it), and so is any stream that stops short,
 * never ends within the payload, or is garbage. zlib runs on libuv's thread pool.
 */
import { inflateRaw } from 'node:zlib';
import { CorruptImageError, hex } from '../../errors.js';
import { readZstdFrame } from './zstd-frames.js';
import { loadZstd, zstdDecompressFrame } from './zstd.js';
import { zstdPool } from './zstd-pool.js';

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

/** Inflates a raw deflate stream into exactly `clusterSize` bytes. */
function inflateCluster(payload: Uint8Array, clusterSize: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    inflateRaw(payload, { windowBits: 12, maxOutputLength: clusterSize }, (err, out) => {
      if (err !== null) {
        const code = (err as NodeJS.ErrnoException).code;
        reject(
          code === 'ERR_BUFFER_TOO_LARGE'
            ? new Error(`the deflate stream inflates to more than the cluster size ${clusterSize}`)
            : new Error(`invalid deflate stream (${code ?? err.message})`),
        );
      } else if (out.length !== clusterSize) {
        reject(new Error(`the deflate stream ends after ${out.length} bytes, not the cluster size ${clusterSize}`));
      } else {
        resolve(out);
      }
    });
  });
}

/** Decodes zstd frames until exactly `clusterSize` bytes are out (QEMU's loop, bounded). */
function zstdCluster(payload: Uint8Array, clusterSize: number): Uint8Array {
  const out = new Uint8Array(clusterSize);
  let inPos = 0;
  let outPos = 0;
  while (outPos < clusterSize) {
    const frame = readZstdFrame(payload.subarray(inPos));
    if (frame.kind === 'invalid') throw new Error(`invalid zstd data at payload byte ${inPos}: ${frame.reason}`);
    if (frame.kind === 'data') {
      const room = clusterSize - outPos;
      if (frame.contentSize > room) {
        throw new Error(`a zstd frame declares ${frame.contentSize} bytes, more than the ${room} left in the cluster`);
      }
      const data = zstdDecompressFrame(payload.subarray(inPos, inPos + frame.size), room);
      out.set(data, outPos);
      outPos += data.length;
    }
    inPos += frame.size;
    if (outPos < clusterSize && inPos >= payload.length) {
      throw new Error(`the zstd data ends after ${outPos} bytes, not the cluster size ${clusterSize}`);
    }
  }
  return out;
}

/** Frames that declare sizes adding up to exactly one cluster (what QEMU writes). */
interface ZstdPlan {
  readonly frames: Uint8Array[];
  readonly sizes: number[];
}

/**
 * The data frames of a payload when every one declares its content size and they fill the
 * cluster exactly; null otherwise (then the frames are decoded inline, one by one).
 */
function planZstdFrames(payload: Uint8Array, clusterSize: number): ZstdPlan | null {
  const frames: Uint8Array[] = [];
  const sizes: number[] = [];
  let inPos = 0;
  let total = 0;
  while (total < clusterSize) {
    const f = readZstdFrame(payload.subarray(inPos));
    if (f.kind === 'invalid') return null;
    if (f.kind === 'data') {
      if (f.contentSize < 0 || total + f.contentSize > clusterSize) return null;
      frames.push(payload.slice(inPos, inPos + f.size));
      sizes.push(f.contentSize);
      total += f.contentSize;
    }
    inPos += f.size;
    if (total < clusterSize && inPos >= payload.length) return null;
  }
  return { frames, sizes };
}

/** Decodes planned frames on the worker pool and checks every size. */
async function decodePlanned(pool: NonNullable<ReturnType<typeof zstdPool>>, plan: ZstdPlan, clusterSize: number): Promise<Uint8Array> {
  const outs = await pool.decode(plan.frames, plan.sizes);
  const out = new Uint8Array(clusterSize);
  let at = 0;
  outs.forEach((o, i) => {
    if (o.length !== plan.sizes[i]) throw new Error(`a zstd frame decoded to ${o.length} bytes, not the ${plan.sizes[i] ?? 0} it declares`);
    out.set(o, at);
    at += o.length;
  });
  return out;
}

/**
 * Decompresses one cluster. `payload` is the descriptor's bytes (clipped at the end of the
 * file); `compressionType` 0 is zlib, 1 zstd. Failures are `CorruptImageError`s
 * (`QCOW2_COMPRESSED_DATA`) naming the guest and host offsets.
 */
export async function decompressCluster(
  payload: Uint8Array,
  clusterSize: number,
  compressionType: number,
  where: { file: string; guestOffset: number; hostOffset: number },
): Promise<Uint8Array> {
  if (compressionType === 1) await loadZstd();
  try {
    if (compressionType !== 1) return await inflateCluster(payload, clusterSize);
    const pool = zstdPool();
    const plan = pool === null ? null : planZstdFrames(payload, clusterSize);
    return pool === null || plan === null ? zstdCluster(payload, clusterSize) : await decodePlanned(pool, plan, clusterSize);
  } catch (e) {
    throw new CorruptImageError(
      'QCOW2_COMPRESSED_DATA',
      `compressed cluster at guest offset ${where.guestOffset} (payload ${payload.length} bytes at host ${hex(where.hostOffset)}): ${e instanceof Error ? e.message : String(e)}`,
      { file: where.file, field: compressionType === 1 ? 'zstd payload' : 'deflate payload', offset: where.hostOffset, cause: e },
    );
  }
}
