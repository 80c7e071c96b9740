#!/bin/sh
# The `vdisk` command (copied to dist/cli/vdisk by the build). It starts Node from vdisk's
# start-up snapshot (vdisk.blob, or vdisk-pool.blob for convert and compare, made by
# scripts/build-cli.mjs: the CLI's modules already loaded) when that snapshot was built by
# the `node` found here and that node has not changed since — the same file (inode) as at
# the build, not modified after the snapshot (a package upgrade replaces the file; its
# date may be older than the snapshot) — and no NODE_OPTIONS are set (V8 options such as
# --max-old-space-size make a snapshot fail to load; the V8 flags the snapshot was built
# with, the stamp's third line, are passed); otherwise it runs dist/cli/bin.js, the same
# CLI loaded the usual way. On the usual way it starts no process but node (each costs
# milliseconds of a command that takes tens).
# NODE_EXTRA_CA_CERTS is dropped: vdisk opens no network connection, and Node 20 parses
# that CA bundle at every start.
unset NODE_EXTRA_CA_CERTS
# V8's pool of background threads (its compilers, the concurrent parts of its garbage
# collector) is sized to the machine (--v8-pool-size=0: the available parallelism less
# one, at least one) instead of Node's fixed 4: on two cores, four background threads took
# the main thread's core from it (BENCHMARKS.md, twelfth round: maps 6-8 % faster). Not
# when NODE_OPTIONS set a size of their own, which this would override.
case ${NODE_OPTIONS-} in
  *--v8-pool-size*) pool= ;;
  *) pool=--v8-pool-size=0 ;;
esac
f=$0
while [ -L "$f" ]; do
  l=$(readlink "$f")
  case $l in
    /*) f=$l ;;
    *) f=${f%/*}/$l ;;
  esac
done
case $f in
  */*) d=${f%/*} ;;
  *) d=. ;;
esac
case $d in
  /*) ;;
  *) d=$PWD/$d ;;
esac
# `node` on PATH, found without a subshell (as `command -v` would; no globbing of PATH).
n=
o=$IFS
IFS=:
set -f
for p in ${PATH-}; do
  [ -n "$p" ] || p=.
  if [ -f "$p/node" ] && [ -x "$p/node" ]; then
    n=$p/node
    break
  fi
done
set +f
IFS=$o
[ -n "$n" ] || { echo 'vdisk: node not found' >&2; exit 127; }
# The commands that start worker threads use the snapshot that keeps Node's code cache of
# the built-ins a worker compiles; the others, the one without (smaller, quicker to load).
# The others also get glibc's allocator tuned for a process that lives tens of
# milliseconds: every page it touches first costs a page fault, 1.5 us on a virtual
# machine that hands freed memory back to its host (BENCHMARKS.md, thirteenth round: 40 %
# of a map's faults gone, maps 2-10 % faster). Memory comes in transparent huge pages where
# the kernel gives them on request (hugetlb=1: glibc asks with madvise), the heap grows
# 4 MiB at a time (glibc asks only for growth of a huge page or more), and freed memory is
# kept for reuse instead of being returned (trim_threshold). Not for convert and compare,
# which stream an image's data through buffers of their own: they ran slower with these.
# The user's own GLIBC_TUNABLES come after these and win; other C libraries ignore them.
case ${1-} in
  convert | compare) s=$d/vdisk-pool.blob ;;
  *)
    s=$d/vdisk.blob
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1:glibc.malloc.top_pad=4194304:glibc.malloc.trim_threshold=536870912${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}
    export GLIBC_TUNABLES
    ;;
esac
if [ -z "${NODE_OPTIONS-}" ] && [ -r "$s" ] && [ -r "$d/vdisk.blob.node" ] &&
  { IFS= read -r b && IFS= read -r ino && IFS= read -r v8f; } < "$d/vdisk.blob.node" && [ "$n" -ef "$b" ] && [ ! "$n" -nt "$s" ]; then
  # The flags are words without wildcards (split, not globbed).
  set -f
  # Replacing the node file (a package upgrade renames a new one into place, whose date may
  # be older than the snapshot) changes its directory: while that directory has not changed
  # since the snapshot was built, the file is the one that built it. Otherwise compare
  # inodes (one `ls`).
  if [ ! "${b%/*}" -nt "$s" ]; then
    exec "$n" $pool $v8f --snapshot-blob "$s" "$d" "$@"
  fi
  i=$(ls -iL "$n")
  i=${i#"${i%%[! ]*}"}
  if [ "${i%% *}" = "$ino" ]; then
    exec "$n" $pool $v8f --snapshot-blob "$s" "$d" "$@"
  fi
fi
exec "$n" $pool "$d/bin.js" "$@"
