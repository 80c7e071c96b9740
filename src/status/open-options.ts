/**
 * Checks of the options of `openImage` / `openChain`: a caller passing a nonsense value
 * (a negative depth, a budget that is not a number, a format vdisk does not know) gets an
 * `InvalidArgumentError` (`ARG_OPTION`) naming the option, never a TypeError later on.
 */
import { InvalidArgumentError } from '../errors.js';
import type { ChainOptions } from './open-chain.js';

function bad(option: string, value: unknown, limit: string): InvalidArgumentError {
  const shown = typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint' ? value : String(value);
  return new InvalidArgumentError('ARG_OPTION', `invalid option ${option}: ${String(shown)} (expected ${limit})`, {
    field: option, value: shown, limit,
  });
}

function positiveInteger(options: ChainOptions, key: 'maxChainDepth' | 'l2CacheBytes' | 'maxMetadataBytes'): void {
  const v: unknown = options[key];
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw bad(key, v, 'a positive integer');
}

function boolean(options: ChainOptions, key: 'probeBackingFormat' | 'openBacking' | 'openDataFile' | 'vdiskChecks'): void {
  const v: unknown = options[key];
  if (v !== undefined && typeof v !== 'boolean') throw bad(key, v, 'true or false');
}

/** Throws `ARG_PATH` / `ARG_OPTION` for arguments `openChain` cannot use. */
export function checkOpenArguments(path: unknown, options: unknown): asserts options is ChainOptions {
  if (typeof path !== 'string' || path.length === 0 || path.includes('\0')) {
    throw new InvalidArgumentError('ARG_PATH', `the image path must be a non-empty string without NUL (got ${typeof path === 'string' ? JSON.stringify(path) : typeof path})`, {
      field: 'path', limit: 'a non-empty string',
    });
  }
  if (typeof options !== 'object' || options === null) throw bad('options', options, 'an object');
  const o = options as ChainOptions;
  if (o.format !== undefined && o.format !== 'qcow2' && o.format !== 'raw') throw bad('format', o.format, "'qcow2' or 'raw'");
  if (o.allowDirs !== undefined && (!Array.isArray(o.allowDirs) || o.allowDirs.some((d) => typeof d !== 'string' || d.length === 0 || d.includes('\0')))) {
    throw bad('allowDirs', o.allowDirs, 'an array of directory names');
  }
  positiveInteger(o, 'maxChainDepth');
  positiveInteger(o, 'l2CacheBytes');
  positiveInteger(o, 'maxMetadataBytes');
  boolean(o, 'probeBackingFormat');
  boolean(o, 'openBacking');
  boolean(o, 'openDataFile');
  boolean(o, 'vdiskChecks');
  if (o.onWarning !== undefined && typeof o.onWarning !== 'function') throw bad('onWarning', o.onWarning, 'a function');
  if (o.snapshot !== undefined && typeof o.snapshot !== 'string') throw bad('snapshot', o.snapshot, 'a snapshot id or name');
}
