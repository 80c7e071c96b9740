/**
 * Unit tests of the consistency check: the refcount array, reference counting past the end
 * of the file, `%0.2f` formatting, qemu-img's human and JSON summaries, and the check of the
 * committed fixture images (all clean, as qemu-img check found them).
 */
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { fixed2, checkHuman, checkJson } from '../../src/cli/commands/check.js';
import { altHex, CheckState, readZeroFilled, RefcountArray } from '../../src/formats/qcow2/check-refcounts.js';
import { compareRefcounts, StoredRefcounts } from '../../src/formats/qcow2/check-compare.js';
import { openImage } from '../../src/image.js';
import { checkImage } from '../../src/ops/check.js';
import { MemoryFile } from '../helpers/memory-file.js';
import { REPO_ROOT } from '../helpers/cli.js';

describe('RefcountArray', () => {
  it('counts up to refcount_max and grows by references', () => {
    const a = new RefcountArray(4, 1); // 2-bit refcounts: max 3
    expect(a.max).toBe(3);
    for (let i = 0; i < 3; i++) expect(a.increment(2)).toBe(true);
    expect(a.increment(2)).toBe(false);
    expect(a.get(2)).toBe(3);
    expect(a.size).toBe(4);
    expect(a.increment(4)).toBe(true);
    expect(a.size).toBe(5);
    expect(new RefcountArray(1, 6).max).toBe(0xffffffff);
  });
});

describe('CheckState.inc', () => {
  it('reports references a cluster or more past the end of the file, without counting them', () => {
    const lines: string[] = [];
    const file = new MemoryFile(new Uint8Array(3 * 512 + 100));
    const st = new CheckState(file, { clusterBits: 9, clusterSize: 512, refcountOrder: 4, extendedL2: false, hasDataFile: false }, (l) => lines.push(l));
    expect(st.refcounts.size).toBe(4);
    st.inc(0, 512);
    st.inc(3 * 512, 512); // partly in the file: counted
    st.inc(3 * 512 + 50, 512); // ends 462 bytes past the end of the file: less than a cluster, counted
    st.inc(0x100000000000n, 512);
    expect(st.refcounts.get(0)).toBe(1);
    expect(st.refcounts.get(3)).toBe(2);
    expect(st.refcounts.get(4)).toBe(1);
    expect(st.refcounts.size).toBe(5);
    expect(st.counts.corruptions).toBe(1);
    expect(lines).toEqual([
      'ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x100000000000 size 0x200',
    ]);
  });
});

describe('compareRefcounts', () => {
  /**
   * An 8-cluster file (512-byte clusters): the refcount table at cluster 1 naming the block
   * at cluster 2, whose entries (2^order bits, big-endian) are `stored`.
   */
  async function compare(order: number, stored: readonly bigint[]): Promise<string[]> {
    const bytes = new Uint8Array(8 * 512);
    new DataView(bytes.buffer).setBigUint64(512, 1024n);
    const width = 2 ** order / 8;
    stored.forEach((v, i) => {
      for (let k = 0; k < width; k++) bytes[1024 + i * width + k] = Number((v >> BigInt(8 * (width - 1 - k))) & 0xffn);
    });
    const file = new MemoryFile(bytes);
    const lines: string[] = [];
    const st = new CheckState(file, { clusterBits: 9, clusterSize: 512, refcountOrder: order, extendedL2: false, hasDataFile: false }, (l) => lines.push(l));
    for (let c = 0; c < 4; c++) st.inc(c * 512, 512);
    const refs = await StoredRefcounts.load(file, 512, order, 512, 1);
    const highest = await compareRefcounts(st, refs, { done: false });
    lines.push(`highest ${highest} corruptions ${st.counts.corruptions} leaks ${st.counts.leaks}`);
    return lines;
  }

  it('reports leaks and corruptions alike from 16-bit (numbers) and 64-bit (BigInt) refcounts, 64-bit values exactly', async () => {
    const common = [
      'Leaked cluster 2 refcount=2 reference=1',
      'ERROR cluster 3 refcount=0 reference=1',
    ];
    expect(await compare(4, [1n, 1n, 2n, 0n, 0xffffn])).toEqual([...common, 'Leaked cluster 4 refcount=65535 reference=0', 'highest 4 corruptions 1 leaks 2']);
    expect(await compare(6, [1n, 1n, 2n, 0n, 0x1000000000000001n])).toEqual([
      ...common, 'Leaked cluster 4 refcount=1152921504606846977 reference=0', 'highest 4 corruptions 1 leaks 2',
    ]);
    expect(await compare(6, [1n, 1n, 1n, 1n])).toEqual(['highest 3 corruptions 0 leaks 0']);
  });
});

describe('helpers', () => {
  it('altHex prints %#x', () => {
    expect(altHex(0)).toBe('0');
    expect(altHex(255n)).toBe('0xff');
  });
  it('readZeroFilled pads past the end of the file', async () => {
    const f = new MemoryFile(new Uint8Array([1, 2, 3]));
    expect([...(await readZeroFilled(f, 1, 4))]).toEqual([2, 3, 0, 0]);
    expect([...(await readZeroFilled(f, 1n << 60n, 2))]).toEqual([0, 0]);
  });
  it('fixed2 rounds like glibc printf', () => {
    expect(fixed2(1.875)).toBe('1.88');
    expect(fixed2(0.125)).toBe('0.12');
    expect(fixed2(0.375)).toBe('0.38');
    expect(fixed2(50)).toBe('50.00');
    expect(fixed2(100 / 3)).toBe('33.33');
  });
});

const counts = {
  corruptions: 0, leaks: 0, checkErrors: 0, totalClusters: 160, allocatedClusters: 2,
  fragmentedClusters: 1, compressedClusters: 0, imageEndOffset: 786432,
};

describe('summaries', () => {
  it('prints the clean human summary', () => {
    expect(checkHuman({ filename: 'a.qcow2', format: 'qcow2', counts, failure: null })).toBe(
      'No errors were found on the image.\n2/160 = 1.25% allocated, 50.00% fragmented, 0.00% compressed clusters\nImage end offset: 786432\n',
    );
  });
  it('prints corruptions, leaks and internal errors', () => {
    const c = { ...counts, corruptions: 1, leaks: 2, checkErrors: 3 };
    expect(checkHuman({ filename: 'a', format: 'qcow2', counts: c, failure: null })).toBe(
      '\n1 errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n' +
        '\n2 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n' +
        '\n3 internal errors have occurred during the check.\n' +
        '2/160 = 1.25% allocated, 50.00% fragmented, 0.00% compressed clusters\nImage end offset: 786432\n',
    );
  });
  it('prints JSON in QDict order with zero members left out', () => {
    expect(checkJson({ filename: 'a.qcow2', format: 'qcow2', counts, failure: null })).toBe(
      '{\n    "image-end-offset": 786432,\n    "total-clusters": 160,\n    "check-errors": 0,\n    "allocated-clusters": 2,\n' +
        '    "filename": "a.qcow2",\n    "format": "qcow2",\n    "fragmented-clusters": 1\n}\n',
    );
  });
});

describe('checkImage on the committed fixtures', () => {
  for (const name of ['sample.qcow2', 'kinds.qcow2', 'subclusters.qcow2', 'v2.qcow2', 'chain-top.qcow2', 'prealloc-metadata.qcow2']) {
    it(`${name} is clean`, async () => {
      const img = await openImage(path.join(REPO_ROOT, 'images', name), { openBacking: false, openDataFile: false });
      try {
        const lines: string[] = [];
        const r = await checkImage(img, { onMessage: (l) => lines.push(l) });
        expect(lines).toEqual([]);
        expect(r.failure).toBeNull();
        expect(r.counts).toMatchObject({ corruptions: 0, leaks: 0, checkErrors: 0 });
        expect(r.counts.imageEndOffset).toBeGreaterThan(0);
      } finally {
        await img.close();
      }
    });
  }
  it('refuses raw images', async () => {
    const img = await openImage(path.join(REPO_ROOT, 'images', 'unaligned.raw'), { format: 'raw' });
    try {
      await expect(checkImage(img)).rejects.toMatchObject({ code: 'CHECK_NOT_SUPPORTED' });
    } finally {
      await img.close();
    }
  });
});
