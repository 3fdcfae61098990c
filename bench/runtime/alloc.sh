#!/usr/bin/env bash
# Allocator comparison on `shapecast bench` (one core): glibc defaults, glibc tuned by
# environment, the built-in tuning (model::tune_malloc, mallopt at load), mimalloc.
# usage: bench/runtime/alloc.sh GLIBC_BIN MIMALLOC_BIN [MODEL] [FRAMES] [ROUNDS]
#   GLIBC_BIN: a `cargo build --release -p shapecast` binary (copy it: target/ is shared)
#   MIMALLOC_BIN: the same built with `--features mimalloc`
# Prints per run: user/sys seconds, minor page faults, peak RSS (/usr/bin/time -v) and the
# inference and frame-to-wire p50/p99 from the bench table.
set -euo pipefail
cd "$(dirname "$0")/../.."
G="$1"; M="$2"; MODEL="${3:-models/default.onnx}"; FRAMES="${4:-2000}"; ROUNDS="${5:-2}"
CPU="${CPU:-1}"
printf "%-34s %6s %6s %8s %8s %8s %8s %8s %8s\n" config user_s sys_s minflt rss_MiB inf_p50 inf_p99 f2w_p50 f2w_p99
one() {
  local name="$1" bin="$2"; shift 2
  local out
  out=$( { /usr/bin/time -v env "$@" taskset -c "$CPU" "$bin" bench "$MODEL" --frames "$FRAMES" --log warn; } 2>&1 ) || { echo "$name failed: $(echo "$out" | tail -3)"; return; }
  local user sys flt rss ip50 ip99 fp50 fp99
  user=$(echo "$out" | sed -n 's/.*User time (seconds): //p')
  sys=$(echo "$out" | sed -n 's/.*System time (seconds): //p')
  flt=$(echo "$out" | sed -n 's/.*Minor (reclaiming a frame) page faults: //p')
  rss=$(echo "$out" | sed -n 's/.*Maximum resident set size (kbytes): //p')
  read -r ip50 ip99 < <(echo "$out" | awk '$1=="inference"{print $3, $5}')
  read -r fp50 fp99 < <(echo "$out" | awk '$1=="frame-to-wire"{print $3, $5}')
  printf "%-34s %6s %6s %8s %8.1f %8s %8s %8s %8s\n" "$name" "$user" "$sys" "$flt" "$(echo "$rss/1024" | bc -l)" "$ip50" "$ip99" "$fp50" "$fp99"
}
for r in $(seq "$ROUNDS"); do
  one "glibc default" "$G" SHAPECAST_MALLOC=default
  one "glibc env ARENA1 MMAP/TRIM 128K" "$G" SHAPECAST_MALLOC=default MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072
  one "glibc env TOP_PAD 64M" "$G" SHAPECAST_MALLOC=default MALLOC_TOP_PAD_=67108864
  one "glibc env TRIM 64M MMAP 32M TOP 1M" "$G" SHAPECAST_MALLOC=default MALLOC_TRIM_THRESHOLD_=67108864 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TOP_PAD_=1048576
  one "glibc built-in mallopt (new default)" "$G"
  [ "$M" = "-" ] || one "mimalloc" "$M"
done
