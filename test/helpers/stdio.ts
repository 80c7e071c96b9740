/**
 * Captures what code under test writes to `process.stdout` and `process.stderr` (vitest
 * spies: the caller restores them, with `vi.restoreAllMocks()`).
 */
import { vi } from 'vitest';

/** Starts capturing; the arrays fill with the written chunks, as strings. */
export function captureStdio(): { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out.push(String(chunk));
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err.push(String(chunk));
    return true;
  });
  return { out, err };
}
