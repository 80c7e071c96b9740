/**
 * Output writes through io_uring: the ring itself (src/io/io-uring.ts: writes land where
 * they were queued, completions carry their tags and results, a failed write its errno),
 * the conversion's writer over it (src/ops/uring-writer.ts: spans of slots, idle slots,
 * the first failure reported with its errno name), and `vdisk convert` end to end with the
 * kernel writing (the default where io_uring can be used) and with the writer thread
 * (`VDISK_NO_IO_URING=1`): both give qemu-img's bytes and the same allocated blocks.
 * The ring tests skip where io_uring cannot be used (no koffi, an old kernel, a seccomp
 * profile); the CLI tests skip without qemu-img.
 */
import { closeSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { IoUring, ioUringUsable } from '../../src/io/io-uring.js';
import { ChunkSlots } from '../../src/ops/chunk-slots.js';
import { UringWriter } from '../../src/ops/uring-writer.js';
import { CLI, run, runVdisk } from '../helpers/cli.js';
import { hasTool } from '../helpers/qemu.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

const usable = ioUringUsable();
const hasQemu = hasTool('qemu-img');
const hasStrace = hasTool('strace');
if (!hasQemu) console.warn('uring-writer.test.ts: SKIPPED (CLI part): qemu-img not found, convert with io_uring was NOT compared with QEMU');

let dir = '';
beforeAll(() => {
  dir = makeTempDir('uring-');
});
afterAll(() => {
  if (dir !== '') removeTempDir(dir);
});

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
    const file = path.join(dir, name);
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
`;
    const r = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, timeoutMs: 120_000 });
    if (r.status !== 0) throw new Error(r.stderr);
    ready = true;
  }, 120_000);

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
