/**
 * Opening an image and, through the open policy, the files it names: the backing chain
 * (each layer with its recorded format, never guessed unless the caller opts in) and
 * external data files.
 */
import { realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { IoError, PolicyError, UnsupportedImageError } from '../errors.js';
import type { BlockDriver, FormatName } from '../formats/driver.js';
import { hasQcow2Magic } from '../formats/qcow2/header.js';
import { Qcow2Driver } from '../formats/qcow2/qcow2-driver.js';
import { openSnapshotView } from '../formats/qcow2/snapshot-view.js';
import { RawDriver } from '../formats/raw/raw-driver.js';
import type { LseekFn } from '../io/lseek-binding.js';
import { NodeFile } from '../io/node-file.js';
import { readPreferSync, type RandomAccessFile } from '../io/random-access-file.js';
import { ChainNode } from './chain-node.js';
import { DEFAULT_MAX_CHAIN_DEPTH, vetReference, type OpenPolicy, type VettedFile } from './open-policy.js';
import { DEFAULT_MAX_METADATA_BYTES, MetadataBudget } from '../formats/budget.js';
import { checkOpenArguments } from './open-options.js';

/** Options for opening an image chain. */
export interface ChainOptions {
  /** Format of the top image; probed from the qcow2 magic when absent (raw warns). */
  readonly format?: FormatName;
  /** Extra directories named files may live in (the top image's directory is always allowed). */
  readonly allowDirs?: readonly string[];
  /** Maximum number of layers, top included (default 16). */
  readonly maxChainDepth?: number;
  /** Probe the format of backing files that record none (default false; warns). */
  readonly probeBackingFormat?: boolean;
  /** Open the backing chain (default true). */
  readonly openBacking?: boolean;
  /** Open external data files (default true). */
  readonly openDataFile?: boolean;
  /** L2 cache budget per qcow2 layer in bytes (default 32 MiB). */
  readonly l2CacheBytes?: number;
  /** Receives warnings (probed formats). Default: none. */
  readonly onWarning?: (message: string, code: WarningCode) => void;
  /**
   * Read the top image as it was at this internal snapshot (id, else name), as
   * `qemu-img convert -l` does; the top image must be qcow2.
   */
  readonly snapshot?: string;
  /** Override of the lseek binding (tests); null disables hole probing. */
  readonly lseek?: LseekFn | null;
  /**
   * Memory the whole chain may keep for metadata (L1 and refcount tables, L2 indexes and
   * caches), in bytes (default 128 MiB); a layer that does not fit is `LIMIT_METADATA_MEMORY`.
   */
  readonly maxMetadataBytes?: number;
  /**
   * vdisk's checks beyond QEMU's (metadata overlaps, tables and clusters past the end of the
   * file, reserved bits, shared L2 tables; formats/qcow2/open-checks.ts). Default true;
   * `check` turns them off to report such problems rather than refuse the image.
   */
  readonly vdiskChecks?: boolean;
}

/**
 * What a warning is about: the top image's format was guessed as raw (qemu-img prints its
 * warning for this only when it opens the image writable), or a backing file's format was
 * guessed because probing was allowed.
 */
export type WarningCode = 'RAW_FORMAT_PROBED' | 'BACKING_FORMAT_PROBED';

/** Warning qemu-img prints when it probes a raw image it opens writable. */
export function rawProbeWarning(name: string): string {
  return (
    `WARNING: Image format was not specified for '${name}' and probing guessed raw.\n` +
    '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
    "         Specify the 'raw' format explicitly to remove the restrictions."
  );
}

/** Opens `file` as `format`, reserving its metadata in the chain's `budget`. */
async function openDriver(file: RandomAccessFile, format: FormatName, options: ChainOptions, budget: MetadataBudget): Promise<BlockDriver> {
  if (format === 'raw') return new RawDriver(file);
  return Qcow2Driver.open(file, {
    ...(options.l2CacheBytes === undefined ? {} : { l2CacheBytes: options.l2CacheBytes }),
    ...(options.vdiskChecks === undefined ? {} : { vdiskChecks: options.vdiskChecks }),
    budget,
  });
}

/** Refuses names whose stored bytes the decoded string does not represent exactly. */
function refuseInexactName(kind: string, name: string, exact: boolean | undefined, naming: string): void {
  if (exact === false) {
    throw new PolicyError('POLICY_INVALID_NAME', `${kind} name '${name}' recorded in '${naming}' is not valid UTF-8 (or has bytes after a NUL); it is not opened`, {
      file: naming, field: kind, value: name,
    });
  }
}

async function probeFormat(file: RandomAccessFile): Promise<FormatName> {
  const head = new Uint8Array(Math.min(4, file.size));
  await readPreferSync(file, head, 0, head.length);
  return hasQcow2Magic(head) ? 'qcow2' : 'raw';
}

/** Opens a file vetted by the policy and checks it is still the vetted one. */
async function openVetted(v: VettedFile, options: ChainOptions): Promise<NodeFile> {
  const f = await NodeFile.open(v.displayPath, options.lseek === undefined ? {} : { lseek: options.lseek });
  const id = f.identity();
  if (id.dev !== v.dev || id.ino !== v.ino) {
    await f.close();
    throw new PolicyError('POLICY_FILE_CHANGED', `'${v.displayPath}' changed between the policy check and the open`, {
      file: v.displayPath,
    });
  }
  return f;
}

/** Opens `topPath` and, per the options and the policy, its data files and backing chain. */
export async function openChain(topPath: string, options: ChainOptions = {}): Promise<ChainNode> {
  checkOpenArguments(topPath, options);
  let st;
  try {
    st = statSync(topPath, { bigint: true });
  } catch (e) {
    throw new IoError('IO_OPEN', `cannot open '${topPath}': ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { file: topPath, cause: e });
  }
  if (!st.isFile()) {
    throw new PolicyError('POLICY_NOT_REGULAR_FILE', `'${topPath}' is not a regular file`, { file: topPath });
  }
  const topReal = realpathSync.native(topPath);
  const policy: OpenPolicy = {
    allowDirs: [path.dirname(topReal), ...(options.allowDirs ?? []).map((d) => realpathOr(d))],
    maxChainDepth: options.maxChainDepth ?? DEFAULT_MAX_CHAIN_DEPTH,
    probeBackingFormat: options.probeBackingFormat ?? false,
  };
  const opened: RandomAccessFile[] = [];
  const budget = new MetadataBudget(options.maxMetadataBytes ?? DEFAULT_MAX_METADATA_BYTES);
  try {
    const topFile = await openVetted({ displayPath: topPath, realPath: topReal, dev: st.dev, ino: st.ino }, options);
    opened.push(topFile);
    let format = options.format;
    if (format === undefined) {
      format = await probeFormat(topFile);
      if (format === 'raw') options.onWarning?.(rawProbeWarning(topPath), 'RAW_FORMAT_PROBED');
    }
    const inChain = [{ dev: st.dev, ino: st.ino, path: topPath }];
    let topDriver = await openDriver(topFile, format, options, budget);
    if (options.snapshot !== undefined) {
      if (!(topDriver instanceof Qcow2Driver)) {
        throw new UnsupportedImageError('UNSUPPORTED_SNAPSHOT_FORMAT', `'${topPath}' is ${format}: only qcow2 images have internal snapshots`, {
          file: topPath, field: 'format', value: format, limit: 'qcow2',
        });
      }
      topDriver = await openSnapshotView(topDriver, options.snapshot, options.l2CacheBytes === undefined ? {} : { l2CacheBytes: options.l2CacheBytes });
    }
    const top = new ChainNode(topDriver, topPath, 0, options.openBacking === false);
    let node = top;
    for (;;) {
      const d = node.driver;
      if (d instanceof Qcow2Driver && d.dataFileName !== null && options.openDataFile !== false) {
        refuseInexactName('external data file', d.dataFileName, d.extensions.dataFileExact, node.filename);
        const v = await vetReference('external data file', d.dataFileName, node.filename, policy, inChain);
        const df = await openVetted(v, options);
        opened.push(df);
        d.attachDataFile(df);
      }
      const ref = d.backing;
      if (ref === null || options.openBacking === false) break;
      refuseInexactName('backing file', ref.name, ref.nameExact, node.filename);
      const v = await vetReference('backing file', ref.name, node.filename, policy, inChain);
      let bFormat = ref.format;
      if (bFormat === null && !policy.probeBackingFormat) {
        throw new PolicyError(
          'POLICY_BACKING_FORMAT_MISSING',
          `'${node.filename}' names backing file '${ref.name}' without a backing format; vdisk does not guess formats (pass --probe-backing-format to allow it)`,
          { file: node.filename, field: 'backing format', value: ref.name },
        );
      }
      if (bFormat !== null && ((bFormat !== 'raw' && bFormat !== 'qcow2') || ref.formatExact === false)) {
        throw new UnsupportedImageError('UNSUPPORTED_BACKING_FORMAT', `backing format '${bFormat}'${ref.formatExact === false ? ' (with bytes after a NUL or invalid UTF-8)' : ''} of '${node.filename}' is not supported (raw or qcow2)`, {
          file: node.filename, field: 'backing format', value: bFormat, limit: 'raw or qcow2',
        });
      }
      const bf = await openVetted(v, options);
      opened.push(bf);
      if (bFormat === null) {
        bFormat = await probeFormat(bf);
        options.onWarning?.(`warning: probed the format of backing file '${v.displayPath}' as ${bFormat}; the image records none`, 'BACKING_FORMAT_PROBED');
      }
      const child = new ChainNode(await openDriver(bf, bFormat as FormatName, options, budget), v.displayPath, node.index + 1);
      inChain.push({ dev: v.dev, ino: v.ino, path: v.displayPath });
      node.backing = child;
      node = child;
    }
    return top;
  } catch (e) {
    await Promise.allSettled(opened.map((f) => f.close()));
    throw e;
  }
}

function realpathOr(dir: string): string {
  try {
    return realpathSync.native(dir);
  } catch {
    return path.resolve(dir);
  }
}
