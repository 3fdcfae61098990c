//! Loading and running ONNX models with tract, and comparing two models' outputs.

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::OnnxError;

/// A dense f32 tensor (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl F32Tensor {
    /// A tensor; fails when `data` does not fill `shape`.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, OnnxError> {
        if shape.iter().product::<usize>() != data.len() {
            return Err(OnnxError::Shape(format!(
                "shape {shape:?} vs {} values",
                data.len()
            )));
        }
        Ok(F32Tensor { shape, data })
    }

    fn to_tvalue(&self) -> Result<TValue, OnnxError> {
        Ok(Tensor::from_shape(&self.shape, &self.data)?.into_tvalue())
    }

    fn from_tvalue(v: &TValue) -> Result<Self, OnnxError> {
        let t = v.cast_to::<f32>()?;
        let data = t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        Ok(F32Tensor {
            shape: v.shape().to_vec(),
            data,
        })
    }
}

/// How to prepare a model for tract.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Value given to the dynamic batch symbol (`batch`); `None` leaves it symbolic.
    pub batch: Option<i64>,
    /// Run tract's full optimisation (`into_optimized`); false stops at decluttering.
    pub optimize: bool,
    /// Apply tract's `f32_to_f16` transform (useful on aarch64 with `asimdhp`).
    pub f16: bool,
    /// Run [`fuse_activations`] after tract's optimisation.
    pub fuse: bool,
    /// Threads of tract's matrix products (a rayon pool when > 1; tract-linalg
    /// `multithread-mm`, on for the whole workspace).
    pub threads: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            batch: Some(1),
            optimize: true,
            f16: false,
            fuse: true,
            threads: 1,
        }
    }
}

/// A model loaded and planned by tract.
#[derive(Debug, Clone)]
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    /// Graph input names, in order.
    pub inputs: Vec<String>,
    /// Graph output names, in order.
    pub outputs: Vec<String>,
}

/// Loads a `ModelProto` into tract.
pub fn load(model: &pb::ModelProto, options: &LoadOptions) -> Result<TractModel, OnnxError> {
    let inference = tract_onnx::onnx().model_for_proto_model(model)?;
    let mut typed = inference.into_typed()?;
    if let Some(b) = options.batch {
        let mut subs = HashMap::new();
        subs.insert(typed.symbols.sym(crate::BATCH_DIM), TDim::Val(b));
        typed = typed.set_symbols(&subs)?;
    }
    typed = typed.into_decluttered()?;
    if options.f16 {
        let t = tract_onnx::tract_core::transform::get_transform("f32_to_f16")?
            .ok_or_else(|| OnnxError::Unsupported("tract has no f32_to_f16 transform".into()))?;
        typed.transform(&*t)?;
    }
    if options.optimize {
        typed = typed.into_optimized()?;
        if options.fuse {
            fuse_activations(&mut typed)?;
        }
    }
    let inputs = typed
        .input_outlets()?
        .iter()
        .map(|o| typed.node(o.node).name.clone())
        .collect();
    let outputs = typed
        .output_outlets()?
        .iter()
        .map(|o| {
            typed
                .outlet_label(*o)
                .map(|s| s.to_string())
                .unwrap_or_else(|| typed.node(o.node).name.clone())
        })
        .collect();
    let mut run_options = tract_onnx::tract_core::runtime::RunOptions::default();
    if options.threads > 1 {
        run_options.executor = Some(tract_linalg::multithread::Executor::multithread(
            options.threads,
        ));
    }
    let plan = typed.into_runnable_with_options(&run_options)?;
    Ok(TractModel {
        plan,
        inputs,
        outputs,
    })
}

/// Fuses convolution activations into tract's matrix products (an optimisation pass run
/// on an already optimised model; returns how many activations it fused).
///
/// tract 0.23.9 lowers a `Conv` to `OptMatMul -> IntoShape` (the product's `[1, 1, C, HW]`
/// reshaped to `[1, C, H, W]`), and its `OptMatMul::fuse` only absorbs an element-wise
/// successor that follows the product directly: so a `Relu` (or `LeakyRelu`, `Clip`...)
/// after a convolution stays a separate pass over the output (`OptMaxByScalar`), while the
/// same activation after a `Gemm` is fused into the kernel. Element-wise operations commute
/// with a reshape: this pass moves such an activation in front of the `IntoShape` and asks
/// the product to fuse it.
pub fn fuse_activations(model: &mut TypedModel) -> TractResult<usize> {
    use tract_onnx::tract_core::ops::binary::{OptBinByScalar, TypedBinOp};
    use tract_onnx::tract_core::ops::change_axes::IntoShape;
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;
    let mut fused = 0;
    // each round fuses at most one activation (node ids change when a patch is applied)
    for _round in 0..model.nodes().len() {
        let mut done = false;
        for reshape in 0..model.nodes().len() {
            let node = model.node(reshape);
            if !node.op_is::<IntoShape>() || node.inputs.len() != 1 {
                continue;
            }
            let mm = model.node(node.inputs[0].node);
            if !mm.op_is::<OptMatMul>()
                || mm.outputs.len() != 1
                || mm.outputs[0].successors.len() != 1
                || model.output_outlets()?.contains(&mm.id.into())
            {
                continue;
            }
            let Some(act) = model.single_succ(reshape)? else {
                continue;
            };
            if act.outputs.len() != 1 {
                continue;
            }
            let mm_fact = model.outlet_fact(mm.id.into())?.clone();
            let rank = mm_fact.rank();
            let mut patch = TypedModelPatch::new(format!("fuse {} into {}", act.name, mm.name));
            let m_out = patch.tap_model(model, mm.id.into())?;
            let moved = if let Some(bin) = act.op_as::<OptBinByScalar>() {
                // the other operand must be a constant scalar (volume 1)
                let flipped = act.inputs[1].node == reshape;
                let other = act.inputs[if flipped { 0 } else { 1 }];
                let Some(k) = model.outlet_fact(other)?.konst.clone() else {
                    continue;
                };
                if k.len() != 1 || k.datum_type() != mm_fact.datum_type {
                    continue;
                }
                let k = k.into_tensor().into_shape(&vec![1usize; rank])?;
                let c = patch.add_const(format!("{}.scalar", act.name), k)?;
                let ins = if flipped { [c, m_out] } else { [m_out, c] };
                patch.wire_node(
                    format!("{}.moved", act.name),
                    TypedBinOp(bin.binop.clone(), None),
                    &ins,
                )?[0]
            } else if let Some(ew) = act.op_as::<ElementWiseOp>() {
                if act.inputs.len() != 1 || ew.1.is_some() {
                    continue;
                }
                patch.wire_node(format!("{}.moved", act.name), ew.clone(), &[m_out])?[0]
            } else {
                continue;
            };
            let shaped =
                patch.wire_node(format!("{}.reshape", act.name), node.op.clone(), &[moved])?[0];
            patch.shunt_outside(model, act.id.into(), shaped)?;
            let mm_id = mm.id;
            patch.apply(model)?;
            // now OptMatMul -> activation: let the product absorb it when its kernel can
            let mm = model.node(mm_id);
            if let Some(p) = mm
                .op
                .as_typed()
                .and_then(|op| op.fuse(model, mm).transpose())
            {
                p?.apply(model)?;
                fused += 1;
            }
            done = true;
            break;
        }
        if !done {
            break;
        }
    }
    model.compact()?;
    Ok(fused)
}

/// Loads model bytes into tract with default options (batch 1, optimized).
pub fn load_bytes(bytes: &[u8]) -> Result<TractModel, OnnxError> {
    load(&crate::from_bytes(bytes)?, &LoadOptions::default())
}

impl TractModel {
    /// Runs the model on f32 inputs (graph input order); returns every output as f32.
    pub fn run(&self, inputs: &[F32Tensor]) -> Result<Vec<F32Tensor>, OnnxError> {
        let mut values = TVec::new();
        for (ix, t) in inputs.iter().enumerate() {
            let v = t.to_tvalue()?;
            // the f16 transform turns f32 inputs into f16 ones
            let dt = self.plan.model().input_fact(ix)?.datum_type;
            values.push(if dt == f32::datum_type() {
                v
            } else {
                v.cast_to_dt(dt)?.into_owned().into_tvalue()
            });
        }
        let outputs = self.plan.run(values)?;
        outputs.iter().map(F32Tensor::from_tvalue).collect()
    }

    /// Runs the model with pre-built tract values (no conversion; for benchmarks).
    pub fn run_values(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, OnnxError> {
        Ok(self.plan.run(inputs)?)
    }

    /// Names of the operators of the optimised plan, in node order (to check what tract runs).
    pub fn op_names(&self) -> Vec<String> {
        self.plan
            .model()
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect()
    }

    /// The underlying tract plan.
    pub fn plan(&self) -> &Arc<TypedRunnableModel> {
        &self.plan
    }
}

/// Differences between two models' outputs over a set of samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Per output: largest absolute difference over all samples.
    pub max_abs: Vec<f32>,
    /// Per output: mean absolute difference.
    pub mean_abs: Vec<f32>,
    /// Per output: root-mean-square of the reference output (scale for the above).
    pub ref_rms: Vec<f32>,
}

/// Runs `reference` and `candidate` on every sample and compares outputs pairwise (by position).
pub fn compare(
    reference: &TractModel,
    candidate: &TractModel,
    samples: &[Vec<F32Tensor>],
) -> Result<Comparison, OnnxError> {
    let mut cmp = Comparison::default();
    let mut sums: Vec<(f64, f64, usize)> = vec![];
    for sample in samples {
        let a = reference.run(sample)?;
        let b = candidate.run(sample)?;
        if a.len() != b.len() {
            return Err(OnnxError::Shape(format!(
                "{} outputs vs {}",
                a.len(),
                b.len()
            )));
        }
        if cmp.max_abs.is_empty() {
            cmp.max_abs = vec![0.0; a.len()];
            sums = vec![(0.0, 0.0, 0); a.len()];
        }
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if x.shape != y.shape {
                return Err(OnnxError::Shape(format!(
                    "output {i}: {:?} vs {:?}",
                    x.shape, y.shape
                )));
            }
            for (p, q) in x.data.iter().zip(&y.data) {
                let d = (p - q).abs();
                cmp.max_abs[i] = cmp.max_abs[i].max(d);
                sums[i].0 += d as f64;
                sums[i].1 += (*p as f64) * (*p as f64);
                sums[i].2 += 1;
            }
        }
    }
    cmp.mean_abs = sums
        .iter()
        .map(|s| (s.0 / s.2.max(1) as f64) as f32)
        .collect();
    cmp.ref_rms = sums
        .iter()
        .map(|s| (s.1 / s.2.max(1) as f64).sqrt() as f32)
        .collect();
    Ok(cmp)
}

/// True when this CPU runs f16 arithmetic natively for tract (aarch64 with `asimdhp` in
/// /proc/cpuinfo), i.e. when [`LoadOptions::f16`] is worth trying. Always false elsewhere.
pub fn cpu_has_fp16() -> bool {
    if !cfg!(target_arch = "aarch64") {
        return false;
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| cpuinfo_has_fp16(&s))
        .unwrap_or(false)
}

/// Parses a /proc/cpuinfo text: true when every `Features` line lists `asimdhp`.
pub fn cpuinfo_has_fp16(cpuinfo: &str) -> bool {
    let mut lines = cpuinfo
        .lines()
        .filter(|l| l.starts_with("Features"))
        .peekable();
    lines.peek().is_some() && lines.all(|l| l.split_whitespace().any(|f| f == "asimdhp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_fp16_detection() {
        let a = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid\n";
        assert!(cpuinfo_has_fp16(a));
        let b = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n";
        assert!(!cpuinfo_has_fp16(b));
        assert!(!cpuinfo_has_fp16("flags : fpu vme avx512f\n"));
        let mixed = format!("{a}{b}");
        assert!(!cpuinfo_has_fp16(&mixed));
    }
}
