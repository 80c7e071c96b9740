/**
 * Test helpers around the reference tools: presence checks for qemu-img, qemu-io,
 * qemu-nbd and nbdinfo; qemu-img runs; the `qemu:allocation-depth` map of an image read
 * through a time-bounded qemu-nbd + nbdinfo pair; and extent merging/clipping.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { run, type RunResult } from './cli.js';

/** True when `command versionArgs` (default `--version`) runs and exits 0. */
export function hasTool(command: string, versionArgs: readonly string[] = ['--version']): boolean {
  try {
    const r = spawnSync(command, versionArgs, { stdio: 'ignore', timeout: 10_000 });
    return r.status === 0;
  } catch {
    return false;
  }
}

/** First line of `qemu-img --version`, or null when qemu-img is missing. */
export function qemuImgVersion(): string | null {
  const r = spawnSync('qemu-img', ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0 || typeof r.stdout !== 'string') return null;
  return r.stdout.split('\n')[0] ?? null;
}

/** Runs qemu-img. */
export function qemuImg(args: readonly string[], cwd: string): Promise<RunResult> {
  return run('qemu-img', args, { cwd, timeoutMs: 60_000 });
}

/**
 * What qemu-img 7.2 says when creating a LUKS image fails because its key-derivation timing
 * loop measured no CPU time for its first batch (`qcrypto_pbkdf2_count_iters`; a fast or
 * virtual CPU with coarse thread-time accounting): a failure of the reference tool now and
 * then, not of the image asked for. Retrying gives the image.
 */
export const QEMU_LUKS_TIMING_FLAKE = 'Unable to get accurate CPU usage';

/**
 * Attempts at a qemu-img command that fails with {@link QEMU_LUKS_TIMING_FLAKE}: on some
 * hosts of this machine kind it fails half the time (an AMD EPYC one: 10 and 8 of 20
 * creates), so five attempts all failed in a CI run now and then; a failed attempt takes
 * milliseconds.
 */
export const QEMU_LUKS_ATTEMPTS = 30;

/** `fn()`, run again while it throws an error naming {@link QEMU_LUKS_TIMING_FLAKE} (at most QEMU_LUKS_ATTEMPTS runs). */
export function retryQemuLuksFlake<T>(fn: () => T): T {
  for (let attempt = 1; ; attempt++) {
    try {
      return fn();
    } catch (e) {
      if (attempt >= QEMU_LUKS_ATTEMPTS || !String((e as Error).message ?? e).includes(QEMU_LUKS_TIMING_FLAKE)) throw e;
    }
  }
}

/** {@link qemuImg}, run again while it fails with {@link QEMU_LUKS_TIMING_FLAKE} (at most QEMU_LUKS_ATTEMPTS runs). */
export async function qemuImgRetryingLuksFlake(args: readonly string[], cwd: string): Promise<RunResult> {
  for (let attempt = 1; ; attempt++) {
    const r = await qemuImg(args, cwd);
    if (r.status === 0 || attempt >= QEMU_LUKS_ATTEMPTS || !r.stderr.includes(QEMU_LUKS_TIMING_FLAKE)) return r;
  }
}

/** One extent of an allocation map, in vdisk's `--mode=allocation` shape. */
export interface AllocationExtent {
  start: number;
  length: number;
  /** Index of the allocating layer (0 = top); the bottom layer's index when not present. */
  depth: number;
  present: boolean;
}

/** Merges neighbours with equal `depth` and `present` (and drops empty extents). */
export function mergeAllocation(extents: readonly AllocationExtent[]): AllocationExtent[] {
  const out: AllocationExtent[] = [];
  for (const e of extents) {
    if (e.length === 0) continue;
    const last = out[out.length - 1];
    if (last !== undefined && last.depth === e.depth && last.present === e.present && last.start + last.length === e.start) {
      last.length += e.length;
    } else {
      out.push({ ...e });
    }
  }
  return out;
}

/** The part of `extents` inside `[start, end)`, cut at the bounds. */
export function clipAllocation(extents: readonly AllocationExtent[], start: number, end: number): AllocationExtent[] {
  const out: AllocationExtent[] = [];
  for (const e of extents) {
    const s = Math.max(e.start, start);
    const t = Math.min(e.start + e.length, end);
    if (t > s) out.push({ ...e, start: s, length: t - s });
  }
  return out;
}

let socketCounter = 0;

/** Where and how to export an image with qemu-nbd. */
export interface NbdTarget {
  /** Image path as given to qemu-nbd, relative to `cwd`. */
  readonly file: string;
  readonly format: 'qcow2' | 'raw';
  /** Working directory of qemu-nbd (QEMU 7.2 resolves data-file names against it). */
  readonly cwd: string;
  /** Directory for the socket and pid file (short path: sockets are limited to 107 bytes). */
  readonly runDir: string;
  /** Replaces `-f FORMAT FILE` (e.g. `--object … --image-opts …`). */
  readonly openArgs?: readonly string[];
}

/**
 * Exports the image read-only with `qemu-nbd -r -A` (allocation depth context) on a Unix
 * socket and reads `qemu:allocation-depth` with nbdinfo. Returns the raw extents with
 * depth 1-based as NBD reports it (0 = unallocated in every layer). The server serves one
 * client and exits; it is killed by pid if it is still around afterwards.
 */
export async function nbdAllocationDepth(target: NbdTarget): Promise<{ start: number; length: number; depth: number }[]> {
  const id = `${process.pid}-${++socketCounter}`;
  const sock = path.join(target.runDir, `nbd-${id}.sock`);
  const pidFile = path.join(target.runDir, `nbd-${id}.pid`);
  const errFile = path.join(target.runDir, `nbd-${id}.err`);
  const errFd = openSync(errFile, 'w');
  try {
    // --fork returns once the socket listens; the daemon keeps no pipe of ours open.
    const status = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(
        'qemu-nbd',
        ['-r', '-A', '-k', sock, '--fork', '--pid-file', pidFile, ...(target.openArgs ?? ['-f', target.format, target.file])],
        { cwd: target.cwd, stdio: ['ignore', 'ignore', errFd] },
      );
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
    if (status !== 0) {
      throw new Error(`qemu-nbd failed (status ${status}) on ${target.file}: ${readFileSync(errFile, 'utf8').trim()}`);
    }
    const r = await run('nbdinfo', ['--map=qemu:allocation-depth', `nbd+unix:///?socket=${sock}`], { timeoutMs: 30_000 });
    if (r.status !== 0) throw new Error(`nbdinfo failed (status ${r.status}) on ${target.file}: ${r.stderr.trim()}`);
    return parseNbdinfoMap(r.stdout);
  } finally {
    closeSync(errFd);
    await stopServer(pidFile);
    rmSync(sock, { force: true });
    rmSync(pidFile, { force: true });
    rmSync(errFile, { force: true });
  }
}

/**
 * Parses `nbdinfo --map` text output: one extent per line, `start length type description`
 * (for `qemu:allocation-depth`, type is the depth: 0 absent, 1 local, N "backing depth N").
 */
export function parseNbdinfoMap(text: string): { start: number; length: number; depth: number }[] {
  const out: { start: number; length: number; depth: number }[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^\s*(\d+)\s+(\d+)\s+(\d+)(\s|$)/.exec(line);
    if (m === null) throw new Error(`unexpected nbdinfo --map line: ${JSON.stringify(line)}`);
    out.push({ start: Number(m[1]), length: Number(m[2]), depth: Number(m[3]) });
  }
  return out;
}

/** Converts NBD allocation depths (1-based, 0 = absent) to vdisk's shape. */
export function nbdToAllocation(
  extents: readonly { start: number; length: number; depth: number }[],
  layers: number,
): AllocationExtent[] {
  return extents.map((e) =>
    e.depth === 0
      ? { start: e.start, length: e.length, depth: layers - 1, present: false }
      : { start: e.start, length: e.length, depth: e.depth - 1, present: true },
  );
}

/** Waits up to ~3 s for the qemu-nbd we started (pid file) to exit; kills it by pid if it does not. */
async function stopServer(pidFile: string): Promise<void> {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) return;
  for (let i = 0; i < 30; i++) {
    if (!alive(pid)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    // already gone
  }
}

/** Whether `pid` runs (a zombie, left when nobody reaps the daemon, counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ...": the state follows the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
  }
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
