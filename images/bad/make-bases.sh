#!/usr/bin/env bash
# Builds the valid base images the hostile corpus is derived from (images/bad/base/).
#
# Every base is made by qemu-img / qemu-io 7.2 and committed; make-corpus.mjs then derives
# the hostile cases from them by patching bytes (HOSTILE-IMAGES.md §6), so the corpus can
# be rebuilt without QEMU. Offsets inside the bases are read from their headers by the
# generator, never hard-coded. Re-run only to refresh the bases (snapshot timestamps and
# LUKS key material change on every run).
#
# Usage: bash images/bad/make-bases.sh
set -euo pipefail
cd "$(dirname "$0")/base"
for tool in qemu-img qemu-io; do
  command -v "$tool" >/dev/null || { echo "make-bases: $tool is required" >&2; exit 1; }
done
export LC_ALL=C
rm -f -- *.qcow2 *.raw

qio() { local img=$1; shift; local a=(); for c in "$@"; do a+=(-c "$c"); done; qemu-io -f qcow2 "${a[@]}" "$img" >/dev/null; }
create() { qemu-img create -q "$@"; }

# B (HOSTILE-IMAGES.md §0): v3, 64 KiB clusters, data at guest 0..128K and 1M.
create -f qcow2 base.qcow2 64M
qio base.qcow2 'write -P 0xaa 0 128k' 'write -P 0xbb 1M 64k'

# The same in version 2.
create -f qcow2 -o compat=0.10 v2.qcow2 64M
qio v2.qcow2 'write -P 0xaa 0 128k' 'write -P 0xbb 1M 64k'

# Compressed clusters, zlib and zstd: guest 0 compressed, guest 64K plain data.
create -f qcow2 zlib.qcow2 64M
qio zlib.qcow2 'write -c -P 0xcc 0 64k' 'write -P 0xdd 64k 64k'
create -f qcow2 -o compression_type=zstd zstd.qcow2 64M
qio zstd.qcow2 'write -c -P 0xcc 0 64k' 'write -P 0xdd 64k 64k'

# Extended L2 entries (32 subclusters of 2 KiB).
create -f qcow2 -o extended_l2=on extl2.qcow2 64M
qio extl2.qcow2 'write -P 0xaa 0 4k' 'write -P 0xbb 64k 64k'

# An internal snapshot.
create -f qcow2 snap.qcow2 64M
qio snap.qcow2 'write -P 0xaa 0 128k'
qemu-img snapshot -c s1 snap.qcow2
qio snap.qcow2 'write -P 0xbb 1M 64k'

# A persistent dirty bitmap (bitmaps extension, directory, bitmap table).
create -f qcow2 bitmap.qcow2 64M
qio bitmap.qcow2 'write -P 0xaa 0 128k'
qemu-img bitmap --add bitmap.qcow2 b1

# LUKS encryption (aes-128-cbc-plain64 keeps the key material small).
create -f qcow2 --object secret,id=s0,data=vdisk -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain64 luks.qcow2 64M

# An external data file.
create -f qcow2 -o data_file=datafile.raw datafile.qcow2 1M
qio datafile.qcow2 'write -P 0xaa 0 64k'

# A two-layer chain with a recorded backing format, and a raw backing file.
create -f qcow2 chain-base.qcow2 64M
qio chain-base.qcow2 'write -P 0x11 0 64k'
create -f qcow2 -b chain-base.qcow2 -F qcow2 chain-top.qcow2
qio chain-top.qcow2 'write -P 0x22 64k 64k'
head -c 65536 /dev/zero | tr '\0' '\141' > raw-backing.raw
create -f qcow2 -b raw-backing.raw -F raw raw-top.qcow2 1M

ls -l
