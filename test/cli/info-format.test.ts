/**
 * `vdisk info` output: the QDict key order, QEMU's JSON layout and string escaping,
 * `size_to_str`, the snapshot table and the format-specific tree; then, when qemu-img is
 * installed, `vdisk info` compared byte for byte with `qemu-img info` (JSON and human,
 * with and without --backing-chain) on images generated in a temporary directory.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { dumpQObject, formatG3, infoHuman, sizeToStr, snapshotHeader, snapshotRow } from '../../src/cli/format/info-human.js';
import { qdictBucket, qdictOrder, qemuJson, qemuQuote, tdbHash } from '../../src/cli/format/qemu-json.js';
import { main } from '../../src/cli/main.js';
import type { ImageInfo } from '../../src/status/image-info.js';
import { retryQemuLuksFlake } from '../helpers/qemu.js';

// Dates in the snapshot table are local time: use a zone with an offset, for both tools.
process.env.TZ = 'America/New_York';

describe('QDict order', () => {
  it('hashes keys with tdb_hash into 512 buckets', () => {
    expect(tdbHash('')).toBe(12345);
    const buckets = Object.fromEntries(['virtual-size', 'filename', 'cluster-size', 'format', 'actual-size', 'format-specific', 'dirty-flag', 'compat', 'data']
      .map((k) => [k, qdictBucket(k)]));
    expect(buckets).toEqual({ 'virtual-size': 309, filename: 313, 'cluster-size': 316, format: 337, 'actual-size': 351,
      'format-specific': 354, 'dirty-flag': 501, compat: 16, data: 505 });
  });

  it('orders by bucket, and inside a bucket newest first', () => {
    expect(qdictOrder(['filename', 'format', 'dirty-flag', 'actual-size', 'virtual-size', 'cluster-size', 'format-specific']))
      .toEqual(['virtual-size', 'filename', 'cluster-size', 'format', 'actual-size', 'format-specific', 'dirty-flag']);
    // k900, id and k901 share bucket 486.
    expect(['k900', 'id', 'k901'].map(qdictBucket)).toEqual([486, 486, 486]);
    expect(qdictOrder(['k900', 'name', 'id', 'k901'])).toEqual(['name', 'k901', 'id', 'k900']);
  });
});

describe('qemuJson', () => {
  it('lays out nested dicts and lists like json-writer.c, empty ones included', () => {
    expect(qemuJson({ data: { flags: [], extra: {}, list: [1, 'a', true] }, type: 'qcow2' })).toBe(
      '{\n    "type": "qcow2",\n    "data": {\n        "flags": [\n        ],\n        "extra": {\n        },\n        "list": [\n            1,\n            "a",\n            true\n        ]\n    }\n}',
    );
    expect(qemuJson([])).toBe('[\n]');
    expect(qemuJson([{ a: -5n }])).toBe('[\n    {\n        "a": -5\n    }\n]');
    expect(qemuJson({ a: undefined, b: 2 ** 53 })).toBe('{\n    "b": 9007199254740992\n}');
  });

  it('escapes strings as quoted_str does', () => {
    expect(qemuQuote('a"b\\c/d')).toBe('"a\\"b\\\\c/d"');
    expect(qemuQuote('\b\f\n\r\t\u0001\u007f')).toBe('"\\b\\f\\n\\r\\t\\u0001\\u007F"');
    expect(qemuQuote('é€😀')).toBe('"\\u00E9\\u20AC\\uD83D\\uDE00"');
    expect(qemuQuote('\ufdd0\uffff\ud800x\u0000')).toBe('"\\uFFFD\\uFFFD\\uFFFDx\\u0000"');
  });
});

describe('size_to_str', () => {
  // Every expected string below was printed by qemu-img 7.2.
  const cases: Array<[number | bigint, string]> = [
    [0, '0 B'], [1, '1 B'], [512, '512 B'], [999, '999 B'], [1000, '0.977 KiB'], [1023, '0.999 KiB'], [1024, '1 KiB'],
    [1025, '1 KiB'], [1152, '1.12 KiB'], [1160, '1.13 KiB'], [1536, '1.5 KiB'], [10240, '10 KiB'], [11520, '11.2 KiB'],
    [102400, '100 KiB'], [102912, '100 KiB'], [103936, '102 KiB'], [115200, '112 KiB'], [229376, '224 KiB'], [1022976, '999 KiB'],
    [1023488, '1e+03 KiB'], [1024000, '0.977 MiB'], [1048064, '1 MiB'], [1572864, '1.5 MiB'], [10485760, '10 MiB'],
    [104857600, '100 MiB'], [1073217536, '1 GiB'], [1073741824, '1 GiB'], [1610612736, '1.5 GiB'], [1099511627775, '1 TiB'],
    [1099511627776, '1 TiB'], [1125899906842624n, '1 PiB'], [9007199254740993n, '8 PiB'], [1152921504606846976n, '1 EiB'],
    [9223372036854775808n, '8 EiB'], [18446744073709551104n, '16 EiB'], [18446744073709551615n, '16 EiB'], [-1, '16 EiB'],
  ];
  for (const [v, s] of cases) it(`${v} → ${s}`, () => expect(sizeToStr(v)).toBe(s));

  it('formats %.3g exactly, ties to even', () => {
    expect(formatG3(1125n, 3)).toBe('141'); // 140.625
    expect(formatG3(9n, 3)).toBe('1.12'); // 1.125
    expect(formatG3(1999n, 1)).toBe('1e+03'); // 999.5
    expect(formatG3(1n, 10)).toBe('0.000977');
    expect(formatG3(1n, 20)).toBe('9.54e-07');
  });
});

describe('human output pieces', () => {
  it('prints the snapshot table with byte-counted widths and local dates', () => {
    expect(snapshotHeader()).toBe('ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT');
    const row = snapshotRow({ id: '1', name: 'sé', 'vm-state-size': 1536, 'date-sec': 0, 'date-nsec': 0, 'vm-clock-sec': 3723, 'vm-clock-nsec': 456_789_012, icount: 7 });
    // %-9s, space, %-16s ("sé" is 3 bytes, so 13 spaces), space, %8s.
    expect(row).toBe('1         sé' + ' '.repeat(15) + '1.5 KiB 1969-12-31 19:00:00 01:02:03.456          7');
    const noIcount = snapshotRow({ id: '2', name: 'n', 'vm-state-size': 0, 'date-sec': 0, 'date-nsec': 0, 'vm-clock-sec': 0, 'vm-clock-nsec': 0 });
    expect(noIcount.endsWith('00:00:00.000           ')).toBe(true);
  });

  it('dumps the format-specific tree with dashes as spaces and [i] items', () => {
    expect(dumpQObject({ bitmaps: [{ name: 'b', granularity: 65536, flags: [] }, { name: 'c', granularity: 512, flags: ['in-use', 'auto'] }], 'refcount-bits': 16 }, 1)).toBe(
      '    bitmaps:\n        [0]:\n            flags:\n            name: b\n            granularity: 65536\n' +
      '        [1]:\n            flags:\n                [0]: in-use\n                [1]: auto\n            name: c\n            granularity: 512\n' +
      '    refcount bits: 16\n',
    );
  });

  it('prints backing lines only as far as they differ', () => {
    const base: ImageInfo = { filename: 't.qcow2', format: 'qcow2', 'dirty-flag': true, 'actual-size': 0, 'virtual-size': 512, 'cluster-size': 512, encrypted: true };
    expect(infoHuman({ ...base, 'backing-filename': 'b', 'full-backing-filename': 'b' })).toContain('cleanly shut down: no\nbacking file: b\n');
    expect(infoHuman({ ...base, 'backing-filename': 'b', 'full-backing-filename': 'd/b', 'backing-filename-format': 'raw' }))
      .toContain('encrypted: yes\ncluster_size: 512\ncleanly shut down: no\nbacking file: b (actual path: d/b)\nbacking file format: raw\n');
    expect(infoHuman({ ...base, 'backing-filename': 'b' })).toContain('backing file: b (cannot determine actual path)\n');
  });
});

// ---------------------------------------------------------------------------------------
// Byte-for-byte comparison with qemu-img
// ---------------------------------------------------------------------------------------

function has(cmd: string): boolean {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const haveQemu = has('qemu-img');
const haveQemuIo = haveQemu && has('qemu-io');
if (!haveQemu) console.warn('info-format.test.ts: qemu-img not found, skipping the byte-for-byte comparisons with qemu-img');

/** Runs `vdisk <args>` in-process in `cwd`; returns stdout and the exit status. */
async function vdisk(cwd: string, args: string[]): Promise<{ out: string; status: number }> {
  let out = '';
  const so = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return true;
  });
  const se = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  const old = process.cwd();
  process.chdir(cwd);
  try {
    const status = await main(args);
    return { out, status };
  } finally {
    process.chdir(old);
    so.mockRestore();
    se.mockRestore();
  }
}

/** Sets bits in the byte at `offset` of `file`. */
function orByte(file: string, offset: number, bits: number): void {
  const fd = openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, offset);
    b[0] = (b[0] ?? 0) | bits;
    writeSync(fd, b, 0, 1, offset);
  } finally {
    closeSync(fd);
  }
}

describe('vdisk info is byte-identical to qemu-img info', () => {
  let dir = '';
  const q = (cwd: string, ...args: string[]): string => execFileSync('qemu-img', args, { cwd, encoding: 'utf8', env: { ...process.env, TZ: process.env.TZ } });
  const create = (...args: string[]): string => retryQemuLuksFlake(() => q(dir, 'create', '-q', '-f', 'qcow2', ...args));

  beforeAll(() => {
    if (!haveQemu) return;
    dir = mkdtempSync(path.join(tmpdir(), 'vdisk-info-fmt-'));
    const secret = ['--object', 'secret,id=s0,data=abc'];
    create('v3.qcow2', '1M');
    create('-o', 'compat=0.10', 'v2.qcow2', '1M');
    create('-o', 'lazy_refcounts=on', 'lazy.qcow2', '3M');
    create('-o', 'refcount_bits=1', 'rc1.qcow2', '1M');
    create('-o', 'refcount_bits=8,cluster_size=512', 'rc8-c512.qcow2', '3000K');
    create('-o', 'refcount_bits=64,cluster_size=4k', 'rc64-c4k.qcow2', '100M');
    create('-o', 'compression_type=zstd', 'zstd.qcow2', '1G');
    create('-o', 'extended_l2=on,cluster_size=2M', 'extl2-c2m.qcow2', '10G');
    create('-o', 'data_file=plain.raw', 'ext.qcow2', '5M');
    create('-o', 'data_file=raw.raw,data_file_raw=on', 'ext-raw.qcow2', '5M');
    create('snaps.qcow2', '1M');
    for (const n of ['first', 'a much longer snapshot name', 'sé']) q(dir, 'snapshot', '-c', n, 'snaps.qcow2');
    create('bitmaps.qcow2', '1M');
    q(dir, 'bitmap', '--add', 'bitmaps.qcow2', 'enabled');
    q(dir, 'bitmap', '--add', '--disable', '-g', '512', 'bitmaps.qcow2', 'disabled one');
    q(dir, 'bitmap', '--add', '-g', '2M', 'bitmaps.qcow2', 'b"3\\');
    create('dirty.qcow2', '1M');
    orByte(path.join(dir, 'dirty.qcow2'), 79, 1);
    create('corrupt.qcow2', '1M');
    orByte(path.join(dir, 'corrupt.qcow2'), 79, 2);
    create(...secret, '-o', 'encrypt.format=aes,encrypt.key-secret=s0', 'aes.qcow2', '1M');
    create(...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', 'luks.qcow2', '1M');
    create(...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=sha1', 'luks-essiv.qcow2', '1M');
    if (haveQemuIo) {
      // A writer killed while running: lazy refcounts leave the dirty bit, bitmaps stay in use.
      create('-o', 'lazy_refcounts=on', 'killed.qcow2', '1M');
      q(dir, 'bitmap', '--add', 'killed.qcow2', 'tracking');
      try {
        execFileSync('qemu-io', ['-c', 'write 0 64k', '-c', 'abort', 'killed.qcow2'], { cwd: dir, stdio: 'ignore' });
      } catch {
        // qemu-io aborts on purpose.
      }
    }
    // Raw files of unaligned sizes, and a chain with relative names in subdirectories.
    writeFileSync(path.join(dir, 'odd.raw'), 'x'.repeat(1000));
    writeFileSync(path.join(dir, 'empty.raw'), '');
    mkdirSync(path.join(dir, 'sub', 'deep'), { recursive: true });
    writeFileSync(path.join(dir, 'sub', 'base.raw'), '');
    truncateSync(path.join(dir, 'sub', 'base.raw'), 1_000_000);
    q(path.join(dir, 'sub'), 'create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'mid.qcow2');
    q(path.join(dir, 'sub', 'deep'), 'create', '-q', '-f', 'qcow2', '-b', '../mid.qcow2', '-F', 'qcow2', 'top.qcow2', '2M');
    q(dir, 'create', '-q', '-f', 'qcow2', '-b', path.join(dir, 'sub', 'deep', 'top.qcow2'), '-F', 'qcow2', 'abs.qcow2');
    q(dir, 'create', '-q', '-f', 'qcow2', '-b', 'v3.qcow2', '-F', 'qcow2', 'same-dir.qcow2');
  });
  afterAll(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  const single = ['v3.qcow2', 'v2.qcow2', 'lazy.qcow2', 'rc1.qcow2', 'rc8-c512.qcow2', 'rc64-c4k.qcow2', 'zstd.qcow2', 'extl2-c2m.qcow2',
    'ext.qcow2', 'ext-raw.qcow2', 'snaps.qcow2', 'bitmaps.qcow2', 'dirty.qcow2', 'corrupt.qcow2', 'aes.qcow2', 'luks.qcow2',
    'luks-essiv.qcow2', 'same-dir.qcow2', ...(haveQemuIo ? ['killed.qcow2'] : [])];
  for (const name of single) {
    it.skipIf(!haveQemu)(`${name}: JSON and human`, async () => {
      for (const output of ['json', 'human']) {
        const expected = q(dir, 'info', `--output=${output}`, name);
        const got = await vdisk(dir, ['info', `--output=${output}`, name]);
        expect(got.status).toBe(0);
        expect(got.out).toBe(expected);
      }
    });
  }

  for (const name of ['odd.raw', 'empty.raw', 'sub/base.raw']) {
    it.skipIf(!haveQemu)(`${name}: raw, JSON and human`, async () => {
      for (const output of ['json', 'human']) {
        expect((await vdisk(dir, ['info', '-f', 'raw', `--output=${output}`, name])).out).toBe(q(dir, 'info', '-f', 'raw', `--output=${output}`, name));
      }
    });
  }

  const chains: Array<[string, string]> = [
    ['.', 'sub/deep/top.qcow2'],
    ['.', './sub/deep/top.qcow2'],
    ['sub/deep', 'top.qcow2'],
    ['sub/deep', '../../abs.qcow2'],
    ['sub', 'deep/../deep/top.qcow2'],
    ['.', 'same-dir.qcow2'],
  ];
  for (const [cwd, name] of chains) {
    it.skipIf(!haveQemu)(`backing chain of ${name} from ${cwd}/`, async () => {
      const where = path.join(dir, cwd);
      for (const output of ['json', 'human']) {
        for (const chain of [[], ['--backing-chain']]) {
          const expected = q(where, 'info', `--output=${output}`, ...chain, name);
          const got = await vdisk(where, ['info', '--allow-dir', dir, `--output=${output}`, ...chain, name]);
          expect(got.out).toBe(expected);
        }
      }
    });
  }
});
