/**
 * Runs the flat map walk (flat-map.ts) in its WebAssembly kernel (wasm/flat-walk.ts, built
 * to dist/wasm/flat-walk.wasm) when the chain allows it: qcow2 layers with standard L2
 * tables and no external data file (canWalkFlat has already excluded encryption). A map is
 * over before V8 optimises the JavaScript walk; the kernel's compiled code answers its
 * queries from the first one.
 *
 * The kernel does no I/O: when it needs an L2 table, the driver loads and checks it as for
 * the JavaScript walk (`loadL2ForWalk`, read-ahead alike) and it is copied into the
 * layer's slot; when it first queries a layer, the driver says whether mapping answers
 * probe the host file (metadata preallocation), and if so the kernel stops there. It stops
 * too (BAIL) before any entry it leaves to the JavaScript walk (offsets QEMU refuses, zero
 * flags in version 2 images); the JavaScript walk then goes on from that position with the
 * merged entry in progress, so entries, errors and what was printed before an error are
 * the JavaScript walk's. One module is compiled per process, one instance (with its own
 * memory) per walk: walks may run side by side.
 */
import type { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import { ensureMemory, instantiate, useWasmKernel, wasmKernel, type WasmMemory } from '../io/wasm-kernel.js';
import { dropBeforeSnapshot } from '../io/snapshot-state.js';
import { MapBatch } from './map-batch.js';
import type { StatusCounters } from './one-layer.js';

/** What a sink does with a full (or the last) batch (as flat-map.ts's MapBatchSink). */
type Sink = (batch: MapBatch) => Promise<void> | undefined;

/** The kernel's exports (wasm/flat-walk.ts). */
interface KernelExports {
  readonly memory: WasmMemory;
  setup(layers: number, count: number, batch: number, capacity: number): void;
  begin(from: number, to: number): void;
  walk(): number;
  finish(): number;
  count(): number;
  resetCount(): void;
  needLayer(): number;
  needTable(): number;
  setSlot(layer: number, l2Offset: number): void;
  setReady(layer: number): void;
  position(): number;
  pendingStart(): number;
  pendingLength(): number;
  pendingDepth(): number;
  pendingAttrs(): number;
  pendingOffset(): number;
  lookups(): number;
  encodeJson(from: number, to: number, first: number, out: number): number;
  encodeHuman(from: number, to: number, names: number, out: number): number;
  humanStopped(): number;
  heapBase(): number;
}

/** walk() results (3, BAIL, and any other: hand over). */
const DONE = 0;
const FULL = 1;
const NEED = 2;
const ASK = 4;

/** Bytes per layer record (the kernel's LAYER_BYTES). */
const LAYER_BYTES = 64;
/** Entries per batch. */
const BATCH_ENTRIES = 4096;
/** Entries encoded as JSON per kernel call, and the most bytes one entry takes. */
const JSON_ENTRIES = 1024;
const JSON_ENTRY_BYTES = 256;
/** The text area (the JSON text or the human table's rows). */
const TEXT_BYTES = JSON_ENTRIES * JSON_ENTRY_BYTES;
/** Room after it for the human table's file names: a table of (address, length) per layer, then the names. */
const NAMES_BYTES = 64 * 1024;
/** Bytes of a human row before its file name (three `%#-16x` columns). */
const HUMAN_COLUMNS = 48;
/** Most memory one walk's instance may take (L1 copies and one L2 slot per layer). */
const MAX_KERNEL_BYTES = 64 * 1024 * 1024;

/** Where the JavaScript walk goes on after the kernel stopped (flat-map.ts). */
export interface FlatWalkResume {
  readonly pos: number;
  /** The batch the kernel filled, holding `count` finished entries. */
  readonly batch: MapBatch;
  readonly count: number;
  /** The merged entry in progress (`length` 0: none yet). */
  readonly start: number;
  readonly length: number;
  readonly depth: number;
  readonly attrs: number;
  readonly offset: number;
}

/** Walks the kernel served, and how many of them it handed over to the JavaScript walk (for tests). */
export const kernelWalkCounts = { walks: 0, handovers: 0 };
dropBeforeSnapshot(() => {
  kernelWalkCounts.walks = 0;
  kernelWalkCounts.handovers = 0;
});

/** Turns the kernel off or on (tests hold the two walks to each other). */
export function useFlatWalkKernel(on: boolean): void {
  useWasmKernel('flat-walk', on);
}

/** A human table's rows from {@link KernelMapBatch.encodeHuman}. */
export interface HumanRows {
  /** The rows' bytes: a view valid until the next call. */
  readonly bytes: Uint8Array;
  /** The entry the rows stop before (data without an offset, which fails the table), or -1. */
  readonly stop: number;
}

/**
 * A batch laid out in a kernel instance's memory, which can encode itself there as JSON
 * or as the human table's rows.
 */
export class KernelMapBatch extends MapBatch {
  /** The names placed in the kernel's memory for encodeHuman, and the longest one. */
  private names: readonly Uint8Array[] | null = null;
  private longestName = 0;

  /** `jsonAt`: the text area ({@link TEXT_BYTES}), followed by {@link NAMES_BYTES} for names. */
  constructor(
    private readonly kernel: KernelExports,
    at: number,
    capacity: number,
    private readonly jsonAt: number,
  ) {
    super(capacity, { buffer: kernel.memory.buffer, byteOffset: at });
  }

  /**
   * Gives {@link encodeHuman} the names it prints (per depth: the layer's host file name and
   * a newline, as bytes), copied into the kernel's memory unless they are the ones it has;
   * false when they do not fit in its room for them.
   */
  useHumanNames(names: readonly Uint8Array[]): boolean {
    return names === this.names || this.placeNames(names);
  }

  /**
   * The human table's rows for entries `[from, to)`, as the JavaScript printer writes them
   * (cli/format/map-human-batch.ts): per plain data entry, its start, length and offset as
   * `%#-16x` and its layer's name ({@link useHumanNames}, which must have been given),
   * stopping before a data entry without an offset. Takes at most {@link humanEntries}`()`
   * entries a call.
   */
  encodeHuman(from: number, to: number): HumanRows {
    const k = this.kernel;
    const end = k.encodeHuman(from, to, this.jsonAt + TEXT_BYTES, this.jsonAt);
    return { bytes: new Uint8Array(k.memory.buffer, this.jsonAt, end - this.jsonAt), stop: k.humanStopped() };
  }

  /** Entries one {@link encodeHuman} call takes with the names last given (at least one). */
  humanEntries(): number {
    return Math.max(1, Math.floor(TEXT_BYTES / (HUMAN_COLUMNS + this.longestName)));
  }

  /** Copies `names` into the kernel's room for them: (address, length) per depth, then the bytes. */
  private placeNames(names: readonly Uint8Array[]): boolean {
    const table = this.jsonAt + TEXT_BYTES;
    let at = table + names.length * 8;
    let longest = 0;
    for (const n of names) {
      at += n.length;
      longest = Math.max(longest, n.length);
    }
    if (at > table + NAMES_BYTES || HUMAN_COLUMNS + longest > TEXT_BYTES) return false;
    const mem = this.kernel.memory.buffer;
    const view = new DataView(mem);
    at = table + names.length * 8;
    names.forEach((n, d) => {
      view.setUint32(table + d * 8, at, true);
      view.setUint32(table + d * 8 + 4, n.length, true);
      new Uint8Array(mem, at, n.length).set(n);
      at += n.length;
    });
    this.names = names;
    this.longestName = longest;
    return true;
  }

  /**
   * Entries `[from, to)` as `qemu-img map --output=json` text (the bytes writeMapBatchJson
   * writes), at most {@link JSON_ENTRIES} at a time: a view valid until the next call.
   */
  encodeJson(from: number, to: number, first: boolean): Uint8Array {
    const end = this.kernel.encodeJson(from, to, first ? 1 : 0, this.jsonAt);
    return new Uint8Array(this.kernel.memory.buffer, this.jsonAt, end - this.jsonAt);
  }

  /** Entries one {@link encodeJson} call takes. */
  static readonly jsonEntries = JSON_ENTRIES;
}

const align = (n: number, to: number): number => Math.ceil(n / to) * to;

/**
 * An empty batch of `capacity` entries in a kernel instance of its own (to fill and
 * encode without a walk), or null when the kernel is unavailable.
 */
export function newKernelMapBatch(capacity: number): KernelMapBatch | null {
  const mod = wasmKernel('flat-walk');
  if (mod === null) return null;
  const k = instantiate<KernelExports>(mod);
  const batchAt = align(k.heapBase(), 8);
  const jsonAt = align(batchAt + MapBatch.bytes(capacity), 8);
  ensureMemory(k.memory, jsonAt + TEXT_BYTES + NAMES_BYTES);
  k.setup(batchAt, 0, batchAt, capacity);
  return new KernelMapBatch(k, batchAt, capacity, jsonAt);
}

/**
 * Walks `[start, end)` (start < end) of the layers `drivers` (top first) in the kernel,
 * handing full batches (of `capacity` entries, at most BATCH_ENTRIES) and the last one to
 * `sink`. Returns 'done' when the whole span was handed out, a {@link FlatWalkResume} when
 * the JavaScript walk must go on, or null (nothing done) when the kernel cannot serve this
 * chain. As the JavaScript walk, on an error it hands out the entries finished before it,
 * then throws.
 */
export async function kernelWalk(
  drivers: readonly Qcow2Driver[],
  start: number,
  end: number,
  capacity: number,
  counters: StatusCounters,
  sink: Sink,
): Promise<'done' | FlatWalkResume | null> {
  let bytes = 0;
  for (const d of drivers) {
    if (d.geometry.extendedL2 || d.hasDataFile) return null;
    bytes += LAYER_BYTES + align(d.l1Words.byteLength, 8) + d.clusterSize;
  }
  if (bytes > MAX_KERNEL_BYTES) return null;
  const mod = wasmKernel('flat-walk');
  if (mod === null) return null;
  const k = instantiate<KernelExports>(mod);
  kernelWalkCounts.walks++;

  // Layout: layer records, L1 copies, L2 slots, the batch, the text, the names.
  const base = align(k.heapBase(), 8);
  const l1At: number[] = [];
  const slotAt: number[] = [];
  let at = base + drivers.length * LAYER_BYTES;
  for (const d of drivers) {
    l1At.push(at);
    at = align(at + d.l1Words.byteLength, 8);
  }
  for (const d of drivers) {
    slotAt.push(at);
    at += d.clusterSize;
  }
  const entries = Math.max(1, Math.min(capacity, BATCH_ENTRIES));
  const batchAt = at;
  at = align(at + MapBatch.bytes(entries), 8);
  const jsonAt = at;
  at += TEXT_BYTES + NAMES_BYTES;
  ensureMemory(k.memory, at);

  const mem = k.memory.buffer;
  const view = new DataView(mem);
  drivers.forEach((d, i) => {
    const rec = base + i * LAYER_BYTES;
    view.setFloat64(rec, d.length, true);
    view.setInt32(rec + 8, d.geometry.clusterBits, true);
    view.setInt32(rec + 12, d.geometry.version, true);
    view.setInt32(rec + 16, l1At[i] as number, true);
    view.setInt32(rec + 20, d.l1Words.length >>> 1, true);
    view.setInt32(rec + 24, slotAt[i] as number, true);
    new Uint32Array(mem, l1At[i] as number, d.l1Words.length).set(d.l1Words);
  });
  k.setup(base, drivers.length, batchAt, entries);
  k.begin(start, end);
  const batch = new KernelMapBatch(k, batchAt, entries, jsonAt);

  try {
    for (;;) {
      const r = k.walk();
      if (r === FULL) {
        batch.count = k.count();
        k.resetCount();
        const p = sink(batch);
        if (p !== undefined) await p;
      } else if (r === NEED) {
        const layer = k.needLayer();
        const d = drivers[layer] as Qcow2Driver;
        const off = k.needTable();
        const p = d.loadL2ForWalk(off, k.position());
        if (p !== undefined) await p;
        // Evicted again before this ran (a tiny cache): the kernel asks again.
        const words = d.cachedL2Words(off);
        if (words !== undefined) {
          new Uint32Array(mem, slotAt[layer] as number, words.length).set(words);
          k.setSlot(layer, off);
          // The walk goes forward and keeps its own copy: the buffer is recycled for the next table.
          d.releaseL2(off);
        }
      } else if (r === ASK) {
        const layer = k.needLayer();
        if (await (drivers[layer] as Qcow2Driver).mappingRecurses()) return resumeFrom(k, batch);
        k.setReady(layer);
      } else if (r === DONE) {
        batch.count = k.finish();
        k.resetCount();
        const p = sink(batch);
        if (p !== undefined) await p;
        return 'done';
      } else {
        // BAIL (or any other answer): the JavaScript walk goes on from here.
        return resumeFrom(k, batch);
      }
    }
  } catch (e) {
    // qemu-img has printed every entry finished before the failure.
    const n = k.count();
    if (n > 0) {
      k.resetCount();
      batch.count = n;
      const p = sink(batch);
      if (p !== undefined) await p;
    }
    throw e;
  } finally {
    counters.driverCalls += k.lookups();
  }
}

function resumeFrom(k: KernelExports, batch: MapBatch): FlatWalkResume {
  kernelWalkCounts.handovers++;
  return {
    pos: k.position(),
    batch,
    count: k.count(),
    start: k.pendingStart(),
    length: k.pendingLength(),
    depth: k.pendingDepth(),
    attrs: k.pendingAttrs(),
    offset: k.pendingOffset(),
  };
}
