//! The implicit (DeepSDF-style) decoder: its f32 ONNX form, and an int8 form that stays int8
//! between layers, both in the shapes tract 0.23.9 runs fastest (docs/int8.md, "Session 5: the
//! implicit decoder"; figures in bench/onnx/RESULTS.md, "Session 5").
//!
//! The network, for one object latent `z` and query points `xyz` (`Q` of them):
//! `h1 = relu(xyz Wx + z Wz + bx)`, `h(i+1) = relu(h(i) Wi + bi)`, `value = h Wo + bo`.
//! Contract (docs/model-contract.md): inputs `latent [1, Z]` and `xyz [Q, 3]` (f32), output
//! `value [Q]` (f32). Both forms keep it.
//!
//! * [`MlpDecoder::f32_graph`]: channels-first activations `[H, Q]` (`MatMul(W^T, h)`, the
//!   weights stored `[in, out]` behind a `Transpose` that loading folds), so tract packs each
//!   layer's input with a plain copy of contiguous rows, and the 64 -> 1 output layer padded to [`OUT_ROWS`] rows
//!   (the weights of channel `c` in row `c % OUT_ROWS`, summed by `ReduceSum`) so that tract
//!   keeps the 32x6 kernel and its cheap packing instead of the 128x1 one, whose packing of a
//!   `[64, Q]` input runs element by element.
//! * [`quantize_decoder`]: weights equalized across layers ([`MlpDecoder::equalize`]), then a
//!   `[Q, C, 1]` layout (the queries as the batch of 1x1 convolutions,
//!   no transpose), `QuantizeLinear` on `xyz` only, then `QLinearConv` per layer with int8
//!   symmetric per-tensor weights (zero point 0), an int32 bias (the first layer's is the
//!   latent product, computed per run) and the ReLU as the output zero point -128: tract fuses
//!   bias, requantization, clamp and cast into its VNNI kernel, and with the channels as the
//!   output tile's contiguous axis stores each tile row with one instruction. The 64 -> 1
//!   output layer is a `MatMulInteger` with an f32 epilogue on `Q` values, so the value is not
//!   rounded to 8 bits.

use std::collections::HashMap;

use tract_onnx::pb;

use crate::writer::{tensor_data, Attr, Dim, ElemType, GraphBuilder, TensorData};
use crate::OnnxError;

/// Rows of the padded output layer in [`MlpDecoder::f32_graph`] (tract's f32 kernel on
/// AVX-512 is 32x6).
pub const OUT_ROWS: usize = 6;

/// Weights of an implicit decoder (row-major, `[in, out]` like `x W`).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpDecoder {
    /// Latent size `Z`.
    pub latent: usize,
    /// Hidden width `H`.
    pub hidden: usize,
    /// `[3, H]`.
    pub wx: Vec<f32>,
    /// `[Z, H]`.
    pub wz: Vec<f32>,
    /// `[H]`.
    pub bx: Vec<f32>,
    /// Hidden layers: `[H, H]` weight and `[H]` bias.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// `[H]`.
    pub wo: Vec<f32>,
    /// Output bias.
    pub bo: f32,
}

fn bad(what: impl Into<String>) -> OnnxError {
    OnnxError::Shape(what.into())
}

impl MlpDecoder {
    /// Checks that every weight has the size `latent` and `hidden` imply.
    pub fn check(&self) -> Result<(), OnnxError> {
        let (z, h) = (self.latent, self.hidden);
        if h == 0 || z == 0 {
            return Err(bad("decoder with an empty latent or hidden layer"));
        }
        let sizes = [
            ("wx", self.wx.len(), 3 * h),
            ("wz", self.wz.len(), z * h),
            ("bx", self.bx.len(), h),
            ("wo", self.wo.len(), h),
        ];
        for (name, got, want) in sizes {
            if got != want {
                return Err(bad(format!("decoder {name}: {got} values, want {want}")));
            }
        }
        for (i, (w, b)) in self.layers.iter().enumerate() {
            if w.len() != h * h || b.len() != h {
                return Err(bad(format!(
                    "decoder hidden layer {i}: {} + {} values, want {} + {h}",
                    w.len(),
                    b.len(),
                    h * h
                )));
            }
        }
        Ok(())
    }

    /// Reads the weights of a decoder written by [`MlpDecoder::f32_graph`] or by the earlier
    /// `[Q, H]` form of `shapecast-train` (same initializer names: `dec.wx.weight [3, H]`,
    /// `dec.wz.weight [Z, H]`, `dec.wx.bias`, `dec.hidden{i}.weight [H, H]` / `.bias`,
    /// `dec.out.weight [H, R]` (the value is the sum of its `R` columns' products),
    /// `dec.out.bias`; biases `[H]` or `[H, 1]`).
    pub fn from_model(model: &pb::ModelProto) -> Result<Self, OnnxError> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| OnnxError::Unsupported("model has no graph".into()))?;
        let inits: HashMap<&str, &pb::TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let get = |name: &str| -> Result<(Vec<usize>, Vec<f32>), OnnxError> {
            let t = inits
                .get(name)
                .ok_or_else(|| OnnxError::Unsupported(format!("no initializer {name}")))?;
            match tensor_data(t)? {
                TensorData::F32(v) => Ok((t.dims.iter().map(|d| *d as usize).collect(), v)),
                _ => Err(OnnxError::Unsupported(format!("{name} is not f32"))),
            }
        };
        let (dx, wx) = get("dec.wx.weight")?;
        let (dz, wz) = get("dec.wz.weight")?;
        if dx.len() != 2 || dx[0] != 3 || dz.len() != 2 || dz[1] != dx[1] {
            return Err(bad(format!(
                "dec.wx.weight {dx:?} / dec.wz.weight {dz:?}: want [3, H] / [Z, H]"
            )));
        }
        let (latent, hidden) = (dz[0], dx[1]);
        let bx = match get("dec.wx.bias") {
            Ok((_, b)) => b,
            Err(_) => vec![0.0; hidden],
        };
        let mut layers = vec![];
        while let Ok((_, w)) = get(&format!("dec.hidden{}.weight", layers.len())) {
            let b = match get(&format!("dec.hidden{}.bias", layers.len())) {
                Ok((_, b)) => b,
                Err(_) => vec![0.0; hidden],
            };
            layers.push((w, b));
        }
        let (d_o, wo_r) = get("dec.out.weight")?;
        if d_o.len() != 2 || d_o[0] != hidden || d_o[1] == 0 {
            return Err(bad(format!("dec.out.weight {d_o:?}: want [{hidden}, R]")));
        }
        let wo = wo_r.chunks(d_o[1]).map(|row| row.iter().sum()).collect();
        let bo = match get("dec.out.bias") {
            Ok((_, b)) if b.len() == 1 => b[0],
            Ok((d, _)) => return Err(bad(format!("dec.out.bias {d:?}: want [1]"))),
            Err(_) => 0.0,
        };
        let d = MlpDecoder {
            latent,
            hidden,
            wx,
            wz,
            bx,
            layers,
            wo,
            bo,
        };
        d.check()?;
        Ok(d)
    }

    /// Cross-layer equalization (Nagel et al., "Data-free quantization", 2019): for each pair
    /// of consecutive layers, output channel `j` of the first is divided by `s_j` and input
    /// row `j` of the second multiplied by it, `s_j = sqrt(r1_j / r2_j)` with `r1_j`, `r2_j` the
    /// largest magnitudes of that column and that row. ReLU commutes with a positive scale,
    /// so the function is unchanged, while per-tensor int8 weight scales fit every channel
    /// better. `rounds` passes over all pairs.
    pub fn equalize(&mut self, rounds: usize) {
        let h = self.hidden;
        let col_max = |w: &[f32], j: usize| {
            w.iter()
                .skip(j)
                .step_by(h)
                .fold(0f32, |a, x| a.max(x.abs()))
        };
        for _ in 0..rounds {
            for l in 0..=self.layers.len() {
                for j in 0..h {
                    let r1 = if l == 0 {
                        col_max(&self.wx, j)
                    } else {
                        col_max(&self.layers[l - 1].0, j)
                    };
                    let r2 = if l < self.layers.len() {
                        self.layers[l].0[j * h..(j + 1) * h]
                            .iter()
                            .fold(0f32, |a, x| a.max(x.abs()))
                    } else {
                        self.wo[j].abs()
                    };
                    if !(r1 > 0.0 && r2 > 0.0) {
                        continue;
                    }
                    let s = (r1 / r2).sqrt();
                    if l == 0 {
                        for k in 0..3 {
                            self.wx[k * h + j] /= s;
                        }
                        for k in 0..self.latent {
                            self.wz[k * h + j] /= s;
                        }
                        self.bx[j] /= s;
                    } else {
                        let (w, b) = &mut self.layers[l - 1];
                        for k in 0..h {
                            w[k * h + j] /= s;
                        }
                        b[j] /= s;
                    }
                    if l < self.layers.len() {
                        for x in &mut self.layers[l].0[j * h..(j + 1) * h] {
                            *x *= s;
                        }
                    } else {
                        self.wo[j] *= s;
                    }
                }
            }
        }
    }

    /// The per-object first-layer term `z Wz + bx` (`[H]`).
    pub fn latent_term(&self, latent: &[f32]) -> Vec<f32> {
        let h = self.hidden;
        let mut out = self.bx.clone();
        for (k, zk) in latent.iter().enumerate().take(self.latent) {
            for (o, w) in out.iter_mut().zip(&self.wz[k * h..(k + 1) * h]) {
                *o += zk * w;
            }
        }
        out
    }

    /// Evaluates the decoder in f32 (reference for tests and calibration): the values, and
    /// the largest post-ReLU activation of every layer (first layer, then the hidden ones).
    pub fn eval(&self, latent: &[f32], xyz: &[[f32; 3]]) -> (Vec<f32>, Vec<f32>) {
        let h = self.hidden;
        let lt = self.latent_term(latent);
        let mut maxes = vec![0f32; 1 + self.layers.len()];
        let mut values = Vec::with_capacity(xyz.len());
        let (mut a, mut b) = (vec![0f32; h], vec![0f32; h]);
        for p in xyz {
            for (j, aj) in a.iter_mut().enumerate() {
                let s =
                    lt[j] + p[0] * self.wx[j] + p[1] * self.wx[h + j] + p[2] * self.wx[2 * h + j];
                *aj = s.max(0.0);
                maxes[0] = maxes[0].max(*aj);
            }
            for (l, (w, bias)) in self.layers.iter().enumerate() {
                b.copy_from_slice(bias);
                for (k, ak) in a.iter().enumerate() {
                    if *ak != 0.0 {
                        for (bj, wj) in b.iter_mut().zip(&w[k * h..(k + 1) * h]) {
                            *bj += ak * wj;
                        }
                    }
                }
                for bj in b.iter_mut() {
                    *bj = bj.max(0.0);
                    maxes[l + 1] = maxes[l + 1].max(*bj);
                }
                std::mem::swap(&mut a, &mut b);
            }
            values.push(self.bo + a.iter().zip(&self.wo).map(|(x, w)| x * w).sum::<f32>());
        }
        (values, maxes)
    }

    /// The f32 decoder graph (inputs `latent [1, Z]`, `xyz [q_dim, 3]`, output `value
    /// [q_dim]`), initializers named as [`MlpDecoder::from_model`] reads them.
    pub fn f32_graph(&self, name: &str, q_dim: &str) -> Result<GraphBuilder, OnnxError> {
        self.check()?;
        let (z, h) = (self.latent, self.hidden);
        let mut g = GraphBuilder::new(name);
        let latent = g.input("latent", &[Dim::Fixed(1), z.into()]);
        let xyz = g.input("xyz", &[Dim::Symbol(q_dim.into()), 3.into()]);
        // weights stay [in, out]: a Transpose of an initializer is folded at load (tract,
        // onnxruntime), the activations' transposes are of `xyz` [Q, 3] and `latent` only
        let wz = g.init_f32("dec.wz.weight", &[z, h], &self.wz)?;
        let wzt = g.transpose(&wz, &[1, 0]);
        let lt = g.transpose(&latent, &[1, 0]);
        let hz = g.matmul(&wzt, &lt); // [H, 1]
        let bx = g.init_f32("dec.wx.bias", &[h, 1], &self.bx)?;
        let hz = g.add(&hz, &bx);
        let wx = g.init_f32("dec.wx.weight", &[3, h], &self.wx)?;
        let wxt = g.transpose(&wx, &[1, 0]);
        let xt = g.transpose(&xyz, &[1, 0]); // [3, Q]
        let s = g.matmul(&wxt, &xt); // [H, Q]
        let s = g.add(&s, &hz);
        let mut x = g.relu(&s);
        for (i, (w, b)) in self.layers.iter().enumerate() {
            let w = g.init_f32(&format!("dec.hidden{i}.weight"), &[h, h], w)?;
            let wt = g.transpose(&w, &[1, 0]);
            let b = g.init_f32(&format!("dec.hidden{i}.bias"), &[h, 1], b)?;
            let y = g.matmul(&wt, &x);
            let y = g.add(&y, &b);
            x = g.relu(&y);
        }
        let mut wo = vec![0f32; h * OUT_ROWS];
        for (c, w) in self.wo.iter().enumerate() {
            wo[c * OUT_ROWS + c % OUT_ROWS] = *w;
        }
        let wo = g.init_f32("dec.out.weight", &[h, OUT_ROWS], &wo)?;
        let wot = g.transpose(&wo, &[1, 0]);
        let v = g.matmul(&wot, &x); // [R, Q]
        let axes = g.init_i64("dec.out.sum_axes", &[1], &[0])?;
        let v = g.node("ReduceSum", &[&v, &axes], &[("keepdims", Attr::Int(0))]);
        let bo = g.init_f32("dec.out.bias", &[1], &[self.bo])?;
        let v = g.add(&v, &bo);
        g.output_with_dims(&v, "value", &[Dim::Symbol(q_dim.into())])?;
        Ok(g)
    }
}

/// Passes of [`MlpDecoder::equalize`] before quantization.
pub const EQUALIZE_ROUNDS: usize = 10;

/// One calibration sample of [`quantize_decoder`]: an object latent and query points.
#[derive(Debug, Clone)]
pub struct DecoderSample {
    pub latent: Vec<f32>,
    pub xyz: Vec<[f32; 3]>,
}

/// Symmetric int8 weights with one scale: (values, scale).
fn sym_i8(w: &[f32]) -> (Vec<i8>, f32) {
    let m = w.iter().fold(0f32, |a, x| a.max(x.abs()));
    let s = if m > 0.0 { m / 127.0 } else { 1.0 };
    let q = w
        .iter()
        .map(|x| (x / s).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, s)
}

/// `[in, out]` row-major to `[out, in]`.
fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

/// Writes the int8 form of the f32 decoder `model` (module docs), calibrated on `samples`:
/// the weights are first equalized across layers ([`MlpDecoder::equalize`], exact in f32),
/// each layer's activation range is `[0, max]` over the samples, `xyz`'s scale covers the
/// largest coordinate. Inputs, output and metadata are kept; `shapecast.precision` becomes
/// `int8` and `shapecast.calibration` is set to `note` when not empty.
pub fn quantize_decoder(
    model: &pb::ModelProto,
    samples: &[DecoderSample],
    note: &str,
) -> Result<pb::ModelProto, OnnxError> {
    let mut d = MlpDecoder::from_model(model)?;
    d.equalize(EQUALIZE_ROUNDS);
    if samples.is_empty() {
        return Err(OnnxError::Unsupported(
            "decoder calibration needs at least one sample".into(),
        ));
    }
    let mut maxes = vec![0f32; 1 + d.layers.len()];
    let mut xyz_max = 0f32;
    for s in samples {
        if s.latent.len() != d.latent {
            return Err(bad(format!(
                "calibration latent of {} values, the decoder takes {}",
                s.latent.len(),
                d.latent
            )));
        }
        let (_, m) = d.eval(&s.latent, &s.xyz);
        for (a, b) in maxes.iter_mut().zip(m) {
            *a = a.max(b);
        }
        for p in &s.xyz {
            xyz_max = p.iter().fold(xyz_max, |a, x| a.max(x.abs()));
        }
    }
    let s_act: Vec<f32> = maxes
        .iter()
        .map(|m| if *m > 0.0 { m / 255.0 } else { 1.0 })
        .collect();
    let s_xyz = if xyz_max > 0.0 { xyz_max / 127.0 } else { 1.0 };
    let (z, h) = (d.latent, d.hidden);
    let graph = model.graph.as_ref().expect("checked by from_model");
    let mut g = GraphBuilder::new(&graph.name);
    g.input("latent", &[Dim::Fixed(1), z.into()]);
    g.input("xyz", &[Dim::Symbol("Q".into()), 3.into()]);
    let f = |g: &mut GraphBuilder, n: &str, v: f32| g.init_f32(n, &[], &[v]);
    let i8s = |g: &mut GraphBuilder, n: &str, v: i8| g.init(n, &[], TensorData::I8(vec![v]));
    // xyz [Q, 3] -> [Q, 3, 1] -> int8
    let x3 = g.unsqueeze("xyz", &[2]);
    let sx = f(&mut g, "q.xyz.scale", s_xyz)?;
    let zero = i8s(&mut g, "q.zero", 0)?;
    let relu_zero = i8s(&mut g, "q.relu_zero", -128)?;
    let xq = g.node("QuantizeLinear", &[&x3, &sx, &zero], &[]);
    // first layer: bias = round((z Wz + bx) / (s_xyz s_wx)) in int32, per run
    let (wxq, s_wx) = sym_i8(&transpose(&d.wx, 3, h));
    let wz = g.init_f32("dec.wz.weight", &[z, h], &d.wz)?;
    let bx = g.init_f32("dec.wx.bias", &[h], &d.bx)?;
    let hz = g.matmul("latent", &wz);
    let hz = g.add(&hz, &bx);
    let inv = f(&mut g, "q.l0.inv_bias_scale", 1.0 / (s_xyz * s_wx))?;
    let hz = g.mul(&hz, &inv);
    let hz = g.node("Round", &[&hz], &[]);
    let hz = g.reshape(&hz, &[-1]);
    let bias0 = g.node(
        "Cast",
        &[&hz],
        &[("to", Attr::Int(ElemType::I32.onnx() as i64))],
    );
    let wxq = g.init("q.l0.weight", &[h, 3, 1], TensorData::I8(wxq))?;
    let swx = f(&mut g, "q.l0.weight_scale", s_wx)?;
    let sa0 = f(&mut g, "q.l0.out_scale", s_act[0])?;
    let mut x = g.node(
        "QLinearConv",
        &[&xq, &sx, &zero, &wxq, &swx, &zero, &sa0, &relu_zero, &bias0],
        &[],
    );
    for (i, (w, b)) in d.layers.iter().enumerate() {
        let (wq, sw) = sym_i8(&transpose(w, h, h));
        let bq: Vec<i32> = b
            .iter()
            .map(|v| (v / (s_act[i] * sw)).round() as i32)
            .collect();
        let l = i + 1;
        let wq = g.init(&format!("q.l{l}.weight"), &[h, h, 1], TensorData::I8(wq))?;
        let sw = f(&mut g, &format!("q.l{l}.weight_scale"), sw)?;
        let bq = g.init(&format!("q.l{l}.bias"), &[h], TensorData::I32(bq))?;
        let sin = f(&mut g, &format!("q.l{l}.in_scale"), s_act[i])?;
        let sout = f(&mut g, &format!("q.l{l}.out_scale"), s_act[l])?;
        x = g.node(
            "QLinearConv",
            &[
                &x, &sin, &relu_zero, &wq, &sw, &zero, &sout, &relu_zero, &bq,
            ],
            &[],
        );
    }
    // output layer: [Q, H] (int8, zero point -128) x Wo [H, 1] in int32, f32 epilogue on Q
    // values; the zero point is folded into the bias: bo + 128 s sum(Wo_q)
    let s_last = s_act[d.layers.len()];
    let (woq, s_wo) = sym_i8(&d.wo);
    let wsum: i64 = woq.iter().map(|v| *v as i64).sum();
    let s = s_last * s_wo;
    let bo = d.bo + 128.0 * s * wsum as f32;
    let xs = g.squeeze(&x, &[2]);
    let woq = g.init("q.out.weight", &[h, 1], TensorData::I8(woq))?;
    let acc = g.node("MatMulInteger", &[&xs, &woq], &[]);
    let acc = g.node(
        "Cast",
        &[&acc],
        &[("to", Attr::Int(ElemType::F32.onnx() as i64))],
    );
    let so = f(&mut g, "q.out.scale", s)?;
    let bo = f(&mut g, "q.out.bias", bo)?;
    let v = g.mul(&acc, &so);
    let v = g.add(&v, &bo);
    let v = g.reshape(&v, &[-1]);
    g.output_with_dims(&v, "value", &[Dim::Symbol("Q".into())])?;
    let mut out = g.build();
    // the contract's inputs/outputs exactly as the f32 file declares them, and its metadata
    if let Some(og) = out.graph.as_mut() {
        og.input = graph.input.clone();
        og.output = graph.output.clone();
    }
    out.metadata_props = model.metadata_props.clone();
    crate::set_metadata(&mut out, "shapecast.precision", "int8");
    if !note.is_empty() {
        crate::set_metadata(&mut out, "shapecast.calibration", note);
    }
    Ok(out)
}
