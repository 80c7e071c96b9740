/**
 * Size arguments (src/cli/size-arg.ts), which claim qemu-img's `qemu_strtosz` syntax:
 * decimal numbers with an optional B/k/M/G/T/P/E suffix (powers of 1024), fractions only
 * with a scaling suffix, `ARG_SIZE` errors naming the option. The expected values of the
 * `it.fails` cases were observed with qemu-img 7.2.22 (`qemu-img map -s VALUE`).
 */
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../src/errors.js';
import { parseSize, parseSizeBig } from '../../src/cli/size-arg.js';

const bad = (text: string): InvalidArgumentError => {
  let caught: unknown;
  try {
    parseSize(text, '--start-offset');
  } catch (e) {
    caught = e;
  }
  expect(caught, `'${text}' should be refused`).toBeInstanceOf(InvalidArgumentError);
  return caught as InvalidArgumentError;
};

describe('parseSize', () => {
  it.each([
    ['0', 0],
    ['4096', 4096],
    ['00064k', 65536],
    ['1b', 1],
    ['1B', 1],
    ['64k', 65536],
    ['64K', 65536],
    ['1m', 1048576],
    ['1M', 1048576],
    ['1G', 2 ** 30],
    ['3T', 3 * 2 ** 40],
    ['2P', 2 ** 51],
    ['1.5k', 1536],
    ['1.5K', 1536],
    ['0.5M', 524288],
    ['1.25k', 1280],
    ['1.0001k', 1024],
    [' 64k', 65536],
    ['9007199254740991', Number.MAX_SAFE_INTEGER],
  ])('%j -> %d', (text, want) => {
    expect(parseSize(text, '--start-offset')).toBe(want);
  });

  it.each(['', ' ', 'abc', 'k', '-1', '-0', '1.5', '1.5b', '0.5', '1x', '64kB', '1e3', '1k2', '0x', '1,5k', 'NaN', 'Infinity'])(
    '%j is ARG_SIZE',
    (text) => {
      const e = bad(text);
      expect(e.code).toBe('ARG_SIZE');
      expect(e.details).toMatchObject({ field: '--start-offset', value: text });
      expect(e.message).toContain('--start-offset');
    },
  );

  it.each(['9007199254740992', '1E', '4E'])('%j beyond 2^53 - 1 is ARG_SIZE (too large) for parseSize', (text) => {
    const e = bad(text);
    expect(e.code).toBe('ARG_SIZE');
    expect(e.message).toContain('too large');
    expect(e.details.limit).toBe(Number.MAX_SAFE_INTEGER);
  });

  it.each(['8E', '8192P', '9223372036854775808'])('%j beyond INT64_MAX is ARG_SIZE (too large), as qemu-img cvtnum', (text) => {
    const e = bad(text);
    expect(e.code).toBe('ARG_SIZE');
    expect(e.message).toContain('too large');
    expect(() => parseSizeBig(text, '-s')).toThrow(InvalidArgumentError);
  });

  it('parseSizeBig keeps values up to INT64_MAX exactly', () => {
    expect(parseSizeBig('1E', '-s')).toBe(2n ** 60n);
    expect(parseSizeBig('9223372036854775807', '-s')).toBe(2n ** 63n - 1n);
    expect(parseSizeBig('0x7fffffffffffffff', '-s')).toBe(2n ** 63n - 1n);
  });

  describe('qemu_strtosz compatibility (qemu-img 7.2.22)', () => {
    // `qemu-img map -s 0x10000` starts at 65536: do_strtosz reparses "0x..." as hex
    // (util/cutils.c: "Input looks like hex; reparse, and insist on no fraction or suffix").
    it.each([
      ['0x10000', 65536],
      ['0X10000', 65536],
      ['0x50000', 327680],
    ])('hex %j -> %d', (text, want) => {
      expect(parseSize(text, '-s')).toBe(want);
    });

    // A zero fraction needs no suffix; "1." and "1.k" are accepted ("Make sure even 1.k works").
    it.each([
      ['1.0', 1],
      ['1.', 1],
      ['1.k', 1024],
    ])('fraction form %j -> %d', (text, want) => {
      expect(parseSize(text, '-s')).toBe(want);
    });

    // strtoull accepts a leading '+'.
    it('"+64k" -> 65536', () => {
      expect(parseSize('+64k', '-s')).toBe(65536);
    });

    // Nothing may follow the suffix, and the suffix must follow the number directly.
    it.each(['64 k', '64k ', '64 '])('%j is refused', (text) => {
      expect(() => parseSize(text, '-s')).toThrow(InvalidArgumentError);
    });
  });
});
