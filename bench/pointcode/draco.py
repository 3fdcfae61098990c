#!/usr/bin/env python3
"""Side-by-side comparison of the shapecast point coder with Google Draco.

Reads the quantized clouds written by the `pointcode_bench` example
(DIR/<shape>_<bits>.xyz, integer grid coordinates) and its TSV results
(DIR/ours.tsv), encodes the SAME integer clouds with DracoPy (kd-tree point
cloud coder, compression level 7, quantization_bits = bits; the integer
coordinates span 0..2^bits-1 on every axis, so Draco's quantization is lossless
on them; checked after decoding), and prints one table, with the information
bound of each cloud (bound.py: log2 C(M, N) / N for the M grid cells its
surface crosses; needs DIR/<shape>.bounds and the .ply files).

Usage: draco.py DIR
"""
import os
import sys
import time

import numpy as np
import DracoPy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bound  # noqa: E402


def timeit(f):
    f()
    t = time.perf_counter()
    f()
    one = time.perf_counter() - t
    reps = max(1, min(5000, int(0.02 / max(one, 1e-7))))
    v = []
    for _ in range(11):
        t = time.perf_counter()
        for _ in range(reps):
            f()
        v.append((time.perf_counter() - t) * 1e6 / reps)
    return min(v)


def main():
    if len(sys.argv) != 2:
        print("usage: draco.py DIR", file=sys.stderr)
        return 2
    d = sys.argv[1]
    ours = []
    with open(f"{d}/ours.tsv") as fh:
        head = fh.readline().split()
        for line in fh:
            r = dict(zip(head, line.split()))
            ours.append(r)
    print("| shape | bits | bound B/pt | ours B/pt | Draco B/pt | ratio | ours/bound | ours enc µs "
          "| ours dec µs | Draco enc µs | Draco dec µs | enc speedup | dec speedup |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for r in ours:
        bits = int(r["bits"])
        pts = np.loadtxt(f"{d}/{r['shape']}_{bits}.xyz", dtype=np.float32)
        n = len(pts)
        enc = DracoPy.encode(pts, quantization_bits=bits, compression_level=7)
        dec = DracoPy.decode(enc)
        got = np.asarray(dec.points)
        a = np.round(got).astype(np.int64)
        want = pts.astype(np.int64)
        a = a[np.lexsort(a.T[::-1])]
        want = want[np.lexsort(want.T[::-1])]
        if a.shape != want.shape or not np.array_equal(a, want):
            # Draco's quantizer re-grids over its own bounding cube; report how
            # many points moved (size is compared on the same input either way).
            moved = -1 if a.shape != want.shape else int((a != want).any(axis=1).sum())
            print(f"note: Draco output differs from input on {r['shape']} {bits}: "
                  f"{moved} of {n} points moved (-1: count changed)", file=sys.stderr)
        de = timeit(lambda: DracoPy.encode(pts, quantization_bits=bits, compression_level=7))
        dd = timeit(lambda: DracoPy.decode(enc))
        ob = int(r["bytes"]) / n
        db = len(enc) / n
        oe, od = float(r["enc_us"]), float(r["dec_us"])
        ratios.append(ob / db)
        bb = bound.bound(d, r["shape"], bits, n)[1] / 8
        print(f"| {r['shape']} | {bits} | {bb:.3f} | {ob:.3f} | {db:.3f} | {ob / db:.3f} | {ob / bb:.2f} "
              f"| {oe:.0f} | {od:.0f} | {de:.0f} | {dd:.0f} | {de / oe:.1f}x | {dd / od:.1f}x |")
    print(f"\nworst size ratio {max(ratios):.3f}, mean {sum(ratios) / len(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
