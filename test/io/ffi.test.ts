/**
 * The FFI loader (src/io/ffi.ts): koffi's native module is loaded straight from its
 * package when it is where koffi's own loader would find it and of the package's version;
 * otherwise `require('koffi')` loads it. Checked in this process (the repository's
 * node_modules) and in child processes running a transpiled copy from a directory outside
 * the repository (koffi found through NODE_PATH), where koffi's JavaScript loader must not
 * run on the direct path.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadKoffi, loadLibc, nativeKoffiAt } from '../../src/io/ffi.js';

const run = promisify(execFile);
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const koffiPkg = path.join(repo, 'node_modules', 'koffi');
const available = process.platform === 'linux' && existsSync(path.join(koffiPkg, 'package.json'));

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vdisk-ffi-'));
  await mkdir(path.join(dir, 'src', 'io'), { recursive: true });
  await writeFile(path.join(dir, 'package.json'), '{"type":"module"}\n');
  for (const f of ['io/ffi.ts', 'io/snapshot-state.ts']) {
    const src = await readFile(path.join(repo, 'src', f), 'utf8');
    const out = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
    await writeFile(path.join(dir, 'src', f.replace(/\.ts$/, '.js')), out.outputText);
  }
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Prints whether koffi loaded, and whether koffi's JavaScript loader ran. */
const loadedScript = `
  import { createRequire } from 'node:module';
  import { loadKoffi } from './src/io/ffi.js';
  const loaded = loadKoffi() !== null;
  const koffiJs = Object.keys(createRequire(import.meta.url).cache).some((f) => f.includes('koffi') && !f.endsWith('.node'));
  console.log(JSON.stringify({ loaded, koffiJs }));
`;

describe('loadKoffi', () => {
  it('loads koffi once and reaches libc (lseek of a bad descriptor fails with EBADF)', (ctx) => {
    ctx.skip(!available, 'koffi is not installed (optional dependency) or not Linux');
    const k = loadKoffi();
    expect(k).not.toBeNull();
    expect(loadKoffi()).toBe(k);
    const libc = loadLibc();
    expect(libc).not.toBeNull();
    expect(loadLibc()).toBe(libc);
    const lseek = libc?.func('int64_t lseek(int fd, int64_t offset, int whence)');
    expect(Number(lseek?.(-1, 0, 0))).toBe(-1);
    expect(k?.errno()).toBe(9);
  });

  it("takes the native module directly, without running koffi's JavaScript loader", async (ctx) => {
    ctx.skip(!available, 'koffi is not installed (optional dependency) or not Linux');
    const code = `
      import { createRequire } from 'node:module';
      import { loadKoffi } from './src/io/ffi.js';
      const k = loadKoffi();
      const cache = Object.keys(createRequire(import.meta.url).cache);
      console.log(JSON.stringify({ loaded: k !== null, version: k?.version, koffiJs: cache.filter((f) => f.includes('koffi') && !f.endsWith('.node')) }));
    `;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', code], {
      cwd: dir, env: { ...process.env, NODE_PATH: path.join(repo, 'node_modules') }, timeout: 20_000,
    });
    const version = (JSON.parse(await readFile(path.join(koffiPkg, 'package.json'), 'utf8')) as { version: string }).version;
    expect(JSON.parse(stdout)).toEqual({ loaded: true, version, koffiJs: [] });
  });

  it('finds no binding, and does not throw, where no koffi can be found', async (ctx) => {
    ctx.skip(!available, 'koffi is not installed (optional dependency) or not Linux');
    const env = { ...process.env };
    delete env['NODE_PATH'];
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', loadedScript], { cwd: dir, env, timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual({ loaded: false, koffiJs: false });
  });

  it("falls back to koffi's own loader when its native module is not beside the package found", async (ctx) => {
    ctx.skip(!available, 'koffi is not installed (optional dependency) or not Linux');
    // node_modules/koffi is a link to the real package: found there, its prebuilt sibling is
    // not; require('koffi') follows the link and koffi's loader finds its module.
    const root = path.join(dir, 'fallback');
    await mkdir(path.join(root, 'node_modules'), { recursive: true });
    await symlink(koffiPkg, path.join(root, 'node_modules', 'koffi'));
    await cp(path.join(dir, 'src'), path.join(root, 'src'), { recursive: true });
    await writeFile(path.join(root, 'package.json'), '{"type":"module"}\n');
    const env = { ...process.env };
    delete env['NODE_PATH'];
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', loadedScript], { cwd: root, env, timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual({ loaded: true, koffiJs: true });
  });
});

describe('nativeKoffiAt', () => {
  it("loads the prebuilt module next to koffi's package", (ctx) => {
    ctx.skip(!available, 'koffi is not installed (optional dependency) or not Linux');
    const k = nativeKoffiAt(koffiPkg);
    expect(k).not.toBeNull();
    expect(typeof k?.load).toBe('function');
  });

  it('refuses a module of another version than the package, and a package without one', async (ctx) => {
    ctx.skip(!available, 'koffi is not installed (optional dependency) or not Linux');
    // A "koffi" package of another version whose prebuilt sibling is the real one.
    const nm = path.join(dir, 'mismatch', 'node_modules');
    await mkdir(path.join(nm, 'koffi'), { recursive: true });
    await mkdir(path.join(nm, '@koromix'), { recursive: true });
    await writeFile(path.join(nm, 'koffi', 'package.json'), '{"name":"koffi","version":"0.0.0-other"}\n');
    const prebuilt = `koffi-${process.platform}-${process.arch}`;
    await symlink(path.join(repo, 'node_modules', '@koromix', prebuilt), path.join(nm, '@koromix', prebuilt));
    expect(nativeKoffiAt(path.join(nm, 'koffi'))).toBeNull();
    // A package with no native module anywhere.
    const bare = path.join(dir, 'bare', 'node_modules', 'koffi');
    await mkdir(bare, { recursive: true });
    await writeFile(path.join(bare, 'package.json'), '{"name":"koffi","version":"3.3.4"}\n');
    expect(nativeKoffiAt(bare)).toBeNull();
    // No package at all.
    expect(nativeKoffiAt(path.join(dir, 'nowhere'))).toBeNull();
  });
});
