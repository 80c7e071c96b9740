/**
 * Decompressing one cluster, synchronously (QEMU `qcow2_zlib_decompress` and
 * `qcow2_zstd_decompress`, bounded): the same code runs inline on the main thread and on
 * the decode workers (decode-worker.ts).
 *
 * The result is exactly one cluster. Stricter than QEMU: a zlib stream that would inflate
 * past the cluster is refused (QEMU truncates it), and so is any stream that stops short,
 * never ends within the payload, or is garbage; zstd frames must declare sizes that fit
 * the room left. Failures throw a plain `Error` whose message says what is wrong; callers
 * wrap it with the cluster's location.
 */
import { createRequire } from 'node:module';
import { readZstdFrame } from './zstd-frames.js';
import { zstdDecompressFrameInto } from './zstd.js';

/** `node:zlib`, loaded at the first zlib cluster (3 ms of every start otherwise). */
let zlib: typeof import('node:zlib') | undefined;
function zlibModule(): typeof import('node:zlib') {
  return (zlib ??= createRequire(import.meta.url)('node:zlib') as typeof import('node:zlib'));
}

/** `compression_type` values (spec "Header"). */
export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

/**
 * Decodes `payload` into `out` (exactly one cluster long). The zstd decoder must be loaded
 * (`loadZstd`) before a zstd cluster is decoded.
 */
export function decodeClusterInto(payload: Uint8Array, out: Uint8Array, compressionType: number): void {
  if (compressionType === COMPRESSION_ZSTD) zstdClusterInto(payload, out);
  else inflateClusterInto(payload, out);
}

/** Raw deflate with a 4 KiB window into exactly `out.length` bytes. */
function inflateClusterInto(payload: Uint8Array, out: Uint8Array): void {
  let data: Buffer;
  try {
    data = zlibModule().inflateRawSync(payload, { windowBits: 12, maxOutputLength: out.length, chunkSize: Math.max(64, out.length) });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(
      code === 'ERR_BUFFER_TOO_LARGE'
        ? `the deflate stream inflates to more than the cluster size ${out.length}`
        : `invalid deflate stream (${code ?? (e instanceof Error ? e.message : String(e))})`,
    );
  }
  if (data.length !== out.length) {
    throw new Error(`the deflate stream ends after ${data.length} bytes, not the cluster size ${out.length}`);
  }
  out.set(data);
}

/** zstd frames until exactly `out.length` bytes are out (QEMU's loop, bounded per frame). */
function zstdClusterInto(payload: Uint8Array, out: Uint8Array): void {
  const clusterSize = out.length;
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
      const n = zstdDecompressFrameInto(payload.subarray(inPos, inPos + frame.size), out.subarray(outPos));
      if (frame.contentSize >= 0 && n !== frame.contentSize) {
        throw new Error(`a zstd frame decoded to ${n} bytes, not the ${frame.contentSize} it declares`);
      }
      outPos += n;
    }
    inPos += frame.size;
    if (outPos < clusterSize && inPos >= payload.length) {
      throw new Error(`the zstd data ends after ${outPos} bytes, not the cluster size ${clusterSize}`);
    }
  }
}
