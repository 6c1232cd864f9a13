#!/usr/bin/env bash
# Builds everything with AddressSanitizer + UndefinedBehaviorSanitizer and
# warnings as errors, then runs the whole test suite (unit tests and the
# integration tests on a real FUSE mount), then a fuzz smoke test: the
# libFuzzer targets (tests/fuzz/) built with clang, 30 s each. Needs root
# (FUSE mounts, loop devices).
#   bash packaging/test.sh            # installs dependencies first
#   SKIP_DEPS=1 bash packaging/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_DEPS:-0}" != 1 ]; then
  bash packaging/install-deps.sh
fi
build=${BUILD_DIR:-build-test}
# Prefix /usr: the package test (tests/package/package-test.sh) packages this build.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSENDENSE_SANITIZE=ON -DSENDENSE_WERROR=ON \
  -DCMAKE_INSTALL_PREFIX=/usr
cmake --build "$build" -j"$(nproc)"
# CI machines have root, loop devices, FUSE and every tool: a skip there is a failure.
if [ -n "${CI:-}" ]; then export SENDENSE_NO_SKIP=${SENDENSE_NO_SKIP:-1}; fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
(cd "$build" && ctest --output-on-failure --timeout 900 -j1)

# Fuzz smoke test (issue 11): a second build folder with clang and
# -DSENDENSE_FUZZ=ON where only the fuzz targets and the libraries they need
# are built (target `fuzz`), then every target runs 30 s from the seeds
# (corpus kept in /var/tmp/sendense-fuzz). Any crash, leak, timeout or
# out-of-memory fails the run (run.sh exits 1).
fuzz_build=${FUZZ_BUILD_DIR:-build-fuzz}
CC=clang-14 CXX=clang++-14 cmake -S . -B "$fuzz_build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSENDENSE_FUZZ=ON -DSENDENSE_TESTS=OFF
cmake --build "$fuzz_build" --target fuzz -j"$(nproc)"
FUZZ_BUILD="$fuzz_build" bash tests/fuzz/run.sh 30
