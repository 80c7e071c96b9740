/**
 * The backup variants of `vdisk map`: a dirty bitmap's runs (`--bitmap NAME`, optionally
 * split by block status with `--with-allocation`) and the changed-block map of the layers
 * above a base (`--mode=allocation --base FILE`).
 *
 * JSON uses the map's layout: one `{ "start": N, "length": N, … }` object per line, covering
 * the requested range. The human table lists only dirty runs.
 */
import { InvalidArgumentError } from '../../errors.js';
import type { Image } from '../../image.js';
import type { ChangedRun } from '../../status/bitmap-status.js';
import type { Output } from '../output.js';

/** Options of `map --bitmap`. */
export interface BitmapMapOptions {
  readonly bitmap: string;
  readonly withAllocation: boolean;
  readonly output: 'human' | 'json';
  readonly start: number;
  readonly maxLength: number | undefined;
}

/** Header of the human bitmap table. */
export const HUMAN_BITMAP_HEADER = 'Offset          Length          State\n';

function hex(n: number): string {
  return n === 0 ? '0' : '0x' + n.toString(16);
}

/** One JSON entry of a bitmap map, without separators. */
export function bitmapEntryJson(e: ChangedRun): string {
  return `{ "start": ${e.start}, "length": ${e.length}, "dirty": ${e.dirty}${e.zero === undefined ? '' : `, "zero": ${e.zero}`}}`;
}

/** One human row (dirty runs only), with newline. */
export function bitmapEntryHuman(e: ChangedRun): string {
  const state = e.zero === true ? 'dirty, zero' : 'dirty';
  return `${hex(e.start).padEnd(16)}${hex(e.length).padEnd(16)}${state}\n`;
}

/** `map --bitmap NAME [--with-allocation]`. */
export async function runBitmapMap(img: Image, opts: BitmapMapOptions, out: Output): Promise<void> {
  const range = opts.maxLength === undefined ? { start: opts.start } : { start: opts.start, length: opts.maxLength };
  const runs = opts.withAllocation ? img.changedExtents(opts.bitmap, range) : img.dirtyExtents(opts.bitmap, range);
  // The first run is asked for before anything is printed: a bad bitmap prints nothing.
  const first = await runs.next();
  const all = async function* (): AsyncGenerator<ChangedRun> {
    if (first.done !== true) yield first.value;
    yield* runs;
  };
  if (opts.output === 'json') {
    await out.write('[');
    let sep = '';
    for await (const e of all()) {
      await out.write(sep + bitmapEntryJson(e));
      sep = ',\n';
    }
    await out.write(']\n');
    return;
  }
  await out.write(HUMAN_BITMAP_HEADER);
  for await (const e of all()) if (e.dirty) await out.write(bitmapEntryHuman(e));
}

/** Options of `map --mode=allocation --base FILE`. */
export interface BaseMapOptions {
  readonly base: string;
  readonly start: number;
  readonly maxLength: number | undefined;
}

/** `map --mode=allocation --base FILE`: what the layers above FILE allocate. */
export async function runBaseMap(img: Image, opts: BaseMapOptions, out: Output): Promise<void> {
  const base = await img.layerIndexOf(opts.base);
  if (base === null) {
    throw new InvalidArgumentError(
      'ARG_BASE_NOT_IN_CHAIN',
      `'${opts.base}' is not a layer of the backing chain of '${img.top.filename}' (layers: ${img.layers.map((l) => l.filename).join(', ')})`,
      { field: '--base', value: opts.base },
    );
  }
  const range = opts.maxLength === undefined ? { start: opts.start } : { start: opts.start, length: opts.maxLength };
  await out.write('[');
  let first = true;
  for await (const e of img.allocationExtents({ ...range, base })) {
    await out.write(`${first ? '' : ',\n'}{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}}`);
    first = false;
  }
  await out.write(']\n');
}
