/**
 * How the CLI's entry points end the process once a command is done: at once with its
 * status when nothing is left to write, else through Node's orderly exit. The orderly exit
 * tears the environment and the V8 heap down piece by piece (a millisecond or more of a
 * map that takes tens); the kernel frees a process in one go. Nothing the commands do is
 * left pending when their promise settles: files are closed, outputs committed, worker
 * threads done. Standard output and error are synchronous for files, pipes and terminals
 * on Linux; where a write is still queued (a pipe elsewhere) or failed, Node's exit
 * drains or reports it.
 */

/** Ends the process with `status` (see the module comment). */
export function finish(status: number): void {
  // A write that failed leaves nothing queued but its 'error' event, due on the next tick:
  // the orderly exit lets stdout-errors.ts handle it (and set the status).
  if (settled(process.stdout) && settled(process.stderr)) process.exit(status);
  process.exitCode = status;
}

/** Whether `stream` has nothing queued and no failure pending. */
function settled(stream: NodeJS.WriteStream): boolean {
  return stream.writableLength === 0 && !stream.errored && !stream.destroyed;
}
