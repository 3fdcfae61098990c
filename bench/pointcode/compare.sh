#!/usr/bin/env bash
# Point coder vs Google Draco (DracoPy, kd-tree, compression level 7), same
# quantized clouds, same run, with the information bound of each cloud
# (bound.py). Usage: bench/pointcode/compare.sh [DIR]
# Our coder is the default (symbol, format 5, since session 8); PC_METHOD=fast
# selects format 4, PC_METHOD=compact format 3 (read by the pointcode_bench example).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="${1:-/tmp/pointcode_bench}"
mkdir -p "$DIR"
cargo run --release -q -p shapecast-wire --example pointcode_bench -- "$DIR" > "$DIR/ours.tsv"
python3 bench/pointcode/draco.py "$DIR"
