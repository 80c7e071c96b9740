/**
 * qemu-img info's human output, line for line as QEMU 7.2 prints it
 * (`bdrv_image_info_dump`, `bdrv_snapshot_dump`, `bdrv_image_info_specific_dump`,
 * `size_to_str`).
 *
 * printf field widths count bytes, not characters, so padding is computed on the UTF-8
 * length. Snapshot dates are shown in local time (the TZ environment variable), as glib's
 * `g_date_time_new_from_unix_local` does.
 */
import type { ImageInfo, SnapshotInfo } from '../../status/image-info.js';
import { qdictEntries } from './qemu-json.js';

const encoder = new TextEncoder();
const SIZE_SUFFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/** UTF-8 length of `s`: what printf's `%Ns` counts. */
function byteLength(s: string): number {
  return encoder.encode(s).length;
}

/** printf `%-Ns`. */
function padRight(s: string, width: number): string {
  return s + ' '.repeat(Math.max(0, width - byteLength(s)));
}

/** printf `%Ns`. */
function padLeft(s: string, width: number): string {
  return ' '.repeat(Math.max(0, width - byteLength(s))) + s;
}

/** `10n ** k` for k ≥ 0. */
function pow10(k: number): bigint {
  return 10n ** BigInt(k);
}

/**
 * C's `printf("%.3g", num / 2^shift)` for a non-negative integer `num`, computed exactly
 * (glibc rounds the exact binary value, ties to even).
 */
export function formatG3(num: bigint, shift: number): string {
  const P = 3;
  if (num === 0n) return '0';
  const den = 1n << BigInt(shift);
  // Decimal exponent X of the value: 10^X <= num/den < 10^(X+1).
  const atLeast = (k: number): boolean => (k >= 0 ? num >= pow10(k) * den : num * pow10(-k) >= den);
  let x = num.toString().length - 1 - Math.floor(shift * Math.log10(2));
  while (atLeast(x + 1)) x++;
  while (!atLeast(x)) x--;
  const e = P - 1 - x;
  const n = e >= 0 ? num * pow10(e) : num;
  const d = e >= 0 ? den : den * pow10(-e);
  let q = n / d;
  const r2 = (n % d) * 2n;
  if (r2 > d || (r2 === d && (q & 1n) === 1n)) q++;
  if (q === pow10(P)) {
    q /= 10n;
    x++;
  }
  const digits = q.toString();
  const strip = (s: string): string => s.replace(/\.?0+$/, '');
  if (x < -4 || x >= P) {
    const mantissa = digits.length > 1 ? strip(`${digits[0] ?? ''}.${digits.slice(1)}`) : digits;
    return `${mantissa}e${x < 0 ? '-' : '+'}${String(Math.abs(x)).padStart(2, '0')}`;
  }
  const decimals = P - 1 - x;
  if (decimals === 0) return digits;
  const padded = digits.padStart(decimals + 1, '0');
  return strip(`${padded.slice(0, padded.length - decimals)}.${padded.slice(-decimals)}`);
}

/**
 * QEMU's `size_to_str`: a byte count with a binary suffix and 3 significant digits
 * ("0 B", "512 B", "1 KiB", "1.5 MiB", "224 KiB", "0.977 KiB", even "1e+03 KiB").
 * The value is taken as an unsigned 64-bit integer and converted to a double first.
 */
export function sizeToStr(value: number | bigint): string {
  const v = BigInt.asUintN(64, BigInt(value));
  const d = Number(v);
  // frexp(d / (1000.0 / 1024.0)) gives an exponent e with 2^(e-1) <= x < 2^e; the
  // suffix index is (e - 1) / 10 (truncated), i.e. the largest i with x >= 2^(10 i).
  const x = d / (1000 / 1024);
  let i = 0;
  while (i + 1 < SIZE_SUFFIXES.length && x >= 2 ** (10 * (i + 1))) i++;
  return `${formatG3(BigInt(d), 10 * i)} ${SIZE_SUFFIXES[i] ?? ''}B`;
}

/** Local-time `%Y-%m-%d %H:%M:%S` of a Unix time in seconds. */
function localDate(sec: number): string {
  const t = new Date(sec * 1000);
  const p2 = (n: number): string => String(n).padStart(2, '0');
  return `${t.getFullYear()}-${p2(t.getMonth() + 1)}-${p2(t.getDate())} ${p2(t.getHours())}:${p2(t.getMinutes())}:${p2(t.getSeconds())}`;
}

/** The header line of the snapshot table (`bdrv_snapshot_dump(NULL)`), without newline. */
export function snapshotHeader(): string {
  return padRight('ID', 10) + padRight('TAG', 17) + padLeft('VM SIZE', 8) + padLeft('DATE', 20) + padLeft('VM CLOCK', 13) + padLeft('ICOUNT', 11);
}

/** One row of the snapshot table (`bdrv_snapshot_dump(sn)`), without newline. */
export function snapshotRow(sn: SnapshotInfo): string {
  const clockNs = BigInt(sn['vm-clock-sec']) * 1_000_000_000n + BigInt(sn['vm-clock-nsec']);
  const secs = clockNs / 1_000_000_000n;
  const p2 = (n: bigint): string => String(BigInt.asIntN(32, n)).padStart(2, '0');
  const clock = `${p2(secs / 3600n)}:${p2((secs / 60n) % 60n)}:${p2(secs % 60n)}.${String(BigInt.asIntN(32, (clockNs / 1_000_000n) % 1000n)).padStart(3, '0')}`;
  const icount = sn.icount === undefined ? '' : String(BigInt.asIntN(64, BigInt(sn.icount)));
  return (
    padRight(sn.id, 9) + ' ' + padRight(sn.name, 16) + ' ' + padLeft(sizeToStr(sn['vm-state-size']), 8) +
    padLeft(localDate(sn['date-sec'] >>> 0), 20) + padLeft(clock, 13) + padLeft(icount, 11)
  );
}

/** A scalar as `dump_qobject` prints it. */
function scalarText(v: unknown): string {
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number' || typeof v === 'bigint') return BigInt(v).toString();
  return String(v);
}

function isComposite(v: unknown): v is object {
  return v !== null && typeof v === 'object';
}

/**
 * `dump_qobject` for a dict or list at `indent` levels of 4 spaces: keys with dashes shown
 * as spaces, in QDict order; list items as `[i]:`; composites open on their own line.
 */
export function dumpQObject(v: object, indent: number): string {
  const pad = ' '.repeat(indent * 4);
  const items: Array<[string, unknown]> = Array.isArray(v)
    ? v.map((x: unknown, i): [string, unknown] => [`[${i}]`, x])
    : qdictEntries(v).map(([k, x]): [string, unknown] => [k.replaceAll('-', ' '), x]);
  let out = '';
  for (const [label, x] of items) {
    out += isComposite(x) ? `${pad}${label}:\n${dumpQObject(x, indent + 1)}` : `${pad}${label}: ${scalarText(x)}\n`;
  }
  return out;
}

/** The human text of one image's info (ends with a newline). */
export function infoHuman(info: ImageInfo): string {
  let s = `image: ${info.filename}\nfile format: ${info.format}\n`;
  s += `virtual size: ${sizeToStr(info['virtual-size'])} (${info['virtual-size']} bytes)\n`;
  s += `disk size: ${sizeToStr(info['actual-size'])}\n`;
  if (info.encrypted === true) s += 'encrypted: yes\n';
  if (info['cluster-size'] !== undefined) s += `cluster_size: ${info['cluster-size']}\n`;
  if (info['dirty-flag']) s += 'cleanly shut down: no\n';
  const backing = info['backing-filename'];
  if (backing !== undefined) {
    const full = info['full-backing-filename'];
    s += `backing file: ${backing}`;
    if (full === undefined) s += ' (cannot determine actual path)';
    else if (full !== backing) s += ` (actual path: ${full})`;
    s += '\n';
    if (info['backing-filename-format'] !== undefined) s += `backing file format: ${info['backing-filename-format']}\n`;
  }
  if (info.snapshots !== undefined) {
    s += `Snapshot list:\n${snapshotHeader()}\n`;
    for (const sn of info.snapshots) s += `${snapshotRow(sn)}\n`;
  }
  const spec = info['format-specific'];
  if (spec !== undefined) s += `Format specific information:\n${dumpQObject(spec.data, 1)}`;
  return s;
}
