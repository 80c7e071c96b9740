#!/usr/bin/env node
/**
 * The hostile-image corpus (HOSTILE-IMAGES.md §6): derives every case from the valid
 * qemu-img-made images in `base/` by patching bytes, and describes what vdisk must do with
 * it. Each case is named `<CODE>--<what>`, where CODE is the exact error code vdisk must
 * produce (`OK` for images that must be handled without error, within the same budgets).
 *
 *   node images/bad/make-corpus.mjs OUTDIR        writes OUTDIR/root/…, OUTDIR/outside/…,
 *                                                 OUTDIR/cases.json
 *   node images/bad/make-corpus.mjs --list        prints the case table (Markdown)
 *
 * Layout of OUTDIR: every image lives in `root/` (the allowed directory tree of the top
 * image); `outside/` holds sentinel files that images name and that must never be opened.
 * Files are written sparsely (only non-zero 4 KiB blocks), so the big cases stay cheap.
 * Offsets inside the bases are read from their headers, never hard-coded.
 *
 * A case: { name, code, ref, note, file, op, format?, options?, forbidden, budgetMs }.
 * `op` is what triggers the outcome: `info` (open without backing or data file, then the
 * info object / `vdisk info`), `map` (the whole mapping map / `vdisk map --output=json`),
 * `alloc` (allocation map), `read` (read every guest byte / `vdisk convert -O raw`).
 * `options` are library open options (`allowDirs`, `maxChainDepth`, `format`, …) that the
 * CLI gets as the matching flags. `forbidden` lists absolute paths that must never be opened.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

const BASE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'base');
const OFFSET_MASK = 0x00fffffffffffe00n;
const EXT = { END: 0, BACKING_FORMAT: 0xe2792aca, FEATURE_TABLE: 0x6803f857, CRYPTO: 0x0537be77, BITMAPS: 0x23852875, DATA_FILE: 0x44415441 };

/** A qcow2 image held in memory, with field accessors for patching. */
class Image {
  constructor(base) {
    this.store = Buffer.from(fs.readFileSync(path.join(BASE_DIR, base)));
    this.length = this.store.length;
  }
  /** The image bytes. */
  get b() {
    return this.store.subarray(0, this.length);
  }
  ensure(end) {
    if (end > this.store.length) {
      const grown = Buffer.alloc(Math.max(end, this.store.length * 2));
      this.store.copy(grown, 0, 0, this.length);
      this.store = grown;
    }
    if (end > this.length) this.length = end;
  }
  u8(off, v) { this.ensure(off + 1); this.store[off] = v; return this; }
  u16(off, v) { this.ensure(off + 2); this.store.writeUInt16BE(v, off); return this; }
  u32(off, v) { this.ensure(off + 4); this.store.writeUInt32BE(v >>> 0, off); return this; }
  u64(off, v) { this.ensure(off + 8); this.store.writeBigUInt64BE(BigInt(v), off); return this; }
  r32(off) { return this.b.readUInt32BE(off); }
  r64(off) { return this.b.readBigUInt64BE(off); }
  bytes(off, data) { this.ensure(off + data.length); Buffer.from(data).copy(this.store, off); return this; }
  truncate(n) { this.length = Math.min(this.length, n); return this; }
  get cs() { return 2 ** this.r32(20); }
  get version() { return this.r32(4); }
  get headerLength() { return this.version === 3 ? this.r32(100) : 72; }
  get extendedL2() { return this.version === 3 && (this.r64(72) & 16n) !== 0n; }
  get l1Offset() { return Number(this.r64(40)); }
  get refcountTableOffset() { return Number(this.r64(48)); }
  get snapshotsOffset() { return Number(this.r64(64)); }
  l1(i) { return this.r64(this.l1Offset + 8 * i); }
  setL1(i, v) { return this.u64(this.l1Offset + 8 * i, v); }
  l2Offset(l1i = 0) { return Number(this.l1(l1i) & OFFSET_MASK); }
  l2At(i, l1i = 0) { return this.l2Offset(l1i) + i * (this.extendedL2 ? 16 : 8); }
  l2(i, l1i = 0) { return this.r64(this.l2At(i, l1i)); }
  setL2(i, v, l1i = 0) { return this.u64(this.l2At(i, l1i), v); }
  /** Appends `data` (or `length` zero bytes) at the next multiple of `align`; returns its offset. */
  append(data, align = this.cs) {
    const at = Math.ceil(this.length / align) * align;
    if (typeof data === 'number') {
      this.ensure(at + data);
      this.store.fill(0, at, at + data);
    } else {
      this.ensure(at + data.length);
      Buffer.from(data).copy(this.store, at);
    }
    return at;
  }
  /** The header extensions as stored: [{ magic, data }] up to (not including) the end marker. */
  exts() {
    const out = [];
    let p = this.headerLength;
    const end = Number(this.r64(8)) || this.cs;
    while (p + 8 <= end) {
      const magic = this.r32(p);
      const len = this.r32(p + 4);
      if (magic === EXT.END) break;
      out.push({ magic, data: Buffer.from(this.b.subarray(p + 8, p + 8 + len)) });
      p += 8 + Math.ceil(len / 8) * 8;
    }
    return out;
  }
  /** Rewrites the extension area with `list` ({ magic, data, len? }) and an end marker. */
  setExts(list, { end = true } = {}) {
    let p = this.headerLength;
    for (const e of list) {
      const data = Buffer.from(e.data ?? []);
      this.u32(p, e.magic).u32(p + 4, e.len ?? data.length).bytes(p + 8, data);
      const padded = Math.ceil(data.length / 8) * 8;
      this.bytes(p + 8 + data.length, Buffer.alloc(padded - data.length));
      p += 8 + padded;
    }
    if (end) this.u64(p, 0);
    return this;
  }
  /** Replaces (or adds, first) the extension `magic`; `null` removes it. */
  setExt(magic, data, len) {
    const rest = this.exts().filter((e) => e.magic !== magic);
    return this.setExts(data === null ? rest : [{ magic, data, len }, ...rest]);
  }
  /** Names a backing file (stored at 0x1000) with a backing-format extension when `format` is a string. */
  setBacking(name, format) {
    const bytes = typeof name === 'string' ? Buffer.from(name) : Buffer.from(name);
    this.setExt(EXT.BACKING_FORMAT, format === null || format === undefined ? null : Buffer.from(format));
    return this.u64(8, 0x1000).u32(16, bytes.length).bytes(0x1000, bytes);
  }
}

const u64be = (v) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(v));
  return b;
};
const u32be = (v) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
};

/** Writes `buf` to `file` sparsely: only 4 KiB blocks that are not all zero. */
function writeSparse(file, buf) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const fd = fs.openSync(file, 'w');
  try {
    const zero = Buffer.alloc(4096);
    for (let o = 0; o < buf.length; o += 4096) {
      const blk = buf.subarray(o, Math.min(buf.length, o + 4096));
      if (!blk.equals(zero.subarray(0, blk.length))) fs.writeSync(fd, blk, 0, blk.length, o);
    }
    fs.ftruncateSync(fd, buf.length);
  } finally {
    fs.closeSync(fd);
  }
}

/** A compressed-cluster descriptor (spec "Compressed Clusters Descriptor"), as an L2 entry. */
function compressedEntry(hostOffset, length, clusterBits) {
  const x = BigInt(62 - (clusterBits - 8));
  const sectors = BigInt(Math.ceil(((hostOffset % 512) + length) / 512)) - 1n;
  return (1n << 62n) | (sectors << x) | BigInt(hostOffset);
}

/** A zstd frame of RLE blocks (RFC 8878): `size` bytes of `byte`, with or without a declared content size. */
function zstdRleFrame(size, byte, declareSize) {
  const parts = [];
  const magic = Buffer.alloc(4);
  magic.writeUInt32LE(0xfd2fb528);
  parts.push(magic);
  if (declareSize) {
    parts.push(Buffer.from([0xa0])); // FCS 4 bytes, single segment
    const fcs = Buffer.alloc(4);
    fcs.writeUInt32LE(size);
    parts.push(fcs);
  } else {
    parts.push(Buffer.from([0x00, 0x58])); // no FCS, window descriptor: 2^(10+11) = 2 MiB window
  }
  for (let left = size; left > 0; ) {
    const n = Math.min(left, 131072);
    left -= n;
    const h = (left === 0 ? 1 : 0) | (1 << 1) | (n << 3);
    parts.push(Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff, byte]));
  }
  return Buffer.concat(parts);
}

/**
 * Builds the corpus in `outDir`; returns the case list (also written to `cases.json`).
 */
export function buildCorpus(outDir) {
  const root = path.join(outDir, 'root');
  const outside = path.join(outDir, 'outside');
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(root, { recursive: true });
  fs.mkdirSync(outside, { recursive: true });
  const secretRaw = path.join(outside, 'secret.raw');
  const secretQcow2 = path.join(outside, 'secret.qcow2');
  fs.writeFileSync(secretRaw, 'secret host file\n');
  fs.copyFileSync(path.join(BASE_DIR, 'base.qcow2'), secretQcow2);
  const forbiddenAlways = [secretRaw, secretQcow2];
  const cases = [];
  const names = new Set();

  /** Registers a case whose top image is `img` (an Image, or null when files are written by `extra`). */
  const add = (code, what, ref, note, img, { op = 'info', ext = 'qcow2', options, forbidden = [], budgetMs, file } = {}) => {
    const name = `${code}--${what}`;
    if (names.has(name)) throw new Error(`duplicate case ${name}`);
    names.add(name);
    const rel = file ?? `${name}.${ext}`;
    if (img !== null) writeSparse(path.join(root, rel), img.b);
    cases.push({
      name, code: code === 'OK' ? null : code, ref, note, file: rel, op,
      ...(options === undefined ? {} : { options }),
      forbidden: [...forbiddenAlways, ...forbidden],
      budgetMs: budgetMs ?? 5000,
    });
  };
  const base = () => new Image('base.qcow2');

  // ---- 6a. Header (open time) -----------------------------------------------------------
  add('QCOW2_BAD_MAGIC', 'magic-forced-qcow2', 'H1', 'magic QFI\\0 with -f qcow2', base().u32(0, 0x51464900), { options: { format: 'qcow2' } });
  add('OK', 'bad-magic-probes-raw', 'H1', 'without -f a file without the magic is raw (qemu-img warns)', base().u32(0, 0x51464900), { op: 'map' });
  for (const v of [1, 4, 0xffffffff]) add('QCOW2_VERSION', `version-${v.toString(16)}`, 'H2', `version ${v}`, base().u32(4, v));
  for (const v of [8, 22, 31, 32, 63, 0xffffffff]) add('QCOW2_CLUSTER_BITS', `cluster-bits-${v.toString(16)}`, 'H3', `cluster_bits ${v}: checked before any shift`, base().u32(20, v));
  for (const v of [100, 0x10008, 0xffffffff]) add('QCOW2_HEADER_LENGTH', `header-length-${v.toString(16)}`, 'H4', `header_length ${v}`, base().u32(100, v));
  add('QCOW2_HEADER_TRUNCATED', 'file-of-50-bytes', 'H5', 'the file ends inside the header', base().truncate(50), { options: { format: 'qcow2' } });
  add('QCOW2_L1_BEYOND_EOF', 'file-of-112-bytes', 'H5', 'header only: the L1 table lies past the end of the file (QEMU reads zeroes)', base().truncate(112));
  add('QCOW2_BACKING_FILE_OFFSET', 'offset-0x10001', 'H6', 'backing_file_offset past the first cluster', base().u64(8, 0x10001).u32(16, 4));
  add('QCOW2_BACKING_NAME_TOO_LONG', 'len-1024', 'H7', 'backing_file_size 1024 (> 1023)', base().u64(8, 0x1000).u32(16, 1024));
  add('QCOW2_BACKING_NAME_TOO_LONG', 'crosses-cluster-end', 'H7', 'a 32-byte name at 0xfff0 crosses the cluster end', base().u64(8, 0xfff0).u32(16, 0x20));
  add('QCOW2_INCOMPATIBLE_FEATURE', 'bit-5', 'H8', 'unknown incompatible bit 5', base().u64(72, 0x20n));
  add('QCOW2_INCOMPATIBLE_FEATURE', 'bit-63', 'H8', 'unknown incompatible bit 63', base().u64(72, 1n << 63n));
  {
    // E9: a feature-name table with a name that fills its 46 bytes (no NUL) and a bit number past 63.
    const img = base().u64(72, 0x20n);
    const t = Buffer.alloc(96);
    t[0] = 0; t[1] = 5; t.fill(0x41, 2, 48);
    t[48] = 0; t[49] = 200; t.write('bogus', 50);
    img.setExt(EXT.FEATURE_TABLE, t);
    add('QCOW2_INCOMPATIBLE_FEATURE', 'feature-table-odd-names', 'E9', 'feature-name table: a name without NUL, a bit number past 63', img);
  }
  add('OK', 'corrupt-bit', 'H9', 'incompatible bit 1 (corrupt): read-only use is allowed, info shows corrupt: true', base().u64(72, 2n));
  add('OK', 'dirty-bit', 'H10', 'incompatible bit 0 (dirty): refcounts untrusted, never repaired', base().u64(72, 1n), { op: 'map' });
  add('QCOW2_COMPRESSION_TYPE', 'type-2', 'H11', 'compression_type 2 with bit 3 set', base().u64(72, 8n).u8(104, 2));
  add('QCOW2_COMPRESSION_BIT', 'zstd-without-bit', 'H11', 'compression_type 1 without incompatible bit 3', base().u8(104, 1));
  add('QCOW2_COMPRESSION_BIT', 'bit-with-zlib', 'H11', 'incompatible bit 3 with compression_type 0', base().u64(72, 8n));
  add('QCOW2_COMPRESSION_BIT', 'no-type-field', 'H12', 'header_length 104: no compression_type field, so zlib, but bit 3 set', base().u32(100, 104).u64(72, 8n).u64(104, 0));
  add('QCOW2_REFCOUNT_ORDER', 'order-7', 'H13', 'refcount_order 7', base().u32(96, 7));
  add('QCOW2_MISSING_CRYPTO_HEADER', 'luks-without-extension', 'H14', 'crypt_method 2 without crypto header extension (qemu-img 7.2 info segfaults)', base().u32(32, 2));
  add('QCOW2_CRYPT_METHOD', 'method-3', 'H14', 'crypt_method 3', base().u32(32, 3));
  add('QCOW2_ENCRYPTED_DATA', 'aes-read', 'H14', 'crypt_method 1 (AES): info and map work, reading data is refused', base().u32(32, 1), { op: 'read' });
  add('QCOW2_REFCOUNT_TABLE', 'no-refcount-table', 'H15', 'refcount_table_clusters 0', base().u32(56, 0));
  add('QCOW2_TABLE_TOO_LARGE', 'reftable-129-clusters', 'H15', 'refcount table of 129 clusters (> 8 MiB)', base().u32(56, 129));
  add('QCOW2_TABLE_TOO_LARGE', 'reftable-ffffffff-clusters', 'H15', 'refcount_table_clusters 0xffffffff', base().u32(56, 0xffffffff));
  add('QCOW2_TABLE_OFFSET', 'reftable-unaligned', 'H16', 'refcount_table_offset 0x10008', base().u64(48, 0x10008));
  add('QCOW2_TABLE_OFFSET', 'reftable-int64-wrap', 'H16', 'refcount_table_offset 0x7fffffffffff0000', base().u64(48, 0x7fffffffffff0000n));
  add('QCOW2_TABLE_OFFSET', 'reftable-ffffffffffff0000', 'H16', 'refcount_table_offset 0xffffffffffff0000', base().u64(48, 0xffffffffffff0000n));
  add('QCOW2_SNAPSHOT_TABLE', 'nb-snapshots-65537', 'H17', 'nb_snapshots 65537', base().u32(60, 65537).u64(64, 0x80000));
  add('QCOW2_TABLE_OFFSET', 'snapshots-unaligned', 'H17', 'snapshots_offset 0x80008', base().u32(60, 1).u64(64, 0x80008));
  add('QCOW2_L1_TABLE', 'l1-size-0x400001', 'H18', 'l1_size 0x400001 (> 32 MiB)', base().u32(36, 0x400001));
  add('QCOW2_L1_TABLE', 'l1-size-ffffffff', 'H18', 'l1_size 0xffffffff (× 8 overflows 32 bits)', base().u32(36, 0xffffffff));
  add('QCOW2_TABLE_OFFSET', 'l1-unaligned', 'H19', 'l1_table_offset 0x30008', base().u64(40, 0x30008));
  add('QCOW2_TABLE_OFFSET', 'l1-7fffffffffff0000', 'H19', 'l1_table_offset 0x7fffffffffff0000 (QEMU: I/O error)', base().u64(40, 0x7fffffffffff0000n));
  add('QCOW2_L1_BEYOND_EOF', 'l1-at-16MiB', 'H19', 'l1_table_offset 16 MiB in a 512 KiB file (QEMU reads zeroes)', base().u64(40, 0x1000000));
  add('QCOW2_L1_TABLE', 'l1-size-0', 'H20', 'l1_size 0 for a 64 MiB disk', base().u32(36, 0));
  add('QCOW2_L1_TABLE', 'size-2^42-l1-size-1', 'H20', 'size 2^42 with l1_size 1', base().u64(24, 1n << 42n));
  add('QCOW2_SIZE', 'size-2^62', 'H21', 'size 2^62: needs more than INT_MAX L1 entries', base().u64(24, 1n << 62n));
  add('QCOW2_SIZE', '2EiB-l1-4M', 'R1', '2 MiB clusters, size 2^61 with a 4M-entry L1: beyond 2^53 bytes', base().u32(20, 21).u64(48, 0x200000).u64(40, 0x400000).u32(36, 0x400000).u64(24, 1n << 61n));
  add('OK', 'size-not-sector-multiple', 'H22', 'size 0x3fffe01: rounded down to whole sectors like QEMU', base().u64(24, 0x3fffe01), { op: 'map' });
  add('QCOW2_SUBCLUSTER_SIZE', 'extl2-cluster-bits-9', 'T11', 'extended L2 with 512-byte clusters: 16-byte subclusters', new Image('extl2.qcow2').u32(20, 9));

  // ---- 6b. Header extensions --------------------------------------------------------------
  add('QCOW2_EXT_TOO_LARGE', 'len-ffffffff', 'E1', 'unknown extension with len 0xffffffff', base().setExts([{ magic: 0x12345678, len: 0xffffffff }]));
  add('QCOW2_EXT_TOO_LARGE', 'len-7fffffff', 'E1', 'unknown extension with len 0x7fffffff', base().setExts([{ magic: 0x12345678, len: 0x7fffffff }]));
  add('QCOW2_EXT_TOO_LARGE', 'crosses-backing-name', 'E2', 'extension crossing backing_file_offset 0x80', base().u64(8, 0x80).u32(16, 4).setExts([{ magic: 0x12345678, data: Buffer.alloc(0x40) }], { end: false }));
  add('QCOW2_EXT_BACKING_FORMAT', 'len-16', 'E3', 'backing format extension of 16 bytes', base().setExt(EXT.BACKING_FORMAT, Buffer.alloc(16, 0x61)));
  add('QCOW2_EXT_BITMAPS', 'len-8', 'E5', 'bitmaps extension of 8 bytes', new Image('bitmap.qcow2').setExt(EXT.BITMAPS, Buffer.alloc(8)));
  {
    const bm = (patch) => {
      const img = new Image('bitmap.qcow2');
      const data = Buffer.from(img.exts().find((e) => e.magic === EXT.BITMAPS).data);
      patch(data);
      return img.setExt(EXT.BITMAPS, data);
    };
    add('QCOW2_EXT_BITMAPS', 'nb-65536', 'E5', 'nb_bitmaps 65536', bm((d) => d.writeUInt32BE(65536, 0)));
    add('QCOW2_EXT_BITMAPS', 'nb-0', 'E5', 'nb_bitmaps 0', bm((d) => d.writeUInt32BE(0, 0)));
    add('QCOW2_EXT_BITMAPS', 'dir-size-7fffffff', 'E5', 'bitmap_directory_size 0x7fffffff', bm((d) => d.writeBigUInt64BE(0x7fffffffn, 8)));
    add('QCOW2_EXT_BITMAPS', 'dir-offset-unaligned', 'E5', 'bitmap_directory_offset + 8', bm((d) => d.writeBigUInt64BE(d.readBigUInt64BE(16) + 8n, 16)));
    add('QCOW2_EXT_BITMAPS', 'reserved-nonzero', 'E5', 'reserved32 1', bm((d) => d.writeUInt32BE(1, 4)));
    add('QCOW2_BITMAP_DIRECTORY', '65535-bitmaps-dir-past-eof', 'R8', 'nb_bitmaps 65535, directory of 67,107,840 bytes past the end of the file', bm((d) => {
      d.writeUInt32BE(65535, 0);
      d.writeBigUInt64BE(67107840n, 8);
    }));
    const dirEntry = (patch) => {
      const img = new Image('bitmap.qcow2');
      const dir = Number(img.exts().find((e) => e.magic === EXT.BITMAPS).data.readBigUInt64BE(16));
      patch(img, dir);
      return img;
    };
    add('QCOW2_BITMAP_DIRECTORY', 'table-size-0x8000001', 'R8', 'a bitmap table of 0x8000001 entries', dirEntry((img, dir) => img.u32(dir + 8, 0x8000001)));
    add('QCOW2_BITMAP_DIRECTORY', 'granularity-bits-40', 'E5', 'granularity_bits 40', dirEntry((img, dir) => img.u8(dir + 17, 40)));
    add('QCOW2_BITMAP_TABLE', 'reserved-bits', 'R8', 'bitmap table entry with reserved bit 1 set', dirEntry((img, dir) => {
      const table = Number(img.r64(dir));
      img.u64(table, img.r64(table) | 2n);
    }));
  }
  {
    const luks = new Image('luks.qcow2');
    const crypto = luks.exts().find((e) => e.magic === EXT.CRYPTO).data;
    add('QCOW2_EXT_CRYPTO', 'without-luks', 'E6', 'crypto header extension with crypt_method 0', base().setExt(EXT.CRYPTO, crypto));
    const hdr = Number(crypto.readBigUInt64BE(0));
    add('QCOW2_LUKS_HEADER', 'bad-magic', 'H14', 'the LUKS header at the crypto extension lacks its magic', new Image('luks.qcow2').u8(hdr + 5, 0xbf));
    add('QCOW2_LUKS_HEADER', 'stripes-0', 'H14', 'LUKS key slot 0 with 0 stripes', new Image('luks.qcow2').u32(hdr + 208 + 44, 0));
    add('QCOW2_LUKS_HEADER', 'header-past-eof', 'H14', 'the crypto extension points past the end of the file', new Image('luks.qcow2').setExt(EXT.CRYPTO, Buffer.concat([u64be(0x10000000), crypto.subarray(8)])));
  }
  {
    const img = base();
    const exts = [];
    for (let p = img.headerLength; p + 8 <= img.cs; p += 8) exts.push({ magic: 0x12345678 + (p & 0xff), data: Buffer.alloc(0) });
    add('OK', '8000-empty-extensions', 'E7', `${exts.length} zero-length unknown extensions up to the cluster end`, img.setExts(exts, { end: false }), { op: 'map' });
  }
  add('QCOW2_EXT_DUPLICATE', 'two-backing-formats', 'E8', 'two backing format extensions (QEMU: the last wins)', base().setExts([
    { magic: EXT.BACKING_FORMAT, data: Buffer.from('raw') }, { magic: EXT.BACKING_FORMAT, data: Buffer.from('qcow2') }]));
  add('QCOW2_EXT_DUPLICATE', 'two-data-files', 'E8', 'two external data file extensions', new Image('datafile.qcow2').setExts([
    { magic: EXT.DATA_FILE, data: Buffer.from('datafile.raw') }, { magic: EXT.DATA_FILE, data: Buffer.from(secretRaw) }]));

  // ---- 6c. Tables and entries ---------------------------------------------------------------
  const withL1 = (v) => { const i = base(); return i.setL1(0, v); };
  const withL2 = (idx, v) => { const i = base(); return i.setL2(idx, v); };
  add('QCOW2_L2_OFFSET_UNALIGNED', 'l2-0x40200', 'T1', 'L1 entry 0 → L2 table at 0x40200', withL1(0x8000000000040200n), { op: 'map' });
  add('QCOW2_L2_BEYOND_EOF', 'l2-at-16MiB', 'T2', 'L1 entry 0 → L2 table at 16 MiB in a 512 KiB file (QEMU: unallocated)', withL1(0x8000000001000000n), { op: 'map' });
  {
    const b = base();
    add('QCOW2_METADATA_OVERLAP', 'l2-is-refcount-table', 'T3', 'L1 entry 0 → the refcount table (QEMU parses it as an L2 table)', withL1(0x8000000000000000n | BigInt(b.refcountTableOffset)), { op: 'map' });
    add('QCOW2_METADATA_OVERLAP', 'l2-is-l1', 'T3', 'L1 entry 0 → the L1 table itself (iotest 060)', withL1(0x8000000000000000n | BigInt(b.l1Offset)), { op: 'map' });
    const refblock = Number(b.r64(b.refcountTableOffset) & OFFSET_MASK);
    add('QCOW2_METADATA_OVERLAP', 'l2-is-refblock', 'T3', 'L1 entry 0 → the refcount block', withL1(0x8000000000000000n | BigInt(refblock)), { op: 'map' });
    add('QCOW2_METADATA_OVERLAP', 'data-is-l1', 'T7', 'L2 entry 0 → the L1 table as a data cluster', withL2(0, 0x8000000000000000n | BigInt(b.l1Offset)), { op: 'map' });
    add('QCOW2_METADATA_OVERLAP', 'data-is-refcount-table', 'T7', 'L2 entry 0 → the refcount table as a data cluster', withL2(0, 0x8000000000000000n | BigInt(b.refcountTableOffset)), { op: 'map' });
    add('QCOW2_METADATA_OVERLAP', 'data-is-refblock', 'T7', 'L2 entry 1 → the refcount block (iotest 060)', withL2(1, 0x8000000000000000n | BigInt(refblock)), { op: 'map' });
    add('QCOW2_METADATA_OVERLAP', 'data-is-own-l2', 'T7', 'L2 entry 0 → the L2 table itself', withL2(0, 0x8000000000000000n | BigInt(b.l2Offset())), { op: 'map' });
    add('QCOW2_METADATA_OVERLAP', 'zero-alloc-is-l1', 'T7', 'a preallocated zero cluster at the L1 table', withL2(0, 0x8000000000000001n | BigInt(b.l1Offset)), { op: 'map' });
  }
  {
    const s = new Image('snap.qcow2');
    const so = s.snapshotsOffset;
    add('QCOW2_METADATA_OVERLAP', 'data-is-snapshot-table', 'T7', 'L2 entry 0 → the snapshot table', s.setL2(0, 0x8000000000000000n | BigInt(so)), { op: 'map' });
    const bmi = new Image('bitmap.qcow2');
    const dir = Number(bmi.exts().find((e) => e.magic === EXT.BITMAPS).data.readBigUInt64BE(16));
    add('QCOW2_METADATA_OVERLAP', 'data-is-bitmap-directory', 'T7', 'L2 entry 0 → the bitmap directory cluster', bmi.setL2(0, 0x8000000000000000n | BigInt(dir)), { op: 'map' });
    const z = new Image('zlib.qcow2');
    add('QCOW2_METADATA_OVERLAP', 'compressed-is-l1', 'T7', 'a compressed cluster whose payload is the L1 table', z.setL2(0, compressedEntry(z.l1Offset, 512, 16)), { op: 'map' });
    const l = new Image('luks.qcow2');
    const hdr = Number(l.exts().find((e) => e.magic === EXT.CRYPTO).data.readBigUInt64BE(0));
    const l2 = l.append(65536);
    l.setL1(0, 0x8000000000000000n | BigInt(l2)).u64(l2, 0x8000000000000000n | BigInt(hdr));
    add('QCOW2_METADATA_OVERLAP', 'data-is-luks-header', 'T7', 'an encrypted image whose data cluster is its LUKS header', l, { op: 'map' });
  }
  add('QCOW2_METADATA_OVERLAP', 'l1-in-header-cluster', 'T3', 'l1_table_offset 0: the L1 table overlaps the header', base().u64(40, 0));
  {
    const b = base();
    add('QCOW2_METADATA_OVERLAP', 'refblock-is-l1', 'T16', 'refcount table entry 0 → the L1 table', b.u64(b.refcountTableOffset, b.l1Offset));
    const c = base();
    add('QCOW2_METADATA_OVERLAP', 'snapshot-table-is-refcount-table', 'T14', 'a one-entry snapshot table at the refcount table', c.u32(60, 1).u64(64, c.refcountTableOffset));
    const d = base();
    add('QCOW2_REFBLOCK_OFFSET', 'refblock-0x2a00', 'T16', 'refcount table entry 0 = 0x2a00 (iotest 060)', d.u64(d.refcountTableOffset, 0x2a00));
    const e = base();
    add('QCOW2_REFCOUNT_TABLE_BEYOND_EOF', 'reftable-at-16MiB', 'T2', 'the refcount table lies past the end of the file', e.u64(48, 0x1000000));
  }
  add('QCOW2_CLUSTER_OFFSET_UNALIGNED', 'data-0x50200', 'T4', 'L2 entry 0 → 0x50200', withL2(0, 0x8000000000050200n), { op: 'map' });
  add('QCOW2_CLUSTER_OFFSET_UNALIGNED', 'zero-alloc-0x52a00', 'T10', 'preallocated zero cluster at 0x52a00 (iotest 060)', withL2(0, 0x0000000000052a01n), { op: 'map' });
  add('QCOW2_DATA_BEYOND_EOF', 'data-at-256MiB', 'T5', 'L2 entry 0 → 256 MiB in a 512 KiB file (QEMU: maps it, reads zeroes)', withL2(0, 0x8000000010000000n), { op: 'map' });
  add('QCOW2_RESERVED_BITS', 'l2-bit-56', 'T6', 'L2 entry 0 = 0x8100000000050000', withL2(0, 0x8100000000050000n), { op: 'map' });
  add('QCOW2_RESERVED_BITS', 'l2-bits-1-7', 'T6', 'L2 entry 0 = 0x80000000000500fe', withL2(0, 0x80000000000500fen), { op: 'map' });
  add('QCOW2_RESERVED_BITS', 'l1-bit-56', 'T6', 'L1 entry 0 = 0x8100000000040000', withL1(0x8100000000040000n), { op: 'map' });
  add('QCOW2_RESERVED_BITS', 'l1-bit-0', 'T6', 'L1 entry 0 = 0x8000000000040001', withL1(0x8000000000040001n), { op: 'map' });
  {
    const z = new Image('zlib.qcow2');
    add('QCOW2_RESERVED_BITS', 'compressed-copied', 'T6', 'a compressed cluster with COPIED set', z.setL2(0, z.l2(0) | (1n << 63n)), { op: 'map' });
  }
  {
    const b = base();
    const data0 = b.l2(0);
    b.setL2(2, data0).setL2(16, data0);
    add('OK', 'aliased-data-cluster', 'T8', 'three L2 entries name one data cluster (allowed; QEMU check: reference=3)', b, { op: 'read' });
  }
  add('QCOW2_ZERO_IN_V2', 'zero-flag', 'T10', 'v2 image with a zero flag in L2 entry 2', new Image('v2.qcow2').setL2(2, 1n), { op: 'map' });
  {
    const x = new Image('extl2.qcow2');
    x.u64(x.l2At(0) + 8, 0x00000001ffffffffn);
    add('QCOW2_INVALID_SUBCLUSTER_BITMAP', 'alloc-and-zero', 'T11', 'extended L2 bitmap 0x00000001ffffffff (subcluster 0 allocated and zero)', x, { op: 'map' });
  }
  {
    const d = new Image('datafile.qcow2');
    fs.copyFileSync(path.join(BASE_DIR, 'datafile.raw'), path.join(root, 'datafile.raw'));
    add('QCOW2_COMPRESSED_WITH_DATA_FILE', 'compressed-entry', 'T12', 'a compressed cluster in an image with an external data file', d.setL2(0, compressedEntry(0x50000, 512, 16)), { op: 'map' });
  }
  {
    const z = () => new Image('zlib.qcow2');
    const plain = Number(z().l2(1) & OFFSET_MASK);
    add('QCOW2_COMPRESSED_DATA', 'garbage-payload', 'T13', 'the compressed descriptor points at plain data', z().setL2(0, compressedEntry(plain, 512, 16)), { op: 'read' });
    add('QCOW2_COMPRESSED_BEYOND_EOF', 'payload-at-256MiB', 'T13', 'compressed payload at 256 MiB in a 448 KiB file', z().setL2(0, 0x4000000010000000n), { op: 'read' });
    add('QCOW2_COMPRESSED_DATA', 'max-sectors', 'T13', 'descriptor 0x7fc0000000060000: 256 sectors of plain data', z().setL2(0, 0x7fc0000000060000n), { op: 'read' });
    add('QCOW2_COMPRESSED_BEYOND_EOF', 'offset-above-2^53', 'T13', 'descriptor 0x7fff000000050000: payload offset 0x3f000000050000 (not exact as a double)', z().setL2(0, 0x7fff000000050000n), { op: 'read' });
    const withPayload = (payload, type = 'zlib.qcow2') => {
      const img = new Image(type);
      const at = img.append(payload, 512);
      return img.setL2(0, compressedEntry(at, payload.length, 16));
    };
    const big = zlib.deflateRawSync(Buffer.alloc(4 * 65536, 0x5a), { windowBits: 12 });
    add('QCOW2_COMPRESSED_DATA', 'zlib-inflates-4x', 'R5', `a ${big.length}-byte deflate stream of 256 KiB (QEMU truncates silently)`, withPayload(big), { op: 'read' });
    const short = zlib.deflateRawSync(Buffer.alloc(4096, 0x5a), { windowBits: 12 });
    add('QCOW2_COMPRESSED_DATA', 'zlib-short', 'R5', 'a deflate stream of 4 KiB for a 64 KiB cluster', withPayload(short), { op: 'read' });
    add('QCOW2_COMPRESSED_DATA', 'zstd-declares-256k', 'R5', 'a zstd frame declaring 256 KiB', withPayload(zstdRleFrame(262144, 0x5a, true), 'zstd.qcow2'), { op: 'read' });
    add('QCOW2_COMPRESSED_DATA', 'zstd-undeclared-256k', 'R5', 'a zstd frame of 256 KiB without a content size (QEMU: EIO)', withPayload(zstdRleFrame(262144, 0x5a, false), 'zstd.qcow2'), { op: 'read' });
    const skippable = Buffer.alloc(65536);
    for (let o = 0; o < skippable.length; o += 8) skippable.writeUInt32LE(0x184d2a50, o);
    add('QCOW2_COMPRESSED_DATA', 'zstd-skippable-frames', 'R6', '8192 empty skippable zstd frames', withPayload(skippable, 'zstd.qcow2'), { op: 'read' });
    const everywhere = z();
    const entry0 = everywhere.l2(0);
    for (let i = 0; i < 1024; i++) everywhere.setL2(i, entry0);
    add('OK', 'one-compressed-cluster-everywhere', 'R4', 'all 1024 clusters of a 64 MiB disk name one compressed cluster', everywhere, { op: 'read', budgetMs: 10000 });
  }
  {
    const s = () => new Image('snap.qcow2');
    const so = s().snapshotsOffset;
    add('QCOW2_SNAPSHOT_TABLE', 'extra-data-2048', 'T14', 'snapshot entry 0 with extra_data_size 2048', s().u32(so + 36, 2048));
    add('QCOW2_SNAPSHOT_L1', 'l1-offset-0x12345', 'T14', 'snapshot L1 table offset 0x12345 (QEMU: only check finds it)', s().u64(so, 0x12345));
    add('QCOW2_SNAPSHOT_L1', 'l1-size-0x10000000', 'T14', 'snapshot L1 size 0x10000000', s().u32(so + 8, 0x10000000));
    add('QCOW2_SNAPSHOT_TABLE', 'table-past-eof', 'T15', 'nb_snapshots 1 at 8 MiB in a 512 KiB file (QEMU lists an empty snapshot)', base().u32(60, 1).u64(64, 0x800000));
    // R7: 65,536 entries with 65,535-byte ids and names: the table passes 64 MiB after ~512 entries.
    const r7 = base();
    const entry = 40 + 65535 + 65535;
    const count = Math.ceil((64 * 1024 * 1024) / entry) + 2;
    const start = r7.append(count * (Math.ceil(entry / 8) * 8));
    for (let i = 0, p = start; i < count; i++, p += Math.ceil(entry / 8) * 8) r7.u16(p + 12, 65535).u16(p + 14, 65535);
    r7.u32(60, 65536).u64(64, start);
    add('QCOW2_SNAPSHOT_TABLE', '65536-entries-of-128KiB', 'R7', 'ids and names of 65,535 bytes each: stops at 64 MiB', r7, { budgetMs: 10000 });
  }
  add('QCOW2_OFFSET_TOO_LARGE', 'data-at-32PiB', 'R9', 'a data cluster at 2^55 (iotest 138)', withL2(0, 0x8080000000000000n), { op: 'map' });
  {
    const b = base().u64(24, 1n << 30n).u32(36, 2);
    b.setL1(1, b.l1(0));
    add('QCOW2_L2_DUPLICATE', 'two-l1-entries', 'T8', 'L1 entries 0 and 1 name one L2 table', b);
    // R2: a 1 TiB disk whose 2048 L1 entries name one L2 table whose entries all name one cluster.
    const r2 = base().u64(24, 1n << 40n).u32(36, 2048);
    const l1e = r2.l1(0);
    const d0 = r2.l2(0);
    for (let i = 0; i < 2048; i++) r2.setL1(i, l1e);
    for (let i = 0; i < 8192; i++) r2.setL2(i, d0);
    add('QCOW2_L2_DUPLICATE', '1TiB-one-l2-one-cluster', 'R2', '2048 L1 entries → one L2 → one data cluster (QEMU: 13.5 M map lines)', r2, { op: 'map' });
  }
  {
    // Aliasing without shared L2 tables: 16 L2 tables whose 8192 entries all name one cluster.
    const img = base().u64(24, 16n << 29n).u32(36, 16);
    const d0 = img.l2(0);
    const table = Buffer.alloc(65536);
    for (let i = 0; i < 8192; i++) table.writeBigUInt64BE(d0, i * 8);
    for (let t = 0; t < 16; t++) img.setL1(t, 0x8000000000000000n | BigInt(img.append(table)));
    add('OK', 'aliased-131072-extents', 'R2', '16 L2 tables × 8192 entries naming one cluster: 131,072 map entries', img, { op: 'map', budgetMs: 15000 });
  }
  {
    // A million tiny extents: 128 L2 tables alternating zero and unallocated clusters.
    const img = base().u64(24, 128n << 29n).u32(36, 128);
    const table = Buffer.alloc(65536);
    for (let i = 0; i < 8192; i += 2) table.writeBigUInt64BE(1n, i * 8);
    for (let t = 0; t < 128; t++) img.setL1(t, 0x8000000000000000n | BigInt(img.append(table)));
    add('OK', 'million-extents', '§6e', '64 GiB with 1,048,576 alternating zero/unallocated clusters', img, { op: 'map', budgetMs: 30000 });
  }
  {
    // A 4M-entry L1 (32 MiB), all empty, for a 2 PiB disk.
    const img = base();
    const l1 = img.append(32 * 1024 * 1024);
    img.u64(40, l1).u32(36, 0x400000).u64(24, 1n << 51n);
    add('OK', 'huge-empty-l1', 'R1', 'a 2 PiB disk with an empty 4M-entry L1 table', img, { op: 'map', budgetMs: 15000 });
    const r3 = base();
    const l1b = r3.append(32 * 1024 * 1024);
    r3.u64(40, l1b).u32(36, 0x400000).u64(24, 1n << 51n);
    for (let i = 0; i < 0x400000; i++) r3.u64(l1b + 8 * i, 0x8000000000000000n | (BigInt(i + 1) << 30n));
    add('QCOW2_L2_BEYOND_EOF', '4M-l1-entries-past-eof', 'R3', '4M L1 entries naming distinct L2 tables past the end of the file', r3, { op: 'map', budgetMs: 15000 });
  }

  // ---- 6d. Backing chains and external references ------------------------------------------
  const top = (name, fmt) => base().setBacking(name, fmt);
  fs.copyFileSync(path.join(BASE_DIR, 'raw-backing.raw'), path.join(root, 'plain.raw'));
  add('POLICY_OUTSIDE_ALLOWED_DIRS', 'absolute', 'C1', 'backing file named by absolute path outside the allowed tree', top(secretRaw, 'raw'), { op: 'map' });
  add('POLICY_OUTSIDE_ALLOWED_DIRS', 'dotdot', 'C2', 'backing file ../outside/secret.raw', top('../outside/secret.raw', 'raw'), { op: 'map' });
  fs.symlinkSync(secretRaw, path.join(root, 'link-out.raw'));
  add('POLICY_OUTSIDE_ALLOWED_DIRS', 'symlink', 'C2', 'a symlink inside the tree pointing outside', top('link-out.raw', 'raw'), { op: 'map' });
  add('POLICY_PROTOCOL_REFUSED', 'json', 'C3', 'json:{…} backing name', top(`json:{"driver":"raw","file":{"driver":"file","filename":"${secretRaw}"}}`, 'raw'), { op: 'map' });
  add('POLICY_PROTOCOL_REFUSED', 'nbd', 'C3', 'nbd://127.0.0.1:1/x backing name: no network I/O', top('nbd://127.0.0.1:1/x', 'raw'), { op: 'map' });
  add('POLICY_PROTOCOL_REFUSED', 'http', 'C3', 'http:// backing name', top('http://127.0.0.1:1/x.raw', 'raw'), { op: 'map' });
  add('POLICY_PROTOCOL_REFUSED', 'file-colon', 'C3', `file:${secretRaw}`, top(`file:${secretRaw}`, 'raw'), { op: 'map' });
  add('QCOW2_BACKING_NAME_INVALID', 'nul-inside', 'C4', 'backing name plain.raw\\0/outside…', top(Buffer.concat([Buffer.from('plain.raw\0'), Buffer.from(secretRaw)]), 'raw'), { op: 'map' });
  add('QCOW2_BACKING_NAME_INVALID', 'empty', 'C4', 'backing_file_offset set, backing_file_size 0', base().u64(8, 0x1000).u32(16, 0), { op: 'map' });
  fs.copyFileSync(path.join(BASE_DIR, 'raw-backing.raw'), path.join(root, Buffer.from('caf\xe9.raw', 'latin1').toString('utf8')));
  add('POLICY_INVALID_NAME', 'invalid-utf8', 'C4', 'a Latin-1 backing name (not UTF-8); a file named with U+FFFD exists as a trap', top(Buffer.from('caf\xe9.raw', 'latin1'), 'raw'), {
    op: 'map', forbidden: [path.join(root, Buffer.from('caf\xe9.raw', 'latin1').toString('utf8'))],
  });
  add('UNSUPPORTED_BACKING_FORMAT', 'vmdk', 'E4', 'backing format vmdk', top('plain.raw', 'vmdk'), { op: 'map' });
  add('UNSUPPORTED_BACKING_FORMAT', 'qcow2-nul-junk', 'E4', 'backing format qcow2\\0xx', top('plain.raw', 'qcow2\0xx'), { op: 'map' });
  add('UNSUPPORTED_BACKING_FORMAT', 'non-ascii', 'E4', 'backing format qcöw2', top('plain.raw', 'qcöw2'), { op: 'map' });
  {
    // A raw file whose first bytes are a qcow2 header naming the secret as its backing file.
    const trap = base().setBacking(secretQcow2, 'qcow2');
    writeSparse(path.join(root, 'trap.raw'), trap.b);
    add('POLICY_BACKING_FORMAT_MISSING', 'raw-holding-qcow2', 'C5', 'no backing format; the backing file is raw with a qcow2 header (QEMU probes it and follows)', top('trap.raw', null), {
      op: 'map', forbidden: [path.join(root, 'trap.raw')],
    });
    add('OK', 'raw-backing-holding-qcow2', 'C6', 'backing format raw: the qcow2 header inside is data', top('trap.raw', 'raw'), { op: 'read' });
    add('OK', 'raw-top-holding-qcow2', 'C6', 'a raw top image (-f raw) holding a qcow2 header', null, { op: 'map', file: 'trap.raw', options: { format: 'raw' } });
  }
  add('POLICY_BACKING_LOOP', 'self', 'C7', 'the image names itself', top('POLICY_BACKING_LOOP--self.qcow2', 'qcow2'), { op: 'map' });
  writeSparse(path.join(root, 'loop-b.qcow2'), top('POLICY_BACKING_LOOP--a-b-a.qcow2', 'qcow2').b);
  add('POLICY_BACKING_LOOP', 'a-b-a', 'C8', 'a → b → a', top('loop-b.qcow2', 'qcow2'), { op: 'map' });
  {
    const n = 40;
    const chainFiles = [];
    for (let i = 1; i < n; i++) {
      const f = `deep-${String(i).padStart(2, '0')}.qcow2`;
      chainFiles.push(path.join(root, f));
      const next = i + 1 < n ? `deep-${String(i + 1).padStart(2, '0')}.qcow2` : 'deep-01.qcow2';
      writeSparse(path.join(root, f), top(next, 'qcow2').b);
    }
    add('POLICY_CHAIN_TOO_DEEP', '40-layers-ending-in-a-loop', 'C9', 'a chain of 40 layers (looping back) with the default limit 16: the 17th file is never opened', top('deep-01.qcow2', 'qcow2'), {
      op: 'map', forbidden: chainFiles.slice(15),
    });
    add('POLICY_CHAIN_TOO_DEEP', 'limit-4', 'R10', 'the same chain with --max-chain-depth 4', top('deep-01.qcow2', 'qcow2'), {
      op: 'map', options: { maxChainDepth: 4 }, forbidden: chainFiles.slice(3),
    });
  }
  {
    const depth = 300;
    for (let i = 1; i < depth; i++) {
      const f = `legit-${String(i).padStart(3, '0')}.qcow2`;
      const img = new Image('chain-top.qcow2');
      if (i + 1 < depth) img.setBacking(`legit-${String(i + 1).padStart(3, '0')}.qcow2`, 'qcow2');
      else img.setBacking('plain.raw', 'raw');
      writeSparse(path.join(root, f), img.b);
    }
    add('OK', 'chain-300-deep', 'C9', 'a legitimate 300-layer chain with --max-chain-depth 301 (QEMU: 1.1 s, 67 MB)', new Image('chain-top.qcow2').setBacking('legit-001.qcow2', 'qcow2'), {
      op: 'map', options: { maxChainDepth: 301 }, budgetMs: 20000,
    });
  }
  fs.mkdirSync(path.join(root, 'subdir'));
  add('POLICY_NOT_REGULAR_FILE', 'directory', 'C10', 'the backing file is a directory', top('subdir', 'raw'), { op: 'map' });
  add('POLICY_NOT_REGULAR_FILE', 'dev-zero', 'C10', '/dev/zero with --allow-dir /dev', top('/dev/zero', 'raw'), { op: 'map', options: { allowDirs: ['/dev'] } });
  let haveFifo = true;
  try {
    // node:fs cannot make a FIFO; use the system tool when present.
    fs.mkdirSync(path.join(root, 'fifo-dir'));
    execFileSync('mkfifo', [path.join(root, 'fifo-dir', 'pipe.raw')]);
  } catch {
    haveFifo = false;
  }
  if (haveFifo) {
    add('POLICY_NOT_REGULAR_FILE', 'fifo', 'C10', 'the backing file is a FIFO (opening it would hang)', top('fifo-dir/pipe.raw', 'raw'), {
      op: 'map', forbidden: [path.join(root, 'fifo-dir', 'pipe.raw')],
    });
  }
  add('POLICY_FILE_NOT_FOUND', 'missing', 'C12', 'the backing file does not exist', top('nope.qcow2', 'qcow2'), { op: 'map' });
  {
    const d = (name) => {
      const img = new Image('datafile.qcow2');
      return img.setExt(EXT.DATA_FILE, Buffer.from(name));
    };
    add('POLICY_OUTSIDE_ALLOWED_DIRS', 'data-file-absolute', 'C11', 'external data file named by absolute path outside the tree (QEMU convert leaks it)', d(secretRaw).u64(88, 2n), { op: 'map' });
    add('POLICY_PROTOCOL_REFUSED', 'data-file-json', 'C11', 'external data file json:{…}', d(`json:{"driver":"file","filename":"${secretRaw}"}`), { op: 'map' });
    add('QCOW2_DATA_FILE_MISSING', 'bit-without-name', 'C11', 'incompatible bit 2 without a data file extension', new Image('datafile.qcow2').setExt(EXT.DATA_FILE, null));
    add('QCOW2_DATA_FILE_RAW', 'raw-bit-without-data-file', 'C11', 'autoclear bit 1 without incompatible bit 2', base().u64(88, 2n));
  }
  {
    const short = new Image('chain-top.qcow2').setBacking('plain.raw', 'raw');
    add('OK', 'short-backing', 'C12', 'a 64 MiB overlay over a 64 KiB raw backing file: zeroes beyond its end', short, { op: 'read' });
  }
  {
    // R12: layers with 32 MiB L1 tables exhaust the chain's metadata budget.
    const layers = 6;
    for (let i = layers; i >= 1; i--) {
      const img = base();
      const l1 = img.append(32 * 1024 * 1024);
      img.u64(40, l1).u32(36, 0x400000).setL1(0, 0).u64(24, 1n << 40n);
      // keep the data cluster reachable through entry 0 of the new table
      img.u64(l1, 0x8000000000040000n);
      if (i < layers) img.setBacking(`budget-${i + 1}.qcow2`, 'qcow2');
      if (i === 1) add('LIMIT_METADATA_MEMORY', '32MiB-l1-per-layer', 'R12', `${layers} layers with 32 MiB L1 tables: over the chain's metadata budget`, img, { op: 'map', budgetMs: 10000 });
      else writeSparse(path.join(root, `budget-${i}.qcow2`), img.b);
    }
  }

  // R11: a top image file of 2^62 bytes (sparse; needs a filesystem that allows it, such as
  // tmpfs: ext4 stops at 16 TiB). The file lives outside OUTDIR; `external` lists it for cleanup.
  const external = [];
  for (const dir of ['/dev/shm', os.tmpdir()]) {
    const big = path.join(dir, `vdisk-corpus-huge-${process.pid}-${Date.now()}.qcow2`);
    try {
      fs.writeFileSync(big, base().b.subarray(0, 65536));
      // Node's truncate stops at 2^53; the system tool does not.
      execFileSync('truncate', ['-s', String(2n ** 62n), big], { stdio: 'ignore' });
    } catch {
      fs.rmSync(big, { force: true });
      continue;
    }
    external.push(big);
    fs.symlinkSync(big, path.join(root, 'IO_FILE_TOO_LARGE--file-of-2^62-bytes.qcow2'));
    add('IO_FILE_TOO_LARGE', 'file-of-2^62-bytes', 'R11', 'the image file is 2^62 bytes (sparse): sizes beyond 2^53 are refused', null, {
      file: 'IO_FILE_TOO_LARGE--file-of-2^62-bytes.qcow2',
    });
    break;
  }

  fs.writeFileSync(path.join(outDir, 'cases.json'), JSON.stringify({ root, outside, external, cases }, null, 1));
  return { root, outside, external, cases };
}

// CLI
if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const arg = process.argv[2];
  if (arg === undefined) {
    console.error('usage: make-corpus.mjs OUTDIR | --list');
    process.exit(2);
  }
  if (arg === '--list') {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-corpus-'));
    try {
      const { cases } = buildCorpus(tmp);
      console.log('| case | § | op | what |\n|---|---|---|---|');
      for (const c of cases) console.log(`| \`${c.name}\` | ${c.ref} | ${c.op} | ${c.note.replaceAll('|', '\\|')} |`);
      console.log(`\n${cases.length} cases, ${cases.filter((c) => c.code !== null).length} of them errors.`);
    } finally {
      const { external } = JSON.parse(fs.readFileSync(path.join(tmp, 'cases.json'), 'utf8'));
      for (const f of external) fs.rmSync(f, { force: true });
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  } else {
    const { cases, external } = buildCorpus(path.resolve(arg));
    if (external.length > 0) console.log(`remove after use: ${external.join(' ')}`);
    console.log(`${cases.length} cases in ${path.resolve(arg)}`);
  }
}
