#!/usr/bin/env bash
# Builds the committed fixture images in images/ and their qemu-img 7.2 goldens.
#
# Deterministic: fixed patterns, no random data, no snapshots (their timestamps would
# change on every run). Every file is made non-sparse before the goldens are taken,
# because git does not keep holes: the goldens must describe the files exactly as a
# checkout will write them. (`actual-size` in the info goldens still depends on the
# filesystem; the tests ignore it.)
#
# For each image <stem>.<ext> it writes, all produced by qemu-img run inside images/ (so
# file names in the output are relative):
#   <stem>.map.json   qemu-img map --output=json
#   <stem>.map.txt    qemu-img map (human) stdout
#   <stem>.map.err    only when the human map fails: "exit status N" and its stderr
#   <stem>.info.json  qemu-img info --output=json
#
# Usage: bash images/make-fixtures.sh   (or: npm run images)
set -euo pipefail

cd "$(dirname "$0")"

for tool in qemu-img qemu-io; do
  command -v "$tool" >/dev/null || { echo "make-fixtures: $tool is required" >&2; exit 1; }
done
version=$(qemu-img --version | head -n1)
case "$version" in
  "qemu-img version 7.2."*) ;;
  *) echo "make-fixtures: warning: goldens are meant to come from qemu-img 7.2, found: $version" >&2 ;;
esac

export LC_ALL=C

# Start from a clean slate: remove everything this script makes (never README.md or the script).
rm -f -- *.qcow2 *.raw *.data *.map.json *.map.txt *.map.err *.info.json

qio() { # qio IMAGE CMD... : run qemu-io commands on IMAGE (qcow2), quietly
  local img=$1; shift
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null
}

create() { qemu-img create -q "$@"; }

# --- sample.qcow2: the README quick-start image -------------------------------------------
# 4 MiB, 64 KiB clusters: data at 0 and 1 MiB, a zero cluster at 2 MiB, 4 KiB of data at
# 3 MiB + 4 KiB (a partly written cluster); the rest unallocated.
create -f qcow2 sample.qcow2 4M
qio sample.qcow2 'write -P 0x5a 0 64k' 'write -P 0xa5 1M 64k' 'write -z 2M 64k' \
  'write -P 0x42 3076k 4k'

# --- kinds.qcow2: every standalone cluster kind (E1) ----------------------------------------
# data@0, zero (write -z)@128k, written zeroes@256k, compressed (zlib)@512k, write -z -u@640k.
create -f qcow2 kinds.qcow2 1M
qio kinds.qcow2 'write -P 0x11 0 64k' 'write -z 128k 64k' 'write -P 0 256k 64k' \
  'write -c -P 0x22 512k 64k' 'write -z -u 640k 64k'

# --- prealloc-metadata.qcow2: preallocation=metadata (E2), fully allocated host file -------
# 4 KiB clusters, 256 KiB. On a dense host file the RECURSE heuristic does not fire, so the
# preallocated clusters map as plain data with offsets.
create -f qcow2 -o preallocation=metadata,cluster_size=4k prealloc-metadata.qcow2 256k
qio prealloc-metadata.qcow2 'write -P 0x33 64k 16k' 'write -z 128k 16k' 'write -z -u 192k 16k'

# --- chain-{base,mid,top}.qcow2: 3-layer chain with a short middle layer (E3) ---------------
# 16 KiB clusters to keep the files small. base 1M, mid 1M, top 2M.
create -f qcow2 -o cluster_size=16k chain-base.qcow2 1M
qio chain-base.qcow2 'write -P 1 0 128k' 'write -P 2 512k 64k'
create -f qcow2 -o cluster_size=16k -b chain-base.qcow2 -F qcow2 chain-mid.qcow2 1M
qio chain-mid.qcow2 'write -P 3 64k 64k'
create -f qcow2 -o cluster_size=16k -b chain-mid.qcow2 -F qcow2 chain-top.qcow2 2M
qio chain-top.qcow2 'write -z 512k 64k' 'write -P 4 1536k 64k'

# --- subclusters.qcow2: extended L2, 64 KiB clusters = 2 KiB subclusters (E4) --------------
create -f qcow2 -o extended_l2=on,cluster_size=64k subclusters.qcow2 256k
qio subclusters.qcow2 'write -P 5 0 2k' 'write -P 6 8k 4k' 'write -z 16k 2k' 'write -P 7 62k 4k'

# --- v2.qcow2: compat=0.10 (no zero clusters: write -z deallocates), 4 KiB clusters ---------
create -f qcow2 -o compat=0.10,cluster_size=4k v2.qcow2 256k
qio v2.qcow2 'write -P 0x44 0 8k' 'write -z 16k 4k' 'write -P 0x45 32k 4k' 'discard 32k 4k' \
  'write -c -P 0x46 64k 4k' 'write -c -P 0x46 68k 4k' 'write -P 0x47 100k 1k'

# --- datafile.qcow2 (+ datafile.data): external data file (E6) -----------------------------
# 16 KiB clusters, 192 KiB: data@32k, write -z@128k.
create -f qcow2 -o data_file=datafile.data,cluster_size=16k datafile.qcow2 192k
qio datafile.qcow2 'write -P 8 32k 32k' 'write -z 128k 32k'

# --- datafile-raw.qcow2 (+ datafile-raw.data): external data file with data_file_raw=on ----
# Same writes. data_file_raw forces metadata preallocation: every cluster maps 1:1.
create -f qcow2 -o data_file=datafile-raw.data,data_file_raw=on,cluster_size=16k datafile-raw.qcow2 192k
qio datafile-raw.qcow2 'write -P 8 32k 32k' 'write -z 128k 32k'

# --- unaligned.raw: raw file of unaligned size, every byte written (not sparse) ------------
# 100001 bytes of a repeating text pattern: the block layer rounds the size up to 100352.
(set +o pipefail; yes 'vdisk raw fixture' | head -c 100001 > unaligned.raw)

# --- make every file dense (git does not keep holes) --------------------------------------
for f in *.qcow2 *.raw *.data; do
  cp --sparse=never -- "$f" "$f.dense"
  mv -- "$f.dense" "$f"
done

# --- goldens ---------------------------------------------------------------------------
golden() { # golden FILE FORMAT
  local file=$1 fmt=$2 stem=${1%.*}
  qemu-img map -f "$fmt" --output=json "$file" > "$stem.map.json"
  local rc=0
  qemu-img map -f "$fmt" "$file" > "$stem.map.txt" 2> "$stem.map.stderr" || rc=$?
  if [ "$rc" -ne 0 ]; then
    { echo "exit status $rc"; cat "$stem.map.stderr"; } > "$stem.map.err"
  fi
  rm -f -- "$stem.map.stderr"
  qemu-img info -f "$fmt" --output=json "$file" > "$stem.info.json"
}

for f in *.qcow2; do golden "$f" qcow2; done
for f in *.raw; do golden "$f" raw; done

echo "make-fixtures: $(ls | wc -l) files, $(du -sh --apparent-size . | cut -f1) in images/" >&2
