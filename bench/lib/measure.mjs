// One process run, measured: whole-process wall time (process.hrtime around spawn → exit),
// peak RSS and CPU time, or a syscall census under strace.
import { openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { which } from './proc.mjs';

/**
 * How peak RSS is measured:
 * - 'time': GNU time (`/usr/bin/time -f '%M %U %S'`), i.e. the child's rusage from wait4:
 *   exact peak RSS (ru_maxrss) and user/system CPU time. Both sides are wrapped the same
 *   way, so its small start-up cost (about a millisecond) is in both sides' wall time.
 * - 'proc': no GNU time; /proc/<pid>/status VmHWM polled every 5 ms. A lower bound (a peak
 *   in the last few milliseconds can be missed); CPU time from /proc/<pid>/stat, also
 *   polled.
 */
export function rssMethod() {
  return which('/usr/bin/time') ? 'time' : 'proc';
}

export const RSS_METHOD_TEXT = {
  time: 'GNU time `/usr/bin/time -f "%M %U %S"` around each run (ru_maxrss from wait4: exact peak RSS; user+system CPU time)',
  proc: '/proc/<pid>/status VmHWM polled every 5 ms (a lower bound: GNU time is not installed)',
};

/**
 * Runs `cmd args` once. `stdout` is a path ('/dev/null' for timed runs, a file for the
 * verification run). Resolves { wallMs, rssKiB, cpuS, code, stderr }; rejects when the
 * command fails (non-zero exit), because a failed run must never be timed as a result.
 */
export function timedRun({ cmd, args, cwd, stdout = '/dev/null', method, scratch, env = process.env }) {
  const outFd = openSync(stdout, 'w');
  const timeFile = path.join(scratch, `.time-${process.pid}.txt`);
  const argv = method === 'time' ? ['/usr/bin/time', ['-f', '%M %U %S', '-o', timeFile, cmd, ...args]] : [cmd, args];
  return new Promise((resolve, reject) => {
    let stderr = '';
    let poller = null;
    let hwm = 0;
    let cpuTicks = 0;
    const t0 = process.hrtime.bigint();
    let child;
    try {
      child = spawn(argv[0], argv[1], { cwd, env, stdio: ['ignore', outFd, 'pipe'] });
    } catch (e) {
      closeSync(outFd);
      reject(e);
      return;
    }
    let wallMs = NaN;
    child.on('exit', () => { wallMs = Number(process.hrtime.bigint() - t0) / 1e6; });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d) => { if (stderr.length < 65536) stderr += d; });
    if (method === 'proc') {
      const poll = () => {
        try {
          const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
          if (m) hwm = Math.max(hwm, Number(m[1]));
          const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]?.split(' ');
          if (f) cpuTicks = Number(f[11]) + Number(f[12]);
        } catch { /* exited */ }
      };
      poll();
      poller = setInterval(poll, 5);
    }
    child.on('error', (e) => { if (poller) clearInterval(poller); closeSync(outFd); reject(e); });
    child.on('close', (code, signal) => {
      if (poller) clearInterval(poller);
      closeSync(outFd);
      let rssKiB = hwm || NaN;
      let cpuS = cpuTicks ? cpuTicks / 100 : NaN;
      if (method === 'time') {
        try {
          const lines = readFileSync(timeFile, 'utf8').trim().split('\n');
          const [m, u, s] = lines[lines.length - 1].split(' ').map(Number);
          rssKiB = m;
          cpuS = u + s;
        } catch { /* leave NaN */ }
        rmSync(timeFile, { force: true });
      }
      if (code !== 0) {
        const e = new Error(`${cmd} ${args.join(' ')} exited with ${code ?? signal}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`);
        e.stderr = stderr;
        reject(e);
        return;
      }
      resolve({ wallMs, rssKiB, cpuS, code, stderr });
    });
  });
}

/**
 * One run under `strace -f -C` (every syscall of every thread, per-line trace plus the
 * summary table). Returns counts: lseek SEEK_DATA / SEEK_HOLE calls (from the per-line
 * trace, so plain SEEK_SET/SEEK_CUR/SEEK_END lseeks are not counted), fsync + fdatasync,
 * read and write calls, total syscalls, and the five most frequent syscalls.
 */
export async function straceRun({ cmd, args, cwd, scratch }) {
  const traceFile = path.join(scratch, `.strace-${process.pid}.txt`);
  rmSync(traceFile, { force: true });
  const outFd = openSync('/dev/null', 'w');
  try {
    await new Promise((resolve, reject) => {
      const child = spawn('strace', ['-f', '-qq', '-C', '-o', traceFile, cmd, ...args], { cwd, stdio: ['ignore', outFd, 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (d) => { if (stderr.length < 65536) stderr += d; });
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`strace ${cmd} ${args.join(' ')} exited with ${code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`))));
    });
    return parseStrace(readFileSync(traceFile, 'utf8'));
  } finally {
    closeSync(outFd);
    rmSync(traceFile, { force: true });
  }
}

export function parseStrace(text) {
  let seekData = 0;
  let seekHole = 0;
  const calls = {};
  let total = NaN;
  let inSummary = false;
  for (const line of text.split('\n')) {
    if (!inSummary) {
      if (line.startsWith('% time')) { inSummary = true; continue; }
      const m = /\blseek\(\d+, -?\d+, SEEK_(DATA|HOLE)/.exec(line);
      if (m) { if (m[1] === 'DATA') seekData++; else seekHole++; }
      continue;
    }
    if (line.startsWith('---')) continue;
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5) continue;
    const name = cols[cols.length - 1];
    // Columns: %time seconds usecs/call calls [errors] syscall
    const n = Number(cols[3]);
    if (name === 'total') total = n;
    else if (Number.isFinite(n)) calls[name] = n;
  }
  const sum = (names) => names.reduce((a, k) => a + (calls[k] ?? 0), 0);
  const top = Object.entries(calls).sort((a, b) => b[1] - a[1]).slice(0, 5).map(([k, v]) => `${k} ${v}`);
  return {
    seekData, seekHole, seeks: seekData + seekHole,
    syncs: sum(['fsync', 'fdatasync', 'sync_file_range']),
    reads: sum(['read', 'pread64', 'readv', 'preadv', 'preadv2']),
    writes: sum(['write', 'pwrite64', 'writev', 'pwritev', 'pwritev2']),
    lseeksAll: calls.lseek ?? 0,
    total, top,
  };
}
