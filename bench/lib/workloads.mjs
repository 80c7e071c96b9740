// The workloads of the benchmark issue, their commands, targets and output checks.
import { readFileSync } from 'node:fs';

const MAP = { rssMiB: 150 };
const CONVERT = { rssMiB: 300 };

/**
 * kind: 'map' (stdout compared byte for byte), 'alloc' (vdisk JSON vs qemu-io map text,
 * compared as allocated / not allocated ranges), 'convert' (outputs compared by content digest,
 * bench/lib/digest.mjs, and with the source ext4 image for W4).
 * `image` is relative to the bench dir; `units` are the image build units it needs.
 */
export const WORKLOADS = [
  {
    id: 'W1', title: 'map --output=json, 1 TiB qcow2, preallocation=metadata + 10,000 random 64 KiB writes',
    kind: 'map', units: ['w1'], image: 'w1-1t-prealloc.qcow2',
    qemu: { cmd: 'qemu-img', args: (img) => ['map', '--output=json', '-f', 'qcow2', img] },
    vdisk: (img) => ['map', '--output=json', '-f', 'qcow2', img],
    targets: { ratio: 0.25, ...MAP, seeksAtMostHalf: true },
  },
  {
    id: 'W2', title: 'map --output=json, 16 GiB qcow2, 262,144 alternating zero / unallocated 64 KiB clusters',
    kind: 'map', units: ['w2'], image: 'w2-16g-zero-alt.qcow2',
    qemu: { cmd: 'qemu-img', args: (img) => ['map', '--output=json', '-f', 'qcow2', img] },
    vdisk: (img) => ['map', '--output=json', '-f', 'qcow2', img],
    targets: { ratio: 1.0, ...MAP },
  },
  {
    id: 'W3', title: "allocation map of W1's image (vdisk --mode=allocation vs qemu-io -c map)",
    kind: 'alloc', units: ['w1'], image: 'w1-1t-prealloc.qcow2',
    qemu: { cmd: 'qemu-io', args: (img) => ['-r', '-f', 'qcow2', '-c', 'map', img] },
    vdisk: (img) => ['map', '--mode=allocation', '--output=json', '-f', 'qcow2', img],
    targets: { ratio: 0.25, ...MAP, noHoleProbes: true },
  },
  ...[['plain', 'w4-plain.qcow2'], ['zlib', 'w4-zlib.qcow2'], ['zstd', 'w4-zstd.qcow2']].map(([v, img]) => ({
    id: `W4-${v}`, title: `convert -O raw, ext4 of /usr/share in 8 GiB, qcow2 ${v === 'plain' ? 'uncompressed' : `${v}-compressed`}`,
    kind: 'convert', units: ['w4'], image: img, reference: 'w4',
    qemu: { cmd: 'qemu-img', args: (src, dst) => ['convert', '-f', 'qcow2', '-O', 'raw', src, dst] },
    vdisk: (src, dst) => ['convert', '-f', 'qcow2', '-O', 'raw', src, dst],
    targets: { ratio: 1.0, ...CONVERT },
  })),
  {
    id: 'W5-map', title: 'map --output=json of a 3-deep chain (W4 plain + 2 overlays of 5,000 random 4 KiB writes)',
    kind: 'map', units: ['w4', 'w5'], image: 'w5-top.qcow2',
    qemu: { cmd: 'qemu-img', args: (img) => ['map', '--output=json', '-f', 'qcow2', img] },
    vdisk: (img) => ['map', '--output=json', '-f', 'qcow2', img],
    targets: { ratio: 1.0, ...MAP },
  },
  {
    id: 'W5-convert', title: 'convert -O raw of the 3-deep chain',
    kind: 'convert', units: ['w4', 'w5'], image: 'w5-top.qcow2',
    qemu: { cmd: 'qemu-img', args: (src, dst) => ['convert', '-f', 'qcow2', '-O', 'raw', src, dst] },
    vdisk: (src, dst) => ['convert', '-f', 'qcow2', '-O', 'raw', src, dst],
    targets: { ratio: 1.0, ...CONVERT },
  },
];

/** `--only W1,W4` → workloads; 'W4' selects W4-plain/zlib/zstd, 'W5' both W5 workloads. */
export function selectWorkloads(only) {
  if (!only) return WORKLOADS;
  const wanted = only.split(',').map((s) => s.trim().toUpperCase()).filter(Boolean);
  const picked = WORKLOADS.filter((w) => wanted.some((x) => w.id.toUpperCase() === x || w.id.toUpperCase().startsWith(`${x}-`)));
  const unknown = wanted.filter((x) => !WORKLOADS.some((w) => w.id.toUpperCase() === x || w.id.toUpperCase().startsWith(`${x}-`)));
  if (unknown.length) throw new Error(`unknown workload(s) ${unknown.join(', ')}; known: ${WORKLOADS.map((w) => w.id).join(', ')}`);
  return picked;
}

/** Byte comparison of two map outputs; describes the first difference. */
export function compareMapOutputs(vPath, qPath) {
  const v = readFileSync(vPath);
  const q = readFileSync(qPath);
  if (v.equals(q)) return { ok: true, note: `identical (${q.toString('utf8').trim().split('\n').length} entries, ${q.length} bytes)` };
  const vl = v.toString('utf8').split('\n');
  const ql = q.toString('utf8').split('\n');
  let i = 0;
  while (i < vl.length && i < ql.length && vl[i] === ql[i]) i++;
  return {
    ok: false,
    note: `MISMATCH at line ${i + 1}: vdisk ${JSON.stringify((vl[i] ?? '<end>').slice(0, 160))} vs QEMU ${JSON.stringify((ql[i] ?? '<end>').slice(0, 160))} (${vl.length} vs ${ql.length} lines)`,
  };
}

/** Ranges [start, length, allocated] merged where neighbours agree. */
function merge(ranges) {
  const out = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last && last[2] === r[2] && last[0] + last[1] === r[0]) last[1] += r[1];
    else if (r[1] > 0) out.push([...r]);
  }
  return out;
}

/** vdisk allocation JSON vs `qemu-io -c map` lines, as allocated / not allocated ranges. */
export function compareAllocOutputs(vPath, qPath) {
  let v;
  try {
    v = merge(JSON.parse(readFileSync(vPath, 'utf8')).map((e) => [e.start, e.length, e.present]));
  } catch (e) {
    return { ok: false, note: `MISMATCH: vdisk output is not JSON (${e.message})` };
  }
  const q = [];
  for (const line of readFileSync(qPath, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const m = /\((0x[0-9a-f]+)\) bytes\s+(allocated|not allocated) at offset .*\((0x[0-9a-f]+)\)/.exec(line);
    if (!m) return { ok: false, note: `MISMATCH: cannot parse qemu-io line ${JSON.stringify(line)}` };
    q.push([Number(BigInt(m[3])), Number(BigInt(m[1])), m[2] === 'allocated']);
  }
  const qm = merge(q);
  const same = v.length === qm.length && v.every((r, i) => r[0] === qm[i][0] && r[1] === qm[i][1] && r[2] === qm[i][2]);
  if (same) return { ok: true, note: `same allocation (${qm.length} range${qm.length === 1 ? '' : 's'})` };
  const i = v.findIndex((r, k) => !qm[k] || r.join() !== qm[k].join());
  return { ok: false, note: `MISMATCH at range ${i}: vdisk ${JSON.stringify(v[i] ?? null)} vs qemu-io ${JSON.stringify(qm[i] ?? null)} (${v.length} vs ${qm.length} ranges)` };
}
