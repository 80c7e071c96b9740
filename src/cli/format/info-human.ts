/**
 * qemu-img info's human output (QEMU 7.2 `bdrv_image_info_dump`).
 */
import type { ImageInfo } from '../../status/image-info.js';

/** The human text of one image's info. */
export function infoHuman(info: ImageInfo): string {
  let s = `image: ${info.filename}\nfile format: ${info.format}\n`;
  s += `virtual size: ${info['virtual-size']} bytes\n`;
  return s;
}
