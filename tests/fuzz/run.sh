#!/usr/bin/env bash
# Runs the libFuzzer targets (SENDENSE_FUZZ=ON build), each for SECONDS,
# with its corpus in /var/tmp/sendense-fuzz/<target> (seeds from
# make-seeds.sh and the regression inputs added, corpus kept between runs),
# then prints per target: executions, coverage (cov: edges) and whether it
# found anything.
#   tests/fuzz/run.sh SECONDS [TARGET...]
# Environment: FUZZ_BUILD (default build-fuzz), FUZZ_CORPUS (default
# /var/tmp/sendense-fuzz), FUZZ_JOBS (targets run at once, default 1).
# Artifacts (crash-*, leak-*, timeout-*, oom-*) land in
# FUZZ_CORPUS/<target>/artifacts/, the run's output in FUZZ_CORPUS/<target>/last-run.log
# (the targets' own stdout/stderr are closed: -close_fd_mask=3; sanitizer
# reports still appear). Exit status 1 if any target found one.
set -euo pipefail

SECONDS_EACH=${1:?usage: run.sh SECONDS [TARGET...]}
shift
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${FUZZ_BUILD:-$HERE/../../build-fuzz}
CORPUS=${FUZZ_CORPUS:-/var/tmp/sendense-fuzz}
JOBS=${FUZZ_JOBS:-1}
ALL=(qcow2 vmdk_descriptor partitions lvm ext journal xfs ntfs names worker_replies)
TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${ALL[@]}")

# -max_len: the sparse form keeps image seeds under a few hundred KiB (a
# seed longer than this would be cut); LVM seeds are under 20 KiB, names tiny.
max_len() {
  case $1 in
    names) echo 4096 ;;
    worker_replies) echo 262144 ;;
    lvm) echo 65536 ;;
    *) echo 1048576 ;;
  esac
}

# Seeds are made again each run (about 10 s), so a changed make-seeds.sh
# reaches corpora kept from earlier runs; cp -n below keeps what is there.
mkdir -p "$CORPUS"
rm -rf "$CORPUS/.seeds"
bash "$HERE/make-seeds.sh" "$CORPUS/.seeds" >/dev/null 2>"$CORPUS/make-seeds.log" || {
  cat "$CORPUS/make-seeds.log" >&2
  exit 2
}
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$HERE/lsan.supp:print_suppressions=0}

run_one() {
  local t=$1 exe=$BUILD/fuzz_$1 dir=$CORPUS/$1
  mkdir -p "$dir/corpus" "$dir/artifacts"
  [[ -d $CORPUS/.seeds/$t ]] && cp -n "$CORPUS/.seeds/$t"/* "$dir/corpus/" 2>/dev/null || true
  # Regression inputs join the corpus: their neighbourhood is worth fuzzing.
  cp -n "$HERE/regressions/$t"/* "$dir/corpus/" 2>/dev/null || true
  rm -f "$dir/corpus/README.md"
  # lsan.supp names a libntfs-3g function, which only a full allocation
  # stack shows (the library has no frame pointers): slower, NTFS only.
  local asan=$ASAN_OPTIONS
  [[ $t == ntfs ]] && asan+=:fast_unwind_on_malloc=0
  local start=$SECONDS
  # -max_total_time is wall time; the CPU time the target got is kept too
  # (two targets at once, or other work on the machine, share the cores).
  local TIMEFORMAT='%U %S'
  set +e
  { time ASAN_OPTIONS=$asan nice -n 10 "$exe" "$dir/corpus" -max_total_time="$SECONDS_EACH" -max_len="$(max_len "$t")" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -close_fd_mask=3 -artifact_prefix="$dir/artifacts/" \
    >"$dir/last-run.log" 2>&1; } 2>"$dir/last-run.cpu"
  echo $? >"$dir/last-run.status"
  set -e
  echo $((SECONDS - start)) >"$dir/last-run.seconds"
}

i=0
for t in "${TARGETS[@]}"; do
  [[ -x $BUILD/fuzz_$t ]] || { echo "run.sh: $BUILD/fuzz_$t not built (cmake --build $BUILD --target fuzz)" >&2; exit 2; }
  run_one "$t" &
  i=$((i + 1))
  if ((i % JOBS == 0)); then wait; fi
done
wait

status=0
printf '%-16s %8s %8s %12s %10s %s\n' target seconds cpu-s executions cov:edges result  # seconds: wall, as run
for t in "${TARGETS[@]}"; do
  dir=$CORPUS/$t log=$CORPUS/$t/last-run.log
  execs=$(grep -m1 -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  rc=$(cat "$dir/last-run.status")
  result=ok
  if [[ $rc != 0 ]] || grep -q '^==[0-9]*==ERROR\|^SUMMARY:' "$log"; then
    result="FOUND (exit $rc): $(grep -m1 -E 'Test unit written to' "$log" | sed 's/.*written to //')"
    status=1
  fi
  cpu=$(awk '{printf "%d", $1 + $2}' "$dir/last-run.cpu" 2>/dev/null)
  printf '%-16s %8s %8s %12s %10s %s\n' "$t" "$(cat "$dir/last-run.seconds")" "${cpu:-?}" "${execs:-?}" "${cov:-?}" "$result"
done
exit $status
