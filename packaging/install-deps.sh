#!/usr/bin/env bash
# Installs every build, run and test dependency of sendense-restore from
# Debian 12 packages. Idempotent; needs root.
set -euo pipefail

packages=(
  # build
  build-essential cmake pkg-config
  libfuse3-dev libnbd-dev libzstd-dev zlib1g-dev libdeflate-dev libext2fs-dev ntfs-3g-dev libsqlite3-dev nlohmann-json3-dev
  libgtest-dev googletest
  # fuzz targets (tests/fuzz/, the smoke test in packaging/test.sh): clang
  # with libFuzzer and its sanitizer runtimes (-fsanitize=fuzzer,address,undefined)
  clang-14 libclang-rt-14-dev
  libsystemd-dev      # sd_notify: Type=notify and the watchdog
  libcpp-httplib-dev  # the --metrics-listen endpoint and sendense-restore-web
  libarchive-dev libcap-dev  # sendense-restore-web: archives, its server's capabilities
  libseccomp-dev      # system call filters: the web server and the sandboxed worker (--isolation worker)
  # the Debian package (packaging/build-deb.sh, tests/package/package-test.sh)
  dpkg-dev lintian adduser man-db systemd
  # run
  fuse3 sqlite3
  # fixtures and integration tests: the real tools
  qemu-utils qemu-system-common e2fsprogs fdisk util-linux rsync attr acl
  dosfstools ntfs-3g xfsprogs btrfs-progs cryptsetup-bin lvm2 file procps bc fuse2fs
  curl unzip zstd openssl  # web_test: the HTTP client, the archives' extractors, a TLS certificate
  python3  # make-journal-fixtures.sh: fsync(2) of one file, logdump parsing
  # re-export (export stanzas, tests/reexport, reexport_test): real servers and
  # clients on loopback: testparm/smbd/smbclient, ganesha.nfsd (FSAL VFS),
  # nfs-ls/nfs-cat; libnfs-dev and libssl-dev build our own NFSv4 client; ss
  samba smbclient nfs-ganesha nfs-ganesha-vfs libnfs-utils libnfs-dev libssl-dev iproute2
  # the web page (tests/web/browser-test.sh): headless Chromium, driven over the
  # DevTools protocol with python3-websocket; python3-yaml checks web/openapi.yaml
  chromium python3-websocket python3-yaml
  # benchmarks (tests/benchmark/compare-benchmark.sh): libqcow's qcowmount
  # (curl, listed above, reads the daemon's metrics)
  libqcow-utils
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (apt-get install)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
