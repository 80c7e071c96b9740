/**
 * The kernel loader: a kernel compiles once per process, and when the `WebAssembly` global
 * is missing — as while Node builds a start-up snapshot (src/cli/snapshot-warmup.ts) — it
 * reports no kernel without remembering that, so a run from the snapshot has its kernels.
 */
import { describe, expect, it } from 'vitest';
import { wasmKernel } from '../../src/io/wasm-kernel.js';

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

  it('reports none for a kernel that is not built', () => {
    expect(wasmKernel('no-such-kernel')).toBeNull();
  });
});
