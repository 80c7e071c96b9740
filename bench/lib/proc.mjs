// Small process helpers shared by the image builder and the measurements.
import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

/** Full path of an executable on PATH, or null. */
export function which(name) {
  if (name.includes('/')) {
    try { accessSync(name, constants.X_OK); return name; } catch { return null; }
  }
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try { accessSync(p, constants.X_OK); return p; } catch { /* next */ }
  }
  return null;
}

/**
 * Runs a command to completion (synchronously) and returns spawnSync's result with text
 * output. Throws with the command line and the tail of stderr when it fails, unless
 * `allowFail`.
 */
export function sh(cmd, args, opts = {}) {
  const { allowFail = false, ...rest } = opts;
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 512 << 20, ...rest });
  if (r.error) throw new Error(`cannot run ${cmd}: ${r.error.message}`);
  if (r.status !== 0 && !allowFail) {
    const tail = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n').slice(-15).join('\n');
    throw new Error(`command failed (exit ${r.status ?? r.signal}): ${cmd} ${args.join(' ')}\n${tail}`);
  }
  return r;
}

/** First line of `cmd args` (stdout, else stderr), or null when it cannot run. */
export function firstLine(cmd, args) {
  if (!which(cmd)) return null;
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) return null;
  const text = `${r.stdout ?? ''}`.trim() || `${r.stderr ?? ''}`.trim();
  return text.split('\n')[0] ?? null;
}

/**
 * Spawns a command asynchronously; resolves with exit code, signal and captured stderr
 * (capped). `stdio` is passed through for stdin/stdout; stderr is always a pipe.
 */
export function spawnCollect(cmd, args, { stdin = 'ignore', stdout = 'ignore', cwd, env } = {}) {
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(cmd, args, { stdio: [stdin, stdout, 'pipe'], cwd, env });
    } catch (e) {
      reject(e);
      return;
    }
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d) => { if (stderr.length < 1 << 20) stderr += d; });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}

export const median = (xs) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;
export const fmtGiB = (b) => `${(b / GiB).toFixed(2)} GiB`;
export const fmtMiB = (b) => `${(b / MiB).toFixed(b < 10 * MiB ? 1 : 0)} MiB`;
export const fmtMs = (ms) => (ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);
export const fmtDuration = (ms) => {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
};
