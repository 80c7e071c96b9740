/**
 * The `vdisk` command line: argument parsing and dispatch. Errors print as
 * `vdisk: CODE: message` on stderr with exit status 1 (the stack only with `--debug`).
 */
import { parseArgs } from 'node:util';
import { InvalidArgumentError, isVdiskError } from '../errors.js';
import type { FormatName } from '../formats/driver.js';
import { openImage, type OpenOptions } from '../image.js';
import { runInfo } from './commands/info.js';
import { runMap } from './commands/map.js';
import { Output } from './output.js';
import { parseSize } from './size-arg.js';

const USAGE = `usage: vdisk <command> [options] FILE

commands:
  map  [-f FMT] [--output=human|json] [-s|--start-offset N] [-l|--max-length N]
       [--mode=mapping|allocation] FILE
  info [-f FMT] [--output=human|json] [--backing-chain] FILE

common options:
  -f, --format FMT          raw or qcow2 (default: probe the qcow2 magic, else raw)
  --allow-dir DIR           also allow backing/data files under DIR (repeatable)
  --max-chain-depth N       most layers in a backing chain (default 16)
  --probe-backing-format    guess the format of backing files that record none
  --debug                   print stack traces on errors
`;

const OPTIONS = {
  format: { type: 'string', short: 'f' },
  output: { type: 'string' },
  'start-offset': { type: 'string', short: 's' },
  'max-length': { type: 'string', short: 'l' },
  mode: { type: 'string' },
  'backing-chain': { type: 'boolean' },
  'allow-dir': { type: 'string', multiple: true },
  'max-chain-depth': { type: 'string' },
  'probe-backing-format': { type: 'boolean' },
  debug: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

function bad(message: string, field: string, value?: string): InvalidArgumentError {
  return new InvalidArgumentError('ARG_INVALID', message, value === undefined ? { field } : { field, value });
}

function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], option: string, dflt: T): T {
  if (value === undefined) return dflt;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw bad(`invalid --${option} '${value}': expected ${allowed.join(' or ')}`, option, value);
}

/** Runs the CLI with `argv` (without node and script); returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  let debug = argv.includes('--debug');
  const out = new Output();
  try {
    const [command, ...rest] = argv;
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      process.stdout.write(USAGE);
      return command === undefined ? 1 : 0;
    }
    let parsed;
    try {
      parsed = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true });
    } catch (e) {
      throw bad(e instanceof Error ? e.message : String(e), 'arguments');
    }
    const v = parsed.values;
    debug = v.debug === true;
    if (v.help === true) {
      process.stdout.write(USAGE);
      return 0;
    }
    if (command !== 'map' && command !== 'info') throw bad(`unknown command '${command}' (try: map, info)`, 'command', command);
    if (parsed.positionals.length !== 1) throw bad(`${command} needs exactly one FILE`, 'FILE');
    const file = parsed.positionals[0] as string;
    const format = v.format === undefined ? undefined : oneOf<FormatName>(v.format, ['raw', 'qcow2'], 'format', 'raw');
    const output = oneOf(v.output, ['human', 'json'] as const, 'output', 'human');
    const maxDepth = v['max-chain-depth'] === undefined ? undefined : parseSize(v['max-chain-depth'], '--max-chain-depth');
    const openOptions: OpenOptions = {
      ...(format === undefined ? {} : { format }),
      ...(v['allow-dir'] === undefined ? {} : { allowDirs: v['allow-dir'] }),
      ...(maxDepth === undefined ? {} : { maxChainDepth: maxDepth }),
      probeBackingFormat: v['probe-backing-format'] === true,
      onWarning: (m: string) => process.stderr.write(m + '\n'),
      ...(command === 'info' && v['backing-chain'] !== true ? { openBacking: false, openDataFile: false } : {}),
      ...(command === 'info' ? { openDataFile: false } : {}),
    };
    if (command === 'map') {
      const mode = oneOf(v.mode, ['mapping', 'allocation'] as const, 'mode', 'mapping');
      if (mode === 'allocation' && v.output !== undefined && output !== 'json') {
        throw bad('--mode=allocation prints JSON only', 'output', v.output);
      }
      const start = v['start-offset'] === undefined ? 0 : parseSize(v['start-offset'], '--start-offset');
      const maxLength = v['max-length'] === undefined ? undefined : parseSize(v['max-length'], '--max-length');
      const img = await openImage(file, openOptions);
      try {
        await runMap(img, { output, mode, start, maxLength }, out);
      } finally {
        await out.flush();
        await img.close();
      }
    } else {
      const img = await openImage(file, openOptions);
      try {
        await runInfo(img, { output, backingChain: v['backing-chain'] === true }, out);
      } finally {
        await out.flush();
        await img.close();
      }
    }
    return 0;
  } catch (e) {
    await out.flush().catch(() => undefined);
    if (isVdiskError(e)) {
      process.stderr.write(`vdisk: ${e.code}: ${e.message}\n`);
    } else {
      process.stderr.write(`vdisk: INTERNAL: ${e instanceof Error ? e.message : String(e)}\n`);
    }
    if (debug && e instanceof Error && e.stack !== undefined) process.stderr.write(e.stack + '\n');
    return 1;
  }
}
