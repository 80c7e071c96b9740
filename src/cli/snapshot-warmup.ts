/**
 * The warm-up run before the CLI's start-up snapshot is saved (snapshot-main.ts). V8
 * compiles a function to bytecode the first time it runs, and a snapshot keeps the bytecode
 * of the functions that ran before it was saved. Without a warm-up, a command run from the
 * snapshot compiles every function it calls (about 300 of vdisk's and Node's for a map of a
 * three-layer chain); after one, only those the warm-up could not reach.
 *
 * The warm-up runs the CLI's commands on a small image chain, as a user would: map (both
 * outputs, both modes, a range), info, check, compare, and convert into a scratch directory.
 * Their output goes to the build's stdout, which the build discards. Node builds a snapshot
 * without the `WebAssembly`, `SharedArrayBuffer` and `Atomics` globals (a run has them): the
 * kernels are then unavailable (the warm-up runs their JavaScript counterparts), and compare
 * and convert, whose buffers live in shared memory, run on this thread alone (no worker
 * threads: none may run when the heap is saved) with a plain `ArrayBuffer` lent as
 * `SharedArrayBuffer` for the commands, taken back after them. Hole probing and io_uring
 * are off (their FFI binding cannot be saved). State a snapshot cannot hold, or should not
 * carry into a run, is dropped when it is saved (io/snapshot-state.ts). A command that
 * fails fails the warm-up, and with it the snapshot.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { main } from './main.js';

/** Environment settings the warm-up runs under, and why. */
const WARM_UP_ENV: Readonly<Record<string, string>> = {
  // No FFI binding (SEEK_DATA/SEEK_HOLE, io_uring): a snapshot cannot hold one.
  VDISK_NO_SEEK_HOLE: '1',
  VDISK_NO_IO_URING: '1',
  // No worker threads: none may be running when the heap is saved.
  VDISK_DECODE_WORKERS: '0',
};

/** Runs one command; throws when it does not succeed. */
async function run(argv: string[]): Promise<void> {
  const status = await main(argv);
  if (status !== 0) throw new Error(`'vdisk ${argv.join(' ')}' exited with status ${status}`);
}

/**
 * Runs the CLI's commands on the qcow2 image `chain` (a backing chain of standard-L2
 * layers with data, zero and unallocated clusters: images/chain-top.qcow2); throws when
 * one of them does not succeed.
 */
export async function warmUp(chain: string): Promise<void> {
  const saved = new Map(Object.keys(WARM_UP_ENV).map((k) => [k, process.env[k]]));
  Object.assign(process.env, WARM_UP_ENV);
  try {
    const commands: string[][] = [
      ['map', '--output=json', chain],
      ['map', chain],
      ['map', '--mode=allocation', chain],
      ['map', '--output=json', '--start-offset', '64k', '--max-length', '1M', chain],
      ['info', chain],
      ['info', '--output=json', '--backing-chain', chain],
      ['check', chain],
      ['check', '--output=json', chain],
    ];
    for (const argv of commands) await run(argv);
    const scratch = await mkdtemp(path.join(os.tmpdir(), 'vdisk-warmup-'));
    const g = globalThis as { SharedArrayBuffer?: unknown };
    const lend = g.SharedArrayBuffer === undefined;
    if (lend) g.SharedArrayBuffer = ArrayBuffer;
    try {
      await run(['compare', chain, chain]);
      await run(['convert', '-O', 'raw', chain, path.join(scratch, 'out.raw')]);
    } finally {
      if (lend) delete g.SharedArrayBuffer;
      await rm(scratch, { recursive: true, force: true });
    }
  } finally {
    for (const [k, v] of saved) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}
