#!/bin/bash
# Many cold walks of real content, each compared with its source: a hunt
# for races in the read path (the small-file read-ahead, the worker
# protocol) that a single test run rarely meets. Not a benchmark and not
# run by CI (about 15 s per pass here); run it after changing those paths.
#
#   bash tests/benchmark/walk-check.sh [BUILD_DIR] [PASSES]   (default 10)
#   KINDS="zlib plain"   images of compare-benchmark.sh's cached tree
#
# Uses the tree and images compare-benchmark.sh keeps under
# /var/tmp/sendense-bench-cache (run it once, SECTIONS=readers, to build
# them). Each pass: drop the caches, `tar` the small files through the
# daemon with isolation (worker) and without (in-process), then `tar -d`
# against the source. Prints one line per difference or tar complaint and
# exits 1 if there was any.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
passes=${2:-10}
kinds=${KINDS:-zlib plain}
cache=${CACHE:-/var/tmp/sendense-bench-cache}
# shellcheck source=lib.sh
source "$top/tests/benchmark/lib.sh"
bench_need tar
tree=$(find "$cache" -maxdepth 1 -name 'tree-s*' -type d -exec test -f '{}/done' ';' -print 2>/dev/null | head -1 || true)
[ -n "$tree" ] || { echo "no cached tree in $cache: run compare-benchmark.sh once (SECTIONS=readers)" >&2; exit 2; }
bench_init sendense-walk-check

for m in worker none; do
  for k in $kinds; do
    "$build/sendense-restore" catalog add --id "bench-$k" --vm "bench-$k" --format qcow2 --path "$tree/$k.qcow2" \
      --catalog "$work/$m.db" >/dev/null
  done
  bench_start_restorefs "$build" "$work/m-$m" "$work/$m.db" --idle-timeout 100000 --isolation "$m"
done

bad=0
for ((r = 1; r <= passes; r++)); do
  for k in $kinds; do
    for m in worker none; do
      root=$work/m-$m/bench-$k/disk
      ls "$root" >/dev/null
      bench_cold
      if ! tar -cf "$work/walk.tar" -C "$root" small 2>"$work/tar.err"; then
        echo "pass $r $k $m: tar: $(head -3 "$work/tar.err" | tr '\n' ' ')"
        bad=1
      fi
      # Times, owners and modes are the image's as stored; contents and sizes must match.
      diff=$(tar -C "$tree/src" -df "$work/walk.tar" 2>&1 |
        grep -v -e 'Mod time differs' -e 'Mode differs' -e 'Uid differs' -e 'Gid differs' | head -5 || true)
      if [ -n "$diff" ]; then
        echo "pass $r $k $m: differs from the source: $(echo "$diff" | tr '\n' ' ')"
        bad=1
      fi
    done
  done
  echo "pass $r of $passes done" >&2
done
for m in worker none; do bench_stop_restorefs "$build" "$work/m-$m"; done
[ "$bad" = 0 ] && echo "walk-check: $passes passes of ($kinds) x (worker, in-process): every file matched its source"
exit "$bad"
