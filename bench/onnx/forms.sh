#!/usr/bin/env bash
# Model forms side by side: tract f32, tract int8 (Form::Tract), tract int8convs, onnxruntime f32,
# pinned to one core, 1 thread, ROUNDS interleaved rounds of ITERS runs.
# usage: bench/onnx/forms.sh DIR FORM...   (files DIR/FORM.onnx, DIR/FORM.int8.onnx, ...,
#        written by the make_form_models example)   env: ITERS (300), ROUNDS (2), CORE (1),
#        TRACT_BENCH (default target/release/examples/tract_bench)
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="$1"; shift
ITERS="${ITERS:-300}"; ROUNDS="${ROUNDS:-2}"; CORE="${CORE:-1}"
TB="${TRACT_BENCH:-target/release/examples/tract_bench}"
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
printf "%-22s %5s %s %s\n" form round "tract: f32 ${VARIANTS:-int8 int8convs}; ort_f32 (min / median ms)" "load"
for r in $(seq 1 "$ROUNDS"); do
  for f in "$@"; do
    in="$DIR/$f.input.f32"; [ -f "$in" ] || in=""
    row=""
    for v in f32 ${VARIANTS:-int8 int8convs}; do m="$DIR/$f.$v.onnx"; [ "$v" = f32 ] && m="$DIR/$f.onnx"
      if [ -f "$m" ]; then
        t=$(taskset -c "$CORE" "$TB" "$m" $in --iters "$ITERS" 2>&1)
        row="$row $(echo "$t" | field min_ms)/$(echo "$t" | field median_ms)"
      else row="$row -"; fi
    done
    o=$(OMP_NUM_THREADS=1 taskset -c "$CORE" python3 bench/onnx/ort_bench.py "$DIR/$f.onnx" $in --iters "$ITERS" 2>&1)
    row="$row $(echo "$o" | field min_ms)/$(echo "$o" | field median_ms)"
    printf "%-22s %5s %s   %s\n" "$f" "$r" "$row" "$(cut -d' ' -f1 /proc/loadavg)"
  done
done
