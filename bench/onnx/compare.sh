#!/usr/bin/env bash
# tract vs onnxruntime, same model, same input, 1 thread each, side by side.
# usage: bench/onnx/compare.sh [MODEL.onnx ...]   (default: the representative models,
#        written by the make_bench_models example into target/bench-onnx)
# env: ITERS (default 200), THREADS (default 1: tract matmul threads = ort intra-op threads),
#      CORE (pin both to this core with taskset), INPUT (raw f32 file for input 0 of every model;
#      default MODEL-base.input.f32 when it exists, else zeros), TRACT_BENCH (tract_bench binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
ITERS="${ITERS:-200}"
THREADS="${THREADS:-1}"
DIR=target/bench-onnx
mkdir -p "$DIR"
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -q -p shapecast-onnx --example tract_bench --example make_bench_models
if [ "$#" -eq 0 ]; then
  target/release/examples/make_bench_models "$DIR" >/dev/null
  set -- "$DIR"/bench-128.onnx "$DIR"/bench-128.int8.onnx "$DIR"/bench-128.int8head.onnx "$DIR"/bench-128.qlmm.onnx "$DIR"/bench-128.qdq.onnx \
         "$DIR"/bench-64.onnx "$DIR"/bench-64.int8.onnx "$DIR"/bench-64.int8head.onnx "$DIR"/bench-64.qlmm.onnx "$DIR"/bench-64.qdq.onnx
fi
TB="${TRACT_BENCH:-target/release/examples/tract_bench}"
PIN=""; [ -z "${CORE:-}" ] || PIN="taskset -c $CORE"
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
# min_ms: fastest of ITERS runs (least disturbed on a shared machine); med: median
printf "%-26s %9s %9s %9s %9s %9s %9s %12s\n" model tract_min ort_min "ort/tract" tract_med ort_med "ort/tract" max_abs_diff
for m in "$@"; do
  base="${m%.onnx}"
  for q in int8 int8head int8convs int8pc int8k28 qlmm qdq; do base="${base%."$q"}"; done
  input="${INPUT:-$base.input.f32}"; [ -f "$input" ] || input=""
  t=$($PIN "$TB" "$m" $input --iters "$ITERS" --threads "$THREADS" --out "$DIR/out.tract.f32" 2>&1) || { echo "$m: tract failed: $t"; continue; }
  o=$(OMP_NUM_THREADS=$THREADS $PIN python3 bench/onnx/ort_bench.py "$m" $input --iters "$ITERS" --threads "$THREADS" --out "$DIR/out.ort.f32" 2>&1) || true
  # microsecond fields where the binary prints them (tract_bench and ort_bench.py since session 8;
  # an older tract_bench prints ms with 3 decimals only), shown as ms with 4 decimals
  ms() { local us; us=$(echo "$1" | field "$2"_us); if [ -n "$us" ]; then python3 -c "print('%.4f' % ($us / 1000))"; else echo "$1" | field "$2"_ms; fi; }
  tm=$(ms "$t" median); om=$(ms "$o" median)
  tn=$(ms "$t" min); on=$(ms "$o" min)
  if [ -z "$om" ]; then
    printf "%-26s %9s %9s %9s %9s %9s %9s %12s   (%s)\n" "$(basename "$m")" "$tn" - - "$tm" - - - "$(echo "$o" | tail -1 | cut -c1-80)"
    continue
  fi
  diff=$(python3 -c "import numpy as n; a=n.fromfile('$DIR/out.tract.f32','<f4'); b=n.fromfile('$DIR/out.ort.f32','<f4'); print('%.2e' % abs(a-b).max())")
  rmin=$(python3 -c "print('%.2f' % ($on/$tn))"); rmed=$(python3 -c "print('%.2f' % ($om/$tm))")
  printf "%-26s %9s %9s %9s %9s %9s %9s %12s\n" "$(basename "$m")" "$tn" "$on" "$rmin" "$tm" "$om" "$rmed" "$diff"
done
