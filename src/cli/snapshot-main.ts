/**
 * The entry of vdisk's start-up snapshot (scripts/build-cli.mjs): bundled as one
 * CommonJS script, run once by `node --build-snapshot` at build time, which saves the V8 heap
 * with every module of the CLI loaded. The `vdisk` launcher (vdisk.sh) starts Node from that
 * heap (`node --snapshot-blob vdisk.blob DIR ARGS…`, DIR being this directory), so that a
 * command skips loading and compiling the modules: 10–15 ms of a 40–50 ms start here.
 *
 * Nothing that depends on the run may happen at load time (no file, environment or
 * process state is read until `main` runs); `import.meta.url` is, in this bundle, the
 * run's `globalThis.vdiskModuleUrl`, set here from DIR before anything asks for it.
 *
 * When the build names a warm-up image (`VDISK_SNAPSHOT_WARMUP`, images/chain-top.qcow2),
 * the CLI's commands run on it before the heap is saved (snapshot-warmup.ts), so that the
 * snapshot holds their functions compiled; a failed warm-up fails the snapshot's build.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { startupSnapshot } from 'node:v8';
import { main } from './main.js';
import { warmUp } from './snapshot-warmup.js';
import { watchStdoutErrors } from './stdout-errors.js';
import { finish } from './finish.js';

/** Where `import.meta.url` points in this bundle. */
function setModuleUrl(dir: string): void {
  (globalThis as { vdiskModuleUrl?: string }).vdiskModuleUrl = pathToFileURL(path.join(path.resolve(dir), 'vdisk.cjs')).href;
}

const warmUpImage = startupSnapshot.isBuildingSnapshot() ? process.env['VDISK_SNAPSHOT_WARMUP'] : undefined;
if (warmUpImage !== undefined && warmUpImage !== '') {
  // At build time: this script is process.argv[1].
  setModuleUrl(path.dirname(process.argv[1] ?? '.'));
  let finished = false;
  // Node saves the heap once the event loop is empty: a warm-up that never settled would be
  // saved half done. Exiting here fails the build (a throw would not).
  startupSnapshot.addSerializeCallback(() => {
    if (finished) return;
    process.stderr.write('snapshot warm-up failed: it had not finished when the heap was saved\n');
    process.exit(1);
  });
  warmUp(warmUpImage).then(
    () => {
      finished = true;
      delete (globalThis as { vdiskModuleUrl?: string }).vdiskModuleUrl;
    },
    (e: unknown) => {
      process.stderr.write(`snapshot warm-up failed: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}

startupSnapshot.setDeserializeMainFunction(() => {
  setModuleUrl(process.argv[1] ?? '.');
  watchStdoutErrors();
  void main(process.argv.slice(2)).then(finish);
});
