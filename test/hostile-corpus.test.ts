/**
 * The hostile-image corpus (images/bad/make-corpus.mjs, HOSTILE-IMAGES.md §6): every case
 * through the library and through the CLI, each in its own process, asserting
 *
 * - exactly the case's error code (or success for `OK--` cases), as a typed error: a
 *   VdiskError from the library, `vdisk: CODE: message` and exit status 1 from the CLI;
 * - no unhandled rejection;
 * - the case's wall-time budget;
 * - peak RSS under 256 MiB;
 * - no forbidden file opened (sentinels outside the allowed tree, refused backing files):
 *   library runs record every node:fs open; CLI runs are traced with strace when it is
 *   installed (otherwise that sub-check is skipped with a warning).
 *
 * Needs dist/ (npm test builds first).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HAVE_STRACE, REPO, pool, runCli, runLibraryBatch, type CaseOutcome, type CorpusCase } from './hostile/harness.js';

const RSS_LIMIT_KIB = 256 * 1024;
/** Process start-up (and strace) on top of a case's own budget, for CLI runs. */
const CLI_SLACK_MS = 4000;

const dir = mkdtempSync(path.join(os.tmpdir(), 'vdisk-bad-'));
execFileSync(process.execPath, [path.join(REPO, 'images', 'bad', 'make-corpus.mjs'), dir], { stdio: 'ignore' });
const corpus = JSON.parse(readFileSync(path.join(dir, 'cases.json'), 'utf8')) as { root: string; external: string[]; cases: CorpusCase[] };
const { root, cases } = corpus;

const lib = new Map<string, CaseOutcome>();
const cli = new Map<string, CaseOutcome>();

if (!HAVE_STRACE) console.warn('hostile-corpus.test.ts: strace not available: CLI runs are not checked for forbidden opens (library runs still are)');

beforeAll(async () => {
  if (!existsSync(path.join(REPO, 'dist', 'index.js'))) throw new Error('dist/ is missing: run npm run build (npm test does)');
  const scratch = (i: number): string => mkdtempSync(path.join(dir, `scratch-${i}-`));
  const libraryRuns = runLibraryBatch(root, cases, scratch(-1)).then((m) => m.forEach((v, k) => lib.set(k, v)));
  const cliRuns = pool(cases.map((c, i) => async () => cli.set(c.name, await runCli(root, c, scratch(i)))), 2);
  await Promise.all([libraryRuns, cliRuns]);
}, 600_000);

afterAll(() => {
  for (const f of corpus.external) rmSync(f, { force: true });
  rmSync(dir, { recursive: true, force: true });
});

describe('hostile corpus', () => {
  it('has at least 60 cases, each named after its expected code', () => {
    expect(cases.length).toBeGreaterThanOrEqual(60);
    for (const c of cases) expect(c.name.startsWith(`${c.code ?? 'OK'}--`)).toBe(true);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  it('sees the files a run opens (the forbidden-open checks are not vacuous)', () => {
    const c = cases.find((x) => x.name === 'OK--raw-backing-holding-qcow2');
    expect(c).toBeDefined();
    const trap = path.join(root, 'trap.raw');
    expect(lib.get(c?.name ?? '')?.opened).toContain(trap);
    const viaCli = cli.get(c?.name ?? '')?.opened;
    if (viaCli !== null && viaCli !== undefined) expect(viaCli).toContain(trap);
  });

  const check = (c: CorpusCase, r: CaseOutcome | undefined, budgetMs: number): void => {
    expect(r, 'no result').toBeDefined();
    if (r === undefined) return;
    const where = `${c.name}: ${r.code ?? 'ok'} ${r.message}\n${r.detail}`;
    expect(r.code, where).toBe(c.code);
    expect(r.typed, where).toBe(true);
    expect(r.unhandled, where).toEqual([]);
    expect(r.ms, `${c.name}: took ${Math.round(r.ms)} ms`).toBeLessThanOrEqual(budgetMs);
    expect(r.maxRssKiB, `${c.name}: peak RSS unknown`).toBeGreaterThan(0);
    expect(r.maxRssKiB, `${c.name}: peak RSS ${r.maxRssKiB} KiB`).toBeLessThan(RSS_LIMIT_KIB);
    if (r.opened !== null) {
      const bad = r.opened.filter((p) => c.forbidden.includes(p));
      expect(bad, `${c.name}: opened forbidden files`).toEqual([]);
    }
  };

  describe.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    it(`library: ${c.code ?? 'no error'} (${c.op})`, () => check(c, lib.get(c.name), c.budgetMs));
    it(`CLI: ${c.code ?? 'exit 0'}`, () => check(c, cli.get(c.name), c.budgetMs + CLI_SLACK_MS));
  });
});
