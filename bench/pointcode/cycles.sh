#!/usr/bin/env bash
# Side-by-side speed that a loaded machine barely moves: CPU time per call
# (time the process itself spends on a CPU; waiting for one does not count,
# unlike wall time; cache sharing with other processes still does a little)
# of our coder and of Draco (DracoPy, kd-tree, compression level 7, Python
# wrapper included) on every benchmark cloud. Ours: perf stat -e task-clock,
# (CPU time of a run with REPS calls - that of a run with 0 calls) / REPS;
# Draco: time.process_time() in draco_loop.py (min of 5 batches), because
# the Python start-up time varies more than the calls take. (This VM exposes
# no hardware cycle counter to perf.)
# Usage: bench/pointcode/cycles.sh [DIR] [REPS]   (PC_METHOD=compact: format 3, PC_METHOD=symbol: format 5;
#   BIN=path: a prebuilt pointcode_bench instead of building it)
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="${1:-/tmp/pointcode_cycles}"
REPS="${2:-200}"
if [ -z "${BIN:-}" ]; then
    BIN=target/release/examples/pointcode_bench
    cargo build --release -q -p shapecast-wire --example pointcode_bench
fi
mkdir -p "$DIR"
"$BIN" "$DIR" enc 0 >/dev/null # writes the clouds
cyc() { perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | awk -F, '/task-clock/{printf "%d\n", $1 * 1000}'; }
echo "| shape | bits | ours enc µs | ours dec µs | Draco enc µs | Draco dec µs | enc speedup | dec speedup |"
echo "|---|---|---|---|---|---|---|---|"
for shape in sphere box chair torus mug blob; do
    for bits in 8 10 12; do
        c="${shape}_${bits}"
        per() { # mode runner...
            local m="$1"
            shift
            local a b
            a=$(cyc "$@" "$m" 0)
            b=$(cyc "$@" "$m" "$REPS")
            python3 -c "print(($b - $a) / $REPS)"
        }
        oe=$(PC_ONLY=$c per enc "$BIN" "$DIR")
        od=$(PC_ONLY=$c per dec "$BIN" "$DIR")
        de=$(python3 bench/pointcode/draco_loop.py "$DIR/$c.xyz" "$bits" enc "$REPS")
        dd=$(python3 bench/pointcode/draco_loop.py "$DIR/$c.xyz" "$bits" dec "$((REPS * 5))")
        python3 -c "print('| $shape | $bits | %.0f | %.0f | %.0f | %.0f | %.2fx | %.2fx |' % ($oe, $od, $de, $dd, $de/$oe, $dd/$od))"
    done
done
