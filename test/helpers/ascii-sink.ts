/**
 * Writers over a stream that collects what is written, for tests of the printers: an
 * `AsciiBuffer` (`asciiSink`) or any writer that flushes (`collectingSink`), whose `text()`
 * flushes and returns everything as a string; and that stream.
 */
import { AsciiBuffer } from '../../src/cli/ascii-buffer.js';

export function asciiSink(): { out: AsciiBuffer; text: () => Promise<string> } {
  return collectingSink((s) => new AsciiBuffer(s), 'latin1');
}

/**
 * A writer made by `make` over a {@link collectingStream}: `text()` flushes it and returns
 * everything written, decoded as `encoding`.
 */
export function collectingSink<T extends { flush(): Promise<void> }>(
  make: (stream: NodeJS.WritableStream) => T,
  encoding: BufferEncoding,
): { out: T; text: () => Promise<string> } {
  const { stream, bytes } = collectingStream();
  const out = make(stream);
  return {
    out,
    text: async () => {
      await out.flush();
      return bytes().toString(encoding);
    },
  };
}

/** A stream that keeps what is written to it (strings as UTF-8), and never asks to drain. */
export function collectingStream(): { stream: NodeJS.WritableStream; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = {
    write(c: string | Uint8Array, cb?: () => void): boolean {
      chunks.push(Buffer.from(c));
      cb?.();
      return true;
    },
    once(): void {},
  } as unknown as NodeJS.WritableStream;
  return { stream, bytes: () => Buffer.concat(chunks) };
}
