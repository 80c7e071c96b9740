// Compiles the WebAssembly kernels (run by `npm run build`, after tsc), written in
// AssemblyScript, to dist/wasm/NAME.wasm (loaded by src/io/wasm-kernel.ts): wasm/flat-walk.ts,
// the flat map walk (src/status/flat-walk-kernel.ts), and wasm/table-scan.ts, the scans of
// L2 tables and refcount blocks (src/formats/qcow2/table-scan.ts). No runtime (the kernel allocates nothing), no
// assertions (every check the walk needs is in the code), optimised.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import asc from 'assemblyscript/asc';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist', 'wasm');
mkdirSync(out, { recursive: true });
for (const name of ['flat-walk', 'table-scan']) {
  const { error, stderr } = await asc.main([
    path.join(root, 'wasm', `${name}.ts`),
    '--outFile', path.join(out, `${name}.wasm`),
    '--runtime', 'stub', '--noAssert', '-O3',
  ]);
  if (error) {
    console.error(`build-wasm: ${name}: ${error.message}\n${stderr.toString()}`);
    process.exit(1);
  }
}
