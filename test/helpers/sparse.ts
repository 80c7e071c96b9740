/**
 * Sparse copies for tests: git does not keep holes, so fixtures whose meaning depends on
 * host-file holes (metadata preallocation) are re-sparsified in a temp directory by copying
 * only the 4 KiB blocks that hold non-zero bytes.
 */
import { open } from 'node:fs/promises';

const BLOCK = 4096;

/** Copies `src` to `dst`, leaving all-zero 4 KiB blocks as holes. */
export async function sparseCopy(src: string, dst: string): Promise<void> {
  const from = await open(src, 'r');
  const to = await open(dst, 'w');
  try {
    const { size } = await from.stat();
    const buf = Buffer.alloc(BLOCK);
    for (let pos = 0; pos < size; pos += BLOCK) {
      const { bytesRead } = await from.read(buf, 0, BLOCK, pos);
      const chunk = buf.subarray(0, bytesRead);
      if (chunk.some((b) => b !== 0)) await to.write(chunk, 0, bytesRead, pos);
    }
    await to.truncate(size);
  } finally {
    await from.close();
    await to.close();
  }
}
