/**
 * `qemu-img info` facts of one layer (QEMU 7.2 `bdrv_query_image_info` and
 * `qcow2_get_specific_info`), as a plain object whose keys are qemu-img's JSON keys.
 */
import { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import {
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_ZSTD,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTL2,
} from '../formats/qcow2/constants.js';
import type { ChainNode } from './chain-node.js';
import { pathCombine } from './open-policy.js';

/** `ImageInfoSpecificQCow2`. */
export interface Qcow2SpecificInfo {
  compat: '0.10' | '1.1';
  'compression-type': 'zlib' | 'zstd';
  'lazy-refcounts'?: boolean;
  'refcount-bits': number;
  corrupt?: boolean;
  'extended-l2'?: boolean;
  'data-file'?: string;
  'data-file-raw'?: boolean;
  [key: string]: unknown;
}

/** `ImageInfo` as qemu-img 7.2 prints it. */
export interface ImageInfo {
  'virtual-size': number;
  filename: string;
  format: string;
  'cluster-size'?: number;
  'actual-size': number;
  'dirty-flag': boolean;
  encrypted?: boolean;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: unknown[];
  'format-specific'?: { type: 'qcow2'; data: Qcow2SpecificInfo };
}

/** Info of `node`'s layer (its backing file is described by name, not opened). */
export async function imageInfo(node: ChainNode): Promise<ImageInfo> {
  const d = node.driver;
  const info: ImageInfo = {
    'virtual-size': d.length,
    filename: node.filename,
    format: d.format,
    'actual-size': d.file.identity().allocatedBytes,
    'dirty-flag': false,
  };
  if (d instanceof Qcow2Driver) {
    const h = d.header;
    info['cluster-size'] = d.clusterSize;
    info['dirty-flag'] = (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
    if (d.backing !== null) {
      info['backing-filename'] = d.backing.name;
      info['full-backing-filename'] = pathCombine(node.filename, d.backing.name);
      if (d.backing.format !== null) info['backing-filename-format'] = d.backing.format;
    }
    const data: Qcow2SpecificInfo = {
      compat: h.version === 2 ? '0.10' : '1.1',
      'compression-type': h.compressionType === COMPRESSION_ZSTD ? 'zstd' : 'zlib',
      'refcount-bits': 2 ** h.refcountOrder,
    };
    if (h.version === 3) {
      data['lazy-refcounts'] = (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
      if (d.extensions.dataFile !== null) data['data-file'] = d.extensions.dataFile;
      if (d.hasDataFile) data['data-file-raw'] = d.dataFileRaw;
      data.corrupt = (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n;
      data['extended-l2'] = (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
    }
    info['format-specific'] = { type: 'qcow2', data };
  }
  return info;
}
