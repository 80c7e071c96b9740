// Description of the machine and software a benchmark ran on.
import { readFileSync, existsSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { sh, which, firstLine, fmtGiB } from './proc.mjs';
import { freeBytes } from './images.mjs';

function read(p) {
  try { return readFileSync(p, 'utf8'); } catch { return ''; }
}

function cgroupCpuLimit() {
  const max = read('/sys/fs/cgroup/cpu.max').trim();
  if (!max || max.startsWith('max')) return null;
  const [quota, period] = max.split(' ').map(Number);
  return quota / period;
}

function virtualisation() {
  if (which('systemd-detect-virt')) {
    const r = sh('systemd-detect-virt', [], { allowFail: true });
    const v = (r.stdout ?? '').trim();
    if (v && v !== 'none') return v;
  }
  if (existsSync('/.dockerenv')) return 'docker';
  if (/hypervisor/.test(read('/proc/cpuinfo'))) return 'virtual machine (hypervisor flag)';
  return 'none detected';
}

function gitState(repo) {
  if (!which('git')) return 'unknown (no git)';
  const head = sh('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo, allowFail: true }).stdout.trim();
  const dirty = sh('git', ['status', '--porcelain', '--', 'src', 'package.json', 'package-lock.json'], { cwd: repo, allowFail: true }).stdout.trimEnd();
  return `${head || 'unknown'}${dirty ? ` + uncommitted changes in ${[...new Set(dirty.split('\n').map((l) => l.slice(3).split('/')[0]))].join(', ')}` : ' (clean src/)'}`;
}

function buildId(snap) {
  try {
    const bin = path.join(snap, 'dist', 'cli', 'bin.js');
    const sha = createHash('sha256').update(readFileSync(bin)).digest('hex').slice(0, 12);
    let flags;
    try {
      // The start-up snapshot's stamp: node, inode, then the V8 flags it was built (and runs) with.
      flags = readFileSync(path.join(snap, 'dist', 'cli', 'vdisk.blob.node'), 'utf8').split('\n')[2] || 'none';
    } catch {
      flags = 'no start-up snapshot';
    }
    return `dist/cli/bin.js of ${statSync(bin).mtime.toISOString()} (sha256 ${sha}…); start-up snapshot's V8 flags: ${flags}`;
  } catch {
    return 'dist missing';
  }
}

function koffiState(repo, snap) {
  if (process.env.VDISK_NO_SEEK_HOLE === '1') return 'VDISK_NO_SEEK_HOLE=1: hole probing OFF';
  let version = null;
  try {
    const require = createRequire(path.join(repo, 'package.json'));
    let d = path.dirname(require.resolve('koffi'));
    while (!existsSync(path.join(d, 'package.json')) && d !== path.dirname(d)) d = path.dirname(d);
    version = JSON.parse(readFileSync(path.join(d, 'package.json'), 'utf8')).version;
  } catch { /* missing */ }
  // Ask vdisk's own binding loader whether lseek(SEEK_DATA/SEEK_HOLE) is available.
  const binding = path.join(snap, 'dist', 'io', 'lseek-binding.js');
  let probing = null;
  if (existsSync(binding)) {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e',
      `import { loadLseek } from ${JSON.stringify(pathToFileURL(binding).href)}; process.stdout.write(loadLseek() ? 'on' : 'off');`], { encoding: 'utf8' });
    if (r.status === 0 && (r.stdout === 'on' || r.stdout === 'off')) probing = r.stdout;
  }
  const koffi = version ? `koffi ${version}` : 'koffi not installed';
  if (probing === 'off') return `${koffi}; hole probing OFF (W1 output will differ from qemu-img)`;
  if (probing === 'on') return `${koffi}; hole probing on`;
  return `${koffi}; hole probing ${version ? 'probably on' : 'OFF'}`;
}

/** CPU busy fraction over `ms` (from /proc/stat) and the processes using the most CPU. */
export async function busyNow(ms = 1000) {
  const snap = () => {
    const f = read('/proc/stat').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { idle, total: f.reduce((a, b) => a + b, 0) };
  };
  const a = snap();
  await sleep(ms);
  const b = snap();
  const busy = b.total > a.total ? 1 - (b.idle - a.idle) / (b.total - a.total) : NaN;
  let top = [];
  if (which('ps')) {
    const r = sh('ps', ['-eo', 'pcpu=,comm=', '--sort=-pcpu'], { allowFail: true });
    top = (r.stdout ?? '').trim().split('\n').map((l) => l.trim().split(/\s+/)).filter(([c]) => Number(c) >= 10)
      .slice(0, 4).map(([c, ...n]) => `${n.join(' ')} ${c}%`);
  }
  return { busy, top };
}

export function describeMachine(repo, dir, snap, refBuild = null) {
  const cpuinfo = read('/proc/cpuinfo');
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  const logical = (cpuinfo.match(/^processor\s*:/gm) ?? []).length || os.cpus().length;
  const mhz = /cpu MHz\s*:\s*([\d.]+)/.exec(cpuinfo)?.[1];
  const limit = cgroupCpuLimit();
  const osName = /PRETTY_NAME="?([^"\n]*)/.exec(read('/etc/os-release'))?.[1] ?? os.type();
  let fs = 'unknown';
  if (which('df')) {
    const r = sh('df', ['--output=fstype,source,target', dir], { allowFail: true });
    const line = (r.stdout ?? '').trim().split('\n')[1];
    if (line) { const [t, src, tgt] = line.trim().split(/\s+/); fs = `${t} (${src} on ${tgt})`; }
  }
  const e2fs = which('mkfs.ext4') ? `${sh('mkfs.ext4', ['-V'], { allowFail: true }).stderr}`.trim().split('\n')[0] : 'not installed';
  return {
    cpu: `${model}${mhz ? ` @ ${Math.round(Number(mhz))} MHz` : ''}`,
    cores: `${logical} logical CPUs (os.availableParallelism() = ${os.availableParallelism()}${limit ? `, cgroup limit ${limit}` : ''})`,
    ram: fmtGiB(os.totalmem()),
    os: `${osName}, Linux ${os.release()} (${os.arch()})`,
    virt: virtualisation(),
    benchDir: `${dir} — ${fs}, ${fmtGiB(freeBytes(dir))} free`,
    node: process.version,
    qemuImg: firstLine('qemu-img', ['--version']) ?? 'not installed',
    strace: firstLine('strace', ['-V']) ?? 'not installed',
    e2fsprogs: e2fs,
    vdisk: `${refBuild ? `${refBuild.sha.slice(0, 12)} (committed tree, --ref, built in the bench dir)` : `${gitState(repo)} (working tree)`}; ${buildId(snap)}, run from a copy in the bench dir; ${koffiState(repo, snap)}`,
    loadStart: os.loadavg().map((x) => x.toFixed(2)).join(' '),
    date: new Date().toISOString(),
  };
}
