/**
 * AsciiBuffer's way to a descriptor (src/cli/ascii-buffer.ts): standard output to a file or a
 * device is Node's SyncWriteStream, whose descriptor the buffer writes with `writeSync`.
 * Small pieces gather in the buffer; a long chunk goes out as it is, after what is pending,
 * so the bytes land in order however the pieces are mixed.
 */
import { closeSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import * as fs from 'node:fs';
import { AsciiBuffer } from '../../src/cli/ascii-buffer.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return { ...real, writeSync: vi.fn(real.writeSync) };
});

/** A stream as Node makes standard output to a file: its class name and descriptor are what the buffer looks at. */
class SyncWriteStream {
  constructor(readonly fd: number) {}
  write(): boolean {
    throw new Error('the buffer must write to the descriptor');
  }
  once(): void {}
}

describe('AsciiBuffer to a descriptor', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir('vdisk-ascii-');
    vi.mocked(fs.writeSync).mockClear();
  });
  afterEach(() => removeTempDir(dir));

  it('writes small pieces and long chunks in order, long chunks as they are', async () => {
    const file = path.join(dir, 'out');
    const fd = openSync(file, 'w');
    try {
      const out = new AsciiBuffer(new SyncWriteStream(fd) as unknown as NodeJS.WritableStream);
      const expected: Buffer[] = [];
      const piece = (s: string): void => {
        out.text(s);
        expected.push(Buffer.from(s, 'latin1'));
      };
      const chunk = (n: number, fill: number): Uint8Array => {
        const b = new Uint8Array(n).fill(fill);
        out.bytes(b);
        expected.push(Buffer.from(b));
        return b;
      };
      piece('[{ "start": 0');
      const long = chunk(110 * 1024, 0x61);
      piece(', "x": 1');
      for (let i = 0; i < 3000; i++) piece(`${i},`);
      chunk(32 * 1024, 0x62);
      chunk(32 * 1024 - 1, 0x63);
      piece(']\n');
      await out.flush();
      expect(readFileSync(file).equals(Buffer.concat(expected))).toBe(true);
      // The long chunk was handed to writeSync itself (no copy into the buffer), after the piece before it.
      const calls = vi.mocked(fs.writeSync).mock.calls as unknown as ReadonlyArray<readonly unknown[]>;
      const direct = calls.findIndex((c) => c[1] === long);
      expect(direct).toBe(1);
      expect((calls[0]?.[1] as Uint8Array).length).toBe('[{ "start": 0'.length);
    } finally {
      closeSync(fd);
    }
  });
});
