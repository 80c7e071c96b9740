/**
 * Size arguments like qemu-img's (`qemu_strtosz`): a non-negative number with an optional
 * suffix B, k/K, M, G, T, P, E (powers of 1024). Fractions are allowed with a suffix.
 */
import { InvalidArgumentError } from '../errors.js';

const SUFFIX: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/** Parses `text` for option `option`; throws `InvalidArgumentError` (`ARG_SIZE`). */
export function parseSize(text: string, option: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgtpe]?)\s*$/i.exec(text);
  const unit = m === null ? undefined : SUFFIX[(m[2] ?? '').toLowerCase()];
  const num = m === null ? NaN : Number(m[1]);
  if (m === null || unit === undefined || (m[1]?.includes('.') === true && unit === 1)) {
    throw new InvalidArgumentError('ARG_SIZE', `invalid ${option} '${text}': expected a non-negative size such as 4096, 64k or 1G`, {
      field: option, value: text,
    });
  }
  const v = Math.floor(num * unit);
  if (!Number.isSafeInteger(v)) {
    throw new InvalidArgumentError('ARG_SIZE', `${option} '${text}' is too large (at most ${Number.MAX_SAFE_INTEGER})`, {
      field: option, value: text, limit: Number.MAX_SAFE_INTEGER,
    });
  }
  return v;
}
