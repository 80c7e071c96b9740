/**
 * Builds small qcow2 images in memory from field values (in the spirit of QEMU's
 * `qcow2_format.py` and node-tar's `make-tar`), so tests can craft exact and corrupt cases:
 * the v2/v3 header (every field settable, including out-of-range values), header
 * extensions (with a declared length that may differ from the data), the backing file name,
 * the L1 table, L2 tables / refcount blocks as u64 arrays, and raw byte patches.
 *
 * Default layout (cluster size `cs`): header + extensions at 0, refcount table at `cs`,
 * refcount block at `2cs`, L1 table at `3cs`; callers place L2 tables from `4cs` on.
 * Layout of the header per docs/interop/qcow2.txt (HOSTILE-IMAGES.md §0).
 */

/** Every header field; omitted ones get the defaults of a fresh v3 image. */
export interface HeaderFields {
  readonly magic?: number;
  readonly version?: number;
  readonly backingFileOffset?: bigint | number;
  readonly backingFileSize?: number;
  readonly clusterBits?: number;
  readonly size?: bigint | number;
  readonly cryptMethod?: number;
  readonly l1Size?: number;
  readonly l1TableOffset?: bigint | number;
  readonly refcountTableOffset?: bigint | number;
  readonly refcountTableClusters?: number;
  readonly nbSnapshots?: number;
  readonly snapshotsOffset?: bigint | number;
  readonly incompatibleFeatures?: bigint;
  readonly compatibleFeatures?: bigint;
  readonly autoclearFeatures?: bigint;
  readonly refcountOrder?: number;
  readonly headerLength?: number;
  readonly compressionType?: number;
}

/** Header extension magics (qcow2 spec "Header extensions"). */
export const EXT = {
  END: 0x00000000,
  BACKING_FORMAT: 0xe2792aca,
  FEATURE_TABLE: 0x6803f857,
  CRYPTO: 0x0537be77,
  BITMAPS: 0x23852875,
  DATA_FILE: 0x44415441,
} as const;

/** One header extension; `len` overrides the declared length (default: data length). */
export interface Extension {
  readonly magic: number;
  readonly data?: Uint8Array;
  readonly len?: number;
}

/** Big-endian u32. */
export function be32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0);
  return b;
}

/** Big-endian u64. */
export function be64(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v));
  return b;
}

/** Concatenation of byte arrays. */
export function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** ASCII/UTF-8 bytes of a string. */
export function ascii(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/** Default header field values for a given cluster size and version. */
export function headerDefaults(f: HeaderFields = {}): Required<HeaderFields> {
  const clusterBits = f.clusterBits ?? 16;
  const cs = 2 ** Math.min(Math.max(clusterBits, 9), 21);
  const version = f.version ?? 3;
  return {
    magic: f.magic ?? 0x514649fb,
    version,
    backingFileOffset: f.backingFileOffset ?? 0,
    backingFileSize: f.backingFileSize ?? 0,
    clusterBits,
    size: f.size ?? 1024 * 1024,
    cryptMethod: f.cryptMethod ?? 0,
    l1Size: f.l1Size ?? 1,
    l1TableOffset: f.l1TableOffset ?? 3 * cs,
    refcountTableOffset: f.refcountTableOffset ?? cs,
    refcountTableClusters: f.refcountTableClusters ?? 1,
    nbSnapshots: f.nbSnapshots ?? 0,
    snapshotsOffset: f.snapshotsOffset ?? 0,
    incompatibleFeatures: f.incompatibleFeatures ?? 0n,
    compatibleFeatures: f.compatibleFeatures ?? 0n,
    autoclearFeatures: f.autoclearFeatures ?? 0n,
    refcountOrder: f.refcountOrder ?? 4,
    headerLength: f.headerLength ?? (version === 2 ? 72 : 112),
    compressionType: f.compressionType ?? 0,
  };
}

/**
 * The header bytes. `length` defaults to 112 (what vdisk probes); v3-only fields are
 * written for any version other than 2, the compression type byte whenever it fits.
 */
export function encodeHeader(fields: HeaderFields = {}, length = 112): Uint8Array {
  const h = headerDefaults(fields);
  const buf = new Uint8Array(Math.max(length, 112));
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, h.magic >>> 0);
  dv.setUint32(4, h.version >>> 0);
  dv.setBigUint64(8, BigInt(h.backingFileOffset));
  dv.setUint32(16, h.backingFileSize >>> 0);
  dv.setUint32(20, h.clusterBits >>> 0);
  dv.setBigUint64(24, BigInt(h.size));
  dv.setUint32(32, h.cryptMethod >>> 0);
  dv.setUint32(36, h.l1Size >>> 0);
  dv.setBigUint64(40, BigInt(h.l1TableOffset));
  dv.setBigUint64(48, BigInt(h.refcountTableOffset));
  dv.setUint32(56, h.refcountTableClusters >>> 0);
  dv.setUint32(60, h.nbSnapshots >>> 0);
  dv.setBigUint64(64, BigInt(h.snapshotsOffset));
  if (h.version !== 2) {
    dv.setBigUint64(72, h.incompatibleFeatures);
    dv.setBigUint64(80, h.compatibleFeatures);
    dv.setBigUint64(88, h.autoclearFeatures);
    dv.setUint32(96, h.refcountOrder >>> 0);
    dv.setUint32(100, h.headerLength >>> 0);
    dv.setUint8(104, h.compressionType & 0xff);
  }
  return buf.subarray(0, length);
}

/** The extension area bytes: each `{magic, len, data, pad to 8}`, then (by default) the end marker. */
export function encodeExtensions(exts: readonly Extension[], end = true): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of exts) {
    const data = e.data ?? new Uint8Array(0);
    parts.push(be32(e.magic), be32(e.len ?? data.length), data, new Uint8Array((8 - (data.length % 8)) % 8));
  }
  if (end) parts.push(new Uint8Array(8));
  return cat(...parts);
}

/** A feature-name table entry (48 bytes). */
export function featureEntry(type: number, bit: number, name: string | Uint8Array): Uint8Array {
  const e = new Uint8Array(48);
  e[0] = type;
  e[1] = bit;
  e.set((typeof name === 'string' ? ascii(name) : name).subarray(0, 46), 2);
  return e;
}

/** Bitmaps extension payload (24 bytes). */
export function bitmapsExtData(nb: number, dirSize: bigint | number, dirOffset: bigint | number, reserved = 0): Uint8Array {
  return cat(be32(nb), be32(reserved), be64(dirSize), be64(dirOffset));
}

/** Description of a whole image. */
export interface ImageSpec {
  readonly header?: HeaderFields;
  /** Extensions at `header_length` (an end marker is appended). */
  readonly extensions?: readonly Extension[];
  /** Backing file name, written after the extensions (sets offset/size unless given). */
  readonly backingFile?: string;
  /** L1 entries (default: `l1Size` zero entries). */
  readonly l1?: readonly bigint[];
  /** u64 arrays written big-endian at host offsets (L2 tables, refcount table/blocks). */
  readonly tables?: ReadonlyArray<{ readonly offset: number; readonly entries: readonly bigint[] }>;
  /** Raw byte patches applied last. */
  readonly patches?: ReadonlyArray<{ readonly offset: number; readonly data: Uint8Array }>;
  /** File size (default: end of the last structure, rounded up to a cluster, at least 4 clusters). */
  readonly fileSize?: number;
}

/** Builds the image bytes. */
export function buildQcow2(spec: ImageSpec = {}): Uint8Array {
  const base = headerDefaults(spec.header);
  const cs = 2 ** base.clusterBits;
  const extArea = spec.extensions === undefined && spec.backingFile === undefined ? new Uint8Array(8) : encodeExtensions(spec.extensions ?? []);
  const extStart = base.version === 2 ? 72 : base.headerLength;
  let header: HeaderFields = spec.header ?? {};
  let nameBytes: Uint8Array | null = null;
  if (spec.backingFile !== undefined) {
    nameBytes = ascii(spec.backingFile);
    header = {
      backingFileOffset: extStart + extArea.length,
      backingFileSize: nameBytes.length,
      ...header,
    };
  }
  const h = headerDefaults(header);
  const writes: Array<{ offset: number; data: Uint8Array }> = [];
  writes.push({ offset: 0, data: encodeHeader(h, Math.max(extStart, 72)) });
  writes.push({ offset: extStart, data: extArea });
  if (nameBytes !== null) writes.push({ offset: Number(h.backingFileOffset), data: nameBytes });
  // Refcount table entry 0 -> refcount block at 2cs (all refcounts zero unless patched).
  writes.push({ offset: Number(h.refcountTableOffset), data: be64(2 * cs) });
  const l1 = spec.l1 ?? new Array<bigint>(h.l1Size).fill(0n);
  if (l1.length > 0) writes.push({ offset: Number(h.l1TableOffset), data: cat(...l1.map((e) => be64(e))) });
  for (const t of spec.tables ?? []) writes.push({ offset: t.offset, data: cat(...t.entries.map((e) => be64(e))) });
  for (const p of spec.patches ?? []) writes.push(p);
  const end = Math.max(4 * cs, ...writes.map((w) => w.offset + w.data.length));
  const size = spec.fileSize ?? Math.ceil(end / cs) * cs;
  const out = new Uint8Array(size);
  for (const w of writes) if (w.offset < size) out.set(w.data.subarray(0, size - w.offset), w.offset);
  return out;
}

/** Standard L2 entry bits. */
export const COPIED = 1n << 63n;
export const COMPRESSED = 1n << 62n;
export const ZERO_FLAG = 1n;
