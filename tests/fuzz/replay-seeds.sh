#!/usr/bin/env bash
# The fuzz_seeds ctest: builds the seeds (make-seeds.sh) and replays each
# target's seeds through its fuzz_replay_<target> program (normal build).
#   bash tests/fuzz/replay-seeds.sh SEEDS_DIR BUILD_DIR
set -euo pipefail
SEEDS=${1:?usage: replay-seeds.sh SEEDS_DIR BUILD_DIR}
BUILD=${2:?usage: replay-seeds.sh SEEDS_DIR BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
bash "$HERE/make-seeds.sh" "$SEEDS"
status=0
for dir in "$SEEDS"/*/; do
  t=$(basename "$dir")
  exe=$BUILD/fuzz_replay_$t
  if [[ ! -x $exe ]]; then
    echo "replay-seeds: no $exe for the seeds in $dir" >&2
    status=1
    continue
  fi
  # lsan.supp names a libntfs-3g function: only a full malloc stack shows it.
  asan=${ASAN_OPTIONS:-}
  [[ $t == ntfs ]] && asan=${asan:+$asan:}fast_unwind_on_malloc=0
  if ! ASAN_OPTIONS=$asan "$exe" "$dir" 2>"$SEEDS/$t.log"; then
    echo "replay-seeds: $t failed on a seed:" >&2
    tail -50 "$SEEDS/$t.log" >&2
    status=1
  else
    echo "$t: $(find "$dir" -type f | wc -l) seeds replayed"
  fi
done
exit $status
