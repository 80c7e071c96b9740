/**
 * Printing `qemu-img map` entries exactly as qemu-img 7.2 does (`dump_map_entry`):
 * JSON objects with fixed key order, `,\n` between them inside `[` … `]\n`; the human table
 * with `%#-16x` columns, rows only for plain data.
 */
import type { MapEntry } from '../../status/map-entries.js';
import type { AsciiBuffer } from '../ascii-buffer.js';

/** One JSON entry, without separators. */
export function mapEntryJson(e: MapEntry): string {
  let s = `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}`;
  if (e.offset !== null) s += `, "offset": ${e.offset}`;
  return s + '}';
}

const enc = (t: string): Uint8Array => Buffer.from(t, 'latin1');
const J_START = enc('{ "start": ');
const J_LENGTH = enc(', "length": ');
const J_DEPTH = enc(', "depth": ');
const J_PRESENT = [enc(', "present": false'), enc(', "present": true')] as const;
const J_ZERO = [enc(', "zero": false'), enc(', "zero": true')] as const;
const J_DATA = [enc(', "data": false'), enc(', "data": true')] as const;
const J_OFFSET = enc(', "offset": ');
const J_END = enc('}');

/** Writes one JSON entry into `out` (same bytes as {@link mapEntryJson}). */
export function writeMapEntryJson(out: AsciiBuffer, e: MapEntry): void {
  out.bytes(J_START);
  out.uint(e.start);
  out.bytes(J_LENGTH);
  out.uint(e.length);
  out.bytes(J_DEPTH);
  out.uint(e.depth);
  out.bytes(J_PRESENT[e.present ? 1 : 0]);
  out.bytes(J_ZERO[e.zero ? 1 : 0]);
  out.bytes(J_DATA[e.data ? 1 : 0]);
  if (e.offset !== null) {
    out.bytes(J_OFFSET);
    out.uint(e.offset);
  }
  out.bytes(J_END);
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
