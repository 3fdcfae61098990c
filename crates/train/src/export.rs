//! ONNX export through `shapecast-onnx` with the model contract's metadata
//! (docs/model-contract.md), and the check that tract loads the export and reproduces
//! burn's own output.

use std::path::Path;

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::prelude::*;
use shapecast_onnx::{Dim, GraphBuilder};

use crate::config::TrainConfig;
use crate::data::BOUNDS;
use crate::inference::TractRunner;
use crate::model::PointNet;
use crate::TrainError;

/// Contract version written into every export.
pub const CONTRACT: &str = "1";

// ---------------------------------------------------- helpers shared by every exporter
// (point, voxel, implicit, lmnet and mesh pipelines)

/// An ONNX writer error as a [`TrainError`].
pub(crate) fn onnx_err(e: shapecast_onnx::OnnxError) -> TrainError {
    TrainError::Onnx(format!("{e:#}"))
}

/// A tensor's values as `f32`s (weights for an export, or outputs to compare).
pub(crate) fn floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainError::Onnx(format!("tensor readout: {e:?}")))
}

/// `a,b,c` list of a metadata value.
pub(crate) fn fmt_list(v: &[f32]) -> String {
    v.iter()
        .map(|x| format!("{x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes a burn `Linear` (`[in, out]` weights) as a `Gemm`.
pub(crate) fn linear<B: Backend>(
    g: &mut GraphBuilder,
    x: &str,
    name: &str,
    l: &burn::nn::Linear<B>,
) -> Result<String, TrainError> {
    let [d_in, d_out] = l.weight.dims();
    let w = floats(l.weight.val())?;
    let b = match &l.bias {
        Some(b) => Some(floats(b.val())?),
        None => None,
    };
    g.linear(x, name, &w, b.as_deref(), d_in, d_out)
        .map_err(onnx_err)
}

/// Writes a stack of `Conv -> Relu` layers (named `conv{i}`, each with its own kernel, stride
/// and padding) on input `x` (3 channels),
/// folding each layer's batch normalisation, when it has one, into the convolution:
/// `y = gamma (conv(x) - mean) / sqrt(var + eps) + beta`. Returns the last activation.
pub(crate) fn conv_relu_stack<'a, B: Backend + 'a>(
    g: &mut GraphBuilder,
    x: &str,
    layers: impl IntoIterator<Item = (&'a Conv2d<B>, Option<&'a BatchNorm<B>>)>,
) -> Result<String, TrainError> {
    let mut x = x.to_string();
    let mut cin = 3;
    for (i, (conv, bn)) in layers.into_iter().enumerate() {
        let [cout, _, k, _] = conv.weight.dims();
        let mut w = floats(conv.weight.val())?;
        let mut b = match &conv.bias {
            Some(b) => floats(b.val())?,
            None => vec![0.0; cout],
        };
        if let Some(bn) = bn {
            let gamma = floats(bn.gamma.val())?;
            let beta = floats(bn.beta.val())?;
            let mean = floats(bn.running_mean.value())?;
            let var = floats(bn.running_var.value())?;
            let per = w.len() / cout;
            for o in 0..cout {
                let s = gamma[o] / (var[o] + bn.epsilon as f32).sqrt();
                for v in &mut w[o * per..(o + 1) * per] {
                    *v *= s;
                }
                b[o] = (b[o] - mean[o]) * s + beta[o];
            }
        }
        // the layer's own padding (3x3 layers: 1; patchify layers, kernel = stride: 0)
        let pad = match *conv.padding {
            PaddingConfig2d::Explicit(p, _) => p,
            PaddingConfig2d::Valid => 0,
            PaddingConfig2d::Same => k / 2,
        };
        let y = g
            .conv2d(
                &x,
                &format!("conv{i}"),
                &w,
                Some(&b),
                cout,
                cin,
                k,
                conv.stride[0],
                pad,
            )
            .map_err(onnx_err)?;
        x = g.relu(&y);
        cin = cout;
    }
    Ok(x)
}

/// The leading contract metadata every head shares, in file order: contract, head,
/// model id, input geometry and normalisation, frame, units, bounds, precision (f32).
pub(crate) fn input_metadata(
    head: &str,
    model_id: &str,
    image: usize,
    mean: &[f32],
    std: &[f32],
) -> Vec<(String, String)> {
    vec![
        ("shapecast.contract".into(), CONTRACT.into()),
        ("shapecast.head".into(), head.into()),
        ("shapecast.model_id".into(), model_id.into()),
        ("shapecast.input.width".into(), image.to_string()),
        ("shapecast.input.height".into(), image.to_string()),
        ("shapecast.input.color".into(), "rgb".into()),
        ("shapecast.input.mean".into(), fmt_list(mean)),
        ("shapecast.input.std".into(), fmt_list(std)),
        ("shapecast.input.crop".into(), "center".into()),
        ("shapecast.frame".into(), "object".into()),
        ("shapecast.units".into(), "normalized".into()),
        ("shapecast.bounds".into(), fmt_list(&BOUNDS)),
        ("shapecast.precision".into(), "f32".into()),
    ]
}

/// The `shapecast.trained_by` entry (`tag` goes after the crate version, e.g. `" voxels"`).
pub(crate) fn trained_by(tag: &str) -> (String, String) {
    (
        "shapecast.trained_by".into(),
        format!(
            "shapecast-train {}{tag} (burn 0.20.1)",
            env!("CARGO_PKG_VERSION")
        ),
    )
}

/// Creates the parent folder of `path` (when it has one) and writes the graph there.
pub(crate) fn write_graph(g: &GraphBuilder, path: &Path) -> Result<(), TrainError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    g.write(path).map_err(onnx_err)
}

/// Extra metadata for an export.
#[derive(Debug, Clone, Default)]
pub struct ExportInfo {
    /// `shapecast.metrics` (`name=value,...`), when known.
    pub metrics: Option<String>,
    /// `shapecast.dataset`.
    pub dataset: Option<String>,
    /// Part class names (required when the model has a label head).
    pub classes: Vec<String>,
}

/// The contract metadata of a point model (f32).
pub fn point_metadata(cfg: &TrainConfig, info: &ExportInfo) -> Vec<(String, String)> {
    let m = &cfg.model;
    let mut kv = input_metadata("points", &cfg.model_id, m.image, &cfg.mean, &cfg.std);
    // the frame the run's ground truth was in (`object` or viewer-centred `camera`)
    for (k, v) in kv.iter_mut() {
        if k == "shapecast.frame" {
            v.clone_from(&cfg.data.frame);
        }
    }
    kv.extend([
        ("shapecast.points".into(), m.points.to_string()),
        ("shapecast.hypotheses".into(), m.hypotheses.to_string()),
        trained_by(""),
    ]);
    if m.classes > 0 {
        kv.push(("shapecast.classes".into(), info.classes.join(",")));
    }
    let dataset = info
        .dataset
        .clone()
        .unwrap_or_else(|| crate::datasets::point_spec(cfg, false).describe());
    kv.push(("shapecast.dataset".into(), dataset));
    if let Some(mt) = &info.metrics {
        kv.push(("shapecast.metrics".into(), mt.clone()));
    }
    kv
}

/// Builds the ONNX graph of a point model: input `image` `[1, 3, H, W]`, output `points`
/// `[1, K, N, 3]` and, with a label head, `labels` `[1, K, N, L]`.
pub fn point_graph<B: Backend>(
    model: &PointNet<B>,
    cfg: &TrainConfig,
    info: &ExportInfo,
) -> Result<GraphBuilder, TrainError> {
    let m = &cfg.model;
    if m.classes > 0 && info.classes.len() != m.classes {
        return Err(TrainError::Config(format!(
            "model has {} label classes but {} class names were given",
            m.classes,
            info.classes.len()
        )));
    }
    let mut g = GraphBuilder::new(&cfg.model_id);
    let x = g.input(
        "image",
        &[Dim::Fixed(1), 3.into(), m.image.into(), m.image.into()],
    );
    let x = conv_relu_stack(
        &mut g,
        &x,
        model
            .convs
            .iter()
            .enumerate()
            .map(|(i, c)| (c, model.norms.get(i))),
    )?;
    let flat = g.flatten(&x, 1);
    let z = linear_folded(&mut g, &flat, "fc", &model.fc, model.fc_norm.as_ref())?;
    let z = if !model.hidden_relu {
        z
    } else if model.hidden_leak > 0.0 {
        g.leaky_relu(&z, model.hidden_leak)
    } else {
        g.relu(&z)
    };
    let raw = linear(&mut g, &z, "head", &model.head)?;
    let t = g.tanh(&raw);
    let ext = g.init_f32("extent", &[], &[m.extent]).map_err(onnx_err)?;
    let p = g.mul(&t, &ext);
    let p = g.reshape(&p, &[1, m.hypotheses as i64, m.points as i64, 3]);
    g.output_with_dims(
        &p,
        "points",
        &[1.into(), m.hypotheses.into(), m.points.into(), 3.into()],
    )
    .map_err(onnx_err)?;
    if let Some(lh) = &model.label_head {
        let l = linear(&mut g, &z, "label_head", lh)?;
        let l = g.reshape(
            &l,
            &[1, m.hypotheses as i64, m.points as i64, m.classes as i64],
        );
        g.output_with_dims(
            &l,
            "labels",
            &[
                1.into(),
                m.hypotheses.into(),
                m.points.into(),
                m.classes.into(),
            ],
        )
        .map_err(onnx_err)?;
    }
    g.metadata_list(&point_metadata(cfg, info));
    Ok(g)
}

/// A fully connected layer with the batch normalisation after it (if any) folded in:
/// `y = gamma (x W + b - mean) / sqrt(var + eps) + beta` becomes `x W' + b'` with
/// `W'[i, o] = W[i, o] s[o]`, `b'[o] = (b[o] - mean[o]) s[o] + beta[o]`, `s = gamma / sqrt(var + eps)`.
pub(crate) fn linear_folded<B: Backend>(
    g: &mut GraphBuilder,
    x: &str,
    name: &str,
    l: &Linear<B>,
    norm: Option<&BatchNorm<B>>,
) -> Result<String, TrainError> {
    let Some(bn) = norm else {
        return linear(g, x, name, l);
    };
    let [d_in, d_out] = l.weight.dims();
    let mut w = floats(l.weight.val())?;
    let mut b = match &l.bias {
        Some(b) => floats(b.val())?,
        None => vec![0.0; d_out],
    };
    let gamma = floats(bn.gamma.val())?;
    let beta = floats(bn.beta.val())?;
    let mean = floats(bn.running_mean.value())?;
    let var = floats(bn.running_var.value())?;
    let s: Vec<f32> = (0..d_out)
        .map(|o| gamma[o] / (var[o] + bn.epsilon as f32).sqrt())
        .collect();
    for row in w.chunks_mut(d_out) {
        for (v, so) in row.iter_mut().zip(&s) {
            *v *= so;
        }
    }
    for (o, bo) in b.iter_mut().enumerate() {
        *bo = (*bo - mean[o]) * s[o] + beta[o];
    }
    g.linear(x, name, &w, Some(&b), d_in, d_out)
        .map_err(onnx_err)
}

/// Writes the export to `path`, then loads it with tract and checks that it reproduces
/// burn's output on `probe` inputs (`[1, 3, H, W]` each) within `tol`; returns the largest
/// absolute difference seen.
pub fn export_points<B: Backend>(
    model: &PointNet<B>,
    cfg: &TrainConfig,
    info: &ExportInfo,
    path: &Path,
    probes: &[Vec<f32>],
    tol: f32,
    device: &B::Device,
) -> Result<f32, TrainError> {
    let g = point_graph(model, cfg, info)?;
    write_graph(&g, path)?;
    let runner = TractRunner::load(path, cfg.model.image)?;
    let mut worst = 0.0f32;
    for probe in probes {
        let t = Tensor::<B, 4>::from_data(
            TensorData::new(probe.clone(), [1, 3, cfg.model.image, cfg.model.image]),
            device,
        );
        let out = model.forward(t);
        let want = floats(out.points)?;
        let got = runner.run(probe)?;
        worst = worst.max(max_abs_diff(&want, &got.points)?);
        if let (Some(wl), Some(gl)) = (out.labels, got.labels.as_ref()) {
            worst = worst.max(max_abs_diff(&floats(wl)?, gl)?);
        }
    }
    within_tolerance(path, worst, tol)
}

/// Largest absolute difference of two equally long slices (burn's and tract's outputs);
/// NaN when either side has a NaN where the other has not the same (`f32::max` alone
/// would skip NaNs and pass a broken export).
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> Result<f32, TrainError> {
    if a.len() != b.len() {
        return Err(TrainError::Check(format!(
            "output sizes differ: burn {} vs tract {}",
            a.len(),
            b.len()
        )));
    }
    Ok(a.iter().zip(b).fold(0.0, |m: f32, (x, y)| {
        let d = (x - y).abs();
        if m.is_nan() || d.is_nan() {
            f32::NAN
        } else {
            m.max(d)
        }
    }))
}

/// The export check's verdict: `worst`, the largest tract-vs-burn difference of the export
/// at `path`, when it is finite and at most `tol`; an error otherwise.
pub(crate) fn within_tolerance(path: &Path, worst: f32, tol: f32) -> Result<f32, TrainError> {
    if !worst.is_finite() || worst > tol {
        return Err(TrainError::Check(format!(
            "{}: tract output differs from burn by {worst:e} (> {tol:e})",
            path.display()
        )));
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::{max_abs_diff, within_tolerance};

    #[test]
    fn max_abs_diff_sees_nans_and_sizes() {
        let p = std::path::Path::new("m.onnx");
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]).unwrap(), 0.5);
        let nan = max_abs_diff(&[1.0, f32::NAN], &[1.0, 2.0]).unwrap();
        assert!(nan.is_nan());
        assert!(within_tolerance(p, nan, 1e-4).is_err());
        assert!(max_abs_diff(&[1.0], &[1.0, 2.0]).is_err());
        assert!(within_tolerance(p, 2e-5, 1e-4).is_ok());
    }
}
