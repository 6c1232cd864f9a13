#!/usr/bin/env bash
# Peak memory per attached backup (issue 11): every image of the test
# fixtures is attached by the daemon (default isolation: one worker per
# backup), walked whole (`tar` of every file to /dev/null), and its
# worker's peak RSS (VmHWM) read before it is detached; then every input of
# the fuzz corpora (the seeds make-seeds.sh builds and the kept regression
# inputs) is replayed alone through its fuzz_replay_<target> program, whose
# peak RSS /usr/bin/time reports. Figures, never assertions. As root.
#
#   bash tests/benchmark/peak-memory.sh [BUILD_DIR] [FIXTURES_BUILD_DIR]
#
# BUILD_DIR (default build) holds the binaries (a Release build measures
# what ships; a sanitizer build's shadow memory would dwarf the figures).
# FIXTURES_BUILD_DIR (default BUILD_DIR) is a build whose ctest fixtures
# were made (fixtures, journal-, lvm-, ntfs-, xfs-fixtures).
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=lib.sh
source "$top/tests/benchmark/lib.sh"
build=$(cd "${1:-$top/build}" && pwd)
fixtures=$(cd "${2:-$build}" && pwd)
bench_need tar /usr/bin/time python3
bench_init peak-memory

mib() { echo "scale=1; $1 / 1024" | bc -l; }

# ---- backups of the fixtures ----
catalog=$work/catalog.db
for dir in "$fixtures/fixtures/repo" "$fixtures/lvm-fixtures/repo" "$fixtures/ntfs-fixtures" \
  "$fixtures/xfs-fixtures" "$fixtures/journal-fixtures"; do
  [ -d "$dir" ] || { echo "peak-memory: no $dir (run the ctest fixtures of $fixtures first)" >&2; continue; }
  "$build/sendense-restore" catalog import "$dir" --catalog "$catalog" >/dev/null 2>>"$work/import.log" ||
    echo "peak-memory: import of $dir reported errors (see below)" >&2
done
# One line per backup: its id and the size in MiB of its disks' images
# (the top of each chain: backing files are not counted).
mapfile -t backups < <("$build/sendense-restore" catalog list --json --catalog "$catalog" |
  python3 -c 'import json,os,sys
for b in json.load(sys.stdin):
    paths=[d["path"] for d in b.get("disks") or []] or [b.get("path")]
    print(b["id"], round(sum(os.path.getsize(p) for p in paths if p and os.path.exists(p))/1048576,1))')
ids=("${backups[@]%% *}")
[ "${#ids[@]}" -gt 0 ] || { echo "peak-memory: no backups to measure" >&2; cat "$work/import.log" >&2; exit 1; }

mnt=$work/mnt
bench_start_restorefs "$build" "$mnt" "$catalog" --idle-timeout 100000 --max-mounts 64 || exit 1
daemon=${bench_restorefs[$mnt]}

echo "# peak-memory $(date -u +%F\ %H:%MZ), $(nproc) cores, $(basename "$build") build"
echo
echo "Each fixture backup attached (one worker each) and walked whole (\`tar\` of every file); the worker's peak RSS (VmHWM) before it is detached."
echo
echo "| backup | image MiB | entries walked | walk s | worker peak RSS MiB | walk |"
echo "|---|---|---|---|---|---|"
worst=0 worst_id=
for line in "${backups[@]}"; do
  id=${line%% *} size=${line#* }
  t0=$(date +%s.%N)
  entries=$(timeout 300 tar -cf - -C "$mnt/$id" . 2>"$work/walk.err" | tar -tvf - 2>/dev/null | wc -l)
  t1=$(date +%s.%N)
  walk=ok
  [ -s "$work/walk.err" ] && walk="errors: $(head -1 "$work/walk.err" | cut -c1-80 | tr '|' '/')"
  worker=$(pgrep -P "$daemon" -f "sendense-restore-worker $id\$" | head -1)
  hwm=
  [ -n "$worker" ] && hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$worker/status" 2>/dev/null)
  if [ -n "$hwm" ]; then
    [ "$hwm" -gt "$worst" ] && worst=$hwm worst_id=$id
    hwm=$(mib "$hwm")
  else
    hwm="- (no worker: attach failed or not a userspace volume)"
  fi
  printf '| %s | %s | %s | %.2f | %s | %s |\n' "$id" "$size" "$entries" "$(echo "$t1 - $t0" | bc -l)" "$hwm" "$walk"
  "$build/sendense-restore" detach "$id" --catalog "$catalog" >/dev/null 2>&1
done
echo
echo "Largest worker: $(mib "$worst") MiB ($worst_id). The daemon itself (FUSE, catalog, node ids; no parser): peak RSS $(mib "$(awk '/^VmHWM/ {print $2}' "/proc/$daemon/status")") MiB over all ${#ids[@]} attaches."
bench_stop_restorefs "$build" "$mnt"

# ---- fuzz corpora ----
seeds=$work/seeds
bash "$top/tests/fuzz/make-seeds.sh" "$seeds" >/dev/null 2>"$work/seeds.log" || {
  echo "peak-memory: make-seeds.sh failed:" >&2
  tail -20 "$work/seeds.log" >&2
}
echo
echo "Every fuzz corpus input (seeds and kept regression inputs) replayed alone by \`fuzz_replay_<target>\`: the process's peak RSS (/usr/bin/time), which includes the program's own libraries."
echo
echo "| target | inputs | median peak RSS MiB | largest peak RSS MiB | its input |"
echo "|---|---|---|---|---|"
for exe in "$build"/fuzz_replay_*; do
  t=${exe##*/fuzz_replay_}
  inputs=()
  for d in "$seeds/$t" "$top/tests/fuzz/regressions/$t"; do
    [ -d "$d" ] && while IFS= read -r f; do inputs+=("$f"); done < <(find "$d" -type f ! -name 'README*' | sort)
  done
  [ "${#inputs[@]}" -gt 0 ] || continue
  rss=()
  max=0 max_in=
  for f in "${inputs[@]}"; do
    kb=$(/usr/bin/time -f %M "$exe" "$f" 2>&1 >/dev/null | tail -1)
    [[ $kb =~ ^[0-9]+$ ]] || continue
    rss+=("$kb")
    [ "$kb" -gt "$max" ] && max=$kb max_in=${f#"$top/"}
  done
  [ "${#rss[@]}" -gt 0 ] || continue
  max_in=${max_in#"$seeds/"}
  echo "| $t | ${#rss[@]} | $(mib "$(bench_median "${rss[@]}")") | $(mib "$max") | \`$max_in\` |"
done
