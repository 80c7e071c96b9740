/**
 * Persistent dirty bitmaps as a backup tool uses them: the bitmaps of the top layer, the
 * dirty and clean runs of one of them (what `qemu-nbd -B NAME` exports as
 * `qemu:dirty-bitmap:NAME`), and those runs split by what the chain reads as zero now, so a
 * dirty range that was trimmed or zeroed since needs no data copy.
 */
import { CorruptImageError, InvalidArgumentError } from '../errors.js';
import { bitmapDirtyRuns, hasIgnoredBitmapsExtension, ignoredBitmapsWarning, type DirtyRun } from '../formats/qcow2/bitmap-table.js';
import { loadBitmaps, type BitmapContext, type BitmapDirectoryEntry } from '../formats/qcow2/bitmaps.js';
import { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import type { ChainNode } from './chain-node.js';
import { contentRuns } from './data-extents.js';
import type { StatusCounters } from './one-layer.js';

/** A persistent dirty bitmap, as listed. */
export interface BitmapInfo {
  readonly name: string;
  /** Bytes of guest disk per bit. */
  readonly granularity: number;
  /** The flags `qemu-img info` shows. */
  readonly flags: ReadonlyArray<'in-use' | 'auto'>;
  /** The bitmap type (QEMU knows only dirty-tracking bitmaps). */
  readonly type: 'dirty-tracking';
  /** In use: not saved cleanly, so its contents are inconsistent and never used. */
  readonly inUse: boolean;
}

/** A dirty run split by content: `zero` is set on dirty runs only. */
export interface ChangedRun extends DirtyRun {
  /** For dirty runs: the range now reads as zeroes (nothing to copy). */
  readonly zero?: boolean;
}

function context(d: Qcow2Driver): BitmapContext {
  return { file: d.file.path, clusterSize: d.clusterSize, virtualSize: d.length };
}

/** The directory entries of `node`'s bitmaps (none for raw images, v2 images or no extension). */
export async function bitmapEntries(node: ChainNode): Promise<BitmapDirectoryEntry[]> {
  const d = node.driver;
  if (!(d instanceof Qcow2Driver) || d.header.version !== 3 || d.extensions.bitmaps === null) return [];
  return loadBitmaps(d.file, d.extensions.bitmaps, context(d));
}

/** The bitmaps of `node`, checked as QEMU checks them when it opens the image. */
export async function listBitmaps(node: ChainNode): Promise<BitmapInfo[]> {
  return (await bitmapEntries(node)).map((b) => ({
    name: b.name,
    granularity: b.granularity,
    flags: [...(b.inUse ? (['in-use'] as const) : []), ...(b.auto ? (['auto'] as const) : [])],
    type: 'dirty-tracking' as const,
    inUse: b.inUse,
  }));
}

/** Dirty and clean runs of bitmap `name` over `[start, end)`. */
export async function* dirtyRuns(node: ChainNode, name: string, start: number, end: number): AsyncGenerator<DirtyRun> {
  const entries = await bitmapEntries(node);
  const entry = entries.find((e) => e.name === name);
  const d = node.driver;
  if (entry === undefined && d instanceof Qcow2Driver && (await hasIgnoredBitmapsExtension(d.file, d.header))) {
    throw new CorruptImageError(
      'QCOW2_BITMAP_INCONSISTENT',
      `bitmap '${name}' cannot be used: ${ignoredBitmapsWarning(d.header.version)} (autoclear bit 0 is clear)`,
      { file: node.filename, field: 'autoclear_features', value: d.header.autoclearFeatures, limit: 'bit 0 set' },
    );
  }
  if (entry === undefined || !(d instanceof Qcow2Driver)) {
    throw new InvalidArgumentError(
      'ARG_BITMAP_NOT_FOUND',
      `bitmap '${name}' not found in '${node.filename}' (${entries.length === 0 ? 'it has no bitmaps' : `it has: ${entries.map((e) => e.name).join(', ')}`})`,
      { file: node.filename, field: 'bitmap', value: name },
    );
  }
  yield* bitmapDirtyRuns(d.file, entry, context(d), start, end);
}

/**
 * The runs of bitmap `name` with every dirty run split by what the chain reads now: dirty
 * parts that read as zero carry `zero: true`. Clean runs are passed through (their content
 * is not asked for).
 */
export async function* changedRuns(
  top: ChainNode,
  name: string,
  start: number,
  end: number,
  counters: StatusCounters,
): AsyncGenerator<ChangedRun> {
  let cur: { start: number; length: number; dirty: boolean; zero?: boolean } | null = null;
  const push = function* (r: ChangedRun): Generator<ChangedRun> {
    if (cur !== null && cur.dirty === r.dirty && cur.zero === r.zero && cur.start + cur.length === r.start) {
      cur.length += r.length;
      return;
    }
    if (cur !== null) yield cur;
    cur = { ...r };
  };
  for await (const run of dirtyRuns(top, name, start, end)) {
    if (!run.dirty) {
      yield* push(run);
      continue;
    }
    for await (const c of contentRuns(top, run.start, run.start + run.length, counters)) {
      yield* push({ start: c.start, length: c.length, dirty: true, zero: c.zero });
    }
  }
  if (cur !== null) yield cur;
}
