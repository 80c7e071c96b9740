/**
 * The open policy for files an image names (src/status/open-policy.ts): QEMU's
 * `path_combine` and `path_has_protocol`, and `vetReference` on real temp directories:
 * allowed directories (with `../`, symlinks pointing out, prefix look-alikes, `allowDirs`
 * widening), non-regular files (a FIFO must not hang, a directory, /dev/null), loops by
 * device and inode, the depth limit, missing files, NUL bytes and empty names
 * (HOSTILE-IMAGES.md §6d, §7).
 */
import { execFileSync } from 'node:child_process';
import { link, mkdir, mkdtemp, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IoError, PolicyError, type VdiskError } from '../../src/errors.js';
import { DEFAULT_MAX_CHAIN_DEPTH, hasProtocol, pathCombine, vetReference, type OpenPolicy } from '../../src/status/open-policy.js';

describe('pathCombine (QEMU path_combine)', () => {
  it.each([
    ['a.qcow2', 'b.qcow2', 'b.qcow2'],
    ['dir/a.qcow2', 'b.qcow2', 'dir/b.qcow2'],
    ['/x/y/a.qcow2', 'b.qcow2', '/x/y/b.qcow2'],
    ['/x/y/a.qcow2', '../b.qcow2', '/x/y/../b.qcow2'],
    ['./a.qcow2', 'sub/b.qcow2', './sub/b.qcow2'],
    ['dir/', 'b', 'dir/b'],
    ['/a.qcow2', 'b', '/b'],
    ['dir/a.qcow2', '/abs/b.qcow2', '/abs/b.qcow2'],
    ['', 'b', 'b'],
  ])('(%j, %j) -> %j', (base, name, want) => {
    expect(pathCombine(base, name)).toBe(want);
  });
});

describe('hasProtocol (QEMU path_has_protocol)', () => {
  it.each([
    'json:{"driver":"file","filename":"/etc/hostname"}',
    'nbd://127.0.0.1:1/x',
    'nbd:unix:/tmp/sock',
    'file:/etc/passwd',
    'file:a.qcow2',
    'http://example.com/a.qcow2',
    'https://example.com/a.qcow2',
    'a:b',
    ':x',
  ])('%j has a protocol', (name) => {
    expect(hasProtocol(name)).toBe(true);
  });

  it.each(['a.qcow2', '/abs/a.qcow2', './nbd:x', 'dir/file:x', 'dir/json:{}', '/x:y', '', 'plain'])(
    '%j has no protocol (no ":" before the first "/")',
    (name) => {
      expect(hasProtocol(name)).toBe(false);
    },
  );
});

describe('hasProtocol: POSIX separators', () => {
  // QEMU block.c path_has_protocol on POSIX: `p = path + strcspn(path, ":/")` — only '/'
  // ends the protocol part; the backslash is a separator on _WIN32 only. `x\\y:z` is a
  // (bogus) protocol name for qemu-img on Linux, so it must be refused, not opened as a file.
  it('a backslash does not hide a protocol prefix on POSIX ("x\\y:z")', () => {
    expect(hasProtocol('x\\y:z')).toBe(true);
  });
});

describe('vetReference', () => {
  let tmp: string;
  let root: string;
  let outside: string;
  let sibling: string;
  let policy: OpenPolicy;
  let top: string;

  beforeAll(async () => {
    tmp = await realpath(await mkdtemp(path.join(tmpdir(), 'vdisk-policy-')));
    root = path.join(tmp, 'root');
    outside = path.join(tmp, 'outside');
    sibling = path.join(tmp, 'root2'); // a prefix look-alike of root
    await mkdir(path.join(root, 'sub'), { recursive: true });
    await mkdir(outside);
    await mkdir(sibling);
    top = path.join(root, 'top.qcow2');
    await writeFile(top, 'top');
    await writeFile(path.join(root, 'base.qcow2'), 'base');
    await writeFile(path.join(root, 'sub', 'deep.qcow2'), 'deep');
    await writeFile(path.join(outside, 'secret.raw'), 'secret');
    await writeFile(path.join(sibling, 'x.raw'), 'x');
    await symlink(path.join(outside, 'secret.raw'), path.join(root, 'link-out.raw'));
    await symlink(path.join(root, 'base.qcow2'), path.join(root, 'link-in.qcow2'));
    await symlink(path.join(root, 'loop-a'), path.join(root, 'loop-b'));
    await symlink(path.join(root, 'loop-b'), path.join(root, 'loop-a'));
    await link(path.join(root, 'base.qcow2'), path.join(root, 'hard.qcow2'));
    execFileSync('mkfifo', [path.join(root, 'fifo')]);
    policy = { allowDirs: [root], maxChainDepth: DEFAULT_MAX_CHAIN_DEPTH, probeBackingFormat: false };
  });

  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  async function refused(p: Promise<unknown>, cls: typeof PolicyError | typeof IoError, code: string): Promise<VdiskError> {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, `expected ${code}`).toBeInstanceOf(cls);
    expect((err as VdiskError).code).toBe(code);
    return err as VdiskError;
  }

  it('a relative name resolves against the naming image\'s directory', async () => {
    const v = await vetReference('backing file', 'base.qcow2', top, policy, []);
    const st = await stat(path.join(root, 'base.qcow2'), { bigint: true });
    expect(v).toEqual({ displayPath: path.join(root, 'base.qcow2'), realPath: path.join(root, 'base.qcow2'), dev: st.dev, ino: st.ino });
  });

  it('the display path is QEMU\'s path_combine of the image name as written (no normalisation)', async () => {
    const naming = `${root}/sub/../top.qcow2`;
    const v = await vetReference('backing file', 'sub/deep.qcow2', naming, policy, []);
    expect(v.displayPath).toBe(`${root}/sub/../sub/deep.qcow2`);
    expect(v.realPath).toBe(path.join(root, 'sub', 'deep.qcow2'));
  });

  it('subdirectories, `../` that stays inside and symlinks inside are allowed', async () => {
    await expect(vetReference('backing file', 'sub/deep.qcow2', top, policy, [])).resolves.toMatchObject({
      realPath: path.join(root, 'sub', 'deep.qcow2'),
    });
    await expect(vetReference('backing file', '../root/base.qcow2', top, policy, [])).resolves.toMatchObject({
      realPath: path.join(root, 'base.qcow2'),
    });
    await expect(vetReference('backing file', 'link-in.qcow2', top, policy, [])).resolves.toMatchObject({
      displayPath: path.join(root, 'link-in.qcow2'),
      realPath: path.join(root, 'base.qcow2'),
    });
  });

  it.each([
    ['an absolute path outside (C1)', () => path.join(outside, 'secret.raw')],
    ['`../` out of the root (C2)', () => '../outside/secret.raw'],
    ['a symlink inside pointing outside (C2)', () => 'link-out.raw'],
    ['a prefix look-alike directory (root2)', () => '../root2/x.raw'],
  ])('%s: POLICY_OUTSIDE_ALLOWED_DIRS, naming the real path', async (_n, name) => {
    const e = await refused(vetReference('backing file', name(), top, policy, []), PolicyError, 'POLICY_OUTSIDE_ALLOWED_DIRS');
    expect(e.details).toMatchObject({ file: top, field: 'backing file', value: name() });
    expect(e.message).toContain('outside the allowed directories');
  });

  it('allowDirs widening admits another directory (and only that one)', async () => {
    const wide = { ...policy, allowDirs: [root, outside] };
    await expect(vetReference('backing file', 'link-out.raw', top, wide, [])).resolves.toMatchObject({
      realPath: path.join(outside, 'secret.raw'),
    });
    await refused(vetReference('backing file', '../root2/x.raw', top, wide, []), PolicyError, 'POLICY_OUTSIDE_ALLOWED_DIRS');
  });

  it('data files are vetted the same way', async () => {
    await refused(vetReference('external data file', path.join(outside, 'secret.raw'), top, policy, []), PolicyError, 'POLICY_OUTSIDE_ALLOWED_DIRS');
  });

  it('a FIFO is POLICY_NOT_REGULAR_FILE and does not hang (C10)', async () => {
    await refused(vetReference('backing file', 'fifo', top, policy, []), PolicyError, 'POLICY_NOT_REGULAR_FILE');
  });

  it('a directory is POLICY_NOT_REGULAR_FILE', async () => {
    await refused(vetReference('backing file', 'sub', top, policy, []), PolicyError, 'POLICY_NOT_REGULAR_FILE');
  });

  it('/dev/null: outside by default; with /dev allowed, not a regular file', async () => {
    await refused(vetReference('backing file', '/dev/null', top, policy, []), PolicyError, 'POLICY_OUTSIDE_ALLOWED_DIRS');
    await refused(vetReference('backing file', '/dev/null', top, { ...policy, allowDirs: [root, '/dev'] }, []), PolicyError, 'POLICY_NOT_REGULAR_FILE');
  });

  it('a file already in the chain (same dev/ino) is POLICY_BACKING_LOOP, also via a symlink or a hard link (C7, C8)', async () => {
    const st = await stat(path.join(root, 'base.qcow2'), { bigint: true });
    const inChain = [{ dev: st.dev, ino: st.ino, path: 'base.qcow2' }];
    for (const name of ['base.qcow2', 'link-in.qcow2', 'hard.qcow2', './sub/../base.qcow2']) {
      const e = await refused(vetReference('backing file', name, top, policy, inChain), PolicyError, 'POLICY_BACKING_LOOP');
      expect(e.message).toContain('already in the chain');
    }
  });

  it('a data file that is a layer of the chain is POLICY_DATA_FILE_IN_CHAIN', async () => {
    const st = await stat(top, { bigint: true });
    await refused(
      vetReference('external data file', 'top.qcow2', top, policy, [{ dev: st.dev, ino: st.ino, path: top }]),
      PolicyError,
      'POLICY_DATA_FILE_IN_CHAIN',
    );
  });

  it('the depth limit: a backing file that would make maxChainDepth + 1 layers is POLICY_CHAIN_TOO_DEEP (C9)', async () => {
    const layers = (n: number) => Array.from({ length: n }, (_, i) => ({ dev: 0n, ino: BigInt(i + 1), path: `l${i}` }));
    const p2 = { ...policy, maxChainDepth: 2 };
    await expect(vetReference('backing file', 'base.qcow2', top, p2, layers(1))).resolves.toBeDefined();
    const e = await refused(vetReference('backing file', 'base.qcow2', top, p2, layers(2)), PolicyError, 'POLICY_CHAIN_TOO_DEEP');
    expect(e.details.limit).toBe(2);
    await refused(vetReference('backing file', 'base.qcow2', top, policy, layers(16)), PolicyError, 'POLICY_CHAIN_TOO_DEEP');
    // Data files do not add a layer.
    await expect(vetReference('external data file', 'base.qcow2', top, p2, layers(2))).resolves.toBeDefined();
  });

  it('a missing file is IoError POLICY_FILE_NOT_FOUND', async () => {
    const e = await refused(vetReference('backing file', 'nope.qcow2', top, policy, []), IoError, 'POLICY_FILE_NOT_FOUND');
    expect(e.message).toContain('ENOENT');
  });

  it('a symlink loop is POLICY_FILE_NOT_FOUND (ELOOP)', async () => {
    const e = await refused(vetReference('backing file', 'loop-a', top, policy, []), IoError, 'POLICY_FILE_NOT_FOUND');
    expect(e.message).toContain('ELOOP');
  });

  it('a name with a NUL byte is POLICY_INVALID_NAME (C4)', async () => {
    await refused(vetReference('backing file', 'base.qcow2\0/etc/passwd', top, policy, []), PolicyError, 'POLICY_INVALID_NAME');
  });

  it('an empty name is POLICY_EMPTY_NAME', async () => {
    await refused(vetReference('backing file', '', top, policy, []), PolicyError, 'POLICY_EMPTY_NAME');
  });

  it.each(['json:{"driver":"file","filename":"/etc/hostname"}', 'nbd://127.0.0.1:1/x', 'http://127.0.0.1:1/x', 'file:/etc/passwd'])(
    '%j is POLICY_PROTOCOL_REFUSED before touching the filesystem (C3)',
    async (name) => {
      await refused(vetReference('backing file', name, top, policy, []), PolicyError, 'POLICY_PROTOCOL_REFUSED');
    },
  );

  it('a name with ":" after a "/" is a plain (relative) file name', async () => {
    await writeFile(path.join(root, 'sub', 'a:b.qcow2'), 'x');
    await expect(vetReference('backing file', 'sub/a:b.qcow2', top, policy, [])).resolves.toMatchObject({
      realPath: path.join(root, 'sub', 'a:b.qcow2'),
    });
  });
});
