#!/usr/bin/env bash
# The Samba stanzas `sendense-restore export samba` prints are accepted by
# the real smbd configuration parser: testparm loads a configuration made of
# a private [global] (loopback, a private port, state in a temp folder), the
# generated [global] lines, the operator's share and a tenant's share, with
# no unknown parameter or warning, and reads back the values that matter.
# Then the real smbd serves the tenant's share over a plain directory (not
# FUSE) to smbclient: files and a link inside the share read, links that
# leave it (absolute, and relative into another tenant's folder) do not.
# smbd is stopped on any exit.
#   samba-stanza-test.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
cli=$build/sendense-restore

skip() {
  echo "SKIPPED: $*"
  if [ "${SENDENSE_NO_SKIP:-0}" = 1 ]; then echo "cannot skip under SENDENSE_NO_SKIP=1"; exit 1; fi
  exit 0
}
fail() { echo "FAIL: $*"; exit 1; }
for tool in testparm smbd smbclient ss; do
  command -v "$tool" >/dev/null || skip "needs $tool (apt-get install samba smbclient iproute2)"
done
getent passwd nobody >/dev/null && getent group nogroup >/dev/null || skip "needs the nobody user and nogroup group"

tmp=$(mktemp -d)
cleanup() {
  local pid
  pid=$(cat "$tmp/pid/smbd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
db=$tmp/catalog.db
"$cli" tenant add acme --uid "$(id -u nobody)" --gid "$(getent group nogroup | cut -d: -f3)" --catalog "$db" >/dev/null
mkdir -p "$tmp/mnt/tenants/acme" "$tmp/private" "$tmp/state" "$tmp/lock" "$tmp/pid"

# A free port on loopback (other tests may hold 4455).
port=
for p in $(shuf -i 20000-40000 -n 20); do
  if ! ss -Htln "sport = :$p" | grep -q .; then port=$p; break; fi
done
[ -n "$port" ] || fail "no free port"

conf=$tmp/smb.conf
cat >"$conf" <<CONF
[global]
  smb ports = $port
  interfaces = lo
  bind interfaces only = yes
  private dir = $tmp/private
  state directory = $tmp/state
  cache directory = $tmp/state
  lock directory = $tmp/lock
  pid directory = $tmp/pid
  log file = $tmp/log.%m
CONF
{
  "$cli" export samba --global
  "$cli" export samba --mountpoint "$tmp/mnt" --catalog "$db"
  "$cli" export samba --tenant acme --mountpoint "$tmp/mnt" --catalog "$db"
} >>"$conf"

testparm -s "$conf" >"$tmp/out" 2>"$tmp/err" || { cat "$tmp/err"; fail "testparm refused the configuration"; }
# testparm reports unknown parameters and doubtful values on stderr but exits 0.
if grep -iE "unknown parameter|ignoring|warning|error|invalid" "$tmp/err"; then
  cat "$conf"
  fail "testparm complained about the generated lines"
fi

param() {  # param SECTION NAME: the value smbd will use
  testparm -s --section-name="$1" --parameter-name="$2" "$conf" 2>/dev/null
}
expect() {  # expect SECTION NAME VALUE
  local got
  got=$(param "$1" "$2")
  [ "$got" = "$3" ] || fail "[$1] $2 is '$got', expected '$3'"
}
for share in sendense-restore sendense-acme; do
  expect "$share" "read only" Yes
  expect "$share" "wide links" No
  expect "$share" "follow symlinks" Yes
  expect "$share" "browseable" No
  expect "$share" "vfs objects" ""
  expect "$share" "store dos attributes" No
  expect "$share" "ea support" No
  expect "$share" "posix locking" No
  expect "$share" "kernel share modes" No
done
expect sendense-restore path "$tmp/mnt"
expect sendense-acme path "$tmp/mnt/tenants/acme"
expect sendense-acme "force user" nobody
expect sendense-acme "force group" nogroup
expect global "allow insecure wide links" No
expect global "server min protocol" SMB2_02
# Served: the tenant's folder as the daemon shows it (owned by the tenant's
# uid/gid), with a link inside it and links that leave it.
acme=$tmp/mnt/tenants/acme
mkdir -p "$acme/backup-1" "$acme/by-vm/web01" "$tmp/mnt/tenants/other"
echo "acme's file" >"$acme/backup-1/hello.txt"
echo "other's file" >"$tmp/mnt/tenants/other/secret.txt"
ln -s ../../backup-1 "$acme/by-vm/web01/latest"
ln -s /etc/passwd "$acme/backup-1/passwd"
ln -s ../../other/secret.txt "$acme/backup-1/neighbour"
chown -R -h nobody:nogroup "$acme"
chmod 0755 "$tmp" "$tmp/mnt" "$tmp/mnt/tenants"  # mktemp -d is 0700: the squashed owner must get through
chmod 0750 "$acme" "$acme/backup-1"
chmod 0640 "$acme/backup-1/hello.txt"
# Guests log in for the test only (the generated share has no guest access):
# the section is reopened, which adds to the generated one.
cat >>"$conf" <<CONF
[global]
  map to guest = Bad User
[sendense-acme]
  guest ok = yes
CONF
smbd -s "$conf" -D || fail "smbd did not start"
for _ in $(seq 100); do ss -Htln "sport = :$port" | grep -q . && break; sleep 0.1; done
ss -Htln "sport = :$port" | grep -q "127.0.0.1:$port" || fail "smbd does not listen on 127.0.0.1:$port"
get() {  # get PATH: its content through the share, or nothing
  rm -f "$tmp/got"
  smbclient -p "$port" -N //127.0.0.1/sendense-acme -c "get $1 $tmp/got" >"$tmp/smbclient.log" 2>&1 || true
  cat "$tmp/got" 2>/dev/null || true
}
[ "$(get backup-1/hello.txt)" = "acme's file" ] || { cat "$tmp/smbclient.log"; fail "the tenant's file does not read"; }
[ "$(get by-vm/web01/latest/hello.txt)" = "acme's file" ] ||
  { cat "$tmp/smbclient.log"; fail "by-vm/web01/latest (a link inside the share) does not read"; }
[ -z "$(get backup-1/passwd)" ] || fail "an absolute guest link read this host's /etc/passwd"
[ -z "$(get backup-1/neighbour)" ] || fail "a relative link read another tenant's file"
echo "samba stanzas: ok"
