/**
 * An ASCII output buffer: text and non-negative integers are written as bytes into
 * reusable Buffers that are handed to the stream when full, so printing millions of map
 * entries allocates neither strings nor fresh buffers (a buffer returns to the pool when
 * the stream has written it). When the stream is standard output to a file or a device
 * (Node writes those synchronously), the bytes go to its descriptor with `writeSync` and
 * the one buffer is reused at once, long chunks without passing through it; a failed write
 * there is an `IO_STDOUT` error.
 */
import { writeSync } from 'node:fs';
import { stdoutError } from './stdout-errors.js';

const CHUNK = 256 * 1024;
/**
 * Chunks at least this long go to a descriptor as they are, after what is pending, instead
 * of through the buffer: the map kernel's encoded JSON (~110 KB a call) is then written
 * from the kernel's memory without a copy (W5's 2 MB map ~0.25 ms faster, BENCHMARKS.md
 * fifteenth round).
 */
const DIRECT_BYTES = 32 * 1024;

/** "00".."99" as byte pairs. */
const PAIRS = new Uint8Array(200);
for (let i = 0; i < 100; i++) {
  PAIRS[i * 2] = 48 + Math.floor(i / 10);
  PAIRS[i * 2 + 1] = 48 + (i % 10);
}
/** 10^0 .. 10^16. */
const POW10 = Array.from({ length: 17 }, (_, i) => 10 ** i);
/** "0".."f". */
const HEX = Buffer.from('0123456789abcdef', 'latin1');
/** Width of a {@link AsciiBuffer.hexColumn}. */
const HEX_COLUMN = 16;

/** Byte sink with back-pressure. */
export class AsciiBuffer {
  private buf: Buffer;
  private pos = 0;
  private readonly pool: Buffer[] = [];
  private readonly encoded = new Map<string, Uint8Array>();

  /** The descriptor written with writeSync, or null: through the stream. */
  private readonly fd: number | null;

  constructor(private readonly stream: NodeJS.WritableStream = process.stdout) {
    this.buf = Buffer.allocUnsafeSlow(CHUNK);
    this.fd = syncDescriptor(stream);
  }

  /** Appends `text` (ASCII; short constant strings are encoded once and cached). */
  text(text: string): void {
    let bytes = this.encoded.get(text);
    if (bytes === undefined) {
      bytes = Buffer.from(text, 'latin1');
      if (this.encoded.size < 256) this.encoded.set(text, bytes);
    }
    this.bytes(bytes);
  }

  /** Appends raw bytes. */
  bytes(bytes: Uint8Array): void {
    const n = bytes.length;
    if (this.fd !== null && n >= DIRECT_BYTES) {
      this.spill();
      writeAll(this.fd, bytes);
      return;
    }
    if (this.pos + n > this.buf.length) this.spill();
    if (n > this.buf.length) {
      // Longer than the buffer (and the output not a descriptor, which took it above).
      this.stream.write(Buffer.from(bytes));
      return;
    }
    const b = this.buf;
    if (n > 8) {
      b.set(bytes, this.pos); // a native copy: faster than a loop beyond a few bytes
      this.pos += n;
      return;
    }
    let p = this.pos;
    for (let i = 0; i < n; i++) b[p++] = bytes[i] as number;
    this.pos = p;
  }

  /** Appends a non-negative safe integer in decimal. */
  uint(n: number): void {
    if (this.pos + 20 > this.buf.length) this.spill();
    const b = this.buf;
    let digits = 1;
    while (digits < 16 && n >= POW10[digits]!) digits++;
    let p = this.pos + digits;
    this.pos = p;
    // Two digits per step; the high part needs floating-point division above 2^31.
    while (n >= 0x80000000) {
      const q = Math.floor(n / 100);
      const r = (n - q * 100) * 2;
      b[--p] = PAIRS[r + 1]!;
      b[--p] = PAIRS[r]!;
      n = q;
    }
    let m = n | 0;
    while (m >= 100) {
      const q = (m / 100) | 0;
      const r = (m - q * 100) * 2;
      b[--p] = PAIRS[r + 1]!;
      b[--p] = PAIRS[r]!;
      m = q;
    }
    if (m >= 10) {
      b[--p] = PAIRS[m * 2 + 1]!;
      b[--p] = PAIRS[m * 2]!;
    } else {
      b[--p] = 48 + m;
    }
  }

  /**
   * Appends a non-negative safe integer as C's `%#-16x` prints it: `0x` and lowercase hex
   * digits (`0` alone for zero), padded with spaces to 16 columns (a safe integer needs at
   * most 16).
   */
  hexColumn(n: number): void {
    if (this.pos + HEX_COLUMN > this.buf.length) this.spill();
    const b = this.buf;
    const at = this.pos;
    let p = at;
    if (n === 0) b[p++] = 48;
    else {
      let digits = 0;
      for (let v = n; v >= 1; v = Math.floor(v / 16)) digits++;
      b[p++] = 48;
      b[p++] = 120;
      let q = p + digits;
      p = q;
      // Above 2^31 the digits come from floating-point division (exact for safe integers).
      while (n >= 0x80000000) {
        const h = Math.floor(n / 16);
        b[--q] = HEX[n - h * 16]!;
        n = h;
      }
      let m = n | 0;
      while (m > 0) {
        b[--q] = HEX[m & 15]!;
        m >>>= 4;
      }
    }
    while (p < at + HEX_COLUMN) b[p++] = 32;
    this.pos = p;
  }

  /**
   * Direct writing for hot printers: makes room for `n` bytes (at most 128 KiB) and returns
   * the position to write at in {@link target}; {@link commit} then records the new end.
   */
  reserve(n: number): number {
    if (this.pos + n > this.buf.length) this.spill();
    return this.pos;
  }

  /** The buffer {@link reserve} made room in (it changes when a reserve hands bytes out). */
  get target(): Buffer {
    return this.buf;
  }

  /** Ends a direct write: `pos` is the end of the bytes written since {@link reserve}. */
  commit(pos: number): void {
    this.pos = pos;
  }

  /** Whether enough bytes are pending to be worth flushing. */
  get wantsFlush(): boolean {
    return this.pos > this.buf.length >> 1;
  }

  /**
   * Writes the pending bytes; waits for 'drain' when the stream asks. Then, when no buffer
   * is free, yields one event-loop turn: a stream that writes synchronously (stdout to a
   * file) reports completion on the next tick, which a walk running on resolved promises
   * would otherwise never reach — every chunk would then be a fresh buffer (26 MB of new
   * pages for a 26 MB map, their page faults costing more than the copying).
   */
  async flush(): Promise<void> {
    if (this.pos === 0) return;
    if (this.fd !== null) {
      this.handOff();
      return;
    }
    if (!this.handOff()) await new Promise<void>((resolve) => this.stream.once('drain', resolve));
    if (this.pool.length === 0) await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Hands the pending bytes to the stream without waiting (the buffer filled mid-entry). */
  private spill(): void {
    if (this.pos > 0) this.handOff();
  }

  private handOff(): boolean {
    if (this.fd !== null) {
      const n = this.pos;
      this.pos = 0;
      writeAll(this.fd, this.buf.subarray(0, n));
      return true;
    }
    const full = this.buf;
    const chunk = full.subarray(0, this.pos);
    this.buf = this.pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
    this.pos = 0;
    return this.stream.write(chunk, () => {
      if (this.pool.length < 4) this.pool.push(full);
    });
  }
}

/**
 * The descriptor of `stream` when it is Node's synchronous file stream (standard output to a
 * file or a device such as /dev/null: each write is a writeSync already), else null.
 */
function syncDescriptor(stream: NodeJS.WritableStream): number | null {
  const fd = (stream as { fd?: unknown }).fd;
  return stream.constructor.name === 'SyncWriteStream' && typeof fd === 'number' ? fd : null;
}

/** Writes all of `bytes` to `fd`; a failure is `IO_STDOUT`. */
function writeAll(fd: number, bytes: Uint8Array): void {
  try {
    for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
  } catch (e) {
    throw stdoutError(e);
  }
}

