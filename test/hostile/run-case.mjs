#!/usr/bin/env node
/**
 * Runs corpus cases through the library (dist/index.js) in this process and prints one
 * JSON line: the outcome (`ok`, or the error's code and class), whether the error is a
 * VdiskError, wall time, peak RSS, every path the process opened through node:fs and every
 * unhandled rejection. Used by test/hostile-corpus.test.ts and scripts/fuzz.mjs.
 *
 *   node test/hostile/run-case.mjs ROOT CASES
 *
 * `CASES` is a case of images/bad/make-corpus.mjs (`name`, `file`, `op`, `options`) or an
 * array of them, as JSON text or the name of a JSON file. Cases run one after another; each
 * prints `#start NAME`, then its result line. The RSS reported is the peak during the case:
 * before each, the garbage of the cases before is collected (with `--expose-gc`) and the
 * kernel's peak mark is reset to the current RSS (Linux: `/proc/self/clear_refs`), so what
 * an earlier case left for the collector, or its own peak, does not count as a later one's;
 * where the mark cannot be reset, it is the process's peak so far.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const opened = [];
const wrap = (orig) =>
  function (p, ...rest) {
    opened.push(Buffer.isBuffer(p) ? p.toString() : String(p));
    return orig.call(this, p, ...rest);
  };
fsp.open = wrap(fsp.open);
fs.open = wrap(fs.open);
fs.openSync = wrap(fs.openSync);
syncBuiltinESMExports();

const unhandled = [];
process.on('unhandledRejection', (e) => unhandled.push(String(e instanceof Error ? e.stack : e)));

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { openImage, isVdiskError } = await import(path.join(repo, 'dist', 'index.js'));

/** Runs `op` on the image at `file` with library `options`; returns a count of what was produced. */
export async function runOp(file, op, options) {
  const opts = op === 'info' ? { ...options, openBacking: false, openDataFile: false } : options;
  const img = await openImage(file, opts);
  try {
    let n = 0;
    if (op === 'info') {
      await img.info();
      n = 1;
    } else if (op === 'map') {
      for await (const batch of img.mapEntryBatches()) n += batch.length;
    } else if (op === 'alloc') {
      for await (const _ of img.allocationExtents()) n++;
    } else if (op === 'read') {
      const chunk = 1 << 20;
      const buf = new Uint8Array(chunk);
      for (let o = 0; o < img.virtualSize; o += chunk) {
        const len = Math.min(chunk, img.virtualSize - o);
        await img.read(o, len, buf, 0);
        n += len;
      }
    } else {
      throw new Error(`unknown op ${op}`);
    }
    return n;
  } finally {
    await img.close();
  }
}

/** Resets the kernel's peak-RSS mark of this process to its current RSS; false where it cannot. */
function resetPeak() {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** Peak RSS in KiB since {@link resetPeak} (when it succeeded), else since the process started. */
function peakKiB(sinceReset) {
  if (sinceReset) {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m !== null) return Number(m[1]);
  }
  return process.resourceUsage().maxRSS;
}

const [root, casesArg] = process.argv.slice(2);
const list = casesArg.startsWith('[') || casesArg.startsWith('{') ? JSON.parse(casesArg) : JSON.parse(fs.readFileSync(casesArg, 'utf8'));
for (const c of Array.isArray(list) ? list : [list]) {
  globalThis.gc?.();
  const peakReset = resetPeak();
  opened.length = 0;
  unhandled.length = 0;
  process.stdout.write(`#start ${c.name ?? c.file}\n`);
  const t0 = performance.now();
  let result;
  try {
    const n = await runOp(path.join(root, c.file), c.op, c.options ?? {});
    result = { status: 'ok', produced: n };
  } catch (e) {
    result = {
      status: 'error',
      code: typeof e?.code === 'string' ? e.code : null,
      errorClass: e?.constructor?.name ?? typeof e,
      isVdiskError: isVdiskError(e),
      message: String(e instanceof Error ? e.message : e).slice(0, 2000),
      ...(isVdiskError(e) ? {} : { stack: String(e?.stack ?? '').slice(0, 4000) }),
    };
  }
  result.ms = Math.round(performance.now() - t0);
  // Let stray promises settle so unhandled rejections surface.
  await new Promise((r) => setTimeout(r, 5));
  result.name = c.name ?? c.file;
  result.opened = [...opened];
  result.unhandled = [...unhandled];
  result.maxRssKiB = peakKiB(peakReset);
  process.stdout.write(JSON.stringify(result) + '\n');
}
