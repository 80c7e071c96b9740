/**
 * One layer of an opened chain: a driver, the layer below it, and its display name.
 */
import type { BlockDriver } from '../formats/driver.js';
import type { RandomAccessFile } from '../io/random-access-file.js';
import { RawDriver } from '../formats/raw/raw-driver.js';

/** A layer of the chain, top first. */
export class ChainNode {
  /** Protocol nodes for files this layer's answers point into (for RECURSE probes). */
  private readonly fileNodes = new Map<RandomAccessFile, ChainNode>();
  /** The layer below (backing file), or null at the bottom or when not opened. */
  backing: ChainNode | null = null;

  constructor(
    readonly driver: BlockDriver,
    /** The name QEMU would give this layer's file (the path as given, or path-combined). */
    readonly filename: string,
    /** 0 for the top layer, 1 for its backing file, … */
    readonly index: number,
    /** Whether this layer's backing file was deliberately not opened (info-only opens). */
    readonly backingSkipped = false,
  ) {}

  /** The protocol node (file-posix semantics) over `file`, created once. */
  fileNode(file: RandomAccessFile): ChainNode {
    let n = this.fileNodes.get(file);
    if (n === undefined) {
      n = new ChainNode(new RawDriver(file), file.path, this.index);
      this.fileNodes.set(file, n);
    }
    return n;
  }

  /** All layers from this one down. */
  *layers(): Generator<ChainNode> {
    for (let n: ChainNode | null = this; n !== null; n = n.backing) yield n;
  }
}
