/**
 * Process-level state that must not be saved in a start-up snapshot. The CLI's snapshot
 * (src/cli/snapshot-main.ts) is built after a warm-up run of its commands, so that the
 * functions they run are saved compiled; objects made on the way that a snapshot cannot
 * hold or should not carry into a run — compiled WebAssembly modules and their instances,
 * an FFI binding, the zstd decoder chosen, counters — are dropped when the heap is saved,
 * to be made again at first use in the run. Outside a snapshot build, registering does
 * nothing.
 */
import { startupSnapshot } from 'node:v8';

/** Runs `drop` just before the heap is saved, when this process builds a start-up snapshot. */
export function dropBeforeSnapshot(drop: () => void): void {
  if (startupSnapshot.isBuildingSnapshot()) startupSnapshot.addSerializeCallback(drop);
}
