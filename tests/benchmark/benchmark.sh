#!/usr/bin/env bash
# Side-by-side read benchmark: the same ext4 volume read through
#   sendense    sendense-restorefs over the qcow2 image (userspace: our qcow2 reader + libext2fs maps + our reads)
#   kernel      the kernel's ext4 on a read-only loop device of the raw image (ro,noload)
#   qemu        the kernel's ext4 over qemu's qcow2 driver (qemu-storage-daemon FUSE export, read-only)
#   fuse2fs     e2fsprogs' fuse2fs on the raw image (ro)
# Cold cache each run (drop_caches). Prints MB/s for one large file and
# files/s for a tree of small files, and each as a ratio to the kernel.
# Needs root; not part of the test suite (figures, never assertions).
#   bash tests/benchmark/benchmark.sh [BUILD_DIR] [FILE_MIB] [SMALL_FILES]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
file_mib=${2:-512}
small=${3:-4000}
# shellcheck source=lib.sh
source "$top/tests/benchmark/lib.sh"  # bench_measure; RUNS (default 3)
work=$(mktemp -d /var/tmp/sendense-bench-XXXXXX)

pids=()
mounts=()
loops=()
cleanup() {
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT

echo "making fixtures in $work (${file_mib} MiB file, ${small} small files)" >&2
mkdir -p "$work/src/small" "$work/repo/bench"
head -c $((file_mib * 1048576)) /dev/urandom > "$work/src/big.bin"
for i in $(seq "$small"); do head -c $((1024 + (i * 37) % 8192)) /dev/urandom > "$work/src/small/f$i"; done
fs_mib=$((file_mib + small * 12 / 1024 + 64))
mkfs.ext4 -q -F -I 256 -d "$work/src" "$work/disk.raw" "${fs_mib}M" >/dev/null
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/repo/bench/backup-bench-20260101000000.qcow2"
"$build/sendense-restore" catalog import "$work/repo" --catalog "$work/catalog.db" >/dev/null

mkdir -p "$work/m-sendense" "$work/m-kernel" "$work/m-qemu" "$work/m-fuse2fs"
"$build/sendense-restorefs" "$work/m-sendense" --catalog "$work/catalog.db" -f 2>"$work/daemon.log" &
pids+=($!); mounts+=("$work/m-sendense")
loop=$(losetup -f --show -r "$work/disk.raw"); loops+=("$loop")
mount -o ro,noload "$loop" "$work/m-kernel"; mounts+=("$work/m-kernel")
touch "$work/qemu-export"
qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$work/repo/bench/backup-bench-20260101000000.qcow2",read-only=on \
  --blockdev driver=qcow2,node-name=q,file=f,read-only=on \
  --export type=fuse,id=e,node-name=q,mountpoint="$work/qemu-export",writable=off \
  --daemonize --pidfile "$work/qsd.pid"
pids+=("$(cat "$work/qsd.pid")"); mounts+=("$work/qemu-export")
qloop=$(losetup -f --show -r "$work/qemu-export"); loops+=("$qloop")
mount -o ro,noload "$qloop" "$work/m-qemu"; mounts=("$work/m-qemu" "${mounts[@]}")
have_fuse2fs=0
if command -v fuse2fs >/dev/null; then
  fuse2fs -o ro,fakeroot "$work/disk.raw" "$work/m-fuse2fs" && have_fuse2fs=1 && mounts+=("$work/m-fuse2fs")
fi
for _ in $(seq 50); do mountpoint -q "$work/m-sendense" && break; sleep 0.1; done

root_of() {
  case $1 in
    sendense) echo "$work/m-sendense/backup-bench-20260101000000/disk" ;;
    *) echo "$work/m-$1" ;;
  esac
}


targets=(kernel sendense qemu)
[ "$have_fuse2fs" = 1 ] && targets+=(fuse2fs)
echo "## Cold sequential read of one ${file_mib} MiB file (cat), and tar of ${small} small files; median of ${runs}"
printf '| reader | big file MB/s | ratio to kernel | small files files/s | ratio to kernel |\n|---|---|---|---|---|\n'
declare -A big tree
for t in "${targets[@]}"; do
  r=$(root_of "$t")
  cmp -s "$r/big.bin" "$work/src/big.bin" || { echo "$t: big.bin differs from the source" >&2; exit 1; }
  big[$t]=$(bench_measure "cat '$r/big.bin'")
  tree[$t]=$(bench_measure "tar -cf - -C '$r' small | cat")
done
for t in "${targets[@]}"; do
  mbs=$(echo "$file_mib * 1.048576 / ${big[$t]}" | bc -l)
  fps=$(echo "$small / ${tree[$t]}" | bc -l)
  printf '| %s | %.0f | %.2f | %.0f | %.2f |\n' "$t" "$mbs" "$(echo "${big[kernel]} / ${big[$t]}" | bc -l)" \
    "$fps" "$(echo "${tree[kernel]} / ${tree[$t]}" | bc -l)"
done
