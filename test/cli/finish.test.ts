/**
 * The CLI's end (src/cli/finish.ts), in child processes: with nothing left to write, the
 * process ends at once with the status, whatever else is still scheduled; with a write
 * still queued, it ends through Node's orderly exit, after the queue, with the status; after
 * a write that failed, the failure is reported and decides the status.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, run } from '../helpers/cli.js';

const FINISH = pathToFileURL(path.join(REPO_ROOT, 'dist', 'cli', 'finish.js')).href;
const STDOUT_ERRORS = pathToFileURL(path.join(REPO_ROOT, 'dist', 'cli', 'stdout-errors.js')).href;

describe('finish', () => {
  it('ends at once with the status when nothing is left to write', async () => {
    const t = Date.now();
    const r = await run(process.execPath, ['--input-type=module', '-e', `
      const { finish } = await import(${JSON.stringify(FINISH)});
      setTimeout(() => console.log('too late'), 5000);
      finish(3);
    `]);
    expect({ stdout: r.stdout, status: r.status }).toEqual({ stdout: '', status: 3 });
    expect(Date.now() - t).toBeLessThan(4000);
  });

  it("leaves a queued write to Node's orderly exit, with the status", async () => {
    const r = await run(process.execPath, ['--input-type=module', '-e', `
      const { finish } = await import(${JSON.stringify(FINISH)});
      // A write still queued, as on a pipe that Node writes asynchronously.
      Object.defineProperty(process.stdout, 'writableLength', { get: () => 1 });
      setTimeout(() => console.log('written after'), 100);
      finish(4);
    `]);
    expect({ stdout: r.stdout, status: r.status }).toEqual({ stdout: 'written after\n', status: 4 });
  });

  it('leaves a write that failed to be reported (status 1), not exited over with the command\'s status', async () => {
    const script = `
      const { finish } = await import(${JSON.stringify(FINISH)});
      const { watchStdoutErrors } = await import(${JSON.stringify(STDOUT_ERRORS)});
      watchStdoutErrors();
      process.stdout.write('x');
      finish(0);
    `;
    const r = await run('/bin/sh', ['-c', '"$0" --input-type=module -e "$1" > /dev/full', process.execPath, script]);
    expect({ stderr: r.stderr, status: r.status }).toEqual({ stderr: 'vdisk: IO_STDOUT: cannot write the output: ENOSPC\n', status: 1 });
  });
});
