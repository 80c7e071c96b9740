/**
 * A failed write of the CLI's output (src/cli/stdout-errors.ts, ascii-buffer.ts), through
 * the `vdisk` launcher: standard output on a full device is `vdisk: IO_STDOUT: cannot write
 * the output: ENOSPC` with status 1 for every printer (JSON map, human map, allocation map,
 * info), never a stack trace; a reader that goes away (`| head`) stops the map quietly with
 * status 1.
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, run } from '../helpers/cli.js';
import { COPIED, ZERO_FLAG, buildQcow2 } from '../helpers/qcow2-builder.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

const LAUNCHER = path.join(path.dirname(CLI), 'vdisk');
let dir = '';
let image = '';

beforeAll(() => {
  dir = makeTempDir('stdout-errors-');
  // 8192 clusters of 64 KiB alternating zero / unallocated: 8192 map entries (~700 KB of JSON,
  // more than a pipe holds).
  image = path.join(dir, 'alt.qcow2');
  const entries = Array.from({ length: 8192 }, (_, i) => (i % 2 === 0 ? ZERO_FLAG : 0n));
  writeFileSync(image, buildQcow2({ header: { size: 8192 * 65536 }, l1: [COPIED | 0x40000n], tables: [{ offset: 0x40000, entries }] }));
});

afterAll(() => {
  if (dir !== '') removeTempDir(dir);
});

/** `vdisk ARGS` with its standard output sent by the shell as `redirect` says. */
function sh(args: string, redirect: string): ReturnType<typeof run> {
  return run('/bin/sh', ['-c', `"$0" ${args} ${redirect}; echo "status $?" >&2`, LAUNCHER], { cwd: dir });
}

describe('the output cannot be written', () => {
  it('on a full device: IO_STDOUT, status 1, no stack trace', async () => {
    if (!existsSync('/dev/full')) {
      console.warn('stdout-errors.test.ts: SKIPPED: no /dev/full');
      return;
    }
    for (const args of ['map --output=json alt.qcow2', 'map alt.qcow2', 'map --output=json --mode=allocation alt.qcow2', 'info alt.qcow2', 'info --output=json alt.qcow2']) {
      const r = await sh(args, '> /dev/full');
      expect(r.stderr, args).toBe('vdisk: IO_STDOUT: cannot write the output: ENOSPC\nstatus 1\n');
    }
  });

  it('to a reader that went away: quietly, status 1', async () => {
    // bash's PIPESTATUS holds the launcher's status (a pipeline's own is head's).
    const r = await run('/bin/bash', ['-c', `"$0" map --output=json alt.qcow2 | head -c 10 > /dev/null; echo "status \${PIPESTATUS[0]}" >&2`, LAUNCHER], { cwd: dir });
    expect(r.stderr).toBe('status 1\n');
  });
});
