/**
 * Typed errors of vdisk.
 *
 * Every failure caused by input (a malformed image, a refused file, a bad argument, an I/O
 * problem) is a {@link VdiskError} with a stable machine-readable `code` and structured
 * `details` naming the file, the field, the value and the limit. Callers branch on `code`,
 * never on message text. The subclasses keep "not this format" apart from "this format but
 * broken" and "valid but unsupported" (see STYLE.md, part C).
 */

/** Structured facts about an error; every member is optional. */
export interface ErrorDetails {
  /** The file the error is about (path as the user or image named it). */
  readonly file?: string;
  /** The header field or structure at fault, e.g. `cluster_bits`, `L2 table`. */
  readonly field?: string;
  /** The offending value, as read (bigint for 64-bit fields). */
  readonly value?: number | bigint | string;
  /** The limit the value broke, in words or as a number. */
  readonly limit?: number | bigint | string;
  /** Byte offset in the file where the problem sits, when known. */
  readonly offset?: number | bigint;
}

/** Options accepted by every error constructor. */
export interface VdiskErrorOptions extends ErrorDetails {
  readonly cause?: unknown;
}

/** Brand shared by every build of vdisk loaded in one process (see {@link isVdiskError}). */
const BRAND = Symbol.for('vdisk.VdiskError');

/**
 * Base class: a stable `code`, a message naming field/value/limit, and `details`; the
 * underlying error (an errno error, a zlib error) as ES2022 `cause`.
 *
 * Codes are grouped by prefix: `QCOW2_*` (the image's structures), `IO_*` (the host
 * file), `POLICY_*` (files an image names), `LIMIT_*` (resource budgets), `ARG_*`
 * (caller arguments), `UNSUPPORTED_*` (valid but outside what vdisk reads).
 */
export abstract class VdiskError extends Error {
  /** Stable machine-readable code, e.g. `QCOW2_CLUSTER_BITS`. */
  readonly code: string;
  /** Structured facts: file, field, value, limit, offset. */
  readonly details: ErrorDetails;

  constructor(code: string, message: string, options: VdiskErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    const { cause: _cause, ...details } = options;
    this.details = details;
  }

  override get name(): string {
    return this.constructor.name;
  }

  /** Brand checked by {@link isVdiskError}, so two copies of vdisk recognise each other's errors. */
  get [BRAND](): true {
    return true;
  }
}

/** The file is not in the format that was asked for (a probe miss). */
export class NotThisFormatError extends VdiskError {}

/** The image claims a format but its structures are broken or inconsistent. */
export class CorruptImageError extends VdiskError {}

/** The image is valid but uses something vdisk does not support (or refuses by design). */
export class UnsupportedImageError extends VdiskError {}

/** A read or probe on the host file failed. */
export class IoError extends VdiskError {}

/** A positioned read returned fewer bytes than requested. */
export class ShortReadError extends IoError {}

/**
 * The backing chain or the open policy refused a file an image names (backing file,
 * external data file): protocol or json: names, outside the allowed directories, not a
 * regular file, already in the chain (a loop), too deep, no recorded backing format.
 * The refused file is never opened.
 */
export class PolicyError extends VdiskError {}

/** A caller passed an argument that makes no sense (negative offset, unknown mode). */
export class InvalidArgumentError extends VdiskError {}

/** Type guard for vdisk's errors (also those of another copy of vdisk in the process). */
export function isVdiskError(e: unknown): e is VdiskError {
  return e instanceof VdiskError || (typeof e === 'object' && e !== null && (e as Record<symbol, unknown>)[BRAND] === true);
}

/** Formats a number or bigint as `0x…` for messages. */
export function hex(v: number | bigint): string {
  return '0x' + v.toString(16);
}
