#!/usr/bin/env python3
"""CPU time per call of DracoPy (kd-tree, compression level 7, Python wrapper
included) on one quantized cloud: the minimum over 5 batches of REPS / 5
calls of `time.process_time()` per call, printed in µs
(bench/pointcode/cycles.sh). CPU time excludes time spent waiting for a CPU.

Usage: draco_loop.py FILE.xyz BITS enc|dec REPS
"""
import sys
import time

import numpy as np
import DracoPy


def main():
    path, bits, mode, reps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    pts = np.loadtxt(path, dtype=np.float32)
    enc = DracoPy.encode(pts, quantization_bits=bits, compression_level=7)
    if mode == "enc":
        def f():
            DracoPy.encode(pts, quantization_bits=bits, compression_level=7)
    else:
        def f():
            DracoPy.decode(enc)
    f()
    batch = max(1, reps // 5)
    best = float("inf")
    for _ in range(5):
        t = time.process_time()
        for _ in range(batch):
            f()
        best = min(best, (time.process_time() - t) / batch)
    print(f"{best * 1e6:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
