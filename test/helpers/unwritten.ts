/**
 * Unwritten extents made stable for differential tests. qemu's zero-range fallocate leaves
 * unwritten extents in the clusters it allocates; SEEK_DATA reports one as a hole only while
 * none of its pages is cached, so a test that reads an image (a convert) turns its unwritten
 * extents into data for the maps running concurrently with it — qemu-img's answer and
 * vdisk's then depend on which ran first. Punched into holes, they read the same (zeros) and
 * stay holes whatever reads them.
 */
import { lstatSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { run } from './cli.js';
import { hasTool } from './qemu.js';

/**
 * Punches every unwritten extent of the regular files below `dir` into a hole (`filefrag -v`
 * lists them, `fallocate -p` punches): both read as zeros, but only a hole stays a hole to
 * SEEK_DATA once something has read it. Nothing is done where filefrag cannot map a file
 * (a filesystem without FIEMAP, such as tmpfs, has no unwritten extents).
 */
export async function punchUnwrittenExtents(dir: string): Promise<void> {
  if (!hasTool('filefrag', ['-V']) || !hasTool('fallocate')) {
    console.warn('punchUnwrittenExtents: filefrag or fallocate missing: unwritten extents are left as they are (maps may race with reads)');
    return;
  }
  const files: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = path.join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size > 0) files.push(p);
    }
  };
  walk(dir);
  for (const f of files) {
    const r = await run('filefrag', ['-v', '-b1', f]);
    if (r.status !== 0) continue;
    for (const line of r.stdout.split('\n')) {
      const m = /^\s*\d+:\s+(\d+)\.\.\s*(\d+):.*\bunwritten\b/.exec(line);
      if (m === null) continue;
      const start = Number(m[1]);
      const length = Number(m[2]) - start + 1;
      const p = await run('fallocate', ['-p', '-o', String(start), '-l', String(length), f]);
      if (p.status !== 0) throw new Error(`fallocate -p ${start} ${length} ${f}: ${p.stderr}`);
    }
  }
}
