/**
 * The flat `qemu-img map` walk's kernel, in AssemblyScript (compiled to WebAssembly by the
 * build; loaded by src/status/flat-walk-kernel.ts). It walks a chain of standard-L2 qcow2
 * layers exactly as src/status/flat-map.ts does — per offset, each layer from the top, the
 * run found narrowing the query below, until a layer has DATA or ZERO; unallocated at the
 * bottom, or past the end of a shorter backing file, reads as ZERO — and merges the
 * answers with `entry_mergeable`'s rules into a batch of typed arrays, then encodes
 * batches as `qemu-img map --output=json` text or as the rows of its human table.
 *
 * Why a kernel: a map is over in tens of milliseconds, before V8's optimising compiler has
 * compiled the JavaScript walk; this code is compiled (Liftoff) in well under a millisecond.
 *
 * The kernel answers only what needs no judgement: unallocated, zero, normal and compressed
 * entries (data without a host offset, one cluster per query as QEMU answers them) of
 * standard L2 tables the JavaScript driver has loaded and checked (it copies each into the
 * layer's slot when asked: NEED). Anything else — an L1 or L2 offset of 2^53 or more or
 * unaligned, a zero flag in a version 2 image — stops the kernel (BAIL)
 * before the query that meets it; the JavaScript walk goes on from there with the merged
 * entry in progress, and reports what it finds in QEMU's words. It does no I/O and
 * allocates nothing: every region is laid out by the caller in this module's memory.
 *
 * Layer records (LAYER_BYTES each, from `layers`), written by the caller:
 *   +0 f64 virtual length in bytes     +8 i32 cluster_bits     +12 i32 qcow2 version
 *   +16 i32 L1 words pointer (hi, lo per entry, native order)  +20 i32 L1 entries
 *   +24 i32 L2 slot pointer (one table's words, native order)
 *   +32 i64 L2 offset of the table in the slot (-1: none)
 *   +40 f64 end of the layer's last unallocated run that ended early (-1: none)
 *   +48 i32 1 once the caller has said that the layer's mapping answers are final (its
 *           host file is not probed for holes: QEMU's metadata-preallocation rule); until
 *           then the first query of the layer returns ASK
 * Batch (capacity `cap`, from `batch`): start f64[cap], length f64[cap], offset f64[cap]
 * (-1: none), depth u32[cap], attrs u8[cap] — the layout of a MapBatch over this memory.
 */

/** Bytes per layer record. */
const LAYER_BYTES: i32 = 64;

/** walk() results. */
const DONE: i32 = 0;
const FULL: i32 = 1;
const NEED: i32 = 2;
const BAIL: i32 = 3;
const ASK: i32 = 4;

/** QEMU's probe size per query (qemu-img map's `get_block_status` asks at most 1 GiB). */
const PROBE_BYTES: i64 = 1 << 30;

/** Subcluster types (the values of SubclusterType in src/formats/qcow2/l2-entry.ts). */
const NORMAL: i32 = 0;
const COMPRESSED: i32 = 1;
const ZERO_PLAIN: i32 = 2;
const ZERO_ALLOC: i32 = 3;
const UNALLOCATED_PLAIN: i32 = 4;

/** MapBatch attrs bits. */
const MAP_PRESENT: i32 = 4;
const MAP_ZERO: i32 = 2;
const MAP_DATA: i32 = 1;

/** Entry word bits (constants.ts). */
const HI_COMPRESSED: u32 = 0x40000000;
const HI_OFFSET: u32 = 0x00ffffff;
const HI_UNSAFE: u32 = 0x00e00000;
const LO_OFFSET: u32 = 0xfffffe00;
/** Bits compared between neighbours of a run of host clusters (l2-runs.ts). */
const CONT_HI: u32 = 0x40ffffff;
const CONT_LO: u32 = 0xfffffe01;

let layers: usize = 0;
let nLayers: i32 = 0;
let batchStart: usize = 0;
let batchLength: usize = 0;
let batchOffset: usize = 0;
let batchDepth: usize = 0;
let batchAttrs: usize = 0;
let capacity: i32 = 0;

let pos: i64 = 0;
let end: i64 = 0;
let k: i32 = 0;
let cStart: i64 = 0;
let cLen: i64 = 0;
let cDepth: i32 = 0;
let cAttrs: i32 = 0;
let cOff: i64 = -1;
let queries: f64 = 0;
let needAt: i32 = 0;
let needOffset: i64 = 0;

/** The answer of the last lookup. */
let gType: i32 = 0;
let gBytes: i64 = 0;
let gHost: i64 = 0;

/** Sets the layer records and the batch up (see the module comment). */
export function setup(layersPtr: usize, layerCount: i32, batchPtr: usize, cap: i32): void {
  layers = layersPtr;
  nLayers = layerCount;
  capacity = cap;
  batchStart = batchPtr;
  batchLength = batchPtr + (<usize>cap << 3);
  batchOffset = batchPtr + (<usize>cap << 4);
  batchDepth = batchPtr + <usize>cap * 24;
  batchAttrs = batchDepth + (<usize>cap << 2);
}

/** Starts a walk of `[from, to)` (from < to). */
export function begin(from: f64, to: f64): void {
  pos = <i64>from;
  end = <i64>to;
  k = 0;
  cStart = pos;
  cLen = 0;
  cDepth = 0;
  cAttrs = 0;
  cOff = -1;
  queries = 0;
  for (let d = 0; d < nLayers; d++) {
    store<i64>(layer(d), -1, 32);
    store<f64>(layer(d), -1, 40);
    store<i32>(layer(d), 0, 48);
  }
}

@inline function layer(d: i32): usize {
  return layers + <usize>(d * LAYER_BYTES);
}

/**
 * The standard-L2 lookup of layer `d` at `at` for at most `n` bytes (QEMU
 * `qcow2_get_host_offset` and `count_contiguous_subclusters`): sets gType, gBytes, gHost
 * and returns DONE, or NEED (the table is not in the slot), or BAIL.
 */
function lookup(d: i32, at: i64, n: i64): i32 {
  const rec = layer(d);
  const cb = load<i32>(rec, 8);
  const cs: i64 = (<i64>1) << cb;
  const l2Bits = cb - 3;
  const l2Entries: i64 = (<i64>1) << l2Bits;
  const clusterIndex = at >> cb;
  const oic = at & (cs - 1);
  const l2Index = <i32>(clusterIndex & (l2Entries - 1));
  const l1Index = clusterIndex >> l2Bits;
  let need = n + oic;
  const avail = (l2Entries - <i64>l2Index) << cb;
  if (need > avail) need = avail;
  if (l1Index >= <i64>load<i32>(rec, 20)) {
    gType = UNALLOCATED_PLAIN;
    gBytes = need - oic;
    gHost = 0;
    return DONE;
  }
  const l1 = <usize>load<i32>(rec, 16) + (<usize>l1Index << 3);
  const l1Hi = load<u32>(l1);
  const l1Lo = load<u32>(l1, 4);
  if ((l1Hi & HI_OFFSET) == 0 && (l1Lo & LO_OFFSET) == 0) {
    gType = UNALLOCATED_PLAIN;
    gBytes = need - oic;
    gHost = 0;
    return DONE;
  }
  if ((l1Hi & HI_UNSAFE) != 0) return BAIL;
  const l2Offset = ((<i64>(l1Hi & HI_OFFSET)) << 32) | <i64>(l1Lo & LO_OFFSET);
  if ((l2Offset & (cs - 1)) != 0) return BAIL;
  if (load<i64>(rec, 32) != l2Offset) {
    needAt = d;
    needOffset = l2Offset;
    return NEED;
  }
  const words = <usize>load<i32>(rec, 24);
  const e = words + (<usize>l2Index << 3);
  const hi = load<u32>(e);
  const lo = load<u32>(e, 4);
  if ((hi & HI_COMPRESSED) != 0) {
    // One cluster, data without a host offset (the checks made when the table was loaded
    // are the only ones QEMU's lookup makes here: compressed clusters never come with an
    // external data file, which the kernel does not serve).
    let bytes = cs;
    if (bytes > need) bytes = need;
    gType = COMPRESSED;
    gBytes = bytes - oic;
    gHost = 0;
    return DONE;
  }
  const offsetZero = (hi & HI_OFFSET) == 0 && (lo & LO_OFFSET) == 0;
  let type: i32;
  if ((lo & 1) != 0) {
    if (load<i32>(rec, 12) < 3) return BAIL;
    type = offsetZero ? ZERO_PLAIN : ZERO_ALLOC;
  } else {
    type = offsetZero ? UNALLOCATED_PLAIN : NORMAL;
  }
  const nbClusters = (need + cs - 1) >> cb;
  let i: i64 = 1;
  let host: i64 = 0;
  if (type == NORMAL || type == ZERO_ALLOC) {
    if ((hi & HI_UNSAFE) != 0) return BAIL;
    host = ((<i64>(hi & HI_OFFSET)) << 32) | <i64>(lo & LO_OFFSET);
    if ((host & (cs - 1)) != 0) return BAIL;
    // The same flags (not compressed; the same zero flag), host clusters contiguous.
    const zeroBit: u32 = type == ZERO_ALLOC ? 1 : 0;
    let next = host + cs;
    let p = e + 8;
    while (i < nbClusters) {
      if ((load<u32>(p, 4) & CONT_LO) != ((<u32>next) | zeroBit) || (load<u32>(p) & CONT_HI) != <u32>(next >> 32)) break;
      next += cs;
      p += 8;
      i++;
    }
  } else {
    // The same cluster type: not compressed, the same zero flag, no host offset.
    const zeroBit: u32 = type == ZERO_PLAIN ? 1 : 0;
    let p = e + 8;
    while (i < nbClusters) {
      // All-zero entries (most of a sparse table) skipped four at a time while all four
      // are zero, then a 64-bit word at a time.
      if (zeroBit == 0) {
        while (i + 4 <= nbClusters && (load<u64>(p) | load<u64>(p, 8) | load<u64>(p, 16) | load<u64>(p, 24)) == 0) {
          p += 32;
          i += 4;
        }
        while (i < nbClusters && load<u64>(p) == 0) {
          p += 8;
          i++;
        }
        if (i == nbClusters) break;
      }
      const h = load<u32>(p);
      const l = load<u32>(p, 4);
      if ((h & (HI_COMPRESSED | HI_OFFSET)) != 0 || (l & (LO_OFFSET | 1)) != zeroBit) break;
      p += 8;
      i++;
    }
  }
  let bytes = i << cb;
  if (bytes > need) bytes = need;
  gType = type;
  gBytes = bytes - oic;
  gHost = type == NORMAL || type == ZERO_ALLOC ? host + oic : 0;
  return DONE;
}

/**
 * Walks on from where it stopped: DONE at the end of the span (the entry in progress is
 * still pending: see finish), FULL when the batch holds `capacity` entries (the caller
 * hands it on and calls resetCount), NEED when layer needLayer() wants the L2 table at
 * needTable() in its slot, ASK when layer needLayer() is queried before setReady, BAIL
 * when the JavaScript walk must go on from position().
 */
export function walk(): i32 {
  const bottom = nLayers - 1;
  while (pos < end) {
    let n = end - pos;
    if (n > PROBE_BYTES) n = PROBE_BYTES;
    let depth = 0;
    let attrs = 0;
    let pnum: i64 = 0;
    let off: i64 = -1;
    for (;;) {
      const rec = layer(depth);
      const len = <i64>load<f64>(rec);
      if (n > len - pos) n = len - pos;
      let t: i32;
      let bytes: i64;
      let map: i64 = 0;
      if (load<i32>(rec, 48) == 0) {
        needAt = depth;
        return ASK;
      }
      const memoEnd = <i64>load<f64>(rec, 40);
      if (pos < memoEnd) {
        // Inside this layer's last unallocated run: the driver would answer its remainder.
        t = UNALLOCATED_PLAIN;
        bytes = memoEnd - pos;
      } else {
        const r = lookup(depth, pos, n);
        if (r != DONE) return r;
        queries++;
        t = gType;
        bytes = gBytes;
        map = gHost;
        if (bytes < n && t == UNALLOCATED_PLAIN) store<f64>(rec, <f64>(pos + bytes), 40);
      }
      const hasOffset = t == NORMAL || t == ZERO_ALLOC;
      let zero = t == ZERO_PLAIN || t == ZERO_ALLOC;
      const data = t == NORMAL || t == COMPRESSED;
      pnum = bytes < n ? bytes : n;
      const present = zero || data;
      if (!present) {
        if (depth == bottom || pos >= <i64>load<f64>(layer(depth + 1))) {
          zero = true;
        } else {
          n = pnum;
          depth++;
          continue;
        }
      }
      attrs = (present ? MAP_PRESENT : 0) | (zero ? MAP_ZERO : 0) | (data ? MAP_DATA : 0);
      off = hasOffset ? map : -1;
      break;
    }
    // No progress (cannot happen with consistent layer records): never loop, let the
    // JavaScript walk judge.
    if (pnum <= 0) return BAIL;
    let full = false;
    if (cLen > 0 && cDepth == depth && cAttrs == attrs && (cOff < 0) == (off < 0) && (off < 0 || cOff + cLen == off)) {
      cLen += pnum;
    } else {
      if (cLen > 0) {
        put(k);
        full = ++k == capacity;
      }
      cStart = pos;
      cLen = pnum;
      cDepth = depth;
      cAttrs = attrs;
      cOff = off;
    }
    pos += pnum;
    if (full) return FULL;
  }
  return DONE;
}

/** Stores the entry in progress at batch index `i`. */
function put(i: i32): void {
  const o = <usize>i << 3;
  store<f64>(batchStart + o, <f64>cStart);
  store<f64>(batchLength + o, <f64>cLen);
  store<f64>(batchOffset + o, <f64>cOff);
  store<u32>(batchDepth + (<usize>i << 2), cDepth);
  store<u8>(batchAttrs + <usize>i, <u8>cAttrs);
}

/** After DONE: stores the entry in progress as the batch's last; returns the count. */
export function finish(): i32 {
  put(k);
  return ++k;
}

/** Entries in the batch. */
export function count(): i32 {
  return k;
}

/** Empties the batch (after the caller has handed it on). */
export function resetCount(): void {
  k = 0;
}

/** The layer whose slot must hold needTable() (after NEED). */
export function needLayer(): i32 {
  return needAt;
}

/** The L2 table offset wanted (after NEED). */
export function needTable(): f64 {
  return <f64>needOffset;
}

/** Records that layer `d`'s slot now holds the table at `l2Offset`. */
export function setSlot(d: i32, l2Offset: f64): void {
  store<i64>(layer(d), <i64>l2Offset, 32);
}

/** Records that layer `d`'s mapping answers are final (see the layer record's +48). */
export function setReady(d: i32): void {
  store<i32>(layer(d), 1, 48);
}

/** Where the walk stands (after BAIL: where the JavaScript walk goes on). */
export function position(): f64 {
  return <f64>pos;
}

/** The entry in progress (its length is 0 before the first). */
export function pendingStart(): f64 {
  return <f64>cStart;
}
export function pendingLength(): f64 {
  return <f64>cLen;
}
export function pendingDepth(): i32 {
  return cDepth;
}
export function pendingAttrs(): i32 {
  return cAttrs;
}
export function pendingOffset(): f64 {
  return <f64>cOff;
}

/** Lookups made (the driver calls the JavaScript walk would count). */
export function lookups(): f64 {
  return queries;
}

// ---- JSON text -------------------------------------------------------------------------

/** "00".."99", then the fixed texts (built by initText). */
const TEXT_BYTES: i32 = 2048;
const text = memory.data(TEXT_BYTES);
/** Offsets in `text`: pairs at 0; the rest set by initText. */
let tSepStart: usize = 0;
let tSepStartLen: i32 = 0;
let tLength: usize = 0;
let tLengthLen: i32 = 0;
let tDepth: usize = 0;
let tDepthLen: i32 = 0;
/** Per attrs (0..7) and offset (0/1): the flags text, then `}` or `, "offset": `. */
const tFlags = memory.data(16 * 8);
let textReady = false;

function putText(p: usize, s: string): usize {
  for (let i = 0; i < s.length; i++) store<u8>(p + <usize>i, <u8>s.charCodeAt(i));
  return p + <usize>s.length;
}

function initText(): void {
  let p = text;
  for (let i = 0; i < 100; i++) {
    store<u8>(p, <u8>(48 + i / 10));
    store<u8>(p + 1, <u8>(48 + i % 10));
    p += 2;
  }
  tSepStart = p;
  p = putText(p, ',\n{ "start": ');
  tSepStartLen = <i32>(p - tSepStart);
  tLength = p;
  p = putText(p, ', "length": ');
  tLengthLen = <i32>(p - tLength);
  tDepth = p;
  p = putText(p, ', "depth": ');
  tDepthLen = <i32>(p - tDepth);
  for (let a = 0; a < 8; a++) {
    for (let o = 0; o < 2; o++) {
      const from = p;
      p = putText(p, ', "present": ');
      p = putText(p, (a & MAP_PRESENT) != 0 ? 'true' : 'false');
      p = putText(p, ', "zero": ');
      p = putText(p, (a & MAP_ZERO) != 0 ? 'true' : 'false');
      p = putText(p, ', "data": ');
      p = putText(p, (a & MAP_DATA) != 0 ? 'true' : 'false');
      p = putText(p, o == 0 ? '}' : ', "offset": ');
      const slot = tFlags + <usize>((a * 2 + o) * 8);
      store<u32>(slot, <u32>from);
      store<u32>(slot, <u32>(p - from), 4);
    }
  }
  textReady = true;
}

/**
 * Copies `n` bytes (a fixed text, under 64) eight at a time, writing up to seven bytes past
 * `dst + n` (inside the entry's room) and reading as far past `src + n` (inside `text`):
 * `memory.copy` is a call out of the compiled code for each of the five texts of an entry.
 */
@inline function copyText(dst: usize, src: usize, n: usize): void {
  for (let i: usize = 0; i < n; i += 8) store<u64>(dst + i, load<u64>(src + i));
}

/** `n / 100` for any u32 `n`, without a division. */
@inline function div100(n: u32): u32 {
  return <u32>((<u64>n * 1374389535) >> 37);
}

/** Writes `n` (< 10^8) in decimal at `p`; returns the end. */
function putSmall(p: usize, n: u32): usize {
  const digits: usize = n < 10000
    ? (n < 100 ? (n < 10 ? 1 : 2) : n < 1000 ? 3 : 4)
    : n < 1000000 ? (n < 100000 ? 5 : 6) : n < 10000000 ? 7 : 8;
  const e = p + digits;
  let q = e;
  while (n >= 100) {
    const t = div100(n);
    q -= 2;
    store<u16>(q, load<u16>(text + (<usize>(n - t * 100) << 1)));
    n = t;
  }
  if (n >= 10) {
    q -= 2;
    store<u16>(q, load<u16>(text + (<usize>n << 1)));
  } else {
    store<u8>(q - 1, <u8>(48 + n));
  }
  return e;
}

/** Writes `n` (< 10^8) as exactly eight digits at `p`; returns the end. */
function putEight(p: usize, n: u32): usize {
  for (let q = p + 8; q > p; q -= 2) {
    const t = div100(n);
    store<u16>(q - 2, load<u16>(text + (<usize>(n - t * 100) << 1)));
    n = t;
  }
  return p + 8;
}

/** Writes `v` (< 2^53) in decimal at `p`; returns the end. */
function putUint(p: usize, v: u64): usize {
  if (v < 100000000) return putSmall(p, <u32>v);
  const hi = v / 100000000;
  return putEight(putSmall(p, <u32>hi), <u32>(v - hi * 100000000));
}

/**
 * Encodes batch entries `[from, to)` as qemu-img's JSON map lines at `out`; `first` says
 * entry `from` opens the list (no `,\n` before it). Returns the end. The caller leaves
 * room for MAX_ENTRY_BYTES (256) per entry.
 */
export function encodeJson(from: i32, to: i32, first: bool, out: usize): usize {
  if (!textReady) initText();
  let p = out;
  for (let i = from; i < to; i++) {
    if (first && i == from) {
      copyText(p, tSepStart + 2, <usize>(tSepStartLen - 2));
      p += <usize>(tSepStartLen - 2);
    } else {
      copyText(p, tSepStart, <usize>tSepStartLen);
      p += <usize>tSepStartLen;
    }
    const o = <usize>i << 3;
    p = putUint(p, <u64>load<f64>(batchStart + o));
    copyText(p, tLength, <usize>tLengthLen);
    p += <usize>tLengthLen;
    p = putUint(p, <u64>load<f64>(batchLength + o));
    copyText(p, tDepth, <usize>tDepthLen);
    p += <usize>tDepthLen;
    p = putUint(p, <u64>load<u32>(batchDepth + (<usize>i << 2)));
    const off = load<f64>(batchOffset + o);
    const a = <i32>load<u8>(batchAttrs + <usize>i);
    const slot = tFlags + <usize>((a * 2 + (off < 0 ? 0 : 1)) * 8);
    const tn = <usize>load<u32>(slot, 4);
    copyText(p, <usize>load<u32>(slot), tn);
    p += tn;
    if (off >= 0) {
      p = putUint(p, <u64>off);
      store<u8>(p, 0x7d);
      p++;
    }
  }
  return p;
}

// ---- The human table ------------------------------------------------------------------

/** Index of the entry {@link encodeHuman} stopped at (data without an offset), else -1. */
let humanStop: i32 = -1;

/** Writes `v` (< 2^53) as C's `%#-16x` at `p` (16 columns); returns the end. */
function putHexColumn(p: usize, v: u64): usize {
  const end = p + 16;
  if (v == 0) {
    store<u8>(p, 48);
    p++;
  } else {
    const digits = <usize>((67 - clz<u64>(v)) >> 2);
    store<u16>(p, 0x7830); // "0x"
    p += 2;
    let q = p + digits;
    p = q;
    while (v != 0) {
      const d = <u32>(v & 15);
      store<u8>(--q, <u8>(d < 10 ? 48 + d : 87 + d));
      v >>= 4;
    }
  }
  while (p < end) store<u8>(p++, 32);
  return end;
}

/**
 * Encodes the rows of qemu-img's human map table for batch entries `[from, to)` at `out`:
 * one per plain data entry (data, not zero) — start, length and offset as `%#-16x`, then
 * the name of the entry's layer's host file and a newline, from `names` (per depth: u32
 * address, u32 length; the bytes end with the newline). Stops before a data entry without
 * an offset, which fails the table ({@link humanStopped}). Returns the end; the caller
 * leaves room for 48 bytes and the longest name per entry.
 */
export function encodeHuman(from: i32, to: i32, names: usize, out: usize): usize {
  humanStop = -1;
  let p = out;
  for (let i = from; i < to; i++) {
    const a = <i32>load<u8>(batchAttrs + <usize>i);
    if ((a & MAP_DATA) == 0) continue;
    const o = <usize>i << 3;
    const off = load<f64>(batchOffset + o);
    if (off < 0) {
      humanStop = i;
      return p;
    }
    if ((a & MAP_ZERO) != 0) continue;
    p = putHexColumn(p, <u64>load<f64>(batchStart + o));
    p = putHexColumn(p, <u64>load<f64>(batchLength + o));
    p = putHexColumn(p, <u64>off);
    const name = names + (<usize>load<u32>(batchDepth + (<usize>i << 2)) << 3);
    const n = <usize>load<u32>(name, 4);
    memory.copy(p, <usize>load<u32>(name), n);
    p += n;
  }
  return p;
}

/** Where the last {@link encodeHuman} stopped: the index of a data entry without an offset, or -1. */
export function humanStopped(): i32 {
  return humanStop;
}

/** First byte free for the caller's regions. */
export function heapBase(): usize {
  return __heap_base;
}
