/**
 * A read plan for a worker thread: the runs of one chunk of guest data (read.ts
 * `planChain`) as operations in the worker protocol's form (workers/protocol.ts) — file
 * reads and whole compressed clusters by descriptor, zero fills — plus what only this
 * thread can do (parts of compressed clusters, files without a descriptor), which is done
 * here, into the same chunk, before the plan is sent.
 */
import { readPreferSync, type RandomAccessFile } from '../io/random-access-file.js';
import { IoError } from '../errors.js';
import { OP_DECODE, OP_READ, OP_WORDS, OP_ZERO, type JobError } from '../formats/workers/protocol.js';
import type { CompressedExtent, ReadSink } from './read.js';

/** What an operation was, to turn a worker's failure into a typed error. */
type OpSource =
  | { readonly kind: 'read'; readonly file: RandomAccessFile; readonly hostOffset: number }
  | { readonly kind: 'decode'; readonly extent: CompressedExtent }
  | null;

/** Collects the plan of one chunk (`dst`, a view of shared memory). */
export class ReadPlan implements ReadSink {
  private words = new Float64Array(OP_WORDS * 16);
  private count = 0;
  private readonly sources: OpSource[] = [];
  private readonly local: Promise<void>[] = [];
  /** Whether the plan decodes a compressed cluster (work worth a worker thread). */
  hasDecode = false;

  private readonly syncReads: boolean;

  /**
   * A plan filling `dst`. With `syncReads`, {@link runHere} reads files that can read
   * synchronously that way (a conversion's page-cache reads: cheaper for this thread than a
   * thread-pool round trip each); otherwise all reads go through the thread pool.
   */
  constructor(private readonly dst: Uint8Array, options: { readonly syncReads?: boolean } = {}) {
    this.syncReads = options.syncReads === true;
  }

  /** Operations planned so far. */
  get opCount(): number {
    return this.count;
  }

  zero(at: number, n: number): void {
    this.push(OP_ZERO, 0, 0, n, at, 0, 0, null);
  }

  data(file: RandomAccessFile, hostOffset: number, n: number, at: number): void {
    const fd = file.fd;
    if (fd === undefined) {
      this.track(file.read(this.dst, hostOffset, n, at));
      return;
    }
    // Adjacent reads of one file merge into one (overlay clusters next to each other).
    const last = (this.count - 1) * OP_WORDS;
    const w = this.words;
    if (
      this.count > 0 && w[last] === OP_READ && w[last + 1] === fd &&
      (w[last + 2] as number) + (w[last + 3] as number) === hostOffset &&
      (w[last + 4] as number) + (w[last + 3] as number) === at
    ) {
      w[last + 3] = (w[last + 3] as number) + n;
      return;
    }
    this.push(OP_READ, fd, hostOffset, n, at, 0, 0, { kind: 'read', file, hostOffset });
  }

  compressed(r: CompressedExtent, n: number, at: number): void {
    const p = r.payload;
    const fd = p.file.fd;
    if (r.offsetInCluster !== 0 || n !== r.clusterSize || fd === undefined) {
      const from = r.offsetInCluster;
      this.track(r.cluster().then((c) => this.dst.set(c.subarray(from, from + n), at)));
      return;
    }
    this.push(OP_DECODE, fd, p.hostOffset, p.length, at, p.compressionType, r.clusterSize, { kind: 'decode', extent: r });
    this.hasDecode = true;
  }

  /** Carries the plan out on this thread instead (asynchronous reads in flight together); throws the first failure. */
  async runHere(): Promise<void> {
    if (!this.startHere()) await this.settleLocal();
  }

  /**
   * Starts the plan on this thread, as {@link runHere}, and says whether it is done already:
   * true when every part was carried out synchronously and succeeded (page-cache reads with
   * `syncReads`), so the caller can go on in the same turn; otherwise {@link settleLocal}
   * waits for the rest and throws the first failure.
   */
  startHere(): boolean {
    const w = this.words;
    for (let i = 0; i < this.count; i++) {
      const o = i * OP_WORDS;
      const at = w[o + 4] as number;
      const length = w[o + 3] as number;
      const src = this.sources[i] ?? null;
      if (w[o] === OP_ZERO) this.dst.fill(0, at, at + length);
      else if (src?.kind === 'read') this.read(src.file, w[o + 2] as number, length, at);
      else if (src?.kind === 'decode') this.track(src.extent.clusterInto(this.dst, at));
    }
    return this.local.length === 0;
  }

  /** Waits for the parts done on this thread (throws their first failure). */
  async settleLocal(): Promise<void> {
    const results = await Promise.allSettled(this.local);
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  /** The operations, `OP_WORDS` doubles each. */
  ops(): Float64Array {
    return this.words.slice(0, this.count * OP_WORDS);
  }

  /** The typed error for a worker's failure report. */
  error(e: JobError, output: string): Error {
    const src = e.index >= 0 ? this.sources[e.index] ?? null : null;
    if (src?.kind === 'decode' && !e.io) return src.extent.payload.dataError(e.message);
    if (src?.kind === 'read') {
      return new IoError('IO_READ', `'${src.file.path}': ${e.message}`, { file: src.file.path, offset: src.hostOffset });
    }
    if (src?.kind === 'decode') {
      const f = src.extent.payload.file;
      return new IoError('IO_READ', `'${f.path}': ${e.message}`, { file: f.path, offset: src.extent.payload.hostOffset });
    }
    return new IoError('IO_WRITE', `'${output}': ${e.message}`, { file: output });
  }

  /** Files the plan reads by descriptor, for their counters. */
  filesByFd(): Map<number, RandomAccessFile> {
    const m = new Map<number, RandomAccessFile>();
    for (const s of this.sources) {
      const f = s === null ? null : s.kind === 'read' ? s.file : s.extent.payload.file;
      if (f !== null && f.fd !== undefined) m.set(f.fd, f);
    }
    return m;
  }

  private read(file: RandomAccessFile, position: number, length: number, at: number): void {
    const p = this.syncReads ? readPreferSync(file, this.dst, position, length, at) : file.read(this.dst, position, length, at);
    if (p !== null) this.track(p); // a failure is reported by settleLocal, after the parts in flight
  }

  private track(p: Promise<void>): void {
    p.catch(() => undefined); // reported by settleLocal
    this.local.push(p);
  }

  private push(kind: number, fd: number, host: number, length: number, at: number, a: number, b: number, src: OpSource): void {
    if ((this.count + 1) * OP_WORDS > this.words.length) {
      const grown = new Float64Array(this.words.length * 2);
      grown.set(this.words);
      this.words = grown;
    }
    const o = this.count * OP_WORDS;
    const w = this.words;
    w[o] = kind;
    w[o + 1] = fd;
    w[o + 2] = host;
    w[o + 3] = length;
    w[o + 4] = at;
    w[o + 5] = a;
    w[o + 6] = b;
    this.sources.push(src);
    this.count++;
  }
}
