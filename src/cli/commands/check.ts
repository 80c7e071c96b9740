/**
 * `vdisk check [--output=human|json] FILE`: `qemu-img check` 7.2 without repair. The
 * findings go to stderr in QEMU's words; stdout gets qemu-img's summary (human) or its
 * `ImageCheck` object (JSON, QDict key order); the exit status is qemu-img's: 0 clean,
 * 2 corruptions, 3 leaks only, 1 when the check itself failed, 63 for raw images.
 */
import type { Image } from '../../image.js';
import { checkImage, type CheckResult } from '../../ops/check.js';
import { qemuJson } from '../format/qemu-json.js';
import type { Output } from '../output.js';

/** `%0.2f` as glibc prints a double (round half to even on the exact value). */
export function fixed2(x: number): string {
  // A double is exactly halfway between two hundredths only when it is an odd multiple of 1/8.
  if (Number.isInteger(x * 8) && !Number.isInteger(x * 4)) {
    let r = Math.floor(x * 100);
    if (r % 2 !== 0) r++;
    return `${Math.floor(r / 100)}.${String(r % 100).padStart(2, '0')}`;
  }
  return x.toFixed(2);
}

/** `dump_human_image_check`. */
export function checkHuman(r: CheckResult): string {
  const c = r.counts;
  let s = '';
  if (c.corruptions === 0 && c.leaks === 0 && c.checkErrors === 0) {
    s += 'No errors were found on the image.\n';
  } else {
    if (c.corruptions !== 0) {
      s += `\n${c.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (c.leaks !== 0) {
      s += `\n${c.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    }
    if (c.checkErrors !== 0) s += `\n${c.checkErrors} internal errors have occurred during the check.\n`;
  }
  if (c.totalClusters !== 0 && c.allocatedClusters !== 0) {
    s += `${c.allocatedClusters}/${c.totalClusters} = ${fixed2((c.allocatedClusters * 100) / c.totalClusters)}% allocated, ` +
      `${fixed2((c.fragmentedClusters * 100) / c.allocatedClusters)}% fragmented, ` +
      `${fixed2((c.compressedClusters * 100) / c.allocatedClusters)}% compressed clusters\n`;
  }
  if (c.imageEndOffset !== 0) s += `Image end offset: ${c.imageEndOffset}\n`;
  return s;
}

/** `dump_json_image_check`: the `ImageCheck` object, optional members only when non-zero. */
export function checkJson(r: CheckResult): string {
  const c = r.counts;
  const opt = (v: number): number | undefined => (v !== 0 ? v : undefined);
  const obj = {
    filename: r.filename,
    format: r.format,
    'check-errors': c.checkErrors,
    'image-end-offset': opt(c.imageEndOffset),
    corruptions: opt(c.corruptions),
    leaks: opt(c.leaks),
    'total-clusters': opt(c.totalClusters),
    'allocated-clusters': opt(c.allocatedClusters),
    'fragmented-clusters': opt(c.fragmentedClusters),
    'compressed-clusters': opt(c.compressedClusters),
  };
  return qemuJson(obj) + '\n';
}

/** Runs the check; returns qemu-img's exit status. Findings go to `err` as they come. */
export async function runCheck(img: Image, output: 'human' | 'json', out: Output, err: (line: string) => void, errRaw: (text: string) => void = err): Promise<number> {
  const r = await checkImage(img, { onMessage: err, onWarning: (w) => err(`vdisk: ${w}`), onRaw: errRaw });
  if (r.failure === null) await out.write(output === 'json' ? checkJson(r) : checkHuman(r));
  if (r.failure !== null || r.counts.checkErrors !== 0) {
    err(`vdisk: CHECK_FAILED: Check failed${r.failure === null ? '' : `: ${r.failure}`}`);
    return 1;
  }
  if (r.counts.corruptions !== 0) return 2;
  return r.counts.leaks !== 0 ? 3 : 0;
}
