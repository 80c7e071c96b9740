#!/usr/bin/env node
/**
 * Makes every committed image under images/ fully allocated again.
 *
 * The goldens were taken from dense files (make-fixtures.sh writes every byte), but a git
 * checkout may leave all-zero blocks of a file as holes. Holes change what QEMU — and so
 * vdisk — reports for a qcow2 image that looks metadata-preallocated (host holes read as
 * zero), so the fixtures must be dense for their goldens to hold. Content is unchanged: the
 * file's own bytes are written back over it. Run by `prepare` and before the tests.
 */
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'images');

async function* files(dir) {
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* files(p);
    else if (e.isFile()) yield p;
  }
}

let fixed = 0;
for await (const file of files(root)) {
  const st = await stat(file);
  if (st.size === 0 || st.blocks * 512 >= st.size) continue;
  const fh = await open(file, 'r+');
  try {
    const buf = Buffer.alloc(1 << 20);
    for (let pos = 0; pos < st.size; pos += buf.length) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      await fh.write(buf, 0, bytesRead, pos);
    }
  } finally {
    await fh.close();
  }
  fixed++;
}
if (fixed > 0) console.log(`densify-images: ${fixed} sparse image file(s) under images/ made fully allocated`);
