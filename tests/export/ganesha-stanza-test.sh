#!/usr/bin/env bash
# The EXPORT block `sendense-restore export ganesha --tenant` prints is loaded
# by the real NFS-Ganesha and serves: ganesha.nfsd runs with it over a plain
# directory (no FUSE) on 127.0.0.1 and a private port, NFSv4 only (no
# rpcbind), and the libnfs client lists and reads the tenant's files through
# the generated Pseudo path; the operator's export (this host only) loads
# alongside. Ganesha is stopped on any exit.
#   ganesha-stanza-test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
cli=$build/sendense-restore

skip() {
  echo "SKIPPED: $*"
  if [ "${SENDENSE_NO_SKIP:-0}" = 1 ]; then echo "cannot skip under SENDENSE_NO_SKIP=1"; exit 1; fi
  exit 0
}
fail() { echo "FAIL: $*"; [ -f "${log:-}" ] && tail -n 40 "$log"; exit 1; }
[ "$(id -u)" = 0 ] || skip "needs root (ganesha.nfsd)"
for tool in ganesha.nfsd nfs-ls nfs-cat ss; do
  command -v "$tool" >/dev/null || skip "needs $tool (apt-get install nfs-ganesha nfs-ganesha-vfs libnfs-utils iproute2)"
done
compgen -G "/usr/lib/*/ganesha/libfsalvfs.so" >/dev/null || skip "needs FSAL VFS (apt-get install nfs-ganesha-vfs)"

tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

db=$tmp/catalog.db
uid=$(id -u nobody) gid=$(getent group nogroup | cut -d: -f3)
"$cli" tenant add first --catalog "$db" >/dev/null
"$cli" tenant remove first --catalog "$db" >/dev/null  # so acme's export id is not the first one
"$cli" tenant add acme --uid "$uid" --gid "$gid" --catalog "$db" >/dev/null
mnt=$tmp/mnt
mkdir -p "$mnt/tenants/acme/backup-1" "$mnt/tenants/other" "$tmp/recov"
echo "acme's file" >"$mnt/tenants/acme/backup-1/hello.txt"
echo "other's file" >"$mnt/tenants/other/secret.txt"
# The tenant's view shows its owner (what the daemon will do): squashed to
# that owner, the client reads.
chown -R "$uid:$gid" "$mnt/tenants/acme"
chmod 0755 "$tmp" "$tmp/mnt" "$tmp/mnt/tenants"  # mktemp -d is 0700: the squashed owner must get through
chmod 0750 "$mnt/tenants/acme" "$mnt/tenants/acme/backup-1"
chmod 0640 "$mnt/tenants/acme/backup-1/hello.txt"

# A free port on loopback (another ganesha may hold 2049).
port=
for p in $(shuf -i 20000-40000 -n 20); do
  if ! ss -Htln "sport = :$p" | grep -q .; then port=$p; break; fi
done
[ -n "$port" ] || fail "no free port"

conf=$tmp/ganesha.conf
log=$tmp/ganesha.log
cat >"$conf" <<CONF
NFS_CORE_PARAM {
  Bind_addr = 127.0.0.1;
  NFS_Port = $port;
  Protocols = 4;
  Enable_NLM = false;
  Enable_RQUOTA = false;
}
NFSV4 {
  Graceless = true;
  RecoveryRoot = "$tmp/recov";
}
NFS_KRB5 {
  Active_krb5 = false;
}
CONF
"$cli" export ganesha --tenant acme --mountpoint "$mnt" --catalog "$db" >>"$conf"
"$cli" export ganesha --mountpoint "$mnt" --catalog "$db" >>"$conf"
grep -q "Export_Id = 1002;" "$conf" || fail "acme's Export_Id is not 1000 + its number 2"

ganesha.nfsd -F -L "$log" -f "$conf" -p "$tmp/ganesha.pid" -N NIV_EVENT &
pid=$!
for _ in $(seq 100); do
  ss -Htln "sport = :$port" | grep -q . && break
  kill -0 "$pid" 2>/dev/null || fail "ganesha.nfsd exited"
  sleep 0.1
done
# Loopback only ("[::ffff:127.0.0.1]:PORT": ganesha binds an IPv6 socket).
listening=$(ss -Htln "sport = :$port")
[ -n "$listening" ] && ! grep -vqE "(^| |\[::ffff:)127\.0\.0\.1\]?:$port " <<<"$listening" ||
  { echo "$listening"; fail "ganesha does not listen on 127.0.0.1:$port only"; }
# Ganesha keeps running over a mistake in its configuration (an unknown
# parameter, a bad value): it only logs it, through config_errs_to_log.
if grep -E "config_errs_to_log|:CONFIG :(CRIT|MAJ|FATAL)" "$log"; then
  fail "ganesha did not take the generated exports as written"
fi

url="nfs://127.0.0.1/sendense/acme?version=4&nfsport=$port"
nfs-ls -R "$url" >"$tmp/ls" 2>&1 || { cat "$tmp/ls"; fail "nfs-ls $url failed"; }
grep -q "hello.txt" "$tmp/ls" || { cat "$tmp/ls"; fail "nfs-ls does not show acme's file"; }
grep -q "secret.txt" "$tmp/ls" && fail "acme's export shows another tenant's file"
got=$(nfs-cat "nfs://127.0.0.1/sendense/acme/backup-1/hello.txt?version=4&nfsport=$port")
[ "$got" = "acme's file" ] || fail "nfs-cat read '$got'"
# Read-only: the export refuses a write.
echo x >"$tmp/new.txt"
if nfs-cp "$tmp/new.txt" "nfs://127.0.0.1/sendense/acme/new.txt?version=4&nfsport=$port" >/dev/null 2>&1; then
  fail "the export accepted a write"
fi
[ -e "$mnt/tenants/acme/new.txt" ] && fail "a file was created through the export"
# The operator's export serves this host the whole tree.
nfs-ls "nfs://127.0.0.1/sendense/restore/tenants?version=4&nfsport=$port" >"$tmp/root" 2>&1 ||
  { cat "$tmp/root"; fail "the operator's export does not list tenants/"; }
grep -q " acme$" "$tmp/root" && grep -q " other$" "$tmp/root" ||
  { cat "$tmp/root"; fail "the operator's export does not show every tenant"; }
echo "ganesha export: ok"
