/**
 * `vdisk map`: the mapping map (qemu-img map compatible) or the allocation map.
 */
import { VdiskError } from '../../errors.js';
import type { Image } from '../../image.js';
import { HUMAN_MAP_HEADER, HUMAN_MAP_UNMAPPABLE, mapEntryHuman, writeMapEntryJson, writeMapEntryJsonParts } from '../format/map-format.js';
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
    const buf = new AsciiBuffer();
    buf.text('[');
    let first = true;
    const flat = await img.walkFlatMap(
      range,
      (start, length, present, zero, data, offset) => {
        if (!first) buf.bytes(SEP);
        writeMapEntryJsonParts(buf, start, length, 0, present, zero, data, offset);
        first = false;
      },
      () => (buf.wantsFlush ? buf.flush() : undefined),
    );
    if (flat) {
      buf.text(']\n');
      await buf.flush();
      return;
    }
    for await (const batch of img.mapEntryBatches(range)) {
      for (const e of batch) {
        if (!first) buf.bytes(SEP);
        writeMapEntryJson(buf, e);
        first = false;
      }
      if (buf.wantsFlush) await buf.flush();
    }
    buf.text(']\n');
    await buf.flush();
    return;
  }
  await out.write(HUMAN_MAP_HEADER);
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
