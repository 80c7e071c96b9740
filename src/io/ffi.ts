/**
 * The FFI binding (the optional dependency `koffi`) that reaches libc calls Node's `fs`
 * lacks — `lseek` with SEEK_DATA/SEEK_HOLE (lseek-binding.ts), and io_uring's system calls
 * and ring mappings (io-uring.ts).
 *
 * koffi's own loader finds its native module by reading the ELF header of the `node`
 * executable (to tell glibc from musl) and then wraps a few deprecated functions: 7–10 ms
 * per load, paid by every run that probes holes or converts. Loaded here directly — the prebuilt
 * module of koffi's package for this platform
 * (`@koromix/koffi-<platform>-<arch>/<platform>_<arch>/koffi.node`, or the one koffi built
 * at install in `koffi/build/koffi/…`), glibc's build first, musl's next — it takes about
 * 1 ms. The module is used only when its version is koffi's and it exports what is called
 * here; otherwise `require('koffi')` loads it the usual way. Without koffi (or on a
 * platform it does not load on) there is no binding, and the callers fall back.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { dropBeforeSnapshot } from './snapshot-state.js';

/** The part of koffi's API used by vdisk. */
export interface Koffi {
  load(name: string): KoffiLibrary;
  /** The errno of the last call made through koffi on this thread. */
  errno(): number;
  /** An ArrayBuffer over `length` bytes of native memory at `pointer` (no copy). */
  view?(pointer: number | bigint, length: number): ArrayBuffer;
  readonly version?: unknown;
}

/** A loaded shared library: functions by C prototype. */
export interface KoffiLibrary {
  func(signature: string): (...args: number[]) => number | bigint;
}

let koffi: Koffi | null | undefined;
let libc: KoffiLibrary | null | undefined;
// A snapshot cannot hold a native binding: each run loads its own.
dropBeforeSnapshot(() => {
  koffi = undefined;
  libc = undefined;
});

/** koffi, loaded once per thread; null when it cannot be loaded here. */
export function loadKoffi(): Koffi | null {
  if (koffi !== undefined) return koffi;
  koffi = null;
  if (process.platform !== 'linux') return koffi;
  let require: NodeRequire;
  try {
    require = createRequire(import.meta.url);
  } catch {
    return koffi;
  }
  koffi = loadNativeDirectly(require) ?? loadThroughKoffi(require);
  return koffi;
}

/** libc through koffi, loaded once per thread; null without koffi. */
export function loadLibc(): KoffiLibrary | null {
  if (libc !== undefined) return libc;
  libc = null;
  const k = loadKoffi();
  if (k === null) return libc;
  try {
    libc = k.load('libc.so.6');
  } catch {
    libc = null;
  }
  return libc;
}

/** koffi's native module straight from its package, or null when it is not where koffi's loader would find it. */
function loadNativeDirectly(require: NodeRequire): Koffi | null {
  let pkgDir: string | null;
  try {
    pkgDir = koffiDir(require);
  } catch {
    return null; // this module's location is not a file (a bundle loaded from elsewhere)
  }
  return pkgDir === null ? null : nativeKoffiAt(pkgDir);
}

/**
 * The native module of the koffi package in `pkgDir`: its local build, else its prebuilt
 * package (next to it, as npm installs it, or below it), glibc's build first; null when
 * none loads, or the one that loads is not of the package's version.
 */
export function nativeKoffiAt(pkgDir: string): Koffi | null {
  try {
    const version: unknown = (JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { version?: unknown }).version;
    const triplets = [`${process.platform}_${process.arch}`, `musl_${process.arch}`];
    const prebuilt = `@koromix/koffi-${process.platform}-${process.arch}`;
    const roots = [path.join(pkgDir, 'build', 'koffi'), path.join(path.dirname(pkgDir), prebuilt), path.join(pkgDir, 'node_modules', prebuilt)];
    for (const root of roots) {
      for (const t of triplets) {
        const file = path.join(root, t, 'koffi.node');
        if (!existsSync(file)) continue;
        const m = { exports: {} as Partial<Koffi> };
        try {
          process.dlopen(m, file);
        } catch {
          continue; // another libc's build
        }
        const k = m.exports;
        return k.version === version && typeof k.load === 'function' && typeof k.errno === 'function' ? (k as Koffi) : null;
      }
    }
  } catch {
    // No readable package: koffi's loader decides.
  }
  return null;
}

/** koffi through its own loader; null when it cannot load. */
function loadThroughKoffi(require: NodeRequire): Koffi | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('koffi') as Koffi;
  } catch {
    return null;
  }
}

/**
 * koffi's package directory: the first `node_modules/koffi` above this module, as Node
 * would find it (a few `stat`s; the first `require.resolve` of a process costs 2–3 ms),
 * else wherever `require.resolve` finds it (`NODE_PATH`); null when there is none.
 */
function koffiDir(require: NodeRequire): string | null {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'node_modules', 'koffi');
    if (existsSync(path.join(candidate, 'package.json'))) return candidate;
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  let at: string;
  try {
    at = path.dirname(require.resolve('koffi'));
  } catch {
    return null;
  }
  // The entry point may sit below the package root: the nearest package.json named koffi.
  for (let i = 0; i < 8; i++) {
    const pkg = path.join(at, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'koffi') return at;
    const up = path.dirname(at);
    if (up === at) break;
    at = up;
  }
  return null;
}
