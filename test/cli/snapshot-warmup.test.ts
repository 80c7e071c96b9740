/**
 * The warm-up run before the CLI's start-up snapshot is saved (src/cli/snapshot-warmup.ts):
 * every command it runs succeeds on the shipped chain (a failure would leave the build
 * without a snapshot), it restores the environment it changes, and lends
 * `SharedArrayBuffer` only where the global is missing (as in a snapshot build).
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { warmUp } from '../../src/cli/snapshot-warmup.js';
import { captureStdio } from '../helpers/stdio.js';

const IMAGES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../images');

afterEach(() => {
  vi.restoreAllMocks();
});


describe('snapshot warm-up', () => {
  it('runs every command on the shipped chain, then restores the environment', async () => {
    const before = { seek: process.env['VDISK_NO_SEEK_HOLE'], workers: process.env['VDISK_DECODE_WORKERS'] };
    process.env['VDISK_NO_SEEK_HOLE'] = 'keep-me';
    delete process.env['VDISK_DECODE_WORKERS'];
    try {
      const { out, err } = captureStdio();
      await warmUp(path.join(IMAGES, 'chain-top.qcow2'));
      vi.restoreAllMocks();
      expect(err.join('')).toBe('');
      const printed = out.join('');
      // map --output=json's first entry, map's header, info's and compare's lines.
      expect(printed).toContain('[{ "start": 0, "length": 65536, "depth": 2, "present": true, "zero": false, "data": true');
      expect(printed).toContain('Offset          Length          Mapped to       File');
      expect(printed).toContain('backing file: chain-mid.qcow2');
      expect(printed).toContain('Images are identical.');
      expect(process.env['VDISK_NO_SEEK_HOLE']).toBe('keep-me');
      expect('VDISK_DECODE_WORKERS' in process.env).toBe(false);
      expect(typeof SharedArrayBuffer).toBe('function');
    } finally {
      for (const [k, v] of [['VDISK_NO_SEEK_HOLE', before.seek], ['VDISK_DECODE_WORKERS', before.workers]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });

  it('lends SharedArrayBuffer for compare and convert where the global is missing, and takes it back', async () => {
    const g = globalThis as { SharedArrayBuffer?: unknown };
    const saved = g.SharedArrayBuffer;
    delete g.SharedArrayBuffer;
    try {
      captureStdio();
      await warmUp(path.join(IMAGES, 'chain-top.qcow2'));
      vi.restoreAllMocks();
      expect('SharedArrayBuffer' in globalThis).toBe(false);
    } finally {
      g.SharedArrayBuffer = saved;
    }
  });

  it('fails when a command fails', async () => {
    captureStdio();
    await expect(warmUp(path.join(IMAGES, 'no-such-image.qcow2'))).rejects.toThrow(/exited with status 1/);
  });
});
