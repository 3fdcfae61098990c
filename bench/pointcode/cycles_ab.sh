#!/usr/bin/env bash
# cycles.sh for two builds side by side: CPU time per call of a base build
# (BASE=path), of a new build (BIN=path) and of Draco, cloud by cloud in the
# same run (base and new measured back to back per cloud, so that the load
# of the machine moves all three alike), as cycles.sh (ours: perf stat
# task-clock of REPS calls minus 0 calls, / REPS, sort included for encode;
# Draco: draco_loop.py), except that ours is the minimum of TRIES (default
# 3) runs. Prints one table row per cloud and the same-run speed-ups over
# Draco of both builds.
# Usage: PC_METHOD=symbol BASE=old_bin BIN=new_bin [TRIES=3] bench/pointcode/cycles_ab.sh [DIR] [REPS]
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="${1:-/tmp/pointcode_cycles}"
REPS="${2:-200}"
: "${BASE:?BASE=path of the base pointcode_bench}"
: "${BIN:?BIN=path of the new pointcode_bench}"
mkdir -p "$DIR"
"$BIN" "$DIR" enc 0 >/dev/null # writes the clouds
cyc() { perf stat -x, -e task-clock "$@" 2>&1 >/dev/null | awk -F, '/task-clock/{printf "%d\n", $1 * 1000}'; }
# Ours: the fastest of TRIES runs of REPS calls minus the fastest of TRIES
# runs of 0 calls (Draco's figure is the fastest of 5 batches too: a
# minimum on both sides, which other processes on the machine disturb
# least; cycles.sh's single run per side is a mean that they inflate).
TRIES="${TRIES:-3}"
per() { # mode runner...
    local m="$1"
    shift
    local a=999999999999 b=999999999999 x i
    for i in $(seq "$TRIES"); do
        x=$(cyc "$@" "$m" 0)
        a=$((x < a ? x : a))
        x=$(cyc "$@" "$m" "$REPS")
        b=$((x < b ? x : b))
    done
    python3 -c "print(($b - $a) / $REPS)"
}
echo "| shape | bits | base enc µs | new enc µs | Draco enc µs | base dec µs | new dec µs | Draco dec µs | enc vs Draco base | enc vs Draco new | dec vs Draco base | dec vs Draco new |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for shape in sphere box chair torus mug blob; do
    for bits in 8 10 12; do
        c="${shape}_${bits}"
        be=$(PC_ONLY=$c per enc "$BASE" "$DIR")
        ne=$(PC_ONLY=$c per enc "$BIN" "$DIR")
        de=$(python3 bench/pointcode/draco_loop.py "$DIR/$c.xyz" "$bits" enc "$REPS")
        nd=$(PC_ONLY=$c per dec "$BIN" "$DIR")
        bd=$(PC_ONLY=$c per dec "$BASE" "$DIR")
        dd=$(python3 bench/pointcode/draco_loop.py "$DIR/$c.xyz" "$bits" dec "$((REPS * 5))")
        python3 -c "print('| $shape | $bits | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.2fx | %.2fx | %.2fx | %.2fx |' % ($be, $ne, $de, $bd, $nd, $dd, $de/$be, $de/$ne, $dd/$bd, $dd/$nd))"
    done
done
