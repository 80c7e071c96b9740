/**
 * Temporary directories for tests: created under the OS temp dir with a short name (Unix
 * socket paths must stay short), removed recursively afterwards unless VDISK_KEEP_TMP=1.
 */
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Creates a fresh directory `<tmp>/<prefix>XXXXXX` and returns its real path. */
export function makeTempDir(prefix: string): string {
  return realpathSync(mkdtempSync(path.join(os.tmpdir(), prefix)));
}

/** Removes a directory made by {@link makeTempDir} (kept when VDISK_KEEP_TMP=1). */
export function removeTempDir(dir: string): void {
  if (process.env['VDISK_KEEP_TMP'] === '1') {
    console.warn(`VDISK_KEEP_TMP=1: keeping ${dir}`);
    return;
  }
  rmSync(dir, { recursive: true, force: true });
}
