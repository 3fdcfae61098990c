#!/usr/bin/env bash
# Wall-clock A/B of two pointcode_bench builds: ROUNDS alternating runs of
# `PC_SAMPLES=100 taskset -c 1 BIN DIR` (each cloud's time is the fastest of
# 100 single calls), then per cloud the fastest over the rounds, summed over
# the 18 clouds, for both builds and their ratio (B/A).
# Usage: PC_METHOD=symbol bench/pointcode/ab.sh A_BIN B_BIN [ROUNDS] [DIR]
set -euo pipefail
A="$1"
B="$2"
R="${3:-5}"
DIR="${4:-/tmp/pointcode_ab}"
mkdir -p "$DIR"
ta="$(mktemp)"
tb="$(mktemp)"
for _ in $(seq "$R"); do
    PC_SAMPLES=100 taskset -c 1 "$A" "$DIR" | awk 'NR>1' >>"$ta"
    PC_SAMPLES=100 taskset -c 1 "$B" "$DIR" | awk 'NR>1' >>"$tb"
done
python3 - "$ta" "$tb" <<'PY'
import collections, sys
def load(f):
    m = collections.defaultdict(lambda: [1e18, 1e18])
    for l in open(f):
        s, b, n, by, e, d = l.split()
        k = (s, b)
        m[k][0] = min(m[k][0], float(e))
        m[k][1] = min(m[k][1], float(d))
    return m
a, b = load(sys.argv[1]), load(sys.argv[2])
ea, eb = sum(v[0] for v in a.values()), sum(v[0] for v in b.values())
da, db = sum(v[1] for v in a.values()), sum(v[1] for v in b.values())
print("fastest per cloud over the rounds, summed over %d clouds: A enc %.0f dec %.0f µs | B enc %.0f dec %.0f µs | B/A enc %.3f dec %.3f"
      % (len(a), ea, da, eb, db, eb / ea, db / da))
PY
rm -f "$ta" "$tb"
