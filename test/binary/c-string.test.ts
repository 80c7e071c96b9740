/**
 * QEMU's C-string decoding of names read from images (binary/c-string.ts).
 */
import { describe, expect, it } from 'vitest';
import { decodeCString, qemuCString } from '../../src/binary/c-string.js';

describe('qemuCString', () => {
  const b = (...x: number[]): Uint8Array => Uint8Array.from(x);
  it('stops at NUL and at the buffer size', () => {
    expect(qemuCString(new TextEncoder().encode('abc\0def'))).toBe('abc');
    expect(qemuCString(new TextEncoder().encode('abcdef'), 4)).toBe('abcd');
  });
  it('decodes valid UTF-8 and keeps noncharacters', () => {
    expect(qemuCString(new TextEncoder().encode('sé😀'))).toBe('sé😀');
    expect(qemuCString(b(0xef, 0xb7, 0x90))).toBe('\ufdd0');
  });
  it('replaces each invalid sequence as mod_utf8_codepoint delimits it', () => {
    expect(qemuCString(b(0x80, 0x41))).toBe('\ufffdA'); // stray continuation byte
    expect(qemuCString(b(0xfe, 0xff))).toBe('\ufffd\ufffd'); // impossible bytes
    expect(qemuCString(b(0xe2, 0x82, 0x41))).toBe('\ufffdA'); // missing continuation
    expect(qemuCString(b(0xc0, 0xaf))).toBe('\ufffd'); // overlong: one replacement
    expect(qemuCString(b(0xc0, 0x80))).toBe('\u0000'); // modified UTF-8 NUL
    expect(qemuCString(b(0xed, 0xa0, 0x80))).toBe('\ufffd'); // surrogate
    expect(qemuCString(b(0xf4, 0x90, 0x80, 0x80))).toBe('\ufffd'); // beyond U+10FFFF
    expect(qemuCString(b(0xc3), 1)).toBe('\ufffd'); // cut by the buffer size
  });
});

describe('decodeCString', () => {
  it('reports the first NUL and whether anything was replaced', () => {
    expect(decodeCString(new TextEncoder().encode('a.qcow2\0/etc/passwd'))).toEqual({ text: 'a.qcow2', nulAt: 7, replaced: false });
    expect(decodeCString(Uint8Array.from([0x61, 0xff]))).toEqual({ text: 'a\ufffd', nulAt: -1, replaced: true });
    expect(decodeCString(new Uint8Array(0))).toEqual({ text: '', nulAt: -1, replaced: false });
  });
  it('decodes long ASCII runs in pieces', () => {
    const long = new Uint8Array(10000).fill(0x41);
    expect(decodeCString(long).text).toBe('A'.repeat(10000));
  });
});
