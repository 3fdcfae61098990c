//! ONNX export through `shapecast-onnx` with the model contract's metadata
//! (docs/model-contract.md), and the check that tract loads the export and reproduces
//! burn's own output.

use std::path::Path;

use burn::prelude::*;
use shapecast_onnx::{Dim, GraphBuilder};

use crate::config::TrainConfig;
use crate::data::BOUNDS;
use crate::inference::TractRunner;
use crate::model::PointNet;
use crate::TrainError;

/// Contract version written into every export.
pub const CONTRACT: &str = "1";

fn onnx_err(e: shapecast_onnx::OnnxError) -> TrainError {
    TrainError::Onnx(format!("{e:#}"))
}

fn floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainError::Onnx(format!("weight readout: {e:?}")))
}

fn fmt_list(v: &[f32]) -> String {
    v.iter()
        .map(|x| format!("{x}"))
        .collect::<Vec<_>>()
        .join(",")
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
    let mut kv: Vec<(String, String)> = vec![
        ("shapecast.contract".into(), CONTRACT.into()),
        ("shapecast.head".into(), "points".into()),
        ("shapecast.model_id".into(), cfg.model_id.clone()),
        ("shapecast.input.width".into(), m.image.to_string()),
        ("shapecast.input.height".into(), m.image.to_string()),
        ("shapecast.input.color".into(), "rgb".into()),
        ("shapecast.input.mean".into(), fmt_list(&cfg.mean)),
        ("shapecast.input.std".into(), fmt_list(&cfg.std)),
        ("shapecast.input.crop".into(), "center".into()),
        ("shapecast.frame".into(), "object".into()),
        ("shapecast.units".into(), "normalized".into()),
        ("shapecast.bounds".into(), fmt_list(&BOUNDS)),
        ("shapecast.precision".into(), "f32".into()),
        ("shapecast.points".into(), m.points.to_string()),
        ("shapecast.hypotheses".into(), m.hypotheses.to_string()),
        (
            "shapecast.trained_by".into(),
            format!(
                "shapecast-train {} (burn 0.20.1)",
                env!("CARGO_PKG_VERSION")
            ),
        ),
    ];
    if m.classes > 0 {
        kv.push(("shapecast.classes".into(), info.classes.join(",")));
    }
    let dataset = info.dataset.clone().unwrap_or_else(|| {
        format!(
            "{} seed={} objects_per_class={} views={}",
            cfg.data.kind, cfg.data.seed, cfg.data.objects_per_class, cfg.data.views
        )
    });
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
    let mut x = g.input(
        "image",
        &[Dim::Fixed(1), 3.into(), m.image.into(), m.image.into()],
    );
    let mut cin = 3;
    for (i, conv) in model.convs.iter().enumerate() {
        let [cout, _, k, _] = conv.weight.dims();
        let mut w = floats(conv.weight.val())?;
        let mut b = match &conv.bias {
            Some(b) => floats(b.val())?,
            None => vec![0.0; cout],
        };
        if let Some(bn) = model.norms.get(i) {
            // fold y = gamma (conv(x) - mean) / sqrt(var + eps) + beta into the convolution
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
                1,
            )
            .map_err(onnx_err)?;
        x = g.relu(&y);
        cin = cout;
    }
    let flat = g.flatten(&x, 1);
    let z = hidden_fc(&mut g, &flat, model)?;
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

/// The hidden fully connected layer with its batch normalisation (if any) folded in:
/// `y = gamma (x W + b - mean) / sqrt(var + eps) + beta` becomes `x W' + b'` with
/// `W'[i, o] = W[i, o] s[o]`, `b'[o] = (b[o] - mean[o]) s[o] + beta[o]`, `s = gamma / sqrt(var + eps)`.
fn hidden_fc<B: Backend>(
    g: &mut GraphBuilder,
    x: &str,
    model: &PointNet<B>,
) -> Result<String, TrainError> {
    let Some(bn) = &model.fc_norm else {
        return linear(g, x, "fc", &model.fc);
    };
    let l = &model.fc;
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
    g.linear(x, "fc", &w, Some(&b), d_in, d_out)
        .map_err(onnx_err)
}

fn linear<B: Backend>(
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
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    g.write(path).map_err(onnx_err)?;
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
    if worst > tol {
        return Err(TrainError::Check(format!(
            "{}: tract output differs from burn by {worst:e} (> {tol:e})",
            path.display()
        )));
    }
    Ok(worst)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> Result<f32, TrainError> {
    if a.len() != b.len() {
        return Err(TrainError::Check(format!(
            "output sizes differ: burn {} vs tract {}",
            a.len(),
            b.len()
        )));
    }
    Ok(a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max))
}
