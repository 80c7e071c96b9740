/**
 * The internal snapshots of a layer as `qemu-img snapshot -l` and `qemu-img info` list them
 * (`bdrv_snapshot_list`): table order, ids and names as QEMU's C strings. Raw layers have
 * none.
 */
import { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import { readSnapshotTable } from '../formats/qcow2/snapshots.js';
import type { ChainNode } from './chain-node.js';
import { snapshotInfo, type SnapshotInfo } from './image-info.js';

/** The snapshots of `node` (empty for raw layers). */
export async function listSnapshots(node: ChainNode): Promise<SnapshotInfo[]> {
  const d = node.driver;
  if (!(d instanceof Qcow2Driver)) return [];
  return (await readSnapshotTable(d.file, d.header)).map(snapshotInfo);
}
