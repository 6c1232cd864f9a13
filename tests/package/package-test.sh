#!/usr/bin/env bash
# The Debian package end to end: cpack builds it from this build folder,
# lintian checks it, dpkg -i installs it on this machine, the installed
# binaries run (--version, --check-config on the shipped and a broken
# configuration), the files are where the install rules put them,
# systemd-analyze verifies the installed unit, and dpkg -r / -P remove it
# leaving only the catalog. Needs root; the package is purged on any exit.
#   package-test.sh BUILD_DIR
#
# The package holds the binaries of BUILD_DIR, i.e. the sanitizer build under
# packaging/test.sh (so shlibdeps adds libasan/libubsan to Depends there);
# the release package comes from packaging/build-deb.sh, same rules.
set -euo pipefail
build=$(cd "$1" && pwd)
pkg=sendense-restore

skip() {
  echo "SKIPPED: $*"
  if [ "${SENDENSE_NO_SKIP:-0}" = 1 ]; then echo "cannot skip under SENDENSE_NO_SKIP=1"; exit 1; fi
  exit 0
}
fail() { echo "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (dpkg -i)"
for tool in cpack dpkg-deb dpkg-shlibdeps lintian systemd-analyze; do
  command -v "$tool" >/dev/null || skip "needs $tool"
done
if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'installed'; then
  skip "$pkg is already installed on this machine: not touching an operator's installation"
fi
grep -q '^CMAKE_INSTALL_PREFIX:PATH=/usr$' "$build/CMakeCache.txt" ||
  skip "$build is not configured with -DCMAKE_INSTALL_PREFIX=/usr (packaging/test.sh is): the package must install under /usr"

work=$(mktemp -d)
installed=0
cleanup() {
  [ "$installed" = 1 ] && dpkg -P "$pkg" >/dev/null 2>&1
  rm -rf "$work" /var/lib/sendense-restore/catalog.db /var/lib/sendense-restore/catalog.db-wal
  rmdir /var/lib/sendense-restore 2>/dev/null || true
}
trap cleanup EXIT

echo "== cpack"
(cd "$build" && cpack -G DEB -B "$work/out" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log"; fail "cpack"; }
deb=$(ls "$work"/out/${pkg}_*.deb)
dpkg-deb --info "$deb"
depends=$(dpkg-deb --field "$deb" Depends)
for lib in libfuse3 libsqlite3 libzstd zlib1g libnbd libext2fs libntfs-3g libsystemd0 libcpp-httplib libarchive13 libseccomp2 libcap2; do
  grep -q "$lib" <<<"$depends" || fail "Depends lacks $lib (shlibdeps): $depends"
done

echo "== contents"
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' | LC_ALL=C sort >"$work/contents"
cat "$work/contents"
# Everything under /usr or in /etc/sendense-restore (FHS; nothing in /usr/local, /opt, /srv).
if grep -Ev '^/(usr/|usr$|etc/$|etc/sendense-restore/)|^/$' "$work/contents"; then fail "files outside /usr and /etc/sendense-restore"; fi
expected=(
  /usr/bin/sendense-restorefs
  /usr/bin/sendense-restore
  /usr/bin/sendense-restore-web
  /usr/libexec/sendense-restore/sendense-restore-worker
  /usr/lib/systemd/system/sendense-restorefs.service
  /usr/lib/systemd/system/sendense-restore-web.service
  /usr/share/man/man8/sendense-restore-web.8.gz
  /usr/share/doc/sendense-restore/openapi.yaml
  /etc/sendense-restore/restorefs.conf
  /usr/share/man/man8/sendense-restorefs.8.gz
  /usr/share/man/man8/sendense-restore.8.gz
  /usr/share/bash-completion/completions/sendense-restorefs
  /usr/share/bash-completion/completions/sendense-restore
  /usr/share/doc/sendense-restore/copyright
)
for f in "${expected[@]}"; do grep -qx "$f" "$work/contents" || fail "$f is not in the package"; done

echo "== lintian"
# Each suppressed tag is explained in README.md (Package, lintian).
lintian --tag-display-limit 0 --suppress-tags-from-file "$(dirname "$0")/lintian-explained-tags" "$deb" \
  >"$work/lintian" 2>&1 || true
cat "$work/lintian"
if grep -E '^[EW]: ' "$work/lintian"; then fail "lintian errors or warnings not explained"; fi

echo "== dpkg -i"
installed=1
dpkg -i "$deb"
/usr/bin/sendense-restorefs --version | grep -qx "sendense-restorefs [0-9.]*" || fail "sendense-restorefs --version"
/usr/bin/sendense-restore --version | grep -qx "sendense-restore [0-9.]*" || fail "sendense-restore --version"
/usr/bin/sendense-restorefs --check-config >"$work/check" || { cat "$work/check"; fail "--check-config on the shipped configuration"; }
cat "$work/check"
grep -q '^mountpoint = /mnt/sendense/restore .*# /etc/sendense-restore/restorefs.conf:' "$work/check" ||
  fail "--check-config does not show the shipped mount point"
printf 'mountpoint = /mnt/x\nidle-timeout = soon\n' >"$work/broken.conf"
if /usr/bin/sendense-restorefs --check-config --config "$work/broken.conf" >"$work/broken.out" 2>&1; then
  fail "--check-config accepted a broken configuration"
fi
grep -q "broken.conf:2: idle-timeout needs a number" "$work/broken.out" || { cat "$work/broken.out"; fail "error does not name the line"; }
for f in "${expected[@]}"; do [ -e "$f" ] || fail "$f missing after dpkg -i"; done
getent passwd sendense-restore >/dev/null || fail "postinst did not create the sendense-restore user"
getent passwd sendense-web >/dev/null || fail "postinst did not create the sendense-web user"
/usr/bin/sendense-restore-web --version | grep -qx "sendense-restore-web [0-9.]*" || fail "sendense-restore-web --version"
systemd-analyze verify /usr/lib/systemd/system/sendense-restore-web.service ||
  fail "systemd-analyze verify on the installed web unit"
[ "$(stat -c '%U:%G %a' /var/lib/sendense-restore)" = "root:sendense-restore 750" ] ||
  fail "/var/lib/sendense-restore is $(stat -c '%U:%G %a' /var/lib/sendense-restore)"
systemd-analyze verify /usr/lib/systemd/system/sendense-restorefs.service ||
  fail "systemd-analyze verify on the installed unit"
man -l /usr/share/man/man8/sendense-restorefs.8.gz >/dev/null 2>&1 || fail "the installed man page does not render"

# The operator's catalog: purge must keep it.
mkdir "$work/empty-repository"
/usr/bin/sendense-restore catalog import "$work/empty-repository" --catalog /var/lib/sendense-restore/catalog.db >/dev/null
[ -f /var/lib/sendense-restore/catalog.db ] || fail "no catalog made"

echo "== dpkg -r"
dpkg -r "$pkg"
for f in "${expected[@]}"; do
  [ "$f" = /etc/sendense-restore/restorefs.conf ] && continue  # a conffile: kept until purge
  [ -e "$f" ] && fail "$f left after dpkg -r"
done
[ -f /etc/sendense-restore/restorefs.conf ] || fail "dpkg -r removed the conffile (only purge should)"

echo "== dpkg -P"
dpkg -P "$pkg"
installed=0
[ -e /etc/sendense-restore ] && fail "/etc/sendense-restore left after purge"
left=$(find /var/lib/sendense-restore -mindepth 1)
[ "$left" = /var/lib/sendense-restore/catalog.db ] || fail "after purge /var/lib/sendense-restore holds: $left"
echo "PASS"
