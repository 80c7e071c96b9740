/**
 * Failed writes of the CLI's output. Node reports them as an 'error' event on
 * `process.stdout` (a pipe whose reader went away, a full disk), which would otherwise end
 * the process with a stack trace; writes made with `writeSync` (ascii-buffer.ts) throw
 * {@link stdoutError} instead.
 *
 * - EPIPE (`vdisk map … | head`): the reader wants no more; the process stops at once,
 *   quietly, with status 1 (the output is incomplete).
 * - Anything else: `vdisk: IO_STDOUT: cannot write the output: CODE`, status 1.
 */
import { IoError } from '../errors.js';

/** `IO_STDOUT` for a failed write of the output. */
export function stdoutError(e: unknown): IoError {
  const code = (e as { code?: unknown }).code;
  const what = typeof code === 'string' ? code : e instanceof Error ? e.message : String(e);
  return new IoError('IO_STDOUT', `cannot write the output: ${what}`, { file: '<stdout>', field: 'standard output', cause: e });
}

/** Handles the 'error' events of `process.stdout` as above (the CLI's entry points call this once). */
export function watchStdoutErrors(stdout: NodeJS.WriteStream = process.stdout, exit: (status: number) => never = process.exit): void {
  stdout.on('error', (e: unknown) => {
    if ((e as { code?: unknown }).code !== 'EPIPE') process.stderr.write(`vdisk: IO_STDOUT: ${stdoutError(e).message}\n`);
    exit(1);
  });
}
