#!/usr/bin/env bash
# Seed corpora for the fuzz targets: small images made by the real tools
# (the recipes of tests/fixtures/ and FIXTURES.md, shrunk), each converted
# to the sparse input form (sparse_image.py pack).
#   bash tests/fuzz/make-seeds.sh OUTDIR     # OUTDIR/<target>/<seed>
# Seeds that need root (loop devices for LVM, an ntfs-3g FUSE mount, an XFS
# loop mount) are left out without it, with a note; everything else needs
# only the tools. Takes a few seconds.
set -euo pipefail

OUT=${1:?usage: make-seeds.sh OUTDIR}
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf -- "$OUT"
mkdir -p -- "$OUT"
OUT=$(cd -- "$OUT" && pwd)
WORK=$(mktemp -d)
LOOPS=()
MOUNTS=()
cleanup() {
  local m l
  for m in "${MOUNTS[@]}"; do umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || true; done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf -- "$WORK"
}
trap cleanup EXIT
ROOT=0
[[ $(id -u) -eq 0 ]] && ROOT=1

note() { printf 'make-seeds: %s\n' "$*" >&2; }
# seed TARGET NAME IMAGE: the image in sparse form as OUT/TARGET/NAME.
seed() {
  mkdir -p "$OUT/$1"
  python3 "$HERE/sparse_image.py" pack "$3" "$OUT/$1/$2"
}
# raw TARGET NAME FILE: a seed that is the bytes themselves.
raw() {
  mkdir -p "$OUT/$1"
  cp -- "$3" "$OUT/$1/$2"
}

# A small tree with what the walks should meet: nested folders, a hard
# link, fast and slow symlinks, an empty file, a sparse file, xattrs.
SRC=$WORK/src
mkdir -p "$SRC/dir/sub/deeper" "$SRC/many"
printf 'hello\n' >"$SRC/hello.txt"
head -c 2000 /dev/urandom >"$SRC/dir/random.bin"
: >"$SRC/empty"
truncate -s 1M "$SRC/sparse.bin"
printf 'middle' | dd of="$SRC/sparse.bin" bs=1 seek=500000 conv=notrunc status=none
ln "$SRC/hello.txt" "$SRC/dir/hardlink.txt"
ln -s hello.txt "$SRC/fast-link"
ln -s "$(printf 'x%.0s' $(seq 100))/target" "$SRC/dir/slow-link"
printf 'deep\n' >"$SRC/dir/sub/deeper/file"
for i in $(seq 40); do printf '%d\n' "$i" >"$SRC/many/entry-with-a-longer-name-$i"; done
if command -v setfattr >/dev/null; then
  setfattr -n user.color -v blue "$SRC/hello.txt" 2>/dev/null || true
  setfattr -n user.big -v "$(head -c 900 /dev/zero | tr '\0' v)" "$SRC/dir/random.bin" 2>/dev/null || true
fi

# ---------------------------------------------------------------- qcow2
DISK=$WORK/disk.raw
truncate -s 2M "$DISK"
head -c 4096 /dev/urandom | dd of="$DISK" bs=64k seek=1 conv=notrunc status=none
printf 'text at one megabyte\n' | dd of="$DISK" bs=1M seek=1 conv=notrunc status=none
python3 -c 'import sys; sys.stdout.write("compressible line\n" * 1000)' | dd of="$DISK" bs=64k seek=20 conv=notrunc status=none
q=$WORK/q
mkdir -p "$q"
qemu-img convert -f raw -O qcow2 -o cluster_size=4096 "$DISK" "$q/v3.qcow2"
seed qcow2 v3-4k "$q/v3.qcow2"
qemu-img convert -f raw -O qcow2 -o compat=0.10,cluster_size=512 "$DISK" "$q/v2.qcow2"
seed qcow2 v2-512 "$q/v2.qcow2"
qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096,compression_type=zlib "$DISK" "$q/zlib.qcow2"
seed qcow2 compressed-zlib "$q/zlib.qcow2"
qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096,compression_type=zstd "$DISK" "$q/zstd.qcow2"
seed qcow2 compressed-zstd "$q/zstd.qcow2"
qemu-img convert -f raw -O qcow2 -o cluster_size=16384,extended_l2=on "$DISK" "$q/extl2.qcow2"
qemu-io -f qcow2 -c 'write -P 0x11 70000 1024' -c 'write -z 0 8192' "$q/extl2.qcow2" >/dev/null
seed qcow2 extended-l2 "$q/extl2.qcow2"
# An overlay over a raw base named "base.raw" (the target provides one).
cp "$DISK" "$q/base.raw"
(cd "$q" && qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.raw -F raw overlay.qcow2 2M)
qemu-io -f qcow2 -c 'write -P 0xab 4096 8192' -c 'write -z 65536 4096' -c 'discard 1048576 4096' "$q/overlay.qcow2" >/dev/null
seed qcow2 overlay-raw-base "$q/overlay.qcow2"
(cd "$q" && qemu-img create -q -u -f qcow2 -b base.qcow2 -F qcow2 overlay2.qcow2 2M)
seed qcow2 overlay-qcow2-base "$q/overlay2.qcow2"

# ---------------------------------------------------------------- vmdk
v=$WORK/v
mkdir -p "$v/flat" "$v/split"
qemu-img convert -f raw -O vmdk "$DISK" "$v/sparse.vmdk"
seed vmdk_descriptor monolithic-sparse "$v/sparse.vmdk"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$DISK" "$v/stream.vmdk"
seed vmdk_descriptor stream-optimized "$v/stream.vmdk"
qemu-img create -q -f vmdk -o subformat=monolithicFlat "$v/flat/disk.vmdk" 1M
raw vmdk_descriptor monolithic-flat-descriptor "$v/flat/disk.vmdk"
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse "$v/split/disk.vmdk" 1M
raw vmdk_descriptor split-sparse-descriptor "$v/split/disk.vmdk"
cat >"$v/hand.vmdk" <<'VMDK'
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="vmfs"

# Extent description
RW 2048 VMFS "disk-flat.vmdk"
RW 2048 FLAT "disk-flat.vmdk" 0
RDONLY 0 ZERO

ddb.virtualHWVersion = "4"
VMDK
raw vmdk_descriptor hand-written "$v/hand.vmdk"
qemu-img create -q -f vhdx "$v/disk.vhdx" 1M
seed vmdk_descriptor vhdx "$v/disk.vhdx"

# ---------------------------------------------------------------- partitions
p=$WORK/p
mkdir -p "$p"
truncate -s 8M "$p/mbr.raw"
printf 'label: dos\nstart=2048, size=4096, type=83\nstart=6144, size=2048, type=7\n' | sfdisk -q "$p/mbr.raw"
seed partitions mbr "$p/mbr.raw"
truncate -s 8M "$p/ebr.raw"
printf 'label: dos\nstart=2048, size=2048, type=83\nstart=4096, size=10240, type=5\nstart=6144, size=2048, type=83\nstart=10240, size=2048, type=82\nstart=14336, size=1024, type=7\n' \
  | sfdisk -q "$p/ebr.raw"
seed partitions mbr-ebr-chain "$p/ebr.raw"
truncate -s 8M "$p/gpt.raw"
printf 'label: gpt\nstart=2048, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="linux root"\nstart=6144, size=4096, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="data"\n' \
  | sfdisk -q "$p/gpt.raw"
seed partitions gpt "$p/gpt.raw"
cp "$p/gpt.raw" "$p/gpt-backup.raw"
dd if=/dev/zero of="$p/gpt-backup.raw" bs=512 seek=1 count=1 conv=notrunc status=none  # primary header gone
seed partitions gpt-backup-header "$p/gpt-backup.raw"
# Filesystems found by detection in partitions.
mkfs.ext4 -q -F -E offset=$((2048 * 512)) "$p/mbr.raw" 2048 >/dev/null 2>&1 || true
truncate -s 2M "$p/ntfs-part.raw"
mkntfs -q -F -Q "$p/ntfs-part.raw" >/dev/null 2>&1 || true
seed partitions mbr-with-ext4 "$p/mbr.raw"

# ---------------------------------------------------------------- ext
e=$WORK/e
mkdir -p "$e"
mkfs.ext2 -q -F -b 1024 -d "$SRC" "$e/ext2.img" 4M
seed ext ext2-1k "$e/ext2.img"
mkfs.ext3 -q -F -J size=1 -d "$SRC" "$e/ext3.img" 8M
seed ext ext3 "$e/ext3.img"
mkfs.ext4 -q -F -d "$SRC" "$e/ext4.img" 16M
seed ext ext4 "$e/ext4.img"
mkfs.ext4 -q -F -O inline_data,^has_journal -I 256 -d "$SRC" "$e/inline.img" 4M
seed ext ext4-inline-data "$e/inline.img"
mkfs.ext4 -q -F -O ^extent,^64bit,^metadata_csum -b 2048 -d "$SRC" "$e/indirect.img" 8M
seed ext ext4-indirect-2k "$e/indirect.img"
mkfs.ext4 -q -F -O bigalloc -C 16384 -d "$SRC" "$e/bigalloc.img" 16M 2>/dev/null && seed ext ext4-bigalloc "$e/bigalloc.img"

# ---------------------------------------------------------------- journal
# Transactions written by debugfs (make-journal-fixtures.sh, build_debugfs):
# a first one rewrites data.bin (an escaped block) and victim.bin, a second
# revokes victim.bin's block. No mount needed.
j=$WORK/j
mkdir -p "$j/src"
head -c 8192 /dev/urandom >"$j/src/data.bin"
head -c 4096 /dev/urandom >"$j/src/victim.bin"
printf 'unchanged\n' >"$j/src/plain.txt"
{ printf '\xc0\x3b\x39\x98'; head -c $((8192 - 4)) /dev/urandom; } >"$j/new-data"
head -c 4096 /dev/urandom >"$j/new-victim"
journal_seed() {  # journal_seed NAME "MKFS OPTIONS" "JO COMMAND"
  local img=$j/$1.img data victim
  mkfs.ext4 -q -F $2 -J size=1 -d "$j/src" "$img" 8M
  data=$(debugfs -R "blocks data.bin" "$img" 2>/dev/null | tr -s ' ' ',' | sed 's/,$//')
  victim=$(debugfs -R "blocks victim.bin" "$img" 2>/dev/null | awk '{print $1}')
  printf '%s\njw -b %s %s\njw -b %s %s\njc\n%s\njw -r %s\njc\n' \
    "$3" "$data" "$j/new-data" "$victim" "$j/new-victim" "$3" "$victim" >"$j/$1.cmds"
  debugfs -w -f "$j/$1.cmds" "$img" >/dev/null 2>&1
  seed journal "$1" "$img"
  seed ext "journal-$1" "$img"
}
journal_seed csum-v3 "" "jo -c"
journal_seed csum-v2 "" "jo -c -v 2"
journal_seed no-csum "-O ^metadata_csum,^64bit" "jo -c"
mkfs.ext3 -q -F -J size=1 -d "$j/src" "$j/ext3.img" 8M
printf 'jo\njw -b 300 %s\njc\n' "$j/new-victim" >"$j/ext3.cmds"
debugfs -w -f "$j/ext3.cmds" "$j/ext3.img" >/dev/null 2>&1
seed journal ext3-one-transaction "$j/ext3.img"

# ---------------------------------------------------------------- xfs
# mkfs.xfs refuses filesystems under 300 MiB: the sparse form keeps the
# seed at a few KiB anyway.
x=$WORK/x
mkdir -p "$x/src/dir" "$x/mnt"
printf 'hello xfs\n' >"$x/src/hello.txt"
head -c 2000 /dev/urandom >"$x/src/dir/data.bin"
for i in $(seq 30); do : >"$x/src/dir/entry-$i"; done
ln -s hello.txt "$x/src/link"
cat >"$x/proto" <<PROTO
/dev/null
0 0
d--755 0 0
hello.txt ---644 0 0 $x/src/hello.txt
link l--777 0 0 hello.txt
dir d--755 0 0
data.bin ---600 1000 1000 $x/src/dir/data.bin
$(for i in $(seq 30); do printf 'entry-%d ---644 0 0 %s\n' "$i" "$x/src/dir/entry-$i"; done)
\$
\$
PROTO
mkfs.xfs -q -f -d size=300m,file,name="$x/v5.img" -p "$x/proto" >/dev/null
seed xfs v5-protofile "$x/v5.img"
mkfs.xfs -q -f -m crc=0 -n ftype=0 -d size=300m,file,name="$x/v4.img" -p "$x/proto" 2>/dev/null >/dev/null || true
[[ -s $x/v4.img ]] && seed xfs v4-protofile "$x/v4.img"
if [[ $ROOT == 1 ]] && mkfs.xfs -q -f -d size=300m,file,name="$x/xattr.img" >/dev/null &&
   mount -o loop "$x/xattr.img" "$x/mnt" 2>/dev/null; then
  MOUNTS+=("$x/mnt")
  cp -a "$SRC/." "$x/mnt/"
  for i in $(seq 40); do setfattr -n "user.attribute-$i" -v "value-$i" "$x/mnt/hello.txt"; done
  setfattr -n user.big -v "$(head -c 5000 /dev/zero | tr '\0' b)" "$x/mnt/empty"
  for i in $(seq 300); do : >"$x/mnt/many/block-directory-entry-$i"; done
  umount "$x/mnt"
  MOUNTS=()
  # The kernel's log writes make ~2 MiB of log records: format the (clean)
  # log again as mkfs does, so the seed stays small.
  xfs_db -x -c logformat "$x/xattr.img" >/dev/null
  seed xfs v5-xattrs-dirs "$x/xattr.img"
else
  note "xfs: no loop mount (root needed): the xattr/directory-format seed is left out"
fi

# ---------------------------------------------------------------- ntfs
n=$WORK/n
mkdir -p "$n/mnt"
truncate -s 4M "$n/plain.img"
mkntfs -q -F -Q "$n/plain.img" >/dev/null 2>&1
seed ntfs empty "$n/plain.img"
cp "$n/plain.img" "$n/files.img"
ntfscp -q "$n/files.img" "$SRC/hello.txt" hello.txt >/dev/null 2>&1 || ntfscp "$n/files.img" "$SRC/hello.txt" hello.txt >/dev/null
ntfscp "$n/files.img" "$SRC/dir/random.bin" random.bin >/dev/null
seed ntfs ntfscp "$n/files.img"
if [[ $ROOT == 1 ]] && [[ -e /dev/fuse ]] && cp "$n/plain.img" "$n/rich.img" &&
   ntfs-3g -o streams_interface=xattr "$n/rich.img" "$n/mnt" 2>/dev/null; then
  MOUNTS+=("$n/mnt")
  mkdir -p "$n/mnt/dir/sub"
  printf 'hello ntfs\n' >"$n/mnt/hello.txt"
  head -c 5000 /dev/urandom >"$n/mnt/dir/nonresident.bin"
  ln "$n/mnt/hello.txt" "$n/mnt/dir/hardlink.txt"
  ln -s ../hello.txt "$n/mnt/dir/symlink"
  setfattr -n user.stream -v 'alternate data stream' "$n/mnt/hello.txt" 2>/dev/null || true
  for i in $(seq 60); do : >"$n/mnt/dir/sub/index-entry-with-long-name-$i"; done
  fusermount3 -u "$n/mnt" 2>/dev/null || umount "$n/mnt"
  MOUNTS=()
  seed ntfs ntfs-3g-populated "$n/rich.img"
else
  note "ntfs: no ntfs-3g mount (root and /dev/fuse needed): the populated seed is left out"
fi
[[ -s $p/ntfs-part.raw ]] && seed partitions ntfs-whole-disk "$p/ntfs-part.raw"

# ---------------------------------------------------------------- lvm
# pvcreate/vgcreate/lvcreate on loop devices (FIXTURES.md, "LVM without
# device-mapper"); the metadata text is also a seed of its own.
l=$WORK/l
mkdir -p "$l/lvm/lock"
if [[ $ROOT == 1 ]] && command -v pvcreate >/dev/null && losetup -f >/dev/null 2>&1; then
  export LVM_SYSTEM_DIR=$l/lvm LVM_SUPPRESS_FD_WARNINGS=1
  quiet() { "$@" >/dev/null 2>&1; }
  source "$HERE/../fixtures/lvm-conf.sh"
  lvc() { quiet lvcreate --driverloaded n -an -Zn -y "$@"; }
  # One disk, one PV: two linear LVs.
  truncate -s 16M "$l/one.raw"
  d1=$(losetup -f --show "$l/one.raw"); LOOPS+=("$d1"); write_lvm_conf
  quiet pvcreate -qy "$d1"; quiet vgcreate -q -s 1M vg0 "$d1"
  lvc -L 4M -n root vg0; lvc -L 2M -n home vg0
  lvc -l 2 -n split vg0
  losetup -d "$d1"; LOOPS=()
  seed lvm linear "$l/one.raw"
  # One disk, two partitions as two PVs: a striped LV.
  truncate -s 24M "$l/two.raw"
  printf 'label: dos\nstart=2048, size=20480, type=8e\nstart=22528, size=20480, type=8e\n' | sfdisk -q "$l/two.raw"
  d1=$(losetup -f --show -o $((2048 * 512)) --sizelimit $((20480 * 512)) "$l/two.raw"); LOOPS+=("$d1")
  d2=$(losetup -f --show -o $((22528 * 512)) --sizelimit $((20480 * 512)) "$l/two.raw"); LOOPS+=("$d2"); write_lvm_conf
  quiet pvcreate -qy "$d1" "$d2"; quiet vgcreate -q -s 1M vg1 "$d1" "$d2"
  lvc -i 2 -I 64k -L 4M -n striped vg1; lvc -L 2M -n linear vg1
  vgcfgbackup -q -f "$l/vg1.txt" vg1 >/dev/null 2>&1 || true
  losetup -d "$d1"; losetup -d "$d2"; LOOPS=()
  seed lvm striped-two-pvs "$l/two.raw"
  [[ -s $l/vg1.txt ]] && raw lvm metadata-text "$l/vg1.txt"
else
  note "lvm: no loop devices (root needed): only the hand-written metadata seed"
fi
cat >"$l/hand.txt" <<'LVM'
vg0 {
id = "ABCDEF-ghij-klmn-opqr-stuv-wxyz-012345"
seqno = 3
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
extent_size = 8192
max_lv = 0
max_pv = 0
physical_volumes {
pv0 {
id = "ABCDEF-ghij-klmn-opqr-stuv-wxyz-543210"
device = "/dev/sda2"
status = ["ALLOCATABLE"]
dev_size = 409600
pe_start = 2048
pe_count = 49
}
}
logical_volumes {
root {
id = "abcdef-ghij-klmn-opqr-stuv-wxyz-000001"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 2
segment1 {
start_extent = 0
extent_count = 10
type = "striped"
stripe_count = 1
stripes = ["pv0", 0]
}
segment2 {
start_extent = 10
extent_count = 5
type = "striped"
stripe_count = 1
stripes = ["pv0", 20]
}
}
}
}
LVM
raw lvm metadata-hand-written "$l/hand.txt"

# ---------------------------------------------------------------- names
mkdir -p "$OUT/names"
printf 'plain\377with/slash\377\377.\377..\377.\377..\377nul\000inside' >"$OUT/names/mixed"
printf 'a/b\377a\342\210\225b\377a\342\210\225b\357\277\2750' >"$OUT/names/collisions"
head -c 300 /dev/zero | tr '\0' '/' >"$OUT/names/long-slashes"
printf 'caf\303\251\377\200\201invalid-utf8\377' >"$OUT/names/utf8"

# ---------------------------------------------------------------- worker_replies
python3 "$HERE/worker_replies_seeds.py" "$OUT/worker_replies"

count=$(find "$OUT" -type f | wc -l)
note "$count seeds in $OUT ($(du -sh "$OUT" | cut -f1))"
