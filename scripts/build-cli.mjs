// Bundles the CLI after tsc (run by `npm run build`):
// - dist/cli/bin.js: the CLI as one ES module (its dependencies stay external);
// - dist/cli/format-worker.cjs and dist/formats/workers/format-worker.cjs: the worker
//   threads' script (pool.ts starts it next to itself), as CommonJS: a worker that loads
//   CommonJS skips the ES module loader's start-up (~6 ms of each worker's ~30 ms);
// - dist/cli/vdisk: the launcher (src/cli/vdisk.sh), executable;
// - dist/cli/vdisk.cjs: the CLI bundled as one CommonJS script from dist/cli/snapshot-main.js
//   (`import.meta.url` read from `globalThis.vdiskModuleUrl`, which the entry sets at start);
// - dist/cli/vdisk.blob: the V8 heap after loading it and running its commands once on
//   images/chain-top.qcow2 (`node --build-snapshot`; the functions that ran are saved
//   compiled; built with SNAPSHOT_FLAGS), without Node's code cache of its built-ins, and
//   dist/cli/vdisk-pool.blob: the same heap with the code cache of the built-ins that worker
//   threads load (for convert and compare, which start them), and
//   dist/cli/vdisk.blob.node: the path and inode of the node that built it (a snapshot only
//   loads in the same Node build; the launcher uses it only with that file, else bin.js),
//   then the V8 flags it was built with (the launcher passes them).
// When the snapshot cannot be built, the build goes on without it (the launcher then runs
// bin.js) and says so.
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';
import { findCodeCache, namedBuiltins, probeScript, trimCodeCache } from './snapshot-code-cache.mjs';

/**
 * V8 flags of the snapshot's build, which every start from it must repeat (V8 refuses a
 * snapshot built with other flags); the stamp's third line, which the launcher passes.
 * --no-rehash-snapshot: keep the string hash seed the build drew (at random) instead of
 * deriving new hash secrets at every start — a prime search of 4-7 ms per start in Node
 * 20.20 (`HashSeed::InitializeRoots`). The seed stays private to this installation: the
 * launcher uses the snapshot only with the node file that built it.
 * --no-sparkplug --interrupt-budget=32768: no baseline (Sparkplug) code; functions go from
 * the interpreter straight to TurboFan, after half of V8's usual budget of bytecode run.
 * The snapshot cannot keep baseline code, so with Sparkplug every command compiled it again
 * on the main thread as its functions warmed up: ~1.3 ms of a W5 map (~32 ms), where no
 * function runs long enough to repay it. Long maps make up for it with TurboFan sooner (W1
 * 163 against 166 ms, W2 45.3 against 46.2; BENCHMARKS.md, sixteenth round).
 * --wasm-tiering-budget=100000000 (V8's default: 1,800,000, in V8's rough count of bytes
 * executed): the WebAssembly kernels stay in Liftoff code unless a function runs long (a
 * W5 map's busiest ones stay around 30 million). With the default, a W5 map sent up to
 * five kernel functions to TurboFan on V8's background thread, ~6 ms of compiling that the
 * map, over before the code arrives, hardly used; on a machine whose other core is busy it
 * ran on the map's own core (W5 on one core: 36.3 against 30.9 ms; on two: p75 31.8
 * against 30.9). Long workloads still tier up, a little later (W1 +1-2 %, W2 45.8 against
 * 43.5 ms; BENCHMARKS.md, sixteenth round).
 * Not --concurrent-sparkplug (baseline code compiled on V8's background thread, ~1 ms of a
 * W5 map): in Node 20.20 a process could hang at exit with it, the background compile
 * waiting for a garbage collection that the exiting main thread, joining that thread,
 * never runs (BENCHMARKS.md, fifteenth round).
 */
const SNAPSHOT_FLAGS = ['--no-rehash-snapshot', '--no-sparkplug', '--interrupt-budget=32768', '--wasm-tiering-budget=100000000'];
/** Packages the CLI may `require` at run time (their resolution loads built-ins). */
const OPTIONAL_PACKAGES = ['koffi', 'zstd-napi/binding', '@bokuweb/zstd-wasm'];

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cli = path.join(root, 'dist', 'cli');
const blob = path.join(cli, 'vdisk.blob');
const poolBlob = path.join(cli, 'vdisk-pool.blob');
const stamp = `${blob}.node`;

buildSync({
  entryPoints: [path.join(cli, 'bin.js')], allowOverwrite: true,
  bundle: true, platform: 'node', format: 'esm', packages: 'external', logLevel: 'warning',
  outfile: path.join(cli, 'bin.js'),
});
chmodSync(path.join(cli, 'bin.js'), 0o755);
const workers = path.join(root, 'dist', 'formats', 'workers');
buildSync({
  entryPoints: [path.join(workers, 'format-worker.js')],
  bundle: true, platform: 'node', format: 'cjs', packages: 'external', logLevel: 'warning',
  define: { 'import.meta.url': 'workerModuleUrl' },
  banner: { js: "const workerModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
  outfile: path.join(workers, 'format-worker.cjs'),
});
copyFileSync(path.join(workers, 'format-worker.cjs'), path.join(cli, 'format-worker.cjs'));

copyFileSync(path.join(root, 'src', 'cli', 'vdisk.sh'), path.join(cli, 'vdisk'));
chmodSync(path.join(cli, 'vdisk'), 0o755);
rmSync(blob, { force: true });
rmSync(poolBlob, { force: true });
rmSync(stamp, { force: true });

buildSync({
  entryPoints: [path.join(cli, 'snapshot-main.js')],
  bundle: true, platform: 'node', format: 'cjs', packages: 'external', logLevel: 'warning',
  define: { 'import.meta.url': 'globalThis.vdiskModuleUrl' },
  charset: 'ascii', minifyWhitespace: true, minifySyntax: true, legalComments: 'none',
  outfile: path.join(cli, 'vdisk.cjs'),
});
// The snapshot holds the bundle's source text, loaded at every start: without comments or
// indentation (names kept, for profiles and stack traces) it is 222 instead of 324 KB. One
// character beyond ASCII would make V8 keep all of it at two bytes per character (2-5 ms of
// a command here): esbuild escapes such characters in code (`charset: 'ascii'`); any left
// (none while it drops comments) become '?'.
const bundle = path.join(cli, 'vdisk.cjs');
writeFileSync(bundle, readFileSync(bundle, 'utf8').replace(/[^\x00-\x7f]/gu, '?'));

// The warm-up (src/cli/snapshot-warmup.ts) runs the commands on the shipped three-layer
// chain, so that the snapshot holds their functions compiled; without the image (a copy of
// dist/ alone) the snapshot is built cold. The commands' output is discarded.
const warmUpImage = path.join(root, 'images', 'chain-top.qcow2');
const warm = existsSync(warmUpImage);
if (!warm) console.warn(`build-cli: ${warmUpImage} is missing: the start-up snapshot is built without a warm-up (commands start slower).`);
const built = spawnSync(process.execPath, [...SNAPSHOT_FLAGS, '--snapshot-blob', blob, '--build-snapshot', path.join(cli, 'vdisk.cjs')], {
  cwd: cli, encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'],
  env: { ...process.env, VDISK_SNAPSHOT_WARMUP: warm ? warmUpImage : '' },
});
if (built.status !== 0) {
  rmSync(blob, { force: true });
  console.warn(`build-cli: no start-up snapshot (node --build-snapshot failed, status ${built.status}); vdisk starts without it.\n${built.stderr}`);
} else {
  splitCodeCache();
  const node = realpathSync(process.execPath);
  writeFileSync(stamp, `${node}\n${statSync(node).ino}\n${SNAPSHOT_FLAGS.join(' ')}\n`);
}

/**
 * Splits the blob by the built-ins' code cache (see snapshot-code-cache.mjs), which only
 * the built-ins compiled after the start use: vdisk-pool.blob, for the commands that start
 * worker threads (convert, compare), keeps the entries of what the main thread and a
 * worker load with every built-in the two bundles name and the optional packages resolved,
 * and the scripts that start a worker (internal/bootstrap, per_context, main/worker_thread);
 * vdisk.blob, for the others, keeps none (the main thread finds nearly everything it runs
 * in the heap; a start reads and copies each megabyte of cache). A trimmed file is kept
 * only if a map and a conversion of the warm-up image run from it give what they give from
 * the whole one, both succeeding; else the whole one is.
 */
function splitCodeCache() {
  const whole = readFileSync(blob);
  const sources = [readFileSync(bundle, 'utf8'), readFileSync(path.join(cli, 'format-worker.cjs'), 'utf8')];
  const names = namedBuiltins(sources, builtinModules);
  const probe = spawnSync(process.execPath, ['-e', probeScript(names, OPTIONAL_PACKAGES, cli)], { cwd: cli, encoding: 'utf8' });
  const loaded = (probe.stdout ?? '').split('\n').filter((l) => l !== '');
  let poolKeep = null;
  if (probe.status !== 0 || !loaded.includes('worker_threads')) {
    console.warn(`build-cli: the built-ins probe failed (status ${probe.status}); ${path.basename(poolBlob)} keeps all of Node's code cache.\n${probe.stderr}`);
  } else {
    const threadStart = (findCodeCache(whole)?.entries ?? []).map((e) => e.id).filter((id) => /^internal\/(?:bootstrap|per_context)\/|^internal\/main\/worker_thread$/u.test(id));
    poolKeep = new Set([...loaded, ...threadStart]);
  }
  // What each file serves, run from it: a map, and a conversion (which starts a worker).
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'vdisk-build-'));
  const check = (file) => {
    const run = (args) => spawnSync(process.execPath, [...SNAPSHOT_FLAGS, '--snapshot-blob', file, cli, ...args], { encoding: 'utf8' });
    const map = run(['map', '--output=json', warmUpImage]);
    const out = path.join(scratch, 'out.raw');
    rmSync(out, { force: true });
    const convert = run(['convert', '-O', 'raw', warmUpImage, out]);
    return { map, convert, bytes: existsSync(out) ? readFileSync(out) : null };
  };
  const same = (a, b) => a.status === b.status && a.stdout === b.stdout && a.stderr === b.stderr;
  try {
    const want = warm ? check(blob) : null;
    const write = (file, keep) => {
      const trimmed = keep === null ? null : trimCodeCache(whole, keep);
      if (keep !== null && trimmed === null) console.warn(`build-cli: no code cache found at the end of the snapshot (another Node layout); ${path.basename(file)} keeps it whole.`);
      writeFileSync(file, trimmed?.blob ?? whole);
      // Without the warm-up image there is nothing to compare runs on: the file is kept trimmed.
      if (trimmed === null || want === null) return;
      const got = check(file);
      const ok = want.map.status === 0 && want.convert.status === 0 && same(got.map, want.map) && same(got.convert, want.convert) &&
        got.bytes !== null && want.bytes !== null && got.bytes.equals(want.bytes);
      if (!ok) {
        console.warn(`build-cli: ${path.basename(file)} without part of the code cache ran differently; it keeps it whole.\n${got.map.stderr}${got.convert.stderr}`);
        writeFileSync(file, whole);
      }
    };
    write(poolBlob, poolKeep);
    write(blob, new Set());
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}
