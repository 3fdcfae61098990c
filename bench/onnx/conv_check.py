#!/usr/bin/env python3
"""Random f32 Conv (+Relu) models through two tract_bench binaries (and onnxruntime): checks the
session-8 im2col patches of the vendored tract-core (third_party/tract-core/PATCHES.md).

usage: conv_check.py TRACT_BENCH_OLD TRACT_BENCH_NEW [--cases N] [--seed S] [--dir DIR]
Each case is a Conv with random channels, kernel (1..9 per axis), strides, dilations, padding,
group and input size, 1 batch, random weights and input (so tract takes both its lazy and its
eager im2col, several panel widths and the kernels' border tiles). Prints one line per case;
exit status 1 if NEW's output is not bit-identical to OLD's or differs from onnxruntime by more
than 1e-4 relative to the output's largest magnitude.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def case(rng, i):
    group = int(rng.choice([1, 1, 1, 2]))
    cin = group * int(rng.integers(1, 6))
    cout = group * int(rng.integers(1, 40))
    kh, kw = int(rng.integers(1, 10)), int(rng.integers(1, 10))
    sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    if rng.random() < 0.3:  # patchify (stride = kernel), as the shipped stems
        sh, sw = kh, kw
    dh, dw = (1, 1) if rng.random() < 0.8 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    pads = [0, 0, 0, 0] if rng.random() < 0.6 else [int(x) for x in rng.integers(0, 3, 4)]
    h = int(rng.integers((kh - 1) * dh + 1, 40))
    w = int(rng.integers((kw - 1) * dw + 1, 40))
    x = rng.standard_normal((1, cin, h, w)).astype(np.float32)
    wt = rng.standard_normal((cout, cin // group, kh, kw)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[sh, sw], dilations=[dh, dw],
                              pads=pads, group=group)]
    out = "c"
    if rng.random() < 0.5:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
        out = "y"
    g = helper.make_graph(nodes, f"conv{i}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    desc = f"x{list(x.shape)} w{list(wt.shape)} s{[sh, sw]} d{[dh, dw]} p{pads} g{group}"
    return m, x, desc


def tract(binary, model, inp, out):
    subprocess.run([binary, model, inp, "--iters", "1", "--out", out], check=True,
                   stdout=subprocess.DEVNULL)
    return np.fromfile(out, "<f4")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--dir", default="target/bench-onnx/conv_check")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    fails = 0
    for i in range(a.cases):
        m, x, desc = case(rng, i)
        path, inp = os.path.join(a.dir, "case.onnx"), os.path.join(a.dir, "case.input.f32")
        onnx.save(m, path)
        x.astype("<f4").tofile(inp)
        old = tract(a.old, path, inp, os.path.join(a.dir, "old.f32"))
        new = tract(a.new, path, inp, os.path.join(a.dir, "new.f32"))
        ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0].ravel()
        same = old.tobytes() == new.tobytes()
        scale = max(float(np.abs(ref).max()), 1e-6)
        err = float(np.abs(new - ref).max()) / scale if new.size == ref.size else float("inf")
        ok = same and err < 1e-4
        fails += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {i:3d} {desc}: {'bit-identical' if same else 'DIFFERENT'} to old, "
              f"max |new - ort| / max |ort| = {err:.1e}")
    print(f"{a.cases - fails} of {a.cases} cases ok")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
