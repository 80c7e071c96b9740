// Benchmark images: deterministic recipes, built with qemu-img / qemu-io / mkfs.ext4 and
// cached in the bench directory.
//
// Images are grouped into build units (w1, w2, w4, w5). A unit is reused when its marker
// file `<unit>.done.json` records the same recipe hash and all its files exist. The recipe
// includes the harness's recipe version, the qemu-img version and every parameter; a unit
// built on top of another (w5 on w4) includes the parent's build id, so rebuilding the
// parent rebuilds its children.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, statSync, statfsSync, writeFileSync, renameSync, openSync, closeSync, ftruncateSync } from 'node:fs';
import path from 'node:path';
import { mulberry32, randInt } from './prng.mjs';
import { contentDigest } from './digest.mjs';
import { sh, which, firstLine, GiB, MiB, fmtGiB, fmtDuration } from './proc.mjs';

/** Bump when a recipe changes in a way its parameters do not show. */
const RECIPE_VERSION = 2;

const KiB = 1024;
const TiB = 1024 * GiB;

/** Fixed identity for the ext4 image (UUID, directory hash seed, timestamps). */
const EXT4_UUID = '6b1d1a5e-0f6c-4c3b-9a57-5e3d2b1c0a01';
const EXT4_FAKE_TIME = '1700000000';

export const UNITS = {
  w1: {
    title: '1 TiB qcow2, preallocation=metadata, then 10,000 random 64 KiB writes',
    files: ['w1-1t-prealloc.qcow2'],
    params: { virtualSize: TiB, preallocation: 'metadata', writes: 10_000, writeSize: 64 * KiB, align: 64 * KiB, seed: 0x5eed0001 },
  },
  w2: {
    title: '16 GiB qcow2, 262,144 clusters of 64 KiB alternating zero / unallocated',
    files: ['w2-16g-zero-alt.qcow2'],
    params: { virtualSize: 16 * GiB, clusterSize: 64 * KiB, pattern: 'even clusters write -z, odd untouched' },
  },
  w4: {
    title: 'ext4 of /usr/share in an 8 GiB raw, converted to qcow2 plain / zlib / zstd',
    files: ['w4-plain.qcow2', 'w4-zlib.qcow2', 'w4-zstd.qcow2'],
    params: { fsSize: '8G', source: '/usr/share', uuid: EXT4_UUID, fakeTime: EXT4_FAKE_TIME },
  },
  w5: {
    title: 'w4-plain.qcow2 under two overlays, 5,000 random 4 KiB writes each',
    files: ['w5-mid.qcow2', 'w5-top.qcow2'],
    parent: 'w4',
    params: { writes: 5_000, writeSize: 4 * KiB, align: 4 * KiB, seeds: [0x5eed0051, 0x5eed0052] },
  },
};

/** Facts about /usr/share that decide the ext4 image's content (and so its recipe). */
function usrShareStats() {
  const bytes = Number(sh('du', ['-sb', '/usr/share'], { allowFail: true }).stdout.split('\t')[0]) || 0;
  const inodes = Number(sh('du', ['-s', '--inodes', '/usr/share'], { allowFail: true }).stdout.split('\t')[0]) || 0;
  return { bytes, inodes };
}

function recipeOf(unit, ctx, parentMarker) {
  const base = { recipeVersion: RECIPE_VERSION, unit, qemuImg: ctx.qemuImgVersion, ...UNITS[unit].params };
  if (unit === 'w4') Object.assign(base, { mke2fs: ctx.mke2fsVersion, usrShare: ctx.usrShare });
  if (UNITS[unit].parent) base.parentBuildId = parentMarker?.buildId ?? null;
  return base;
}

const hashOf = (obj) => createHash('sha256').update(JSON.stringify(obj)).digest('hex').slice(0, 16);
const markerPath = (dir, unit) => path.join(dir, `${unit}.done.json`);

function readMarker(dir, unit) {
  try {
    return JSON.parse(readFileSync(markerPath(dir, unit), 'utf8'));
  } catch {
    return null;
  }
}

/** Allocated bytes of a file (st_blocks * 512), 0 when missing. */
export function allocatedBytes(p) {
  try {
    return statSync(p).blocks * 512;
  } catch {
    return 0;
  }
}

/** Free bytes for an unprivileged user on the filesystem holding `dir`. */
export function freeBytes(dir) {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
}

/** Fails when the filesystem holding `dir` cannot make sparse files (W1 is 1 TiB apparent). */
function checkSparse(dir) {
  const p = path.join(dir, '.sparse-probe');
  const fd = openSync(p, 'w');
  try {
    ftruncateSync(fd, GiB);
  } finally {
    closeSync(fd);
  }
  const alloc = allocatedBytes(p);
  rmSync(p, { force: true });
  if (alloc > MiB) {
    throw new Error(`the filesystem of ${dir} does not keep sparse files sparse (a 1 GiB truncate allocated ${alloc} bytes); ` +
      'W1 needs a 1 TiB sparse file. Set VDISK_BENCH_DIR or --dir to a directory on ext4, xfs, btrfs or tmpfs.');
  }
}

/** Rough disk need (allocated bytes) of building a unit: [kept, transient peak]. */
function estimate(unit, ctx) {
  const fsData = ctx.usrShare.bytes * 1.1 + 300 * MiB; // files + ext4 metadata and journal
  switch (unit) {
    case 'w1': return [1.0 * GiB, 0];
    case 'w2': return [16 * MiB, 0];
    case 'w4': return [fsData * 2.0, fsData]; // plain ~1x, zlib+zstd ~0.5x each; fs.raw deleted after
    case 'w5': return [0.7 * GiB, 0];
    default: return [0, 0];
  }
}

/** Estimated allocated size of one raw convert output of the ext4 images. */
export function convertOutputEstimate(ctx) {
  return ctx.usrShare.bytes * 1.1 + 300 * MiB;
}

/** qemu-io with commands on stdin (far faster than one -c per write); checks for failures. */
function qemuIo(dir, image, commands, log) {
  const t0 = Date.now();
  const r = sh('qemu-io', ['-t', 'unsafe', '-f', 'qcow2', image], { cwd: dir, input: commands, allowFail: true });
  const out = `${r.stdout ?? ''}\n${r.stderr ?? ''}`;
  const bad = out.split('\n').filter((l) => /fail|error|invalid/i.test(l));
  if (r.status !== 0 || bad.length > 0) {
    throw new Error(`qemu-io on ${image} failed (exit ${r.status}): ${bad.slice(0, 5).join(' | ') || out.slice(-500)}`);
  }
  log(`    qemu-io: ${commands.split('\n').length - 1} commands on ${image} in ${fmtDuration(Date.now() - t0)}`);
}

function randomWrites({ writes, writeSize, align, seed }, virtualSize, withPattern) {
  const rng = mulberry32(seed);
  const slots = Math.floor((virtualSize - writeSize) / align) + 1;
  let cmds = '';
  for (let i = 0; i < writes; i++) {
    const off = randInt(rng, slots) * align;
    const pattern = withPattern ? 1 + randInt(rng, 255) : 0;
    cmds += `write -q -P ${pattern} ${off} ${writeSize}\n`;
  }
  return cmds;
}

function qemuMapEntries(dir, image) {
  const r = sh('qemu-img', ['map', '--output=json', '-f', 'qcow2', image], { cwd: dir });
  return r.stdout.trim().split('\n').length;
}

const BUILDERS = {
  w1(dir, tmp, ctx, log) {
    const p = UNITS.w1.params;
    const [file] = tmp;
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `preallocation=${p.preallocation}`, file, String(p.virtualSize)], { cwd: dir });
    qemuIo(dir, file, randomWrites(p, p.virtualSize, true), log);
    const n = qemuMapEntries(dir, file);
    if (n < 10_000) throw new Error(`w1: qemu-img map gives only ${n} entries; the writes did not land`);
    return { mapEntries: n };
  },
  w2(dir, tmp, ctx, log) {
    const p = UNITS.w2.params;
    const [file] = tmp;
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${p.clusterSize}`, file, String(p.virtualSize)], { cwd: dir });
    let cmds = '';
    for (let off = 0; off < p.virtualSize; off += 2 * p.clusterSize) cmds += `write -q -z ${off} ${p.clusterSize}\n`;
    qemuIo(dir, file, cmds, log);
    const n = qemuMapEntries(dir, file);
    const want = p.virtualSize / p.clusterSize;
    if (n !== want) throw new Error(`w2: qemu-img map gives ${n} entries, expected ${want}`);
    return { mapEntries: n };
  },
  w4(dir, tmp, ctx, log) {
    const p = UNITS.w4.params;
    const fsRaw = path.join(dir, 'w4-fs.raw.tmp');
    rmSync(fsRaw, { force: true });
    let t0 = Date.now();
    try {
      sh('mkfs.ext4', ['-q', '-F', '-U', p.uuid, '-E', `hash_seed=${p.uuid},root_owner=0:0`, '-d', p.source, fsRaw, p.fsSize], {
        cwd: dir, env: { ...process.env, E2FSPROGS_FAKE_TIME: p.fakeTime, SOURCE_DATE_EPOCH: p.fakeTime },
      });
      log(`    mkfs.ext4 -d ${p.source} (${fmtGiB(ctx.usrShare.bytes)} of files): ${fmtDuration(Date.now() - t0)}, ${fmtGiB(allocatedBytes(fsRaw))} allocated`);
      const fsDigest = contentDigest(fsRaw);
      const fsSize = statSync(fsRaw).size;
      const fsAllocated = allocatedBytes(fsRaw);
      const variants = [[], ['-c'], ['-c', '-o', 'compression_type=zstd']];
      for (let i = 0; i < 3; i++) {
        t0 = Date.now();
        sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', ...variants[i], fsRaw, tmp[i]], { cwd: dir });
        log(`    qemu-img convert -O qcow2 ${variants[i].join(' ')} -> ${UNITS.w4.files[i]}: ${fmtDuration(Date.now() - t0)}, ${fmtGiB(allocatedBytes(tmp[i]))}`);
      }
      return { fsDigest, fsSize, fsAllocated, usrShare: ctx.usrShare, peakTransient: fsAllocated };
    } finally {
      rmSync(fsRaw, { force: true });
    }
  },
  w5(dir, tmp, ctx, log) {
    const p = UNITS.w5.params;
    const [mid, top] = UNITS.w5.files;
    const size = statVirtualSize(dir, 'w4-plain.qcow2');
    // Overlays name their backing file relatively, so they are built under their final names.
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'w4-plain.qcow2', '-F', 'qcow2', mid], { cwd: dir });
    qemuIo(dir, mid, randomWrites({ ...p, seed: p.seeds[0] }, size, true), log);
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top], { cwd: dir });
    qemuIo(dir, top, randomWrites({ ...p, seed: p.seeds[1] }, size, true), log);
    return {};
  },
};

function statVirtualSize(dir, image) {
  return JSON.parse(sh('qemu-img', ['info', '--output=json', '-f', 'qcow2', image], { cwd: dir }).stdout)['virtual-size'];
}

/** Tool versions and /usr/share facts the recipes depend on. */
export function imageContext(units) {
  const ctx = {
    qemuImgVersion: firstLine('qemu-img', ['--version']),
    mke2fsVersion: null,
    usrShare: { bytes: 0, inodes: 0 },
  };
  if (units.includes('w4') || units.includes('w5')) {
    const r = sh('mkfs.ext4', ['-V'], { allowFail: true });
    ctx.mke2fsVersion = `${r.stderr}${r.stdout}`.trim().split('\n')[0];
    ctx.usrShare = usrShareStats();
  }
  return ctx;
}

/**
 * Makes sure every unit in `units` (and its parents) is built and current. Returns
 * { markers: {unit: marker}, built: [units built now], buildMs }.
 */
export function ensureImages(dir, units, { fresh, log, extraTransient = 0 }) {
  for (const tool of ['qemu-img', 'qemu-io']) if (!which(tool)) throw new Error(`${tool} is not installed (apt-get install qemu-utils)`);
  const want = new Set();
  const add = (u) => { if (UNITS[u].parent) add(UNITS[u].parent); want.add(u); };
  units.forEach(add);
  const order = ['w1', 'w2', 'w4', 'w5'].filter((u) => want.has(u));
  if (want.has('w4') && !which('mkfs.ext4')) throw new Error('mkfs.ext4 is not installed (apt-get install e2fsprogs)');
  const ctx = imageContext(order);
  if (want.has('w4') && ctx.usrShare.bytes < 256 * MiB) {
    log(`  NOTE: /usr/share holds only ${fmtGiB(ctx.usrShare.bytes)}; the W4/W5 filesystem will be mostly empty and the convert numbers less meaningful.`);
  }

  // Which units need (re)building? A parent rebuilt now changes its children's recipe.
  const markers = {};
  const stale = [];
  for (const u of order) {
    const recipe = recipeOf(u, ctx, markers[UNITS[u].parent]);
    const hash = hashOf(recipe);
    const m = readMarker(dir, u);
    const parentRebuilt = UNITS[u].parent && stale.includes(UNITS[u].parent);
    const ok = !fresh && !parentRebuilt && m?.hash === hash && UNITS[u].files.every((f) => existsSync(path.join(dir, f)));
    if (ok) markers[u] = m;
    else { stale.push(u); markers[u] = { hash, recipe, pending: true }; }
  }

  // Disk space: what the stale units need, plus the outputs the convert workloads write.
  let need = extraTransient;
  let transient = 0;
  for (const u of stale) {
    const [kept, tr] = estimate(u, ctx);
    need += kept;
    transient = Math.max(transient, tr);
  }
  need += transient;
  if (need > 0) {
    checkSparse(dir);
    const free = freeBytes(dir);
    const margin = 1 * GiB;
    log(`  disk: need about ${fmtGiB(need)} (+${fmtGiB(margin)} margin) in ${dir}, ${fmtGiB(free)} free`);
    if (free < need + margin) {
      throw new Error(`not enough free disk in ${dir}: about ${fmtGiB(need + margin)} needed ` +
        `(images to build: ${stale.join(', ') || 'none'}; convert outputs: ${fmtGiB(extraTransient)}), ${fmtGiB(free)} free. ` +
        'Point VDISK_BENCH_DIR or --dir at a bigger filesystem.');
    }
  }

  const t0 = Date.now();
  for (const u of order) {
    if (!stale.includes(u)) { log(`  ${u}: cached (${UNITS[u].files.join(', ')})`); continue; }
    const unitT0 = Date.now();
    log(`  ${u}: building — ${UNITS[u].title}`);
    rmSync(markerPath(dir, u), { force: true });
    for (const f of UNITS[u].files) rmSync(path.join(dir, f), { force: true });
    // Units with no overlays are built under temporary names and renamed when complete.
    const renames = u !== 'w5';
    const tmp = UNITS[u].files.map((f) => (renames ? `${f}.building` : f));
    for (const f of tmp) rmSync(path.join(dir, f), { force: true });
    const recipe = recipeOf(u, ctx, markers[UNITS[u].parent]);
    let facts;
    try {
      facts = BUILDERS[u](dir, tmp.map((f) => path.join(dir, f)), ctx, log);
    } catch (e) {
      for (const f of tmp) rmSync(path.join(dir, f), { force: true });
      throw e;
    }
    if (renames) UNITS[u].files.forEach((f, i) => renameSync(path.join(dir, tmp[i]), path.join(dir, f)));
    const files = Object.fromEntries(UNITS[u].files.map((f) => [f, {
      allocated: allocatedBytes(path.join(dir, f)), size: statSync(path.join(dir, f)).size, virtual: statVirtualSize(dir, f),
    }]));
    const marker = {
      hash: hashOf(recipe), buildId: `${Date.now()}-${randomBytes(4).toString('hex')}`, recipe, files, ...facts,
      builtAt: new Date().toISOString(), buildMs: Date.now() - unitT0,
    };
    writeFileSync(markerPath(dir, u), `${JSON.stringify(marker, null, 2)}\n`);
    markers[u] = marker;
    log(`  ${u}: built in ${fmtDuration(marker.buildMs)}, ${fmtGiB(Object.values(files).reduce((a, f) => a + f.allocated, 0))} on disk`);
  }
  return { markers, built: stale, buildMs: Date.now() - t0, order };
}
