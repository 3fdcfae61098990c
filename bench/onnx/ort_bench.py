#!/usr/bin/env python3
"""Times one ONNX model in onnxruntime (CPU, --threads intra-op and 1 inter-op thread, batch 1).

usage: ort_bench.py MODEL [INPUT.f32] [--iters N] [--threads N] [--sym N] [--out OUT.f32]
Prints: ort MODEL load_ms=.. median_ms=.. mean_ms=.. min_ms=.. iters=.. min_us=.. median_us=..
(same format as tract_bench)
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
    ap.add_argument("--sym", type=int, default=8192)
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
    # input 0: INPUT.f32 or zeros; further inputs: the fixed pattern tract_bench uses;
    # a symbolic dimension takes --sym (batch-like leading "N"/"batch" dims of input 0: 1)
    feed = {}
    for ix, inp in enumerate(sess.get_inputs()):
        shape = [d if isinstance(d, int) else (1 if ix == 0 else a.sym) for d in inp.shape]
        n = int(np.prod(shape))
        if ix == 0 and a.input:
            x = np.fromfile(a.input, dtype="<f4").reshape(shape)
        elif ix == 0:
            x = np.zeros(shape, dtype=np.float32)
        else:
            x = (((np.arange(n) * 7919) % 1000) / 1000.0 - 0.5).astype(np.float32).reshape(shape)
        feed[inp.name] = x
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
        f"mean_ms={sum(times)/len(times):.3f} min_ms={times[0]:.3f} iters={a.iters} "
        f"min_us={times[0] * 1e3:.2f} median_us={times[len(times)//2] * 1e3:.2f}",
        flush=True,
    )
    if a.out:
        np.asarray(out[0], dtype="<f4").tofile(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
