/**
 * A Linux io_uring instance for positioned writes, through koffi (ffi.ts): the thread
 * queues writes of memory it owns and the kernel carries them out on its own worker
 * threads (io-wq), in order per file — an asynchronous writer that costs no JavaScript
 * thread to start (a Node worker takes ~40 ms of CPU to boot here).
 *
 * Only what the conversion needs: IORING_OP_WRITE, IORING_OP_FALLOCATE linked before a
 * write, submission and completion through the rings mapped into this process, waiting in
 * `io_uring_enter`, and the thread's kernel workers capped at one while a ring is open
 * (rings are opened one after another: each puts back the caps it found). Layout and constants
 * from `include/uapi/linux/io_uring.h` (x86-64 and arm64 share them). `create` returns null
 * where io_uring cannot be used: not Linux, no koffi, a kernel without it (before 5.6) or
 * with it disabled (`kernel.io_uring_disabled`, a seccomp profile), or
 * `VDISK_NO_IO_URING=1`.
 *
 * Contract: the memory behind a queued write must stay alive and unchanged until its
 * completion has been taken ({@link IoUring.complete}); {@link IoUring.close} waits for
 * every write in flight first.
 */
import { closeSync } from 'node:fs';
import { constants } from 'node:os';
import { IoError } from '../errors.js';
import { loadKoffi, loadLibc } from './ffi.js';
import { dropBeforeSnapshot } from './snapshot-state.js';

const SYS_IO_URING_SETUP = 425;
const SYS_IO_URING_ENTER = 426;
const SYS_IO_URING_REGISTER = 427;
/** `IORING_REGISTER_IOWQ_MAX_WORKERS` (Linux 5.15): caps the kernel's worker threads of the ring. */
const IORING_REGISTER_IOWQ_MAX_WORKERS = 19;
const IORING_OP_FALLOCATE = 17;
const IORING_OP_WRITE = 23;
/** `IOSQE_IO_LINK`: the next entry starts only after this one is done (cancelled, -ECANCELED, if this one failed its link). */
const IOSQE_IO_LINK = 4;
/** `FALLOC_FL_KEEP_SIZE`: blocks are allocated, the file's size is left as it is. */
const FALLOC_FL_KEEP_SIZE = 1;
const IORING_ENTER_GETEVENTS = 1;
const IORING_FEAT_SINGLE_MMAP = 1;
const IORING_OFF_SQES = 0x10000000;
const PROT_READ_WRITE = 3;
const MAP_SHARED_POPULATE = 0x8001;
const SQE_BYTES = 64;
const CQE_BYTES = 16;
const PARAMS_BYTES = 120;
const EINTR = 4;
const EAGAIN = 11;
const EBUSY = 16;
const MAX_ENTER_ATTEMPTS = 1000;

interface Calls {
  setup(n: number, entries: number, params: Uint8Array): number | bigint;
  enter(n: number, fd: number, toSubmit: number, minComplete: number, flags: number, sig: number, size: number): number | bigint;
  register(n: number, fd: number, opcode: number, arg: Uint32Array, count: number): number | bigint;
  mmap(addr: null, length: number, prot: number, flags: number, fd: number, offset: number): number | bigint;
  munmap(addr: number | bigint, length: number): number;
  addressOf(dst: Uint8Array, src: Uint8Array, n: number): number | bigint;
  view(addr: number | bigint, length: number): ArrayBuffer;
  errno(): number;
}

let calls: Calls | null | undefined;
dropBeforeSnapshot(() => {
  calls = undefined;
});

function loadCalls(): Calls | null {
  if (calls !== undefined) return calls;
  calls = null;
  if (process.platform !== 'linux' || process.env['VDISK_NO_IO_URING'] === '1') return calls;
  const koffi = loadKoffi();
  const libc = loadLibc();
  if (koffi === null || libc === null || typeof koffi.view !== 'function') return calls;
  try {
    const view = koffi.view.bind(koffi);
    calls = {
      setup: libc.func('long syscall(long n, long entries, uint8_t *params)') as unknown as Calls['setup'],
      enter: libc.func('long syscall(long n, long fd, long toSubmit, long minComplete, long flags, long sig, long size)') as Calls['enter'],
      register: libc.func('long syscall(long n, long fd, long opcode, uint32_t *arg, long count)') as unknown as Calls['register'],
      mmap: libc.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset)') as unknown as Calls['mmap'],
      munmap: libc.func('int munmap(void *addr, size_t length)') as unknown as Calls['munmap'],
      // memmove(p, p, 0) returns p: the address of a typed array's memory (passed by reference).
      addressOf: libc.func('uint64_t memmove(uint8_t *dst, uint8_t *src, size_t n)') as unknown as Calls['addressOf'],
      view,
      errno: () => koffi.errno(),
    };
  } catch {
    calls = null;
  }
  return calls;
}

let usable: boolean | undefined;
dropBeforeSnapshot(() => {
  usable = undefined;
});

/**
 * Whether this process can use io_uring (a small ring is set up and released once to find
 * out; koffi is loaded on the way).
 */
export function ioUringUsable(): boolean {
  if (usable === undefined) {
    const r = IoUring.create(2);
    usable = r !== null;
    r?.close(() => undefined);
  }
  return usable;
}

/** A write's completion: its tag, and the bytes written or the negated errno. */
export type Completion = (tag: number, result: number) => void;

/** An io_uring instance (see the module comment). */
export class IoUring {
  private readonly sqTailAt: number;
  private readonly sqMask: number;
  private readonly sqArrayAt: number;
  private readonly cqHeadAt: number;
  private readonly cqTailAt: number;
  private readonly cqMask: number;
  private readonly cqesAt: number;
  private sqTail: number;
  private unsubmitted = 0;
  private inFlight = 0;
  private closed = false;

  private constructor(
    private readonly c: Calls,
    private readonly fd: number,
    readonly entries: number,
    private readonly ring: DataView,
    private readonly ringWords: Uint32Array,
    private readonly sqes: DataView,
    private readonly maps: ReadonlyArray<readonly [number | bigint, number]>,
    params: Buffer,
    /** The thread's kernel worker caps before this ring set its own (put back by close), or null. */
    private readonly replacedLimits: Uint32Array | null,
  ) {
    this.sqTailAt = params.readUInt32LE(44) >>> 2;
    this.sqMask = ringWords[params.readUInt32LE(48) >>> 2] as number;
    this.sqArrayAt = params.readUInt32LE(64) >>> 2;
    this.cqHeadAt = params.readUInt32LE(80) >>> 2;
    this.cqTailAt = params.readUInt32LE(84) >>> 2;
    this.cqMask = ringWords[params.readUInt32LE(88) >>> 2] as number;
    this.cqesAt = params.readUInt32LE(100);
    this.sqTail = ringWords[this.sqTailAt] as number;
  }

  /** A ring of `entries` submission entries (a power of two), or null where io_uring is not available. */
  static create(entries: number): IoUring | null {
    const c = loadCalls();
    if (c === null) return null;
    const params = Buffer.alloc(PARAMS_BYTES);
    let fd: number;
    try {
      fd = Number(c.setup(SYS_IO_URING_SETUP, entries, params));
    } catch {
      return null;
    }
    if (fd < 0) return null;
    const maps: Array<readonly [number | bigint, number]> = [];
    try {
      const sqEntries = params.readUInt32LE(0);
      const cqEntries = params.readUInt32LE(4);
      if ((params.readUInt32LE(20) & IORING_FEAT_SINGLE_MMAP) === 0) throw new Error('io_uring without a single ring mapping');
      const ringBytes = Math.max(params.readUInt32LE(64) + sqEntries * 4, params.readUInt32LE(100) + cqEntries * CQE_BYTES);
      const ring = c.mmap(null, ringBytes, PROT_READ_WRITE, MAP_SHARED_POPULATE, fd, 0);
      if (asAddress(ring) === null) throw new Error('mmap of the io_uring rings failed');
      maps.push([ring, ringBytes]);
      const sqeBytes = sqEntries * SQE_BYTES;
      const sqes = c.mmap(null, sqeBytes, PROT_READ_WRITE, MAP_SHARED_POPULATE, fd, IORING_OFF_SQES);
      if (asAddress(sqes) === null) throw new Error('mmap of the io_uring entries failed');
      maps.push([sqes, sqeBytes]);
      // One kernel worker for the ring's work: writes to one file are serialized by the file
      // system anyway, and an allocation queued before its write then runs in the order
      // queued, so blocks are allocated in the order of the file (with two workers, the next
      // chunk's allocation could go first: the output's extents out of order). The cap is
      // the calling thread's (its rings share their workers): the kernel hands the caps it
      // replaced back in the array, and close() puts them back. Kernels before 5.15 refuse
      // the call; they keep their workers.
      const limits = new Uint32Array([1, 0]);
      const capped = Number(c.register(SYS_IO_URING_REGISTER, fd, IORING_REGISTER_IOWQ_MAX_WORKERS, limits, 2)) === 0;
      const ringBuffer = c.view(ring, ringBytes);
      return new IoUring(c, fd, sqEntries, new DataView(ringBuffer), new Uint32Array(ringBuffer), new DataView(c.view(sqes, sqeBytes)), maps, params, capped ? limits : null);
    } catch {
      for (const [p, n] of maps) c.munmap(p, n);
      closeSync(fd);
      return null;
    }
  }

  /** The address of `bytes`' memory, for {@link write}; null when it cannot be had. */
  static addressOf(bytes: Uint8Array): number | null {
    const c = loadCalls();
    if (c === null) return null;
    return asAddress(c.addressOf(bytes, bytes, 0));
  }

  /** Writes in flight (queued and not completed). */
  get pending(): number {
    return this.inFlight;
  }

  /**
   * Queues a write of `length` bytes at `address` to `fd` at `position`, tagged `tag`
   * (a non-negative integer); submitted by the next {@link complete}. When the ring is
   * full, waits for completions first (handed to `done`).
   *
   * With `allocateTag` (another tag), the write's range is first allocated in the file
   * (`fallocate` with FALLOC_FL_KEEP_SIZE, an entry of its own, tagged `allocateTag`)
   * and the write is linked after it, to run once the allocation is done. Both completions
   * come to `done`. A failed allocation does not fail its link in Linux 6.x (the write runs
   * anyway); where it does, the write completes with -ECANCELED.
   */
  write(fd: number, address: number, length: number, position: number, tag: number, done: Completion, allocateTag?: number): void {
    const needed = allocateTag === undefined ? 1 : 2;
    while (this.inFlight + needed > this.entries) this.complete(true, done);
    // fallocate's entry takes the offset in `off`, the length in `addr`, the mode in `len`.
    if (allocateTag !== undefined) this.queueEntry(IORING_OP_FALLOCATE, IOSQE_IO_LINK, fd, position, length, FALLOC_FL_KEEP_SIZE, allocateTag);
    this.queueEntry(IORING_OP_WRITE, 0, fd, position, address, length, tag);
  }

  /**
   * Fills the next submission entry (`struct io_uring_sqe`: opcode, flags, fd, off, addr,
   * len, user_data; the rest zero) and makes it visible to the kernel.
   */
  private queueEntry(opcode: number, flags: number, fd: number, off: number, addr: number, len: number, tag: number): void {
    const index = this.sqTail & this.sqMask;
    const o = index * SQE_BYTES;
    const s = this.sqes;
    for (let i = 0; i < SQE_BYTES; i += 8) s.setBigUint64(o + i, 0n, true);
    s.setUint8(o, opcode);
    s.setUint8(o + 1, flags);
    s.setInt32(o + 4, fd, true);
    s.setBigUint64(o + 8, BigInt(off), true);
    s.setBigUint64(o + 16, BigInt(addr), true);
    s.setUint32(o + 24, len, true);
    s.setBigUint64(o + 32, BigInt(tag), true);
    this.ringWords[this.sqArrayAt + index] = index;
    this.sqTail = (this.sqTail + 1) >>> 0;
    Atomics.store(this.ringWords, this.sqTailAt, this.sqTail);
    this.unsubmitted++;
    this.inFlight++;
  }

  /**
   * Submits what was queued and hands every completion available to `done`; with `wait`,
   * first waits until at least one write has completed (when any is in flight).
   */
  complete(wait: boolean, done: Completion): void {
    const waitFor = wait && this.inFlight > 0 ? 1 : 0;
    if (this.unsubmitted > 0 || waitFor > 0) {
      for (let attempt = 1; ; attempt++) {
        const r = Number(this.c.enter(SYS_IO_URING_ENTER, this.fd, this.unsubmitted, waitFor, waitFor > 0 ? IORING_ENTER_GETEVENTS : 0, 0, 0));
        if (r >= 0) {
          this.unsubmitted -= Math.min(r, this.unsubmitted);
          break;
        }
        // Interrupted, or the kernel short of memory or of completion room for a moment
        // (completions are taken below): again, a bounded number of times.
        const errno = this.c.errno();
        if ((errno !== EINTR && errno !== EAGAIN && errno !== EBUSY) || attempt >= MAX_ENTER_ATTEMPTS) {
          throw new IoError('IO_WRITE', `io_uring_enter failed: ${errnoName(errno)}`, {});
        }
        if (errno === EBUSY) break;
      }
    }
    const w = this.ringWords;
    let head = w[this.cqHeadAt] as number;
    const tail = Atomics.load(w, this.cqTailAt);
    while (head !== tail) {
      const o = this.cqesAt + (head & this.cqMask) * CQE_BYTES;
      const tag = Number(this.ring.getBigUint64(o, true));
      const result = this.ring.getInt32(o + 8, true);
      head = (head + 1) >>> 0;
      this.inFlight--;
      done(tag, result);
    }
    Atomics.store(w, this.cqHeadAt, head);
  }

  /**
   * Waits for every write in flight (their completions to `done`), then releases the ring
   * and puts back the thread's kernel worker caps it replaced. Idempotent.
   */
  close(done: Completion): void {
    if (this.closed) return;
    try {
      while (this.inFlight > 0) this.complete(true, done);
    } finally {
      this.closed = true;
      if (this.replacedLimits !== null) this.c.register(SYS_IO_URING_REGISTER, this.fd, IORING_REGISTER_IOWQ_MAX_WORKERS, this.replacedLimits, 2);
      for (const [p, n] of this.maps) this.c.munmap(p, n);
      closeSync(this.fd);
    }
  }
}

/**
 * The calling thread's caps on its io_uring kernel workers, `[bounded, unbounded]`, read
 * through a ring of its own (a cap of 0 asks without changing it); null where io_uring or
 * the query (Linux 5.15) is not available.
 */
export function kernelWorkerLimits(): [number, number] | null {
  const c = loadCalls();
  if (c === null) return null;
  const params = Buffer.alloc(PARAMS_BYTES);
  let fd: number;
  try {
    fd = Number(c.setup(SYS_IO_URING_SETUP, 1, params));
  } catch {
    return null;
  }
  if (fd < 0) return null;
  try {
    const limits = new Uint32Array([0, 0]);
    return Number(c.register(SYS_IO_URING_REGISTER, fd, IORING_REGISTER_IOWQ_MAX_WORKERS, limits, 2)) === 0 ? [limits[0] as number, limits[1] as number] : null;
  } finally {
    closeSync(fd);
  }
}

/**
 * A native pointer as a number: null for mmap's MAP_FAILED (all ones), for null, and for
 * an address this process cannot hold exactly as a number.
 */
function asAddress(p: number | bigint): number | null {
  const n = Number(p);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

/** `EAGAIN` for 11, and so on (the number when the name is unknown). */
export function errnoName(errno: number): string {
  for (const [name, n] of Object.entries(constants.errno)) if (n === errno) return name;
  return `errno ${errno}`;
}
