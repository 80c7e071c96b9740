/**
 * Printing `qemu-img map` entries exactly as qemu-img 7.2 does (`dump_map_entry`):
 * JSON objects with fixed key order, `,\n` between them inside `[` … `]\n`; the human table
 * with `%#-16x` columns, rows only for plain data.
 */
import type { MapEntry } from '../../status/map-entries.js';

/** One JSON entry, without separators. */
export function mapEntryJson(e: MapEntry): string {
  let s = `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}`;
  if (e.offset !== null) s += `, "offset": ${e.offset}`;
  return s + '}';
}

/** The human table's header line. */
export const HUMAN_MAP_HEADER = 'Offset          Length          Mapped to       File\n';

/** C's `%#-16x`: `0x` prefix except for zero, left-justified in 16 columns. */
function hex16(v: number): string {
  return (v === 0 ? '0' : '0x' + v.toString(16)).padEnd(16);
}

/** The human row of an entry, or '' when qemu-img prints none for it. */
export function mapEntryHuman(e: MapEntry): string {
  if (!e.data || e.zero) return '';
  return hex16(e.start) + hex16(e.length) + hex16(e.offset ?? 0) + (e.filename ?? '') + '\n';
}

/** qemu-img's failure text when human output meets data without a host offset. */
export const HUMAN_MAP_UNMAPPABLE = 'File contains external, encrypted or compressed clusters.';
