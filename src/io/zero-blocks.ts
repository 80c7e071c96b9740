/**
 * Which parts of data to write to a sparse output: blocks of 4 KiB, aligned in the output,
 * that hold only zeroes are left as holes (qemu-img convert's default `-S 4k`). Used by the
 * conversion on the main thread and on the workers alike.
 */

/** Size of the blocks checked for zeroes. */
export const SPARSE_BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(SPARSE_BLOCK);

/**
 * The spans of `data[from, to)` to write — runs of output-aligned 4 KiB blocks that are not
 * all zero, merged — as `[start, end)` offsets in `data`; `position` is the output offset of
 * `data[0]`. A block cut by `from` or `to` is tested for the part inside.
 */
export function nonZeroSpans(data: Uint8Array, position: number, from = 0, to = data.length): Array<[number, number]> {
  const flat = scanBlocks(data, blockPhase(position), from, to);
  const spans: Array<[number, number]> = [];
  for (let k = 0; k < flat.length; k += 2) spans.push([flat[k] as number, flat[k + 1] as number]);
  return spans;
}

/**
 * The scan behind {@link nonZeroSpans}: the spans as `start, end` pairs, given the block
 * phase of `buf[0]` in the output ({@link blockPhase}) rather than its position.
 *
 * Written for V8's optimising compiler, which compiles it on the second core while a
 * conversion keeps both busy:
 * - every number here is below the chunk's size. The output position passes 2^31 in any
 *   disk over 2 GiB; while it entered the loop, the code compiled for the first chunks
 *   (small-integer positions) was thrown away at the first chunk past 2 GiB and compiled
 *   again: 9 and then 14 ms of TurboFan per conversion;
 * - the full test of a block whose first and last bytes are zero (1 % of W4's blocks) is a
 *   `Buffer.compare` in a function of its own ({@link zeroBytes}): the loop compiles once,
 *   in 6–8 ms. A byte-by-byte test compiled in 3 ms, but made W5's conversion three times
 *   slower: its overlay clusters hold 60 KiB of copied-on-write zeroes each;
 * - a plain loop into an array, not a generator: it runs hot on the writer threads, and
 *   TurboFan took 35 ms of a core (during a 0.4 s conversion) to compile it as a generator.
 */
function scanBlocks(buf: Uint8Array, phase: number, from: number, to: number): number[] {
  const spans: number[] = [];
  let runFrom = -1;
  let i = from;
  while (i < to) {
    const blockEnd = Math.min(to, i + SPARSE_BLOCK - ((phase + i) % SPARSE_BLOCK));
    // A block whose first or last byte is set is data without looking further: most data
    // blocks are (99 % of W4's 178,000).
    const zero = buf[i] === 0 && buf[blockEnd - 1] === 0 && zeroBytes(buf, i + 1, blockEnd - 1);
    if (!zero && runFrom < 0) runFrom = i;
    if (zero && runFrom >= 0) {
      spans.push(runFrom, i);
      runFrom = -1;
    }
    i = blockEnd;
  }
  if (runFrom >= 0) spans.push(runFrom, to);
  return spans;
}

/**
 * Where in its output block `data[0]` falls, in [0, SPARSE_BLOCK): `position` is below zero
 * when `data` is a slot whose pieces go to output offsets below their place in it.
 */
function blockPhase(position: number): number {
  const r = position % SPARSE_BLOCK;
  return r < 0 ? r + SPARSE_BLOCK : r;
}

/** Whether `buf[from, to)` (at most a block) holds only zeroes: compared with a zero block, in C++. */
function zeroBytes(buf: Uint8Array, from: number, to: number): boolean {
  return ZERO_BLOCK.compare(buf, from, to, 0, to - from) === 0;
}

/**
 * The non-zero spans of several pieces of `data`, as {@link nonZeroSpans} finds them in each:
 * `pieces` holds `from, to, position` per piece (bytes `[from, to)` of `data`, whose byte
 * `i` goes to output offset `position + i`); the spans come back in the same form, piece
 * after piece, starting at `pieces[first]`.
 */
export function nonZeroPieceSpans(data: Uint8Array, pieces: ArrayLike<number>, first = 0, end = pieces.length): number[] {
  const spans: number[] = [];
  for (let p = first; p < end; p += 3) {
    const position = pieces[p + 2] as number;
    const flat = scanBlocks(data, blockPhase(position), pieces[p] as number, pieces[p + 1] as number);
    for (let k = 0; k < flat.length; k += 2) spans.push(flat[k] as number, flat[k + 1] as number, position);
  }
  return spans;
}
