// Content digest of a (sparse) raw disk image, fast enough for 8 GiB outputs.
//
// A plain sha256 of an 8 GiB file takes minutes on a slow core (the hash must eat every
// zero byte). This digest is a sha256 over the file size and, for every 64 KiB block that
// is not all zeros, its offset and bytes. Two files get the same digest exactly when their
// contents are equal (barring sha256 collisions), whatever parts of them are holes or
// written zeros: every block of data is tested for zeros, and holes (found with
// SEEK_DATA/SEEK_HOLE through koffi when it is installed, else read) count as zeros. The
// cost is reading and hashing the file's data, not its holes.
//
// CLI: node bench/lib/digest.mjs FILE  → prints the hex digest.
import { openSync, closeSync, fstatSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const BLOCK = 64 * 1024;
const CHUNK = 8 * 1024 * 1024;
const ZERO = Buffer.alloc(BLOCK);
const SEEK_DATA = 3;
const SEEK_HOLE = 4;

/**
 * lseek through the repo's optional dependency koffi (as vdisk does), so holes can be
 * skipped without reading them; null when unavailable (then every byte is read).
 */
function loadLseek() {
  try {
    const require = createRequire(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../package.json'));
    const koffi = require('koffi');
    const fn = koffi.load('libc.so.6').func('int64_t lseek(int fd, int64_t offset, int whence)');
    return (fd, off, whence) => Number(fn(fd, off, whence));
  } catch {
    return null;
  }
}

/** Data ranges [start, end) of the file, 64 KiB-aligned outwards; the whole file without lseek. */
function* dataRanges(fd, size, lseek) {
  if (!lseek) { yield [0, size]; return; }
  let pos = 0;
  while (pos < size) {
    const d = lseek(fd, pos, SEEK_DATA);
    if (d < 0) { if (pos === 0) { yield [0, size]; } return; } // ENXIO: no data after pos (or no support)
    const hRaw = lseek(fd, d, SEEK_HOLE);
    const h = hRaw < 0 ? size : hRaw;
    const start = Math.max(pos, Math.floor(d / BLOCK) * BLOCK);
    const end = Math.min(size, Math.ceil(h / BLOCK) * BLOCK);
    if (end > start) yield [start, end];
    pos = Math.max(end, pos + 1);
  }
}

export function contentDigest(file) {
  const fd = openSync(file, 'r');
  try {
    const { size } = fstatSync(fd);
    const h = createHash('sha256');
    const head = Buffer.alloc(8);
    head.writeBigUInt64BE(BigInt(size));
    h.update('vdisk-bench content digest v1\n');
    h.update(head);
    const buf = Buffer.allocUnsafe(CHUNK);
    const off = Buffer.alloc(8);
    for (const [start, end] of dataRanges(fd, size, loadLseek())) {
      let pos = start;
      while (pos < end) {
        const n = readSync(fd, buf, 0, Math.min(CHUNK, end - pos), pos);
        if (n === 0) throw new Error(`${file}: short read at ${pos}`);
        for (let b = 0; b < n; b += BLOCK) {
          const len = Math.min(BLOCK, n - b);
          if (buf.compare(ZERO, 0, len, b, b + len) === 0) continue;
          off.writeBigUInt64BE(BigInt(pos + b));
          h.update(off);
          h.update(buf.subarray(b, b + len));
        }
        pos += n;
      }
    }
    return h.digest('hex');
  } finally {
    closeSync(fd);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  try {
    process.stdout.write(`${contentDigest(process.argv[2])}\n`);
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exitCode = 1;
  }
}
