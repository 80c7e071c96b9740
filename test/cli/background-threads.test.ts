/**
 * The background threads' priority (src/cli/background-threads.ts), in child processes:
 * every thread Node started before the call is lowered by ten nice levels from where it
 * was (at most 19), the main thread is left alone, threads started afterwards keep the
 * main thread's priority; not for the commands that run worker threads; and the `vdisk`
 * command does it from its start-up snapshot.
 */
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, run } from '../helpers/cli.js';
import { buildQcow2, COPIED, ZERO_FLAG } from '../helpers/qcow2-builder.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

const MODULE = pathToFileURL(path.join(REPO_ROOT, 'dist', 'cli', 'background-threads.js')).href;
const LINUX = process.platform === 'linux';

/** A child's script: the nice value of each thread (tid → nice), before and after the call, as JSON. */
const PROBE = `
  const { readdirSync, readFileSync } = await import('node:fs');
  const { lowerBackgroundThreads } = await import(${JSON.stringify(MODULE)});
  const nice = () => Object.fromEntries(readdirSync('/proc/self/task').map((t) =>
    [t, Number(readFileSync('/proc/self/task/' + t + '/stat', 'utf8').split(') ')[1].split(' ')[16])]));
  const before = nice();
  const lowered = lowerBackgroundThreads();
  const after = nice();
  // A thread started now (a worker thread's) keeps the main thread's priority.
  const { Worker } = await import('node:worker_threads');
  const worker = new Worker('import { parentPort } from "node:worker_threads"; parentPort.postMessage(1); setInterval(() => {}, 1000);', { eval: true });
  await new Promise((resolve) => worker.once('message', resolve));
  const later = nice();
  await worker.terminate();
  console.log(JSON.stringify({ main: String(process.pid), before, lowered, after, later }));
`;

interface Probe {
  main: string;
  before: Record<string, number>;
  lowered: number;
  after: Record<string, number>;
  later: Record<string, number>;
}

async function probe(prefix: string[] = []): Promise<Probe> {
  const argv = [...prefix, process.execPath, '--input-type=module', '-e', PROBE];
  const r = await run(argv[0] as string, argv.slice(1));
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Probe;
}

describe.runIf(LINUX)('lowerBackgroundThreads', () => {
  it("lowers every thread but the main one by ten nice levels, and not the threads started after", async () => {
    const p = await probe();
    const others = Object.keys(p.before).filter((t) => t !== p.main);
    // Node starts its platform's threads before any script runs.
    expect(others.length).toBeGreaterThan(0);
    expect(p.lowered).toBe(others.length);
    expect(p.after[p.main]).toBe(p.before[p.main]);
    for (const t of others) expect(p.after[t], `thread ${t}`).toBe(Math.min(19, (p.before[t] as number) + 10));
    const started = Object.keys(p.later).filter((t) => !(t in p.before));
    expect(started.length).toBeGreaterThan(0);
    for (const t of started) expect(p.later[t], `thread ${t}`).toBe(p.before[p.main]);
  });

  it("keeps a user's own nice value as the base, and 19 as the floor", async () => {
    const p = await probe(['nice', '-n', '15']);
    expect(p.before[p.main]).toBe(15);
    expect(p.after[p.main]).toBe(15);
    for (const t of Object.keys(p.after).filter((x) => x !== p.main)) expect(p.after[t], `thread ${t}`).toBe(19);
  });

  it('leaves them alone for the commands that run worker threads of their own', async () => {
    const r = await run(process.execPath, ['--input-type=module', '-e', `
      const { lowerBackgroundThreadsFor } = await import(${JSON.stringify(MODULE)});
      const { getPriority } = await import('node:os');
      const { readdirSync } = await import('node:fs');
      const others = () => readdirSync('/proc/self/task').filter((t) => t !== String(process.pid)).map((t) => getPriority(Number(t)));
      const base = getPriority();
      const out = { convert: lowerBackgroundThreadsFor('convert'), compare: lowerBackgroundThreadsFor('compare'), untouched: others() };
      out.map = lowerBackgroundThreadsFor('map');
      out.lowered = others();
      out.base = base;
      console.log(JSON.stringify(out));
    `]);
    expect(r.status, r.stderr).toBe(0);
    const o = JSON.parse(r.stdout) as { convert: number; compare: number; map: number; untouched: number[]; lowered: number[]; base: number };
    expect([o.convert, o.compare]).toEqual([0, 0]);
    expect(o.untouched.every((n) => n === o.base)).toBe(true);
    expect(o.map).toBe(o.lowered.length);
    expect(o.lowered.every((n) => n === Math.min(19, o.base + 10))).toBe(true);
  });

  it('is done by the vdisk command, started from its snapshot, before the command runs', async () => {
    // A map whose JSON (8,192 entries, ~800 KB) outgrows the pipe: once its first bytes
    // are in, the reading stops, so the command waits in a write while its threads are read.
    const dir = makeTempDir('vdisk-nice-');
    try {
      const img = path.join(dir, 'alternating.qcow2');
      const cs = 65536;
      const entries = Array.from({ length: cs / 8 }, (_, i) => (i % 2 === 0 ? ZERO_FLAG : 0n));
      writeFileSync(img, buildQcow2({ header: { size: (cs / 8) * cs, l1Size: 1 }, l1: [BigInt(4 * cs) | COPIED], tables: [{ offset: 4 * cs, entries }] }));
      const child = spawn(path.join(REPO_ROOT, 'dist', 'cli', 'vdisk'), ['map', '--output=json', '-f', 'qcow2', img], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      let bytes = 0;
      await new Promise<void>((resolve) => child.stdout.once('data', (d: Buffer) => { bytes += d.length; child.stdout.pause(); resolve(); }));
      const tasks = readdirSync(`/proc/${child.pid}/task`);
      const nice = Object.fromEntries(tasks.map((t) => [t, Number(readFileSync(`/proc/${child.pid}/task/${t}/stat`, 'utf8').split(') ')[1]?.split(' ')[16])]));
      child.stdout.on('data', (d: Buffer) => (bytes += d.length));
      child.stdout.resume();
      expect(await exited, stderr).toBe(0);
      const base = nice[String(child.pid)] as number;
      expect(base).toBe(os.getPriority());
      const others = tasks.filter((t) => t !== String(child.pid)).map((t) => nice[t]);
      expect(others).toContain(Math.min(19, base + 10));
      expect(bytes).toBeGreaterThan(8192 * 80);
    } finally {
      removeTempDir(dir);
    }
  });
});
