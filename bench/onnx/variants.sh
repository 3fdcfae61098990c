#!/usr/bin/env bash
# tract-only: every quantized variant of the representative models, interleaved over ROUNDS
# rounds. The machine is shared (load 4-5 on 2 cores while measured), so the figure is the
# fastest single run over all rounds (min_ms), the least disturbed by other processes; the best
# round's median is printed beside it.
# usage: bench/onnx/variants.sh [NAME...]   (default bench-128 bench-64; env ROUNDS=5 ITERS=100)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS="${ROUNDS:-5}"; ITERS="${ITERS:-100}"; DIR=target/bench-onnx
cargo build --release -q -p shapecast-onnx --example tract_bench --example make_bench_models
target/release/examples/make_bench_models "$DIR" >/dev/null
[ "$#" -eq 0 ] && set -- bench-128 bench-64
for name in "$@"; do
  declare -A best=() bmed=()
  vars="f32 int8 int8pc int8convs int8head int8k28 qlmm qdq"
  for r in $(seq "$ROUNDS"); do
    for v in $vars; do
      f="$DIR/$name.$v.onnx"; [ "$v" = f32 ] && f="$DIR/$name.onnx"
      out=$(target/release/examples/tract_bench "$f" "$DIR/$name.input.f32" --iters "$ITERS")
      mn=$(echo "$out" | sed -n 's/.*min_ms=\([0-9.]*\).*/\1/p'); md=$(echo "$out" | sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p')
      if [ -z "${best[$v]:-}" ] || python3 -c "import sys; sys.exit(0 if $mn < ${best[$v]} else 1)"; then best[$v]=$mn; fi
      if [ -z "${bmed[$v]:-}" ] || python3 -c "import sys; sys.exit(0 if $md < ${bmed[$v]} else 1)"; then bmed[$v]=$md; fi
    done
  done
  printf "%-10s %-10s %10s %10s %14s\n" model variant min_ms "vs f32" best_median_ms
  for v in $vars; do
    printf "%-10s %-10s %10s %10s %14s\n" "$name" "$v" "${best[$v]}" "$(python3 -c "print('%.2f' % (${best[$v]}/${best[f32]}))")" "${bmed[$v]}"
  done
  unset best bmed
done
