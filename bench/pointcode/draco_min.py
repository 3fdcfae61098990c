#!/usr/bin/env python3
"""Fastest single call of DracoPy (kd-tree, compression level 7, Python wrapper included)
on every benchmark cloud, the counterpart of `PC_SAMPLES=N pointcode_bench DIR` (our coder's
fastest of N single calls): N calls of encode, then N of decode, each timed alone with
`time.perf_counter()`, the minimum kept (bench/pointcode/rounds.sh).

Usage: draco_min.py DIR N  -> TSV `shape bits bytes enc_us dec_us` on stdout
"""
import sys
import time

import numpy as np
import DracoPy

SHAPES = ["sphere", "box", "chair", "torus", "mug", "blob"]


def fastest(f, n):
    best = float("inf")
    for _ in range(n):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    d, n = sys.argv[1], int(sys.argv[2])
    print("shape\tbits\tbytes\tenc_us\tdec_us")
    for s in SHAPES:
        for b in (8, 10, 12):
            pts = np.loadtxt(f"{d}/{s}_{b}.xyz", dtype=np.float32)
            enc = DracoPy.encode(pts, quantization_bits=b, compression_level=7)
            te = fastest(lambda: DracoPy.encode(pts, quantization_bits=b, compression_level=7), n)
            td = fastest(lambda: DracoPy.decode(enc), n)
            print(f"{s}\t{b}\t{len(enc)}\t{te * 1e6:.1f}\t{td * 1e6:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
