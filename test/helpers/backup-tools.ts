/**
 * Test helpers for the backup features: a time-bounded `qemu-nbd` export with any options
 * (a dirty bitmap with `-B`, a snapshot with `-l`, allocation depth with `-A`) read with
 * `nbdinfo --map=CONTEXT`; qemu-io runs that may abort on purpose (no core dump); run merging;
 * and small in-place patches of qcow2 files (refcounts, L1/L2 entries) for crafted
 * corruptions.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { run, type RunResult } from './cli.js';
import { parseNbdinfoMap } from './qemu.js';

let counter = 0;

/** One `nbdinfo --map` extent: start, length and the numeric type. */
export interface NbdExtent {
  start: number;
  length: number;
  type: number;
}

/**
 * Exports `file` read-only with `qemu-nbd -r ARGS` on a Unix socket in `runDir` and reads
 * `nbdinfo --map=CONTEXT`. The server serves one client and exits; if it is still there
 * afterwards it is killed by pid. Rejects when qemu-nbd refuses to start (message included).
 */
export async function nbdMap(file: string, cwd: string, runDir: string, args: readonly string[], context: string): Promise<NbdExtent[]> {
  const id = `${process.pid}-b${++counter}`;
  const sock = path.join(runDir, `${id}.sock`);
  const pidFile = path.join(runDir, `${id}.pid`);
  const errFile = path.join(runDir, `${id}.err`);
  const errFd = openSync(errFile, 'w');
  try {
    const status = await new Promise<number | null>((resolve, reject) => {
      const child = spawn('qemu-nbd', ['-r', ...args, '-k', sock, '-f', 'qcow2', '--fork', '--pid-file', pidFile, file], {
        cwd, stdio: ['ignore', 'ignore', errFd],
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      child.on('error', (e) => { clearTimeout(timer); reject(e); });
      child.on('exit', (code) => { clearTimeout(timer); resolve(code); });
    });
    if (status !== 0) throw new Error(`qemu-nbd ${args.join(' ')} failed (status ${status}): ${readFileSync(errFile, 'utf8').trim()}`);
    const r = await run('nbdinfo', [`--map=${context}`, `nbd+unix:///?socket=${sock}`], { timeoutMs: 30_000 });
    if (r.status !== 0) throw new Error(`nbdinfo failed (status ${r.status}): ${r.stderr.trim()}`);
    return parseNbdinfoMap(r.stdout).map((e) => ({ start: e.start, length: e.length, type: e.depth }));
  } finally {
    closeSync(errFd);
    await stop(pidFile);
    rmSync(sock, { force: true });
    rmSync(pidFile, { force: true });
    rmSync(errFile, { force: true });
  }
}

/** Waits up to ~3 s for the server behind `pidFile` to exit, then sends SIGTERM to that pid. */
async function stop(pidFile: string): Promise<void> {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isSafeInteger(pid) || pid <= 1) return;
  for (let i = 0; i < 30; i++) {
    if (!running(pid)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    // gone
  }
}

function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Runs qemu-io with `-c` commands; an `abort` command kills it on purpose (core dumps off). */
export function qemuIo(file: string, cwd: string, commands: readonly string[]): Promise<RunResult> {
  const quoted = commands.map((c) => `-c '${c}'`).join(' ');
  return run('bash', ['-c', `ulimit -c 0; exec qemu-io -f qcow2 ${quoted} '${file}'`], { cwd, timeoutMs: 30_000 });
}

/** Merges neighbouring runs that are equal apart from start and length. */
export function mergeRuns<T extends { start: number; length: number }>(runs: readonly T[], key: (r: T) => string): T[] {
  const out: T[] = [];
  for (const r of runs) {
    if (r.length === 0) continue;
    const last = out[out.length - 1];
    if (last !== undefined && key(last) === key(r) && last.start + last.length === r.start) last.length += r.length;
    else out.push({ ...r });
  }
  return out;
}

/** Cuts `runs` at every boundary of `cuts` (both cover the same range) and pairs them. */
export function intersect<A extends { start: number; length: number }, B extends { start: number; length: number }>(
  runs: readonly A[],
  cuts: readonly B[],
): Array<{ start: number; length: number; a: A; b: B }> {
  const out: Array<{ start: number; length: number; a: A; b: B }> = [];
  let j = 0;
  for (const a of runs) {
    let pos = a.start;
    const end = a.start + a.length;
    while (pos < end) {
      while (j < cuts.length && (cuts[j] as B).start + (cuts[j] as B).length <= pos) j++;
      const b = cuts[j];
      if (b === undefined) throw new Error(`no run covers ${pos}`);
      const e = Math.min(end, b.start + b.length);
      out.push({ start: pos, length: e - pos, a, b });
      pos = e;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// In-place qcow2 patches (big-endian fields; 16-bit refcounts only).

function readAt(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

function writeAt(file: string, offset: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** Header fields the patches need. */
export function qcow2Header(file: string): { clusterSize: number; l1Offset: number; reftableOffset: number; refcountOrder: number } {
  const h = readAt(file, 0, 104);
  return {
    clusterSize: 2 ** h.readUInt32BE(20),
    l1Offset: Number(h.readBigUInt64BE(40)),
    reftableOffset: Number(h.readBigUInt64BE(48)),
    refcountOrder: h.readUInt32BE(4) === 3 ? h.readUInt32BE(96) : 4,
  };
}

export function read64(file: string, offset: number): bigint {
  return readAt(file, offset, 8).readBigUInt64BE(0);
}

export function write64(file: string, offset: number, v: bigint): void {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  writeAt(file, offset, b);
}

/** Byte offset of cluster `index`'s 16-bit refcount. */
export function refcountOffset(file: string, index: number): number {
  const h = qcow2Header(file);
  if (h.refcountOrder !== 4) throw new Error('refcount patches need 16-bit refcounts');
  const perBlock = h.clusterSize / 2;
  const block = Number(read64(file, h.reftableOffset + 8 * Math.floor(index / perBlock)) & ~0x1ffn);
  return block + 2 * (index % perBlock);
}

/** Adds `delta` to cluster `index`'s stored refcount (16-bit refcounts). */
export function addRefcount(file: string, index: number, delta: number): void {
  const at = refcountOffset(file, index);
  const b = readAt(file, at, 2);
  b.writeUInt16BE((b.readUInt16BE(0) + delta) & 0xffff);
  writeAt(file, at, b);
}

/** Byte offset of L1 entry `i`. */
export function l1EntryOffset(file: string, i: number): number {
  return qcow2Header(file).l1Offset + 8 * i;
}

/** Byte offset of entry `j` of the L2 table L1 entry `i` points at (standard L2). */
export function l2EntryOffset(file: string, i: number, j: number): number {
  return Number(read64(file, l1EntryOffset(file, i)) & 0x00fffffffffffe00n) + 8 * j;
}
