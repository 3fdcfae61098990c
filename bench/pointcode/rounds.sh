#!/usr/bin/env bash
# Our point coder against Draco, per cloud, robust to this VM's slow phases: ROUNDS rounds,
# each running our coder (`PC_SAMPLES=N pointcode_bench DIR`: fastest of N single calls per
# cloud) and then Draco (draco_min.py DIR N: the same statistic), both pinned to CPU CORE.
# A slow phase of the machine (other VMs, SMT sibling busy) lasts longer than one cloud's N
# calls and slows every call in it by up to ~1.8x, so the fastest call of one round is not
# enough; the fastest over all rounds, spread in time and interleaved with Draco's, is.
# Prints per cloud: the fastest of all rounds on each side and their ratio, and the range
# of the same-round ratios.
# Usage: [ROUNDS=8] [N=200] [CORE=1] [PC_METHOD=symbol] bench/pointcode/rounds.sh BIN [DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${1:?usage: rounds.sh BIN [DIR]}"
DIR="${2:-/tmp/pointcode_rounds}"
ROUNDS="${ROUNDS:-8}" N="${N:-200}" CORE="${CORE:-1}"
mkdir -p "$DIR"
"$BIN" "$DIR" enc 0 >/dev/null # writes the clouds
out=$(mktemp -d)
for r in $(seq "$ROUNDS"); do
    PC_SAMPLES="$N" taskset -c "$CORE" "$BIN" "$DIR" > "$out/ours.$r.tsv"
    taskset -c "$CORE" python3 bench/pointcode/draco_min.py "$DIR" "$N" > "$out/draco.$r.tsv"
    echo "round $r/$ROUNDS done $(date -u +%T), load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
python3 - "$out" "$ROUNDS" <<'PY'
import sys
out, rounds = sys.argv[1], int(sys.argv[2])
def load(p):
    rows = [l.rstrip("\n").split("\t") for l in open(p)]
    h = rows[0]
    return {(r[0], r[1]): dict(zip(h, r)) for r in rows[1:]}
ours = [load(f"{out}/ours.{r}.tsv") for r in range(1, rounds + 1)]
draco = [load(f"{out}/draco.{r}.tsv") for r in range(1, rounds + 1)]
print("| cloud | ours enc µs | Draco enc µs | enc speed-up | same-round range | ours dec µs | Draco dec µs | dec speed-up | same-round range |")
print("|---|---|---|---|---|---|---|---|---|")
se, sd = [], []
for k in ours[0]:
    oe = min(float(o[k]["enc_us"]) for o in ours); de = min(float(d[k]["enc_us"]) for d in draco)
    od = min(float(o[k]["dec_us"]) for o in ours); dd = min(float(d[k]["dec_us"]) for d in draco)
    re = [float(d[k]["enc_us"]) / float(o[k]["enc_us"]) for o, d in zip(ours, draco)]
    rd = [float(d[k]["dec_us"]) / float(o[k]["dec_us"]) for o, d in zip(ours, draco)]
    se.append(de / oe); sd.append(dd / od)
    print(f"| {k[0]} {k[1]} | {oe:.0f} | {de:.0f} | {de / oe:.2f}x | {min(re):.2f}-{max(re):.2f} | {od:.0f} | {dd:.0f} | {dd / od:.2f}x | {min(rd):.2f}-{max(rd):.2f} |")
print(f"\nencode speed-up over Draco: min {min(se):.2f}x, mean {sum(se) / len(se):.2f}x; decode: min {min(sd):.2f}x, mean {sum(sd) / len(sd):.2f}x")
PY
rm -rf "$out"
