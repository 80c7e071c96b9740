/**
 * Output writes through io_uring: the ring itself (src/io/io-uring.ts: writes land where
 * they were queued, completions carry their tags and results, a failed write its errno, a
 * range allocated before its write), the conversion's writer over it
 * (src/ops/uring-writer.ts: spans of slots, idle slots, the first failure reported with
 * its errno name, long writes allocated first while the output streams and not once it is
 * scattered or an allocation failed), and `vdisk convert` end to end with the kernel
 * writing (the default where io_uring can be used) and with the writer thread
 * (`VDISK_NO_IO_URING=1`): both give qemu-img's bytes and its data ranges.
 * The ring tests skip where io_uring cannot be used (no koffi, an old kernel, a seccomp
 * profile); the CLI tests skip without qemu-img.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { IoUring, ioUringUsable, kernelWorkerLimits } from '../../src/io/io-uring.js';
import { ChunkSlots } from '../../src/ops/chunk-slots.js';
import { ALLOCATE_MIN_BYTES, SCATTERED_WRITES, UringWriter } from '../../src/ops/uring-writer.js';
import { CLI, run, runVdisk } from '../helpers/cli.js';
import { hasTool } from '../helpers/qemu.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

const usable = ioUringUsable();
const hasQemu = hasTool('qemu-img');
const hasStrace = hasTool('strace');
const hasFilefrag = hasTool('filefrag', ['-V']);
if (!hasFilefrag) console.warn('uring-writer.test.ts: filefrag not found: the allocated ranges are NOT checked to be unwritten extents');
if (!hasQemu) console.warn('uring-writer.test.ts: SKIPPED (CLI part): qemu-img not found, convert with io_uring was NOT compared with QEMU');

let dir = '';
beforeAll(() => {
  dir = makeTempDir('uring-');
});
afterAll(() => {
  if (dir !== '') removeTempDir(dir);
});

/**
 * The extents of `file` as FIEMAP gives them (`filefrag -v`): logical and physical start
 * and length in blocks, and their flags; null where filefrag or the file system cannot say.
 */
function extents(file: string): Array<{ logical: number; physical: number; length: number; flags: string }> | null {
  if (!hasFilefrag) return null;
  const r = spawnSync('filefrag', ['-v', file], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  const rows: Array<{ logical: number; physical: number; length: number; flags: string }> = [];
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*\d+:\s+(\d+)\.\.\s*\d+:\s+(\d+)\.\.\s*\d+:\s+(\d+):\s*(?:\d+:)?\s*(.*)$/u.exec(line);
    if (m) rows.push({ logical: Number(m[1]), physical: Number(m[2]), length: Number(m[3]), flags: (m[4] as string).trim() });
  }
  return rows;
}

/** The data ranges of `file` as `[start, end)` pairs, by SEEK_DATA/SEEK_HOLE (python3's os.lseek). */
function dataRanges(file: string): number[][] {
  const script = [
    'import os, sys, json',
    'fd = os.open(sys.argv[1], os.O_RDONLY); end = os.fstat(fd).st_size; pos = 0; out = []',
    'while pos < end:',
    '    try: d = os.lseek(fd, pos, os.SEEK_DATA)',
    '    except OSError: break',
    '    h = os.lseek(fd, d, os.SEEK_HOLE); out.append([d, h]); pos = h',
    'print(json.dumps(out))',
  ].join('\n');
  const r = spawnSync('python3', ['-c', script, file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`data ranges of ${file}: ${r.stderr}`);
  return JSON.parse(r.stdout) as number[][];
}

/** A buffer of `n` bytes, each `seed + i` mod 251 (never all zero). */
function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (seed + i) % 251;
  return b;
}

describe.skipIf(!usable)('IoUring', () => {
  it('writes what was queued where it was queued, and hands each completion its tag and result', () => {
    const file = path.join(dir, 'ring.bin');
    const fd = openSync(file, 'w+');
    const ring = IoUring.create(4);
    expect(ring).not.toBeNull();
    if (ring === null) return;
    const bufs = [pattern(4096, 1), pattern(10_000, 7), pattern(70_000, 13)];
    const seen = new Map<number, number>();
    const done = (tag: number, result: number): void => void seen.set(tag, result);
    // Six writes through a ring of four: the fifth waits for completions first.
    const positions = [0, 4096, 20_000, 100_000, 200_000, 300_000];
    positions.forEach((pos, i) => {
      const b = bufs[i % 3] as Buffer;
      ring.write(fd, IoUring.addressOf(b) as number, b.length, pos, 100 + i, done);
    });
    ring.close(done);
    closeSync(fd);
    expect(ring.pending).toBe(0);
    expect([...seen.entries()].sort((a, b) => a[0] - b[0])).toEqual(positions.map((_, i) => [100 + i, (bufs[i % 3] as Buffer).length]));
    const got = readFileSync(file);
    positions.forEach((pos, i) => {
      const b = bufs[i % 3] as Buffer;
      expect(got.subarray(pos, pos + b.length).equals(b)).toBe(true);
    });
  });

  it('reports a failed write by its negated errno (EBADF: a descriptor opened read-only)', () => {
    const file = path.join(dir, 'ro.bin');
    writeFileSync(file, Buffer.alloc(8192));
    const fd = openSync(file, 'r');
    const ring = IoUring.create(2);
    if (ring === null) throw new Error('no ring');
    const b = pattern(4096, 3);
    let result = 0;
    ring.write(fd, IoUring.addressOf(b) as number, b.length, 0, 1, (_t, r) => (result = r));
    ring.close((_t, r) => (result = r));
    closeSync(fd);
    expect(result).toBe(-9);
    expect(readFileSync(file).equals(Buffer.alloc(8192))).toBe(true);
  });

  it('allocates a write\'s range first when asked (fallocate linked before it, the size kept), then writes it', () => {
    const file = path.join(dir, 'ring-allocate.bin');
    const fd = openSync(file, 'w+');
    const ring = IoUring.create(4);
    if (ring === null) throw new Error('no ring');
    const b = pattern(1 << 20, 17);
    const seen = new Map<number, number>();
    const done = (tag: number, result: number): void => void seen.set(tag, result);
    ring.write(fd, IoUring.addressOf(b) as number, b.length, 4 << 20, 7, done, 8);
    ring.close(done);
    closeSync(fd);
    // The allocation succeeded (0), then the write wrote it all.
    expect([...seen.entries()].sort((x, y) => x[0] - y[0])).toEqual([[7, b.length], [8, 0]]);
    expect(statSync(file).size).toBe(5 << 20);
    expect(readFileSync(file).subarray(4 << 20).equals(b)).toBe(true);
    expect(statSync(file).blocks * 512).toBeGreaterThanOrEqual(b.length);
    // Allocated by fallocate, the range is an unwritten extent until write-back (ext4, XFS).
    const ext = extents(file);
    if (ext !== null && ext.length > 0) expect(ext.some((e) => e.flags.includes('unwritten'))).toBe(true);
  });

  it('reports a failed allocation by its errno (ENODEV: /dev/null has no fallocate); the write linked after it runs or is cancelled', () => {
    const fd = openSync('/dev/null', 'w');
    const ring = IoUring.create(2);
    if (ring === null) throw new Error('no ring');
    const b = pattern(4096, 1);
    const seen = new Map<number, number>();
    const done = (tag: number, result: number): void => void seen.set(tag, result);
    ring.write(fd, IoUring.addressOf(b) as number, b.length, 0, 1, done, 2);
    ring.close(done);
    closeSync(fd);
    expect(seen.get(2)).toBe(-19);
    // Linux 6.18 runs the write after a failed fallocate (the operation does not fail its
    // link); a kernel that cancels the link completes it with -ECANCELED.
    expect([4096, -125]).toContain(seen.get(1));
  });

  it("caps this thread's kernel workers at one while open, and puts the caps back when closed", () => {
    const before = kernelWorkerLimits();
    if (before === null) {
      console.warn('uring-writer.test.ts: the kernel worker caps cannot be read here (before Linux 5.15): NOT checked');
      return;
    }
    const ring = IoUring.create(2);
    if (ring === null) throw new Error('no ring');
    try {
      expect(kernelWorkerLimits()).toEqual([1, before[1]]);
    } finally {
      ring.close(() => undefined);
    }
    expect(kernelWorkerLimits()).toEqual(before);
  });

  it("gives a typed array's own address (a subarray's is offset by its start)", () => {
    const u = new Uint8Array(new SharedArrayBuffer(8192));
    const a = IoUring.addressOf(u) as number;
    expect(a).toBeGreaterThan(0);
    expect(IoUring.addressOf(u.subarray(4096))).toBe(a + 4096);
  });
});

describe.skipIf(!usable)('UringWriter', () => {
  /** A writer over `count` slots of `size` bytes to the file `name` of the test directory, opened with `flags`. */
  const newWriter = (name: string, count: number, size: number, flags = 'w+'): { file: string; fd: number; slots: ChunkSlots; w: UringWriter } => {
    const file = path.isAbsolute(name) ? name : path.join(dir, name);
    const fd = openSync(file, flags);
    const slots = new ChunkSlots(count, size);
    const w = UringWriter.create(fd, slots);
    if (w === null) throw new Error('no writer');
    return { file, fd, slots, w };
  };

  it('writes the spans of each slot at their output offsets; a slot is idle once its writes are done', async () => {
    const { file, fd, slots: chunkSlots, w } = newWriter('writer.bin', 2, 65536);
    const slots = [chunkSlots.view(0), chunkSlots.view(1)];
    (slots[0] as Uint8Array).set(pattern(65536, 5));
    (slots[1] as Uint8Array).set(pattern(65536, 9));
    // Slot 0: bytes [0, 4096) to 1 MiB, [8192, 65536) to 1 MiB + 8192; slot 1: all of it at 0.
    w.write(0, [0, 4096, 1 << 20, 8192, 65536, 1 << 20]);
    w.write(1, [0, 65536, 0]);
    await w.idle(0);
    expect(w.isIdle(0)).toBe(true);
    const r = await w.finish();
    closeSync(fd);
    expect(r).toEqual({ error: null, written: 4096 + 57344 + 65536, reads: [] });
    const got = readFileSync(file);
    expect(got.subarray(0, 65536).equals(Buffer.from(slots[1] as Uint8Array))).toBe(true);
    expect(got.subarray(1 << 20, (1 << 20) + 4096).equals(Buffer.from((slots[0] as Uint8Array).subarray(0, 4096)))).toBe(true);
    expect(got.subarray((1 << 20) + 4096, (1 << 20) + 8192).equals(Buffer.alloc(4096))).toBe(true);
    expect(got.subarray((1 << 20) + 8192, (1 << 20) + 65536).equals(Buffer.from((slots[0] as Uint8Array).subarray(8192)))).toBe(true);
  });

  it('writes from a slot allocated after the writer was made (its address found at its first write)', async () => {
    const { file, fd, slots, w } = newWriter('writer-late.bin', 3, 8192);
    expect(slots.allocated).toBe(1);
    slots.view(0).fill(3);
    w.write(0, [0, 8192, 0]);
    slots.view(2).set(pattern(8192, 11));
    expect(slots.allocated).toBe(2);
    w.write(2, [0, 8192, 8192]);
    const r = await w.finish();
    closeSync(fd);
    expect(r).toEqual({ error: null, written: 16384, reads: [] });
    const got = readFileSync(file);
    expect(got.subarray(0, 8192).equals(Buffer.alloc(8192, 3))).toBe(true);
    expect(got.subarray(8192).equals(slots.view(2))).toBe(true);
  });

  it('allocates the ranges of long writes first while the output streams, and no more after the short writes that make it scattered', async () => {
    const chunk = 2 << 20;
    const { file, fd, slots, w } = newWriter('writer-allocate.bin', 2, chunk);
    expect(w.allocating).toBe(true);
    slots.view(0).set(pattern(chunk, 3));
    // Four whole chunks, in order: allocated first, in the order of the file.
    for (let i = 0; i < 4; i++) {
      w.write(0, [0, chunk, i * chunk]);
      await w.idle(0);
    }
    expect(w.allocating).toBe(true);
    const ext = extents(file);
    if (ext !== null && ext.length > 0) {
      // Allocated by `fallocate` (unwritten until write-back), not left to delayed allocation.
      // Where ext4 puts each range is its own choice: successive ranges are not always at
      // rising block numbers (a fresh clone's run put one 5,120 blocks before the end of the
      // one allocated before it), so their order is not checked here.
      expect(ext.every((e) => e.flags.includes('unwritten'))).toBe(true);
    }
    // Short writes (one block each, holes between): allocating stops after SCATTERED_WRITES of them.
    slots.view(1).set(pattern(4096, 5));
    const base = 4 * chunk;
    for (let i = 0; i < SCATTERED_WRITES; i++) w.write(1, [0, 4096, base + i * 8192]);
    await w.idle(1);
    expect(w.allocating).toBe(true);
    w.write(1, [0, 4096, base + SCATTERED_WRITES * 8192]);
    expect(w.allocating).toBe(false);
    await w.idle(1);
    const end = base + (SCATTERED_WRITES + 1) * 8192;
    w.write(0, [0, ALLOCATE_MIN_BYTES, end]);
    const r = await w.finish();
    closeSync(fd);
    expect(r).toEqual({ error: null, written: 4 * chunk + (SCATTERED_WRITES + 1) * 4096 + ALLOCATE_MIN_BYTES, reads: [] });
    const got = readFileSync(file);
    for (let i = 0; i < 4; i++) expect(got.subarray(i * chunk, (i + 1) * chunk).equals(slots.view(0))).toBe(true);
    for (let i = 0; i <= SCATTERED_WRITES; i++) {
      expect(got.subarray(base + i * 8192, base + i * 8192 + 4096).equals(slots.view(1).subarray(0, 4096))).toBe(true);
      expect(got.subarray(base + i * 8192 + 4096, base + (i + 1) * 8192).equals(Buffer.alloc(4096))).toBe(true);
    }
    expect(got.subarray(end).equals(slots.view(0).subarray(0, ALLOCATE_MIN_BYTES))).toBe(true);
    // The last long write came after allocating stopped: left to the file system's own allocation.
    const after = extents(file);
    if (after !== null && after.length > 0) {
      const last = after.find((e) => e.logical === end / 4096);
      expect(last?.flags.includes('unwritten')).toBe(false);
    }
  });

  it('writes a long span on its own when its allocation fails (a device without fallocate), and allocates no more', async () => {
    const { fd, slots, w } = newWriter('/dev/null', 1, 2 << 20, 'w');
    slots.view(0).set(pattern(2 << 20, 9));
    w.write(0, [0, 2 << 20, 0]);
    await w.idle(0);
    expect(w.allocating).toBe(false);
    w.write(0, [0, 2 << 20, 2 << 20]);
    const r = await w.finish();
    closeSync(fd);
    expect(r).toEqual({ error: null, written: 4 << 20, reads: [] });
  });

  it('queues a write again on its own where the kernel cancels it after its failed allocation (-ECANCELED)', async () => {
    const { fd, slots, w } = newWriter('/dev/null', 1, 2 << 20, 'w');
    slots.view(0).set(pattern(2 << 20, 4));
    // This kernel runs the write after the failed allocation; one that cancels the link
    // reports -ECANCELED instead, as the wrapper below does for the first write.
    const real = IoUring.prototype.complete;
    let cancelled = 0;
    const spy = vi.spyOn(IoUring.prototype, 'complete').mockImplementation(function (this: IoUring, wait: boolean, done: (tag: number, result: number) => void) {
      real.call(this, wait, (tag, result) => {
        if (result === 2 << 20 && cancelled === 0) {
          cancelled++;
          done(tag, -125);
        } else {
          done(tag, result);
        }
      });
    });
    try {
      w.write(0, [0, 2 << 20, 0]);
      await w.idle(0);
      const r = await w.finish();
      expect(cancelled).toBe(1);
      expect(w.allocating).toBe(false);
      expect(r).toEqual({ error: null, written: 2 << 20, reads: [] });
    } finally {
      spy.mockRestore();
      closeSync(fd);
    }
  });

  it('fails a slot whose address cannot be had, queuing nothing of it or after it', async () => {
    const { file, fd, slots, w } = newWriter('writer-noaddr.bin', 2, 4096);
    slots.view(0).fill(5);
    w.write(0, [0, 4096, 0]);
    const spy = vi.spyOn(IoUring, 'addressOf').mockReturnValue(null);
    try {
      w.write(1, [0, 4096, 4096]);
    } finally {
      spy.mockRestore();
    }
    expect(w.failed).toBe(true);
    expect(w.isIdle(1)).toBe(true);
    const r = await w.finish();
    closeSync(fd);
    expect(r.error).toEqual({ index: -1, io: true, message: 'io_uring: no address for chunk slot 1', slot: 1 });
    expect(r.written).toBe(4096);
    expect(statSync(file).size).toBe(4096);
  });

  it('reports the first failed write with its slot and errno name, and queues nothing after it', async () => {
    writeFileSync(path.join(dir, 'writer-ro.bin'), Buffer.alloc(0));
    const { file, fd, slots, w } = newWriter('writer-ro.bin', 1, 4096, 'r');
    slots.view(0).fill(1);
    w.write(0, [0, 4096, 0]);
    await w.idle(0);
    expect(w.failed).toBe(true);
    w.write(0, [0, 4096, 8192]);
    expect(w.isIdle(0)).toBe(true);
    const r = await w.finish();
    closeSync(fd);
    expect(r.error).toEqual({ index: -1, io: true, message: 'write of 4096 bytes at 0 failed: EBADF', slot: 0 });
    expect(r.written).toBe(0);
    expect(statSync(file).size).toBe(0);
  });
});

describe.skipIf(!hasQemu)('vdisk convert: io_uring and the writer thread', () => {
  let ready = false;
  beforeAll(async () => {
    // 24 MiB of patterned data with zero blocks inside clusters, under an overlay of
    // scattered 4 KiB writes: long runs and short ones, and zero blocks left as holes.
    const script = String.raw`
python3 - <<'PY'
import hashlib
with open('base.raw', 'wb') as f:
    for i in range(24 * 256):
        f.write(bytes(4096) if i % 7 == 3 else (hashlib.sha256(str(i).encode()).digest() * 128))
PY
truncate -s 64M base.raw
qemu-img convert -q -f raw -O qcow2 base.raw base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
set --; for i in $(seq 0 40); do set -- "$@" -c "write -P $((i % 200 + 1)) $((i * 1531 % 16000 * 4))k 4k"; done
qemu-io -f qcow2 "$@" top.qcow2 > /dev/null
qemu-img convert -q -f qcow2 -O raw top.qcow2 top.qemu.raw
# A streamed output: 12 MiB of data in whole chunks (their ranges allocated before their
# writes), three zero blocks left as holes.
python3 - <<'PY'
import hashlib
with open('stream.raw', 'wb') as f:
    for i in range(12 * 256):
        f.write(bytes(4096) if i in (5, 1000, 2047) else (hashlib.sha256(b's%d' % i).digest() * 128))
PY
truncate -s 32M stream.raw
qemu-img convert -q -f raw -O qcow2 stream.raw stream.qcow2
qemu-img convert -q -f qcow2 -O raw stream.qcow2 stream.qemu.raw
`;
    const r = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, timeoutMs: 120_000 });
    if (r.status !== 0) throw new Error(r.stderr);
    ready = true;
  }, 120_000);

  it("gives qemu-img's bytes and allocated blocks for a streamed output, whose long writes allocate their ranges first", async () => {
    expect(ready).toBe(true);
    const out = path.join(dir, 'stream.vdisk.raw');
    const r = await runVdisk(['convert', '-f', 'qcow2', '-O', 'raw', 'stream.qcow2', out], { cwd: dir });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const q = path.join(dir, 'stream.qemu.raw');
    expect(readFileSync(out).equals(readFileSync(q))).toBe(true);
    // The same data ranges, the same holes (SEEK_DATA/SEEK_HOLE).
    expect(dataRanges(out)).toEqual(dataRanges(q));
    // The same data blocks; an allocated range may sit apart from a neighbour ext4
    // allocated at write-back, one extent more, which can take an extent-tree block (4 KiB)
    // of the file system's own (qemu-img's output has 4 extents here, the inode's room).
    const extra = (statSync(out).blocks - statSync(q).blocks) * 512;
    expect(extra).toBeGreaterThanOrEqual(0);
    expect(extra).toBeLessThanOrEqual(4096);
  }, 60_000);

  for (const [mode, env] of [['io_uring where usable', {}], ['writer thread', { VDISK_NO_IO_URING: '1' }]] as const) {
    it(`gives qemu-img's bytes and allocation (${mode})`, async () => {
      expect(ready).toBe(true);
      const out = path.join(dir, `top.${mode.replace(/ /g, '-')}.raw`);
      const args = ['convert', '-f', 'qcow2', '-O', 'raw', 'top.qcow2', out];
      // Under strace (where installed), which way the output went: rings set up or none.
      const trace = path.join(dir, `${mode.replace(/ /g, '-')}.strace`);
      const r = hasStrace
        ? await run('strace', ['-f', '-e', 'trace=io_uring_setup,io_uring_enter', '-o', trace, process.execPath, CLI, ...args], { cwd: dir, env: { ...process.env, ...env } })
        : await runVdisk(args, { cwd: dir, env: { ...process.env, ...env } });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      if (hasStrace) {
        const calls = readFileSync(trace, 'utf8');
        const enters = calls.split('\n').filter((l) => l.includes('io_uring_enter(')).length;
        if ('VDISK_NO_IO_URING' in env) expect(calls).not.toContain('io_uring_setup(');
        else if (usable) expect(enters).toBeGreaterThan(0);
      }
      const q = path.join(dir, 'top.qemu.raw');
      expect(readFileSync(out).equals(readFileSync(q))).toBe(true);
      expect(statSync(out).blocks).toBe(statSync(q).blocks);
    }, 60_000);
  }
});
