#!/usr/bin/env bash
# The main job on an embedded default: builds everything, makes a small demo
# repository (a real qcow2 full backup of a GPT disk with an ext4 volume, and
# a real incremental on top of it holding only the changed clusters), imports
# it into a fresh SQLite catalog, mounts the tree and shows a file inside
# each backup. Needs root (FUSE mount with allow_other, loop device).
#   bash packaging/demo.sh            # installs dependencies first
#   SKIP_DEPS=1 KEEP_MOUNTED=1 bash packaging/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD

if [ "${SKIP_DEPS:-0}" != 1 ]; then
  bash packaging/install-deps.sh
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j"$(nproc)"

demo=${DEMO_DIR:-/tmp/sendense-demo}
rm -rf "$demo"
mkdir -p "$demo"/{src/etc,src/home/alice,repo/demo-vm,mnt}
cd "$demo"

qsd_pid=
loopdev=
cleanup() {
  mountpoint -q "$demo/guest" 2>/dev/null && umount "$demo/guest"
  [ -n "$loopdev" ] && losetup -d "$loopdev" 2>/dev/null
  [ -n "$qsd_pid" ] && kill "$qsd_pid" 2>/dev/null
  true
}
trap cleanup EXIT

# The guest's files as they were at the full backup.
echo "demo-vm" > src/etc/hostname
printf 'Quarterly report, draft 1\n' > src/home/alice/report.txt
head -c 1048576 /dev/urandom > src/home/alice/photo.jpg

# A 64 MiB GPT disk with one ext4 partition, made by the real tools.
truncate -s 64M disk.raw
printf 'label: gpt\nstart=2048, size=126976, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' | sfdisk -q disk.raw
mkfs.ext4 -q -F -I 256 -d src -L root part1.img $((126976 / 2))K
dd if=part1.img of=disk.raw bs=512 seek=2048 conv=notrunc status=none
rm part1.img
full=backup-demo-vm-20261101020000.qcow2
inc=backup-demo-vm-20261102020000.qcow2
qemu-img convert -f raw -O qcow2 disk.raw "repo/demo-vm/$full"
rm disk.raw

# The incremental: an overlay written through qemu, so it holds only the
# clusters the guest changed.
qemu-img create -q -f qcow2 -b "$full" -F qcow2 "repo/demo-vm/$inc"
touch export
qemu-storage-daemon --blockdev driver=file,node-name=f,filename="repo/demo-vm/$inc" \
  --blockdev driver=qcow2,node-name=q,file=f \
  --export type=fuse,id=e,node-name=q,mountpoint="$demo/export",writable=on \
  --daemonize --pidfile "$demo/qsd.pid"
qsd_pid=$(cat qsd.pid)
loopdev=$(losetup -f --show -o $((2048 * 512)) --sizelimit $((126976 * 512)) export)
mkdir -p guest
mount -o noinit_itable "$loopdev" guest
printf 'Quarterly report, final\n' > guest/home/alice/report.txt
echo "added after the full backup" > guest/home/alice/notes.txt
umount guest
losetup -d "$loopdev"; loopdev=
kill "$qsd_pid"; while kill -0 "$qsd_pid" 2>/dev/null; do sleep 0.1; done; qsd_pid=
rm -f export qsd.pid
ls -l repo/demo-vm

"$top/build/sendense-restore" catalog import repo --catalog catalog.db
"$top/build/sendense-restore" catalog list --catalog catalog.db

"$top/build/sendense-restorefs" mnt --catalog catalog.db -f 2> daemon.log &
daemon=$!
for _ in $(seq 50); do mountpoint -q mnt && break; sleep 0.1; done
mountpoint -q mnt || { cat daemon.log; exit 1; }

echo "== ls -l mnt (from the catalog; nothing attached)"
ls -l mnt
echo "== ls -l mnt/by-vm/demo-vm"
ls -l mnt/by-vm/demo-vm
for b in "${full%.qcow2}" "${inc%.qcow2}"; do
  echo "== ls -l mnt/$b/part1/home/alice"
  ls -l "mnt/$b/part1/home/alice"
  echo "== cat mnt/$b/part1/home/alice/report.txt"
  cat "mnt/$b/part1/home/alice/report.txt"
done
echo "== sendense-restore status"
"$top/build/sendense-restore" status --catalog catalog.db

if [ "${KEEP_MOUNTED:-0}" = 1 ]; then
  echo "The tree stays mounted at $demo/mnt (daemon pid $daemon); stop it with: kill $daemon"
  trap - EXIT
  exit 0
fi
kill -TERM "$daemon"
wait "$daemon"
echo "== daemon log"
cat daemon.log
