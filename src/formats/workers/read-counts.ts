/**
 * Reads made by descriptor on a thread that reads by fd (the workers, the output writer),
 * kept as [reads, bytes] per fd and reported as `[fd, reads, bytes]` triples, which the main
 * thread adds to the counters of the files behind those descriptors.
 */

/** `[fd, reads, bytes]`, as replies carry them. */
export type ReadCountList = readonly (readonly [number, number, number])[];

/** Reads per descriptor. */
export class ReadCounts {
  private readonly byFd = new Map<number, [number, number]>();

  /** Counts `reads` reads (one by default) of `bytes` bytes in all on `fd`. */
  add(fd: number, bytes: number, reads = 1): void {
    const c = this.byFd.get(fd);
    if (c === undefined) this.byFd.set(fd, [reads, bytes]);
    else {
      c[0] += reads;
      c[1] += bytes;
    }
  }

  /** Adds the counts of a list. */
  addList(list: ReadCountList): void {
    for (const [fd, reads, bytes] of list) this.add(fd, bytes, reads);
  }

  /** The counts as a list. */
  list(): ReadCountList {
    return [...this.byFd].map(([fd, [reads, bytes]]) => [fd, reads, bytes] as const);
  }
}
