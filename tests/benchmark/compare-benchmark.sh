#!/usr/bin/env bash
# Every way to read a backup, side by side, in one run (issue 12). One ext4
# tree -- SMALL_FILES real small files copied from this machine's /usr/share
# (regular files of at most 64 KiB, in their folders), one FILE_MIB MiB file
# and PAR_FILES files of PAR_MIB MiB, both cut from the concatenated files of
# /usr/lib (real, partly compressible data) -- as a raw image and as plain,
# zlib, zstd and extended-L2 qcow2, read by:
#   kernel      the kernel's ext4 on a read-only loop device of the raw image
#   qemu        qemu-storage-daemon (qcow2 driver, FUSE export) + loop + kernel ext4
#   qcowmount   libqcow's qcowmount (FUSE) + loop + kernel ext4, where it reads the image
#   fuse2fs     e2fsprogs' fuse2fs on the raw image
#   sendense    sendense-restorefs (our qcow2 reader, our ext4 data path), each
#               backup's readers in their sandboxed worker (the default)
#   in-process  the same with --isolation none (the readers in the daemon):
#               the isolation's cost, with the first listing of a backup
#               right after it is attached, in a table of its own
# Cold caches before every run (drop_caches; the host may still cache the
# image files). Prints one table: large file MB/s and tar of the small files
# (s) as min-max over RUNS, and the ratio (median; >1 = faster) to the kernel
# and to qemu on the same image. Then:
#   BACKUPS backups of VMS VMs in one catalog: `ls -l` of the root and of
#     by-vm/<vm> (and the FUSE requests one root `ls -l` costs)
#   a folder of DIR_ENTRIES empty files: `ls -f`, ours against the kernel on
#     the same image
#   PAR_FILES processes reading PAR_FILES different files of one backup at
#     once: aggregate MB/s, ours against the kernel
# Images are built once and kept in CACHE (default /var/tmp/sendense-bench-cache),
# in folders named after the parameters; delete them to rebuild.
# Needs root; not part of the test suite (figures, never assertions).
#   bash tests/benchmark/compare-benchmark.sh [BUILD_DIR]
#   RUNS=3 SMALL_FILES=10000 FILE_MIB=256 PAR_FILES=16 PAR_MIB=16 BACKUPS=10000 VMS=10 DIR_ENTRIES=1000000
#   SECTIONS="readers backups bigdir parallel"
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
small=${SMALL_FILES:-10000}
file_mib=${FILE_MIB:-256}
par_files=${PAR_FILES:-16}
par_mib=${PAR_MIB:-16}
backups=${BACKUPS:-10000}
vms=${VMS:-10}
entries=${DIR_ENTRIES:-1000000}
sections=${SECTIONS:-readers backups bigdir parallel}
cache=${CACHE:-/var/tmp/sendense-bench-cache}
# shellcheck source=lib.sh
source "$top/tests/benchmark/lib.sh"
bench_need qemu-img qemu-storage-daemon mkfs.ext4 losetup bc python3 curl
bench_init sendense-compare-bench
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
kinds=(plain zlib zstd l2)
log() { echo "$(date +%T) $*" >&2; }
has() { [[ " $sections " == *" $1 "* ]]; }

# ---- the images (cached) --------------------------------------------------
tree=$cache/tree-s$small-f$file_mib-p${par_files}x$par_mib
if [ ! -f "$tree/done" ]; then
  log "building the tree and its images in $tree"
  rm -rf "$tree"; mkdir -p "$tree/src/small" "$tree/src/par"
  # (head ends the pipes early: their SIGPIPE is expected)
  (cd /usr/share && find . -xdev -type f -size -65k -print0 | sort -z | head -z -n "$small" || true) >"$tree/small.list"
  tar -C /usr/share --null -T "$tree/small.list" -cf - | tar -C "$tree/src/small" -xf -
  total=$((file_mib + par_files * par_mib))
  { (cd /usr/lib && find . -xdev -type f -size +64k -print0 | sort -z | xargs -0 cat 2>/dev/null) |
    head -c $((total * 1048576)) || true; } >"$tree/stream"
  [ "$(stat -c %s "$tree/stream")" -eq $((total * 1048576)) ] || { echo "/usr/lib holds less than $total MiB" >&2; exit 1; }
  head -c $((file_mib * 1048576)) "$tree/stream" >"$tree/src/big.bin"
  for ((i = 0; i < par_files; i++)); do
    dd if="$tree/stream" of="$tree/src/par/p$i" bs=1M skip=$((file_mib + i * par_mib)) count="$par_mib" status=none
  done
  rm -f "$tree/stream"
  fs_mib=$(( $(du -sm "$tree/src" | cut -f1) * 13 / 10 + 64 ))
  mkfs.ext4 -q -F -I 256 -d "$tree/src" "$tree/disk.raw" "${fs_mib}M" >/dev/null
  qemu-img convert -f raw -O qcow2 "$tree/disk.raw" "$tree/plain.qcow2"
  qemu-img convert -c -f raw -O qcow2 "$tree/disk.raw" "$tree/zlib.qcow2"
  qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd "$tree/disk.raw" "$tree/zstd.qcow2"
  qemu-img convert -f raw -O qcow2 -o extended_l2=on "$tree/disk.raw" "$tree/l2.qcow2"
  touch "$tree/done"
fi
src=$tree/src
small_count=$(find "$src/small" -type f | wc -l)

# ---- the readers ----------------------------------------------------------
if has readers || has parallel; then
  for db in main inproc; do
    "$build/sendense-restore" catalog add --id bench-plain --vm bench --format qcow2 --path "$tree/plain.qcow2" \
      --catalog "$work/$db.db" >/dev/null
    for k in zlib zstd l2; do
      "$build/sendense-restore" catalog add --id "bench-$k" --vm "bench-$k" --format qcow2 --path "$tree/$k.qcow2" \
        --catalog "$work/$db.db" >/dev/null
    done
  done
  bench_start_restorefs "$build" "$work/m-sendense" "$work/main.db" --idle-timeout 100000 --isolation worker
  has readers && bench_start_restorefs "$build" "$work/m-inproc" "$work/inproc.db" --idle-timeout 100000 --isolation none
  bench_loop_mount "$tree/disk.raw" "$work/m-kernel"
fi

declare -A root_of big_t tar_t note
readers=()
add_reader() { readers+=("$1"); root_of[$1]=$2; }
if has readers; then
  add_reader "raw kernel" "$work/m-kernel"
  command -v fuse2fs >/dev/null && mkdir -p "$work/m-fuse2fs" &&
    fuse2fs -o ro,fakeroot "$tree/disk.raw" "$work/m-fuse2fs" && bench_track_mount "$work/m-fuse2fs" &&
    add_reader "raw fuse2fs" "$work/m-fuse2fs"
  for k in "${kinds[@]}"; do
    if bench_qsd_export "$tree/$k.qcow2" "$work/qsd-$k" && bench_loop_mount "$work/qsd-$k" "$work/m-qemu-$k"; then
      add_reader "$k qemu" "$work/m-qemu-$k"
    else
      note["$k qemu"]="qemu-storage-daemon did not serve it"
    fi
    if command -v qcowmount >/dev/null; then
      mkdir -p "$work/qcow-$k"
      if qcowmount "$tree/$k.qcow2" "$work/qcow-$k" >"$work/qcowmount-$k.log" 2>&1 && bench_track_mount "$work/qcow-$k" &&
        bench_loop_mount "$work/qcow-$k/qcow1" "$work/m-qcowmount-$k" 2>>"$work/qcowmount-$k.log"; then
        add_reader "$k qcowmount" "$work/m-qcowmount-$k"
      else
        note["$k qcowmount"]="does not read it ($(grep -m1 -iE 'error|unsupported' "$work/qcowmount-$k.log" | cut -c1-90 || true))"
      fi
    else
      note["$k qcowmount"]="not installed (libqcow-utils)"
    fi
    add_reader "$k sendense" "$work/m-sendense/bench-$k/disk"
    add_reader "$k in-process" "$work/m-inproc/bench-$k/disk"
  done

  for r in "${readers[@]}"; do
    root=${root_of[$r]}
    if ! cmp -s "$root/big.bin" "$src/big.bin" 2>/dev/null; then note[$r]="big.bin differs or cannot be read"; continue; fi
    [ "$(find "$root/small" -type f | wc -l)" = "$small_count" ] || { note[$r]="not $small_count small files"; continue; }
    log "reading through $r"
    big_t[$r]=$(bench_times "cat '$root/big.bin'")
    tar_t[$r]=$(bench_times "tar -cf - -C '$root' small | cat")
  done

  # The first listing of a backup's volume right after it is attached
  # (detached first, caches dropped): attach + one folder.
  declare -A attach_t
  for mode in sendense in-process; do
    if [ "$mode" = sendense ]; then m=$work/m-sendense db=$work/main.db; else m=$work/m-inproc db=$work/inproc.db; fi
    for k in plain zlib; do
      times=()
      for ((i = 0; i < runs; i++)); do
        ls "$m/bench-$k/disk" >/dev/null  # attached, so that detach has something to do
        "$build/sendense-restore" detach "bench-$k" --catalog "$db" >/dev/null
        bench_cold
        t0=$(date +%s.%N); ls -l "$m/bench-$k/disk" >/dev/null; t1=$(date +%s.%N)
        times+=("$(echo "$t1 - $t0" | bc -l)")
      done
      attach_t["$k $mode"]=$(printf '%s\n' "${times[@]}" | sort -g | tr '\n' ' ')
    done
  done
fi

# ratio A B: median of B / median of A (>1: A is faster), or "-".
ratio() {
  [ -n "${1:-}" ] && [ -n "${2:-}" ] || { echo "-"; return; }
  # shellcheck disable=SC2086
  printf '%.2f' "$(echo "$(bench_median $2) / $(bench_median $1)" | bc -l)"
}
span_mbs() {  # MB/s min-max from times
  # shellcheck disable=SC2086
  printf '%.0f-%.0f' "$(echo "$1 * 1.048576 / $(bench_max $2)" | bc -l)" "$(echo "$1 * 1.048576 / $(bench_min $2)" | bc -l)"
}
span_s() {
  # shellcheck disable=SC2086
  printf '%.2f-%.2f' "$(bench_min $1)" "$(bench_max $1)"
}

out=$work/table.md
{
  echo "# compare-benchmark $(date -u +%F\ %H:%MZ), $(nproc) cores, load at the start: $load_start"
  echo "# RUNS=$runs SMALL_FILES=$small ($small_count files, $(du -sm "$src/small" | cut -f1) MiB from /usr/share) FILE_MIB=$file_mib PAR_FILES=$par_files PAR_MIB=$par_mib BACKUPS=$backups VMS=$vms DIR_ENTRIES=$entries"
} >"$out"

if has readers; then
  {
    echo
    echo "Cold \`cat\` of one $file_mib MiB file and \`tar\` of $small_count small files; min-max of $runs runs; ratios of the medians (>1 = faster)."
    echo
    echo "| image | reader | large file MB/s | tar small files s | large: ratio to kernel | to qemu | tar: ratio to kernel | to qemu |"
    echo "|---|---|---|---|---|---|---|---|"
    for k in raw "${kinds[@]}"; do
      for r in "$k kernel" "$k fuse2fs" "$k qemu" "$k qcowmount" "$k sendense" "$k in-process"; do
        if [ -n "${big_t[$r]:-}" ]; then
          printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$k" "${r#* }" "$(span_mbs "$file_mib" "${big_t[$r]}")" \
            "$(span_s "${tar_t[$r]}")" \
            "$(ratio "${big_t[$r]}" "${big_t[raw kernel]:-}")" "$(ratio "${big_t[$r]}" "${big_t[$k qemu]:-}")" \
            "$(ratio "${tar_t[$r]}" "${tar_t[raw kernel]:-}")" "$(ratio "${tar_t[$r]}" "${tar_t[$k qemu]:-}")"
        elif [ -n "${note[$r]:-}" ]; then
          printf '| %s | %s | %s | | | | | |\n' "$k" "${r#* }" "${note[$r]}"
        fi
      done
    done
  } >>"$out"
fi

if has readers; then
  span_ms() {
    # shellcheck disable=SC2086
    printf '%.0f-%.0f' "$(echo "$(bench_min $1) * 1000" | bc -l)" "$(echo "$(bench_max $1) * 1000" | bc -l)"
  }
  {
    echo
    echo "The isolation's cost: each backup's readers in their sandboxed worker (the default) against the same readers in the daemon (\`--isolation none\`), same run; min-max of $runs; ratio of the medians (worker time / in-process time: 1.00 = no cost, >1 = slower)."
    echo
    echo "| image | large file MB/s in-process | worker | ratio | tar small files s in-process | worker | ratio | first listing after attach ms in-process | worker | ratio |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for k in "${kinds[@]}"; do
      i="$k in-process" w="$k sendense"
      [ -n "${big_t[$i]:-}" ] && [ -n "${big_t[$w]:-}" ] || continue
      a_i=${attach_t[$i]:-} a_w=${attach_t[$w]:-}
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$k" \
        "$(span_mbs "$file_mib" "${big_t[$i]}")" "$(span_mbs "$file_mib" "${big_t[$w]}")" "$(ratio "${big_t[$i]}" "${big_t[$w]}")" \
        "$(span_s "${tar_t[$i]}")" "$(span_s "${tar_t[$w]}")" "$(ratio "${tar_t[$i]}" "${tar_t[$w]}")" \
        "${a_i:+$(span_ms "$a_i")}" "${a_w:+$(span_ms "$a_w")}" "$( [ -n "$a_i" ] && ratio "$a_i" "$a_w")"
    done
    # What each of a worker's requests costs here before any work (a walk
    # is a few thousand of them): the machine's part of the ratios above.
    if rt=$("$build/round_trip_bench" 20000 2>/dev/null); then
      echo
      echo "A round trip of a 64-byte message over a SOCK_SEQPACKET socketpair (the worker protocol's transport; \`round_trip_bench\`, 20,000 of them) costs ${rt%% *} µs here between two processes, ${rt##* } µs between two threads of one process."
    fi
  } >>"$out"
fi

# ---- PAR_FILES parallel readers of one backup -------------------------------
if has parallel; then
  par_cmd() { echo "for f in '$1'/par/p*; do cat \"\$f\" >/dev/null & done; wait"; }
  for f in "$src"/par/p*; do cmp -s "$f" "$work/m-sendense/bench-plain/disk/par/${f##*/}" || { echo "par file ${f##*/} differs" >&2; exit 1; }; done
  log "parallel readers"
  k1=$(bench_times "cat '$work/m-kernel/par/p0'")
  s1=$(bench_times "cat '$work/m-sendense/bench-plain/disk/par/p0'")
  pk=$(bench_times "$(par_cmd "$work/m-kernel")")
  ps_=$(bench_times "$(par_cmd "$work/m-sendense/bench-plain/disk")")
  pz=$(bench_times "$(par_cmd "$work/m-sendense/bench-zlib/disk")")
  mib=$((par_files * par_mib))
  {
    echo
    echo "$par_files processes each reading its own $par_mib MiB file of one backup at once (cold): aggregate MB/s, min-max of $runs; one process reading one of them for scale."
    echo
    echo "| reader | one reader MB/s | $par_files readers, aggregate MB/s | ratio to kernel | scaling (aggregate / one) |"
    echo "|---|---|---|---|---|"
    echo "| kernel (raw) | $(span_mbs "$par_mib" "$k1") | $(span_mbs "$mib" "$pk") | 1.00 | $(ratio "$pk" "$k1" | awk -v n="$par_files" '{ printf "%.2f", $1 * n }') |"
    echo "| sendense (plain qcow2) | $(span_mbs "$par_mib" "$s1") | $(span_mbs "$mib" "$ps_") | $(ratio "$ps_" "$pk") | $(ratio "$ps_" "$s1" | awk -v n="$par_files" '{ printf "%.2f", $1 * n }') |"
    echo "| sendense (zlib qcow2) | | $(span_mbs "$mib" "$pz") | $(ratio "$pz" "$pk") | |"
  } >>"$out"
fi
if has readers || has parallel; then
  bench_stop_restorefs "$build" "$work/m-sendense"
  has readers && bench_stop_restorefs "$build" "$work/m-inproc"
fi
bench_release  # nothing of the sections above runs on during the next ones

# ---- BACKUPS backups in the catalog ----------------------------------------
if has backups; then
  many=$cache/backups-$backups-vms$vms
  if [ ! -f "$many/done" ]; then
    log "making a catalog of $backups backups in $many"
    rm -rf "$many"; mkdir -p "$many"
    # Only the catalog is read (nothing is attached): every row names one small image.
    qemu-img create -q -f qcow2 "$many/empty.qcow2" 64M
    python3 - "$many/catalog.db" "$backups" "$vms" "$many/empty.qcow2" "$build/sendense-restore" <<'EOF'
import subprocess, sys, sqlite3
db, n, vms, image, cli = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
# The first through the CLI (it creates the schema), the rest copied from it.
subprocess.run([cli, "catalog", "add", "--id", "seed", "--vm", "seed", "--format", "qcow2", "--path", image,
                "--time", "2020-01-01T00:00:00Z", "--catalog", db], check=True, stdout=subprocess.DEVNULL)
import time
c = sqlite3.connect(db)
seed = c.execute("SELECT image_path, format, kind FROM backup_jobs WHERE id='seed'").fetchone()
jobs, disks = [], []
for i in range(n):
    vm = "vm%03d" % (i % vms)
    ts = 1700000000 + (i // vms) * 3600
    bid = "backup-%s-%s" % (vm, time.strftime("%Y%m%d%H%M%S", time.gmtime(ts)))
    jobs.append((bid, vm, seed[0], seed[1], seed[2], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))))
    disks.append((bid, 0, seed[0], seed[1]))
c.executemany("INSERT INTO backup_jobs (id, vm_name, image_path, format, kind, created_at) VALUES (?,?,?,?,?,?)", jobs)
c.executemany("INSERT INTO backup_disks (backup_id, disk, image_path, format) VALUES (?,?,?,?)", disks)
c.execute("DELETE FROM backup_disks WHERE backup_id='seed'")
c.execute("DELETE FROM backup_jobs WHERE id='seed'")
c.commit()
EOF
    touch "$many/done"
  fi
  cp "$many/catalog.db" "$work/many.db"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  bench_start_restorefs "$build" "$work/m-many" "$work/many.db" --metrics-listen "127.0.0.1:$port"
  shown=$(ls "$work/m-many" | wc -l)
  [ "$shown" -ge "$backups" ] || { echo "the root shows $shown entries, not $backups" >&2; exit 1; }
  vm_shown=$(ls "$work/m-many/by-vm/vm000" | wc -l)
  log "ls -l of a root of $backups backups"
  requests() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^sendense_fuse_requests_total\{/ { split($1, a, "\""); n[a[2]] = $2 } END { for (k in n) print k, n[k] }' | sort; }
  requests >"$work/req.before"
  bench_cold; ls -l "$work/m-many" >/dev/null
  requests >"$work/req.after"
  per_ls=$(join -a2 -e0 -o 0,1.2,2.2 "$work/req.before" "$work/req.after" | awk '$3 - $2 > 0 { printf "%s%s %d", sep, $1, $3 - $2; sep = ", " }')
  rl=$(bench_times "ls -l '$work/m-many'")
  rv=$(bench_times "ls -l '$work/m-many/by-vm/vm000'")
  rl_warm=$(for _ in 1 2 3; do t0=$(date +%s.%N); ls -l "$work/m-many" >/dev/null; echo "$(date +%s.%N) - $t0" | bc -l; done | sort -g | tr '\n' ' ')
  bench_stop_restorefs "$build" "$work/m-many"
  {
    echo
    echo "$backups backups of $vms VMs in the catalog (nothing attached): \`ls -l\` wall time, min-max of $runs cold runs (drop_caches first)."
    echo
    echo "| listing | entries | s | warm (run again at once) s |"
    echo "|---|---|---|---|"
    echo "| root | $shown | $(span_s "$rl") | $(span_s "$rl_warm") |"
    echo "| by-vm/vm000 | $vm_shown | $(span_s "$rv") | |"
    echo
    echo "FUSE requests of one cold root \`ls -l\`: $per_ls"
  } >>"$out"
fi

# ---- a folder of DIR_ENTRIES entries ----------------------------------------
if has bigdir; then
  big=$cache/dir-$entries
  if [ ! -f "$big/done" ]; then
    log "making a folder of $entries empty files in $big (once)"
    rm -rf "$big"; mkdir -p "$big/fill"
    truncate -s $((entries / 1024 + 512))M "$big/disk.raw"
    mkfs.ext4 -q -F -I 256 -N $((entries + 10000)) "$big/disk.raw"
    loop=$(losetup -f --show "$big/disk.raw"); bench_track_loop "$loop"
    mount "$loop" "$big/fill"; bench_track_mount "$big/fill"
    python3 -c '
import os, sys
d = sys.argv[1] + "/many"; os.mkdir(d)
for i in range(int(sys.argv[2])): os.close(os.open("%s/f%07d" % (d, i), os.O_CREAT | os.O_WRONLY, 0o644))' "$big/fill" "$entries"
    bench_release
    qemu-img convert -f raw -O qcow2 "$big/disk.raw" "$big/disk.qcow2"
    touch "$big/done"
  fi
  "$build/sendense-restore" catalog add --id bigdir --vm bigdir --format qcow2 --path "$big/disk.qcow2" --catalog "$work/bigdir.db" >/dev/null
  bench_loop_mount "$big/disk.raw" "$work/m-bigdir-kernel"
  n_kernel=$(ls -f "$work/m-bigdir-kernel/many" | wc -l)
  log "ls -f of $entries entries"
  dk=$(bench_times "ls -f '$work/m-bigdir-kernel/many'")
  # Cold for us is a fresh attach as well: the reader keeps the listings it
  # made (readers/fs/paged_listing.h) as the kernel keeps its dentries,
  # and drop_caches empties only the kernel's. Listed again with the
  # attach kept is its own row.
  first=()
  for ((i = 0; i < runs; i++)); do
    bench_start_restorefs "$build" "$work/m-bigdir" "$work/bigdir.db" --idle-timeout 100000
    bench_cold
    t0=$(date +%s.%N); n_ours=$(ls -f "$work/m-bigdir/bigdir/disk/many" | wc -l); t1=$(date +%s.%N)
    first+=("$(echo "$t1 - $t0" | bc -l)")
    [ "$n_ours" = "$n_kernel" ] || { echo "ls -f: $n_ours entries through ours, $n_kernel through the kernel" >&2; exit 1; }
    [ "$i" -lt $((runs - 1)) ] && bench_stop_restorefs "$build" "$work/m-bigdir"
  done
  do_=$(printf '%s\n' "${first[@]}" | sort -g | tr '\n' ' ')
  dr=$(bench_times "ls -f '$work/m-bigdir/bigdir/disk/many'")
  bench_stop_restorefs "$build" "$work/m-bigdir"
  {
    echo
    echo "\`ls -f\` of a folder of $((n_kernel - 2)) empty files (cold, min-max of $runs): the kernel's ext4 on the raw image, ours on its qcow2."
    echo
    echo "| reader | s | ratio to kernel (>1 = faster) |"
    echo "|---|---|---|"
    echo "| kernel | $(span_s "$dk") | 1.00 |"
    echo "| sendense, first listing after attach | $(span_s "$do_") | $(ratio "$do_" "$dk") |"
    echo "| sendense, listed again (attach kept) | $(span_s "$dr") | $(ratio "$dr" "$dk") |"
  } >>"$out"
fi

echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out"
cat "$out"
