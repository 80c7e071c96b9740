/**
 * `vdisk snapshot -l FILE`: the internal snapshot table exactly as `qemu-img snapshot -l`
 * prints it (`dump_snapshots`): nothing when the image has no snapshots (or is raw), else
 * `Snapshot list:`, the header and one row per snapshot, in table order.
 */
import type { Image } from '../../image.js';
import type { SnapshotInfo } from '../../status/image-info.js';
import { snapshotHeader, snapshotRow } from '../format/info-human.js';
import type { Output } from '../output.js';

/** The text of `qemu-img snapshot -l`. */
export function snapshotListText(snapshots: readonly SnapshotInfo[]): string {
  if (snapshots.length === 0) return '';
  let s = `Snapshot list:\n${snapshotHeader()}\n`;
  for (const sn of snapshots) s += `${snapshotRow(sn)}\n`;
  return s;
}

/** Runs `snapshot -l`. */
export async function runSnapshotList(img: Image, out: Output): Promise<void> {
  await out.write(snapshotListText(await img.snapshots()));
}
