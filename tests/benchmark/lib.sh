# Shared helpers of the benchmark scripts (sourced, not run). Figures only,
# never assertions; everything here needs root (drop_caches, loop, mount).
#
#   bench_init PREFIX       a work folder $work under /var/tmp and a cleanup
#                           on exit of everything registered below
#   bench_track_mount DIR / bench_track_loop DEV / bench_track_pid PID
#   bench_release          releases what was tracked (cleanup does it too)
#   bench_cold              sync and drop the page, dentry and inode caches
#   bench_times CMD         RUNS cold runs of CMD (eval'd, stdout discarded):
#                           the wall times in seconds, sorted, one line; a
#                           run that fails (any command of its pipeline: a
#                           tar that found a file shorter than its size)
#                           says so loudly on stderr
#   bench_measure CMD       the median of bench_times
#   bench_median / bench_min / bench_max TIMES...
#   bench_loop_mount IMG DIR [FSOPTS]   read-only loop device + kernel ext4 (ro,noload)
#   bench_qsd_export IMG FILE           qemu-storage-daemon FUSE export of a qcow2, read-only
#   bench_start_restorefs BUILD MNT CATALOG [ARGS...]   our daemon, in the foreground, tracked
#   bench_stop_restorefs BUILD MNT      stops it and takes its mount down for good
runs=${RUNS:-3}
bench_mounts=()
bench_loops=()
bench_pids=()
declare -A bench_restorefs=()  # mount point -> daemon pid

bench_init() {
  work=$(mktemp -d "/var/tmp/$1-XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_track_mount() { bench_mounts+=("$1"); }
bench_track_loop() { bench_loops+=("$1"); }
bench_track_pid() { bench_pids+=("$1"); }

# Everything registered, in an order that works: kernel mounts, then their
# loop devices, then what backs them (FUSE exports, their daemons).
bench_release() {
  local i m busy=()
  for ((i = ${#bench_mounts[@]} - 1; i >= 0; i--)); do
    m=${bench_mounts[i]}
    mountpoint -q "$m" && ! umount "$m" 2>/dev/null && busy+=("$m")
  done
  for i in "${bench_loops[@]}"; do losetup -d "$i" 2>/dev/null; done
  for m in "${busy[@]}"; do mountpoint -q "$m" && { umount "$m" 2>/dev/null || umount -l "$m"; }; done
  for i in "${bench_pids[@]}"; do kill "$i" 2>/dev/null && { wait "$i" 2>/dev/null || tail --pid="$i" -f /dev/null; }; done
  bench_mounts=() bench_loops=() bench_pids=()
  return 0
}

bench_cleanup() {
  local m
  set +e
  for m in "${!bench_restorefs[@]}"; do bench_stop_restorefs "$bench_build" "$m"; done
  bench_release
  sleep 0.5
  [ -n "${work:-}" ] && rm -rf "$work"
  return 0
}

bench_need() {
  local t
  for t in "$@"; do command -v "$t" >/dev/null || { echo "missing tool $t" >&2; exit 1; }; done
}

bench_cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }

bench_times() {
  local times=() t0 t1 i
  for ((i = 0; i < runs; i++)); do
    bench_cold
    t0=$(date +%s.%N)
    (set -o pipefail; eval "$1") >/dev/null || echo "BENCHMARK RUN FAILED (exit $?), its figure is not a reader's: $1" >&2
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  printf '%s\n' "${times[@]}" | sort -g | tr '\n' ' '
}
bench_median() { printf '%s\n' "$@" | sort -g | sed -n "$((($# + 1) / 2))p"; }
bench_min() { printf '%s\n' "$@" | sort -g | head -1; }
bench_max() { printf '%s\n' "$@" | sort -g | tail -1; }
# shellcheck disable=SC2046
bench_measure() { bench_median $(bench_times "$1"); }

bench_wait_mount() {
  local _
  for _ in $(seq 100); do mountpoint -q "$1" && return 0; sleep 0.1; done
  return 1
}

bench_loop_mount() {
  local loop
  loop=$(losetup -f --show -r "$1") || return 1
  bench_track_loop "$loop"
  mkdir -p "$2"
  mount -o "ro,noload${3:+,$3}" "$loop" "$2" || return 1
  bench_track_mount "$2"
}

bench_qsd_export() {
  touch "$2"
  qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$1",read-only=on \
    --blockdev driver=qcow2,node-name=q,file=f,read-only=on \
    --export type=fuse,id=e,node-name=q,mountpoint="$2",writable=off \
    --daemonize --pidfile "$2.pid" || return 1
  bench_track_pid "$(cat "$2.pid")"
  bench_track_mount "$2"
}

bench_start_restorefs() {
  local build=$1 mnt=$2 catalog=$3
  shift 3
  bench_build=$build
  mkdir -p "$mnt"
  "$build/sendense-restorefs" "$mnt" --config /dev/null --catalog "$catalog" -f "$@" 2>>"$mnt.log" &
  bench_restorefs[$mnt]=$!
  bench_wait_mount "$mnt" || { echo "sendense-restorefs did not mount $mnt" >&2; cat "$mnt.log" >&2; return 1; }
}

bench_stop_restorefs() {
  local build=$1 mnt=$2 pid=${bench_restorefs[$2]:-}
  [ -n "$pid" ] && { kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  unset "bench_restorefs[$mnt]"
  # A stopped daemon leaves its mount to its holder: take it down for good.
  "$build/sendense-restorefs" --unmount "$mnt" >/dev/null 2>&1
  if mountpoint -q "$mnt"; then umount -l "$mnt"; fi
  return 0
}
