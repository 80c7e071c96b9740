/**
 * An `AsciiBuffer` over a stream that collects what is written, for tests of the map
 * printers: `text()` flushes and returns everything as a string.
 */
import { AsciiBuffer } from '../../src/cli/ascii-buffer.js';

export function asciiSink(): { out: AsciiBuffer; text: () => Promise<string> } {
  const chunks: Buffer[] = [];
  const stream = {
    write(c: Uint8Array, cb?: () => void): boolean {
      chunks.push(Buffer.from(c));
      cb?.();
      return true;
    },
    once(): void {},
  } as unknown as NodeJS.WritableStream;
  const out = new AsciiBuffer(stream);
  return {
    out,
    text: async () => {
      await out.flush();
      return Buffer.concat(chunks).toString('latin1');
    },
  };
}
