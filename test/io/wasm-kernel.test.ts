/**
 * The kernel loader: a kernel compiles once per process, and when the `WebAssembly` global
 * is missing — as while Node builds a start-up snapshot (src/cli/snapshot-warmup.ts) — it
 * reports no kernel without remembering that, so a run from the snapshot has its kernels;
 * it keeps the bytes it read then, so that run reads no file for them.
 */
import * as fs from 'node:fs';
import { describe, expect, it, vi } from 'vitest';
import { wasmKernel } from '../../src/io/wasm-kernel.js';

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return { ...real, readFileSync: vi.fn(real.readFileSync) };
});

describe('wasmKernel', () => {
  it('compiles a kernel once and hands the same module out', () => {
    const a = wasmKernel('flat-walk');
    expect(a).not.toBeNull();
    expect(wasmKernel('flat-walk')).toBe(a);
  });

  it('reports none without WebAssembly, and remembers nothing of it', () => {
    const g = globalThis as { WebAssembly?: unknown };
    const saved = g.WebAssembly;
    delete g.WebAssembly;
    try {
      expect(wasmKernel('table-scan')).toBeNull();
      expect(wasmKernel('no-such-kernel')).toBeNull();
    } finally {
      g.WebAssembly = saved;
    }
    expect(wasmKernel('table-scan')).not.toBeNull();
  });

  it('keeps the bytes it read without WebAssembly, and later compiles them without reading the file again', async () => {
    vi.resetModules();
    const fresh = (await import('../../src/io/wasm-kernel.js')) as typeof import('../../src/io/wasm-kernel.js');
    const read = vi.mocked(fs.readFileSync);
    /** Reads of the kernel's file that found it. */
    const wasmFiles = (): number => read.mock.calls.filter(([f], i) => String(f).endsWith('/table-scan.wasm') && read.mock.results[i]?.type === 'return').length;
    const g = globalThis as { WebAssembly?: unknown };
    const saved = g.WebAssembly;
    read.mockClear();
    delete g.WebAssembly;
    try {
      expect(fresh.wasmKernel('table-scan')).toBeNull();
    } finally {
      g.WebAssembly = saved;
    }
    expect(wasmFiles()).toBe(1);
    expect(fresh.wasmKernel('table-scan')).not.toBeNull();
    expect(wasmFiles()).toBe(1);
  });

  it('reports none for a kernel that is not built', () => {
    expect(wasmKernel('no-such-kernel')).toBeNull();
  });
});
