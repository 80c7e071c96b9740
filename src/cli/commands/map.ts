/**
 * `vdisk map`: the mapping map (qemu-img map compatible) or the allocation map.
 */
import { VdiskError } from '../../errors.js';
import type { Image } from '../../image.js';
import { HUMAN_MAP_HEADER, HUMAN_MAP_UNMAPPABLE, mapEntryHuman, writeMapEntryJson } from '../format/map-format.js';
import { writeMapBatchJson } from '../format/map-json-batch.js';
import { MapBatch } from '../../status/map-batch.js';
import { writeMapBatchHuman, type HumanMapNames } from '../format/map-human-batch.js';
import { AsciiBuffer } from '../ascii-buffer.js';
import type { Output } from '../output.js';

const SEP = Buffer.from(',\n', 'latin1');

/** Options of the map command after parsing. */
export interface MapCommandOptions {
  readonly output: 'human' | 'json';
  readonly mode: 'mapping' | 'allocation';
  readonly start: number;
  readonly maxLength: number | undefined;
}

/** Raised when the human table meets data without a host offset (as qemu-img fails). */
export class UnmappableDataError extends VdiskError {}

/** Runs the map command on an opened image. */
export async function runMap(img: Image, opts: MapCommandOptions, out: Output): Promise<void> {
  const range = opts.maxLength === undefined ? { start: opts.start } : { start: opts.start, length: opts.maxLength };
  if (opts.mode === 'allocation') {
    await out.write('[');
    let first = true;
    for await (const e of img.allocationExtents(range)) {
      await out.write(
        `${first ? '' : ',\n'}{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}}`,
      );
      first = false;
    }
    await out.write(']\n');
    return;
  }
  if (opts.output === 'json') {
    await out.flush();
    const buf = new AsciiBuffer(out.stream);
    const state = { printed: 0 };
    try {
      await writeJsonMap(img, range, buf, state);
    } catch (e) {
      // As qemu-img: what was printed before the failure stays printed ("[" at least).
      if (state.printed > 0) buf.bytes(SEP);
      await buf.flush();
      throw e;
    }
    return;
  }
  await out.write(HUMAN_MAP_HEADER);
  if (await writeHumanFlatMap(img, range, out)) return;
  for await (const batch of img.mapEntryBatches({ ...range, human: true })) {
    let s = '';
    for (const e of batch) {
      if (e.data && e.offset === null) {
        await out.write(s);
        throw new UnmappableDataError('MAP_UNMAPPABLE_DATA', HUMAN_MAP_UNMAPPABLE, { field: 'map entry', offset: e.start });
      }
      s += mapEntryHuman(e);
    }
    await out.write(s);
  }
}

/**
 * The human table from the flat walk, when the image allows it (false: nothing done). Its
 * rows are the walk's plain data entries (`mapEntries` with `human` merges more, but only
 * entries the table does not print); as there, data without a host offset fails the table
 * after the rows before it.
 */
async function writeHumanFlatMap(img: Image, range: { start: number; length?: number }, out: Output): Promise<boolean> {
  if (!img.canWalkFlat) return false;
  await out.flush();
  const buf = new AsciiBuffer(out.stream);
  /** Per layer: its host file's name and a newline, as printed (UTF-8, as qemu-img's bytes). */
  const byDepth: Buffer[] = [];
  let all: Uint8Array[] | undefined;
  const names: HumanMapNames = {
    of: (depth) => (byDepth[depth] ??= Buffer.from(img.flatMapFileName(depth) + '\n', 'utf8')),
    // Once: the kernel copies a new array of names into its memory.
    all: () => (all ??= img.layers.map((_, depth) => names.of(depth))),
  };
  try {
    return await img.walkFlatMap(range, new MapBatch(), (batch) => {
      const stop = writeMapBatchHuman(buf, batch, names);
      if (stop >= 0) {
        throw new UnmappableDataError('MAP_UNMAPPABLE_DATA', HUMAN_MAP_UNMAPPABLE, { field: 'map entry', offset: batch.start[stop] as number });
      }
      return buf.wantsFlush ? buf.flush() : undefined;
    });
  } finally {
    // As qemu-img: the rows printed before a failure (of the table or of the walk) stay printed.
    await buf.flush();
  }
}

/**
 * The JSON map: the flat walk when the image allows it, else the general one. qemu-img
 * prints `,\n` after an entry as soon as the next one is known, so after a failure the
 * output ends with it; `state.printed` lets the caller reproduce that.
 */
async function writeJsonMap(img: Image, range: { start: number; length?: number }, buf: AsciiBuffer, state: { printed: number }): Promise<void> {
  buf.text('[');
  const flat = await img.walkFlatMap(range, new MapBatch(), (batch) => {
    writeMapBatchJson(buf, batch, state.printed === 0);
    state.printed += batch.count;
    return buf.wantsFlush ? buf.flush() : undefined;
  });
  if (!flat) {
    for await (const batch of img.mapEntryBatches(range)) {
      for (const e of batch) {
        if (state.printed++ > 0) buf.bytes(SEP);
        writeMapEntryJson(buf, e);
      }
      if (buf.wantsFlush) await buf.flush();
    }
  }
  buf.text(']\n');
  await buf.flush();
}
