/**
 * Size arguments exactly as qemu-img reads them (QEMU `do_strtosz` in util/cutils.c): a
 * decimal integer (leading blanks and `+` allowed, no `-`), or `0x` hex without fraction or
 * suffix; an optional fraction, which needs a scaling suffix unless it is zero; an optional
 * suffix B, K, M, G, T, P, E (either case, powers of 1024) right after the number; nothing
 * after that.
 */
import { InvalidArgumentError } from '../errors.js';

const SUFFIX: Record<string, number> = { b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

function suffixMul(c: string | undefined): number {
  return c === undefined ? -1 : SUFFIX[c.toLowerCase()] ?? -1;
}

/** Parses `text` for option `option`; throws `InvalidArgumentError` (`ARG_SIZE`). */
export function parseSize(text: string, option: string): number {
  const result = parseSizeBig(text, option);
  if (result > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new InvalidArgumentError('ARG_SIZE', `${option} '${text}' is too large (at most ${Number.MAX_SAFE_INTEGER})`, {
      field: option, value: text, limit: Number.MAX_SAFE_INTEGER,
    });
  }
  return Number(result);
}

/** {@link parseSize} without the 2^53 limit: any size up to INT64_MAX, as qemu-img's `cvtnum`. */
export function parseSizeBig(text: string, option: string): bigint {
  const invalid = (): InvalidArgumentError =>
    new InvalidArgumentError('ARG_SIZE', `invalid ${option} '${text}': expected a size such as 4096, 0x10000, 64k or 1.5G`, {
      field: option, value: text,
    });
  // strtoull: leading white space, an optional sign, then digits.
  const int = /^[ \t\n\v\f\r]*([+-]?)(\d+)/.exec(text);
  if (int === null || int[1] === '-') throw invalid();
  let pos = int[0].length;
  let val = BigInt(int[2] ?? '0');
  let frac = 0n; // 64-bit fixed-point fraction
  if (val === 0n && (text[pos] === 'x' || text[pos] === 'X')) {
    const hexm = /^[0-9a-fA-F]+/.exec(text.slice(pos + 1));
    if (hexm === null) throw invalid();
    val = BigInt('0x' + hexm[0]);
    pos += 1 + hexm[0].length;
    if (text[pos] === '.' || suffixMul(text[pos]) > 0) throw invalid();
  } else if (text[pos] === '.') {
    const f = /^\.\d*/.exec(text.slice(pos));
    const digits = f === null ? '' : f[0].slice(1);
    if (/^\.\d*[eE]/.test(text.slice(pos)) && digits.length > 0) throw invalid();
    pos += 1 + digits.length;
    if (digits.length > 0) frac = BigInt(Math.floor(Number('0.' + digits) * 2 ** 64));
  }
  let mul = suffixMul(text[pos]);
  if (mul > 0) pos++;
  else mul = 1;
  if (pos !== text.length) throw invalid();
  if (mul === 1 && frac !== 0n) throw invalid();
  const result = val * BigInt(mul) + ((frac * BigInt(mul)) >> 64n);
  if (result > INT64_MAX) {
    throw new InvalidArgumentError('ARG_SIZE', `${option} '${text}' is too large (at most ${INT64_MAX})`, {
      field: option, value: text, limit: INT64_MAX,
    });
  }
  return result;
}

const INT64_MAX = 0x7fffffffffffffffn;
