/**
 * `vdisk map` (the human table) printed from the flat walk (src/cli/commands/map.ts): on
 * random qcow2 chains, whole and in random ranges, with the walk in its kernel and in
 * JavaScript, it must print what the general walk's human merge printed before (qemu-img
 * 7.2's `dump_map_entry` rules; compressed clusters fail the table after the same rows); a
 * read error met by the walk leaves the rows before it printed, as qemu-img does; and the
 * map writes through the Output it is given.
 */
import { execFileSync } from 'node:child_process';
import { openSync, closeSync, readSync, writeSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openImage, type Image } from '../../src/index.js';
import { runMap, UnmappableDataError, type MapCommandOptions } from '../../src/cli/commands/map.js';
import { HUMAN_MAP_HEADER, mapEntryHuman } from '../../src/cli/format/map-format.js';
import { Output } from '../../src/cli/output.js';
import { useFlatWalkKernel } from '../../src/status/flat-walk-kernel.js';
import { isVdiskError } from '../../src/errors.js';
import { makeChain } from '../helpers/random-chain.js';
import { collectingSink } from '../helpers/ascii-sink.js';
import { rngInt } from '../helpers/prng.js';
import { hasTool } from '../helpers/qemu.js';
import { makeTempDir, removeTempDir } from '../helpers/tmp.js';

const hasQemu = hasTool('qemu-img') && hasTool('qemu-io');
if (!hasQemu) console.warn('map-human.test.ts: SKIPPED: qemu-img and/or qemu-io not found: the human map was NOT compared');

/** An Output over a stream that collects what is written. */
function outputSink(): { out: Output; text: () => Promise<string> } {
  return collectingSink((s) => new Output(s), 'utf8');
}

/** What runMap printed, and the error it ended with (null: none). */
async function printed(img: Image, opts: Partial<MapCommandOptions>): Promise<{ text: string; error: unknown }> {
  const { out, text } = outputSink();
  let error: unknown = null;
  try {
    await runMap(img, { output: 'human', mode: 'mapping', start: 0, maxLength: undefined, ...opts }, out);
  } catch (e) {
    error = e;
  }
  return { text: await text(), error };
}

const WALKS = [
  ['in its WebAssembly kernel', true],
  ['in JavaScript alone', false],
] as const;

describe.skipIf(!hasQemu)('vdisk map (human table) from the flat walk', () => {
  let dir = '';
  beforeAll(() => {
    dir = makeTempDir('vdisk-human-');
  });
  afterAll(() => removeTempDir(dir));

  it.each(WALKS)('prints what the general walk\'s human merge printed, whole and in random ranges, on 60 random chains, %s', async (_how, kernel) => {
    useFlatWalkKernel(kernel);
    let failures = 0;
    try {
      for (let seed = 1; seed <= 60; seed++) {
        const img = await openImage(makeChain(dir, seed), { format: 'qcow2' });
        try {
          const r = rngInt(seed * 6007);
          const ranges: Array<{ start: number; length?: number }> = [{ start: 0 }];
          for (let k = 0; k < 3; k++) ranges.push({ start: r(img.virtualSize + 4096), length: 1 + r(img.virtualSize) });
          for (const range of ranges) {
            // The printer before the flat walk: the general walk's human merge, row by row.
            let want = HUMAN_MAP_HEADER;
            let wantError = false;
            rows: for await (const batch of img.mapEntryBatches({ ...range, human: true })) {
              for (const e of batch) {
                if (e.data && e.offset === null) {
                  wantError = true;
                  break rows;
                }
                want += mapEntryHuman(e);
              }
            }
            const general = vi.spyOn(img, 'mapEntryBatches');
            const got = await printed(img, { start: range.start, maxLength: range.length });
            // The table came from the flat walk.
            expect(general).not.toHaveBeenCalled();
            general.mockRestore();
            expect(got.text, `seed ${seed} range ${JSON.stringify(range)}`).toBe(want);
            if (wantError) {
              expect(got.error).toBeInstanceOf(UnmappableDataError);
              failures++;
            } else expect(got.error).toBeNull();
          }
        } finally {
          await img.close();
        }
      }
    } finally {
      useFlatWalkKernel(true);
    }
    // Compressed clusters make some tables fail, as qemu-img's does.
    expect(failures).toBeGreaterThan(5);
  });

  it.each(WALKS)('leaves the rows before a read error printed, as qemu-img does, %s', async (_how, kernel) => {
    // 4 KiB clusters: an L2 table maps 2 MiB. Data in the first two tables' ranges; then the
    // second L1 entry points at an unaligned offset, which the walk meets at 2 MiB.
    const file = path.join(dir, 'bad-l1.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', file, '8M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 0 8k', '-c', 'write -P 2 64k 4k', '-c', 'write -P 3 2M 4k', file], { stdio: 'ignore' });
    const fd = openSync(file, 'r+');
    try {
      const header = Buffer.alloc(48);
      readSync(fd, header, 0, 48, 0);
      const l1 = Number(header.readBigUInt64BE(40));
      const entry = Buffer.alloc(8);
      readSync(fd, entry, 0, 8, l1 + 8);
      entry.writeBigUInt64BE(entry.readBigUInt64BE(0) + 0x200n);
      writeSync(fd, entry, 0, 8, l1 + 8);
    } finally {
      closeSync(fd);
    }
    let qemuOut = '';
    try {
      execFileSync('qemu-img', ['map', '-f', 'qcow2', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      throw new Error('qemu-img map succeeded on the corrupt image');
    } catch (e) {
      qemuOut = String((e as { stdout?: string }).stdout ?? '');
    }
    expect(qemuOut.split('\n').length).toBeGreaterThan(2); // the header and rows before the error
    useFlatWalkKernel(kernel);
    const img = await openImage(file, { format: 'qcow2' });
    try {
      const got = await printed(img, {});
      expect(got.text).toBe(qemuOut);
      expect(isVdiskError(got.error) && got.error.code).toBe('QCOW2_L2_OFFSET_UNALIGNED');
    } finally {
      useFlatWalkKernel(true);
      await img.close();
    }
  });

  it('writes the JSON map through the Output it is given', async () => {
    const file = path.join(dir, 'json.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '4M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 1 64k 128k', '-c', 'write -z 1M 64k', file], { stdio: 'ignore' });
    const want = execFileSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', file], { encoding: 'utf8' });
    const img = await openImage(file, { format: 'qcow2' });
    try {
      const { text, error } = await printed(img, { output: 'json' });
      expect(error).toBeNull();
      expect(text).toBe(want);
    } finally {
      await img.close();
    }
  });
});
