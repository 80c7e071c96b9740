/**
 * The lseek binding (src/io/lseek-binding.ts): the binding is loaded once and cached, calls
 * libc's lseek with SEEK_DATA/SEEK_HOLE and maps failures to errno values. The
 * `VDISK_NO_SEEK_HOLE=1` switch is read only at the first load, so it is tested in child
 * node processes running a transpiled copy of src/io (and, end to end, `NodeFile`).
 */
import { execFile } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EINVAL, ENXIO, SEEK_DATA, SEEK_HOLE, loadLseek } from '../../src/io/lseek-binding.js';

const run = promisify(execFile);
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const EBADF = 9;

let dir: string;
let sparse: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vdisk-lseek-'));
  sparse = path.join(dir, 'sparse.raw');
  await writeFile(sparse, new Uint8Array(0));
  await truncate(sparse, 1024 * 1024);
  // Transpile src/errors.ts and src/io/*.ts (no other local imports) into dir/src for child processes.
  const files = ['errors.ts', 'io/holes.ts', 'io/ffi.ts', 'io/lseek-binding.ts', 'io/node-file.ts', 'io/random-access-file.ts', 'io/snapshot-state.ts'];
  await mkdir(path.join(dir, 'src', 'io'), { recursive: true });
  await writeFile(path.join(dir, 'package.json'), '{"type":"module"}\n');
  for (const f of files) {
    const src = await readFile(path.join(repo, 'src', f), 'utf8');
    const out = ts.transpileModule(src, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false },
    });
    await writeFile(path.join(dir, 'src', f.replace(/\.ts$/, '.js')), out.outputText);
  }
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs an ES module snippet in a fresh node with `env` added; returns its stdout, parsed as JSON. */
async function child(code: string, env: Record<string, string>): Promise<unknown> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', code], {
    cwd: dir,
    // koffi is resolved through NODE_PATH: the transpiled copy lives outside the repository.
    env: { ...process.env, VDISK_NO_SEEK_HOLE: '', NODE_PATH: path.join(repo, 'node_modules'), ...env },
    timeout: 20_000,
  });
  return JSON.parse(stdout) as unknown;
}

const probeScript = (file: string): string => `
  import { loadLseek } from './src/io/lseek-binding.js';
  import { NodeFile } from './src/io/node-file.js';
  const b = loadLseek();
  const f = await NodeFile.open(${JSON.stringify(file)});
  const probe = f.probeAllocation(0);
  await f.close();
  console.log(JSON.stringify({ binding: b === null ? null : typeof b, same: loadLseek() === b, probe, probes: f.counters.holeProbes }));
`;

describe('loadLseek', () => {
  it('constants are the Linux values', () => {
    expect({ SEEK_DATA, SEEK_HOLE, ENXIO, EINVAL }).toEqual({ SEEK_DATA: 3, SEEK_HOLE: 4, ENXIO: 6, EINVAL: 22 });
  });

  it('is loaded once: later calls return the same cached value', () => {
    expect(loadLseek()).toBe(loadLseek());
  });

  it('calls libc lseek: SEEK_DATA/SEEK_HOLE offsets and errnos (ENXIO past EOF, EBADF)', (ctx) => {
    const lseek = loadLseek();
    ctx.skip(lseek === null, 'lseek binding unavailable (koffi missing, not Linux, or VDISK_NO_SEEK_HOLE=1)');
    if (lseek === null) return;
    const fd = openSync(sparse, 'r');
    try {
      // A file of one hole: SEEK_HOLE from 0 is 0 or EOF depending on the fs; SEEK_DATA is ENXIO.
      expect(lseek(fd, 0, SEEK_DATA)).toEqual({ errno: ENXIO });
      expect(lseek(fd, 2 * 1024 * 1024, SEEK_HOLE)).toEqual({ errno: ENXIO });
      expect(lseek(fd, 4096, 0 /* SEEK_SET */)).toEqual({ offset: 4096 });
      expect(lseek(fd, -1, 0)).toEqual({ errno: EINVAL });
    } finally {
      closeSync(fd);
    }
    expect(lseek(1_000_000, 0, SEEK_DATA)).toEqual({ errno: EBADF });
  });
});

describe('VDISK_NO_SEEK_HOLE (child processes)', () => {
  it('VDISK_NO_SEEK_HOLE=1: no binding, NodeFile probes report unknown without syscalls', async () => {
    const r = await child(probeScript(sparse), { VDISK_NO_SEEK_HOLE: '1' });
    expect(r).toEqual({ binding: null, same: true, probe: { kind: 'unknown' }, probes: 0 });
  });

  it('without the variable (control): the binding loads and the sparse file probes as a trailing hole', async (ctx) => {
    ctx.skip(loadLseek() === null, 'lseek binding unavailable in this process either');
    const r = await child(probeScript(sparse), {});
    expect(r).toMatchObject({ binding: 'function', same: true });
    // A fully sparse file: ENXIO (trailing hole), or data to EOF on a filesystem without hole reporting.
    const probe = (r as { probe: { kind: string } }).probe;
    expect(['trailing-hole', 'data']).toContain(probe.kind);
  });

  it('only the value "1" disables the binding', async (ctx) => {
    ctx.skip(loadLseek() === null, 'lseek binding unavailable');
    const r = await child(probeScript(sparse), { VDISK_NO_SEEK_HOLE: '0' });
    expect(r).toMatchObject({ binding: 'function' });
  });
});
