/**
 * Argument rules of the backup options of the CLI (src/cli/main.ts): options that need
 * each other, options that exclude each other, and `snapshot` without `-l`. Runs the built
 * CLI on the committed fixtures.
 */
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { REPO_ROOT, runVdisk } from '../helpers/cli.js';

const sample = path.join(REPO_ROOT, 'images', 'sample.qcow2');

describe('backup options', () => {
  const bad: Array<[string, string[]]> = [
    ['--with-allocation without --bitmap', ['map', '--with-allocation', sample]],
    ['--base without --mode=allocation', ['map', '--base', sample, sample]],
    ['--bitmap with --mode', ['map', '--bitmap', 'x', '--mode=allocation', sample]],
    ['--snapshot with --base', ['map', '--mode=allocation', '--snapshot', 'x', '--base', sample, sample]],
    ['snapshot without -l', ['snapshot', sample]],
    ['check with two files', ['check', sample, sample]],
    ['check with a bad --output', ['check', '--output=xml', sample]],
  ];
  for (const [what, args] of bad) {
    it(`refuses ${what}`, async () => {
      const r = await runVdisk(args);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^vdisk: ARG_INVALID: /);
    });
  }

  it('a base outside the chain, an unknown bitmap and an unknown snapshot are typed errors', async () => {
    const chainTop = path.join(REPO_ROOT, 'images', 'chain-top.qcow2');
    expect((await runVdisk(['map', '--mode=allocation', '--base', sample, chainTop])).stderr).toMatch(/^vdisk: ARG_BASE_NOT_IN_CHAIN: /);
    expect((await runVdisk(['map', '--bitmap', 'x', sample])).stderr).toMatch(/^vdisk: ARG_BITMAP_NOT_FOUND: /);
    expect((await runVdisk(['map', '--snapshot', 'x', sample])).stderr).toMatch(/^vdisk: ARG_SNAPSHOT_NOT_FOUND: /);
  });

  it('--base with the top layer itself maps nothing as changed', async () => {
    const r = await runVdisk(['map', '--mode=allocation', '--base', sample, sample]);
    expect(r.status).toBe(0);
    const entries = JSON.parse(r.stdout) as Array<{ present: boolean; depth: number }>;
    expect(entries.every((e) => !e.present && e.depth === 0)).toBe(true);
  });

  it('snapshot -l prints nothing for an image without snapshots', async () => {
    const r = await runVdisk(['snapshot', '-l', sample]);
    expect(r).toMatchObject({ status: 0, stdout: '', stderr: '' });
  });

  it('check of a committed fixture is clean', async () => {
    const r = await runVdisk(['check', '--output=json', sample]);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ 'check-errors': 0, format: 'qcow2' });
  });
});
