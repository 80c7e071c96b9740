/**
 * Printing `qemu-img map` entries exactly as qemu-img 7.2 does (`dump_map_entry`):
 * JSON objects with fixed key order, `,\n` between them inside `[` … `]\n`; the human table
 * with `%#-16x` columns, rows only for plain data.
 */
import type { MapEntry } from '../../status/map-entries.js';
import type { AsciiBuffer } from '../ascii-buffer.js';

const enc = (t: string): Uint8Array => Buffer.from(t, 'latin1');
const J_START = enc('{ "start": ');
const J_LENGTH = enc(', "length": ');
const J_DEPTH = enc(', "depth": ');
const J_OFFSET = enc(', "offset": ');
const J_END = enc('}');
/** `, "present": P, "zero": Z, "data": D` for the eight combinations (index P*4 + Z*2 + D). */
const J_FLAGS = Array.from({ length: 8 }, (_, i) =>
  enc(`, "present": ${(i & 4) !== 0}, "zero": ${(i & 2) !== 0}, "data": ${(i & 1) !== 0}`),
);
/** The same, followed by the end of an entry without offset. */
const J_FLAGS_END = J_FLAGS.map((f) => enc(Buffer.from(f).toString('latin1') + '}'));

/** Writes one JSON entry, without separators, into `out`. */
export function writeMapEntryJson(out: AsciiBuffer, e: MapEntry): void {
  writeMapEntryJsonParts(out, e.start, e.length, e.depth, e.present, e.zero, e.data, e.offset ?? -1);
}

/** {@link writeMapEntryJson} from plain values; `offset` -1 means none. */
export function writeMapEntryJsonParts(
  out: AsciiBuffer,
  start: number,
  length: number,
  depth: number,
  present: boolean,
  zero: boolean,
  data: boolean,
  offset: number,
): void {
  out.bytes(J_START);
  out.uint(start);
  out.bytes(J_LENGTH);
  out.uint(length);
  out.bytes(J_DEPTH);
  out.uint(depth);
  const k = (present ? 4 : 0) + (zero ? 2 : 0) + (data ? 1 : 0);
  if (offset < 0) {
    out.bytes(J_FLAGS_END[k] as Uint8Array);
    return;
  }
  out.bytes(J_FLAGS[k] as Uint8Array);
  out.bytes(J_OFFSET);
  out.uint(offset);
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
