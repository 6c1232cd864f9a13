#!/usr/bin/env bash
# Image formats side by side on the same content: one ext4 disk holding a
# large file (half random, half text), served by sendense-restorefs as
#   plain      qcow2 (our qcow2 reader)
#   zlib       qcow2 -c, zlib-compressed clusters (our reader)
#   zstd       qcow2 -c with compression_type=zstd (our reader, libzstd)
#   l2         qcow2 with extended L2 entries (our reader)
#   vmdk       VMDK monolithicSparse (qemu-nbd)
# Cold cache each run (drop_caches); prints MB/s of `cat` of the file and the
# ratio to plain qcow2, and the reader `status` names. Needs root; figures,
# never assertions.
#   bash tests/benchmark/formats-benchmark.sh [BUILD_DIR] [FILE_MIB]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
file_mib=${2:-512}
# shellcheck source=lib.sh
source "$top/tests/benchmark/lib.sh"  # bench_measure; RUNS (default 3)
work=$(mktemp -d /var/tmp/sendense-nbd-bench-XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  mountpoint -q "$work/mnt" && umount -l "$work/mnt" || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "making images in $work (${file_mib} MiB file)" >&2
mkdir -p "$work/src" "$work/repo"/{plain,zlib,zstd,l2,vmdk} "$work/mnt"
# Half random, half text: the compressed image really decompresses.
head -c $((file_mib * 1048576 / 2)) /dev/urandom >"$work/src/big.bin"
{ yes 'a line of compressible text in the big file' || true; } | head -c $((file_mib * 1048576 / 2)) >>"$work/src/big.bin"
mkfs.ext4 -q -F -I 256 -d "$work/src" "$work/disk.raw" "$((file_mib + 64))M" >/dev/null
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/repo/plain/backup-plain-20260101000000.qcow2"
qemu-img convert -c -f raw -O qcow2 "$work/disk.raw" "$work/repo/zlib/backup-zlib-20260101000000.qcow2"
qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd "$work/disk.raw" "$work/repo/zstd/backup-zstd-20260101000000.qcow2"
qemu-img convert -f raw -O qcow2 -o extended_l2=on "$work/disk.raw" "$work/repo/l2/backup-l2-20260101000000.qcow2"
qemu-img convert -f raw -O vmdk "$work/disk.raw" "$work/repo/vmdk/backup-vmdk-20260101000000.vmdk"
"$build/sendense-restore" catalog import "$work/repo" --catalog "$work/catalog.db" >/dev/null
"$build/sendense-restorefs" "$work/mnt" --catalog "$work/catalog.db" -f 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 50); do mountpoint -q "$work/mnt" && break; sleep 0.1; done

echo "## Cold read of one ${file_mib} MiB file (cat) through sendense-restorefs; median of ${runs}"
printf '| image | reader | MB/s | ratio to plain qcow2 |\n|---|---|---|---|\n'
base=
for name in plain zlib zstd l2 vmdk; do
  f="$work/mnt/backup-$name-20260101000000/disk/big.bin"
  cmp -s "$f" "$work/src/big.bin" || { echo "$name: content differs" >&2; exit 1; }
  t=$(bench_measure "cat '$f'")
  mbs=$(echo "$file_mib * 1.048576 / $t" | bc -l)
  [ -z "$base" ] && base=$mbs
  reader=$("$build/sendense-restore" status --json --catalog "$work/catalog.db" |
    python3 -c 'import json,sys; print(next(m["image_reader"] for m in json.load(sys.stdin) if m["backup"].startswith(sys.argv[1])))' "backup-$name-" 2>/dev/null || echo "?")
  printf '| %s | %s | %.0f | %.2f |\n' "$name" "$reader" "$mbs" "$(echo "$mbs / $base" | bc -l)"
done
