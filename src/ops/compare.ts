/**
 * `compare`: whether two images have the same guest content, exactly as `qemu-img compare`
 * 7.2 decides it (`img_compare`): block status over each whole chain (mapping mode); ranges
 * reading as zero in both are not read; a range allocated in one image only must read as
 * zero; the larger image's tail must read as zero; strict mode also requires equal sizes and
 * equal block status. Mismatch offsets are reported at 512-byte sector granularity.
 */
import { BDRV_BLOCK_ALLOCATED, BDRV_BLOCK_ZERO } from '../formats/driver.js';
import type { Image } from '../image.js';

/** Bytes compared per step at most (qemu-img's IO_BUF_SIZE). */
export const IO_BUF_SIZE = 2 * 1024 * 1024;
/**
 * Bytes of consecutive data steps read at once. The steps and their block-status queries
 * are qemu-img's; only the reads of steps where both images hold data are batched: a
 * compressed cluster is a step of its own (one cluster per status query), and reading each
 * alone left the worker pool one cluster to decode at a time.
 */
const BATCH = 4 * IO_BUF_SIZE;
const SECTOR = 512;

/** The verdict: identical, or the message qemu-img prints for the first difference. */
export type CompareResult = { readonly identical: true; readonly warnings: string[] } | { readonly identical: false; readonly message: string; readonly warnings: string[] };

/** Which image an I/O failure came from (qemu-img's exit statuses 3 and 4). */
export class CompareStepError extends Error {
  constructor(
    readonly step: 'status' | 'read',
    readonly image: 1 | 2,
    readonly error: unknown,
  ) {
    super(error instanceof Error ? error.message : String(error));
  }
}

/** Compares `a` and `b`; `strict` is qemu-img's `-s`. */
export async function compareImages(a: Image, b: Image, strict: boolean): Promise<CompareResult> {
  const size1 = a.virtualSize;
  const size2 = b.virtualSize;
  const total = Math.min(size1, size2);
  const base = Math.max(size1, size2);
  const warnings: string[] = [];
  if (strict && size1 !== size2) return { identical: false, message: 'Strict mode: Image size mismatch!', warnings };
  // Shared memory: compressed clusters are decoded straight into it by the worker pool.
  const buf1 = new Uint8Array(new SharedArrayBuffer(BATCH));
  const buf2 = new Uint8Array(new SharedArrayBuffer(BATCH));
  /** Data steps not compared yet: `[from, from + length)`, in steps of `steps` bytes each. */
  const pending = { from: 0, length: 0, steps: [] as number[] };
  /** Compares the pending steps: the offset of the first difference, or null. */
  const flush = async (): Promise<number | null> => {
    if (pending.length === 0) return null;
    const at = await compareSteps(a, b, pending.from, pending.steps, buf1, buf2);
    pending.length = 0;
    pending.steps = [];
    return at;
  };
  const mismatch = (at: number): CompareResult => ({ identical: false, message: `Content mismatch at offset ${at}!`, warnings });
  let offset = 0;
  while (offset < total) {
    let s1: Awaited<ReturnType<Image['blockStatusAbove']>>;
    let s2: typeof s1;
    try {
      s1 = await step('status', 1, () => a.blockStatusAbove(null, offset, size1 - offset, 'mapping'));
      s2 = await step('status', 2, () => b.blockStatusAbove(null, offset, size2 - offset, 'mapping'));
    } catch (e) {
      // qemu-img compared the steps before this one first.
      const at = await flush();
      if (at !== null) return mismatch(at);
      throw e;
    }
    const alloc1 = (s1.flags & BDRV_BLOCK_ALLOCATED) !== 0;
    const alloc2 = (s2.flags & BDRV_BLOCK_ALLOCATED) !== 0;
    let chunk = Math.min(s1.length, s2.length);
    const statusMismatch = strict && s1.flags !== s2.flags;
    const bothZero = (s1.flags & BDRV_BLOCK_ZERO) !== 0 && (s2.flags & BDRV_BLOCK_ZERO) !== 0;
    if (!statusMismatch && !bothZero && alloc1 && alloc2) {
      chunk = Math.min(chunk, IO_BUF_SIZE);
      if (pending.length + chunk > BATCH) {
        const at = await flush();
        if (at !== null) return mismatch(at);
      }
      if (pending.length === 0) pending.from = offset;
      pending.steps.push(chunk);
      pending.length += chunk;
      offset += chunk;
      continue;
    }
    const at = await flush();
    if (at !== null) return mismatch(at);
    if (statusMismatch) {
      return { identical: false, message: `Strict mode: Offset ${offset} block status mismatch!`, warnings };
    }
    if (bothZero || (!alloc1 && !alloc2)) {
      // both read as zero, or neither image allocates it: nothing to read
    } else {
      chunk = Math.min(chunk, IO_BUF_SIZE);
      const nz = alloc1
        ? await checkEmpty(a, 1, offset, chunk, buf1)
        : await checkEmpty(b, 2, offset, chunk, buf1);
      if (nz !== null) return mismatch(nz);
    }
    offset += chunk;
  }
  const last = await flush();
  if (last !== null) return mismatch(last);
  if (size1 !== size2) {
    warnings.push('Warning: Image size mismatch!');
    const [over, which, overSize] = size1 > size2 ? [a, 1 as const, size1] : [b, 2 as const, size2];
    while (offset < base) {
      const s = await step('status', which, () => over.blockStatusAbove(null, offset, overSize - offset, 'mapping'));
      let chunk = s.length;
      if ((s.flags & BDRV_BLOCK_ALLOCATED) !== 0 && (s.flags & BDRV_BLOCK_ZERO) === 0) {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        const nz = await checkEmpty(over, which, offset, chunk, buf1);
        if (nz !== null) return { identical: false, message: `Content mismatch at offset ${nz}!`, warnings };
      }
      offset += chunk;
    }
  }
  return { identical: true, warnings };
}

async function step<T>(kind: 'status' | 'read', image: 1 | 2, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw new CompareStepError(kind, image, e);
  }
}

/**
 * Reads `[offset, offset + length)` of both images at once (the reads and decoding of one
 * overlap the other's); a failure is reported as qemu-img, which reads image 1 first, would:
 * image 1's if it failed, else image 2's.
 */
async function readBoth(a: Image, b: Image, offset: number, length: number, buf1: Uint8Array, buf2: Uint8Array): Promise<void> {
  const [r1, r2] = await Promise.allSettled([a.read(offset, length, buf1), b.read(offset, length, buf2)]);
  if (r1.status === 'rejected') throw new CompareStepError('read', 1, r1.reason);
  if (r2.status === 'rejected') throw new CompareStepError('read', 2, r2.reason);
}

/**
 * Compares consecutive steps of both images starting at `from`, `steps` bytes each: the
 * offset of the first differing sector, or null. All are read at once; if that read fails,
 * they are read and compared again one by one, as qemu-img does, so that a difference in a
 * step before the failing one is what is reported.
 */
async function compareSteps(a: Image, b: Image, from: number, steps: readonly number[], buf1: Uint8Array, buf2: Uint8Array): Promise<number | null> {
  const length = steps.reduce((n, s) => n + s, 0);
  try {
    await readBoth(a, b, from, length, buf1, buf2);
  } catch (e) {
    if (steps.length === 1) throw e;
    let o = from;
    for (const s of steps) {
      const at = await compareSteps(a, b, o, [s], buf1, buf2);
      if (at !== null) return at;
      o += s;
    }
    throw e; // not reached: the failing step fails again
  }
  const { differs, same } = compareBuffers(buf1, buf2, length);
  return differs || same !== length ? from + (differs ? 0 : same) : null;
}

/** `check_empty_sectors`: the offset of the first sector with a non-zero byte, or null. */
async function checkEmpty(img: Image, which: 1 | 2, offset: number, bytes: number, buf: Uint8Array): Promise<number | null> {
  await step('read', which, () => img.read(offset, bytes, buf));
  const i = findNonzero(buf, bytes);
  return i < 0 ? null : offset + i;
}

/** `find_nonzero`: index of the first 512-byte sector holding a non-zero byte, or -1. */
export function findNonzero(buf: Uint8Array, n: number): number {
  for (let i = 0; i < n; i += SECTOR) {
    const end = Math.min(n, i + SECTOR);
    for (let j = i; j < end; j++) if (buf[j] !== 0) return i;
  }
  return -1;
}

/** `compare_buffers`: whether the first sector differs, and how many bytes share that state. */
export function compareBuffers(b1: Uint8Array, b2: Uint8Array, bytes: number): { differs: boolean; same: number } {
  const v1 = Buffer.from(b1.buffer, b1.byteOffset, bytes);
  const v2 = Buffer.from(b2.buffer, b2.byteOffset, bytes);
  // The usual answer at once (one memcmp, not a compare and two views per sector).
  if (v1.equals(v2)) return { differs: false, same: bytes };
  const sectorDiffers = (i: number, len: number): boolean => v1.compare(v2, i, i + len, i, i + len) !== 0;
  let i = Math.min(bytes, SECTOR);
  const differs = sectorDiffers(0, i);
  while (i < bytes) {
    const len = Math.min(bytes - i, SECTOR);
    if (sectorDiffers(i, len) !== differs) break;
    i += len;
  }
  return { differs, same: i };
}
