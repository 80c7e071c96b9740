/**
 * vdisk's public API: open qcow2 and raw images, query block status in mapping or
 * allocation mode over backing chains, list extents, read `qemu-img info` facts.
 */
export { openImage, Image } from './image.js';
export type { OpenOptions, BlockStatus, AllocationExtent, WorkCounters, ExtentOptions } from './image.js';
export type { MapEntry } from './status/map-entries.js';
export type { BitmapInfo, ChangedRun } from './status/bitmap-status.js';
export type { DirtyRun } from './formats/qcow2/bitmap-table.js';
export type { DataExtent, ContentRun, SourcedRun, DataExtentOptions } from './status/data-extents.js';
export { ChunkBuffers } from './status/chunk-buffers.js';
export type { ImageInfo, Qcow2SpecificInfo, SnapshotInfo } from './status/image-info.js';
export type { StatusMode, FormatName } from './formats/driver.js';
export {
  BDRV_BLOCK_DATA,
  BDRV_BLOCK_ZERO,
  BDRV_BLOCK_OFFSET_VALID,
  BDRV_BLOCK_ALLOCATED,
  BDRV_BLOCK_EOF,
} from './formats/driver.js';
export {
  VdiskError,
  NotThisFormatError,
  CorruptImageError,
  UnsupportedImageError,
  IoError,
  ShortReadError,
  PolicyError,
  InvalidArgumentError,
  isVdiskError,
} from './errors.js';
export type { ErrorDetails } from './errors.js';
