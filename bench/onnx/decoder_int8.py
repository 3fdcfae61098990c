#!/usr/bin/env python3
"""int8 forms of the implicit decoder that stay int8 between layers (requantization in tract's
kernel), for timing against the f32 decoder in tract, and their accuracy.

usage: decoder_int8.py ENCODER.onnx DECODER.onnx OUTDIR
Calibration: latents of the shipped sample pictures (models/samples/*.png through the encoder,
onnxruntime) and a 24^3 lattice over the bounds; accuracy on other lattice points.
Forms (all keep latent [1, Z], xyz [Q, 3] -> value [Q]):
  q8conv  [1, C, Q] layout: QuantizeLinear(xyz^T) -> QLinearConv 1x1 (bias = the latent
          product, computed per run in int32) -> 3 x QLinearConv 1x1 (ReLU as output zero point
          -128) -> MatMulInteger for the 64 -> 1 output layer, f32 epilogue on [Q] values.
          Slow in tract: the int8 output tile is stored one byte at a time (Q contiguous).
  q8nq    the same with the queries as the Conv batch, [Q, C, 1] (no transpose): the form
          shapecast_onnx::mlp::quantize_decoder writes (which also equalizes the weights
          across layers first; this exploration script does not).
Weights: int8 symmetric, one scale per tensor, zero point 0 (requantization fusable).
"""
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(__file__))
from decoder_forms import G, weights  # noqa: E402


def latents(encoder, pictures):
    from PIL import Image
    s = ort.InferenceSession(encoder, providers=["CPUExecutionProvider"])
    out = []
    for p in pictures:
        im = np.asarray(Image.open(p).convert("RGB").resize((64, 64)), np.float32) / 255.0
        x = ((im - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)
        out.append(s.run(None, {"image": x})[0])
    return out


def f32_layers(w, z, xyz):
    """Pre-activation outputs of every layer, numpy f32."""
    pre = []
    h = xyz @ w["wx"] + (z @ w["wz"] + w["bx"])
    pre.append(h)
    h = np.maximum(h, 0)
    for wi, bi in w["hidden"]:
        h = h @ wi + bi
        pre.append(h)
        h = np.maximum(h, 0)
    v = h @ w["wo"] + w["bo"]
    return pre, v[:, 0]


def qw(a):
    s = float(np.abs(a).max()) / 127.0
    return np.clip(np.round(a / s), -127, 127).astype(np.int8), s


def form_q8conv(w, calib, pct=100.0, batch_q=False):
    """calib: list of (latent, xyz) pairs. batch_q: the queries as the Conv batch axis,
    [Q, C, 1] (no transposes; tract's output tile rows are then contiguous channels)."""
    # activation ranges after ReLU: [0, max]; zero point -128
    maxes = None
    for z, xyz in calib:
        pre, _ = f32_layers(w, z, xyz)
        m = [float(np.percentile(np.maximum(p, 0), pct)) for p in pre]
        maxes = m if maxes is None else [max(a, b) for a, b in zip(maxes, m)]
    s_act = [m / 255.0 for m in maxes]
    s_xyz = 0.5 / 127.0
    g = G()
    u8 = lambda name, v: g.c(name, np.array(v, np.int8))  # noqa: E731
    f = lambda name, v: g.c(name, np.array(v, np.float32))  # noqa: E731
    if batch_q:
        xt = g.op("Unsqueeze", ["xyz", g.c("ax2", np.array([2], np.int64))])  # [Q, 3, 1]
    else:
        xt = g.op("Unsqueeze", [g.op("Transpose", ["xyz"], perm=[1, 0]), g.c("ax0", np.array([0], np.int64))])
    xq = g.op("QuantizeLinear", [xt, f("s_xyz", s_xyz), u8("zp0", 0)])
    # first layer: bias = round((latent Wz + bx) / (s_xyz s_wx)) as int32, per run
    wxq, s_wx = qw(w["wx"].T[:, :, None])
    hz = g.op("Add", [g.op("MatMul", ["latent", g.c("wz", w["wz"])]), g.c("bx", w["bx"])])
    hz = g.op("Mul", [hz, f("inv_s1", 1.0 / (s_xyz * s_wx))])
    hz = g.op("Reshape", [g.op("Round", [hz]), g.c("shape_h", np.array([-1], np.int64))])
    bias = g.op("Cast", [hz], to=TensorProto.INT32)
    h = g.op("QLinearConv", [xq, f("s_xyz_", s_xyz), u8("zp0_", 0), g.c("wxq", wxq), f("s_wx", s_wx),
                             u8("zpwx", 0), f("s_a0", s_act[0]), u8("zpa0", -128), bias])
    prev = 0
    for i, (wi, bi) in enumerate(w["hidden"]):
        wq, s_w = qw(wi.T[:, :, None])
        bq = np.round(bi / (s_act[prev] * s_w)).astype(np.int32)
        h = g.op("QLinearConv", [h, f(f"s_in{i}", s_act[prev]), u8(f"zpi{i}", -128), g.c(f"w{i}q", wq),
                                 f(f"s_w{i}", s_w), u8(f"zpw{i}", 0), f(f"s_a{i + 1}", s_act[i + 1]),
                                 u8(f"zpa{i + 1}", -128), g.c(f"b{i}q", bq)])
        prev = i + 1
    # output layer: MatMulInteger(Wo [1, H], h [H, Q]) -> i32 [1, Q]; f32 epilogue on Q values
    if batch_q:  # [Q, H, 1] -> [Q, H] @ Wo [H, 1]
        woq, s_wo = qw(w["wo"])
        hh = g.op("Squeeze", [h, g.c("ax2s", np.array([2], np.int64))])
        acc = g.op("MatMulInteger", [hh, g.c("woq", woq)])
    else:
        woq, s_wo = qw(w["wo"].T)  # [1, H]
        hh = g.op("Squeeze", [h, g.c("ax0s", np.array([0], np.int64))])
        acc = g.op("MatMulInteger", [g.c("woq", woq), hh])
    s = s_act[prev] * s_wo
    bo = float(w["bo"][0]) - s * (-128) * float(woq.astype(np.int64).sum())
    v = g.op("Add", [g.op("Mul", [g.op("Cast", [acc], to=TensorProto.FLOAT), f("s_out", s)]), f("b_out", bo)])
    g.op("Reshape", [v, g.c("shape", np.array([-1], np.int64))])
    return g


def lattice(n, lo=-0.5, hi=0.5):
    t = np.linspace(lo, hi, n, dtype=np.float32)
    return np.stack(np.meshgrid(t, t, t, indexing="ij"), -1).reshape(-1, 3)


def main():
    enc, dec, out = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    src = onnx.load(dec)
    w = weights(src)
    pics = sorted(glob.glob(os.path.join(os.path.dirname(dec), "samples", "*.png")))
    zs = latents(enc, pics)
    calib = [(z, lattice(24)) for z in zs]
    for name, pct, bq in (("q8conv", 100.0, False), ("q8nq", 100.0, True), ("q8nq-p9999", 99.99, True)):
        g = form_q8conv(w, calib, pct, bq)
        p = os.path.join(out, f"dec-{name}.onnx")
        g.model(src, p)
        ref = ort.InferenceSession(dec, providers=["CPUExecutionProvider"])
        q = ort.InferenceSession(p, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(1)
        errs, near = [], []
        for z in zs:
            xyz = rng.uniform(-0.5, 0.5, size=(8192, 3)).astype(np.float32)
            a = ref.run(None, {"latent": z, "xyz": xyz})[0]
            b = q.run(None, {"latent": z, "xyz": xyz})[0]
            errs.append(np.abs(a - b))
            near.append(np.abs(a - b)[np.abs(a) < 0.05])
        e = np.concatenate(errs)
        n = np.concatenate(near)
        print(f"{p}: |value - f32| max {e.max():.4f} mean {e.mean():.5f}; near surface (|f32| < 0.05, {n.size}) "
              f"max {n.max():.4f} mean {n.mean():.5f}; f32 value range {a.min():.3f}..{a.max():.3f}")


if __name__ == "__main__":
    main()
