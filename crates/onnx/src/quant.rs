//! int8 post-training quantization of f32 ONNX models (see docs/int8.md for why this form).
//!
//! [`calibrate`] runs the f32 model with tract on sample inputs and records the range of every
//! intermediate f32 tensor; [`quantize`] rewrites `Conv`, `Gemm` and `MatMul` nodes whose
//! weights are initializers:
//!
//! * [`Form::Tract`] (default, fastest in tract 0.23.9):
//!   - `Conv` -> `QLinearConv` with int8 activations (asymmetric, zero point from the calibrated
//!     range; a following `Relu` is fused into the output range), symmetric per-channel int8
//!     weights (zero point 0, so tract never sums activations per run) and an int32 bias;
//!     consecutive convolutions stay in int8.
//!   - `Gemm`/`MatMul` -> `MatMulInteger` on int8 activations and symmetric per-column int8
//!     weights declared *without* zero points, followed by an f32 epilogue
//!     (`Cast`, `Mul` by the combined scale, `Add` of a bias that absorbs the activation zero
//!     point: `b' = b - s_x s_w z_x colsum(Wq)`). tract therefore has no zero-point
//!     correction to compute at run time, whatever the layer size.
//! * [`Form::QLinearMatMul`]: as `Tract` but linear layers use the standard `QLinearMatMul`
//!   (asymmetric activations) + `DequantizeLinear` + `Add`: tract recomputes a weight
//!   reduction every run when a weight matrix exceeds 1 Mi elements (kept for measurements).
//! * [`Form::Qdq`]: `QuantizeLinear`/`DequantizeLinear` pairs around f32 ops (the form
//!   onnxruntime's `quantize_static` writes by default); tract computes it in float.
//!
//! Inputs, outputs, names and metadata are kept; `shapecast.precision` becomes `int8`.

use std::collections::{HashMap, HashSet};

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::run::F32Tensor;
use crate::writer::{attribute, tensor_data, tensor_proto, Attr, TensorData};
use crate::OnnxError;

/// Calibrated value range of every f32 tensor (by tensor name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranges {
    pub ranges: HashMap<String, (f32, f32)>,
}

impl Ranges {
    /// The `(min, max)` of a tensor.
    pub fn get(&self, name: &str) -> Option<(f32, f32)> {
        self.ranges.get(name).copied()
    }

    fn widen(&mut self, name: &str, lo: f32, hi: f32) {
        let e = self.ranges.entry(name.to_string()).or_insert((lo, hi));
        e.0 = e.0.min(lo);
        e.1 = e.1.max(hi);
    }
}

/// Runs the f32 `model` with tract on every sample (inputs in graph input order) and records the
/// min/max of every f32 tensor produced by a node, and of every graph input.
pub fn calibrate(model: &pb::ModelProto, samples: &[Vec<F32Tensor>]) -> Result<Ranges, OnnxError> {
    let mut probe = model.clone();
    let graph = probe
        .graph
        .as_mut()
        .ok_or_else(|| OnnxError::Unsupported("model has no graph".into()))?;
    let declared: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    for node in &graph.node {
        for o in &node.output {
            if !o.is_empty() && !declared.contains(o) {
                names.push(o.clone());
                graph
                    .output
                    .push(crate::value_info(o, crate::ElemType::F32, None));
            }
        }
    }
    let input_names: Vec<String> = graph
        .input
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !graph.initializer.iter().any(|t| &t.name == n))
        .collect();
    let inference = tract_onnx::onnx()
        .with_ignore_output_types(true)
        .with_ignore_output_shapes(true)
        .model_for_proto_model(&probe)?;
    let plan = inference
        .into_typed()?
        .into_decluttered()?
        .into_runnable()?;
    let mut ranges = Ranges::default();
    for sample in samples {
        if sample.len() != input_names.len() {
            return Err(OnnxError::Shape(format!(
                "{} inputs given, model has {}",
                sample.len(),
                input_names.len()
            )));
        }
        let inputs = sample
            .iter()
            .map(|t| Ok(Tensor::from_shape(&t.shape, &t.data)?.into_tvalue()))
            .collect::<Result<TVec<_>, OnnxError>>()?;
        for (name, t) in input_names.iter().zip(sample) {
            let (lo, hi) = min_max(&t.data);
            ranges.widen(name, lo, hi);
        }
        let outputs = plan.run(inputs)?;
        for (name, v) in names.iter().zip(outputs.iter()) {
            if v.datum_type() != f32::datum_type() {
                continue;
            }
            let s = v.try_as_plain_ram()?.as_slice::<f32>()?;
            let (lo, hi) = min_max(s);
            ranges.widen(name, lo, hi);
        }
    }
    Ok(ranges)
}

fn min_max(xs: &[f32]) -> (f32, f32) {
    xs.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), x| {
            (a.min(*x), b.max(*x))
        })
}

/// Which quantized graph form [`quantize`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `QLinearConv` + `MatMulInteger` with folded zero points (fastest in tract).
    Tract,
    /// `QLinearConv` + standard `QLinearMatMul` for linear layers (for comparison).
    QLinearMatMul,
    /// `QuantizeLinear`/`DequantizeLinear` around f32 ops (onnxruntime's default form).
    Qdq,
}

/// Quantization settings.
#[derive(Debug, Clone)]
pub struct QuantOptions {
    /// Graph form.
    pub form: Form,
    /// Per-output-channel scales for convolution weights. Off by default: with one scale per
    /// tensor tract fuses the whole requantization (scale, zero point, clamp, cast) into the
    /// int8 matmul kernel; per-channel scales leave five element-wise passes per layer.
    pub conv_per_channel: bool,
    /// Quantize convolutions.
    pub convs: bool,
    /// Quantize linear layers (`Gemm`, `MatMul`). At batch 1 tract's int8 matrix-vector product
    /// runs on a 16x16 (x86 VNNI) or 8x8 tile, so it is not faster than f32's matrix-vector
    /// kernel; it is 4x smaller in memory.
    pub linears: bool,
    /// Per-output-column scales for linear-layer weights (the f32 epilogue makes them free).
    pub linear_per_channel: bool,
    /// Layers whose reduction length (in_channels / group * kh * kw, or K) is below this stay
    /// f32 (int8 kernels gain nothing on an RGB first convolution with K = 27).
    pub min_reduction: usize,
    /// Node names (or output tensor names) that stay f32.
    pub exclude: Vec<String>,
    /// Value written to `shapecast.calibration` (empty: key left as is).
    pub calibration_note: String,
}

impl Default for QuantOptions {
    fn default() -> Self {
        QuantOptions {
            form: Form::Tract,
            conv_per_channel: false,
            convs: true,
            linears: true,
            linear_per_channel: true,
            min_reduction: 0,
            exclude: vec![],
            calibration_note: String::new(),
        }
    }
}

/// Activation quantization parameters (int8, asymmetric).
#[derive(Debug, Clone, Copy, PartialEq)]
struct QParams {
    scale: f32,
    zero: i8,
}

impl QParams {
    /// Asymmetric int8 parameters covering `[lo, hi]` (range always includes 0, so that a
    /// padded zero is exact).
    fn asymmetric(lo: f32, hi: f32) -> Self {
        let lo = lo.min(0.0);
        let hi = hi.max(0.0);
        let span = (hi - lo).max(1e-8);
        let scale = span / 255.0;
        let zero = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i8;
        QParams { scale, zero }
    }
}

/// Symmetric int8 weights: returns (quantized values, scales). `axis_len` channels along
/// `axis` of `dims`.
fn quantize_weights(
    w: &[f32],
    dims: &[usize],
    axis: usize,
    per_channel: bool,
) -> (Vec<i8>, Vec<f32>) {
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let ch_of = |i: usize| (i / inner) % channels;
    let mut maxabs = vec![0f32; if per_channel { channels } else { 1 }];
    for (i, x) in w.iter().enumerate() {
        let c = if per_channel { ch_of(i) } else { 0 };
        maxabs[c] = maxabs[c].max(x.abs());
    }
    let scales: Vec<f32> = maxabs
        .iter()
        .map(|m| if *m > 0.0 { m / 127.0 } else { 1.0 })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let s = scales[if per_channel { ch_of(i) } else { 0 }];
            (x / s).round().clamp(-127.0, 127.0) as i8
        })
        .collect();
    (q, scales)
}

struct Rewriter<'a> {
    ranges: &'a Ranges,
    options: &'a QuantOptions,
    inits: HashMap<String, pb::TensorProto>,
    new_inits: Vec<pb::TensorProto>,
    nodes: Vec<pb::NodeProto>,
    /// f32 tensor name -> (int8 tensor name, params) already available.
    quantized: HashMap<String, (String, QParams)>,
    counter: usize,
}

impl Rewriter<'_> {
    fn fresh(&mut self, base: &str, what: &str) -> String {
        self.counter += 1;
        format!("{base}/{what}{}", self.counter)
    }

    fn add_init(
        &mut self,
        name: String,
        dims: &[usize],
        data: TensorData,
    ) -> Result<String, OnnxError> {
        self.new_inits.push(tensor_proto(&name, dims, &data)?);
        Ok(name)
    }

    fn scalar_f32(&mut self, base: &str, what: &str, v: f32) -> Result<String, OnnxError> {
        let n = self.fresh(base, what);
        self.add_init(n, &[], TensorData::F32(vec![v]))
    }

    fn scalar_i8(&mut self, base: &str, what: &str, v: i8) -> Result<String, OnnxError> {
        let n = self.fresh(base, what);
        self.add_init(n, &[], TensorData::I8(vec![v]))
    }

    fn push(
        &mut self,
        op: &str,
        name: String,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[(&str, Attr)],
    ) {
        self.nodes.push(pb::NodeProto {
            name,
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.iter().map(|(n, v)| attribute(n, v)).collect(),
            ..Default::default()
        });
    }

    fn range(&self, tensor: &str) -> Result<(f32, f32), OnnxError> {
        self.ranges.get(tensor).ok_or_else(|| {
            OnnxError::Unsupported(format!("no calibrated range for tensor {tensor}"))
        })
    }

    /// An int8 version of f32 tensor `x` (reusing one already made).
    fn quantized_input(&mut self, x: &str) -> Result<(String, QParams), OnnxError> {
        if let Some(q) = self.quantized.get(x) {
            return Ok(q.clone());
        }
        let (lo, hi) = self.range(x)?;
        let p = QParams::asymmetric(lo, hi);
        let s = self.scalar_f32(x, "scale", p.scale)?;
        let z = self.scalar_i8(x, "zero", p.zero)?;
        let out = self.fresh(x, "q");
        self.push(
            "QuantizeLinear",
            format!("{out}/node"),
            &[x, &s, &z],
            &[&out],
            &[],
        );
        self.quantized.insert(x.to_string(), (out.clone(), p));
        Ok((out, p))
    }

    fn weight(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), OnnxError> {
        let t = self.inits.get(name).ok_or_else(|| {
            OnnxError::Unsupported(format!("weight {name} is not an initializer"))
        })?;
        let dims = t.dims.iter().map(|d| *d as usize).collect();
        match tensor_data(t)? {
            TensorData::F32(v) => Ok((dims, v)),
            _ => Err(OnnxError::Unsupported(format!("weight {name} is not f32"))),
        }
    }
}

fn attr_i(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.i)
        .unwrap_or(default)
}

fn attr_f(node: &pb::NodeProto, name: &str, default: f32) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.f)
        .unwrap_or(default)
}

/// Quantizes `model` to int8 in the chosen [`Form`], with activation ranges from [`calibrate`].
pub fn quantize(
    model: &pb::ModelProto,
    ranges: &Ranges,
    options: &QuantOptions,
) -> Result<pb::ModelProto, OnnxError> {
    let mut out = model.clone();
    let graph = out
        .graph
        .as_mut()
        .ok_or_else(|| OnnxError::Unsupported("model has no graph".into()))?;
    let inits: HashMap<String, pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.clone(), t.clone()))
        .collect();
    let graph_outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
    for (ix, n) in graph.node.iter().enumerate() {
        for i in &n.input {
            consumers.entry(i.clone()).or_default().push(ix);
        }
    }
    let old_nodes = std::mem::take(&mut graph.node);
    let mut rw = Rewriter {
        ranges,
        options,
        inits,
        new_inits: vec![],
        nodes: vec![],
        quantized: HashMap::new(),
        counter: 0,
    };
    let mut skip: HashSet<usize> = HashSet::new();
    for (ix, node) in old_nodes.iter().enumerate() {
        if skip.contains(&ix) {
            continue;
        }
        let excluded = options
            .exclude
            .iter()
            .any(|e| *e == node.name || node.output.iter().any(|o| o == e));
        let weight_is_init = node.input.get(1).is_some_and(|w| rw.inits.contains_key(w));
        let handled = match node.op_type.as_str() {
            "Conv" if options.convs && !excluded && weight_is_init => {
                // fuse a sole-consumer Relu into the output range
                let y = &node.output[0];
                let relu = match consumers.get(y).map(|c| c.as_slice()) {
                    Some([r]) if old_nodes[*r].op_type == "Relu" && !graph_outputs.contains(y) => {
                        Some(*r)
                    }
                    _ => None,
                };
                let done = match options.form {
                    Form::Qdq => qdq_op(&mut rw, node, 0)?,
                    _ => {
                        let y_meaning = relu
                            .map(|r| old_nodes[r].output[0].clone())
                            .unwrap_or_else(|| y.clone());
                        qlinear_conv(&mut rw, node, &y_meaning)?
                    }
                };
                if done && options.form != Form::Qdq {
                    if let Some(r) = relu {
                        skip.insert(r);
                    }
                }
                done
            }
            "Gemm" | "MatMul" if options.linears && !excluded && weight_is_init => {
                match options.form {
                    Form::Qdq => {
                        let axis = if attr_i(node, "transB", 0) == 1 { 0 } else { 1 };
                        qdq_op(&mut rw, node, axis)?
                    }
                    _ => linear(&mut rw, node)?,
                }
            }
            _ => false,
        };
        if !handled {
            rw.nodes.push(node.clone());
        }
    }
    graph.node = std::mem::take(&mut rw.nodes);
    graph.initializer.extend(rw.new_inits);
    prune(graph);
    crate::set_metadata(&mut out, "shapecast.precision", "int8");
    if !options.calibration_note.is_empty() {
        crate::set_metadata(&mut out, "shapecast.calibration", &options.calibration_note);
    }
    Ok(out)
}

/// Removes nodes whose outputs nobody uses, then unused initializers.
fn prune(graph: &mut pb::GraphProto) {
    loop {
        let mut used: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        for n in &graph.node {
            used.extend(n.input.iter().map(|s| s.as_str()));
        }
        let before = graph.node.len();
        let keep: Vec<bool> = graph
            .node
            .iter()
            .map(|n| n.output.iter().any(|o| used.contains(o.as_str())))
            .collect();
        let mut k = keep.iter();
        graph.node.retain(|_| *k.next().unwrap_or(&true));
        if graph.node.len() == before {
            break;
        }
    }
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .collect();
    graph.initializer.retain(|t| used.contains(&t.name));
}

/// Reduction length of a Conv weight `[O, I/g, kh, kw]`.
fn reduction(dims: &[usize]) -> usize {
    dims[1..].iter().product()
}

fn qlinear_conv(
    rw: &mut Rewriter<'_>,
    node: &pb::NodeProto,
    y_meaning: &str,
) -> Result<bool, OnnxError> {
    let (dims, w) = rw.weight(&node.input[1])?;
    if dims.len() != 4 || reduction(&dims) < rw.options.min_reduction {
        return Ok(false);
    }
    let base = node_base(node);
    let x = node.input[0].clone();
    let (xq, xp) = rw.quantized_input(&x)?;
    let (wq, ws) = quantize_weights(&w, &dims, 0, rw.options.conv_per_channel);
    let channels = dims[0];
    let ws_full: Vec<f32> = if ws.len() == 1 {
        vec![ws[0]; channels]
    } else {
        ws.clone()
    };
    let bias_q: Vec<i32> = match node.input.get(2).filter(|b| !b.is_empty()) {
        Some(b) => {
            let (_, bias) = rw.weight(b)?;
            bias.iter()
                .zip(&ws_full)
                .map(|(b, s)| {
                    (b / (xp.scale * s))
                        .round()
                        .clamp(i32::MIN as f32, i32::MAX as f32) as i32
                })
                .collect()
        }
        None => vec![0; channels],
    };
    let (lo, hi) = rw.range(y_meaning)?;
    let yp = QParams::asymmetric(lo, hi);
    let w_name = {
        let nm = rw.fresh(&base, "wq");
        rw.add_init(nm, &dims, TensorData::I8(wq))?
    };
    let wdims: &[usize] = if ws.len() == 1 { &[] } else { &[channels] };
    let ws_name = {
        let nm = rw.fresh(&base, "ws");
        rw.add_init(nm, wdims, TensorData::F32(ws.clone()))?
    };
    // scalar zero point even with per-channel scales: tract only drops the per-run
    // activation-sum correction when the weight zero point is a uniform *scalar*
    let wz_name = {
        let nm = rw.fresh(&base, "wz");
        rw.add_init(nm, &[], TensorData::I8(vec![0]))?
    };
    let b_name = {
        let nm = rw.fresh(&base, "bq");
        rw.add_init(nm, &[channels], TensorData::I32(bias_q))?
    };
    let xs = rw.scalar_f32(&base, "xs", xp.scale)?;
    let xz = rw.scalar_i8(&base, "xz", xp.zero)?;
    let ys = rw.scalar_f32(&base, "ys", yp.scale)?;
    let yz = rw.scalar_i8(&base, "yz", yp.zero)?;
    let yq = rw.fresh(y_meaning, "q");
    let attrs: Vec<(&str, Attr)> = node
        .attribute
        .iter()
        .filter(|a| {
            [
                "strides",
                "pads",
                "dilations",
                "group",
                "kernel_shape",
                "auto_pad",
            ]
            .contains(&a.name.as_str())
        })
        .map(|a| {
            let v = if !a.ints.is_empty() {
                Attr::Ints(a.ints.clone())
            } else if !a.s.is_empty() {
                Attr::Str(String::from_utf8_lossy(&a.s).into_owned())
            } else {
                Attr::Int(a.i)
            };
            (a.name.as_str(), v)
        })
        .collect();
    rw.push(
        "QLinearConv",
        base.clone(),
        &[
            &xq, &xs, &xz, &w_name, &ws_name, &wz_name, &ys, &yz, &b_name,
        ],
        &[&yq],
        &attrs,
    );
    // f32 view for non-quantized consumers (pruned when unused)
    rw.push(
        "DequantizeLinear",
        format!("{base}/dq"),
        &[&yq, &ys, &yz],
        &[y_meaning],
        &[],
    );
    rw.quantized.insert(y_meaning.to_string(), (yq, yp));
    Ok(true)
}

/// Gemm (transA=0, alpha=beta=1) or MatMul with an initializer weight.
fn linear(rw: &mut Rewriter<'_>, node: &pb::NodeProto) -> Result<bool, OnnxError> {
    let gemm = node.op_type == "Gemm";
    if gemm
        && (attr_i(node, "transA", 0) != 0
            || attr_f(node, "alpha", 1.0) != 1.0
            || attr_f(node, "beta", 1.0) != 1.0)
    {
        return Ok(false);
    }
    let (dims, w) = rw.weight(&node.input[1])?;
    if dims.len() != 2 {
        return Ok(false);
    }
    // to [K, N]
    let (k, n, w) = if gemm && attr_i(node, "transB", 0) == 1 {
        let (nn, kk) = (dims[0], dims[1]);
        let mut t = vec![0f32; w.len()];
        for i in 0..nn {
            for j in 0..kk {
                t[j * nn + i] = w[i * kk + j];
            }
        }
        (kk, nn, t)
    } else {
        (dims[0], dims[1], w)
    };
    if k < rw.options.min_reduction {
        return Ok(false);
    }
    let bias: Vec<f32> = match node.input.get(2).filter(|b| gemm && !b.is_empty()) {
        Some(b) => {
            let (bd, bv) = rw.weight(b)?;
            if bv.len() == n {
                bv
            } else if bv.len() == 1 && bd.len() <= 1 {
                vec![bv[0]; n]
            } else {
                return Ok(false);
            }
        }
        None => vec![0.0; n],
    };
    let base = node_base(node);
    let x = node.input[0].clone();
    let y = node.output[0].clone();
    let (xq, xp) = rw.quantized_input(&x)?;
    let (wq, ws) = quantize_weights(&w, &[k, n], 1, rw.options.linear_per_channel);
    let ws_full: Vec<f32> = if ws.len() == 1 {
        vec![ws[0]; n]
    } else {
        ws.clone()
    };
    match rw.options.form {
        Form::QLinearMatMul => {
            let (lo, hi) = rw.range(&y)?;
            // the bias is added after dequantization: quantize the pre-bias product
            let blo = bias.iter().cloned().fold(0f32, f32::min);
            let bhi = bias.iter().cloned().fold(0f32, f32::max);
            let yp = QParams::asymmetric(lo - bhi, hi - blo);
            let w_name = {
                let nm = rw.fresh(&base, "wq");
                rw.add_init(nm, &[k, n], TensorData::I8(wq))?
            };
            let wdims: &[usize] = if ws.len() == 1 { &[] } else { &[n] };
            let ws_name = {
                let nm = rw.fresh(&base, "ws");
                rw.add_init(nm, wdims, TensorData::F32(ws.clone()))?
            };
            // tract's QLinearMatMul wants the zero point of the same rank as the scale
            let wz_name = {
                let nm = rw.fresh(&base, "wz");
                rw.add_init(nm, wdims, TensorData::I8(vec![0; ws.len()]))?
            };
            let xs = rw.scalar_f32(&base, "xs", xp.scale)?;
            let xz = rw.scalar_i8(&base, "xz", xp.zero)?;
            let ys = rw.scalar_f32(&base, "ys", yp.scale)?;
            let yz = rw.scalar_i8(&base, "yz", yp.zero)?;
            let yq = rw.fresh(&y, "q");
            rw.push(
                "QLinearMatMul",
                base.clone(),
                &[&xq, &xs, &xz, &w_name, &ws_name, &wz_name, &ys, &yz],
                &[&yq],
                &[],
            );
            let yd = rw.fresh(&y, "dq");
            rw.push(
                "DequantizeLinear",
                format!("{base}/dq"),
                &[&yq, &ys, &yz],
                &[&yd],
                &[],
            );
            let b_name = {
                let nm = rw.fresh(&base, "bias");
                rw.add_init(nm, &[n], TensorData::F32(bias))?
            };
            rw.push("Add", format!("{base}/bias"), &[&yd, &b_name], &[&y], &[]);
        }
        _ => {
            // y = s_x s_w (acc - z_x colsum) + b, acc = xq · Wq with no zero points
            let mut colsum = vec![0i64; n];
            for (i, q) in wq.iter().enumerate() {
                colsum[i % n] += *q as i64;
            }
            let scale: Vec<f32> = ws_full.iter().map(|s| s * xp.scale).collect();
            let bias2: Vec<f32> = (0..n)
                .map(|j| bias[j] - scale[j] * (xp.zero as f32) * colsum[j] as f32)
                .collect();
            let w_name = {
                let nm = rw.fresh(&base, "wq");
                rw.add_init(nm, &[k, n], TensorData::I8(wq))?
            };
            let acc = rw.fresh(&y, "acc");
            rw.push("MatMulInteger", base.clone(), &[&xq, &w_name], &[&acc], &[]);
            let accf = rw.fresh(&y, "accf");
            rw.push(
                "Cast",
                format!("{base}/cast"),
                &[&acc],
                &[&accf],
                &[("to", Attr::Int(crate::ElemType::F32.onnx() as i64))],
            );
            let s_name = {
                let nm = rw.fresh(&base, "scale");
                rw.add_init(nm, &[n], TensorData::F32(scale))?
            };
            let scaled = rw.fresh(&y, "scaled");
            rw.push(
                "Mul",
                format!("{base}/scale"),
                &[&accf, &s_name],
                &[&scaled],
                &[],
            );
            let b_name = {
                let nm = rw.fresh(&base, "bias");
                rw.add_init(nm, &[n], TensorData::F32(bias2))?
            };
            rw.push(
                "Add",
                format!("{base}/bias"),
                &[&scaled, &b_name],
                &[&y],
                &[],
            );
        }
    }
    Ok(true)
}

/// QDQ form: `x -> Q -> DQ -> op`, weight -> int8 initializer -> DQ (per channel on `axis`).
fn qdq_op(rw: &mut Rewriter<'_>, node: &pb::NodeProto, axis: usize) -> Result<bool, OnnxError> {
    let (dims, w) = rw.weight(&node.input[1])?;
    let red = if node.op_type == "Conv" {
        reduction(&dims)
    } else {
        dims[1 - axis]
    };
    if red < rw.options.min_reduction {
        return Ok(false);
    }
    let base = node_base(node);
    let x = node.input[0].clone();
    let (xq, xp) = rw.quantized_input(&x)?;
    let xs = rw.scalar_f32(&base, "xs", xp.scale)?;
    let xz = rw.scalar_i8(&base, "xz", xp.zero)?;
    let xd = rw.fresh(&x, "dq");
    rw.push(
        "DequantizeLinear",
        format!("{base}/xdq"),
        &[&xq, &xs, &xz],
        &[&xd],
        &[],
    );
    let per_channel = if node.op_type == "Conv" {
        rw.options.conv_per_channel
    } else {
        rw.options.linear_per_channel
    };
    let (wq, ws) = quantize_weights(&w, &dims, axis, per_channel);
    let w_name = {
        let nm = rw.fresh(&base, "wq");
        rw.add_init(nm, &dims, TensorData::I8(wq))?
    };
    let wdims: Vec<usize> = if ws.len() == 1 {
        vec![]
    } else {
        vec![ws.len()]
    };
    let nz = ws.len();
    let ws_name = {
        let nm = rw.fresh(&base, "ws");
        rw.add_init(nm, &wdims, TensorData::F32(ws))?
    };
    let wz_name = {
        let nm = rw.fresh(&base, "wz");
        rw.add_init(nm, &wdims, TensorData::I8(vec![0; nz]))?
    };
    let wd = rw.fresh(&base, "wdq");
    rw.push(
        "DequantizeLinear",
        format!("{base}/wdq"),
        &[&w_name, &ws_name, &wz_name],
        &[&wd],
        &[("axis", Attr::Int(axis as i64))],
    );
    let mut n = node.clone();
    n.input[0] = xd;
    n.input[1] = wd;
    rw.nodes.push(n);
    Ok(true)
}

/// A name prefix for nodes derived from `node` (its name, else its first output).
fn node_base(node: &pb::NodeProto) -> String {
    if node.name.is_empty() {
        format!(
            "q_{}",
            node.output.first().map(String::as_str).unwrap_or("node")
        )
    } else {
        node.name.clone()
    }
}
