#!/usr/bin/env bash
# Builds the Debian package from a plain release build (no sanitizers, no
# tests) with CPack's DEB generator:
#   bash packaging/build-deb.sh          # -> build-deb/sendense-restore_<version>_<arch>.deb
# Needs the build dependencies (packaging/install-deps.sh) and dpkg-dev
# (dpkg-shlibdeps computes Depends from the binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-deb}
# Debian's hardening flags (stack protector, _FORTIFY_SOURCE, relro, bindnow),
# as dpkg-buildpackage would set them; CMake reads CPPFLAGS nowhere, so they
# join CFLAGS/CXXFLAGS. Read at the first configure of "$build" only.
eval "$(DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --export=sh)"
export CFLAGS="$CFLAGS $CPPFLAGS" CXXFLAGS="$CXXFLAGS $CPPFLAGS"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr -DSENDENSE_TESTS=OFF
cmake --build "$build" -j"$(nproc)"
(cd "$build" && cpack -G DEB)
ls "$build"/sendense-restore_*.deb
