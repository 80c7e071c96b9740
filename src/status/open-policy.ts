/**
 * The open policy for files an image names (backing files, external data files).
 *
 * A named file is opened only if: its name is not a protocol or `json:` name; it resolves
 * (relative names against the naming image's directory, then symlinks) inside an allowed
 * directory (by default the top image's directory tree); it is a regular file; it is not
 * already in the chain (device and inode); the chain stays within the depth limit. Every
 * check runs before the file is opened, and the opened file is checked to be the one that
 * was vetted.
 */
import { realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { IoError, PolicyError } from '../errors.js';

/** Policy settings (library `OpenOptions` carries them). */
export interface OpenPolicy {
  /** Real paths of directories named files may live in. */
  readonly allowDirs: readonly string[];
  /** Maximum number of layers in a chain, top included (default 16). */
  readonly maxChainDepth: number;
  /** Probe the format of a backing file that records none (warns); default false. */
  readonly probeBackingFormat: boolean;
}

/** Default maximum chain depth. */
export const DEFAULT_MAX_CHAIN_DEPTH = 16;

/** What kind of reference is being resolved (for messages). */
export type ReferenceKind = 'backing file' | 'external data file';

/** A vetted file: where to open it, and what it must be when opened. */
export interface VettedFile {
  /** The name QEMU would show (naming image's name combined with the reference). */
  readonly displayPath: string;
  /** Absolute real path. */
  readonly realPath: string;
  readonly dev: bigint;
  readonly ino: bigint;
}

/**
 * QEMU's `path_combine`: a relative `name` is taken relative to the directory part of
 * `base` as written (no normalisation), an absolute one as is.
 */
export function pathCombine(base: string, name: string): string {
  if (path.isAbsolute(name)) return name;
  const slash = base.lastIndexOf('/');
  return slash < 0 ? name : base.slice(0, slash + 1) + name;
}

/** QEMU's `path_has_protocol` (POSIX): a ':' before any '/' (covers `json:`, `nbd:`, `http:`…). */
export function hasProtocol(name: string): boolean {
  const m = /[:/]/.exec(name);
  return m !== null && m[0] === ':';
}

/** Checks a reference named by `namingImage` (display path) against the policy. */
export async function vetReference(
  kind: ReferenceKind,
  name: string,
  namingImage: string,
  policy: OpenPolicy,
  inChain: ReadonlyArray<{ readonly dev: bigint; readonly ino: bigint; readonly path: string }>,
): Promise<VettedFile> {
  const details = { file: namingImage, field: kind, value: name };
  if (name.length === 0) {
    throw new PolicyError('POLICY_EMPTY_NAME', `${kind} name recorded in '${namingImage}' is empty`, details);
  }
  if (name.includes('\0')) {
    throw new PolicyError('POLICY_INVALID_NAME', `${kind} name recorded in '${namingImage}' contains a NUL byte`, details);
  }
  if (hasProtocol(name)) {
    throw new PolicyError(
      'POLICY_PROTOCOL_REFUSED',
      `${kind} '${name}' of '${namingImage}' is a protocol or json: name; only plain file names are opened`,
      details,
    );
  }
  if (inChain.length >= policy.maxChainDepth && kind === 'backing file') {
    throw new PolicyError(
      'POLICY_CHAIN_TOO_DEEP',
      `backing chain too deep: opening '${name}' would make ${inChain.length + 1} layers, the limit is ${policy.maxChainDepth}`,
      { ...details, limit: policy.maxChainDepth },
    );
  }
  const displayPath = pathCombine(namingImage, name);
  let real: string;
  try {
    real = realpathSync.native(displayPath);
  } catch (e) {
    throw new IoError('POLICY_FILE_NOT_FOUND', `${kind} '${displayPath}' of '${namingImage}' cannot be resolved: ${errCode(e)}`, {
      ...details,
      cause: e,
    });
  }
  if (!policy.allowDirs.some((dir) => isInside(dir, real))) {
    throw new PolicyError(
      'POLICY_OUTSIDE_ALLOWED_DIRS',
      `${kind} '${name}' of '${namingImage}' resolves to '${real}', outside the allowed directories (${policy.allowDirs.join(', ')}); allow it with --allow-dir DIR (library: allowDirs)`,
      { ...details, limit: policy.allowDirs.join(', ') },
    );
  }
  const st = statSync(real, { bigint: true });
  if (!st.isFile()) {
    throw new PolicyError('POLICY_NOT_REGULAR_FILE', `${kind} '${real}' of '${namingImage}' is not a regular file`, details);
  }
  const loop = inChain.find((c) => c.dev === st.dev && c.ino === st.ino);
  if (loop !== undefined) {
    throw new PolicyError(
      kind === 'backing file' ? 'POLICY_BACKING_LOOP' : 'POLICY_DATA_FILE_IN_CHAIN',
      `${kind} '${name}' of '${namingImage}' is '${loop.path}', which is already in the chain`,
      details,
    );
  }
  return { displayPath, realPath: real, dev: st.dev, ino: st.ino };
}

/** True when `real` is `dir` or below it. */
function isInside(dir: string, real: string): boolean {
  const rel = path.relative(dir, real);
  return rel === '' || (rel !== '..' && !rel.startsWith('..' + path.sep) && !path.isAbsolute(rel));
}

function errCode(e: unknown): string {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : String(e);
}
