#!/usr/bin/env bash
# Load-independent speed proxy for the point coder: instructions and
# (simulated) mispredicted branches per point, for encode (sort included) or
# decode, over the 18 clouds of the pointcode_bench example.
# Usage: bench/pointcode/cachegrind.sh enc|dec [BIN]
#   BIN defaults to target/release/examples/pointcode_bench
#   (build it with: cargo build --release -p shapecast-wire --example pointcode_bench)
#   PC_METHOD=compact measures format 3, PC_METHOD=fast format 4, instead of
#   the default format 5.
set -euo pipefail
m="$1"
BIN="${2:-target/release/examples/pointcode_bench}"
DIR="$(mktemp -d)"
run() {
    valgrind --tool=cachegrind --cache-sim=no --branch-sim=yes --cachegrind-out-file=/dev/null \
        "$BIN" "$DIR" "$m" "$1" 2>&1 >/dev/null |
        sed 's/,//g' | awk '/I +refs/{print $4} /Mispredicts/{print $3}' | tr '\n' ' '
}
a="$(run 0)"
b="$(run 4)"
python3 -c "
a=[int(x) for x in '$a'.split()]; b=[int(x) for x in '$b'.split()]
n = 18 * 4 * 2048
print('$m: instructions/point %.0f  mispredicts/point %.1f' % ((b[0]-a[0])/n, (b[1]-a[1])/n))"
rm -rf "$DIR"
