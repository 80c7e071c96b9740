/**
 * The start-up snapshot's code cache of Node's built-ins (scripts/snapshot-code-cache.mjs,
 * used by scripts/build-cli.mjs): the field is found only where a strict parse ends at the
 * blob's end, trimming keeps exactly the named entries and the bytes before the field, and
 * the built snapshot keeps the entries vdisk's threads load and drops the others.
 */
import { readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI_SNAPSHOT, REPO_ROOT } from '../helpers/cli.js';

interface Entry { readonly id: string; readonly start: number; readonly end: number }
interface CodeCacheModule {
  findCodeCache(buf: Buffer): { offset: number; entries: Entry[] } | null;
  trimCodeCache(buf: Buffer, keep: ReadonlySet<string>): { blob: Buffer; kept: number; dropped: number; droppedBytes: number } | null;
  namedBuiltins(sources: readonly string[], builtins: readonly string[]): string[];
}

let cc: CodeCacheModule;

beforeAll(async () => {
  cc = (await import(pathToFileURL(path.join(REPO_ROOT, 'scripts', 'snapshot-code-cache.mjs')).href)) as CodeCacheModule;
});

const MAGIC = 0xc0de05cc;

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(n, 0);
  return b;
}

/** A code cache vector of `entries` (id, payload length, the payload's first word). */
function vector(entries: ReadonlyArray<readonly [string, number, number?]>): Buffer {
  const parts = [u64(entries.length)];
  for (const [id, n, magic] of entries) {
    const data = Buffer.alloc(n, 0x5a);
    data.writeUInt32LE(magic ?? MAGIC, 0);
    parts.push(u64(id.length), Buffer.from(id, 'latin1'), u64(n), data);
  }
  return Buffer.concat(parts);
}

/** Bytes standing for the V8 blob and Node's other fields: small counts and text included. */
const PREFIX = Buffer.concat([Buffer.from('\x19\xda\x43\x01', 'latin1'), u64(3), Buffer.from('20.20.2'), u64(1), Buffer.alloc(300, 7), u64(0)]);

describe('snapshot code cache', () => {
  it('finds the field at the end and trims it to the named entries', () => {
    const blob = Buffer.concat([PREFIX, vector([['fs', 40], ['http', 900], ['internal/readline/emitKeypressEvents', 64], ['worker_threads', 33]])]);
    const found = cc.findCodeCache(blob);
    expect(found?.offset).toBe(PREFIX.length);
    expect(found?.entries.map((e) => e.id)).toEqual(['fs', 'http', 'internal/readline/emitKeypressEvents', 'worker_threads']);
    const t = cc.trimCodeCache(blob, new Set(['fs', 'worker_threads', 'zlib']));
    expect(t).not.toBeNull();
    expect(t?.blob).toEqual(Buffer.concat([PREFIX, vector([['fs', 40], ['worker_threads', 33]])]));
    expect({ kept: t?.kept, dropped: t?.dropped, droppedBytes: t?.droppedBytes }).toEqual({ kept: 2, dropped: 2, droppedBytes: blob.length - (t?.blob.length ?? 0) });
    expect(cc.findCodeCache(t?.blob ?? Buffer.alloc(0))?.entries.map((e) => e.id)).toEqual(['fs', 'worker_threads']);
  });

  it('leaves alone a blob that does not end with such a field', () => {
    const good = vector([['fs', 40], ['path', 50]]);
    const cases: ReadonlyArray<readonly [string, Buffer]> = [
      ['a byte past the field', Buffer.concat([PREFIX, good, Buffer.alloc(1)])],
      ['a byte short', Buffer.concat([PREFIX, good.subarray(0, good.length - 1)])],
      ['payloads with different magic words', Buffer.concat([PREFIX, vector([['fs', 40], ['path', 50, 0x12345678]])])],
      ['an id that is no module name', Buffer.concat([PREFIX, vector([['fs', 40], ['a b', 50]])])],
      ['no bytes', Buffer.alloc(0)],
    ];
    for (const [name, blob] of cases) {
      expect(cc.findCodeCache(blob), name).toBeNull();
      expect(cc.trimCodeCache(blob, new Set(['fs'])), name).toBeNull();
    }
  });

  it('names the built-ins a bundle requires, by either spelling, and no others', () => {
    const text = 'const a = require("node:fs"); const b = require("zlib"); const c = x("node:worker_threads"); require("koffi"); require("node:nope"); const v = require("node:v8");';
    expect(cc.namedBuiltins([text], builtinModules)).toEqual(['fs', 'v8', 'worker_threads', 'zlib']);
  });

  it('the built snapshot for worker threads keeps the code cache of what vdisk loads after its start, not of the rest; the other keeps none', () => {
    expect(cc.findCodeCache(readFileSync(CLI_SNAPSHOT))).toBeNull();
    const found = cc.findCodeCache(readFileSync(path.join(path.dirname(CLI_SNAPSHOT), 'vdisk-pool.blob')));
    expect(found).not.toBeNull();
    const ids = new Set(found?.entries.map((e) => e.id));
    // The pool's worker threads, zlib in a worker, the package resolver behind require('koffi').
    for (const id of ['worker_threads', 'internal/worker', 'internal/main/worker_thread', 'zlib', 'internal/modules/esm/resolve']) expect(ids.has(id), id).toBe(true);
    for (const id of ['http', 'https', 'tls', 'repl', 'internal/deps/undici/undici']) expect(ids.has(id), id).toBe(false);
  });
});
