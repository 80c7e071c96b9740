/**
 * The `vdisk` command's processes end, however many run at once: sixty checks of an image
 * with 2 MiB clusters, started from the snapshot four at a time, all exit, with qemu-img's
 * answer. With V8's `--concurrent-sparkplug` in the snapshot's flags, 57 of 240 such runs
 * hung at exit (a background baseline compile waiting for a garbage collection that the
 * exiting main thread, joining that thread, never runs; BENCHMARKS.md, fifteenth round):
 * a change of the launcher's or the snapshot's V8 flags must pass this.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuIo } from '../helpers/backup-tools.js';
import { REPO_ROOT, run } from '../helpers/cli.js';
import { hasTool, qemuImg } from '../helpers/qemu.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

const LAUNCHER = path.join(REPO_ROOT, 'dist', 'cli', 'vdisk');
const hasQemu = hasTool('qemu-img') && hasTool('qemu-io', ['--version']);
if (!hasQemu) console.warn('exit-under-load.test.ts: qemu-img/qemu-io missing: the exit-under-load test SKIPPED');

/** Runs per batch (at once), batches, and the time one run may take. */
const AT_ONCE = 4;
const BATCHES = 15;
const RUN_LIMIT_MS = 10_000;

describe.skipIf(!hasQemu)('vdisk processes under load', () => {
  let dir = '';
  beforeAll(async () => {
    dir = makeTempDir('vdisk-exit-');
    const created = await qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', 'c2m.qcow2', '20M'], dir);
    expect(created.status, created.stderr).toBe(0);
    const written = await qemuIo('c2m.qcow2', dir, ['write 0 100k', 'write 9M 3M']);
    expect(written.status, written.stderr).toBe(0);
  });
  afterAll(() => removeTempDir(dir));

  it(`all end: ${AT_ONCE * BATCHES} checks of a 2 MiB-cluster image, ${AT_ONCE} at a time`, async () => {
    const want = await qemuImg(['check', 'c2m.qcow2'], dir);
    const outcomes: string[] = [];
    for (let b = 0; b < BATCHES; b++) {
      const batch = Array.from({ length: AT_ONCE }, async () => {
        const r = await run('timeout', ['-s', 'KILL', String(RUN_LIMIT_MS / 1000), LAUNCHER, 'check', 'c2m.qcow2'], { cwd: dir });
        return r.status === want.status && r.stdout === want.stdout ? 'ok' : `status ${r.status}: ${r.stderr.trim() || r.stdout.trim()}`;
      });
      outcomes.push(...(await Promise.all(batch)));
    }
    expect(outcomes.filter((o) => o !== 'ok')).toEqual([]);
  }, AT_ONCE * BATCHES * RUN_LIMIT_MS);
});
