/**
 * Argument checks of openImage (status/open-options.ts): nonsense options are
 * `InvalidArgumentError`s naming the option, never TypeErrors from deeper down.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, isVdiskError } from '../../src/errors.js';
import { openImage } from '../../src/image.js';

const base = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'images', 'bad', 'base', 'base.qcow2');

async function refused(p: unknown, options: unknown, code: string, field?: string): Promise<void> {
  let err: unknown;
  try {
    // Deliberately wrong types, as an untyped caller would pass them.
    await openImage(p as string, options as object);
  } catch (e) {
    err = e;
  }
  expect(isVdiskError(err), String(err)).toBe(true);
  expect(err).toBeInstanceOf(InvalidArgumentError);
  expect(err).toMatchObject({ code, ...(field === undefined ? {} : { details: { field } }) });
}

describe('openImage arguments', () => {
  it('refuses paths that are not non-empty strings', async () => {
    await refused(undefined, {}, 'ARG_PATH');
    await refused(42, {}, 'ARG_PATH');
    await refused('', {}, 'ARG_PATH');
    await refused('a\0b', {}, 'ARG_PATH');
  });

  it.each([
    [{ format: 'vmdk' }, 'format'],
    [{ maxChainDepth: 0 }, 'maxChainDepth'],
    [{ maxChainDepth: -1 }, 'maxChainDepth'],
    [{ maxChainDepth: 1.5 }, 'maxChainDepth'],
    [{ maxChainDepth: '16' }, 'maxChainDepth'],
    [{ l2CacheBytes: Number.NaN }, 'l2CacheBytes'],
    [{ maxMetadataBytes: 2 ** 60 }, 'maxMetadataBytes'],
    [{ allowDirs: '/tmp' }, 'allowDirs'],
    [{ allowDirs: [7] }, 'allowDirs'],
    [{ openBacking: 'no' }, 'openBacking'],
    [{ vdiskChecks: 1 }, 'vdiskChecks'],
    [{ onWarning: 'print' }, 'onWarning'],
    [{ snapshot: 1 }, 'snapshot'],
  ])('refuses %j', async (options, field) => {
    await refused(base, options, 'ARG_OPTION', field);
  });

  it('refuses options that are not an object', async () => {
    await refused(base, null, 'ARG_OPTION', 'options');
    await refused(base, 'qcow2', 'ARG_OPTION', 'options');
  });

  it('accepts sensible options', async () => {
    const img = await openImage(base, { format: 'qcow2', maxChainDepth: 1, l2CacheBytes: 65536, maxMetadataBytes: 1 << 24, vdiskChecks: true, allowDirs: [] });
    await img.close();
  });
});
