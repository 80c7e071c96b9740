/**
 * Walking zstd frames (RFC 8878 §3.1) without decoding them: where each frame ends and
 * what content size its header declares. Needed because the decoder decompresses exact
 * frames only, and a compressed cluster's payload is followed by unrelated bytes (the
 * descriptor's sector count rounds up).
 */

/** Magic of a zstd frame (little-endian 0xFD2FB528). */
const ZSTD_MAGIC = 0xfd2fb528;

/** One frame found at the start of a buffer. */
export type ZstdFrame =
  /** A data frame of `size` bytes; `contentSize` is the declared size, or -1 when absent. */
  | { readonly kind: 'data'; readonly size: number; readonly contentSize: number }
  /** A skippable frame of `size` bytes (no output). */
  | { readonly kind: 'skippable'; readonly size: number }
  /** Not a frame, or a frame that runs past the end of the buffer. */
  | { readonly kind: 'invalid'; readonly reason: string };

/** Parses the frame at the start of `buf`. */
export function readZstdFrame(buf: Uint8Array): ZstdFrame {
  if (buf.length < 4) return { kind: 'invalid', reason: 'truncated frame magic' };
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(0, true);
  if ((magic & 0xfffffff0) === 0x184d2a50) {
    if (buf.length < 8) return { kind: 'invalid', reason: 'truncated skippable frame' };
    const size = 8 + dv.getUint32(4, true);
    return size > buf.length ? { kind: 'invalid', reason: 'skippable frame runs past the payload' } : { kind: 'skippable', size };
  }
  if (magic !== ZSTD_MAGIC) return { kind: 'invalid', reason: `bad frame magic 0x${magic.toString(16)}` };
  if (buf.length < 5) return { kind: 'invalid', reason: 'truncated frame header' };
  const fhd = buf[4] ?? 0;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd & 0x20) !== 0;
  if ((fhd & 0x08) !== 0) return { kind: 'invalid', reason: 'reserved frame header bit set' };
  const checksum = (fhd & 0x04) !== 0;
  const dictIdSize = [0, 1, 2, 4][fhd & 3] ?? 0;
  const fcsSize = fcsFlag === 0 ? (singleSegment ? 1 : 0) : [0, 2, 4, 8][fcsFlag] ?? 0;
  let p = 5 + (singleSegment ? 0 : 1) + dictIdSize;
  if (p + fcsSize > buf.length) return { kind: 'invalid', reason: 'truncated frame header' };
  let contentSize = -1;
  if (fcsSize === 1) contentSize = buf[p] ?? 0;
  else if (fcsSize === 2) contentSize = dv.getUint16(p, true) + 256;
  else if (fcsSize === 4) contentSize = dv.getUint32(p, true);
  else if (fcsSize === 8) {
    const big = dv.getBigUint64(p, true);
    contentSize = big > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(big);
  }
  p += fcsSize;
  for (;;) {
    if (p + 3 > buf.length) return { kind: 'invalid', reason: 'truncated block header' };
    const h = (buf[p] ?? 0) | ((buf[p + 1] ?? 0) << 8) | ((buf[p + 2] ?? 0) << 16);
    p += 3;
    const last = (h & 1) !== 0;
    const type = (h >> 1) & 3;
    const size = h >>> 3;
    if (type === 3) return { kind: 'invalid', reason: 'reserved block type' };
    p += type === 1 ? 1 : size;
    if (p > buf.length) return { kind: 'invalid', reason: 'block runs past the payload' };
    if (last) break;
  }
  if (checksum) p += 4;
  if (p > buf.length) return { kind: 'invalid', reason: 'truncated frame checksum' };
  return { kind: 'data', size: p, contentSize };
}
