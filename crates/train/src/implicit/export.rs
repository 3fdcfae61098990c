//! Export of an implicit model as the contract's two parts (docs/model-contract.md):
//! `NAME.onnx` (image encoder, output `latent` [1, Z]) and `NAME.decoder.onnx` (inputs
//! `latent` [1, Z] and `xyz` [Q, 3] with Q dynamic, output `value` [Q]), both carrying the
//! full metadata; then tract loads both parts and must reproduce burn within a tolerance.
//!
//! The decoder's first layer is written as the query product plus a per-object latent term
//! (`Wx^T xyz^T + (Wz^T latent^T + b)`, the latter [H, 1] broadcast over the Q columns): tract
//! 0.23.9 cannot optimise a concatenation of a broadcast latent with 32768 query points. The
//! graph itself is `shapecast_onnx::mlp::MlpDecoder::f32_graph` (docs/int8.md, "The implicit
//! decoder": activations [H, Q], 1.2x faster in tract than the [Q, H] form).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;
use serde::{Deserialize, Serialize};
use shapecast_onnx::mlp::MlpDecoder;
use shapecast_onnx::{Dim, GraphBuilder};
use tract_onnx::prelude::{
    tvec, DatumExt, Framework, InferenceModelExt, IntoRunnable, IntoTValue, TypedRunnableModel,
};

use super::net::{ImageEncoder, ImplicitDecoder};
use super::ImplicitConfig;
use crate::data::BOUNDS;
use crate::export::{
    conv_relu_stack, floats, input_metadata, linear, max_abs_diff, onnx_err, trained_by,
    within_tolerance,
};
use crate::TrainError;

/// Name of the decoder's dynamic query dimension.
pub const Q_DIM: &str = "Q";
/// Query points of the export check (the tract regression size: a 32^3 grid).
pub const CHECK_QUERIES: usize = 32768;

/// The decoder file that goes with encoder file `encoder` (`NAME.onnx` ->
/// `NAME.decoder.onnx`, same folder).
pub fn decoder_path(encoder: &Path) -> PathBuf {
    let stem = encoder
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".onnx").unwrap_or(n).to_string())
        .unwrap_or_else(|| "model".into());
    encoder.with_file_name(format!("{stem}.decoder.onnx"))
}

/// Extra metadata and options of an export.
#[derive(Debug, Clone, Default)]
pub struct ImplicitExportInfo {
    /// `shapecast.metrics` (`name=value,...`), when known.
    pub metrics: Option<String>,
    /// Factor applied to the decoder output (an SDF steeper than 1 is scaled below 1;
    /// `None` = 1).
    pub value_scale: Option<f32>,
}

/// Contract metadata of one part. `decoder_file` is the encoder's
/// `shapecast.parts.decoder` (None for the decoder part).
pub fn metadata(
    cfg: &ImplicitConfig,
    info: &ImplicitExportInfo,
    decoder_file: Option<&str>,
) -> Vec<(String, String)> {
    let mut kv = input_metadata(
        "implicit",
        &cfg.model_id,
        cfg.encoder.image,
        &cfg.mean,
        &cfg.std,
    );
    kv.extend([
        ("shapecast.implicit.kind".into(), cfg.kind.name().into()),
        ("shapecast.implicit.level".into(), "0".into()),
        ("shapecast.implicit.latent".into(), cfg.latent.to_string()),
        (
            "shapecast.part".into(),
            if decoder_file.is_some() {
                "encoder"
            } else {
                "decoder"
            }
            .into(),
        ),
        trained_by(""),
        ("shapecast.dataset".into(), cfg.dataset_note()),
    ]);
    if let Some(d) = decoder_file {
        kv.push(("shapecast.parts.decoder".into(), d.to_string()));
    }
    if let Some(m) = &info.metrics {
        kv.push(("shapecast.metrics".into(), m.clone()));
    }
    kv
}

/// The encoder graph: `image` [1, 3, H, W] -> `latent` [1, Z].
pub fn encoder_graph<B: Backend>(
    enc: &ImageEncoder<B>,
    cfg: &ImplicitConfig,
    meta: &[(String, String)],
) -> Result<GraphBuilder, TrainError> {
    let side = cfg.encoder.image;
    let mut g = GraphBuilder::new(&format!("{}_encoder", cfg.model_id));
    let x = g.input(
        "image",
        &[Dim::Fixed(1), 3.into(), side.into(), side.into()],
    );
    let x = conv_relu_stack(&mut g, &x, enc.convs.iter().map(|c| (c, None)))?;
    let flat = g.flatten(&x, 1);
    let h = linear(&mut g, &flat, "fc", &enc.fc)?;
    let h = g.relu(&h);
    let z = linear(&mut g, &h, "latent_fc", &enc.out)?;
    g.output_with_dims(&z, "latent", &[1.into(), cfg.latent.into()])
        .map_err(onnx_err)?;
    g.metadata_list(meta);
    Ok(g)
}

/// The decoder graph: `latent` [1, Z], `xyz` [Q, 3] -> `value` [Q], in the form of
/// [`MlpDecoder::f32_graph`] (first layer split into a per-object latent term plus the
/// query product, activations `[H, Q]`, output layer padded for tract's kernel; same
/// initializer names as before, which `shapecast_onnx::mlp::quantize_decoder` reads).
pub fn decoder_graph<B: Backend>(
    dec: &ImplicitDecoder<B>,
    cfg: &ImplicitConfig,
    meta: &[(String, String)],
    value_scale: f32,
) -> Result<GraphBuilder, TrainError> {
    let h = cfg.decoder.hidden;
    let bias = |b: &Option<burn::module::Param<Tensor<B, 1>>>, n: usize| match b {
        Some(b) => floats(b.val()),
        None => Ok(vec![0.0; n]),
    };
    let mut layers = vec![];
    for l in &dec.hidden {
        layers.push((floats(l.weight.val())?, bias(&l.bias, h)?));
    }
    let wo: Vec<f32> = floats(dec.out.weight.val())?
        .into_iter()
        .map(|v| v * value_scale)
        .collect();
    let bo = bias(&dec.out.bias, 1)?;
    let mlp = MlpDecoder {
        latent: cfg.latent,
        hidden: h,
        wx: floats(dec.wx.weight.val())?,
        wz: floats(dec.wz.weight.val())?,
        bx: bias(&dec.wx.bias, h)?,
        layers,
        wo,
        bo: bo.first().copied().unwrap_or(0.0) * value_scale,
    };
    let mut g = mlp
        .f32_graph(&format!("{}_decoder", cfg.model_id), Q_DIM)
        .map_err(onnx_err)?;
    g.metadata_list(meta);
    Ok(g)
}

fn tract_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Onnx(format!("{}: {e:#}", path.display()))
}

/// Both parts of an exported model, loaded and optimised by tract (decoder query batch
/// fixed to `chunk`).
#[derive(Debug, Clone)]
pub struct TractImplicit {
    encoder: Arc<TypedRunnableModel>,
    decoder: Arc<TypedRunnableModel>,
    side: usize,
    latent: usize,
    chunk: usize,
}

impl TractImplicit {
    /// Loads `encoder` and the decoder named by [`decoder_path`].
    pub fn load(
        encoder: &Path,
        side: usize,
        latent: usize,
        chunk: usize,
    ) -> Result<Self, TrainError> {
        let enc = tract_onnx::onnx()
            .model_for_path(encoder)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, side, side]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| tract_err(encoder, e))?;
        let dpath = decoder_path(encoder);
        let dec = tract_onnx::onnx()
            .model_for_path(&dpath)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, latent]).into()))
            .and_then(|m| m.with_input_fact(1, f32::fact([chunk, 3]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| tract_err(&dpath, e))?;
        Ok(TractImplicit {
            encoder: enc,
            decoder: dec,
            side,
            latent,
            chunk,
        })
    }

    /// The latent of one normalised `[1, 3, H, W]` picture.
    pub fn latent(&self, image: &[f32]) -> Result<Vec<f32>, TrainError> {
        let s = self.side;
        let t = tract_onnx::prelude::Tensor::from_shape(&[1, 3, s, s], image)
            .map_err(|e| TrainError::Onnx(format!("image shape: {e}")))?;
        let out = self
            .encoder
            .run(tvec!(t.into_tvalue()))
            .map_err(|e| TrainError::Onnx(format!("encoder: {e:#}")))?;
        let v = out
            .first()
            .ok_or_else(|| TrainError::Onnx("encoder has no output".into()))?
            .to_plain_array_view::<f32>()
            .map_err(|e| TrainError::Onnx(format!("latent: {e:#}")))?
            .iter()
            .copied()
            .collect::<Vec<f32>>();
        if v.len() != self.latent {
            return Err(TrainError::Onnx(format!(
                "latent has {} values, expected {}",
                v.len(),
                self.latent
            )));
        }
        Ok(v)
    }

    /// Decoder values at `xyz` (in chunks, the last one padded).
    pub fn values(&self, latent: &[f32], xyz: &[[f32; 3]]) -> Result<Vec<f32>, TrainError> {
        let z = tract_onnx::prelude::Tensor::from_shape(&[1, self.latent], latent)
            .map_err(|e| TrainError::Onnx(format!("latent shape: {e}")))?
            .into_tvalue();
        let mut out = Vec::with_capacity(xyz.len());
        let mut buf = Vec::with_capacity(self.chunk * 3);
        for part in xyz.chunks(self.chunk) {
            buf.clear();
            buf.extend(part.iter().flatten());
            let last = part.last().copied().unwrap_or([0.0; 3]);
            while buf.len() < self.chunk * 3 {
                buf.extend_from_slice(&last);
            }
            let t = tract_onnx::prelude::Tensor::from_shape(&[self.chunk, 3], &buf)
                .map_err(|e| TrainError::Onnx(format!("xyz shape: {e}")))?;
            let res = self
                .decoder
                .run(tvec!(z.clone(), t.into_tvalue()))
                .map_err(|e| TrainError::Onnx(format!("decoder: {e:#}")))?;
            let v = res
                .first()
                .ok_or_else(|| TrainError::Onnx("decoder has no output".into()))?
                .to_plain_array_view::<f32>()
                .map_err(|e| TrainError::Onnx(format!("value: {e:#}")))?;
            if v.len() != self.chunk {
                return Err(TrainError::Onnx(format!(
                    "decoder gave {} values for {} queries",
                    v.len(),
                    self.chunk
                )));
            }
            out.extend(v.iter().take(part.len()).copied());
        }
        Ok(out)
    }
}

/// How closely tract reproduced burn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportCheck {
    /// Largest |burn - tract| of the latent over the probes.
    pub encoder_diff: f32,
    /// Largest |burn - tract| of the decoder value over the probes' latents at
    /// [`CHECK_QUERIES`] points.
    pub decoder_diff: f32,
    /// Encoder file size, bytes.
    pub encoder_bytes: u64,
    /// Decoder file size, bytes.
    pub decoder_bytes: u64,
}

/// The 32^3 cell centres of the bounds (the check's query points).
pub fn check_points() -> Vec<[f32; 3]> {
    let n = 32;
    let c =
        |a: usize, i: usize| BOUNDS[a] + (BOUNDS[a + 3] - BOUNDS[a]) * (i as f32 + 0.5) / n as f32;
    let mut v = Vec::with_capacity(n * n * n);
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                v.push([c(0, i), c(1, j), c(2, k)]);
            }
        }
    }
    v
}

/// Writes `path` (encoder) and [`decoder_path`]`(path)`, loads both with tract (decoder at
/// [`CHECK_QUERIES`] query points) and checks that they reproduce burn on the `probes`
/// (normalised `[1, 3, H, W]` pictures) within `tol`.
#[allow(clippy::too_many_arguments)]
pub fn export_implicit<B: Backend>(
    enc: &ImageEncoder<B>,
    dec: &ImplicitDecoder<B>,
    cfg: &ImplicitConfig,
    info: &ImplicitExportInfo,
    path: &Path,
    probes: &[Vec<f32>],
    tol: f32,
    device: &B::Device,
) -> Result<ExportCheck, TrainError> {
    cfg.validate()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    let dpath = decoder_path(path);
    let dfile = dpath
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| TrainError::Config(format!("bad model path {}", path.display())))?
        .to_string();
    let scale = info.value_scale.unwrap_or(1.0);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(TrainError::Config(format!(
            "value scale must be > 0, got {scale}"
        )));
    }
    encoder_graph(enc, cfg, &metadata(cfg, info, Some(&dfile)))?
        .write(path)
        .map_err(onnx_err)?;
    decoder_graph(dec, cfg, &metadata(cfg, info, None), scale)?
        .write(&dpath)
        .map_err(onnx_err)?;
    let tr = TractImplicit::load(path, cfg.encoder.image, cfg.latent, CHECK_QUERIES)?;
    let pts = check_points();
    let flat: Vec<f32> = pts.iter().flatten().copied().collect();
    let xyz = Tensor::<B, 3>::from_data(TensorData::new(flat, [1, pts.len(), 3]), device);
    let side = cfg.encoder.image;
    let mut check = ExportCheck::default();
    for probe in probes {
        let img =
            Tensor::<B, 4>::from_data(TensorData::new(probe.clone(), [1, 3, side, side]), device);
        let z = enc.forward(img);
        let want_z = floats(z.clone())?;
        let got_z = tr.latent(probe)?;
        check.encoder_diff = check.encoder_diff.max(max_abs_diff(&want_z, &got_z)?);
        // the decoder on burn's latent, so that the two parts are checked separately
        let want_v: Vec<f32> = floats(dec.forward(z, xyz.clone()))?
            .into_iter()
            .map(|v| v * scale)
            .collect();
        let got_v = tr.values(&want_z, &pts)?;
        check.decoder_diff = check.decoder_diff.max(max_abs_diff(&want_v, &got_v)?);
    }
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    check.encoder_bytes = size(path);
    check.decoder_bytes = size(&dpath);
    within_tolerance(path, check.encoder_diff, tol)?;
    within_tolerance(&dpath, check.decoder_diff, tol)?;
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_file_name_follows_the_convention() {
        assert_eq!(
            decoder_path(Path::new("models/implicit.onnx")),
            PathBuf::from("models/implicit.decoder.onnx")
        );
        assert_eq!(
            decoder_path(Path::new("x/m")),
            PathBuf::from("x/m.decoder.onnx")
        );
    }
}
