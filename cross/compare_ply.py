#!/usr/bin/env python3
"""Compares the float PLY files of two runs (x86 and aarch64) for cross/check.sh.

Usage: compare_ply.py X86_DIR ARM_DIR EXPECTED_FILES LIMIT WHAT
Exits 1 when a coordinate differs by more than LIMIT, or the files do not pair up.
"""
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
limit, what = float(sys.argv[4]), sys.argv[5]
print(f"cross/check.sh: {what}: {len(files)} frames, {same} byte-identical, max abs difference {worst:.3g} (limit {limit:.3g})")
sys.exit(0 if worst <= limit else 1)
