/**
 * The error classes (errors.ts): codes, details, cause, the type guard (also across copies
 * of the module, through the Symbol.for brand).
 */
import { describe, expect, it } from 'vitest';
import {
  CorruptImageError,
  InvalidArgumentError,
  IoError,
  NotThisFormatError,
  PolicyError,
  ShortReadError,
  UnsupportedImageError,
  VdiskError,
  hex,
  isVdiskError,
} from '../src/errors.js';

describe('VdiskError', () => {
  it('keeps code, details and cause; name is the class', () => {
    const cause = new Error('EIO');
    const e = new CorruptImageError('QCOW2_X', 'msg', { file: 'a', field: 'f', value: 1n, limit: 2, offset: 3, cause });
    expect(e).toBeInstanceOf(VdiskError);
    expect(e).toBeInstanceOf(Error);
    expect(e.code).toBe('QCOW2_X');
    expect(e.details).toEqual({ file: 'a', field: 'f', value: 1n, limit: 2, offset: 3 });
    expect(e.cause).toBe(cause);
    expect(e.name).toBe('CorruptImageError');
    expect(new ShortReadError('IO_SHORT_READ', 'm')).toBeInstanceOf(IoError);
  });

  it('isVdiskError accepts every subclass and the brand, nothing else', () => {
    for (const C of [NotThisFormatError, CorruptImageError, UnsupportedImageError, IoError, ShortReadError, PolicyError, InvalidArgumentError]) {
      expect(isVdiskError(new C('C', 'm'))).toBe(true);
    }
    expect(isVdiskError(new Error('x'))).toBe(false);
    expect(isVdiskError(new RangeError('x'))).toBe(false);
    expect(isVdiskError(null)).toBe(false);
    expect(isVdiskError('QCOW2_X')).toBe(false);
    // An error from another copy of vdisk: same brand, another class.
    const foreign = Object.assign(new Error('x'), { [Symbol.for('vdisk.VdiskError')]: true, code: 'QCOW2_X' });
    expect(isVdiskError(foreign)).toBe(true);
  });

  it('hex formats numbers and bigints', () => {
    expect(hex(255)).toBe('0xff');
    expect(hex(0x8000000000050200n)).toBe('0x8000000000050200');
  });
});
