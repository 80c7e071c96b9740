/**
 * C strings read from image bytes, decoded with QEMU's semantics.
 *
 * QEMU keeps names from the image (backing and data-file names, snapshot ids and names,
 * bitmap names, the LUKS uuid) as C strings: they end at the first NUL and may be cut to a
 * buffer size. When QEMU prints them as JSON, `mod_utf8_codepoint` turns each invalid
 * UTF-8 sequence into one U+FFFD. {@link decodeCString} does both and also says whether
 * the bytes were clean, so callers that must *use* a name (open a file by it) can refuse
 * one that the decoding changed.
 */

/** Smallest code point of each multi-byte length (2..6), to spot overlong forms. */
const MIN_CP = [0x80, 0x800, 0x10000, 0x200000, 0x4000000];

/** A decoded C string and what the decoding found. */
export interface DecodedCString {
  /** The text: bytes up to the first NUL (and `maxBytes`), invalid sequences as U+FFFD. */
  readonly text: string;
  /** Index of the first NUL byte in the input, or -1 when there is none. */
  readonly nulAt: number;
  /** True when at least one invalid UTF-8 sequence was replaced by U+FFFD. */
  readonly replaced: boolean;
}

/**
 * Decodes `bytes` as QEMU does: stop at the first NUL (and after at most `maxBytes`
 * bytes), then decode UTF-8 the way `mod_utf8_codepoint` does — each invalid sequence (bad
 * lead byte, missing continuation, overlong form, surrogate, beyond U+10FFFF) becomes one
 * U+FFFD; `C0 80` is U+0000; noncharacters are kept.
 */
export function decodeCString(bytes: Uint8Array, maxBytes = Infinity): DecodedCString {
  const nulAt = bytes.indexOf(0);
  const end = Math.min(nulAt < 0 ? bytes.length : nulAt, maxBytes);
  let out = '';
  let replaced = false;
  let i = 0;
  while (i < end) {
    const b = bytes[i] ?? 0;
    if (b < 0x80) {
      // Plain ASCII runs are the common case: copy them in one go.
      let j = i + 1;
      while (j < end && (bytes[j] ?? 0x80) < 0x80) j++;
      out += String.fromCharCode(...bytes.subarray(i, Math.min(j, i + 4096)));
      i = Math.min(j, i + 4096);
      continue;
    }
    if (b >= 0xfe || (b & 0x40) === 0) {
      out += '\ufffd';
      replaced = true;
      i++;
      continue;
    }
    let len = 0;
    let mask = 0x80;
    for (; b & mask; mask >>= 1) len++;
    let cp = b & (mask - 1);
    let used = 1;
    for (; used < len; used++) {
      const c = i + used < end ? (bytes[i + used] ?? 0) : 0;
      if ((c & 0xc0) !== 0x80) {
        cp = -1;
        break;
      }
      cp = cp * 64 + (c & 0x3f);
    }
    i += used;
    const overlong = cp >= 0 && cp < (MIN_CP[len - 2] ?? 0) && !(cp === 0 && len === 2);
    if (cp < 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) || overlong) {
      out += '\ufffd';
      replaced = true;
    } else {
      out += String.fromCodePoint(cp);
    }
  }
  return { text: out, nulAt, replaced };
}

/** The text of {@link decodeCString}: a C string as QEMU prints it. */
export function qemuCString(bytes: Uint8Array, maxBytes = Infinity): string {
  return decodeCString(bytes, maxBytes).text;
}
