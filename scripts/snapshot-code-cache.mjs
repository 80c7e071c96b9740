// The built-ins' code cache inside a Node start-up snapshot blob (used by build-cli.mjs).
//
// `node --build-snapshot` appends to the blob a V8 code cache for every one of Node's ~320
// built-in modules (2.7 MB of a 5.3 MB blob here), and Node reads and copies all of it at
// every start. vdisk's commands compile only a few built-ins after the start: those not in
// the snapshot's heap that a command loads late (worker_threads for the pool, the
// package-exports resolver behind `require('koffi')`, zlib) and those a worker thread
// loads (a worker starts from Node's own snapshot and compiles its modules with this
// cache). The others (http, tls, crypto, repl, ...) are never loaded: their entries are
// dropped.
//
// Layout (Node 20's SnapshotData::ToBlob, src/node_snapshotable.cc): the code cache is the
// blob's last field, a vector of CodeCacheInfo: entry count (u64), then per entry the id
// (u64 length + bytes) and the V8 cache (u64 length + bytes, each starting with the same
// V8 magic word). The field is found from the end: the one offset from which a strict
// parse ends exactly at the end of the blob. Anything else (another Node's layout) is
// left alone: `findCodeCache` returns null.

const MAX_ENTRIES = 4096;
const MAX_ID = 256;

/** Ids of Node built-in modules: path segments of letters, digits, '_', '.' and '-'. */
const ID = /^[A-Za-z_][A-Za-z0-9_]*(?:[/.-][A-Za-z0-9_]+)*$/u;

/**
 * The code cache field of the blob `buf`: its offset and its entries (`id`, and `start`,
 * `end` of the whole entry in `buf`), or null when `buf` does not end with one.
 * @param {Buffer} buf
 * @returns {{ offset: number, entries: { id: string, start: number, end: number }[] } | null}
 */
export function findCodeCache(buf) {
  // A u64 count below 2^32 has its high four bytes zero: only such offsets are tried.
  for (let at = buf.length - 8; at >= 0; at--) {
    if (buf.readUInt32LE(at + 4) !== 0) continue;
    const entries = parseEntries(buf, at);
    if (entries !== null) return { offset: at, entries };
  }
  return null;
}

/** The entries of a code cache vector at `at` if it parses exactly to the end of `buf`. */
function parseEntries(buf, at) {
  const count = readU64(buf, at);
  if (count === null || count === 0 || count > MAX_ENTRIES) return null;
  let p = at + 8;
  let magic = -1;
  const entries = [];
  for (let i = 0; i < count; i++) {
    const start = p;
    const idLength = readU64(buf, p);
    if (idLength === null || idLength === 0 || idLength > MAX_ID || p + 8 + idLength > buf.length) return null;
    const id = buf.toString('latin1', p + 8, p + 8 + idLength);
    if (!ID.test(id)) return null;
    p += 8 + idLength;
    const dataLength = readU64(buf, p);
    if (dataLength === null || dataLength < 4 || p + 8 + dataLength > buf.length) return null;
    const word = buf.readUInt32LE(p + 8);
    if (magic === -1) magic = word;
    else if (word !== magic) return null;
    p += 8 + dataLength;
    entries.push({ id, start, end: p });
  }
  return p === buf.length ? entries : null;
}

/** A u64 at `at` below 2^32, else null. */
function readU64(buf, at) {
  if (at + 8 > buf.length || buf.readUInt32LE(at + 4) !== 0) return null;
  return buf.readUInt32LE(at);
}

/**
 * `buf` with only the code cache entries whose id is in `keep`; null when `buf` has no
 * code cache field it recognises.
 * @param {Buffer} buf
 * @param {ReadonlySet<string>} keep
 * @returns {{ blob: Buffer, kept: number, dropped: number, droppedBytes: number } | null}
 */
export function trimCodeCache(buf, keep) {
  const cache = findCodeCache(buf);
  if (cache === null) return null;
  const kept = cache.entries.filter((e) => keep.has(e.id));
  const count = Buffer.alloc(8);
  count.writeUInt32LE(kept.length, 0);
  const blob = Buffer.concat([buf.subarray(0, cache.offset), count, ...kept.map((e) => buf.subarray(e.start, e.end))]);
  return { blob, kept: kept.length, dropped: cache.entries.length - kept.length, droppedBytes: buf.length - blob.length };
}

/**
 * The built-in modules named in `sources` (the bundles' text): `require("node:x")`,
 * `require("x")` and any `"node:x"` string, for x among Node's built-ins.
 * @param {readonly string[]} sources
 * @param {readonly string[]} builtins `module.builtinModules`
 * @returns {string[]}
 */
export function namedBuiltins(sources, builtins) {
  const known = new Set(builtins);
  const found = new Set();
  for (const text of sources) {
    for (const m of text.matchAll(/require\("(?:node:)?([a-z0-9_/]+)"\)|"node:([a-z0-9_/]+)"/gu)) {
      const name = m[1] ?? m[2] ?? '';
      if (known.has(name)) found.add(name);
    }
  }
  return [...found].sort();
}

/**
 * The probe that build-cli.mjs runs with `node -e`: it loads `names` (and resolves the
 * optional packages in `packages` from `dir`, as the CLI's `createRequire` does) on the
 * main thread and in a worker thread, and prints the ids of every built-in either thread
 * loaded, one per line.
 * @param {readonly string[]} names
 * @param {readonly string[]} packages
 * @param {string} dir
 */
export function probeScript(names, packages, dir) {
  const load = `for (const n of ${JSON.stringify(names)}) require(n);
for (const p of ${JSON.stringify(packages)}) { try { require('node:module').createRequire(${JSON.stringify(`${dir}/`)}).resolve(p); } catch {} }`;
  return `${load}
const { Worker } = require('node:worker_threads');
const ids = (list) => list.filter((l) => l.startsWith('NativeModule ')).map((l) => l.slice(13));
const w = new Worker(${JSON.stringify(`${load}\nrequire('node:worker_threads').parentPort.postMessage(process.moduleLoadList);`)}, { eval: true });
w.once('message', (list) => {
  process.stdout.write([...new Set([...ids(process.moduleLoadList), ...ids(list)])].join('\\n') + '\\n');
  w.terminate();
});
w.once('error', (e) => { console.error(e); process.exitCode = 1; });`;
}
