/**
 * `vdisk info`: qemu-img 7.2 `info` output, JSON or human, for one image or (with
 * `--backing-chain`) for every layer of its chain.
 *
 * As in qemu-img, the facts of every layer are collected before anything is printed, so
 * a broken layer prints nothing. JSON is one object, or an array of them for a chain;
 * human output separates layers with an empty line.
 */
import type { Image } from '../../image.js';
import type { ImageInfo } from '../../status/image-info.js';
import { imageInfo } from '../../status/image-info.js';
import { infoHuman } from '../format/info-human.js';
import { qemuJson } from '../format/qemu-json.js';
import type { Output } from '../output.js';

/** Options of the info command after parsing. */
export interface InfoCommandOptions {
  readonly output: 'human' | 'json';
  readonly backingChain: boolean;
}

/** Runs the info command on an opened image. */
export async function runInfo(img: Image, opts: InfoCommandOptions, out: Output): Promise<void> {
  const infos: ImageInfo[] = [];
  for (const node of opts.backingChain ? img.layers : [img.top]) infos.push(await imageInfo(node));
  if (opts.output === 'json') {
    await out.write(qemuJson(opts.backingChain ? infos : infos[0]) + '\n');
    return;
  }
  await out.write(infos.map((i) => infoHuman(i)).join('\n'));
}
