#!/usr/bin/env bash
# Builds the Debian package from a plain release build (no sanitizers, no
# tests) with CPack's DEB generator:
#   bash packaging/build-deb.sh          # -> build-deb/sendense-restore_<version>_<arch>.deb
# Needs the build dependencies (packaging/install-deps.sh) and dpkg-dev
# (dpkg-shlibdeps computes Depends from the binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-deb}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr -DSENDENSE_TESTS=OFF
cmake --build "$build" -j"$(nproc)"
(cd "$build" && cpack -G DEB)
ls "$build"/sendense-restore_*.deb
