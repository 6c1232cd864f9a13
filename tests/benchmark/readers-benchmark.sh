#!/usr/bin/env bash
# The new readers side by side with the alternatives, on the same content
# (one FILE_MIB MiB random file and SMALL_FILES files of 1-9 KiB in folders):
#   NTFS   sendense-restorefs over a qcow2 GPT backup (our NTFS reader over
#          libntfs-3g) vs ntfs-3g -o ro on the raw partition image
#   XFS    sendense-restorefs over a qcow2 GPT backup (our XFS reader) vs the
#          kernel's XFS on a read-only loop device of the raw partition image
#          (ro,norecovery)
#   formats   formats-benchmark.sh: zlib/zstd/extended-L2 qcow2 (our reader) and
#          VMDK (qemu-nbd) vs plain qcow2, all through sendense-restorefs
# Cold cache each run (drop_caches), median of RUNS (default 3). Prints MB/s
# of `cat` of the large file and files/s of `tar` of the small files, and each
# as a ratio to the reference (ntfs-3g, kernel XFS; >1 = faster than it).
# Needs root; not part of the test suite (figures, never assertions).
#   bash tests/benchmark/readers-benchmark.sh [BUILD_DIR] [FILE_MIB] [SMALL_FILES]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
build=$(cd "$build" && pwd)
file_mib=${2:-512}
small=${3:-4000}
# shellcheck source=lib.sh
source "$top/tests/benchmark/lib.sh"  # bench_measure; RUNS (default 3)
work=$(mktemp -d /var/tmp/sendense-readers-bench-XXXXXX)

pids=()
mounts=()
loops=()
cleanup() {
  local i
  set +e
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    mountpoint -q "${mounts[i]}" && { umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}"; }
  done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null; done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in mkntfs ntfs-3g mkfs.xfs sfdisk qemu-img losetup bc; do
  command -v "$tool" >/dev/null || { echo "missing tool $tool" >&2; exit 1; }
done

echo "making fixtures in $work (${file_mib} MiB file, ${small} small files)" >&2
mkdir -p "$work/src/small" "$work/repo"
head -c $((file_mib * 1048576)) /dev/urandom >"$work/src/big.bin"
for i in $(seq "$small"); do
  d="$work/src/small/d$((i / 100))"
  [ -d "$d" ] || mkdir "$d"
  head -c $((1024 + (i * 37) % 8192)) /dev/urandom >"$d/f$i"
done
# Room for the file, the small files (one 4 KiB cluster/block each at least,
# plus metadata) and the filesystem's own structures; XFS wants >= 300 MiB.
fs_mib=$((file_mib + small * 16 / 1024 + 128))
[ "$fs_mib" -lt 320 ] && fs_mib=320

# gpt_disk RAW IMG TYPE: a GPT disk with IMG as partition 1.
gpt_disk() {
  local sectors=$(($(stat -c %s "$2") / 512))
  truncate -s $(((2048 + sectors + 2048) * 512)) "$1"
  printf 'label: gpt\nstart=2048, size=%s, type=%s\n' "$sectors" "$3" |
    sfdisk -q --wipe never --wipe-partitions never "$1" >/dev/null
  dd if="$2" of="$1" bs=1M seek=$((2048 * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
}

mkdir -p "$work/fill"
# NTFS: content written through a real read-write ntfs-3g mount.
truncate -s "${fs_mib}M" "$work/ntfs.img"
mkntfs -q -F -Q "$work/ntfs.img" 2>"$work/mkntfs.log" || { cat "$work/mkntfs.log" >&2; exit 1; }
ntfs-3g "$work/ntfs.img" "$work/fill"; mounts+=("$work/fill")
cp -r "$work/src/." "$work/fill/"
umount "$work/fill"; unset 'mounts[-1]'
gpt_disk "$work/ntfs.raw" "$work/ntfs.img" EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
qemu-img convert -f raw -O qcow2 "$work/ntfs.raw" "$work/repo/backup-ntfs-20260101000000.qcow2"
rm -f "$work/ntfs.raw"

# XFS: content written through the kernel's XFS on a loop device.
truncate -s "${fs_mib}M" "$work/xfs.img"
mkfs.xfs -q -f "$work/xfs.img"
loop=$(losetup -f --show "$work/xfs.img"); loops+=("$loop")
mount -t xfs "$loop" "$work/fill"; mounts+=("$work/fill")
cp -r "$work/src/." "$work/fill/"
umount "$work/fill"; unset 'mounts[-1]'
losetup -d "$loop"; loops=()
gpt_disk "$work/xfs.raw" "$work/xfs.img" 0FC63DAF-8483-4772-8E79-3D69D8477DE4
qemu-img convert -f raw -O qcow2 "$work/xfs.raw" "$work/repo/backup-xfs-20260101000000.qcow2"
rm -f "$work/xfs.raw"

for fs in ntfs xfs; do
  "$build/sendense-restore" catalog add --id "backup-$fs-20260101000000" --vm "$fs" --format qcow2 \
    --path "$work/repo/backup-$fs-20260101000000.qcow2" --catalog "$work/catalog.db" >/dev/null
done

mkdir -p "$work/m-sendense" "$work/m-ntfs-3g" "$work/m-kernel"
"$build/sendense-restorefs" "$work/m-sendense" --catalog "$work/catalog.db" --attach userspace -f 2>"$work/daemon.log" &
pids+=($!); mounts+=("$work/m-sendense")
ntfs-3g -o ro "$work/ntfs.img" "$work/m-ntfs-3g"; mounts+=("$work/m-ntfs-3g")
loop=$(losetup -f --show -r "$work/xfs.img"); loops+=("$loop")
mount -t xfs -o ro,norecovery "$loop" "$work/m-kernel"; mounts+=("$work/m-kernel")
for _ in $(seq 50); do mountpoint -q "$work/m-sendense" && break; sleep 0.1; done
mountpoint -q "$work/m-sendense" || { echo "sendense-restorefs did not mount" >&2; cat "$work/daemon.log" >&2; exit 1; }


# table TITLE REF_LABEL LABEL=ROOT...: the first LABEL is the reference.
table() {
  local title=$1 reflabel=$2 ref= t r label root
  shift 2
  declare -A big tree
  local labels=()
  for t in "$@"; do
    label=${t%%=*}; root=${t#*=}; labels+=("$label")
    cmp -s "$root/big.bin" "$work/src/big.bin" || { echo "$label: big.bin differs from the source" >&2; exit 1; }
    [ "$(find "$root/small" -type f | wc -l)" = "$small" ] || { echo "$label: not $small small files" >&2; exit 1; }
    big[$label]=$(bench_measure "cat '$root/big.bin'")
    tree[$label]=$(bench_measure "tar -cf - -C '$root' small | cat")
    [ -z "$ref" ] && ref=$label
  done
  echo
  echo "## $title: cold cat of one ${file_mib} MiB file, tar of ${small} small files (1-9 KiB, folders of 100); median of ${runs}"
  printf '| reader | big file MB/s | ratio to %s | small files files/s | ratio to %s |\n|---|---|---|---|---|\n' "$reflabel" "$reflabel"
  for label in "${labels[@]}"; do
    printf '| %s | %.0f | %.2f | %.0f | %.2f |\n' "$label" \
      "$(echo "$file_mib * 1.048576 / ${big[$label]}" | bc -l)" "$(echo "${big[$ref]} / ${big[$label]}" | bc -l)" \
      "$(echo "$small / ${tree[$label]}" | bc -l)" "$(echo "${tree[$ref]} / ${tree[$label]}" | bc -l)"
  done
}

table NTFS ntfs-3g "ntfs-3g=$work/m-ntfs-3g" "sendense=$work/m-sendense/backup-ntfs-20260101000000/part1"
table XFS kernel "kernel=$work/m-kernel" "sendense=$work/m-sendense/backup-xfs-20260101000000/part1"

# The qemu-nbd image reader: its own script (its own fixtures and mount),
# after this one's mounts are gone.
cleanup
trap - EXIT
echo
RUNS=$runs bash "$top/tests/benchmark/formats-benchmark.sh" "$build" "$file_mib"
