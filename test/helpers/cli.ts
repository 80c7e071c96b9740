/**
 * Test helpers for running processes: the built `vdisk` CLI and any other command, with a
 * time bound, captured stdout/stderr and the exit status.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (the directory holding package.json). */
export const REPO_ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');

/**
 * The built CLI entry point (`npm test` builds before running vitest). VDISK_CLI overrides
 * it, e.g. to test a copy of dist/ while dist/ is being rebuilt.
 */
export const CLI = process.env['VDISK_CLI'] ?? path.join(REPO_ROOT, 'dist', 'cli', 'bin.js');

/**
 * The start-up snapshot next to {@link CLI} (scripts/build-cli.mjs), which the `vdisk`
 * launcher starts from: {@link runVdisk} starts from it too when it exists, so that the
 * tests run the CLI as users do (test/cli/launcher.test.ts fails when the build made none).
 */
export const CLI_SNAPSHOT = path.join(path.dirname(CLI), 'vdisk.blob');

/**
 * The V8 flags {@link CLI_SNAPSHOT} was built with (its stamp's third line), which every
 * start from it repeats, as the launcher does; empty when there is no stamp.
 */
export function snapshotFlags(): string[] {
  const stamp = `${CLI_SNAPSHOT}.node`;
  if (!existsSync(stamp)) return [];
  return (readFileSync(stamp, 'utf8').split('\n')[2] ?? '').split(' ').filter((f) => f !== '');
}

/** Result of a finished process. */
export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  /** Exit status; null when killed by a signal. */
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Options of {@link run}. */
export interface RunOptions {
  readonly cwd?: string;
  /** Kill the process (SIGKILL) after this many milliseconds (default 60 s). */
  readonly timeoutMs?: number;
  readonly env?: NodeJS.ProcessEnv;
}

/** Runs `command args` and collects its output. Never rejects for a non-zero exit. */
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? process.cwd(),
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        status,
        signal,
      });
    });
  });
}

/**
 * Runs the built CLI in `cwd`: from its start-up snapshot as the `vdisk` launcher does
 * (`node FLAGS --snapshot-blob dist/cli/vdisk.blob dist/cli ARGS`), or `node dist/cli/bin.js ARGS`
 * when there is none.
 */
export function runVdisk(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  if (!existsSync(CLI)) {
    throw new Error(`${CLI} is missing: build first (npm run build; npm test builds automatically)`);
  }
  if (existsSync(CLI_SNAPSHOT)) return run(process.execPath, [...snapshotFlags(), '--snapshot-blob', CLI_SNAPSHOT, path.dirname(CLI), ...args], options);
  return run(process.execPath, [CLI, ...args], options);
}
