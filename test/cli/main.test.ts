/**
 * The CLI entry point (src/cli/main.ts), called directly with stdout/stderr captured:
 * usage and exit statuses, argument errors printed as `vdisk: CODE: message` with status
 * 1 (unknown command or option, bad --output/--format/--mode, missing FILE, bad sizes,
 * missing files), and small end-to-end runs of `map` and `info` on images built in a temp
 * directory.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import { captureStdio } from '../helpers/stdio.js';
import { COMPRESSED, COPIED, buildQcow2 } from '../helpers/qcow2-builder.js';

let dir: string;
let plain: string;
let compressed: string;
let raw: string;
let out: string[];
let err: string[];

const CS = 0x10000;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'vdisk-main-'));
  // 1 MiB, 64 KiB clusters: L1 at 0x30000 -> L2 at 0x40000; guest 0 -> host 0x50000.
  plain = path.join(dir, 'a.qcow2');
  await writeFile(plain, buildQcow2({ l1: [COPIED | 0x40000n], tables: [{ offset: 0x40000, entries: [COPIED | 0x50000n] }], fileSize: 6 * CS }));
  // Guest 0 data, guest 64 KiB compressed (E1's c.qcow2 shape).
  compressed = path.join(dir, 'c.qcow2');
  await writeFile(
    compressed,
    buildQcow2({ l1: [COPIED | 0x40000n], tables: [{ offset: 0x40000, entries: [COPIED | 0x50000n, COMPRESSED | 0x60000n] }], fileSize: 7 * CS }),
  );
  raw = path.join(dir, 'r.raw');
  await writeFile(raw, new Uint8Array(1000).fill(1));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

beforeEach(() => {
  ({ out, err } = captureStdio());
});

afterEach(() => {
  vi.restoreAllMocks();
});

const stdout = () => out.join('');
const stderr = () => err.join('');

describe('usage', () => {
  it('no arguments: usage on stdout, status 1', async () => {
    expect(await main([])).toBe(1);
    expect(stdout()).toMatch(/^usage: vdisk <command>/);
    expect(stderr()).toBe('');
  });

  it.each([['help'], ['--help'], ['-h'], ['map', '--help'], ['info', '-h']])('%j: usage, status 0', async (...argv) => {
    expect(await main(argv)).toBe(0);
    expect(stdout()).toContain('usage: vdisk');
  });
});

describe('argument errors: `vdisk: CODE: message`, status 1', () => {
  const fails = async (argv: string[], line: string | RegExp) => {
    expect(await main(argv)).toBe(1);
    if (typeof line === 'string') expect(stderr()).toBe(line);
    else expect(stderr()).toMatch(line);
    expect(stdout()).toBe('');
  };

  it('unknown command', async () => {
    await fails(['frob', 'x.img'], /^vdisk: ARG_INVALID: unknown command 'frob' \(try: map, info.*\)\n$/);
  });

  it('unknown option', async () => {
    await fails(['map', '--bogus', plain], /^vdisk: ARG_INVALID: .*--bogus.*\n$/);
  });

  it('bad --output', async () => {
    await fails(['map', '--output=xml', plain], /^vdisk: ARG_INVALID: invalid (--)?output 'xml': expected human or json\n$/);
  });

  it('bad --format', async () => {
    await fails(['map', '-f', 'vmdk', plain], /^vdisk: ARG_INVALID: invalid (-f|--format|format) 'vmdk': expected raw or qcow2\n$/);
  });

  it('bad --mode', async () => {
    await fails(['map', '--mode=precise', plain], /^vdisk: ARG_INVALID: invalid (--)?mode 'precise': expected mapping or allocation\n$/);
  });

  it('--mode=allocation with human output', async () => {
    await fails(['map', '--mode=allocation', '--output=human', plain], /^vdisk: ARG_INVALID: .*--mode=allocation.*JSON.*\n$/);
  });

  it.each([[['map']], [['map', 'x.qcow2', 'y.qcow2']], [['info']]])('missing or extra FILE: %j', async (argv) => {
    await fails(argv, new RegExp(`^vdisk: ARG_INVALID: ${argv[0] ?? ''} needs exactly one FILE\n$`));
  });

  it('bad size arguments are ARG_SIZE', async () => {
    await fails(['map', '-s', '1x', plain], /^vdisk: ARG_SIZE: invalid -?-?start-offset '1x'/);
  });

  it('negative sizes are refused', async () => {
    await fails(['map', '--start-offset=-1', plain], /^vdisk: ARG_SIZE: /);
    out.length = 0;
    err.length = 0;
    await fails(['map', '--max-length=-1k', plain], /^vdisk: ARG_SIZE: /);
  });

  it('a missing image is IO_OPEN naming the file', async () => {
    const p = path.join(dir, 'missing.qcow2');
    await fails(['map', p], `vdisk: IO_OPEN: cannot open '${p}': ENOENT\n`);
  });

  it('--debug adds the stack trace', async () => {
    expect(await main(['map', '--debug', '--output=xml', plain])).toBe(1);
    const lines = stderr().split('\n');
    expect(lines[0]).toMatch(/^vdisk: ARG_INVALID: invalid (--)?output 'xml'/);
    expect(stderr()).toMatch(/\n\s+at /);
  });
});

describe('map', () => {
  it('--output=json prints qemu-img\'s JSON', async () => {
    expect(await main(['map', '--output=json', plain])).toBe(0);
    expect(stdout()).toBe(
      '[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},\n' +
        '{ "start": 65536, "length": 983040, "depth": 0, "present": false, "zero": true, "data": false}]\n',
    );
    expect(stderr()).toBe('');
  });

  it('human output is the default', async () => {
    expect(await main(['map', plain])).toBe(0);
    expect(stdout()).toBe(`Offset          Length          Mapped to       File\n0               0x10000         0x50000         ${plain}\n`);
  });

  it('-s and -l with size suffixes (unaligned start, offset shifted)', async () => {
    expect(await main(['map', '--output=json', '-s', '1000', '-l', '64k', plain])).toBe(0);
    expect(stdout()).toBe(
      '[{ "start": 1000, "length": 64536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 328680},\n' +
        '{ "start": 65536, "length": 1000, "depth": 0, "present": false, "zero": true, "data": false}]\n',
    );
  });

  it('a start at or past the end prints the single zero-length entry', async () => {
    expect(await main(['map', '--output=json', '--start-offset=2M', plain])).toBe(0);
    expect(stdout()).toBe('[{ "start": 2097152, "length": 0, "depth": 0, "present": false, "zero": false, "data": false}]\n');
  });

  it('-f qcow2 is accepted', async () => {
    expect(await main(['map', '-f', 'qcow2', '--output=json', plain])).toBe(0);
  });

  it('human output meets a compressed cluster: rows so far, then the qemu-img error, status 1', async () => {
    expect(await main(['map', compressed])).toBe(1);
    expect(stdout()).toBe(`Offset          Length          Mapped to       File\n0               0x10000         0x50000         ${compressed}\n`);
    expect(stderr()).toBe('vdisk: MAP_UNMAPPABLE_DATA: File contains external, encrypted or compressed clusters.\n');
  });

  it('JSON output lists the compressed cluster as data without an offset', async () => {
    expect(await main(['map', '--output=json', compressed])).toBe(0);
    expect(stdout()).toContain('{ "start": 65536, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true}');
  });

  it('--mode=allocation prints the allocation map', async () => {
    expect(await main(['map', '--mode=allocation', plain])).toBe(0);
    expect(stdout()).toBe(
      '[{ "start": 0, "length": 65536, "depth": 0, "present": true},\n{ "start": 65536, "length": 983040, "depth": 0, "present": false}]\n',
    );
  });

  it('a raw image without -f: probed as raw without a warning (qemu-img warns only on writable opens); the size rounded up to 512', async () => {
    expect(await main(['map', '--mode=allocation', '--output=json', raw])).toBe(0);
    expect(stdout()).toBe('[{ "start": 0, "length": 1024, "depth": 0, "present": true}]\n');
    expect(stderr()).toBe('');
  });

  it('-f raw: no warning', async () => {
    expect(await main(['map', '-f', 'raw', '--mode=allocation', raw])).toBe(0);
    expect(stderr()).toBe('');
  });

  it('a qcow2 opened as raw is just bytes', async () => {
    expect(await main(['map', '-f', 'raw', '--mode=allocation', plain])).toBe(0);
    expect(stdout()).toBe(`[{ "start": 0, "length": ${6 * CS}, "depth": 0, "present": true}]\n`);
  });
});

describe('info', () => {
  it('--output=json prints the image facts', async () => {
    expect(await main(['info', '--output=json', plain])).toBe(0);
    const info = JSON.parse(stdout()) as Record<string, unknown>;
    expect(info).toMatchObject({ 'virtual-size': 1048576, filename: plain, format: 'qcow2', 'cluster-size': 65536 });
  });

  it('errors of the image are reported with their code', async () => {
    const bad = path.join(dir, 'bad.qcow2');
    await writeFile(bad, buildQcow2({ header: { version: 4 } }));
    expect(await main(['info', bad])).toBe(1);
    expect(stderr()).toBe('vdisk: QCOW2_VERSION: unsupported qcow2 version 4 (supported: 2, 3)\n');
  });
});
