#!/usr/bin/env bash
# Default-model check of a board binary: runs `shapecast demo` (shipped model on the shipped
# samples, through preprocessing, inference, wire coding and the UDP receiver) with the aarch64
# binary under qemu-aarch64 and with an x86 build natively, then compares the received PLY files.
# Usage: cross/check.sh [AARCH64_BINARY] [X86_BINARY]
#   defaults: target/aarch64-unknown-linux-gnu/board/shapecast, target/release/shapecast
# Points travel quantised to 12 bits per coordinate, so the outputs must agree within one wire
# step (a model output difference below 1e-4 can at most flip one rounding); in practice they
# are byte-identical.
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
"$x86" demo --out "$work/x86" --max-samples "$n" >/dev/null
QEMU_LD_PREFIX=/usr/aarch64-linux-gnu qemu-aarch64 "$arm" demo --out "$work/arm" --max-samples "$n" >/dev/null
python3 - "$work/x86" "$work/arm" "$n" <<'PY'
import pathlib, struct, sys
def load(p):
    b = p.read_bytes(); end = b.index(b"end_header\n") + len(b"end_header\n")
    head = b[:end].decode().splitlines()
    n = int(next(l.split()[2] for l in head if l.startswith("element vertex")))
    props = [l for l in head if l.startswith("property")]
    assert all(l.split()[1] == "float" for l in props), props
    k = len(props)
    return list(struct.unpack_from(f"<{n * k}f", b, end)), n
x86, arm, want = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
files = sorted(p.relative_to(x86) for p in x86.rglob("*.ply"))
assert len(files) == want, f"x86 run wrote {len(files)} PLY files, expected {want}"
worst = 0.0; same = 0
for f in files:
    a, na = load(x86 / f); b, nb = load(arm / f)
    assert na == nb, f"{f}: {na} vs {nb} points"
    if (x86 / f).read_bytes() == (arm / f).read_bytes(): same += 1
    worst = max([worst] + [abs(u - v) for u, v in zip(a, b)])
step = 2.0 / 4095  # one 12-bit step of a [-1, 1] box (the default model's bounds)
print(f"cross/check.sh: {len(files)} frames, {same} byte-identical, max abs difference {worst:.3g} (limit {step:.3g})")
sys.exit(0 if worst <= step else 1)
PY
