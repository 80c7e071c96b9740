/**
 * The zstd decoder, in two builds: libzstd through the native addon `zstd-napi` (an
 * optional dependency, compiled at install time where a C compiler is present: about
 * 2.5 GiB/s per core on 64 KiB clusters here), else zstd compiled to WebAssembly
 * (`@bokuweb/zstd-wasm`, shipped inside its package: about 0.6–1 GiB/s). Both decode exact
 * frames into a caller's buffer and fail when the frame does not fit.
 *
 * Callers bound the output first (`readZstdFrame` gives the declared content size), and the
 * destination is the room left in the cluster. `VDISK_ZSTD=wasm` forces the WebAssembly
 * build (tests run both).
 */
import { createRequire } from 'node:module';
import { dropBeforeSnapshot } from '../../io/snapshot-state.js';

/** Which build decodes. */
export type ZstdBackend = 'native' | 'wasm';

interface ZstdWasm {
  init(): Promise<void>;
  decompress(buf: Uint8Array, opts?: { defaultHeapSize?: number }): Uint8Array;
}

interface ZstdNativeBinding {
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
}

/** Decodes one exact frame into `dst`; returns the bytes written (throws when it does not fit). */
type FrameDecoder = (frame: Uint8Array, dst: Uint8Array) => number;

let decoder: FrameDecoder | null = null;
let backend: ZstdBackend | null = null;
let ready: Promise<void> | null = null;
// Which build decodes is the run's to find out (its environment, its addon).
dropBeforeSnapshot(() => {
  decoder = null;
  backend = null;
  ready = null;
});

/** The native decoder, or null when the addon is not installed or does not load. */
function loadNative(): FrameDecoder | null {
  if (process.env['VDISK_ZSTD'] === 'wasm') return null;
  let binding: ZstdNativeBinding;
  try {
    binding = createRequire(import.meta.url)('zstd-napi/binding') as ZstdNativeBinding;
  } catch {
    return null;
  }
  const dctx = new binding.DCtx();
  return (frame, dst) => dctx.decompress(dst, frame);
}

/** Loads the decoder once: the native one when it loads, else compiles the wasm module. */
export function loadZstd(): Promise<void> {
  if (ready === null) {
    const native = loadNative();
    if (native !== null) {
      decoder = native;
      backend = 'native';
      ready = Promise.resolve();
    } else {
      const z = createRequire(import.meta.url)('@bokuweb/zstd-wasm') as ZstdWasm;
      ready = z.init().then(() => {
        decoder = (frame, dst) => {
          const out = z.decompress(frame, { defaultHeapSize: Math.max(1, dst.length) });
          if (out.length > dst.length) throw new Error(`the frame decodes to ${out.length} bytes`);
          dst.set(out);
          return out.length;
        };
        backend = 'wasm';
      });
    }
  }
  return ready;
}

/** The build in use once {@link loadZstd} resolved, else null. */
export function zstdBackend(): ZstdBackend | null {
  return backend;
}

/** Decompresses one complete frame into `dst` (throws when it needs more room than `dst`). */
export function zstdDecompressFrameInto(frame: Uint8Array, dst: Uint8Array): number {
  if (decoder === null) throw new Error('the zstd decoder is not loaded');
  try {
    return decoder(frame, dst);
  } catch (e) {
    throw new Error(`zstd frame does not decode within ${dst.length} bytes (${e instanceof Error ? e.message : String(e)})`);
  }
}
