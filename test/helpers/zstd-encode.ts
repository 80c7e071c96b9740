/**
 * zstd frames for tests, made with the same wasm build of zstd the decoder uses.
 */
import { createRequire } from 'node:module';

interface ZstdWasm {
  init(): Promise<void>;
  compress(buf: Uint8Array, level?: number): Uint8Array;
}

const z = createRequire(import.meta.url)('@bokuweb/zstd-wasm') as ZstdWasm;
let ready: Promise<void> | null = null;

/** One zstd frame per part, concatenated. */
export async function zstdFrames(parts: Uint8Array[]): Promise<Uint8Array> {
  ready ??= z.init();
  await ready;
  const frames = parts.map((p) => z.compress(p, 3));
  const out = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) {
    out.set(f, at);
    at += f.length;
  }
  return out;
}
