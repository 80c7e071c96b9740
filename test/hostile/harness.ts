/**
 * Running hostile-corpus cases (images/bad/make-corpus.mjs) in child processes, so that
 * every case gets its own wall-time budget, its own peak RSS, and a record of the files it
 * opened:
 *
 * - through the library: `run-case.mjs` imports dist/index.js, records every path opened
 *   through node:fs, and reports the outcome as JSON;
 * - through the CLI: `node dist/cli/bin.js …`, under `strace -f -e trace=open,openat,openat2`
 *   when strace is installed (every openat of the process tree is logged), with a preload
 *   that writes the peak RSS on exit.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const RUN_CASE = path.join(REPO, 'test', 'hostile', 'run-case.mjs');
const CLI = path.join(REPO, 'dist', 'cli', 'bin.js');

/** A case of the corpus (see make-corpus.mjs). */
export interface CorpusCase {
  readonly name: string;
  readonly code: string | null;
  readonly ref: string;
  readonly note: string;
  readonly file: string;
  readonly op: 'info' | 'map' | 'alloc' | 'read';
  readonly options?: {
    readonly format?: 'qcow2' | 'raw';
    readonly allowDirs?: readonly string[];
    readonly maxChainDepth?: number;
    readonly probeBackingFormat?: boolean;
  };
  readonly forbidden: readonly string[];
  readonly budgetMs: number;
}

/** What one run produced. */
export interface CaseOutcome {
  /** The error code, or null when the run succeeded. */
  readonly code: string | null;
  /** Library runs: whether the error was a VdiskError. CLI runs: whether stderr had the `vdisk: CODE: ` form. */
  readonly typed: boolean;
  readonly message: string;
  readonly ms: number;
  /** Peak RSS in KiB, or -1 when unknown. */
  readonly maxRssKiB: number;
  /** Absolute paths opened; null when not observable (CLI without strace). */
  readonly opened: readonly string[] | null;
  /** Unhandled rejections (library runs). */
  readonly unhandled: readonly string[];
  /** Extra detail for failure messages. */
  readonly detail: string;
}

/** True when strace can trace a child here. */
export const HAVE_STRACE = (() => {
  try {
    return spawnSync('strace', ['-f', '-qq', '-e', 'trace=openat', '-o', '/dev/null', 'true'], { stdio: 'ignore', timeout: 10_000 }).status === 0;
  } catch {
    return false;
  }
})();

function collect(cmd: string, args: readonly string[], options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number }): Promise<{ status: number | null; stdout: string; stderr: string; ms: number; timedOut: boolean }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    child.stdout.on('data', (b: Buffer) => {
      // Keep at most 1 MiB of stdout (maps of a million entries are only counted).
      if (outBytes < 1 << 20) out.push(b);
      outBytes += b.length;
    });
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({
        status,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        ms: performance.now() - t0,
        timedOut,
      });
    });
  });
}

interface LibraryLine {
  name: string; status: string; code?: string | null; isVdiskError?: boolean; message?: string; ms: number; maxRssKiB: number;
  opened: string[]; unhandled: string[]; stack?: string; errorClass?: string;
}

/**
 * Runs `list` through the library, one after another in one child process (start-up is
 * paid once; with `--expose-gc`, the child reports each case's own peak RSS: see
 * run-case.mjs). A case that exceeds four times its budget plus 10 s is killed and
 * reported as `TIMEOUT`; the rest run in a fresh child.
 */
export async function runLibraryBatch(root: string, list: readonly CorpusCase[], scratch: string): Promise<Map<string, CaseOutcome>> {
  const results = new Map<string, CaseOutcome>();
  let todo = [...list];
  let batch = 0;
  while (todo.length > 0) {
    const listFile = path.join(scratch, `lib-cases-${batch++}.json`);
    writeFileSync(listFile, JSON.stringify(todo));
    const byName = new Map(todo.map((c) => [c.name, c]));
    let current: string | null = null;
    let timedOut: string | null = null;
    let buffered = '';
    let stderr = '';
    await new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, ['--expose-gc', RUN_CASE, root, listFile], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
      let timer: NodeJS.Timeout | undefined;
      const arm = (name: string): void => {
        clearTimeout(timer);
        const c = byName.get(name);
        timer = setTimeout(() => {
          timedOut = name;
          child.kill('SIGKILL');
        }, (c?.budgetMs ?? 5000) * 4 + 10_000);
      };
      child.stdout.on('data', (b: Buffer) => {
        buffered += b.toString('utf8');
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (line.startsWith('#start ')) {
            current = line.slice(7);
            arm(current);
          } else if (line.startsWith('{')) {
            clearTimeout(timer);
            const j = JSON.parse(line) as LibraryLine;
            results.set(j.name, {
              code: j.status === 'ok' ? null : (j.code ?? 'NO_CODE'),
              typed: j.status === 'ok' || j.isVdiskError === true,
              message: j.message ?? '',
              ms: j.ms,
              maxRssKiB: j.maxRssKiB,
              opened: j.opened.map((p) => path.resolve(root, p)),
              unhandled: j.unhandled,
              detail: `${j.errorClass ?? ''} ${j.stack ?? ''}`.slice(0, 4000),
            });
            current = null;
          }
        }
      });
      child.stderr.on('data', (b: Buffer) => {
        if (stderr.length < 100_000) stderr += b.toString('utf8');
      });
      child.on('error', reject);
      child.on('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    const stuck = timedOut ?? current;
    if (stuck !== null && !results.has(stuck)) {
      results.set(stuck, {
        code: timedOut !== null ? 'TIMEOUT' : 'CRASH', typed: false, message: timedOut !== null ? 'killed after the time limit' : 'the process died',
        ms: -1, maxRssKiB: -1, opened: null, unhandled: [], detail: stderr.slice(-4000),
      });
    }
    todo = todo.filter((c) => !results.has(c.name));
  }
  return results;
}

/** The CLI arguments for `c` (run with cwd = the corpus root). */
export function cliArgs(c: CorpusCase, scratch: string): string[] {
  const o = c.options ?? {};
  const common = [
    ...(o.format === undefined ? [] : ['-f', o.format]),
    ...(o.allowDirs ?? []).flatMap((d) => ['--allow-dir', d]),
    ...(o.maxChainDepth === undefined ? [] : ['--max-chain-depth', String(o.maxChainDepth)]),
    ...(o.probeBackingFormat === true ? ['--probe-backing-format'] : []),
  ];
  switch (c.op) {
    case 'info':
      return ['info', '--output=json', ...common, c.file];
    case 'map':
      return ['map', '--output=json', ...common, c.file];
    case 'alloc':
      return ['map', '--mode=allocation', ...common, c.file];
    case 'read':
      return ['convert', '-O', 'raw', ...common, c.file, path.join(scratch, 'out.raw')];
  }
}

/** Runs `c` through the CLI, under strace when available. `scratch` is a private temp dir. */
export async function runCli(root: string, c: CorpusCase, scratch: string, useStrace = HAVE_STRACE): Promise<CaseOutcome> {
  const rssFile = path.join(scratch, 'rss');
  const traceFile = path.join(scratch, 'trace');
  const preload = path.join(scratch, 'rss-preload.cjs');
  writeFileSync(preload, `process.on('exit', () => require('fs').writeFileSync(${JSON.stringify(rssFile)}, String(process.resourceUsage().maxRSS)));\n`);
  rmSync(rssFile, { force: true });
  const node = [process.execPath, CLI, ...cliArgs(c, scratch)];
  const cmd = useStrace ? ['strace', '-f', '-qq', '-e', 'trace=open,openat,openat2', '-o', traceFile, ...node] : node;
  const env = { ...process.env, NODE_OPTIONS: `--require=${preload}` };
  const r = await collect(cmd[0] as string, cmd.slice(1), { cwd: root, env, timeoutMs: c.budgetMs * 4 + 15_000 });
  rmSync(path.join(scratch, 'out.raw'), { force: true });
  let maxRssKiB = -1;
  try {
    maxRssKiB = Number(readFileSync(rssFile, 'utf8'));
  } catch {
    /* the process died before exit */
  }
  let opened: string[] | null = null;
  if (useStrace) {
    opened = [];
    for (const line of readFileSync(traceFile, 'utf8').split('\n')) {
      const m = /open(?:at2?)?\((?:AT_FDCWD, |\d+, )?"((?:[^"\\]|\\.)*)"/.exec(line);
      // Failed attempts count too: a refused file must not even be tried.
      if (m !== null) opened.push(path.resolve(root, (m[1] as string).replace(/\\(.)/g, '$1')));
    }
  }
  if (r.timedOut) return { code: 'TIMEOUT', typed: false, message: 'killed after the time limit', ms: r.ms, maxRssKiB, opened, unhandled: [], detail: r.stderr };
  const first = r.stderr.split('\n').find((l) => l.startsWith('vdisk: ')) ?? '';
  const m = /^vdisk: ([A-Z0-9_]+): (.*)$/.exec(first);
  const code = r.status === 0 ? null : (m?.[1] ?? `EXIT_${r.status}`);
  return {
    code,
    typed: r.status === 0 || (r.status === 1 && m !== null && m[1] !== 'INTERNAL'),
    message: m?.[2] ?? r.stderr.slice(0, 500),
    ms: r.ms,
    maxRssKiB,
    opened,
    unhandled: [],
    detail: r.stderr.slice(0, 4000),
  };
}

/** Runs `tasks` with at most `limit` in flight. */
export async function pool<T>(tasks: ReadonlyArray<() => Promise<T>>, limit: number): Promise<T[]> {
  const out: T[] = new Array<T>(tasks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const i = next++;
      out[i] = await (tasks[i] as () => Promise<T>)();
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return out;
}
