#!/usr/bin/env bash
# Interleaved rounds of bench/onnx/compare.sh over several tract_bench binaries: round 1 runs
# every binary once, then round 2, ..., so that load changes on the shared machine hit all of
# them alike. A binary may carry environment settings before it, `VAR=value@BIN` (e.g.
# `TRACT_PLAN_FRESH_STATE=1@.bin/tract_bench.new`, the same binary with a knob set).
# usage: ROUNDS=3 bench/onnx/rounds.sh BIN [BIN ...] -- MODEL.onnx [...]
# env: ROUNDS (default 3), and compare.sh's (CORE, ITERS, THREADS; SKIP_BUILD is set here)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${ROUNDS:-3}"
bins=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
[ "$#" -gt 0 ] && shift
[ "${#bins[@]}" -gt 0 ] && [ "$#" -gt 0 ] || { echo "usage: $0 BIN [BIN ...] -- MODEL.onnx [...]" >&2; exit 2; }
for r in $(seq 1 "$ROUNDS"); do
  for spec in "${bins[@]}"; do
    envs=(); bin="$spec"
    if [[ "$spec" == *@* ]]; then IFS=' ' read -r -a envs <<< "${spec%@*}"; bin="${spec##*@}"; fi
    echo "== round $r: $spec ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))"
    env "${envs[@]}" SKIP_BUILD=1 TRACT_BENCH="$bin" bench/onnx/compare.sh "$@"
  done
done
