#!/usr/bin/env bash
# sendense-restore-web throughput against reading the same through the FUSE
# mount (not run by CI):
#
#   bash tests/benchmark/web-benchmark.sh BUILD_DIR [SIZE_MIB]
#
# Makes a raw ext4 image holding one SIZE_MIB (default 512) random file and
# a tree of 2,000 small files (4 KiB .. 64 KiB), catalogs it, starts
# sendense-restorefs and sendense-restore-web (operator token) from
# BUILD_DIR, then times, each after dropping the page cache:
#   1. curl of the large file over HTTP   vs   cat of it from the mount
#   2. zip of the small-file tree over HTTP   vs   tar -c of it from the mount
# Prints MB/s. Needs root, /dev/fuse, mkfs.ext4, curl. Everything it starts
# or mounts is taken down on exit.
set -euo pipefail
build=$(cd "${1:?usage: $0 BUILD_DIR [SIZE_MIB]}" && pwd)
size_mib=${2:-512}
work=$(mktemp -d /tmp/web-bench.XXXXXX)
mnt=$work/mnt
daemon_pid= web_pid=
cleanup() {
  set +e
  [ -n "$web_pid" ] && kill "$web_pid" 2>/dev/null && wait "$web_pid" 2>/dev/null
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  "$build/sendense-restorefs" --unmount "$mnt" >/dev/null 2>&1
  mountpoint -q "$mnt" && umount -l "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/src/small" "$mnt" "$work/repo/bench"
head -c $((size_mib * 1048576)) /dev/urandom >"$work/src/large.bin"
for i in $(seq 1 2000); do head -c $(( (RANDOM % 61 + 4) * 1024 )) /dev/urandom >"$work/src/small/f$i"; done
img=$work/repo/bench/backup-bench-20260101000000.img
truncate -s $((size_mib + 512))M "$img"
mkfs.ext4 -q -F -d "$work/src" "$img"
rm -rf "$work/src"
cli() { "$build/sendense-restore" "$@" --catalog "$work/catalog.db"; }
cli catalog import "$work/repo" >/dev/null
token=$(cli token create --operator 2>/dev/null)
"$build/sendense-restorefs" "$mnt" --config /dev/null --catalog "$work/catalog.db" -f >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
"$build/sendense-restore-web" --mountpoint "$mnt" --catalog "$work/catalog.db" --listen 127.0.0.1:0 --user nobody >"$work/web.log" 2>&1 &
web_pid=$!
for _ in $(seq 100); do grep -q web_listening "$work/web.log" && break; sleep 0.1; done
port=$(grep -o 'web_listening .*port=[0-9]*' "$work/web.log" | grep -o 'port=[0-9]*' | cut -d= -f2)
id=backup-bench-20260101000000
tree=$mnt/$id/disk
ls "$tree" >/dev/null  # attach
api="http://127.0.0.1:$port/api/v1/backups/$id"
auth="Authorization: Bearer $token"

mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }
timed() {  # timed CMD... -> seconds
  sync; echo 3 >/proc/sys/vm/drop_caches
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
bytes=$(stat -c %s "$tree/large.bin")
small=$(du -sb --apparent-size "$tree/small" | cut -f1)
t_cat=$(timed cat "$tree/large.bin")
t_http=$(timed curl -sSf -o /dev/null -H "$auth" "$api/download?path=/disk/large.bin")
t_tar=$(timed tar -cf - -C "$tree" small)
t_zip=$(timed curl -sSf -o /dev/null -H "$auth" "$api/archive?path=/disk/small&format=zip")
t_ztar=$(timed curl -sSf -o /dev/null -H "$auth" "$api/archive?path=/disk/small&format=tar")
echo "large file ($size_mib MiB):   cat from the mount $(mbps "$bytes" "$t_cat") MB/s   HTTP download $(mbps "$bytes" "$t_http") MB/s"
echo "small files (2000, $((small / 1048576)) MiB): tar -c from the mount $(mbps "$small" "$t_tar") MB/s   HTTP zip $(mbps "$small" "$t_zip") MB/s   HTTP tar $(mbps "$small" "$t_ztar") MB/s"
