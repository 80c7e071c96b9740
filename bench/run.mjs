#!/usr/bin/env node
// vdisk vs QEMU benchmark harness: `npm run bench` (see BENCHMARKS.md, "How to run").
//
// Builds (or reuses) the benchmark images, then for each workload runs one warm-up of each
// side (whose output is checked: map JSON byte for byte, convert outputs by content
// digest, see lib/digest.mjs), then
// --runs timed runs alternating vdisk / QEMU, then one strace run of each side. Writes the
// Results section of BENCHMARKS.md between the bench markers (full runs, or --write).
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, statSync, cpSync, copyFileSync, symlinkSync } from 'node:fs';
import { execFile, spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { sh, which, median, fmtMs, fmtGiB, fmtDuration } from './lib/proc.mjs';
import { ensureImages, allocatedBytes, convertOutputEstimate, imageContext, UNITS } from './lib/images.mjs';
import { timedRun, straceRun, rssMethod } from './lib/measure.mjs';
import { selectWorkloads, compareMapOutputs, compareAllocOutputs, WORKLOADS } from './lib/workloads.mjs';
import { describeMachine, busyNow } from './lib/machine.mjs';
import { cpuSnap, otherLoad } from './lib/load.mjs';
import { evaluate, renderResults, spliceResults } from './lib/report.mjs';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let VDISK_BIN = path.join(repo, 'dist', 'cli', 'bin.js');
const DIGEST = path.join(repo, 'bench', 'lib', 'digest.mjs');

const USAGE = `usage: npm run bench -- [options]

  --only W1,W3     run only these workloads (W4 = W4-plain,W4-zlib,W4-zstd; W5 = W5-map,W5-convert)
  --runs N         timed runs per side per workload (default 5; the issue asks for at least 5)
  --warmup N       warm-up runs per side (default 1; the first one is the output check)
  --fresh          rebuild the images the selected workloads need
  --dir DIR        bench directory (default $VDISK_BENCH_DIR, else ${path.join(os.tmpdir(), 'vdisk-bench')})
  --no-build       do not run \`npm run build\` first
  --no-strace      skip the strace runs (no lseek counts)
  --write          write BENCHMARKS.md even for a partial (--only) run
  --no-write       never write BENCHMARKS.md (results still go to DIR/results-*.json)
  --images-only    build / check the images and stop
  --render FILE    rewrite the Results section from a saved results-*.json (no measuring)
  --ref REF        measure the committed tree REF (git archive into DIR, built there) instead of
                   this working tree's dist/ (implies no build here)
  --wait-idle S    before each workload, wait up to S seconds for the CPUs to be under 20 % busy
  -h, --help

workloads: ${WORKLOADS.map((w) => w.id).join(', ')}`;

let cleanupDir = null;

function log(msg) {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function parse() {
  const { values } = parseArgs({
    options: {
      only: { type: 'string' }, runs: { type: 'string', default: '5' }, warmup: { type: 'string', default: '1' },
      fresh: { type: 'boolean', default: false }, dir: { type: 'string' }, 'no-build': { type: 'boolean', default: false },
      'no-strace': { type: 'boolean', default: false }, write: { type: 'boolean', default: false },
      'no-write': { type: 'boolean', default: false }, 'images-only': { type: 'boolean', default: false },
      'wait-idle': { type: 'string', default: '0' }, ref: { type: 'string' }, render: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    allowPositionals: false,
  });
  if (values.help) { process.stdout.write(`${USAGE}\n`); process.exit(0); }
  const runs = Number(values.runs);
  const warmup = Number(values.warmup);
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs must be a positive integer');
  if (!Number.isInteger(warmup) || warmup < 1) throw new Error('--warmup must be at least 1 (the first warm-up run is the output check)');
  const waitIdle = Number(values['wait-idle']);
  if (!Number.isFinite(waitIdle) || waitIdle < 0) throw new Error('--wait-idle takes a number of seconds');
  return { ...values, runs, warmup, waitIdle };
}

/**
 * Copies dist/ into the bench dir and runs vdisk from there, so a rebuild of dist/ by
 * someone else during the run cannot mix two builds into one set of samples. node_modules
 * is linked, package.json copied (for "type": "module").
 */
function snapshotVdisk(dir, from) {
  const snap = path.join(dir, 'vdisk-snapshot');
  rmSync(snap, { recursive: true, force: true });
  mkdirSync(snap, { recursive: true });
  cpSync(path.join(from, 'dist'), path.join(snap, 'dist'), { recursive: true });
  copyFileSync(path.join(from, 'package.json'), path.join(snap, 'package.json'));
  symlinkSync(path.join(repo, 'node_modules'), path.join(snap, 'node_modules'), 'dir');
  return snap;
}

/** Exports the committed tree `ref` into DIR/vdisk-ref and builds it there; returns its root. */
function buildRef(dir, ref) {
  const root = path.join(dir, 'vdisk-ref');
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const sha = sh('git', ['rev-parse', '--verify', `${ref}^{commit}`], { cwd: repo }).stdout.trim();
  const tar = spawnSync('git', ['archive', '--format=tar', sha], { cwd: repo, maxBuffer: 1 << 30 });
  if (tar.status !== 0) throw new Error(`git archive ${ref} failed: ${tar.stderr}`);
  sh('tar', ['-x', '-C', root], { input: tar.stdout, encoding: 'buffer' });
  symlinkSync(path.join(repo, 'node_modules'), path.join(root, 'node_modules'), 'dir');
  log(`npm run build of ${ref} (${sha.slice(0, 12)}) in ${root}`);
  sh('npm', ['run', 'build'], { cwd: root });
  return { root, sha };
}

/** Waits (up to `seconds`) for the CPUs to be less than 20 % busy; returns the last reading. */
async function waitIdle(seconds) {
  const t0 = Date.now();
  let b = await busyNow(2000);
  while (b.busy > 0.2 && Date.now() - t0 < seconds * 1000) {
    log(`  waiting for the machine to quieten: CPU ${(b.busy * 100).toFixed(0)} % busy${b.top.length ? ` (${b.top.join(', ')})` : ''}`);
    await sleep(10_000);
    b = await busyNow(2000);
  }
  const waitedMs = Date.now() - t0;
  if (waitedMs > 5000) log(`  CPU ${(b.busy * 100).toFixed(0)} % busy after waiting ${fmtDuration(waitedMs)}`);
  return { ...b, waitedMs };
}

/** Content digests (bench/lib/digest.mjs) of two files at once, one process per core. */
function digestPair(a, b) {
  const one = (p) => new Promise((resolve, reject) => {
    execFile(process.execPath, [DIGEST, p], { maxBuffer: 1 << 20 }, (err, stdout) => (err ? reject(err) : resolve(stdout.trim())));
  });
  return Promise.all([one(a), one(b)]);
}

function clearOut(outDir) {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  spawnSync('sync', [], { stdio: 'ignore' });
}

function displayCommand(cmd, args) {
  return [cmd === process.execPath ? 'vdisk' : cmd, ...args].join(' ');
}

async function runWorkload(w, ctx) {
  const { dir, opts, method } = ctx;
  const outDir = path.join(dir, 'out');
  const scratch = dir;
  const isConvert = w.kind === 'convert';
  const sides = {
    vdisk: (stdoutFile) => {
      const dst = 'out/vdisk.raw';
      // The executable itself, as a user's `vdisk` runs it (its launcher line included).
      return { cmd: VDISK_BIN, args: isConvert ? w.vdisk(w.image, dst) : w.vdisk(w.image), dst, stdoutFile };
    },
    qemu: (stdoutFile) => {
      const dst = 'out/qemu.raw';
      return { cmd: w.qemu.cmd, args: isConvert ? w.qemu.args(w.image, dst) : w.qemu.args(w.image), dst, stdoutFile };
    },
  };
  const result = {
    id: w.id, title: w.title, short: shortTitle(w), kind: w.kind, image: w.image,
    targets: w.targets, samples: { vdisk: [], qemu: [] }, warm: {}, strace: null, check: { ok: false, note: 'not checked' }, error: null,
    commands: {
      vdisk: displayCommand(process.execPath, sides.vdisk().args),
      qemu: displayCommand(w.qemu.cmd, sides.qemu().args),
    },
  };
  const run = async (side, stdout) => {
    const s = sides[side]();
    if (isConvert) clearOut(outDir);
    return timedRun({ cmd: s.cmd, args: s.args, cwd: dir, stdout, method, scratch });
  };

  try {
    // Warm-up; the first one is the output check.
    for (let i = 0; i < opts.warmup; i++) {
      const check = i === 0;
      const files = { vdisk: path.join(outDir, 'vdisk.stdout'), qemu: path.join(outDir, 'qemu.stdout') };
      if (check) clearOut(outDir);
      for (const side of ['vdisk', 'qemu']) {
        if (isConvert) {
          const s = sides[side]();
          // Keep the other side's output for the comparison: clear only this side's file.
          rmSync(path.join(dir, s.dst), { force: true });
          spawnSync('sync', [], { stdio: 'ignore' });
          result.warm[side] = await timedRun({ cmd: s.cmd, args: s.args, cwd: dir, stdout: '/dev/null', method, scratch });
        } else {
          result.warm[side] = await run(side, check ? files[side] : '/dev/null');
        }
      }
      if (!check) continue;
      if (w.kind === 'map') result.check = compareMapOutputs(files.vdisk, files.qemu);
      else if (w.kind === 'alloc') result.check = compareAllocOutputs(files.vdisk, files.qemu);
      else {
        const v = path.join(dir, 'out/vdisk.raw');
        const q = path.join(dir, 'out/qemu.raw');
        if (!existsSync(v) || !existsSync(q)) {
          result.check = { ok: false, note: `MISMATCH: missing output ${existsSync(v) ? q : v}` };
        } else {
          result.outputs = {
            vdisk: { size: statSync(v).size, allocated: allocatedBytes(v) },
            qemu: { size: statSync(q).size, allocated: allocatedBytes(q) },
          };
          const [hv, hq] = await digestPair(v, q);
          const ref = w.reference ? ctx.markers[w.reference]?.fsDigest : null;
          const sizeOk = result.outputs.vdisk.size === result.outputs.qemu.size;
          const ok = hv === hq && sizeOk && (!ref || hq === ref);
          result.check = {
            ok,
            note: ok
              ? `identical content digest ${hq.slice(0, 16)}…${ref ? ', equal to the source ext4 raw image' : ''}`
              : `MISMATCH: content digest vdisk ${hv.slice(0, 16)}… vs QEMU ${hq.slice(0, 16)}…${ref ? `, source ${ref.slice(0, 16)}…` : ''}${sizeOk ? '' : `, sizes ${result.outputs.vdisk.size} vs ${result.outputs.qemu.size}`}`,
          };
        }
      }
      log(`    ${w.id}: output check: ${result.check.ok ? 'ok' : 'MISMATCH'} — ${result.check.note}`);
      clearOut(outDir);
    }

    // Timed runs, alternating.
    const c0 = cpuSnap();
    const h0 = process.cpuUsage();
    for (let i = 0; i < opts.runs; i++) {
      for (const side of ['vdisk', 'qemu']) result.samples[side].push(await run(side, '/dev/null'));
      const last = (side) => fmtMs(result.samples[side][i].wallMs);
      log(`    ${w.id}: run ${i + 1}/${opts.runs}: vdisk ${last('vdisk')}, QEMU ${last('qemu')}`);
    }
    result.otherLoad = otherLoad(c0, cpuSnap(), h0);

    // Syscall census.
    if (ctx.strace) {
      result.strace = {};
      for (const side of ['vdisk', 'qemu']) {
        const s = sides[side]();
        if (isConvert) clearOut(outDir);
        result.strace[side] = await straceRun({ cmd: s.cmd, args: s.args, cwd: dir, scratch });
      }
      log(`    ${w.id}: strace: SEEK_DATA+SEEK_HOLE vdisk ${result.strace.vdisk.seeks}, QEMU ${result.strace.qemu.seeks}`);
    }
  } catch (e) {
    result.error = e.message;
    log(`    ${w.id}: ERROR ${e.message}`);
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
  result.eval = evaluate(result);
  return result;
}

function shortTitle(w) {
  return {
    W1: 'map, 1 TiB prealloc=metadata + 10k writes', W2: 'map, 16 GiB alternating zero/unallocated', W3: 'allocation map of W1',
    'W4-plain': 'convert, ext4 qcow2 plain', 'W4-zlib': 'convert, ext4 qcow2 zlib', 'W4-zstd': 'convert, ext4 qcow2 zstd',
    'W5-map': 'map, 3-deep chain', 'W5-convert': 'convert, 3-deep chain',
  }[w.id] ?? w.id;
}

/** --render: re-evaluates a saved results file and writes / prints its Results section. */
function renderSaved(opts) {
  const res = JSON.parse(readFileSync(opts.render, 'utf8'));
  for (const w of res.workloads) w.eval = evaluate(w);
  writeResults(res, opts);
  return 0;
}

function writeResults(res, opts) {
  const md = renderResults(res);
  const write = !opts['no-write'] && (!res.partial || opts.write);
  if (write) {
    const docPath = path.join(repo, 'BENCHMARKS.md');
    const doc = existsSync(docPath) ? readFileSync(docPath, 'utf8') : '# Benchmarks\n';
    writeFileSync(docPath, spliceResults(doc, md));
    log(`wrote the Results section of ${docPath}`);
  } else {
    log(`BENCHMARKS.md not written (${res.partial ? 'partial run; pass --write to write it anyway' : '--no-write'})`);
  }
  process.stdout.write(`${md}\n`);
}

async function main() {
  const t0 = Date.now();
  const opts = parse();
  if (opts.render) return renderSaved(opts);
  const workloads = selectWorkloads(opts.only);
  const partial = workloads.length !== WORKLOADS.length;
  const dir = path.resolve(opts.dir ?? process.env.VDISK_BENCH_DIR ?? path.join(os.tmpdir(), 'vdisk-bench'));
  mkdirSync(dir, { recursive: true });
  cleanupDir = dir;
  log(`bench dir ${dir}; workloads ${workloads.map((w) => w.id).join(', ')}; ${opts.runs} timed runs per side`);

  for (const tool of ['qemu-img', 'qemu-io']) if (!which(tool)) throw new Error(`${tool} is not installed (apt-get install qemu-utils)`);
  const straceOk = !opts['no-strace'] && !!which('strace');
  if (!opts['no-strace'] && !straceOk) log('strace is not installed: lseek counts will be missing (apt-get install strace)');

  if (!opts['no-build'] && !opts['images-only'] && !opts.ref) {
    log('npm run build');
    sh('npm', ['run', 'build'], { cwd: repo });
  }
  let refBuild = null;
  if (opts.ref && !opts['images-only']) refBuild = buildRef(dir, opts.ref);
  const distRoot = refBuild ? refBuild.root : repo;
  if (!existsSync(path.join(distRoot, 'dist', 'cli', 'bin.js'))) throw new Error(`${distRoot}/dist/cli/bin.js is missing: run npm run build`);

  const units = [...new Set(workloads.flatMap((w) => w.units))];
  const anyConvert = workloads.some((w) => w.kind === 'convert');
  const convertPeak = anyConvert ? 2 * convertOutputEstimate(imageContext(['w4'])) : 0;
  log('images:');
  const images = ensureImages(dir, units, { fresh: opts.fresh, log: (m) => log(m), extraTransient: convertPeak });
  if (opts['images-only']) { log(`images ready in ${dir}`); return 0; }

  const snap = snapshotVdisk(dir, distRoot);
  // The `vdisk` launcher (start-up snapshot), as `npx vdisk` runs; bin.js in builds before it.
  VDISK_BIN = path.join(snap, 'dist', 'cli', existsSync(path.join(snap, 'dist', 'cli', 'vdisk')) ? 'vdisk' : 'bin.js');
  const machine = describeMachine(repo, dir, snap, refBuild);
  machine.busyStart = opts.waitIdle > 0 ? await waitIdle(opts.waitIdle) : await busyNow();
  const method = rssMethod();
  const ctx = { dir, opts, method, strace: straceOk, markers: images.markers };
  const tMeasure = Date.now();
  // Fixed costs: bare Node start-up and vdisk's own start-up (argument parsing, module load).
  const floor = {};
  const noCa = { ...process.env };
  delete noCa.NODE_EXTRA_CA_CERTS;
  for (const [key, cmd, args, env] of [
    ['node', process.execPath, ['-e', '0'], process.env],
    ['nodeNoCa', process.execPath, ['-e', '0'], noCa],
    ['vdiskHelp', VDISK_BIN, ['--help'], process.env],
  ]) {
    const xs = [];
    for (let i = 0; i < 6; i++) xs.push((await timedRun({ cmd, args, cwd: dir, method, scratch: dir, env })).wallMs);
    floor[key] = median(xs.slice(1));
  }
  log(`start-up floor: node -e 0 ${fmtMs(floor.node)} (without NODE_EXTRA_CA_CERTS ${fmtMs(floor.nodeNoCa)}), vdisk --help ${fmtMs(floor.vdiskHelp)}`);
  const results = [];
  for (const w of workloads) {
    log(`${w.id}: ${w.title}`);
    if (opts.waitIdle > 0 && w !== workloads[0]) await waitIdle(opts.waitIdle);
    const r = await runWorkload(w, ctx);
    if (!r.error) log(`${w.id}: vdisk ${fmtMs(r.eval.vMedian)}, QEMU ${fmtMs(r.eval.qMedian)}, ratio ${r.eval.ratio.toFixed(2)}, vdisk RSS ${r.eval.vRssMiB.toFixed(0)} MiB, met: ${r.eval.met}`);
    results.push(r);
  }
  const measureMs = Date.now() - tMeasure;

  const totalAllocated = Object.values(images.markers).flatMap((m) => Object.values(m.files ?? {})).reduce((a, f) => a + f.allocated, 0);
  const maxOut = Math.max(0, ...results.filter((r) => r.outputs).map((r) => r.outputs.vdisk.allocated + r.outputs.qemu.allocated));
  const res = {
    machine, floor, partial, dir, runs: opts.runs, warmup: opts.warmup, rssMethod: method, strace: straceOk,
    loadEnd: os.loadavg().map((x) => x.toFixed(2)).join(' '),
    images: {
      markers: images.markers, built: images.built, buildMs: images.buildMs, totalAllocated,
      convertPeak: anyConvert ? maxOut || convertPeak : 0,
      w4Transient: images.markers.w4?.peakTransient ?? 0,
    },
    measureMs, totalMs: Date.now() - t0, workloads: results,
  };

  const jsonPath = path.join(dir, `results-${machine.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(jsonPath, `${JSON.stringify(res, null, 2)}\n`);
  writeResults(res, opts);
  log(`raw results: ${jsonPath}`);
  log(`done in ${fmtDuration(res.totalMs)} (images ${fmtDuration(images.buildMs)}, measurements ${fmtDuration(measureMs)})`);
  const bad = results.filter((r) => r.error || !r.check.ok);
  if (bad.length) {
    log(`FAILED: ${bad.map((r) => `${r.id} (${r.error ? 'error' : 'output mismatch'})`).join(', ')}`);
    return 1;
  }
  return 0;
}

// On Ctrl-C / SIGTERM: remove the convert outputs and scratch files, then exit.
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    const dir = cleanupDir;
    if (dir) {
      rmSync(path.join(dir, 'out'), { recursive: true, force: true });
      rmSync(path.join(dir, `.strace-${process.pid}.txt`), { force: true });
      rmSync(path.join(dir, `.time-${process.pid}.txt`), { force: true });
    }
    log(`interrupted (${sig}); partial results discarded`);
    process.exit(130);
  });
}

main().then((code) => { process.exitCode = code; }, (e) => {
  log(`error: ${e.message}`);
  process.exitCode = 2;
});
