/**
 * The messages between the decode pool (decode-pool.ts) and its workers (decode-worker.ts).
 */

/** A batch of compressed clusters of one image to read and decode. */
export interface DecodeRequest {
  readonly id: number;
  /** Descriptor of the image file (open for as long as the batch runs). */
  readonly fd: number;
  readonly clusterSize: number;
  /** 0 zlib, 1 zstd. */
  readonly compressionType: number;
  /** Per cluster: payload host offset, payload length (clipped at the end of the file). */
  readonly jobs: Float64Array;
  /**
   * Where each cluster goes: a shared buffer and the byte offset in it, or null for the
   * reply's own buffer.
   */
  readonly targets: readonly (SharedArrayBuffer | null)[];
  readonly targetOffsets: Float64Array;
}

/**
 * The decoded batch: cluster `k` without a target is bytes `[k × clusterSize, (k + 1) ×
 * clusterSize)` of `buffer`; the others were written to their targets.
 */
export interface DecodeReply {
  readonly id: number;
  readonly buffer: ArrayBuffer;
  /** Clusters that failed (their bytes are undefined): a read (`io`) or the data itself. */
  readonly errors: readonly { readonly index: number; readonly io: boolean; readonly message: string }[];
  /** Reads made and bytes they returned (added to the file's counters). */
  readonly reads: number;
  readonly bytesRead: number;
}
