/**
 * A worker thread started ahead of need (formats/workers/pool.ts `prestartFormatWorker`,
 * which `vdisk convert` calls while its image opens), through the built package (`dist/`,
 * where the worker module exists): the next spawn takes that very thread, and a second
 * prestart starts none while one waits; a thread that stopped before it was taken is not
 * handed out; an untaken thread does not keep the process alive.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, run } from './helpers/cli.js';

type PoolModule = typeof import('../src/formats/workers/pool.js');
const POOL = pathToFileURL(path.join(REPO_ROOT, 'dist', 'formats', 'workers', 'pool.js')).href;
let P: PoolModule;

beforeAll(async () => {
  P = (await import(POOL)) as PoolModule;
});

/** A thread that counts its starts and, unless told to stay, exits at once. */
function starter(stay: boolean): { start: () => Worker; started: Worker[] } {
  const started: Worker[] = [];
  return {
    started,
    start: () => {
      const w = new Worker(stay ? 'setInterval(() => undefined, 1000)' : 'process.exit(0)', { eval: true });
      started.push(w);
      return w;
    },
  };
}

describe('prestartFormatWorker', () => {
  it('hands the thread it started to the next spawn; a second prestart starts none while one waits', async () => {
    const s = starter(true);
    P.prestartFormatWorker(s.start);
    P.prestartFormatWorker(s.start);
    expect(s.started.length).toBe(1);
    const taken = P.spawnFormatWorker();
    expect(taken).toBe(s.started[0]);
    // Taken: the next spawn starts a thread of its own (the real format worker).
    const next = P.spawnFormatWorker();
    expect(next).not.toBe(taken);
    await Promise.all([taken.terminate(), next.terminate()]);
  });

  it('does not hand out a thread that stopped before it was taken', async () => {
    const s = starter(false);
    P.prestartFormatWorker(s.start);
    const dead = s.started[0] as Worker;
    await new Promise((r) => dead.once('exit', r));
    await new Promise((r) => setImmediate(r));
    const w = P.spawnFormatWorker();
    expect(w).not.toBe(dead);
    await w.terminate();
  });

  it('does not keep the process alive while nobody took it', async () => {
    const r = await run(process.execPath, ['--input-type=module', '-e', `
      const p = await import(${JSON.stringify(POOL)});
      p.prestartFormatWorker();
      console.log('done');
    `], { timeoutMs: 20_000 });
    expect({ stdout: r.stdout.trim(), status: r.status, signal: r.signal }).toEqual({ stdout: 'done', status: 0, signal: null });
  });
});
