#!/usr/bin/env bash
# Interleaved rounds of tract alone (no onnxruntime): for each round, each model, each binary,
# `taskset -c $CORE BIN MODEL --iters N` (N = $ITERS, $DECODER_ITERS for *decoder* models),
# printing the min and median ms. For tract int8 vs tract f32 and build-vs-build comparisons
# where onnxruntime's run of a model would dominate the time (its int8 decoder: ~0.1 s a run).
# A binary may carry environment settings before it, `VAR=value@BIN` (rounds.sh's syntax), e.g.
# `TRACT_CPU_ISA=-amx-int8@.bin/tract_bench.s11` (the same build without the AMX kernels).
# usage: ROUNDS=3 bench/onnx/tract_rounds.sh BIN [BIN ...] -- MODEL.onnx [...]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${ROUNDS:-3}" CORE="${CORE:-1}" ITERS="${ITERS:-400}" DECODER_ITERS="${DECODER_ITERS:-100}"
bins=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
[ "$#" -gt 0 ] && shift
[ "${#bins[@]}" -gt 0 ] && [ "$#" -gt 0 ] || { echo "usage: $0 BIN [BIN ...] -- MODEL.onnx [...]" >&2; exit 2; }
for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))"
  for m in "$@"; do
    it=$ITERS; [[ $m == *decoder* ]] && it=$DECODER_ITERS
    for spec in "${bins[@]}"; do
      envs=(); bin="$spec"
      if [[ "$spec" == *@* ]]; then IFS=' ' read -r -a envs <<< "${spec%@*}"; bin="${spec##*@}"; fi
      out=$(env "${envs[@]}" taskset -c "$CORE" "$bin" "$m" --iters "$it")
      printf '%-32s %-48s %s %s\n' "$(basename "$m")" "$spec" \
        "$(grep -o 'min_ms=[0-9.]*' <<< "$out")" "$(grep -o 'median_ms=[0-9.]*' <<< "$out")"
    done
  done
done
