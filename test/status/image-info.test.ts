/**
 * The info object: snapshot conversion, backing names, and, when qemu-img is installed,
 * the whole object compared with qemu-img's parsed JSON for generated images. (C strings:
 * test/binary/c-string.test.ts; LUKS headers: test/formats/qcow2/luks-header.test.ts.)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SnapshotTableEntry } from '../../src/formats/qcow2/snapshots.js';
import { openImage } from '../../src/image.js';
import { fullBackingFilename, snapshotInfo } from '../../src/status/image-info.js';
import { retryQemuLuksFlake } from '../helpers/qemu.js';

describe('snapshotInfo', () => {
  const entry = (over: Partial<SnapshotTableEntry>): SnapshotTableEntry => ({
    index: 0, offset: 0, l1TableOffset: 0n, l1Size: 0, idBytes: new TextEncoder().encode('1'), nameBytes: new TextEncoder().encode('n'),
    id: '1', name: 'n', dateSec: 5, dateNsec: 6, vmClockNsec: 3_723_456_789_012n, vmStateSize: 1536n, extraDataSize: 24,
    diskSize: 0n, icount: 0n, ...over,
  });
  it('splits the VM clock and keys icount on its presence', () => {
    expect(snapshotInfo(entry({}))).toEqual({ id: '1', name: 'n', 'vm-state-size': 1536, 'date-sec': 5, 'date-nsec': 6, 'vm-clock-sec': 3723, 'vm-clock-nsec': 456_789_012, icount: 0 });
    expect(snapshotInfo(entry({ icount: null }))).not.toHaveProperty('icount');
    expect(snapshotInfo(entry({ icount: 0xffffffffffffffffn }))).not.toHaveProperty('icount');
  });
  it('prints 64-bit values as signed, as bigints beyond 2^53', () => {
    const i = snapshotInfo(entry({ icount: 0x8000000000000000n, vmStateSize: 0xffffffffffffffffn }));
    expect(i.icount).toBe(-0x8000000000000000n);
    expect(i['vm-state-size']).toBe(-1);
  });
  it('truncates ids to 127 and names to 255 bytes (QEMU pstrcpy)', () => {
    const i = snapshotInfo(entry({ idBytes: new Uint8Array(300).fill(0x41), nameBytes: new Uint8Array(300).fill(0x42) }));
    expect(i.id).toHaveLength(127);
    expect(i.name).toHaveLength(255);
  });
});

describe('fullBackingFilename', () => {
  it('combines relative names with the image directory as written', () => {
    expect(fullBackingFilename('a.qcow2', 'b.qcow2')).toBe('b.qcow2');
    expect(fullBackingFilename('d1/d2/top.qcow2', '../mid.qcow2')).toBe('d1/d2/../mid.qcow2');
    expect(fullBackingFilename('./x/t.qcow2', '/abs/b')).toBe('/abs/b');
    expect(fullBackingFilename('x/t.qcow2', 'nbd:host:10809')).toBe('nbd:host:10809');
  });
});

// ---------------------------------------------------------------------------------------
// Against qemu-img (parsed JSON)
// ---------------------------------------------------------------------------------------

function hasQemuImg(): boolean {
  try {
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const haveQemu = hasQemuImg();
if (!haveQemu) console.warn('image-info.test.ts: qemu-img not found, skipping the comparisons with qemu-img');

describe('imageInfo against qemu-img', () => {
  let dir = '';
  const q = (...args: string[]): string => execFileSync('qemu-img', args, { cwd: dir, encoding: 'utf8' });
  beforeAll(() => {
    if (!haveQemu) return;
    dir = mkdtempSync(path.join(tmpdir(), 'vdisk-info-'));
    const secret = ['--object', 'secret,id=s0,data=abc'];
    q('create', '-q', '-f', 'qcow2', 'v3.qcow2', '1M');
    q('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '1M');
    q('create', '-q', '-f', 'qcow2', '-o', 'data_file=data.raw,data_file_raw=on', 'ext.qcow2', '1M');
    q('create', '-q', '-f', 'qcow2', '-b', 'v3.qcow2', '-F', 'qcow2', 'top.qcow2');
    q('create', '-q', '-f', 'qcow2', 'snap.qcow2', '1M');
    q('snapshot', '-c', 'one', 'snap.qcow2');
    q('snapshot', '-c', 'two', 'snap.qcow2');
    q('create', '-q', '-f', 'qcow2', 'bm.qcow2', '1M');
    q('bitmap', '--add', 'bm.qcow2', 'b1');
    q('bitmap', '--add', '--disable', '-g', '512', 'bm.qcow2', 'b2');
    retryQemuLuksFlake(() => q('create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10', 'luks.qcow2', '1M'));
    q('create', '-q', '-f', 'qcow2', ...secret, '-o', 'encrypt.format=aes,encrypt.key-secret=s0', 'aes.qcow2', '1M');
    writeFileSync(path.join(dir, 'odd.raw'), '');
    truncateSync(path.join(dir, 'odd.raw'), 1000);
  });
  afterAll(() => {
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  });

  for (const [name, format] of [['v3.qcow2', 'qcow2'], ['v2.qcow2', 'qcow2'], ['ext.qcow2', 'qcow2'], ['top.qcow2', 'qcow2'], ['snap.qcow2', 'qcow2'],
    ['bm.qcow2', 'qcow2'], ['luks.qcow2', 'qcow2'], ['aes.qcow2', 'qcow2'], ['odd.raw', 'raw']] as const) {
    it.skipIf(!haveQemu)(`matches qemu-img info --output=json for ${name}`, async () => {
      const expected: unknown = JSON.parse(q('info', '-f', format, '--output=json', name));
      const cwd = process.cwd();
      process.chdir(dir); // names are shown as given, relative ones combined with the image's directory
      try {
        const img = await openImage(name, { format, openBacking: false, openDataFile: false });
        try {
          expect(await img.info()).toEqual(expected);
        } finally {
          await img.close();
        }
      } finally {
        process.chdir(cwd);
      }
    });
  }
});
