#!/usr/bin/env python3
"""Writes equivalent ONNX forms of an implicit (DeepSDF) decoder for tract/onnxruntime timing.

usage: decoder_forms.py DECODER.onnx OUTDIR
The decoder: inputs latent [1, Z], xyz [Q, 3]; output value [Q]; layers
relu(xyz Wx + latent Wz + b), relu(h Wi + bi) ..., value = h Wo + bo (decoder_graph in
crates/train/src/implicit/export.rs). Every form keeps those names and shapes (the runtime's
contract) and the same weights; check_forms() compares each with the original in onnxruntime.
Forms:
  base    the file as given
  zb      latent Wz + b computed once ([1, H]), added to xyz Wx
  gemm    Gemm(h, W, b) for the hidden layers ([Q, H] layout)
  t       transposed layout: activations [H, Q] (Q the long, contiguous dimension),
          W^T [H_out, H_in] @ h, bias [H, 1]
  conv    1x1 Conv over [1, C, Q] (Transpose + Unsqueeze), bias in the Conv
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def weights(model):
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    hidden = []
    i = 0
    while f"dec.hidden{i}.weight" in w:
        hidden.append((w[f"dec.hidden{i}.weight"], w.get(f"dec.hidden{i}.bias")))
        i += 1
    return dict(
        wx=w["dec.wx.weight"], bx=w["dec.wx.bias"], wz=w["dec.wz.weight"], hidden=hidden,
        wo=w["dec.out.weight"], bo=w.get("dec.out.bias", np.zeros(1, np.float32)),
    )


class G:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def c(self, name, a):
        a = np.ascontiguousarray(a, dtype=np.float32) if a.dtype.kind == "f" else np.ascontiguousarray(a)
        self.inits.append(numpy_helper.from_array(a, name))
        return name

    def op(self, ty, ins, **kw):
        self.n += 1
        out = f"{ty.lower()}_{self.n}"
        self.nodes.append(helper.make_node(ty, ins, [out], name=f"{ty}_{self.n}", **kw))
        return out

    def model(self, src, out):
        self.nodes[-1].output[0] = "value"
        z = src.graph.input[0].type.tensor_type.shape.dim[1].dim_value
        g = helper.make_graph(
            self.nodes, "decoder",
            [helper.make_tensor_value_info("latent", TensorProto.FLOAT, [1, z]),
             helper.make_tensor_value_info("xyz", TensorProto.FLOAT, ["Q", 3])],
            [helper.make_tensor_value_info("value", TensorProto.FLOAT, ["Q"])],
            self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        for p in src.metadata_props:
            m.metadata_props.add(key=p.key, value=p.value)
        onnx.save(m, out)


def form_zb(w, gemm=False):
    g = G()
    hz = g.op("MatMul", ["latent", g.c("wz", w["wz"])])
    hz = g.op("Add", [hz, g.c("bx", w["bx"])])
    h = g.op("Relu", [g.op("Add", [g.op("MatMul", ["xyz", g.c("wx", w["wx"])]), hz])])
    for i, (wi, bi) in enumerate(w["hidden"]):
        if gemm:
            h = g.op("Relu", [g.op("Gemm", [h, g.c(f"w{i}", wi), g.c(f"b{i}", bi)])])
        else:
            h = g.op("Relu", [g.op("Add", [g.op("MatMul", [h, g.c(f"w{i}", wi)]), g.c(f"b{i}", bi)])])
    v = g.op("Add", [g.op("MatMul", [h, g.c("wo", w["wo"])]), g.c("bo", w["bo"])])
    g.op("Reshape", [v, g.c("shape", np.array([-1], np.int64))])
    return g


def form_t(w, out_rows=1, reduce=False, split=False):
    """out_rows > 1: the 64 -> 1 output layer padded with zero rows (tract then packs its input
    for the same 32x6 kernel as the hidden layers, not for the 128x1 one), row 0 sliced out;
    reduce: the output layer as Mul + ReduceSum over the channel axis; split (with out_rows):
    row i of the padded output weight holds the output weights of channels i, i + R, ...
    (zeros elsewhere), and the value is the sum of the R rows (ReduceSum), so no row is
    unused and tract keeps the 32x6 kernel."""
    g = G()
    xt = g.op("Transpose", ["xyz"], perm=[1, 0])  # [3, Q]
    hz = g.op("MatMul", [g.c("wzt", w["wz"].T), g.op("Transpose", ["latent"], perm=[1, 0])])
    hz = g.op("Add", [hz, g.c("bx", w["bx"][:, None])])  # [H, 1]
    h = g.op("Relu", [g.op("Add", [g.op("MatMul", [g.c("wxt", w["wx"].T), xt]), hz])])
    for i, (wi, bi) in enumerate(w["hidden"]):
        h = g.op("Relu", [g.op("Add", [g.op("MatMul", [g.c(f"w{i}t", wi.T), h]), g.c(f"b{i}", bi[:, None])])])
    if reduce:
        v = g.op("ReduceSum", [g.op("Mul", [h, g.c("wo", w["wo"])]), g.c("ax", np.array([0], np.int64))], keepdims=1)
        v = g.op("Add", [v, g.c("bo", w["bo"][:, None])])
    elif split:
        wo = np.zeros((out_rows, w["wo"].shape[0]), np.float32)
        for c in range(w["wo"].shape[0]):
            wo[c % out_rows, c] = w["wo"][c, 0]
        v = g.op("MatMul", [g.c("wot", wo), h])  # [R, Q]
        v = g.op("ReduceSum", [v, g.c("ax", np.array([0], np.int64))], keepdims=1)
        v = g.op("Add", [v, g.c("bo", w["bo"][:, None])])
    elif out_rows > 1:
        wo = np.zeros((out_rows, w["wo"].shape[0]), np.float32)
        wo[0] = w["wo"][:, 0]
        v = g.op("MatMul", [g.c("wot", wo), h])  # [R, Q]
        v = g.op("Slice", [v, g.c("s0", np.array([0], np.int64)), g.c("s1", np.array([1], np.int64)),
                           g.c("sax", np.array([0], np.int64))])
        v = g.op("Add", [v, g.c("bo", w["bo"][:, None])])
    else:
        v = g.op("Add", [g.op("MatMul", [g.c("wot", w["wo"].T), h]), g.c("bo", w["bo"][:, None])])
    g.op("Reshape", [v, g.c("shape", np.array([-1], np.int64))])
    return g


def form_tg(w, rows=6):
    """The transposed layout written with Gemm (transA/transB) on the [in, out] weights, as
    decoder_graph writes it: no Transpose node, biases [H, 1], output weight [H, R] with
    column r holding the output weights of channels r, r + R, ... (ReduceSum over R)."""
    g = G()
    hz = g.op("Gemm", [g.c("dec.wz.weight", w["wz"]), "latent", g.c("dec.wx.bias", w["bx"][:, None])], transA=1, transB=1)
    h = g.op("Relu", [g.op("Gemm", [g.c("dec.wx.weight", w["wx"]), "xyz", hz], transA=1, transB=1)])
    for i, (wi, bi) in enumerate(w["hidden"]):
        h = g.op("Relu", [g.op("Gemm", [g.c(f"dec.hidden{i}.weight", wi), h, g.c(f"dec.hidden{i}.bias", bi[:, None])], transA=1)])
    wo = np.zeros((w["wo"].shape[0], rows), np.float32)
    for c in range(w["wo"].shape[0]):
        wo[c, c % rows] = w["wo"][c, 0]
    v = g.op("Gemm", [g.c("dec.out.weight", wo), h], transA=1)  # [R, Q]
    v = g.op("ReduceSum", [v, g.c("ax", np.array([0], np.int64))], keepdims=0)
    g.op("Add", [v, g.c("dec.out.bias", w["bo"])])
    return g


def form_conv(w):
    g = G()
    xt = g.op("Unsqueeze", [g.op("Transpose", ["xyz"], perm=[1, 0]), g.c("ax0", np.array([0], np.int64))])  # [1,3,Q]
    hz = g.op("MatMul", ["latent", g.c("wz", w["wz"])])
    hz = g.op("Add", [hz, g.c("bx", w["bx"])])  # [1, H]
    hz = g.op("Unsqueeze", [hz, g.c("ax2", np.array([2], np.int64))])  # [1, H, 1]
    h = g.op("Conv", [xt, g.c("wxc", w["wx"].T[:, :, None])])
    h = g.op("Relu", [g.op("Add", [h, hz])])
    for i, (wi, bi) in enumerate(w["hidden"]):
        h = g.op("Relu", [g.op("Conv", [h, g.c(f"w{i}c", wi.T[:, :, None]), g.c(f"b{i}", bi)])])
    v = g.op("Conv", [h, g.c("woc", w["wo"].T[:, :, None]), g.c("bo", w["bo"])])  # [1,1,Q]
    g.op("Reshape", [v, g.c("shape", np.array([-1], np.int64))])
    return g


def check(ref, path, q=8192):
    import onnxruntime as ort
    rng = np.random.default_rng(0)
    feed = {"latent": rng.normal(size=(1, 32)).astype(np.float32),
            "xyz": rng.uniform(-0.5, 0.5, size=(q, 3)).astype(np.float32)}
    a = ort.InferenceSession(ref, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    b = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def main():
    src_path, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    src = onnx.load(src_path)
    w = weights(src)
    forms = {"zb": form_zb(w), "gemm": form_zb(w, gemm=True), "t": form_t(w), "t6": form_t(w, 6), "t2": form_t(w, 2), "tg6": form_tg(w), "ts6": form_t(w, 6, split=True), "ts5": form_t(w, 5, split=True), "tr": form_t(w, reduce=True), "conv": form_conv(w)}
    for name, g in forms.items():
        p = os.path.join(out, f"dec-{name}.onnx")
        g.model(src, p)
        print(f"{p}: max abs diff vs {src_path} (onnxruntime) {check(src_path, p):.2e}")


if __name__ == "__main__":
    main()
