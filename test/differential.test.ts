/**
 * Differential tests against the installed QEMU tools (meant for qemu-img 7.2). A broad
 * corpus is generated once in a temp dir (qemu-img/qemu-io, plus mkfs.ext4 for a real
 * filesystem image); then, for every image:
 *  - `vdisk map --output=json` must be byte-identical to `qemu-img map --output=json`;
 *  - human `vdisk map` must print the same stdout and fail with the same status;
 *  - `vdisk info --output=json` must parse to the same object as qemu-img's;
 *  - `vdisk map --mode=allocation` must equal `qemu:allocation-depth` read through
 *    `qemu-nbd -r -A` + `nbdinfo` (after merging equal neighbours on both sides);
 *  - several images are also compared with unaligned `--start-offset`/`--max-length`;
 *  - through the library: allocation extents make no hole probes, and agree with the
 *    mapping map's `present`/`depth` wherever no backing file is shorter than its overlay.
 * Skipped, with a warning, when qemu-img or qemu-io is missing; the NBD comparisons are
 * skipped, with a warning, when qemu-nbd or nbdinfo is missing.
 *
 * The corpus's unwritten extents (what qemu's zero-range fallocate leaves in a cluster it
 * allocates) are punched into holes once the scripts have run: SEEK_DATA reports an
 * unwritten extent as a hole only while none of its pages is cached, so a convert test
 * reading an image turned them into data for the maps running next to it (a race between
 * concurrent tests, not a difference between the tools: qemu-img's answer flips the same way).
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { openImage } from '../src/index.js';
import { loadLseek } from '../src/io/lseek-binding.js';
import { REPO_ROOT, run, runVdisk, type RunResult } from './helpers/cli.js';
import {
  clipAllocation,
  hasTool,
  mergeAllocation,
  nbdAllocationDepth,
  nbdToAllocation,
  qemuImg,
  qemuImgVersion,
  type AllocationExtent,
} from './helpers/qemu.js';
import { makeTempDir, removeTempDir } from './helpers/tmp.js';
import { punchUnwrittenExtents } from './helpers/unwritten.js';

// ---------------------------------------------------------------------------------------
// Tools

const hasQemu = hasTool('qemu-img') && hasTool('qemu-io');
const hasNbd = hasQemu && hasTool('qemu-nbd') && hasTool('nbdinfo');
const hasMkfs = hasTool('mkfs.ext4', ['-V']) || hasTool('/sbin/mkfs.ext4', ['-V']);

if (!hasQemu) {
  console.warn(
    'differential.test.ts: SKIPPED: qemu-img and/or qemu-io not found on PATH, so vdisk was NOT compared with QEMU. ' +
      'Install QEMU 7.2 tools (Debian: qemu-utils) to run the differential suite.',
  );
} else {
  const version = qemuImgVersion() ?? '?';
  if (!version.startsWith('qemu-img version 7.2.')) {
    console.warn(`differential.test.ts: expected qemu-img 7.2, found "${version}"; mismatches may be version differences`);
  }
  if (!hasNbd) {
    console.warn('differential.test.ts: qemu-nbd and/or nbdinfo (libnbd-bin) missing: --mode=allocation comparisons SKIPPED');
  }
  if (!hasMkfs) console.warn('differential.test.ts: mkfs.ext4 (e2fsprogs) missing: filesystem images SKIPPED');
}

// ---------------------------------------------------------------------------------------
// The corpus

/** A -s/-l pair (strings as typed on the command line; null = option absent). */
type Range = readonly [start: string | null, length: string | null];

/** One image both tools are run on. */
interface CorpusImage {
  /** Path as given to both tools, relative to `cwd`. */
  readonly file: string;
  readonly format: 'qcow2' | 'raw';
  /** Working directory of both tools, relative to the corpus root ('' = the root). */
  readonly cwd?: string;
  /** Pass the image as an absolute path instead. */
  readonly absolute?: boolean;
  /** Some backing file is shorter than its overlay (mapping and allocation differ there). */
  readonly shortBacking?: boolean;
  /** The chain names files outside the image's directory: vdisk needs --allow-dir. */
  readonly allowDir?: boolean;
  /** -s/-l ranges to compare as well. */
  readonly ranges?: readonly Range[];
  /**
   * How qemu-img map and qemu-nbd must open the image instead of `-f FORMAT FILE` (e.g.
   * `--object secret… --image-opts …` for LUKS); vdisk and qemu-img info use the plain path.
   */
  readonly qemuOpen?: readonly string[];
  /**
   * A deliberate divergence: vdisk refuses to map this image with this error code where
   * qemu-img reads zeroes (data clusters past the end of the host file; see README
   * "Hostile images"). Map, allocation and library comparisons then assert the refusal.
   */
  readonly vdiskRefuses?: string;
}

/** A group of images made by one shell script (run in the corpus root). */
interface CorpusCase {
  readonly name: string;
  /** Compare human `info` on every image (default: only the first image of the case). */
  readonly humanInfoAll?: boolean;
  readonly script: string;
  readonly images: readonly CorpusImage[];
  readonly needsMkfs?: boolean;
}

/** Unaligned, edge and out-of-range windows. */
const RANGES: readonly Range[] = [
  ['1000', '70000'],
  ['65535', '1'],
  ['0', '131073'],
  ['1k', '64k'],
  ['513', null],
  [null, '4097'],
  ['12345', '654321'],
  ['16G', null],
  ['16G', '1k'],
];

const PRELUDE = String.raw`
set -euo pipefail
export LC_ALL=C
qio() { local img=$1; shift; local a=(); for c in "$@"; do a+=(-c "$c"); done; qemu-io -f qcow2 "${'$'}{a[@]}" "$img" >/dev/null; }
# qemu-img create, again while qemu-img fails with its LUKS timing flake (helpers/qemu.ts QEMU_LUKS_TIMING_FLAKE)
mk() { local out i; for i in $(seq 30); do if out=$(qemu-img create -q "$@" 2>&1); then return 0; fi; case $out in *"Unable to get accurate CPU usage"*) continue ;; esac; break; done; printf '%s\n' "$out" >&2; return 1; }
# put N bytes of pattern P at byte offset O of FILE, keeping the rest sparse
poke() { local file=$1 off=$2 n=$3 p=$4; (set +o pipefail; yes "$p" | head -c "$n") | dd of="$file" bs=64k seek="$off" oflag=seek_bytes conv=notrunc status=none; }
`;

/** Images with patched headers or broken references (bad/), all opened with -f qcow2. */
const DAMAGED_CASE = 'damaged headers';
/** The damaged images, each with what qemu-img map says about it (checks the corpus itself). */
const DAMAGED: Readonly<Record<string, string>> = {
  'cb22.qcow2': 'Unsupported cluster size: 2^22',
  'incompat5.qcow2': 'Unknown incompatible feature: 20',
  'corrupt.qcow2': '',
  'dirty.qcow2': '',
  'hlen.qcow2': 'qcow2 header too short',
  'ver4.qcow2': 'Unsupported qcow2 version 4',
  'l1off.qcow2': 'Active L1 table offset invalid',
  'l1zero.qcow2': 'L1 table is too small',
  'rco7.qcow2': 'Reference count entry width too large',
  'magic.qcow2': 'Image is not in qcow2 format',
  'trunc.qcow2': 'qcow2 header too short',
  'gone.qcow2': 'Could not open backing file',
  'l2unal.qcow2': 'L2 table offset 0x40200 unaligned',
  'dataunal.qcow2': 'Cluster allocation offset 0x50200 unaligned',
};

const DAMAGED_SCRIPT = String.raw`
mkdir bad && cd bad
# be32 FILE VALUE OFFSET: write a big-endian 32-bit value
be32() { printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(( ($2 >> 24) & 255 )) $(( ($2 >> 16) & 255 )) $(( ($2 >> 8) & 255 )) $(( $2 & 255 )))" | dd of="$1" bs=1 seek="$3" conv=notrunc status=none; }
img() { mk -f qcow2 "$1" 1M; qio "$1" 'write -P 1 0 64k' 'write -P 2 512k 64k'; }
img cb22.qcow2; be32 cb22.qcow2 22 20
img incompat5.qcow2; printf '\x20' | dd of=incompat5.qcow2 bs=1 seek=79 conv=notrunc status=none
img corrupt.qcow2; printf '\x02' | dd of=corrupt.qcow2 bs=1 seek=79 conv=notrunc status=none
img dirty.qcow2; printf '\x01' | dd of=dirty.qcow2 bs=1 seek=79 conv=notrunc status=none
img hlen.qcow2; be32 hlen.qcow2 100 100
img ver4.qcow2; be32 ver4.qcow2 4 4
img l1off.qcow2; be32 l1off.qcow2 197120 44
img l1zero.qcow2; be32 l1zero.qcow2 0 36
img rco7.qcow2; be32 rco7.qcow2 7 96
img magic.qcow2; printf 'QFIX' | dd of=magic.qcow2 bs=1 conv=notrunc status=none
img trunc.qcow2; truncate -s 100 trunc.qcow2
mk -f qcow2 gone-base.qcow2 1M; mk -f qcow2 -b gone-base.qcow2 -F qcow2 gone.qcow2 1M; rm gone-base.qcow2
# L1[0] (at 0x30000) -> L2 at 0x40200; L2[0] (at 0x40000) -> data at 0x50200
img l2unal.qcow2; be32 l2unal.qcow2 262656 196612
img dataunal.qcow2; be32 dataunal.qcow2 328192 262148
`;

const HUGE_CASE = 'beyond 2^53';

const CASES: readonly CorpusCase[] = [
  { name: DAMAGED_CASE, script: DAMAGED_SCRIPT, images: [] },
  {
    name: HUGE_CASE,
    script: String.raw`
mkdir huge && cd huge
mk -f qcow2 -o cluster_size=2M huge.qcow2 16P
qio huge.qcow2 'write -P 1 0 64k' 'write -P 2 18014398507384832 2M' 'write -P 3 9007199256838144 64k' 'write -P 4 9007199254740992 512'
`,
    images: [],
  },
  {
    name: 'v3 standalone',
    script: String.raw`
mkdir v3 && cd v3
mk -f qcow2 kinds.qcow2 1M
qio kinds.qcow2 'write -P 0x11 0 64k' 'write -z 128k 64k' 'write -P 0 256k 64k' 'write -c -P 0x22 512k 64k' 'write -z -u 640k 64k'
mk -f qcow2 empty.qcow2 0
mk -f qcow2 tiny.qcow2 1000
qio tiny.qcow2 'write -P 1 0 512'
mk -f qcow2 big.qcow2 3T
qio big.qcow2 'write -P 1 0 64k' 'write -P 2 2T 128k' 'write -z 2199023386624 64k' 'write -P 3 3298534817792 64k'
`,
    images: [
      {
        file: 'v3/kinds.qcow2',
        format: 'qcow2',
        ranges: [...RANGES, ['1M', null], ['1048575', null], ['524289', '65535'], ['1000', '0'], [null, '0'], ['1.5k', '0.5k']],
      },
      { file: 'v3/empty.qcow2', format: 'qcow2', ranges: [['0', null], ['1', '1']] },
      { file: 'v3/tiny.qcow2', format: 'qcow2', ranges: [['1000', null], ['511', '2']] },
      {
        file: 'v3/big.qcow2',
        format: 'qcow2',
        ranges: [['1000', '70000'], ['2T', '200k'], ['2199023386623', '65538'], ['3298534817792', null], ['4T', null]],
      },
    ],
  },
  {
    name: 'v2 (compat=0.10)',
    script: String.raw`
mkdir v2 && cd v2
mk -f qcow2 -o compat=0.10 base.qcow2 1M
qio base.qcow2 'write -P 1 0 64k' 'write -z 128k 64k' 'write -z -u 256k 64k' 'write -P 2 320k 64k' 'discard 320k 64k' 'write -c -P 3 512k 64k' 'write -P 4 1000 3000'
mk -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 over.qcow2 1M
qio over.qcow2 'write -z 0 64k' 'discard 512k 64k' 'write -P 5 700k 10k' 'write -z -u 800k 64k'
mk -f qcow2 -o compat=0.10 snap.qcow2 1M
qio snap.qcow2 'write -P 1 0 128k'
qemu-img snapshot -c first snap.qcow2
qio snap.qcow2 'write -P 2 64k 64k'
`,
    images: [
      { file: 'v2/base.qcow2', format: 'qcow2', ranges: RANGES },
      { file: 'v2/over.qcow2', format: 'qcow2' },
      { file: 'v2/snap.qcow2', format: 'qcow2' },
    ],
  },
  {
    name: 'zero clusters: write -z, write -z -u, discard',
    script: String.raw`
mkdir zero && cd zero
mk -f qcow2 z.qcow2 1M
qio z.qcow2 'write -P 1 0 256k' 'write -z 64k 64k' 'write -z -u 128k 64k' 'discard 192k 64k' 'write -z 512k 64k' 'write -z -u 640k 64k' 'discard 768k 64k' 'write -P 2 832k 64k' 'write -z 833k 3000' 'discard 900k 5000' 'write -z 960k 1k'
mk -f qcow2 zb.qcow2 1M
qio zb.qcow2 'write -P 7 0 1M'
mk -f qcow2 -b zb.qcow2 -F qcow2 zo.qcow2 1M
qio zo.qcow2 'write -z 0 64k' 'write -z -u 64k 64k' 'discard 128k 64k' 'write -P 8 256k 64k' 'discard 256k 64k' 'write -z 400k 1000' 'discard 600k 64k' 'write -z -u 700k 2k'
`,
    images: [
      { file: 'zero/z.qcow2', format: 'qcow2', ranges: RANGES },
      { file: 'zero/zb.qcow2', format: 'qcow2' },
      { file: 'zero/zo.qcow2', format: 'qcow2', ranges: [['1000', '70000'], ['65535', '2'], ['399999', '1002']] },
    ],
  },
  {
    name: 'compression: zlib, zstd, partly overwritten, convert -c',
    script: String.raw`
mkdir comp && cd comp
for t in zlib zstd; do
  mk -f qcow2 -o compression_type=$t $t.qcow2 1M
  qio $t.qcow2 'write -c -P 1 0 256k' 'write -c -P 2 512k 64k' 'write -c -P 3 576k 64k' 'write -c -P 4 960k 64k'
  qio $t.qcow2 'write -P 9 68k 4k' 'write -z 128k 64k' 'discard 192k 64k' 'write -z -u 512k 4k' 'write -P 8 1000k 1000'
done
mk -f qcow2 -o cluster_size=4k mix.qcow2 256k
qio mix.qcow2 'write -c -P 1 0 16k' 'write -P 2 16k 4k' 'write -c -P 3 20k 4k' 'write -c -P 4 28k 4k' 'write -P 5 30k 1k'
head -c 65536 /dev/urandom > src.raw
head -c 65536 /dev/zero >> src.raw
(set +o pipefail; yes compressible | head -c 65536) >> src.raw
head -c 40000 /dev/urandom >> src.raw
qemu-img convert -c -f raw -O qcow2 src.raw conv.qcow2
qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd,cluster_size=16k src.raw convz.qcow2
`,
    images: [
      { file: 'comp/zlib.qcow2', format: 'qcow2', ranges: [['1000', '70000'], ['65535', '8194'], ['520000', '100000']] },
      { file: 'comp/zstd.qcow2', format: 'qcow2' },
      { file: 'comp/mix.qcow2', format: 'qcow2' },
      { file: 'comp/conv.qcow2', format: 'qcow2' },
      { file: 'comp/convz.qcow2', format: 'qcow2' },
    ],
  },
  {
    name: 'extended L2',
    script: String.raw`
mkdir xl2 && cd xl2
mk -f qcow2 -o extended_l2=on,cluster_size=64k x.qcow2 1M
qio x.qcow2 'write -P 5 0 2k' 'write -P 6 8k 4k' 'write -z 16k 2k' 'write -P 7 62k 4k' 'write -z -u 128k 64k' 'write -P 8 256k 64k' 'discard 258k 4k' 'write -z -u 300k 2k' 'write -c -P 9 512k 64k' 'write -P 1 700k 1000'
mk -f qcow2 -o extended_l2=on,cluster_size=16k x16.qcow2 256k
qio x16.qcow2 'write -P 1 0 512' 'write -P 2 1536 1k' 'write -z 4k 512' 'write -P 3 15k 2k'
mk -f qcow2 xb.qcow2 1M
qio xb.qcow2 'write -P 1 0 1M' 'discard 512k 128k'
mk -f qcow2 -o extended_l2=on -b xb.qcow2 -F qcow2 xo.qcow2 1M
qio xo.qcow2 'write -P 2 2k 2k' 'write -z 8k 4k' 'write -z -u 16k 2k' 'write -P 3 520k 2k' 'discard 64k 8k' 'write -P 4 900k 6k'
truncate -s 1M xr.raw
poke xr.raw 102400 3000 rawdata
mk -f qcow2 -o extended_l2=on -b xr.raw -F raw xro.qcow2 1M
qio xro.qcow2 'write -P 2 100k 2k' 'write -z 200k 2k' 'write -P 3 600k 64k'
`,
    images: [
      { file: 'xl2/x.qcow2', format: 'qcow2', ranges: RANGES },
      { file: 'xl2/x16.qcow2', format: 'qcow2', ranges: [['700', '2000'], ['1535', '1026']] },
      { file: 'xl2/xo.qcow2', format: 'qcow2', ranges: [['1000', '70000'], ['2047', '4098']] },
      { file: 'xl2/xro.qcow2', format: 'qcow2' },
    ],
  },
  {
    name: 'cluster sizes 512 B, 4 KiB, 64 KiB, 2 MiB',
    script: String.raw`
mkdir cs && cd cs
for c in 512 4096 65536 2097152; do
  f=c$c.qcow2
  mk -f qcow2 -o cluster_size=$c $f 8M
  qio $f 'write -P 1 0 3k' 'write -P 2 1M 64k' 'write -z 2M 4k' "write -c -P 3 4M $c" 'discard 1M 512' 'write -P 4 7M 100' 'write -z -u 6M 1M'
done
mk -f qcow2 -o cluster_size=2M,extended_l2=on c2mx.qcow2 8M
qio c2mx.qcow2 'write -P 1 0 64k' 'write -P 2 192k 100k' 'write -z 1M 64k' 'write -P 3 3M 64k' 'write -z -u 3M 4k'
`,
    images: [
      { file: 'cs/c512.qcow2', format: 'qcow2', ranges: [['1000', '70000'], ['511', '2'], ['4194303', '514']] },
      { file: 'cs/c4096.qcow2', format: 'qcow2' },
      { file: 'cs/c65536.qcow2', format: 'qcow2' },
      { file: 'cs/c2097152.qcow2', format: 'qcow2', ranges: [['1000', '70000'], ['1048575', '3M']] },
      { file: 'cs/c2mx.qcow2', format: 'qcow2' },
    ],
  },
  {
    name: '3-deep chain: sparse raw base, overlay larger than its backing',
    humanInfoAll: true,
    script: String.raw`
mkdir chain && cd chain
truncate -s 1000000 base.raw
poke base.raw 300000 5 hello
poke base.raw 500000 70000 basedata
mk -f qcow2 -b base.raw -F raw mid.qcow2 1M
qio mid.qcow2 'write -P 3 64k 64k' 'write -z 448k 128k' 'discard 640k 64k' 'write -P 4 960k 64k'
mk -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 3M
qio top.qcow2 'write -P 5 0 4k' 'write -z 1M 64k' 'write -P 6 2M 64k' 'write -P 7 1020k 8k'
`,
    images: [
      {
        file: 'chain/top.qcow2',
        format: 'qcow2',
        shortBacking: true,
        ranges: [...RANGES, ['1048000', '2000'], ['999999', '1000'], ['3M', null]],
      },
      { file: 'chain/mid.qcow2', format: 'qcow2', shortBacking: true, ranges: [['999999', '1000'], ['1000448', null]] },
      { file: 'chain/base.raw', format: 'raw' },
    ],
  },
  {
    name: 'E3 chain with a short middle layer',
    script: String.raw`
mkdir e3 && cd e3
mk -f qcow2 base.qcow2 1M
qio base.qcow2 'write -P 1 0 128k' 'write -P 2 512k 64k'
mk -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 1M
qio mid.qcow2 'write -P 3 64k 64k'
mk -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 2M
qio top.qcow2 'write -z 512k 64k' 'write -P 4 1536k 64k'
`,
    images: [
      { file: 'e3/top.qcow2', format: 'qcow2', shortBacking: true, ranges: RANGES },
      { file: 'e3/mid.qcow2', format: 'qcow2' },
    ],
  },
  {
    name: 'equal-size chain with mixed cluster sizes',
    script: String.raw`
mkdir chain2 && cd chain2
mk -f qcow2 -o cluster_size=4k base.qcow2 1M
qio base.qcow2 'write -P 1 0 1M' 'discard 256k 256k' 'write -z 600k 8k'
mk -f qcow2 -o cluster_size=64k -b base.qcow2 -F qcow2 mid.qcow2 1M
qio mid.qcow2 'write -P 2 128k 64k' 'write -z 300k 4k' 'write -z -u 704k 64k'
mk -f qcow2 -o cluster_size=16k -b mid.qcow2 -F qcow2 top.qcow2 1M
qio top.qcow2 'write -P 3 130k 2k' 'discard 0 64k' 'write -c -P 4 512k 16k'
`,
    images: [{ file: 'chain2/top.qcow2', format: 'qcow2', ranges: RANGES }],
  },
  {
    name: 'relative backing names in subdirectories',
    humanInfoAll: true,
    script: String.raw`
mkdir -p rel/sub relb
mk -f qcow2 rel/sub/base.qcow2 1M
qio rel/sub/base.qcow2 'write -P 1 0 128k'
(cd rel/sub && mk -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 1M && qio mid.qcow2 'write -P 9 192k 64k')
(cd rel && mk -f qcow2 -b sub/base.qcow2 -F qcow2 top.qcow2 1M && qio top.qcow2 'write -P 2 64k 64k')
(cd rel && mk -f qcow2 -b sub/mid.qcow2 -F qcow2 deep.qcow2 1M && qio deep.qcow2 'write -P 3 300k 64k')
mk -f qcow2 relb/base.qcow2 1M
qio relb/base.qcow2 'write -P 1 0 128k'
(cd rel && mk -f qcow2 -b ../relb/base.qcow2 -F qcow2 up.qcow2 1M && qio up.qcow2 'write -P 2 64k 64k')
mk -f qcow2 'rel/sub/b ase é.qcow2' 1M
qio 'rel/sub/b ase é.qcow2' 'write -P 1 0 64k'
(cd rel && mk -f qcow2 -b './sub/../sub/b ase é.qcow2' -F qcow2 'to"p\x.qcow2' 1M && qio 'to"p\x.qcow2' 'write -P 2 128k 64k')
`,
    images: [
      { file: 'rel/top.qcow2', format: 'qcow2' },
      { file: './rel/top.qcow2', format: 'qcow2' },
      { file: 'rel/deep.qcow2', format: 'qcow2' },
      { file: 'deep.qcow2', cwd: 'rel', format: 'qcow2' },
      { file: 'rel/deep.qcow2', format: 'qcow2', absolute: true },
      { file: 'rel/up.qcow2', format: 'qcow2', allowDir: true },
      { file: 'rel/to"p\\x.qcow2', format: 'qcow2' },
    ],
  },
  {
    name: 'external data files',
    humanInfoAll: true,
    script: String.raw`
mkdir df && cd df
mk -f qcow2 -o data_file=d.data d.qcow2 1M
qio d.qcow2 'write -P 8 64k 64k' 'write -z 256k 64k' 'write -z -u 384k 64k' 'write -P 9 500k 1000' 'discard 64k 4k'
mk -f qcow2 -o data_file=dr.data,data_file_raw=on dr.qcow2 1M
qio dr.qcow2 'write -P 8 64k 64k' 'write -z 256k 64k' 'write -z -u 384k 64k' 'write -P 9 500k 1000' 'discard 64k 4k'
mk -f qcow2 -o data_file=dx.data,extended_l2=on dx.qcow2 1M
qio dx.qcow2 'write -P 1 0 2k' 'write -z 64k 4k' 'write -P 2 130k 6k'
mk -f qcow2 dfb-base.qcow2 1M
qio dfb-base.qcow2 'write -P 1 0 512k'
mk -f qcow2 -o data_file=dfb.data -b dfb-base.qcow2 -F qcow2 dfb.qcow2 1M
qio dfb.qcow2 'write -P 2 64k 64k' 'write -z 256k 64k' 'discard 384k 64k'
mkdir sub
mk -f qcow2 -o data_file=sub/ds.data ds.qcow2 1M
qio ds.qcow2 'write -P 3 128k 64k'
mk -f qcow2 -o data_file=dm.data,preallocation=metadata dm.qcow2 1M
qio dm.qcow2 'write -P 4 64k 64k' 'write -z 128k 64k'
mk -f qcow2 -b d.qcow2 -F qcow2 over-d.qcow2 1M
qio over-d.qcow2 'write -P 5 0 64k' 'write -z 64k 4k'
`,
    images: [
      { file: 'd.qcow2', cwd: 'df', format: 'qcow2', ranges: [['1000', '70000'], ['511999', '1000']] },
      { file: 'dr.qcow2', cwd: 'df', format: 'qcow2', ranges: [['1000', '70000']] },
      { file: 'dx.qcow2', cwd: 'df', format: 'qcow2' },
      { file: 'dfb.qcow2', cwd: 'df', format: 'qcow2' },
      { file: 'ds.qcow2', cwd: 'df', format: 'qcow2' },
      { file: 'dm.qcow2', cwd: 'df', format: 'qcow2' },
      { file: 'over-d.qcow2', cwd: 'df', format: 'qcow2' },
    ],
  },
  {
    name: 'preallocation off, metadata, falloc, full',
    script: String.raw`
mkdir pre && cd pre
for p in off metadata falloc full; do
  mk -f qcow2 -o preallocation=$p q-$p.qcow2 1M
  qio q-$p.qcow2 'write -P 1 64k 64k' 'write -z 192k 64k' 'write -z -u 320k 64k' 'discard 448k 64k' 'write -P 2 1000 100'
  mk -f raw -o preallocation=$p r-$p.raw 1000000 >/dev/null 2>&1 || true
done
rm -f r-metadata.raw
mk -f qcow2 -o preallocation=metadata,cluster_size=4k q-meta-4k.qcow2 2M
mk -f qcow2 -o preallocation=metadata,cluster_size=512 q-meta-512.qcow2 1M
qio q-meta-512.qcow2 'write -P 1 0 64k' 'write -z 128k 4k'
for b in 1 64; do
  mk -f qcow2 -o preallocation=metadata,refcount_bits=$b q-meta-r$b.qcow2 1M
  qio q-meta-r$b.qcow2 'write -P 1 64k 64k'
done
mk -f qcow2 -o preallocation=metadata,extended_l2=on q-meta-xl2.qcow2 1M
qio q-meta-xl2.qcow2 'write -P 1 64k 2k' 'write -z 128k 2k' 'write -z -u 130k 2k'
mk -f qcow2 -o preallocation=metadata,extended_l2=on -b q-off.qcow2 -F qcow2 q-meta-xl2-over.qcow2 1M
qio q-meta-xl2-over.qcow2 'write -P 3 66k 2k'
`,
    images: [
      { file: 'pre/q-off.qcow2', format: 'qcow2' },
      { file: 'pre/q-metadata.qcow2', format: 'qcow2', ranges: [['1000', '70000'], ['131071', '65538']] },
      { file: 'pre/q-falloc.qcow2', format: 'qcow2' },
      { file: 'pre/q-full.qcow2', format: 'qcow2' },
      { file: 'pre/r-off.raw', format: 'raw' },
      { file: 'pre/r-falloc.raw', format: 'raw' },
      { file: 'pre/r-full.raw', format: 'raw' },
      { file: 'pre/q-meta-4k.qcow2', format: 'qcow2' },
      { file: 'pre/q-meta-512.qcow2', format: 'qcow2' },
      { file: 'pre/q-meta-r1.qcow2', format: 'qcow2' },
      { file: 'pre/q-meta-r64.qcow2', format: 'qcow2' },
      { file: 'pre/q-meta-xl2.qcow2', format: 'qcow2' },
      { file: 'pre/q-meta-xl2-over.qcow2', format: 'qcow2' },
    ],
  },
  {
    name: 'refcount widths, lazy refcounts, snapshots, bitmaps',
    humanInfoAll: true,
    script: String.raw`
mkdir misc && cd misc
for b in 1 64; do
  mk -f qcow2 -o refcount_bits=$b r$b.qcow2 1M
  qio r$b.qcow2 'write -P 1 0 128k' 'write -z 256k 64k' 'write -c -P 2 512k 64k'
done
qemu-img snapshot -c s1 r64.qcow2
qio r64.qcow2 'write -P 3 64k 64k'
mk -f qcow2 -o lazy_refcounts=on lazy.qcow2 1M
qio lazy.qcow2 'write -P 1 0 64k'
mk -f qcow2 -o lazy_refcounts=on dirty.qcow2 1M
qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -P 2 512k 4k' -c abort dirty.qcow2 >/dev/null 2>&1 || true
mk -f qcow2 snap.qcow2 1M
qio snap.qcow2 'write -P 1 0 256k'
qemu-img snapshot -c first snap.qcow2
qio snap.qcow2 'write -P 2 64k 64k' 'discard 128k 64k'
qemu-img snapshot -c 'second snapshot' snap.qcow2
qio snap.qcow2 'write -z 0 64k'
qemu-img snapshot -c third snap.qcow2
qemu-img snapshot -d first snap.qcow2
mk -f qcow2 -o compression_type=zstd,extended_l2=on,cluster_size=128k,refcount_bits=8 bm.qcow2 10M
qemu-img bitmap --add -g 65536 bm.qcow2 b0
qemu-img bitmap --add --disable bm.qcow2 b1
qemu-img bitmap --add -g 512 bm.qcow2 'bitmap two'
qio bm.qcow2 'write -P 1 0 100k' 'write -z 1M 128k'
mk -f qcow2 bm-inuse.qcow2 1M
qemu-img bitmap --add bm-inuse.qcow2 b0
qemu-io -f qcow2 -c 'write -P 1 0 64k' -c abort bm-inuse.qcow2 >/dev/null 2>&1 || true
`,
    images: [
      { file: 'misc/r1.qcow2', format: 'qcow2' },
      { file: 'misc/r64.qcow2', format: 'qcow2' },
      { file: 'misc/lazy.qcow2', format: 'qcow2' },
      { file: 'misc/dirty.qcow2', format: 'qcow2' },
      { file: 'misc/snap.qcow2', format: 'qcow2' },
      { file: 'misc/bm.qcow2', format: 'qcow2' },
      { file: 'misc/bm-inuse.qcow2', format: 'qcow2' },
    ],
  },
  {
    name: 'metadata-preallocation threshold, odd sizes, absolute backing, resize, amend, rebase, snapshot -a',
    humanInfoAll: true,
    script: String.raw`
mkdir more && cd more
for k in 13 14 15; do
  mk -f qcow2 -o preallocation=metadata pm$k.qcow2 1M
  cmds=(); for ((i = 0; i < k; i++)); do cmds+=("write -P 1 $((i * 64))k 64k"); done
  qio pm$k.qcow2 "${'$'}{cmds[@]}"
done
mk -f qcow2 odd-base.qcow2 1000000
qio odd-base.qcow2 'write -P 1 900k 76k' 'write -P 2 999000 1000'
mk -f qcow2 -b odd-base.qcow2 -F qcow2 odd-top.qcow2 1M
qio odd-top.qcow2 'write -P 3 0 4k'
mk -f qcow2 -b "$PWD/odd-base.qcow2" -F qcow2 abs-top.qcow2 2M
qio abs-top.qcow2 'write -P 4 1M 64k'
mk -f qcow2 grow.qcow2 1M
qio grow.qcow2 'write -P 1 0 64k' 'write -P 2 960k 64k'
qemu-img resize -q grow.qcow2 3G
qio grow.qcow2 'write -P 3 2G 64k'
mk -f qcow2 shrink.qcow2 2M
qio shrink.qcow2 'write -P 1 0 64k' 'write -P 2 1536k 64k' 'write -P 3 960k 64k'
qemu-img resize -q --shrink shrink.qcow2 1000k
mk -f raw rsz.raw 512k
qemu-img resize -q -f raw rsz.raw 1000001
mk -f qcow2 amend.qcow2 1M
qio amend.qcow2 'write -P 1 0 64k' 'write -z 128k 64k' 'write -z -u 256k 64k' 'write -c -P 2 512k 64k'
qemu-img amend -q -f qcow2 -o compat=0.10 amend.qcow2
mk -f qcow2 -b odd-base.qcow2 -F qcow2 unbacked.qcow2 1M
qio unbacked.qcow2 'write -P 4 64k 64k'
qemu-img rebase -q -u -b '' unbacked.qcow2
mk -f qcow2 applied.qcow2 1M
qio applied.qcow2 'write -P 1 0 128k'
qemu-img snapshot -c s applied.qcow2
qio applied.qcow2 'write -P 2 0 64k' 'write -P 3 512k 64k'
qemu-img snapshot -a s applied.qcow2
`,
    images: [
      { file: 'more/pm13.qcow2', format: 'qcow2' },
      { file: 'more/pm14.qcow2', format: 'qcow2' },
      { file: 'more/pm15.qcow2', format: 'qcow2' },
      { file: 'more/odd-base.qcow2', format: 'qcow2', ranges: [['999999', null], ['1000000', null]] },
      { file: 'more/odd-top.qcow2', format: 'qcow2', shortBacking: true, ranges: [['999000', '2000'], ['1000448', '1']] },
      { file: 'more/abs-top.qcow2', format: 'qcow2', shortBacking: true },
      { file: 'more/grow.qcow2', format: 'qcow2', ranges: [['2G', '64k'], ['1048575', '2']] },
      { file: 'more/shrink.qcow2', format: 'qcow2' },
      { file: 'more/rsz.raw', format: 'raw' },
      { file: 'more/amend.qcow2', format: 'qcow2' },
      { file: 'more/unbacked.qcow2', format: 'qcow2' },
      { file: 'more/applied.qcow2', format: 'qcow2' },
      // qcow2 files read as raw: hole probing over a qcow2 host file.
      { file: 'v3/kinds.qcow2', format: 'raw' },
      { file: 'pre/q-metadata.qcow2', format: 'raw' },
    ],
  },
  {
    name: 'truncated host files (data clusters past EOF)',
    script: String.raw`
mkdir trunc && cd trunc
# the second data cluster (0x60000) is cut mid-way, then wholly
mk -f qcow2 part.qcow2 1M
qio part.qcow2 'write -P 1 0 64k' 'write -P 2 192k 64k'
truncate -s $((0x50000 + 65536 + 1000)) part.qcow2
mk -f qcow2 gone.qcow2 1M
qio gone.qcow2 'write -P 1 0 64k' 'write -P 2 192k 64k'
truncate -s $((0x50000 + 1000)) gone.qcow2
# metadata preallocation, cut after three data clusters
mk -f qcow2 -o preallocation=metadata meta.qcow2 1M
qio meta.qcow2 'write -P 1 0 64k' 'write -P 2 192k 64k'
truncate -s $((0x50000 + 3 * 65536 + 1000)) meta.qcow2
# fully written, only the last cluster cut: the preallocation heuristic stays off
mk -f qcow2 last.qcow2 1M
qio last.qcow2 'write -P 1 0 1M'
truncate -s -65536 last.qcow2
`,
    images: [
      { file: 'trunc/part.qcow2', format: 'qcow2' },
      { file: 'trunc/gone.qcow2', format: 'qcow2', vdiskRefuses: 'QCOW2_DATA_BEYOND_EOF' },
      { file: 'trunc/meta.qcow2', format: 'qcow2', vdiskRefuses: 'QCOW2_DATA_BEYOND_EOF' },
      { file: 'trunc/last.qcow2', format: 'qcow2', vdiskRefuses: 'QCOW2_DATA_BEYOND_EOF' },
    ],
  },
  {
    name: 'LUKS-encrypted qcow2',
    script: String.raw`
mkdir luks && cd luks
mk -f qcow2 --object secret,id=s0,data=abc -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 luks.qcow2 1M
qemu-io --object secret,id=s0,data=abc --image-opts driver=qcow2,file.filename=luks.qcow2,encrypt.key-secret=s0 \
  -c 'write -P 1 0 64k' -c 'write -z 128k 64k' -c 'write -P 2 300k 1000' -c 'write -z -u 512k 64k' >/dev/null
`,
    images: [
      {
        file: 'luks.qcow2',
        cwd: 'luks',
        format: 'qcow2',
        qemuOpen: ['--object', 'secret,id=s0,data=abc', '--image-opts', 'driver=qcow2,file.filename=luks.qcow2,encrypt.key-secret=s0'],
        ranges: [['1000', '70000']],
      },
    ],
  },
  {
    name: 'sparse raw files',
    humanInfoAll: true,
    script: String.raw`
mkdir raw && cd raw
truncate -s 1000000 mid.raw
poke mid.raw 200000 100 middle
poke mid.raw 700001 5000 more
poke mid.raw 999999 1 z
truncate -s 777777 sparse.raw
: > zero.raw
printf x > one.raw
truncate -s 5G big.raw
poke big.raw 4294967297 10 far
mk -f raw qc.raw 1M
head -c 12345 /dev/urandom > dense.raw
`,
    images: [
      {
        file: 'raw/mid.raw',
        format: 'raw',
        ranges: [...RANGES, ['1000000', null], ['999999', '100'], ['1000448', null], ['198000', '3000'], ['200704', '1']],
      },
      { file: 'raw/sparse.raw', format: 'raw', ranges: [['1000', '70000'], ['777777', null], ['777776', '10']] },
      { file: 'raw/zero.raw', format: 'raw', ranges: [['0', null], ['1', null]] },
      { file: 'raw/one.raw', format: 'raw', ranges: [['1', null], ['0', '1']] },
      { file: 'raw/big.raw', format: 'raw', ranges: [['4294967296', '8192'], ['4G', null]] },
      { file: 'raw/qc.raw', format: 'raw' },
      { file: 'raw/dense.raw', format: 'raw', ranges: [['12000', null]] },
    ],
  },
  {
    name: 'ext4 filesystem image (mkfs.ext4 -d), raw and converted',
    needsMkfs: true,
    script: String.raw`
mkdir fs && cd fs
src=/usr/share/doc/bash
[ -d "$src" ] || src="$VDISK_REPO/src"
PATH="$PATH:/sbin:/usr/sbin" mkfs.ext4 -q -d "$src" fs.raw 64M
qemu-img convert -f raw -O qcow2 fs.raw fs.qcow2
qemu-img convert -c -f raw -O qcow2 fs.raw fsc.qcow2
`,
    images: [
      { file: 'fs/fs.raw', format: 'raw', ranges: [['1000', '70000'], ['1M', '4M'], ['33554431', '3']] },
      { file: 'fs/fs.qcow2', format: 'qcow2', ranges: [['1000', '70000'], ['1M', '4M']] },
      { file: 'fs/fsc.qcow2', format: 'qcow2' },
    ],
  },
];

// ---------------------------------------------------------------------------------------
// Helpers

/** Largest virtual size whose conversion is hashed. */
const CONVERT_MAX_BYTES = 1024 * 1024 * 1024;

/** SHA-256 of a file, streamed. */
async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * A digest of a huge sparse file without reading its holes: size, then the offset and bytes
 * of every non-zero 64 KiB block inside the data extents SEEK_DATA/SEEK_HOLE report (holes
 * and zero blocks read as zero either way).
 */
async function sparseDigest(file: string): Promise<string> {
  const lseek = loadLseek();
  if (lseek === null) throw new Error('sparseDigest needs the lseek binding (koffi)');
  const fh = await open(file, 'r');
  try {
    const size = (await fh.stat()).size;
    const h = createHash('sha256').update(`size ${size}\n`);
    const buf = Buffer.alloc(65536);
    let pos = 0;
    while (pos < size) {
      const d = lseek(fh.fd, pos, 3);
      if ('errno' in d) break; // no data after pos
      const e = lseek(fh.fd, d.offset, 4);
      const end = 'errno' in e ? size : e.offset;
      for (let b = Math.floor(d.offset / 65536) * 65536; b < end; b += 65536) {
        const { bytesRead } = await fh.read(buf, 0, 65536, b);
        const chunk = buf.subarray(0, bytesRead);
        if (chunk.some((x) => x !== 0)) h.update(`${b}\n`).update(chunk);
      }
      pos = Math.ceil(end / 65536) * 65536;
    }
    return h.digest('hex');
  } finally {
    await fh.close();
  }
}

/** st_blocks after fsync (delayed allocation would hide blocks otherwise). */
async function allocatedBlocks(file: string): Promise<number> {
  const fh = await open(file, 'r');
  try {
    await fh.sync();
    return (await fh.stat()).blocks;
  } finally {
    await fh.close();
  }
}

function rangeArgs([s, l]: Range): string[] {
  return [...(s === null ? [] : ['-s', s]), ...(l === null ? [] : ['-l', l])];
}

function rangeLabel([s, l]: Range): string {
  return `${s === null ? '' : `-s ${s}`}${s !== null && l !== null ? ' ' : ''}${l === null ? '' : `-l ${l}`}` || '(none)';
}

/** qemu-img's size parsing for the test's own ranges (powers of 1024). */
function sizeOf(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKMGT]?)$/.exec(text);
  if (m === null) throw new Error(`bad size ${text}`);
  const unit = { '': 1, k: 2 ** 10, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2] ?? ''] ?? 1;
  return Math.floor(Number(m[1]) * unit);
}

function parseAllocation(r: RunResult): AllocationExtent[] {
  const parsed = parseJson(r);
  if (!Array.isArray(parsed)) throw new Error(`--mode=allocation did not print a JSON array: ${r.stdout.slice(0, 200)}`);
  return parsed as AllocationExtent[];
}

/** vdisk's stdout parsed as JSON, or a failure naming its stderr. */
function parseJson(r: RunResult): unknown {
  try {
    return JSON.parse(r.stdout) as unknown;
  } catch {
    throw new Error(`vdisk printed no JSON (exit ${r.status ?? r.signal}): ${r.stderr.trim()}`);
  }
}

function describeFailure(what: string, r: RunResult): string {
  return `${what} exited ${r.status ?? r.signal}: ${r.stderr.trim()}`;
}

/** Memoises one promise per key (results are shared by several tests of an image). */
function memo<T>(): (key: string, make: () => Promise<T>) => Promise<T> {
  const cache = new Map<string, Promise<T>>();
  return (key, make) => {
    let p = cache.get(key);
    if (p === undefined) {
      p = make();
      cache.set(key, p);
    }
    return p;
  };
}

// ---------------------------------------------------------------------------------------
// The suite

describe.skipIf(!hasQemu)('differential: vdisk vs qemu-img / qemu-nbd', { concurrent: true }, () => {
  let root = '';
  const setupFailures = new Map<string, string>();
  const qemuMemo = memo<RunResult>();
  const vdiskMemo = memo<RunResult>();
  const nbdMemo = memo<AllocationExtent[]>();
  const layersMemo = memo<number>();

  beforeAll(async () => {
    root = makeTempDir('vdisk-diff-');
    // Two cases at a time (the corpus scripts are mostly process start-up).
    const queue = CASES.filter((c) => !c.needsMkfs || hasMkfs);
    const worker = async (): Promise<void> => {
      for (let c = queue.shift(); c !== undefined; c = queue.shift()) {
        const r = await run('bash', ['-c', PRELUDE + c.script], {
          cwd: root,
          timeoutMs: 120_000,
          env: { ...process.env, VDISK_REPO: REPO_ROOT },
        });
        if (r.status !== 0) setupFailures.set(c.name, describeFailure(`corpus script "${c.name}"`, r));
      }
    };
    await Promise.all([worker(), worker()]);
    await punchUnwrittenExtents(root);
  }, 300_000);

  afterAll(() => {
    if (root !== '') removeTempDir(root);
  });

  for (const c of CASES) {
    if (c.images.length === 0) continue; // set-up only; its tests live in their own suite below
    describe.skipIf(c.needsMkfs === true && !hasMkfs)(c.name, () => {
      for (const [index, img] of c.images.entries()) {
        const asOther = !img.file.endsWith(`.${img.format}`) ? ` (as ${img.format})` : '';
        const label = `${img.cwd === undefined ? '' : `(cwd ${img.cwd}) `}${img.absolute === true ? '<abs>/' : ''}${img.file}${asOther}`;
        const cwd = (): string => path.join(root, img.cwd ?? '');
        const arg = (): string => (img.absolute === true ? path.join(cwd(), img.file) : img.file);
        const extra = (): string[] => (img.allowDir === true ? ['--allow-dir', root] : []);
        const checkSetup = (): void => {
          const failure = setupFailures.get(c.name);
          if (failure !== undefined) throw new Error(failure);
        };
        const qemu = (args: string[]): Promise<RunResult> =>
          qemuMemo(`${label}\0${args.join('\0')}`, () => {
            if (args[0] === 'map' && img.qemuOpen !== undefined) {
              const f = args.indexOf('-f');
              return qemuImg([...(f < 0 ? args : [...args.slice(0, f), ...args.slice(f + 2)]), ...img.qemuOpen], cwd());
            }
            return qemuImg([...args, arg()], cwd());
          });
        const vdisk = (args: string[]): Promise<RunResult> =>
          vdiskMemo(`${label}\0${args.join('\0')}`, () => runVdisk([...args, ...extra(), arg()], { cwd: cwd() }));
        const layers = (): Promise<number> =>
          layersMemo(label, async () => {
            const r = await qemu(['info', '--backing-chain', '--output=json', '-f', img.format]);
            if (r.status !== 0) throw new Error(describeFailure('qemu-img info --backing-chain', r));
            return (JSON.parse(r.stdout) as unknown[]).length;
          });
        const nbdMap = (): Promise<AllocationExtent[]> =>
          nbdMemo(label, async () =>
            mergeAllocation(
              nbdToAllocation(
                await nbdAllocationDepth({
                  file: arg(),
                  format: img.format,
                  cwd: cwd(),
                  runDir: root,
                  ...(img.qemuOpen === undefined ? {} : { openArgs: img.qemuOpen }),
                }),
                await layers(),
              ),
            ),
          );

        const refuses = img.vdiskRefuses;
        describe.concurrent(label, () => {
          if (refuses !== undefined) it(`vdisk refuses to map or convert it (${refuses ?? ''}) where qemu-img reads zeroes`, async ({ expect }) => {
            checkSetup();
            for (const args of [['map', '-f', img.format, '--output=json'], ['map', '-f', img.format], ['map', '-f', img.format, '--mode=allocation']]) {
              if (!args.includes('--mode=allocation')) {
                const q = await qemu(args);
                expect(q.status, describeFailure('qemu-img map', q)).toBe(0);
              }
              const v = await vdisk(args);
              expect(v.status).toBe(1);
              expect(v.stderr).toMatch(new RegExp(`^vdisk: ${refuses ?? ''}: `));
            }
            // And to convert it (the conversion plans from the same walk's answers), leaving no output.
            const out = path.join(root, `refused-${createHash('sha1').update(label).digest('hex').slice(0, 12)}.raw`);
            const v = await runVdisk(['convert', '-f', img.format, '-O', 'raw', ...extra(), arg(), out], { cwd: cwd() });
            expect(v.status).toBe(1);
            expect(v.stderr).toMatch(new RegExp(`^vdisk: ${refuses ?? ''}: `));
            expect(existsSync(out)).toBe(false);
          });

          if (img.qemuOpen === undefined && refuses === undefined) it('convert -O raw: same content as qemu-img, no more allocated blocks', async ({ expect }) => {
            checkSetup();
            const info = await qemu(['info', '-f', img.format, '--output=json']);
            expect(info.status, describeFailure('qemu-img info', info)).toBe(0);
            const size = (JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'];
            // Terabyte-sized sparse outputs are compared by their allocated blocks only.
            const digest = size > CONVERT_MAX_BYTES ? sparseDigest : fileSha256;
            const id = createHash('sha1').update(label).digest('hex').slice(0, 12);
            const qOut = path.join(root, `conv-${id}.q.raw`);
            const vOut = path.join(root, `conv-${id}.v.raw`);
            try {
              const q = await run('qemu-img', ['convert', '-f', img.format, '-O', 'raw', arg(), qOut], { cwd: cwd(), timeoutMs: 120_000 });
              const v = await runVdisk(['convert', '-f', img.format, '-O', 'raw', ...extra(), arg(), vOut], { cwd: cwd(), timeoutMs: 120_000 });
              if (q.status !== 0) {
                expect(v.status, `qemu-img convert failed (${q.stderr.trim()}); vdisk must fail too`).not.toBe(0);
                return;
              }
              expect(v.stderr).toBe('');
              expect(v.status).toBe(0);
              expect(await digest(vOut)).toBe(await digest(qOut));
              expect(await allocatedBlocks(vOut)).toBeLessThanOrEqual(await allocatedBlocks(qOut));
            } finally {
              await Promise.all([rm(qOut, { force: true }), rm(vOut, { force: true })]);
            }
          });

          if (refuses === undefined) it('map --output=json is byte-identical', async ({ expect }) => {
            checkSetup();
            const args = ['map', '-f', img.format, '--output=json'];
            const [q, v] = await Promise.all([qemu(args), vdisk(args)]);
            expect(q.status, describeFailure('qemu-img map', q)).toBe(0);
            expect(v.stdout, `vdisk stderr: ${v.stderr}`).toBe(q.stdout);
            expect(v.stderr).toBe(q.stderr);
            expect(v.status).toBe(0);
          });

          if (refuses === undefined) it('human map: same stdout and exit status', async ({ expect }) => {
            checkSetup();
            const args = ['map', '-f', img.format];
            const [q, v] = await Promise.all([qemu(args), vdisk(args)]);
            expect(v.stdout, `vdisk stderr: ${v.stderr}`).toBe(q.stdout);
            expect(v.status).toBe(q.status);
            if (q.status === 0) {
              expect(v.stderr).toBe(q.stderr);
            } else {
              expect(v.stderr).toContain(q.stderr.trim().replace(/^qemu-img: /, ''));
            }
          });

          it('info --output=json parses to the same object', async ({ expect }) => {
            checkSetup();
            const args = ['info', '-f', img.format, '--output=json'];
            const [q, v] = await Promise.all([qemu(args), vdisk(args)]);
            expect(q.status, describeFailure('qemu-img info', q)).toBe(0);
            expect(v.stderr).toBe('');
            expect(v.status).toBe(0);
            expect(parseJson(v), `vdisk stderr: ${v.stderr}`).toEqual(JSON.parse(q.stdout));
          });

          it('info --output=json is byte-identical (key order too)', async ({ expect }) => {
            checkSetup();
            const args = ['info', '-f', img.format, '--output=json'];
            const [q, v] = await Promise.all([qemu(args), vdisk(args)]);
            expect(q.status, describeFailure('qemu-img info', q)).toBe(0);
            expect(v.stdout, `vdisk stderr: ${v.stderr}`).toBe(q.stdout);
          });

          if (!(img.qemuOpen !== undefined || (img.format === 'qcow2' && img.ranges === undefined))) it('map --output=json without -f (format probed): same stdout and stderr', async ({ expect }) => {
            checkSetup();
            const args = ['map', '--output=json'];
            const [q, v] = await Promise.all([qemu(args), vdisk(args)]);
            expect(q.status, describeFailure('qemu-img map', q)).toBe(0);
            expect(v.stdout, `vdisk stderr: ${v.stderr}`).toBe(q.stdout);
            expect(v.stderr).toBe(q.stderr);
            expect(v.status).toBe(0);
          });

          if (!(index > 0 && c.humanInfoAll !== true)) it('human info: same stdout', async ({ expect }) => {
            checkSetup();
            const args = ['info', '-f', img.format];
            const [q, v] = await Promise.all([qemu(args), vdisk(args)]);
            expect(q.status, describeFailure('qemu-img info', q)).toBe(0);
            expect(v.stdout, `vdisk stderr: ${v.stderr}`).toBe(q.stdout);
            expect(v.stderr).toBe(q.stderr);
            expect(v.status).toBe(0);
          });

          it('info --backing-chain --output=json parses to the same list', async ({ expect }) => {
            checkSetup();
            if ((await layers()) === 1) return; // same as plain info, wrapped in a list
            const args = ['info', '-f', img.format, '--backing-chain', '--output=json'];
            const [q, v] = await Promise.all([qemu(args), vdisk(args)]);
            expect(q.status, describeFailure('qemu-img info', q)).toBe(0);
            expect(v.stderr).toBe('');
            expect(v.status).toBe(0);
            expect(parseJson(v), `vdisk stderr: ${v.stderr}`).toEqual(JSON.parse(q.stdout));
          });

          if (refuses === undefined) it.skipIf(!hasNbd)('--mode=allocation equals qemu:allocation-depth (qemu-nbd + nbdinfo)', async ({ expect }) => {
            checkSetup();
            const [expected, v] = await Promise.all([nbdMap(), vdisk(['map', '-f', img.format, '--mode=allocation'])]);
            expect(v.stderr).toBe('');
            expect(v.status).toBe(0);
            expect(mergeAllocation(parseAllocation(v))).toEqual(expected);
          });

          if (refuses === undefined) it('library: allocation extents make no hole probes' + (img.shortBacking === true ? '' : ' and agree with mapping extents'), async ({ expect }) => {
            checkSetup();
            const image = await openImage(path.resolve(cwd(), arg()), {
              format: img.format,
              ...(img.allowDir === true ? { allowDirs: [root] } : {}),
            });
            const allocation: AllocationExtent[] = [];
            const mapping: AllocationExtent[] = [];
            try {
              for await (const e of image.allocationExtents()) allocation.push({ ...e });
              expect(image.counters().holeProbes).toBe(0);
              if (img.shortBacking === true) return;
              // Mapping mode: present/depth as allocation sees them (unallocated: the bottom layer).
              const bottom = image.layers.length - 1;
              for await (const e of image.mapExtents()) {
                mapping.push({ start: e.start, length: e.length, depth: e.present ? e.depth : bottom, present: e.present });
              }
            } finally {
              await image.close();
            }
            expect(mergeAllocation(allocation)).toEqual(mergeAllocation(mapping));
          });

          for (const range of img.ranges ?? []) {
            it(`window ${rangeLabel(range)}: json, human and allocation`, async ({ expect }) => {
              checkSetup();
              const json = ['map', '-f', img.format, '--output=json', ...rangeArgs(range)];
              const human = ['map', '-f', img.format, ...rangeArgs(range)];
              const [qj, vj, qh, vh] = await Promise.all([qemu(json), vdisk(json), qemu(human), vdisk(human)]);
              expect(qj.status, describeFailure('qemu-img map', qj)).toBe(0);
              expect.soft(vj.stdout, `json; vdisk stderr: ${vj.stderr}`).toBe(qj.stdout);
              expect.soft(vj.status, 'json status').toBe(0);
              expect.soft(vh.stdout, `human; vdisk stderr: ${vh.stderr}`).toBe(qh.stdout);
              expect.soft(vh.status, 'human status').toBe(qh.status);
              if (!hasNbd) return;
              const va = await vdisk(['map', '-f', img.format, '--mode=allocation', ...rangeArgs(range)]);
              expect.soft(va.status, 'allocation status').toBe(0);
              const full = await nbdMap();
              const size = full.reduce((n, e) => Math.max(n, e.start + e.length), 0);
              const start = range[0] === null ? 0 : sizeOf(range[0]);
              const end = Math.min(size, range[1] === null ? size : start + sizeOf(range[1]));
              expect.soft(mergeAllocation(parseAllocation(va)), 'allocation').toEqual(
                mergeAllocation(clipAllocation(full, start, end)),
              );
            });
          }
        });
      }
    });
  }

  describe.concurrent('size arguments of map -s/-l (v3/kinds.qcow2)', () => {
    const values = ['0x10000', '0X400', '1000 ', ' 1000', '08', '1.5', '0.5k', '1e3', '1kB', '64K', '1b', '-1', 'abc', '', '1P', '1E', '10E', '9999999999999999999'];
    for (const option of ['-s', '-l'] as const) {
      for (const value of values) {
        it(`${option} ${JSON.stringify(value)}: same stdout and exit status`, async ({ expect }) => {
          checkSetupFor('v3 standalone');
          const args = ['map', '-f', 'qcow2', '--output=json', ...(option === '-s' ? ['-l', '1k'] : ['-s', '1000']), option, value, 'v3/kinds.qcow2'];
          const [q, v] = await Promise.all([qemuImg(args, root), runVdisk(args, { cwd: root })]);
          expect(v.stdout, `vdisk stderr: ${v.stderr}`).toBe(q.stdout);
          expect(v.status).toBe(q.status);
        });
      }
    }
  });

  describe.concurrent('damaged and unusual headers: same stdout and exit status', () => {
    for (const [file, message] of Object.entries(DAMAGED)) {
      for (const command of [['map', '--output=json'], ['map'], ['info', '--output=json'], ['info', '--backing-chain', '--output=json']]) {
        it(`${command.join(' ')} ${file}`, async ({ expect }) => {
          checkSetupFor(DAMAGED_CASE);
          const args = [...command, '-f', 'qcow2', file];
          const [q, v] = await Promise.all([qemuImg(args, path.join(root, 'bad')), runVdisk(args, { cwd: path.join(root, 'bad') })]);
          if (command[0] === 'map') {
            if (message === '') expect(q.stderr).toBe('');
            else expect(q.stderr).toContain(message);
          }
          expect(v.status).toBe(q.status);
          if (command[0] === 'info' && q.status === 0) {
            expect(parseJson(v), `vdisk stderr: ${v.stderr}`).toEqual(JSON.parse(q.stdout));
          } else {
            expect(v.stdout, `vdisk stderr: ${v.stderr}`).toBe(q.stdout);
          }
        });
      }
    }
  });

  // A 16 PiB image (2 MiB clusters): offsets beyond 2^53. A full map takes qemu-img ~10 s,
  // so only windows are compared.
  describe.concurrent('beyond 2^53: 16 PiB qcow2 with data around 8 PiB', () => {
    const windows: Range[] = [
      ['0', '4M'],
      ['9007199254740992', '4M'],
      ['9007199254740991', '3'],
      ['18014398507384832', null],
    ];
    // vdisk keeps offsets and sizes as exact JavaScript numbers and refuses virtual sizes
    // beyond 2^53 with a typed error (README); qemu-img opens them.
    it('info and map refuse it with QCOW2_SIZE where qemu-img opens it', async ({ expect }) => {
      checkSetupFor(HUGE_CASE);
      const info = ['info', '-f', 'qcow2', '--output=json', 'huge/huge.qcow2'];
      const [q, v] = await Promise.all([qemuImg(info, root), runVdisk(info, { cwd: root })]);
      expect(q.status, describeFailure('qemu-img info', q)).toBe(0);
      expect(v.status).toBe(1);
      expect(v.stderr).toMatch(/^vdisk: QCOW2_SIZE: /);
      for (const range of windows) {
        const args = ['map', '-f', 'qcow2', '--output=json', ...rangeArgs(range), 'huge/huge.qcow2'];
        const [qm, vm] = await Promise.all([qemuImg(args, root), runVdisk(args, { cwd: root })]);
        expect(qm.status, describeFailure('qemu-img map', qm)).toBe(0);
        expect(vm.status).toBe(1);
        expect(vm.stderr).toMatch(/^vdisk: QCOW2_SIZE: /);
      }
    });
  });

  function checkSetupFor(name: string): void {
    const failure = setupFailures.get(name);
    if (failure !== undefined) throw new Error(failure);
  }

  describe('hole probing by mode', () => {
    it('mapping mode on a sparse raw file probes for holes (unless the lseek binding is unavailable)', async ({ expect }) => {
      checkSetupFor('sparse raw files');
      const image = await openImage(path.join(root, 'raw/mid.raw'), { format: 'raw' });
      try {
        const entries = [];
        for await (const e of image.mapExtents()) entries.push(e);
        expect(entries.length).toBeGreaterThan(1);
        if (loadLseek() === null) {
          console.warn('differential.test.ts: no lseek binding (koffi missing or VDISK_NO_SEEK_HOLE=1): hole-probe count not checked');
          expect(image.counters().holeProbes).toBe(0);
        } else {
          expect(image.counters().holeProbes).toBeGreaterThan(0);
        }
      } finally {
        await image.close();
      }
    });

    it('allocation mode on the same file makes none', async ({ expect }) => {
      checkSetupFor('sparse raw files');
      const image = await openImage(path.join(root, 'raw/mid.raw'), { format: 'raw' });
      try {
        for await (const e of image.allocationExtents()) expect(e.present).toBe(true);
        expect(image.counters().holeProbes).toBe(0);
      } finally {
        await image.close();
      }
    });
  });
});
