#!/usr/bin/env bash
# Re-export figures (issue 9): one volume (a FILE_MIB MiB file and SMALL
# small files in an ext4 qcow2 backup) read three ways:
#   fuse   the daemon's FUSE mount (find; cat)
#   nfs    NFS-Ganesha 4.x, FSAL VFS over that mount, NFSv4 on loopback, read
#          with tests/reexport's nfs_hold_client (one READ of 1 MiB in flight:
#          no read-ahead, no parallel RPCs) and with libnfs's nfs-cat
#   smb    smbd over that mount, smbclient SMB3 on loopback (ls -R; get)
# Each figure is cold: daemon, server and client started afresh and the page
# cache dropped before it. One run each; figures, never assertions; not part
# of the test suite. Needs root, ganesha.nfsd, smbd, smbclient, nfs-cat.
#   bash tests/benchmark/reexport-benchmark.sh [BUILD_DIR] [FILE_MIB] [SMALL_FILES]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build}
file_mib=${2:-256}
small=${3:-3000}
work=$(mktemp -d /var/tmp/sendense-rx-bench-XXXXXX)
id=backup-bench-20260101000000
client=$build/nfs_hold_client

for tool in ganesha.nfsd smbd smbclient nfs-cat mkfs.ext4 qemu-img; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
[[ -x $client ]] || { echo "needs $client (cmake --build $build --target nfs_hold_client)" >&2; exit 1; }

daemon_pid= server_pid=
stop_all() {
  [[ -n $server_pid ]] && { kill -TERM -- "-$server_pid" 2>/dev/null || true; for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done; kill -KILL -- "-$server_pid" 2>/dev/null || true; }
  server_pid=
  [[ -n $daemon_pid ]] && { kill -TERM "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; }
  daemon_pid=
  # A stopped daemon leaves its mount to its holder: take it down for good.
  "$build/sendense-restorefs" --unmount "$work/mnt" >/dev/null 2>&1 || true
  mountpoint -q "$work/mnt" && umount -l "$work/mnt"
  return 0
}
trap 'stop_all; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { ss -Hltn "sport = :$1" | grep -q .; }
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }
mbps() { echo "scale=1; $1 / 1000000 / $2" | bc; }
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }

echo "making the backup in $work (${file_mib} MiB file, ${small} small files)" >&2
mkdir -p "$work/src/small/a/b" "$work/repo/bench" "$work/mnt"
head -c $((file_mib * 1048576)) /dev/urandom >"$work/src/big.bin"
for i in $(seq "$small"); do head -c $((1024 + (i * 37) % 8192)) /dev/urandom >"$work/src/small/f$i"; done
for i in $(seq 100); do echo "$i" >"$work/src/small/a/b/g$i"; done
mkfs.ext4 -q -F -I 256 -d "$work/src" "$work/disk.raw" "$((file_mib + small * 12 / 1024 + 64))M" >/dev/null
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/repo/bench/$id.qcow2"
rm -f "$work/disk.raw"
"$build/sendense-restore" catalog import "$work/repo" --catalog "$work/catalog.db" >/dev/null
entries_expected=$(( $(find "$work/src" -mindepth 1 | wc -l) + 1 ))  # + lost+found
big_bytes=$(stat -c %s "$work/src/big.bin")

start_daemon() {
  cold
  "$build/sendense-restorefs" "$work/mnt" --config /dev/null --catalog "$work/catalog.db" -f 2>>"$work/daemon.log" &
  daemon_pid=$!
  for _ in $(seq 100); do mountpoint -q "$work/mnt" && return 0; sleep 0.1; done
  echo "the daemon did not mount" >&2; exit 1
}

start_ganesha() {
  port=$(free_port)
  mkdir -p "$work/ganesha/recovery"
  cat >"$work/ganesha/ganesha.conf" <<EOF
NFS_CORE_PARAM { Bind_addr = 127.0.0.1; NFS_Port = $port; MNT_Port = $(free_port); NLM_Port = $(free_port);
  Rquota_Port = $(free_port); Enable_NLM = false; Enable_RQUOTA = false; Protocols = 4; }
NFSv4 { Graceless = true; RecoveryRoot = "$work/ganesha/recovery"; }
NFS_KRB5 { Active_krb5 = false; }
EXPORT { Export_Id = 1; Path = "$work/mnt"; Pseudo = "/restore"; Access_Type = RO; Squash = No_Root_Squash;
  SecType = sys; Protocols = 4; Transports = TCP; FSAL { Name = VFS; } }
EOF
  setsid ganesha.nfsd -F -L "$work/ganesha/ganesha.log" -f "$work/ganesha/ganesha.conf" -p "$work/ganesha/pid" -N NIV_EVENT \
    >>"$work/ganesha/stdout" 2>&1 &
  server_pid=$!
  for _ in $(seq 200); do listening "$port" && return 0; sleep 0.1; done
  echo "ganesha did not listen" >&2; tail "$work/ganesha/ganesha.log" >&2; exit 1
}

start_smbd() {
  port=$(free_port)
  s=$work/smbd
  mkdir -p "$s"/{private,state,cache,lock,pid,ncalrpc,binddns}
  cat >"$s/smb.conf" <<EOF
[global]
  smb ports = $port
  interfaces = lo
  bind interfaces only = yes
  server role = standalone server
  map to guest = Bad User
  disable netbios = yes
  private dir = $s/private
  state directory = $s/state
  cache directory = $s/cache
  lock directory = $s/lock
  pid directory = $s/pid
  ncalrpc dir = $s/ncalrpc
  binddns dir = $s/binddns
  log file = $s/smbd.log
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
[restore]
  path = $work/mnt
  read only = yes
  guest ok = yes
  guest only = yes
  force user = root
  wide links = no
EOF
  setsid smbd --foreground --no-process-group -s "$s/smb.conf" >>"$s/stdout" 2>&1 &
  server_pid=$!
  for _ in $(seq 200); do listening "$port" && return 0; sleep 0.1; done
  echo "smbd did not listen" >&2; exit 1
}

rows=()
row() { rows+=("$(printf '%-34s %10s %8s %12s' "$@")"); }

# fuse
start_daemon
t=$(now); n=$(find "$work/mnt/$id/disk" -mindepth 1 | wc -l); list_s=$(elapsed "$t")
stop_all; start_daemon
t=$(now); cat "$work/mnt/$id/disk/big.bin" >/dev/null; read_s=$(elapsed "$t")
row "fuse mount (find; cat)" "$list_s" "$n" "$(mbps "$big_bytes" "$read_s")"
stop_all

# nfs: our client
start_daemon; start_ganesha
out=$(printf 'walk /restore/%s/disk\n' "$id" | "$client" 127.0.0.1 "$port")
[[ $out == ok* ]] || { echo "nfs walk: $out" >&2; exit 1; }
read -r _ n list_s <<<"$out"
stop_all; start_daemon; start_ganesha
t=$(now); out=$(printf 'lookup /restore/%s/disk/big.bin\ncat h1\n' "$id" | "$client" 127.0.0.1 "$port"); read_s=$(elapsed "$t")
[[ $out == *"ok $big_bytes "* ]] || { echo "nfs read: $out" >&2; exit 1; }
row "nfs ganesha v4 (nfs_hold_client)" "$list_s" "$n" "$(mbps "$big_bytes" "$read_s")"
stop_all
# nfs: libnfs's nfs-cat (its own read pipelining)
start_daemon; start_ganesha
# libnfs 4.0 takes no host:port; the port goes in nfsport=.
t=$(now)
if nfs-cat "nfs://127.0.0.1/restore/$id/disk/big.bin?version=4&nfsport=$port" >/dev/null 2>"$work/nfs-cat.err"; then
  read_s=$(elapsed "$t")
  row "nfs ganesha v4 (nfs-cat)" "-" "-" "$(mbps "$big_bytes" "$read_s")"
else
  row "nfs ganesha v4 (nfs-cat)" "-" "-" "failed: $(head -c 60 "$work/nfs-cat.err")"
fi
stop_all

# smb
start_daemon; start_smbd
t=$(now)
n=$(smbclient -N -m SMB3 -p "$port" //127.0.0.1/restore -c "recurse ON; ls $id\\disk\\*" 2>&1 |
  grep -cE '^  [^ .].* +[ADHNRS]+ +[0-9]+ ' || true)
list_s=$(elapsed "$t")
stop_all; start_daemon; start_smbd
t=$(now); smbclient -N -m SMB3 -p "$port" //127.0.0.1/restore -c "get $id\\disk\\big.bin /dev/null" >/dev/null 2>&1
read_s=$(elapsed "$t")
row "smb smbd (smbclient SMB3)" "$list_s" "$n" "$(mbps "$big_bytes" "$read_s")"
stop_all

echo
printf '%-34s %10s %8s %12s\n' "path" "listing s" "entries" "cold MB/s"
printf '%s\n' "${rows[@]}"
echo "(expected entries: $entries_expected, ${file_mib} MiB file; one cold run each)"
