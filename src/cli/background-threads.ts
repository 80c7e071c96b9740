/**
 * The priority of the threads Node starts before the CLI's code runs: V8's background
 * thread (the pool `--v8-pool-size` sizes: its compilers — baseline code, optimised
 * JavaScript, WebAssembly tier-up — and its garbage collector's helpers) and the platform's
 * timer thread. Their work is optional speed-up; the main thread's is the command.
 *
 * On a machine with two cores the kernel often wakes the background thread on the main
 * thread's core (the core that woke it) and lets it preempt the main thread there, while
 * the other core idles, until its balancing moves one of them a tick or two later
 * (BENCHMARKS.md, fifteenth round: a W5 map's main thread runnable but not running for
 * 5-8.5 ms in 4 of 31 runs, beside its own compiler thread). Lowered by ten nice levels
 * (a tenth of the main thread's weight), such a thread no longer preempts the main thread;
 * on an idle core it runs at full speed all the same.
 *
 * Not for the commands that run worker threads of their own (convert, compare): V8's
 * background thread also collects their heaps' garbage, and lowered behind three busy
 * threads it fell behind — a zlib conversion's peak RSS grew from 180-197 to 249-293 MiB
 * (W4-zlib, BENCHMARKS.md fifteenth round).
 *
 * Only the threads that exist when this runs are lowered: the ones the CLI starts later
 * (worker threads of a conversion, libuv's thread pool, the io_uring ring's kernel worker)
 * keep the main thread's priority. The start-up snapshot's entry (snapshot-main.ts) calls
 * it first, when Node's own are the only other threads; bin.js, the way without the
 * snapshot, does not: loading its modules has started libuv's pool, whose threads do the
 * command's asynchronous reads and writes. Linux only (a thread id is a process id for
 * `setpriority`); elsewhere, and on any error, nothing changes.
 */
import { readdirSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';

/** Nice levels added to the background threads' (the result is at most 19). */
export const BACKGROUND_NICE_STEP = 10;

/** The lowest priority (highest nice value) Linux allows. */
const NICE_MAX = 19;

/** The commands that run worker threads of their own (see the module comment). */
const WORKER_COMMANDS: ReadonlySet<string> = new Set(['convert', 'compare']);

/** {@link lowerBackgroundThreads} unless `command` runs worker threads of its own; how many were lowered. */
export function lowerBackgroundThreadsFor(command: string | undefined): number {
  return command !== undefined && WORKER_COMMANDS.has(command) ? 0 : lowerBackgroundThreads();
}

/**
 * Lowers the priority of every thread of this process but the calling main thread by
 * {@link BACKGROUND_NICE_STEP} nice levels; returns how many threads were lowered.
 * A user's own nice value is kept as the base: `nice -n 5 vdisk …` runs them at 15.
 */
export function lowerBackgroundThreads(step: number = BACKGROUND_NICE_STEP): number {
  if (process.platform !== 'linux') return 0;
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return 0;
  }
  const main = String(process.pid);
  let lowered = 0;
  for (const t of tids) {
    if (t === main) continue;
    const tid = Number(t);
    try {
      const nice = Math.min(NICE_MAX, getPriority(tid) + step);
      setPriority(tid, nice);
      lowered++;
    } catch {
      // The thread ended meanwhile, or the system refused: leave it.
    }
  }
  return lowered;
}
