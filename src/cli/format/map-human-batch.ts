/**
 * The human `qemu-img map` table's rows for a batch of the flat walk (QEMU 7.2
 * `dump_map_entry`): one per plain data entry (data, not zero) — start, length and host
 * offset as `%#-16x`, then the name of the file the offset is in — and the table fails at
 * a data entry without an offset (compressed clusters). A batch the flat walk's kernel
 * filled is encoded there (wasm/flat-walk.ts `encodeHuman`); any other in JavaScript, which
 * defines the bytes (tests hold the two to each other).
 */
import type { AsciiBuffer } from '../ascii-buffer.js';
import { KernelMapBatch } from '../../status/flat-walk-kernel.js';
import { MAP_DATA, MAP_ZERO, type MapBatch } from '../../status/map-batch.js';

/** The names printed for a batch's entries: per depth, the host file's name and a newline, as bytes. */
export interface HumanMapNames {
  /** The name for entries of layer `depth`. */
  of(depth: number): Uint8Array;
  /** Every layer's, top first (for the kernel, which takes them all at once): the same array each call. */
  all(): readonly Uint8Array[];
}

/**
 * Writes the rows of `batch`'s entries into `out`, in order, up to the first data entry
 * without an offset; returns that entry's index (the table fails there), or -1.
 */
export function writeMapBatchHuman(out: AsciiBuffer, batch: MapBatch, names: HumanMapNames): number {
  // The kernel takes the names unless they do not fit its room, and humanEntries() a call.
  if (batch instanceof KernelMapBatch && batch.useHumanNames(names.all())) {
    const step = batch.humanEntries();
    for (let i = 0; i < batch.count; i += step) {
      const rows = batch.encodeHuman(i, Math.min(batch.count, i + step));
      out.bytes(rows.bytes);
      if (rows.stop >= 0) return rows.stop;
    }
    return -1;
  }
  for (let i = 0; i < batch.count; i++) {
    const attrs = batch.attrs[i] as number;
    if ((attrs & MAP_DATA) === 0) continue;
    const offset = batch.offset[i] as number;
    if (offset < 0) return i;
    if ((attrs & MAP_ZERO) !== 0) continue;
    out.hexColumn(batch.start[i] as number);
    out.hexColumn(batch.length[i] as number);
    out.hexColumn(offset);
    out.bytes(names.of(batch.depth[i] as number));
  }
  return -1;
}
