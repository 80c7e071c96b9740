#!/usr/bin/env node
/**
 * Property-based fuzzing of vdisk with fast-check (inputs and property: fuzz-cases.mjs),
 * against the built library (dist/; run `npm run build` first).
 *
 *   npm run fuzz -- [--runs N] [--seed S] [--workers W] [--time-limit SECONDS]
 *                   [--case-ms MS] [--rss-mib MIB] [--findings DIR] [--dist DIR] [--json]
 *
 * Defaults: 10000 runs, a random seed, 2 workers (child processes), no time limit, 5000 ms
 * per case, 256 MiB peak RSS per worker, the library in dist/. Each worker runs its share of the runs with its own
 * seed (seed + 1000003 × worker). A failing input is shrunk by fast-check, saved to the
 * findings directory (the image and a JSON description), and the worker goes on with the
 * next seed. A worker that stops making progress (a hang: 3 × case budget + 10 s) is killed,
 * its current input is saved as a finding, and it restarts. Prints a summary (JSON with
 * --json) and exits 1 when there are findings.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const REPO = path.resolve(path.dirname(SELF), '..');

function parseArgs(argv) {
  const o = { runs: 10000, seed: Math.floor(Math.random() * 2 ** 31), workers: 2, timeLimit: 0, caseMs: 5000, rssMib: 256, findings: null, json: false, child: false, dir: null, dist: path.join(REPO, 'dist') };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    switch (a) {
      case '--runs': o.runs = Number(next()); break;
      case '--seed': o.seed = Number(next()); break;
      case '--workers': o.workers = Number(next()); break;
      case '--time-limit': o.timeLimit = Number(next()); break;
      case '--case-ms': o.caseMs = Number(next()); break;
      case '--rss-mib': o.rssMib = Number(next()); break;
      case '--findings': o.findings = next(); break;
      case '--dir': o.dir = next(); break;
      case '--dist': o.dist = path.resolve(next()); break;
      case '--json': o.json = true; break;
      case '--child': o.child = true; break;
      default: throw new Error(`unknown option ${a}`);
    }
  }
  for (const k of ['runs', 'seed', 'workers', 'timeLimit', 'caseMs', 'rssMib']) {
    if (!Number.isSafeInteger(o[k]) || o[k] < 0) throw new Error(`--${k} must be a non-negative integer`);
  }
  return o;
}

// ------------------------------------------------------------------------------------------
// Child: runs the property.
// ------------------------------------------------------------------------------------------

async function child(o) {
  const fc = (await import('fast-check')).default;
  const { applyMutations, exercise, fuzzInput, prepareDir } = await import('./fuzz-cases.mjs');
  const { BASES } = await import('./fuzz-cases.mjs');
  const lib = await import(path.join(o.dist, 'index.js'));
  const dir = o.dir;
  prepareDir(dir);
  const unhandled = [];
  process.on('unhandledRejection', (e) => unhandled.push(String(e instanceof Error ? e.stack : e)));
  const limitKiB = o.rssMib * 1024;
  const deadline = o.timeLimit > 0 ? Date.now() + o.timeLimit * 1000 : Infinity;
  let caseNo = 0;
  const prop = fc.asyncProperty(fuzzInput, async (input) => {
    const name = BASES[input.base].name;
    const file = path.join(dir, `case-${name}`);
    fs.writeFileSync(file, applyMutations(input));
    fs.writeFileSync(path.join(dir, 'current.json'), JSON.stringify({ file, base: name, input }, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v)));
    process.stdout.write(`#case ${++caseNo}\n`);
    unhandled.length = 0;
    const t0 = performance.now();
    await exercise(lib, file);
    await new Promise((r) => setImmediate(r));
    const ms = performance.now() - t0;
    if (ms > o.caseMs) throw new Error(`over the time budget: ${Math.round(ms)} ms > ${o.caseMs} ms`);
    if (unhandled.length > 0) throw new Error(`unhandled rejection: ${unhandled[0]}`);
    const rss = process.resourceUsage().maxRSS;
    if (rss > limitKiB) throw new Error(`peak RSS ${rss} KiB over ${limitKiB} KiB`);
  });
  let done = 0;
  let seed = o.seed;
  while (done < o.runs && Date.now() < deadline) {
    const left = deadline === Infinity ? undefined : Math.max(1, deadline - Date.now());
    const d = await fc.check(prop, {
      seed, numRuns: o.runs - done, endOnFailure: false,
      ...(left === undefined ? {} : { interruptAfterTimeLimit: left, markInterruptAsFailure: false }),
    });
    done += d.numRuns;
    if (d.failed && d.counterexample !== null) {
      const input = d.counterexample[0];
      const err = d.errorInstance;
      const finding = {
        seed, runs: d.numRuns, base: BASES[input.base].name, input,
        error: err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err),
        stack: err instanceof Error ? String(err.stack).slice(0, 3000) : '',
      };
      process.stdout.write(`#finding ${JSON.stringify(finding, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v))}\n`);
      fs.writeFileSync(path.join(dir, 'finding.img'), applyMutations(input));
      process.stdout.write(`#finding-image ${path.join(dir, 'finding.img')}\n`);
      done += 1;
    }
    seed += 1;
    if (d.interrupted) break;
  }
  process.stdout.write(`#done ${JSON.stringify({ runs: done, maxRssKiB: process.resourceUsage().maxRSS })}\n`);
}

// ------------------------------------------------------------------------------------------
// Parent: spawns workers, watches them, collects findings.
// ------------------------------------------------------------------------------------------

function runWorker(o, index, runs, seed, tmp, findings, report) {
  return new Promise((resolve) => {
    const dir = path.join(tmp, `w${index}`);
    const args = [SELF, '--child', '--runs', String(runs), '--seed', String(seed), '--dir', dir, '--case-ms', String(o.caseMs), '--rss-mib', String(o.rssMib), '--dist', o.dist];
    const remaining = o.timeLimit > 0 ? Math.max(1, Math.round(o.timeLimit - (Date.now() - report.start) / 1000)) : 0;
    if (remaining > 0) args.push('--time-limit', String(remaining));
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let buffered = '';
    let stderr = '';
    let cases = 0;
    let finished = null;
    let hung = false;
    let timer;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        hung = true;
        child.kill('SIGKILL');
      }, o.caseMs * 3 + 10_000);
    };
    arm();
    child.stdout.on('data', (b) => {
      buffered += b.toString('utf8');
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith('#case ')) {
          cases++;
          report.cases++;
          arm();
        } else if (line.startsWith('#finding ')) {
          findings.push({ kind: 'property', worker: index, ...JSON.parse(line.slice(9)) });
        } else if (line.startsWith('#finding-image ')) {
          const f = findings[findings.length - 1];
          if (f !== undefined) f.image = saveFinding(o, line.slice(15), findings.length, f);
        } else if (line.startsWith('#done ')) {
          finished = JSON.parse(line.slice(6));
        }
      }
    });
    child.stderr.on('data', (b) => {
      stderr = (stderr + b.toString('utf8')).slice(-8000);
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      if (finished !== null && !hung) {
        report.maxRssKiB = Math.max(report.maxRssKiB, finished.maxRssKiB);
        resolve({ runs: finished.runs, restart: false });
        return;
      }
      // A hang or a crash: the current input is a finding; go on with the rest.
      let current = null;
      try {
        current = JSON.parse(fs.readFileSync(path.join(dir, 'current.json'), 'utf8'));
      } catch {
        /* no case started */
      }
      const f = { kind: hung ? 'hang' : 'crash', worker: index, seed, status, base: current?.base, input: current?.input ?? null, stderr };
      findings.push(f);
      if (current !== null && fs.existsSync(current.file)) f.image = saveFinding(o, current.file, findings.length, f);
      resolve({ runs: cases, restart: true });
    });
  });
}

function saveFinding(o, imagePath, n, f) {
  if (o.findings === null) return imagePath;
  fs.mkdirSync(o.findings, { recursive: true });
  const dest = path.join(o.findings, `finding-${Date.now()}-${n}${path.extname(imagePath) || '.img'}`);
  fs.copyFileSync(imagePath, dest);
  fs.writeFileSync(`${dest}.json`, JSON.stringify(f, null, 1));
  return dest;
}

async function parent(o) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-fuzz-'));
  const findings = [];
  const report = { start: Date.now(), cases: 0, maxRssKiB: 0 };
  let totalRuns = 0;
  const progress = o.json ? null : setInterval(() => {
    process.stderr.write(`fuzz: ${report.cases} cases, ${findings.length} finding(s), ${Math.round((Date.now() - report.start) / 1000)} s\n`);
  }, 60_000);
  try {
    const per = Math.ceil(o.runs / Math.max(1, o.workers));
    await Promise.all(Array.from({ length: Math.max(1, o.workers) }, async (_, w) => {
      let left = Math.min(per, o.runs - per * w);
      let seed = o.seed + 1_000_003 * w;
      while (left > 0) {
        const r = await runWorker(o, w, left, seed, tmp, findings, report);
        totalRuns += r.runs;
        left -= r.runs;
        if (!r.restart) break;
        left -= 1;
        seed += 7919;
        if (o.timeLimit > 0 && Date.now() - report.start > o.timeLimit * 1000) break;
      }
    }));
  } finally {
    if (progress !== null) clearInterval(progress);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const summary = {
    runs: totalRuns, cases: report.cases, seed: o.seed, workers: o.workers, seconds: Math.round((Date.now() - report.start) / 1000),
    maxRssKiB: report.maxRssKiB, findings: findings.length,
  };
  if (o.json) {
    process.stdout.write(JSON.stringify({ ...summary, details: findings }) + '\n');
  } else {
    console.log(`fuzz: ${summary.runs} runs (${summary.cases} executions incl. shrinking) in ${summary.seconds} s, seed ${summary.seed}, ${summary.workers} workers, peak RSS ${Math.round(summary.maxRssKiB / 1024)} MiB per worker`);
    for (const f of findings) console.log(`finding (${f.kind}): ${f.error ?? f.stderr?.slice(-500) ?? ''}\n  base ${f.base ?? ''} image ${f.image ?? '-'}\n  input ${JSON.stringify(f.input)}`);
    console.log(`${findings.length} finding(s)`);
  }
  process.exitCode = findings.length > 0 ? 1 : 0;
}

const opts = parseArgs(process.argv.slice(2));
if (opts.child) await child(opts);
else await parent(opts);
