/**
 * How the CLI's entry points end the process once a command is done: at once with its
 * status when nothing is left to write, else through Node's orderly exit. The orderly exit
 * tears the environment and the V8 heap down piece by piece (a millisecond or more of a
 * map that takes tens); the kernel frees a process in one go. Nothing the commands do is
 * left pending when their promise settles: files are closed, outputs committed, worker
 * threads done. Standard output and error are synchronous for files, pipes and terminals
 * on Linux; where a write is still queued (a pipe elsewhere), Node's exit drains it.
 */

/** Ends the process with `status` (see the module comment). */
export function finish(status: number): void {
  if (process.stdout.writableLength === 0 && process.stderr.writableLength === 0) process.exit(status);
  process.exitCode = status;
}
