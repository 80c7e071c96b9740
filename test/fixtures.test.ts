/**
 * Golden tests over the committed fixtures in images/ (made by images/make-fixtures.sh with
 * qemu-img 7.2): `vdisk map --output=json` and human `vdisk map` must reproduce qemu-img's
 * stdout byte for byte (and its failure status where qemu-img failed), and
 * `vdisk info --output=json` must parse to the same object, `actual-size` aside (it depends
 * on the filesystem the checkout lives on). Needs no QEMU.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, runVdisk } from './helpers/cli.js';

const IMAGES = path.join(REPO_ROOT, 'images');

interface Fixture {
  /** File name inside images/ (the tools run with images/ as the working directory). */
  readonly file: string;
  readonly stem: string;
  readonly format: 'qcow2' | 'raw';
}

/** Every image in images/ that has goldens. */
function fixtures(): Fixture[] {
  return readdirSync(IMAGES)
    .filter((f) => /\.(qcow2|raw)$/.test(f))
    .map((file) => ({
      file,
      stem: file.replace(/\.[^.]+$/, ''),
      format: file.endsWith('.raw') ? ('raw' as const) : ('qcow2' as const),
    }))
    .filter((f) => existsSync(path.join(IMAGES, `${f.stem}.map.json`)))
    .sort((a, b) => a.file.localeCompare(b.file));
}

function golden(name: string): string {
  return readFileSync(path.join(IMAGES, name), 'utf8');
}

/** `<stem>.map.err`: "exit status N" then qemu-img's stderr. */
function goldenFailure(stem: string): { status: number; message: string } | null {
  const p = path.join(IMAGES, `${stem}.map.err`);
  if (!existsSync(p)) return null;
  const [first = '', ...rest] = readFileSync(p, 'utf8').split('\n');
  const m = /^exit status (\d+)$/.exec(first);
  if (m === null) throw new Error(`${p}: first line must be "exit status N"`);
  return { status: Number(m[1]), message: rest.join('\n').trim().replace(/^qemu-img: /, '') };
}

function withoutActualSize(info: unknown): unknown {
  if (typeof info !== 'object' || info === null) return info;
  const { ['actual-size']: _ignored, ...rest } = info as Record<string, unknown>;
  return rest;
}

const FIXTURES = fixtures();

describe('committed fixtures', () => {
  it('the corpus is present (images/make-fixtures.sh)', () => {
    const names = FIXTURES.map((f) => f.file);
    for (const expected of [
      'sample.qcow2',
      'kinds.qcow2',
      'prealloc-metadata.qcow2',
      'chain-top.qcow2',
      'subclusters.qcow2',
      'v2.qcow2',
      'datafile.qcow2',
      'datafile-raw.qcow2',
      'unaligned.raw',
    ]) {
      expect(names).toContain(expected);
    }
  });

  describe.each(FIXTURES)('$file', ({ file, stem, format }) => {
    const opts = { cwd: IMAGES };

    it('map --output=json matches qemu-img byte for byte', async () => {
      const r = await runVdisk(['map', '-f', format, '--output=json', file], opts);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(golden(`${stem}.map.json`));
    });

    if (format === 'qcow2') {
      it('map --output=json without -f (probed) matches too', async () => {
        const r = await runVdisk(['map', '--output=json', file], opts);
        expect(r.status).toBe(0);
        expect(r.stdout).toBe(golden(`${stem}.map.json`));
      });
    }

    it('human map matches qemu-img (stdout and exit status)', async () => {
      const r = await runVdisk(['map', '-f', format, file], opts);
      expect(r.stdout).toBe(golden(`${stem}.map.txt`));
      const failure = goldenFailure(stem);
      if (failure === null) {
        expect(r.stderr).toBe('');
        expect(r.status).toBe(0);
      } else {
        expect(r.status).toBe(failure.status);
        expect(r.stderr).toContain(failure.message);
      }
    });

    it('info --output=json parses to the same object (actual-size aside)', async () => {
      const r = await runVdisk(['info', '-f', format, '--output=json', file], opts);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const ours = JSON.parse(r.stdout) as unknown;
      const theirs = JSON.parse(golden(`${stem}.info.json`)) as unknown;
      expect(withoutActualSize(ours)).toEqual(withoutActualSize(theirs));
      expect(typeof (ours as Record<string, unknown>)['actual-size']).toBe('number');
    });
  });
});
