/**
 * The `vdisk` launcher (src/cli/vdisk.sh, built into dist/cli/vdisk with the start-up
 * snapshot by scripts/build-cli.mjs): the build made a snapshot for this node; the
 * launcher starts from it — directly and through a symlink, as npm's `.bin` links it — and
 * gives what `node dist/cli/bin.js` gives, output, errors and exit status alike; it runs
 * bin.js instead when NODE_OPTIONS are set, or the snapshot or its stamp is missing (or the
 * stamp lacks the line of V8 flags the snapshot was built with, which it passes), or it was
 * built by another node (another path, or the same path now another file) or is older than
 * the node it would run with. On the usual way it starts no process but node: node's
 * inode is compared (with ls) only when node's directory changed since the snapshot. Which
 * way it went is read from `sh -x`'s trace. It sizes V8's thread pool to the machine, and
 * (but for convert and compare) tunes glibc's allocator, which then gives huge pages.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, realpathSync, renameSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, REPO_ROOT, run, snapshotFlags } from '../helpers/cli.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

const DIST = path.dirname(CLI);
/** The snapshot's V8 flags, as the stamp's third line holds them and the launcher passes them. */
const FLAGS = snapshotFlags().join(' ');
const LAUNCHER = path.join(DIST, 'vdisk');
/** The size of V8's pool of background threads the launcher asks for: the machine's. */
const POOL = '--v8-pool-size=0';
const SAMPLE = path.join(REPO_ROOT, 'images', 'sample.qcow2');
/** `text` as a regular expression matching it literally. */
const reEscape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
let dir = '';

beforeAll(() => {
  dir = makeTempDir('launcher-');
});

afterAll(() => {
  if (dir !== '') removeTempDir(dir);
});

/** Runs `launcher args` under `sh -x`: the result, and the command line it exec'd. */
async function launch(
  launcher: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env,
): Promise<{ stdout: string; stderr: string; status: number | null; exec: string; trace: string }> {
  const r = await run('/bin/sh', ['-x', launcher, ...args], { env });
  const lines = r.stderr.split('\n');
  const exec = lines.filter((l) => l.startsWith('+ exec ')).pop() ?? '';
  const trace = lines.filter((l) => l.startsWith('+')).join('\n');
  return { stdout: r.stdout, stderr: lines.filter((l) => !l.startsWith('+')).join('\n'), status: r.status, exec, trace };
}

/** `node dist/cli/bin.js args`, the reference. */
async function plain(args: readonly string[]): Promise<{ stdout: string; stderr: string; status: number | null }> {
  const r = await run(process.execPath, [CLI, ...args]);
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

describe('vdisk launcher', () => {
  it('was built with a start-up snapshot for this node, with the V8 flags it names', () => {
    expect(existsSync(path.join(DIST, 'vdisk.blob'))).toBe(true);
    const node = realpathSync(process.execPath);
    expect(readFileSync(path.join(DIST, 'vdisk.blob.node'), 'utf8')).toBe(`${node}\n${statSync(node).ino}\n--no-rehash-snapshot --no-sparkplug --interrupt-budget=32768 --wasm-tiering-budget=100000000\n`);
  });

  it('refuses the snapshot without its V8 flags (so the launcher must pass them)', async () => {
    const r = await run(process.execPath, ['--snapshot-blob', path.join(DIST, 'vdisk.blob'), DIST, 'info', SAMPLE]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('different V8 configurations');
  });

  it('snapshots a bundle of ASCII text (V8 keeps other source at two bytes per character)', () => {
    const bytes = readFileSync(path.join(DIST, 'vdisk.cjs'));
    expect(bytes.findIndex((b) => b > 0x7f)).toBe(-1);
    // Characters beyond ASCII in its strings are escapes (esbuild's charset: ascii).
    expect(bytes.toString('latin1')).toContain('\\uFFFD');
  });

  it('starts from the snapshot, directly and through a symlink, and gives what bin.js gives; convert and compare from the one for worker threads', async () => {
    const link = path.join(dir, 'vdisk-link');
    symlinkSync(LAUNCHER, link);
    const out = path.join(dir, 'sample.raw');
    const cases = [['map', '--output=json', SAMPLE], ['info', SAMPLE], ['map', path.join(dir, 'missing.qcow2')], ['frobnicate'], ['compare', SAMPLE, SAMPLE], ['convert', '-O', 'raw', SAMPLE, out]];
    for (const args of cases) {
      const want = await plain(args);
      for (const launcher of [LAUNCHER, link]) {
        const got = await launch(launcher, args);
        const blob = args[0] === 'convert' || args[0] === 'compare' ? 'vdisk-pool.blob' : 'vdisk.blob';
        expect(got.exec).toContain(` ${POOL} ${FLAGS} --snapshot-blob ${path.join(DIST, blob)} ${DIST} ${args[0]}`);
        expect({ stdout: got.stdout, stderr: got.stderr.trim(), status: got.status }).toEqual({ stdout: want.stdout, stderr: want.stderr.trim(), status: want.status });
      }
    }
  });

  it('runs bin.js when NODE_OPTIONS are set (V8 options keep a snapshot from loading)', async () => {
    const want = await plain(['map', SAMPLE]);
    const r = await run('sh', ['-x', LAUNCHER, 'map', SAMPLE], { env: { ...process.env, NODE_OPTIONS: '--max-old-space-size=4096' } });
    expect(r.stderr).toMatch(new RegExp(`\\+ exec \\S+ ${POOL} ${reEscape(CLI)} map `));
    expect({ stdout: r.stdout, status: r.status }).toEqual({ stdout: want.stdout, status: want.status });
  });

  it('leaves the size of V8\'s thread pool to NODE_OPTIONS when they set one (the command line would override it)', async () => {
    const want = await plain(['map', SAMPLE]);
    const r = await run('sh', ['-x', LAUNCHER, 'map', SAMPLE], { env: { ...process.env, NODE_OPTIONS: '--v8-pool-size=3' } });
    expect(r.stderr).toMatch(new RegExp(`\\+ exec \\S+ ${reEscape(CLI)} map `));
    expect(r.stderr).not.toContain(POOL);
    expect({ stdout: r.stdout, status: r.status }).toEqual({ stdout: want.stdout, status: want.status });
  });

  it('runs node with a V8 thread pool sized to the machine: on up to four cores, fewer background threads than Node\'s default four', async () => {
    const threads = async (extra: string[]): Promise<number> => {
      // The thread count of a node that lives long enough to be counted.
      const r = await run(process.execPath, [...extra, '-e', 'setTimeout(() => process.stdout.write(String(require("fs").readdirSync("/proc/self/task").length)), 50)']);
      return Number(r.stdout);
    };
    const sized = await threads([POOL]);
    const fixed = await threads([]);
    expect(fixed).toBe(await threads(['--v8-pool-size=4']));
    const { availableParallelism } = await import('node:os');
    // Node sizes it from the available parallelism, leaving a core to the main thread.
    if (availableParallelism() <= 4) expect(fixed - sized).toBe(4 - Math.max(1, availableParallelism() - 1));
    else expect(sized).toBeGreaterThanOrEqual(fixed);
  });

  it('tunes glibc\'s allocator for node (huge pages on request, the heap grown 4 MiB at a time, freed memory kept), the user\'s GLIBC_TUNABLES after its own; not for convert and compare', async () => {
    // A `node` of its own on PATH that prints what it was given: the launcher execs it.
    const fakeDir = path.join(dir, 'fake-node');
    mkdirSync(fakeDir);
    writeFileSync(path.join(fakeDir, 'node'), '#!/bin/sh\nprintf %s "${GLIBC_TUNABLES-unset}"\n');
    chmodSync(path.join(fakeDir, 'node'), 0o755);
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${fakeDir}:${process.env.PATH ?? ''}` };
    delete env['GLIBC_TUNABLES'];
    const ours = (await run(LAUNCHER, ['info', SAMPLE], { env })).stdout;
    expect(ours.split(':').sort()).toEqual(['glibc.malloc.hugetlb=1', 'glibc.malloc.top_pad=4194304', 'glibc.malloc.trim_threshold=536870912']);
    // glibc takes the last setting of a tunable: the user's come last.
    const theirs = (await run(LAUNCHER, ['info', SAMPLE], { env: { ...env, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' } })).stdout;
    expect(theirs).toBe(`${ours}:glibc.malloc.hugetlb=0`);
    for (const args of [['map', SAMPLE], ['check', SAMPLE], ['frobnicate'], []]) expect((await run(LAUNCHER, args, { env })).stdout, args.join(' ')).toBe(ours);
    // The commands that stream data through buffers of their own keep glibc's defaults.
    for (const cmd of ['convert', 'compare']) {
      expect((await run(LAUNCHER, [cmd, SAMPLE, SAMPLE], { env })).stdout, cmd).toBe('unset');
      expect((await run(LAUNCHER, [cmd, SAMPLE, SAMPLE], { env: { ...env, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' } })).stdout, cmd).toBe('glibc.malloc.hugetlb=0');
    }

    // What the settings do, in a node that allocates and touches 16 MiB in small pieces as
    // the CLI's start does: where the kernel gives huge pages on request, the heap gets them.
    const thp = existsSync('/sys/kernel/mm/transparent_hugepage/enabled') ? readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8') : '';
    if (!/\[(always|madvise)\]/.test(thp)) {
      console.warn(`launcher test: transparent huge pages are off here (${thp.trim() || 'no sysfs file'}); their use is not checked`);
      return;
    }
    const huge = async (tunables: string | undefined): Promise<number> => {
      const e = { ...process.env };
      if (tunables === undefined) delete e['GLIBC_TUNABLES'];
      else e['GLIBC_TUNABLES'] = tunables;
      const script = 'const b=[];for(let i=0;i<256;i++){const x=Buffer.allocUnsafeSlow(65536);x.fill(1);b.push(x)}' +
        'process.stdout.write(/AnonHugePages:\\s+(\\d+)/.exec(require("fs").readFileSync("/proc/self/smaps_rollup","utf8"))[1])';
      return Number((await run(process.execPath, ['-e', script], { env: e })).stdout);
    };
    if (thp.includes('[madvise]')) expect(await huge(undefined)).toBe(0);
    expect(await huge(ours)).toBeGreaterThanOrEqual(8192);
  });

  it('runs bin.js when the snapshot or its stamp is missing, the stamp names no flags, or it was built by another node or is older than node', async () => {
    const node = realpathSync(process.execPath);
    const cases: ReadonlyArray<readonly [string, (d: string) => void]> = [
      ['missing', () => undefined],
      ['no stamp', (d) => {
        copyFileSync(path.join(DIST, 'vdisk.blob'), path.join(d, 'vdisk.blob'));
      }],
      ['other node', (d) => {
        copyFileSync(path.join(DIST, 'vdisk.blob'), path.join(d, 'vdisk.blob'));
        writeFileSync(path.join(d, 'vdisk.blob.node'), `${path.join(dir, 'no-such-node')}\n${statSync(node).ino}\n${FLAGS}\n`);
      }],
      ['stamp without flags (an older build)', (d) => {
        copyFileSync(path.join(DIST, 'vdisk.blob'), path.join(d, 'vdisk.blob'));
        writeFileSync(path.join(d, 'vdisk.blob.node'), `${node}\n${statSync(node).ino}\n`);
      }],
      ['older than node', (d) => {
        copyFileSync(path.join(DIST, 'vdisk.blob'), path.join(d, 'vdisk.blob'));
        writeFileSync(path.join(d, 'vdisk.blob.node'), `${node}\n${statSync(node).ino}\n${FLAGS}\n`);
        utimesSync(path.join(d, 'vdisk.blob'), new Date(0), new Date(0));
      }],
    ];
    const want = await plain(['map', SAMPLE]);
    for (const [name, setup] of cases) {
      const d = path.join(dir, name.replace(/\W+/g, '-'));
      mkdirSync(d);
      for (const f of ['vdisk', 'bin.js']) copyFileSync(path.join(DIST, f), path.join(d, f));
      setup(d);
      const got = await launch(path.join(d, 'vdisk'), ['map', SAMPLE]);
      expect(got.exec, name).toMatch(new RegExp(`^\\+ exec \\S+ ${POOL} ${reEscape(path.join(d, 'bin.js'))} map `));
      expect({ stdout: got.stdout, stderr: got.stderr.trim(), status: got.status }, name).toEqual({ stdout: want.stdout, stderr: want.stderr.trim(), status: want.status });
    }
  });

  it('starts no process but node on the usual way; checks the inode with ls only when node\'s directory changed, and runs bin.js when node was replaced', async () => {
    // A node of its own, in a directory of its own, both dated an hour back.
    const nodeDir = path.join(dir, 'node-bin');
    mkdirSync(nodeDir);
    const node = path.join(nodeDir, 'node');
    copyFileSync(process.execPath, node);
    chmodSync(node, 0o755);
    const d = path.join(dir, 'own-node');
    mkdirSync(d);
    for (const f of ['vdisk', 'bin.js', 'vdisk.blob']) copyFileSync(path.join(DIST, f), path.join(d, f));
    writeFileSync(path.join(d, 'vdisk.blob.node'), `${realpathSync(node)}\n${statSync(node).ino}\n${FLAGS}\n`);
    const hourAgo = Date.now() / 1000 - 3600;
    utimesSync(node, hourAgo, hourAgo);
    utimesSync(nodeDir, hourAgo, hourAgo);
    utimesSync(path.join(d, 'vdisk.blob'), hourAgo + 60, hourAgo + 60);
    const env = { ...process.env, PATH: `${nodeDir}:${process.env.PATH ?? ''}` };
    const blobExec = `+ exec ${node} ${POOL} ${FLAGS} --snapshot-blob ${path.join(d, 'vdisk.blob')} ${d} map `;
    const want = await plain(['map', SAMPLE]);

    // Nothing changed since the snapshot: straight to it, no subshell, no ls.
    let got = await launch(path.join(d, 'vdisk'), ['map', SAMPLE], env);
    expect(got.exec).toBe(blobExec + SAMPLE);
    expect(got.trace).not.toMatch(/^\+ (ls|command|readlink)/m);
    expect({ stdout: got.stdout, status: got.status }).toEqual({ stdout: want.stdout, status: want.status });

    // Another file added to node's directory: the inode check (one ls) finds the same node.
    writeFileSync(path.join(nodeDir, 'other'), '');
    got = await launch(path.join(d, 'vdisk'), ['map', SAMPLE], env);
    expect(got.trace).toMatch(/^\+ ls -iL /m);
    expect(got.exec).toBe(blobExec + SAMPLE);

    // node replaced by another file (renamed into place, dated before the snapshot, as a
    // package upgrade does): bin.js.
    copyFileSync(process.execPath, `${node}.new`);
    chmodSync(`${node}.new`, 0o755);
    utimesSync(`${node}.new`, hourAgo, hourAgo);
    renameSync(`${node}.new`, node);
    got = await launch(path.join(d, 'vdisk'), ['map', SAMPLE], env);
    expect(got.exec).toBe(`+ exec ${node} ${POOL} ${path.join(d, 'bin.js')} map ${SAMPLE}`);
    expect({ stdout: got.stdout, status: got.status }).toEqual({ stdout: want.stdout, status: want.status });
  });

  it('finds node on PATH as command -v does, and says so when there is none', async () => {
    const empty = path.join(dir, 'empty-bin');
    mkdirSync(empty);
    mkdirSync(path.join(empty, 'node')); // a directory named node is not it
    const nodeDir = path.dirname(process.execPath);
    let got = await launch(LAUNCHER, ['info', SAMPLE], { ...process.env, PATH: `${empty}:*:${nodeDir}` });
    expect(got.exec).toContain(`+ exec ${nodeDir}/node `);
    expect(got.status).toBe(0);
    got = await launch(LAUNCHER, ['info', SAMPLE], { ...process.env, PATH: empty });
    expect(got.status).toBe(127);
    expect(got.stderr.trim()).toBe('vdisk: node not found');
  });
});

