/**
 * The per-table scans a map or convert makes on every L2 table and refcount block it
 * loads — an L2 table's run list (l2-runs.ts) or that it holds only plain entries, and
 * the non-zero entries of a refcount block (refcount.ts) — in the WebAssembly kernel
 * wasm/table-scan.ts when it is available, else in the JavaScript functions, which
 * define the results (tests hold the two to each other). A short-lived process scans
 * before V8 has optimised the JavaScript loops; the kernel's code is compiled at once.
 *
 * One instance serves the process: each call copies its table in, scans and copies the
 * results out synchronously, so calls cannot interleave.
 */
import { ensureMemory, instantiate, useWasmKernel, wasmKernel, type WasmMemory } from '../../io/wasm-kernel.js';
import { dropBeforeSnapshot } from '../../io/snapshot-state.js';
import { buildL2Runs, onlyPlainEntries, type L2Runs } from './l2-runs.js';
import { countNonZero } from './refcount-entries.js';

/** The kernel's exports (wasm/table-scan.ts). */
interface ScanExports {
  readonly memory: WasmMemory;
  l2Runs(ptr: number, n: number, cs: number, hasDataFile: number, ends: number): number;
  orHi(): number;
  orLo(): number;
  compressed(): number;
  onlyPlainEntries(ptr: number, n: number): number;
  countNonZero(ptr: number, length: number, first: number, end: number, order: number, limit: number): number;
  runsClean(
    ptr: number, ends: number, count: number, orHi: number, orLo: number, compressed: number, cs: number, fileSize: number,
    hasDataFile: number, rStarts: number, rEnds: number, nRanges: number, maxEnd: number, tables: number, nTables: number,
  ): number;
  heapBase(): number;
}

/** What a table's host clusters are checked against (l2-table-check.ts). */
export interface HostCheckContext {
  readonly clusterSize: number;
  readonly fileSize: number;
  readonly hasDataFile: boolean;
  /** Metadata ranges, sorted and disjoint, none ending past `maxEnd`. */
  readonly rangeStarts: Float64Array;
  readonly rangeEnds: Float64Array;
  readonly maxEnd: number;
  /** Active L2 table offsets, sorted. */
  readonly l2Tables: Float64Array;
}

const NAME = 'table-scan';
let instance: ScanExports | null | undefined;

function kernel(): ScanExports | null {
  const mod = wasmKernel(NAME);
  if (mod === null) return null;
  if (instance === undefined || instance === null) instance = instantiate<ScanExports>(mod);
  return instance;
}

/** Turns the kernel off or on (tests). */
export function useTableScanKernel(on: boolean): void {
  useWasmKernel(NAME, on);
}

/** Where tables are copied in the kernel's memory (8-byte aligned). */
function base(k: ScanExports): number {
  return Math.ceil(k.heapBase() / 8) * 8;
}

/** The host check context whose arrays are in the kernel's memory (from base), and where they end. */
let placed: HostCheckContext | null = null;
let placedEnd = 0;

// A snapshot cannot hold the instance (nor then what is placed in its memory).
dropBeforeSnapshot(() => {
  instance = undefined;
  placed = null;
  placedEnd = 0;
});

/** Where a scan's table goes: after the placed context's arrays. */
function free(k: ScanExports): number {
  return placed === null ? base(k) : placedEnd;
}

/**
 * The run list of the standard L2 table `words` (native words, hi/lo per entry; clusters
 * of `clusterSize` bytes), or null when every entry is plain (all zero or a bare zero
 * flag: `plainRun` answers those without one) — `onlyPlainEntries` then `buildL2Runs`.
 */
export function scanL2Table(words: Uint32Array, clusterSize: number, hasDataFile: boolean): L2Runs | null {
  const k = kernel();
  if (k === null) return onlyPlainEntries(words) ? null : buildL2Runs(words, clusterSize, hasDataFile);
  const n = words.length >>> 1;
  const at = free(k);
  const endsAt = at + words.byteLength;
  ensureMemory(k.memory, endsAt + n * 4);
  new Uint32Array(k.memory.buffer, at, words.length).set(words);
  if (k.onlyPlainEntries(at, n) !== 0) return null;
  const count = k.l2Runs(at, n, clusterSize, hasDataFile ? 1 : 0, endsAt);
  return {
    ends: new Uint32Array(k.memory.buffer, endsAt, count).slice(),
    orHi: k.orHi() | 0,
    orLo: k.orLo() | 0,
    compressed: k.compressed(),
  };
}

/** {@link countNonZero}: non-zero entries `[first, end)` of a refcount block, at most `limit`. */
export function countNonZeroEntries(block: Uint8Array, first: number, end: number, order: number, limit: number): number {
  const k = kernel();
  if (k === null) return countNonZero(block, first, end, order, limit);
  const at = free(k);
  ensureMemory(k.memory, at + block.length);
  new Uint8Array(k.memory.buffer, at, block.length).set(block);
  // The kernel counts in int32: entries past the block count as zero, and no block holds
  // 2^31 entries, so both bounds can be capped.
  const entries = (block.length * 8) / 2 ** order;
  return k.countNonZero(at, block.length, Math.min(first, entries), Math.min(end, entries), order, Math.min(limit, 0x7fffffff));
}

/**
 * `L2TableChecker.runsClean` in the kernel: whether every entry of the standard table
 * `words` with run list `runs` passes the checks per run; undefined when the kernel is
 * unavailable (the checker then makes them in JavaScript).
 */
export function runsCleanInKernel(words: Uint32Array, runs: L2Runs, ctx: HostCheckContext): boolean | undefined {
  const k = kernel();
  if (k === null) return undefined;
  const at = base(k);
  if (placed !== ctx) {
    // The context's arrays first (kept while the same checker asks), then the table.
    const r = ctx.rangeStarts.length;
    placedEnd = at + (2 * r + ctx.l2Tables.length) * 8;
    ensureMemory(k.memory, placedEnd);
    const f = new Float64Array(k.memory.buffer, at, 2 * r + ctx.l2Tables.length);
    f.set(ctx.rangeStarts, 0);
    f.set(ctx.rangeEnds, r);
    f.set(ctx.l2Tables, 2 * r);
    placed = ctx;
  }
  const r = ctx.rangeStarts.length;
  const wordsAt = placedEnd;
  const endsAt = wordsAt + words.byteLength;
  ensureMemory(k.memory, endsAt + runs.ends.byteLength);
  new Uint32Array(k.memory.buffer, wordsAt, words.length).set(words);
  new Uint32Array(k.memory.buffer, endsAt, runs.ends.length).set(runs.ends);
  return k.runsClean(
    wordsAt, endsAt, runs.ends.length, runs.orHi, runs.orLo, runs.compressed, ctx.clusterSize, ctx.fileSize,
    ctx.hasDataFile ? 1 : 0, at, at + r * 8, r, ctx.maxEnd, at + 2 * r * 8, ctx.l2Tables.length,
  ) !== 0;
}
