#!/usr/bin/env python3
"""Times one ONNX model in onnxruntime (CPU, --threads intra-op and 1 inter-op thread, batch 1).

usage: ort_bench.py MODEL [INPUT.f32] [--iters N] [--threads N] [--out OUT.f32]
Prints: ort MODEL load_ms=.. median_ms=.. mean_ms=.. min_ms=..  (same format as tract_bench)
"""
import argparse
import sys
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("input", nargs="?")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--out")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # report and fail with a clear code
        print(f"ort {a.model} LOAD FAILED: {str(e).splitlines()[0]}", flush=True)
        return 2
    load_ms = (time.perf_counter() - t0) * 1e3
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    if a.input:
        x = np.fromfile(a.input, dtype="<f4").reshape(shape)
    else:
        x = np.zeros(shape, dtype=np.float32)
    feed = {inp.name: x}
    for _ in range(min(10, a.iters)):
        out = sess.run(None, feed)
    times = []
    for _ in range(a.iters):
        t = time.perf_counter()
        out = sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    print(
        f"ort {a.model} load_ms={load_ms:.1f} median_ms={times[len(times)//2]:.3f} "
        f"mean_ms={sum(times)/len(times):.3f} min_ms={times[0]:.3f} iters={a.iters}",
        flush=True,
    )
    if a.out:
        np.asarray(out[0], dtype="<f4").tofile(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
