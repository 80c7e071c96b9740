/**
 * Loads vdisk's WebAssembly kernels (wasm/*.ts, compiled by scripts/build-wasm.mjs to
 * dist/wasm/NAME.wasm): each is compiled once per process, on first use. A kernel that is
 * missing or does not compile is reported as null once, and its callers use their
 * JavaScript code, which defines the same results.
 */
import { readFileSync } from 'node:fs';
import { dropBeforeSnapshot } from './snapshot-state.js';

/** A kernel's linear memory (the parts used). */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}

/** A compiled kernel. */
export type WasmModule = { readonly kind?: 'wasm module' };

/** The parts of the WebAssembly API used (this version of Node's types does not declare it). */
interface WasmApi {
  readonly Module: new (bytes: Uint8Array) => WasmModule;
  readonly Instance: new (module: WasmModule) => { readonly exports: unknown };
}

/** Bytes per page of linear memory. */
export const WASM_PAGE = 65536;

const modules = new Map<string, WasmModule | null>();
const disabled = new Set<string>();
// A snapshot cannot hold compiled modules: a run compiles its own.
dropBeforeSnapshot(() => modules.clear());

/**
 * Each kernel's bytes, once read. Not dropped before a snapshot: the snapshot's warm-up
 * reads them (it cannot compile them), so a run from the snapshot opens no file for them.
 */
const bytesByName = new Map<string, Uint8Array>();

/**
 * The bytes of kernel `name`: read once, null when missing (not remembered: a snapshot
 * built without the file would otherwise deny it to every run).
 */
function kernelBytes(name: string): Uint8Array | null {
  const known = bytesByName.get(name);
  if (known !== undefined) return known;
  let bytes: Uint8Array | null = null;
  // Next to the compiled code (dist/io, and the bundles in dist/cli: dist/wasm), or,
  // running from the sources (tests), in the build's output.
  for (const where of [`../wasm/${name}.wasm`, `../../dist/wasm/${name}.wasm`]) {
    try {
      bytes = readFileSync(new URL(where, import.meta.url));
      break;
    } catch {
      continue;
    }
  }
  if (bytes !== null) bytesByName.set(name, bytes);
  return bytes;
}

/** The compiled kernel `name`, or null when it is unavailable or turned off. */
export function wasmKernel(name: string): WasmModule | null {
  if (disabled.has(name)) return null;
  const api = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly;
  // Node builds a start-up snapshot without WebAssembly (cli/snapshot-warmup.ts): nothing to
  // remember about the kernel then but its bytes.
  if (api === undefined) {
    kernelBytes(name);
    return null;
  }
  let m = modules.get(name);
  if (m === undefined) {
    m = null;
    const bytes = kernelBytes(name);
    if (bytes !== null) {
      try {
        m = new api.Module(bytes);
      } catch {
        m = null;
      }
    }
    modules.set(name, m);
  }
  return m;
}

/** A new instance of `module` (its own memory); its exports as `T`. */
export function instantiate<T>(module: WasmModule): T {
  return new (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly.Instance(module).exports as T;
}

/** Turns kernel `name` off or on (tests hold the JavaScript code and the kernel to each other). */
export function useWasmKernel(name: string, on: boolean): void {
  if (on) disabled.delete(name);
  else disabled.add(name);
}

/** Grows `memory` to at least `bytes`. */
export function ensureMemory(memory: WasmMemory, bytes: number): void {
  const have = memory.buffer.byteLength;
  if (bytes > have) memory.grow(Math.ceil((bytes - have) / WASM_PAGE));
}
