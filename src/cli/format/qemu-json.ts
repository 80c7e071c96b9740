/**
 * JSON printed byte for byte the way qemu-img 7.2 prints it (`qobject_to_json_pretty` over
 * the QObject that the QAPI output visitor built).
 *
 * Three QEMU behaviours matter:
 *
 * 1. **Key order.** A QDict is a hash table of 512 buckets (`QDICT_BUCKET_MAX`) indexed by
 *    `tdb_hash(key) % 512`; iteration walks buckets 0..511 and, inside a bucket, goes from
 *    the most recently inserted key to the oldest (`QLIST_INSERT_HEAD`). A JS object's own
 *    key order is taken as the insertion order (QAPI visit order), so objects should be
 *    built in the order QEMU's visitor visits the fields.
 * 2. **Layout** (`qobject/json-writer.c`): 4-space indentation; `"key": value`; members
 *    separated by `,` + newline; an empty list is `[` newline indent `]`, an empty dict
 *    `{` newline indent `}`.
 * 3. **Strings**: `"`, `\`, `\b`, `\f`, `\n`, `\r`, `\t` are escaped; every other code
 *    point below 0x20 or from 0x7F up is written as `\uXXXX` (upper-case hex, surrogate
 *    pairs above the BMP); invalid UTF-8, surrogates and Unicode noncharacters become
 *    `\uFFFD`. `/` is not escaped.
 */

/** Number of hash buckets of a QEMU QDict (`QDICT_BUCKET_MAX`). */
export const QDICT_BUCKET_MAX = 512;

const encoder = new TextEncoder();

/**
 * QEMU's `tdb_hash` (from Samba's tdb) of a key's UTF-8 bytes, in 32-bit unsigned
 * arithmetic.
 */
export function tdbHash(key: string): number {
  const bytes = encoder.encode(key);
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    value = (value + (((bytes[i] ?? 0) << ((i * 5) % 24)) >>> 0)) >>> 0;
  }
  return (Math.imul(1103515243, value) + 12345) >>> 0;
}

/** The QDict bucket a key lands in. */
export function qdictBucket(key: string): number {
  return tdbHash(key) % QDICT_BUCKET_MAX;
}

/**
 * The order in which QEMU iterates a QDict whose keys were inserted in `keys` order:
 * ascending bucket, and inside one bucket the reverse of insertion order.
 */
export function qdictOrder(keys: readonly string[]): string[] {
  return keys
    .map((key, index) => ({ key, index, bucket: qdictBucket(key) }))
    .sort((a, b) => a.bucket - b.bucket || b.index - a.index)
    .map((e) => e.key);
}

/** The members of a plain object that QEMU would print (undefined members are absent), in QDict order. */
export function qdictEntries(obj: object): Array<[string, unknown]> {
  const present = Object.entries(obj).filter(([, v]) => v !== undefined);
  const byKey = new Map(present);
  return qdictOrder(present.map(([k]) => k)).map((k) => [k, byKey.get(k)]);
}

/** True for the code points `mod_utf8_codepoint` refuses although they are well-formed. */
function isNoncharacter(cp: number): boolean {
  return (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) === 0xfffe;
}

function hex4(n: number): string {
  return n.toString(16).toUpperCase().padStart(4, '0');
}

/** A string literal exactly as QEMU's JSON writer (`quoted_str`) writes it. */
export function qemuQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    let cp = ch.codePointAt(0) ?? 0xfffd;
    switch (cp) {
      case 0x22: out += '\\"'; continue;
      case 0x5c: out += '\\\\'; continue;
      case 0x08: out += '\\b'; continue;
      case 0x0c: out += '\\f'; continue;
      case 0x0a: out += '\\n'; continue;
      case 0x0d: out += '\\r'; continue;
      case 0x09: out += '\\t'; continue;
    }
    if ((cp >= 0xd800 && cp <= 0xdfff) || isNoncharacter(cp)) cp = 0xfffd;
    if (cp > 0xffff) {
      out += `\\u${hex4(0xd800 + ((cp - 0x10000) >> 10))}\\u${hex4(0xdc00 + ((cp - 0x10000) & 0x3ff))}`;
    } else if (cp < 0x20 || cp >= 0x7f) {
      out += `\\u${hex4(cp)}`;
    } else {
      out += ch;
    }
  }
  return out + '"';
}

function scalar(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return qemuQuote(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      return v.toString();
    case 'number':
      return Number.isInteger(v) ? v.toFixed(0) : String(v);
    default:
      return 'null';
  }
}

/**
 * Serialises `v` as qemu-img's `--output=json` does (without the final newline).
 * Objects are printed in QDict order (see the module comment), arrays in order.
 */
export function qemuJson(v: unknown, indent = 0): string {
  const pad = (n: number): string => ' '.repeat(4 * n);
  if (Array.isArray(v)) {
    if (v.length === 0) return `[\n${pad(indent)}]`;
    const items = v.map((x: unknown) => pad(indent + 1) + qemuJson(x, indent + 1));
    return `[\n${items.join(',\n')}\n${pad(indent)}]`;
  }
  if (v !== null && typeof v === 'object') {
    const entries = qdictEntries(v);
    if (entries.length === 0) return `{\n${pad(indent)}}`;
    const members = entries.map(([k, x]) => `${pad(indent + 1)}${qemuQuote(k)}: ${qemuJson(x, indent + 1)}`);
    return `{\n${members.join(',\n')}\n${pad(indent)}}`;
  }
  return scalar(v);
}
