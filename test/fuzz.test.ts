/**
 * Property-based fuzzing in npm test (scripts/fuzz.mjs, scripts/fuzz-cases.mjs): mutated
 * header bytes, extension bytes, L1/L2 entries and compressed payloads of valid images,
 * for about 45 seconds on two worker processes. Only vdisk's typed errors may escape; info,
 * map and reads must finish within the per-case budget; each worker's peak RSS must stay
 * under 256 MiB. The seed is random (printed on failure); reproduce a failure with
 * `npm run fuzz -- --seed SEED --runs N`. Long runs are recorded in FUZZING.md.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO } from './hostile/harness.js';

const SECONDS = Number(process.env['VDISK_FUZZ_SECONDS'] ?? 45);

interface FuzzSummary {
  runs: number;
  seed: number;
  seconds: number;
  maxRssKiB: number;
  findings: number;
  details: unknown[];
}

function fuzz(args: string[]): Promise<{ summary: FuzzSummary | null; stderr: string; status: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(REPO, 'scripts', 'fuzz.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (err = (err + b.toString('utf8')).slice(-20000)));
    child.on('error', reject);
    child.on('close', (status) => {
      let summary: FuzzSummary | null = null;
      try {
        summary = JSON.parse(out.trim().split('\n').pop() ?? '') as FuzzSummary;
      } catch {
        /* reported below */
      }
      resolve({ summary, stderr: err, status });
    });
  });
}

describe('fuzzing (fast-check)', () => {
  it(`finds nothing in ${SECONDS} s on two workers`, async () => {
    expect(existsSync(path.join(REPO, 'dist', 'index.js')), 'dist/ is missing: npm test builds it').toBe(true);
    const seed = Math.floor(Math.random() * 2 ** 31);
    const r = await fuzz(['--runs', '1000000', '--time-limit', String(SECONDS), '--workers', '2', '--seed', String(seed), '--json']);
    expect(r.summary, `fuzz.mjs produced no summary (status ${r.status}): ${r.stderr}`).not.toBeNull();
    const s = r.summary as FuzzSummary;
    console.log(`fuzz: ${s.runs} runs in ${s.seconds} s, seed ${s.seed}, peak RSS ${Math.round(s.maxRssKiB / 1024)} MiB`);
    expect(s.findings, `seed ${seed}: ${JSON.stringify(s.details, null, 1).slice(0, 8000)}`).toBe(0);
    expect(s.runs).toBeGreaterThan(100);
    expect(s.maxRssKiB).toBeGreaterThan(0);
    expect(s.maxRssKiB).toBeLessThan(256 * 1024);
  }, (SECONDS + 60) * 1000);
});
