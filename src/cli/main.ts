/**
 * The `vdisk` command line: argument parsing and dispatch. Errors print as
 * `vdisk: CODE: message` on stderr with exit status 1 (`compare` uses qemu-img's statuses:
 * 2 for open and argument errors, 3 for block-status errors, 4 for read errors); the stack
 * is printed only with `--debug`.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { InvalidArgumentError, isVdiskError } from '../errors.js';
import type { FormatName } from '../formats/driver.js';
import { openImage, type Image, type OpenOptions } from '../image.js';
import { compareImages, CompareStepError } from '../ops/compare.js';
import { prestartFormatWorker } from '../formats/workers/pool.js';
import { ioUringUsable } from '../io/io-uring.js';
import { runConvert } from './commands/convert.js';
import { runInfo } from './commands/info.js';
import { runMap } from './commands/map.js';
import { runBaseMap, runBitmapMap } from './commands/map-backup.js';
import { runCheck } from './commands/check.js';
import { runSnapshotList } from './commands/snapshot.js';
import { Output } from './output.js';
import { parseSize, parseSizeBig } from './size-arg.js';
import { HUMAN_MAP_HEADER } from './format/map-format.js';
import type { WarningCode } from '../status/open-chain.js';

const USAGE = `usage: vdisk <command> [options] ...

commands:
  map     [-f FMT] [--output=human|json] [-s|--start-offset N] [-l|--max-length N]
          [--mode=mapping|allocation] [--snapshot ID|NAME] FILE
  map     --bitmap NAME [--with-allocation] [--output=human|json] [-s N] [-l N] FILE
  map     --mode=allocation --base BASEFILE [-s N] [-l N] FILE
  info    [-f FMT] [--output=human|json] [--backing-chain] FILE
  snapshot -l [-f FMT] FILE
  check   [-f FMT] [--output=human|json] FILE
  convert [-f FMT] [-l ID|NAME] -O raw [-p] SRC DST
  compare [-f FMT] [-F FMT] [-s] A B

common options:
  --allow-dir DIR           also allow backing/data files under DIR (repeatable)
  --max-chain-depth N       most layers in a backing chain (default 16)
  --max-metadata-memory N   metadata memory for the whole chain (default 128M)
  --probe-backing-format    guess the format of backing files that record none
  --debug                   print stack traces on errors
`;

const COMMON = {
  'allow-dir': { type: 'string', multiple: true },
  'max-chain-depth': { type: 'string' },
  'max-metadata-memory': { type: 'string' },
  'probe-backing-format': { type: 'boolean' },
  debug: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const COMMANDS = {
  map: {
    format: { type: 'string', short: 'f' },
    output: { type: 'string' },
    'start-offset': { type: 'string', short: 's' },
    'max-length': { type: 'string', short: 'l' },
    mode: { type: 'string' },
    bitmap: { type: 'string' },
    'with-allocation': { type: 'boolean' },
    snapshot: { type: 'string' },
    base: { type: 'string' },
    ...COMMON,
  },
  info: {
    format: { type: 'string', short: 'f' },
    output: { type: 'string' },
    'backing-chain': { type: 'boolean' },
    ...COMMON,
  },
  convert: {
    format: { type: 'string', short: 'f' },
    'output-format': { type: 'string', short: 'O' },
    progress: { type: 'boolean', short: 'p' },
    snapshot: { type: 'string', short: 'l' },
    ...COMMON,
  },
  snapshot: {
    format: { type: 'string', short: 'f' },
    list: { type: 'boolean', short: 'l' },
    ...COMMON,
  },
  check: {
    format: { type: 'string', short: 'f' },
    output: { type: 'string' },
    ...COMMON,
  },
  compare: {
    format: { type: 'string', short: 'f' },
    'second-format': { type: 'string', short: 'F' },
    strict: { type: 'boolean', short: 's' },
    ...COMMON,
  },
} as const satisfies Record<string, ParseArgsConfig['options']>;

type CommandName = keyof typeof COMMANDS;

/** Parsed option values (all commands' options, each optional). */
type Values = Partial<Record<string, string | boolean | string[]>>;

function bad(message: string, field: string, value?: string): InvalidArgumentError {
  return new InvalidArgumentError('ARG_INVALID', message, value === undefined ? { field } : { field, value });
}

function str(v: Values, key: string): string | undefined {
  const x = v[key];
  return typeof x === 'string' ? x : undefined;
}

function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], option: string, dflt: T): T {
  if (value === undefined) return dflt;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw bad(`invalid ${option} '${value}': expected ${allowed.join(' or ')}`, option, value);
}

function formatOption(value: string | undefined, option: string): FormatName | undefined {
  return value === undefined ? undefined : oneOf<FormatName>(value, ['raw', 'qcow2'], option, 'raw');
}

/** Open options shared by every command. */
function openOptions(v: Values, format: FormatName | undefined): OpenOptions {
  const dirs = v['allow-dir'];
  const depth = str(v, 'max-chain-depth');
  const metadata = str(v, 'max-metadata-memory');
  return {
    ...(format === undefined ? {} : { format }),
    ...(Array.isArray(dirs) ? { allowDirs: dirs } : {}),
    ...(depth === undefined ? {} : { maxChainDepth: parseSize(depth, '--max-chain-depth') }),
    ...(metadata === undefined ? {} : { maxMetadataBytes: parseSize(metadata, '--max-metadata-memory') }),
    probeBackingFormat: v['probe-backing-format'] === true,
    // qemu-img warns about a probed raw format only when it opens the image writable; vdisk
    // never writes, so like qemu-img's read-only commands it stays quiet about that one.
    onWarning: (m: string, code: WarningCode) => {
      if (code !== 'RAW_FORMAT_PROBED') process.stderr.write(m + '\n');
    },
  };
}

async function withImage<T>(path: string, options: OpenOptions, f: (img: Image) => Promise<T>): Promise<T> {
  const img = await openImage(path, options);
  try {
    return await f(img);
  } finally {
    await img.close();
  }
}

function printError(e: unknown, debug: boolean): void {
  if (isVdiskError(e)) process.stderr.write(`vdisk: ${e.code}: ${e.message}\n`);
  else process.stderr.write(`vdisk: INTERNAL: ${e instanceof Error ? e.message : String(e)}\n`);
  if (debug && e instanceof Error && e.stack !== undefined) process.stderr.write(e.stack + '\n');
}

/** Runs the CLI with `argv` (without node and script); returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const command = argv[0];
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined ? 1 : 0;
  }
  const errorStatus = command === 'compare' ? 2 : 1;
  if (command === 'check') return runCheckCommand(argv.slice(1), debug);
  const out = new Output();
  try {
    if (!(command in COMMANDS)) throw bad(`unknown command '${command}' (try: map, info, snapshot, check, convert, compare)`, 'command', command);
    const name = command as CommandName;
    let parsed;
    try {
      parsed = parseArgs({ args: argv.slice(1), options: COMMANDS[name], allowPositionals: true, strict: true });
    } catch (e) {
      throw bad(e instanceof Error ? e.message : String(e), 'arguments');
    }
    const v = parsed.values as Values;
    const files = parsed.positionals;
    if (v['help'] === true) {
      process.stdout.write(USAGE);
      return 0;
    }
    const want = name === 'convert' || name === 'compare' ? 2 : 1;
    if (files.length !== want) throw bad(`${name} needs exactly ${want === 1 ? 'one FILE' : 'two files'}`, 'FILE');
    const first = files[0] as string;
    const format = formatOption(str(v, 'format'), '-f');
    switch (name) {
      case 'map': {
        const output = oneOf(str(v, 'output'), ['human', 'json'] as const, '--output', 'human');
        const mode = oneOf(str(v, 'mode'), ['mapping', 'allocation'] as const, '--mode', 'mapping');
        if (mode === 'allocation' && str(v, 'output') === 'human') throw bad('--mode=allocation prints JSON only', '--output', 'human');
        const startText = str(v, 'start-offset');
        const lengthText = str(v, 'max-length');
        // Offsets beyond 2^53 lie past any image vdisk opens: qemu-img then prints one empty
        // entry at that start (and a huge length limit is no limit).
        const startBig = startText === undefined ? 0n : parseSizeBig(startText, '--start-offset');
        const lengthBig = lengthText === undefined ? undefined : parseSizeBig(lengthText, '--max-length');
        const safe = BigInt(Number.MAX_SAFE_INTEGER);
        const start = startBig > safe ? Number.MAX_SAFE_INTEGER : Number(startBig);
        const maxLength = lengthBig === undefined || lengthBig > safe ? undefined : Number(lengthBig);
        if (startBig > safe) {
          await withImage(first, openOptions(v, format), async () => {
            if (output === 'json' && mode === 'mapping') {
              await out.write(`[{ "start": ${startBig}, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}]\n`);
            } else if (output === 'json') {
              await out.write('[]\n');
            } else {
              await out.write(HUMAN_MAP_HEADER);
            }
          });
          break;
        }
        const bitmap = str(v, 'bitmap');
        const base = str(v, 'base');
        const snapshot = str(v, 'snapshot');
        if (v['with-allocation'] === true && bitmap === undefined) throw bad('--with-allocation needs --bitmap NAME', '--with-allocation');
        if (base !== undefined && mode !== 'allocation') throw bad('--base needs --mode=allocation', '--base', base);
        if (bitmap !== undefined && (base !== undefined || snapshot !== undefined || str(v, 'mode') !== undefined)) {
          throw bad('--bitmap cannot be combined with --mode, --base or --snapshot', '--bitmap', bitmap);
        }
        if (snapshot !== undefined && base !== undefined) throw bad('--snapshot cannot be combined with --base', '--snapshot', snapshot);
        const options = { ...openOptions(v, format), ...(snapshot === undefined ? {} : { snapshot }) };
        if (bitmap !== undefined) {
          const withAllocation = v['with-allocation'] === true;
          await withImage(first, options, (img) => runBitmapMap(img, { bitmap, withAllocation, output, start, maxLength }, out));
        } else if (base !== undefined) {
          await withImage(first, options, (img) => runBaseMap(img, { base, start, maxLength }, out));
        } else {
          await withImage(first, options, (img) => runMap(img, { output, mode, start, maxLength }, out));
        }
        break;
      }
      case 'info': {
        const output = oneOf(str(v, 'output'), ['human', 'json'] as const, '--output', 'human');
        const backingChain = v['backing-chain'] === true;
        // qemu-img info opens neither the data file nor, without --backing-chain, the backing chain.
        const options = { ...openOptions(v, format), openDataFile: false, openBacking: backingChain };
        await withImage(first, options, (img) => runInfo(img, { output, backingChain }, out));
        break;
      }
      case 'convert': {
        const outputFormat = str(v, 'output-format');
        if (outputFormat === undefined) throw bad('convert needs -O raw', '-O');
        // The output writer's (or the pool's first) thread starts while the image opens —
        // unless the kernel writes the output (io_uring: ops/uring-writer.ts), when a
        // thread is started only for compressed clusters, once some are found.
        if (outputFormat === 'raw' && !ioUringUsable()) prestartFormatWorker();
        const snapshot = str(v, 'snapshot');
        await withImage(first, { ...openOptions(v, format), ...(snapshot === undefined ? {} : { snapshot }) }, (img) =>
          runConvert(img, files[1] as string, { outputFormat, progress: v['progress'] === true }),
        );
        break;
      }
      case 'snapshot': {
        if (v['list'] !== true) throw bad('snapshot supports only -l (list); vdisk never writes images', '-l');
        await withImage(first, openOptions(v, format), (img) => runSnapshotList(img, out));
        break;
      }
      case 'check':
        break;
      case 'compare':
        return await runCompareCommand(first, files[1] as string, v, format, out, debug);
    }
    await out.flush();
    return 0;
  } catch (e) {
    await out.flush().catch(() => undefined);
    printError(e, debug);
    return errorStatus;
  }
}

/** `check`: qemu-img's statuses (0 clean, 1 check failed or error, 2 corruptions, 3 leaks, 63 raw). */
async function runCheckCommand(args: string[], debug: boolean): Promise<number> {
  const out = new Output();
  try {
    let parsed;
    try {
      parsed = parseArgs({ args, options: COMMANDS.check, allowPositionals: true, strict: true });
    } catch (e) {
      throw bad(e instanceof Error ? e.message : String(e), 'arguments');
    }
    const v = parsed.values as Values;
    if (v['help'] === true) {
      process.stdout.write(USAGE);
      return 0;
    }
    if (parsed.positionals.length !== 1) throw bad('check needs exactly one FILE', 'FILE');
    const output = oneOf(str(v, 'output'), ['human', 'json'] as const, '--output', 'human');
    // vdiskChecks off: check reports what vdisk's open-time checks would refuse.
    const options = { ...openOptions(v, formatOption(str(v, 'format'), '-f')), openBacking: false, openDataFile: false, vdiskChecks: false };
    const img = await openImage(parsed.positionals[0] as string, options);
    try {
      const status = await runCheck(img, output, out, (line) => process.stderr.write(line + '\n'), (text) => process.stderr.write(text));
      await out.flush();
      return status;
    } finally {
      await img.close();
    }
  } catch (e) {
    await out.flush().catch(() => undefined);
    printError(e, debug);
    return isVdiskError(e) && e.code === 'CHECK_NOT_SUPPORTED' ? 63 : 1;
  }
}

/** `compare`: 0 identical, 1 different, 2 open/argument error, 3 status error, 4 read error. */
async function runCompareCommand(a: string, b: string, v: Values, fmt1: FormatName | undefined, out: Output, debug: boolean): Promise<number> {
  const fmt2 = formatOption(str(v, 'second-format'), '-F');
  const img1 = await openImage(a, openOptions(v, fmt1));
  let img2: Image;
  try {
    img2 = await openImage(b, openOptions(v, fmt2));
  } catch (e) {
    await img1.close();
    throw e;
  }
  try {
    const r = await compareImages(img1, img2, v['strict'] === true);
    for (const w of r.warnings) await out.write(w + '\n');
    await out.write(r.identical ? 'Images are identical.\n' : r.message + '\n');
    await out.flush();
    return r.identical ? 0 : 1;
  } catch (e) {
    await out.flush();
    if (!(e instanceof CompareStepError)) throw e;
    printError(e.error, debug);
    return e.step === 'status' ? 3 : 4;
  } finally {
    await img1.close();
    await img2.close();
  }
}
