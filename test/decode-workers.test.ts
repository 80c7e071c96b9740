/**
 * Compressed clusters decoded on worker threads (workers/pool.ts), through the built package
 * (`dist/`, where the worker module exists): long runs of zlib and zstd clusters converted
 * by the CLI on the workers (convert-parallel.ts), without them (`VDISK_DECODE_WORKERS=0`:
 * decoded and copied on the main thread) and with the WebAssembly
 * zstd decoder (`VDISK_ZSTD=wasm`) give qemu-img's bytes; the library reports that the
 * workers did decode; a corrupt payload in the middle of such a run is the same typed
 * error either way, and leaves no output. Skipped, with a warning, without qemu-img.
 */
import { readFile, open, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, run, runVdisk } from './helpers/cli.js';
import { hasTool } from './helpers/qemu.js';
import { makeTempDir, removeTempDir } from './helpers/tmp.js';

const hasQemu = hasTool('qemu-img');
if (!hasQemu) console.warn('decode-workers.test.ts: SKIPPED: qemu-img not found, worker decoding was NOT compared with QEMU');

let dir = '';

async function sh(script: string): Promise<void> {
  const r = await run('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, timeoutMs: 120_000 });
  if (r.status !== 0) throw new Error(`script failed (${r.status}): ${r.stderr}\n${script}`);
}

// 300 clusters of 64 KiB (far more than the 64 decoded inline before the pool starts) of
// compressible but varied data: text repeated with a counter, and a stretch of zeroes; a
// virtual size of 100 MiB, so that convert copies on the workers too.
const SETUP = String.raw`
python3 - <<'PY'
import hashlib
with open('src.raw', 'wb') as f:
    for i in range(300 * 64):
        line = (hashlib.sha256(str(i).encode()).hexdigest() * 16)[: 1024 - 8].encode() + b'%07d\n' % i
        f.write(line if not (5000 <= i < 5200) else bytes(1024))
PY
truncate -s 100M src.raw
qemu-img convert -q -c -f raw -O qcow2 src.raw zlib.qcow2
qemu-img convert -q -c -f raw -O qcow2 -o compression_type=zstd src.raw zstd.qcow2
# Over the zstd image, zeroes every 256 KiB: its data becomes 72 short runs of compressed
# clusters, several to a conversion chunk (each a piece of it).
qemu-img create -q -f qcow2 -b zstd.qcow2 -F qcow2 holes.qcow2
set --; for i in $(seq 0 71); do set -- "$@" -c "write -z $((i * 256 + 64))k 64k"; done
qemu-io -f qcow2 "$@" holes.qcow2 > /dev/null
qemu-img convert -q -f qcow2 -O raw holes.qcow2 holes.raw
`;

beforeAll(async () => {
  if (!hasQemu) return;
  dir = await makeTempDir('decode-workers-');
  await sh(SETUP);
}, 120_000);

afterAll(async () => {
  if (dir !== '') await removeTempDir(dir);
});

const MODES: readonly [string, NodeJS.ProcessEnv][] = [
  ['workers', {}],
  ['inline', { VDISK_DECODE_WORKERS: '0' }],
  ['wasm zstd on workers', { VDISK_ZSTD: 'wasm' }],
];

describe('zstd decoder choice', () => {
  const probe = async (env: NodeJS.ProcessEnv): Promise<string> => {
    const zstd = pathToFileURL(path.join(REPO_ROOT, 'dist', 'formats', 'qcow2', 'zstd.js')).href;
    const r = await run(process.execPath, ['--input-type=module', '-e', `const z = await import(${JSON.stringify(zstd)}); await z.loadZstd(); console.log(z.zstdBackend());`], { env: { ...process.env, ...env } });
    expect(r.status, r.stderr).toBe(0);
    return r.stdout.trim();
  };
  let nativeInstalled = true;
  try {
    createRequire(import.meta.url)('zstd-napi/binding');
  } catch {
    nativeInstalled = false;
    console.warn('decode-workers.test.ts: zstd-napi is not built here; only the WebAssembly zstd decoder is tested');
  }

  it(`uses ${nativeInstalled ? 'libzstd (zstd-napi)' : 'the WebAssembly build'} by default, the WebAssembly build with VDISK_ZSTD=wasm`, async () => {
    expect(await probe({})).toBe(nativeInstalled ? 'native' : 'wasm');
    expect(await probe({ VDISK_ZSTD: 'wasm' })).toBe('wasm');
  });
});

describe.skipIf(!hasQemu)('compressed clusters on decode workers', () => {
  for (const img of ['zlib.qcow2', 'zstd.qcow2']) {
    for (const [mode, env] of MODES) {
      it(`convert ${img} (${mode}) gives the source bytes`, async () => {
        const out = path.join(dir, `${img}.${mode.replace(/ /g, '-')}.raw`);
        const r = await runVdisk(['convert', '-f', 'qcow2', '-O', 'raw', img, out], { cwd: dir, env: { ...process.env, ...env } });
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
        expect((await readFile(out)).equals(await readFile(path.join(dir, 'src.raw')))).toBe(true);
      }, 60_000);
    }
  }

  for (const [mode, env] of MODES) {
    it(`convert of short compressed runs, several to a chunk (${mode}), gives qemu-img's bytes`, async () => {
      const out = path.join(dir, `holes.${mode.replace(/ /g, '-')}.raw`);
      const r = await runVdisk(['convert', '-f', 'qcow2', '-O', 'raw', 'holes.qcow2', out], { cwd: dir, env: { ...process.env, ...env } });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect((await readFile(out)).equals(await readFile(path.join(dir, 'holes.raw')))).toBe(true);
    }, 60_000);
  }

  it('the library decodes on workers into shared chunk buffers, and counts their reads', async () => {
    const lib = (await import(pathToFileURL(path.join(REPO_ROOT, 'dist', 'index.js')).href)) as typeof import('../src/index.js');
    const pool = (await import(pathToFileURL(path.join(REPO_ROOT, 'dist', 'formats', 'workers', 'pool.js')).href)) as typeof import('../src/formats/workers/pool.js');
    const src = await readFile(path.join(dir, 'src.raw'));
    for (const img of ['zlib.qcow2', 'zstd.qcow2']) {
      const before = pool.decodeStats();
      const image = await lib.openImage(path.join(dir, img), { format: 'qcow2' });
      try {
        // dataExtents with shared chunk buffers: the workers decode straight into them.
        const got = Buffer.alloc(src.length);
        const buffers = new lib.ChunkBuffers(1 << 20);
        for await (const e of image.dataExtents({ chunkSize: 1 << 20, buffers })) {
          got.set(e.data, e.start);
          buffers.give(e.data);
        }
        expect(got.equals(src)).toBe(true);
        // The workers' reads count (a few spans, not one read per cluster).
        expect(image.counters().metadataBytesRead).toBeGreaterThan((await stat(path.join(dir, img))).size / 2);
      } finally {
        await image.close();
      }
      const after = pool.decodeStats();
      expect(after.broken).toBe(false);
      expect(after.workers).toBe(2);
      expect(after.onWorkers - before.onWorkers).toBeGreaterThan(200);
    }
  }, 60_000);

  for (const [mode, env] of MODES) {
    it(`a corrupt payload in the middle is QCOW2_COMPRESSED_DATA (${mode}), no output left`, async () => {
      const bad = path.join(dir, `bad-${mode.replace(/ /g, '-')}.qcow2`);
      await sh(`cp zlib.qcow2 ${path.basename(bad)}`);
      const size = (await stat(bad)).size;
      const fh = await open(bad, 'r+');
      await fh.write(Buffer.alloc(4096, 0xa5), 0, 4096, Math.floor((size * 0.6) / 512) * 512);
      await fh.close();
      const out = path.join(dir, `bad-${mode.replace(/ /g, '-')}.raw`);
      const r = await runVdisk(['convert', '-f', 'qcow2', '-O', 'raw', bad, out], { cwd: dir, env: { ...process.env, ...env } });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/^vdisk: QCOW2_COMPRESSED_DATA: compressed cluster at guest offset \d+/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      await expect(stat(out)).rejects.toMatchObject({ code: 'ENOENT' });
    }, 60_000);
  }
});
