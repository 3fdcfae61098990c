#!/usr/bin/env bash
# Default-model check of a board binary, under qemu-aarch64 against an x86 build run natively:
#  1. `shapecast run` on the shipped samples with `--save-dir`: the model's points before wire
#     coding (float PLY) must agree within 1e-4 (tract's aarch64 and x86 kernels sum in
#     different orders: expect ~1e-7);
#  2. `shapecast demo` (preprocessing, inference, wire coding, the UDP receiver): the received
#     PLY files must agree within one wire step (points travel quantised to 12 bits per
#     coordinate, so a 1e-7 difference can flip one rounding); most are byte-identical.
# Usage: cross/check.sh [AARCH64_BINARY] [X86_BINARY]
#   defaults: target/aarch64-unknown-linux-gnu/board/shapecast, target/release/shapecast
set -euo pipefail
cd "$(dirname "$0")/.."
t="${CARGO_TARGET_DIR:-target}"
arm=${1:-$t/aarch64-unknown-linux-gnu/board/shapecast}
x86=${2:-$t/release/shapecast}
for b in "$arm" "$x86"; do
  [ -x "$b" ] || { echo "cross/check.sh: no binary $b (build it first)" >&2; exit 3; }
done
command -v qemu-aarch64 >/dev/null || { echo "cross/check.sh: needs qemu-aarch64 (apt-get install qemu-user)" >&2; exit 3; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
n=${SAMPLES:-4}
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
run=(--log error run --source images --path models/samples --model models/default.onnx
  --precision f32 --link udp --address 127.0.0.1:9 --max-fps 0 --loops 1 --max-frames "$n")
go() { "$@" >/dev/null 2>"$work/log" || { cat "$work/log" >&2; echo "cross/check.sh: failed: $*" >&2; exit 1; }; }
go "$x86" "${run[@]}" --save-dir "$work/raw-x86"
go qemu-aarch64 "$arm" "${run[@]}" --save-dir "$work/raw-arm"
go "$x86" demo --log error --out "$work/x86" --max-samples "$n"
go qemu-aarch64 "$arm" demo --log error --out "$work/arm" --max-samples "$n"
python3 cross/compare_ply.py "$work/raw-x86" "$work/raw-arm" "$n" 1e-4 model
python3 cross/compare_ply.py "$work/x86" "$work/arm" "$n" "$(python3 -c 'print(2.0 / 4095)')" "received over the wire"
