//! Implicit surfaces: DeepSDF auto-decoder (clamped L1) and occupancy networks (BCE); image
//! encoder + decoder f(z, xyz), exported as two ONNX parts with the decoder's first layer
//! split into two matrix products (docs/model-contract.md).
//!
//! * `sdf` (DeepSDF): stage 1 optimises one latent code per training object jointly with the
//!   decoder MLP `f(z, xyz)` (clamped L1 with clamp `delta`, latent-norm regulariser); stage 2
//!   trains an image encoder to predict an object's code from one of its pictures (code MSE,
//!   optionally plus the clamped-L1 SDF loss through the frozen decoder).
//! * `occupancy` (Occupancy Networks): encoder and decoder trained jointly with binary
//!   cross-entropy on inside/outside of the query points.
//!
//! The decoder's first layer is `h1 = xyz · Wx + z · Wz + b`, never a concatenation: tract
//! 0.23.9 cannot optimise the concatenated form at 32768 query points.
//!
//! Modules: [`net`] (networks, losses), [`train`] (the two pipelines), [`export`] (ONNX
//! parts + tract check), [`eval`] (marching cubes, Chamfer / F-score).

pub mod eval;
pub mod export;
pub mod net;
pub mod train;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::conv_stack;
use crate::data::{Sample, Split, SynthConfig};
use crate::TrainError;

/// Which implicit function is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Signed distance (negative inside), DeepSDF auto-decoder + image encoder.
    Sdf,
    /// Occupancy logit (positive inside), encoder + decoder trained jointly.
    Occupancy,
}

impl Kind {
    /// `sdf` or `occupancy` (the contract's `shapecast.implicit.kind`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sdf => "sdf",
            Kind::Occupancy => "occupancy",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self, TrainError> {
        match s {
            "sdf" | "deepsdf" => Ok(Kind::Sdf),
            "occupancy" | "occ" => Ok(Kind::Occupancy),
            other => Err(TrainError::Config(format!(
                "unknown implicit kind `{other}` (sdf, occupancy)"
            ))),
        }
    }
}

/// The image encoder: convolutions (ReLU), a hidden fully connected layer (ReLU) and a
/// linear layer to the latent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// Input picture side (square RGB).
    pub image: usize,
    /// Output channels of each convolution.
    pub channels: Vec<usize>,
    /// Stride of each convolution.
    pub strides: Vec<usize>,
    /// Kernel side of each convolution: empty = 3x3 (padding 1) everywhere; a layer whose
    /// kernel equals its stride is a patchify layer without padding ([`crate::conv_stack`]).
    #[serde(default)]
    pub kernels: Vec<usize>,
    /// Width of the hidden fully connected layer.
    pub hidden: usize,
}

impl EncoderConfig {
    /// Side of the last feature map.
    pub fn feature_side(&self) -> usize {
        conv_stack::feature_side(self.image, &self.kernels, &self.strides)
    }

    /// Length of the flattened features.
    pub fn feature_len(&self) -> usize {
        let s = self.feature_side();
        self.channels.last().copied().unwrap_or(3) * s * s
    }
}

/// The decoder MLP `f(z, xyz)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// Width of every hidden layer.
    pub hidden: usize,
    /// Hidden layers after the (split) first layer.
    pub layers: usize,
}

/// The data of an implicit run (objects carry SDF samples): synthetic, or Pix3D (ShapeNet
/// renderings have no SDF samples and are refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImplicitData {
    /// `synthetic` (procedural, built in) or `pix3d` (section `pix3d`); see
    /// [`crate::datasets`]. Older runs: `synthetic`.
    #[serde(default = "crate::datasets::default_kind")]
    pub kind: String,
    /// Dataset seed (synthetic: objects, views, split; Pix3D: the hashed split).
    pub seed: u64,
    /// Procedural objects per class, all splits together; synthetic only.
    pub objects_per_class: usize,
    /// Pictures per object; synthetic only.
    pub views: usize,
    /// Ground-truth surface points per object (evaluation).
    pub gt_points: usize,
    /// SDF samples per object (half near the surface, half uniform).
    pub sdf_samples: usize,
    /// Training pictures held in memory (0 = the whole train split).
    pub train_samples: usize,
    /// Validation pictures for the periodic validation.
    pub val_samples: usize,
    /// ShapeNet renderings when `kind` is `shapenet-r2n2` (refused: no SDF samples; kept
    /// so that the error names what is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shapenet: Option<crate::datasets::ShapeNetSource>,
    /// Pix3D when `kind` is `pix3d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pix3d: Option<crate::datasets::Pix3dSource>,
}

/// Everything an implicit run needs; saved as `config.json` in the run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImplicitConfig {
    /// Preset the run started from.
    pub preset: String,
    /// `shapecast.model_id` of the export.
    pub model_id: String,
    /// SDF or occupancy.
    pub kind: Kind,
    /// Latent size Z.
    pub latent: usize,
    /// Image encoder.
    pub encoder: EncoderConfig,
    /// Decoder MLP.
    pub decoder: DecoderConfig,
    /// Data.
    pub data: ImplicitData,
    /// Objects (auto-decoder) or pictures (encoder stages) per step.
    pub batch: usize,
    /// Query points per object per step.
    pub queries: usize,
    /// Steps of stage 1 (sdf: auto-decoder; occupancy: the joint training).
    pub steps: usize,
    /// Steps of stage 2 (sdf only: image encoder -> code).
    pub encoder_steps: usize,
    /// Peak learning rate (Adam), cosine decay to `lr * lr_final_ratio`.
    pub lr: f64,
    /// Final learning rate as a fraction of `lr`.
    pub lr_final_ratio: f64,
    /// Linear warm-up steps (each stage).
    pub warmup: usize,
    /// DeepSDF clamp distance delta (object-frame units).
    pub clamp: f32,
    /// Weight of the latent-norm regulariser (mean squared norm of the batch's codes).
    pub latent_reg: f32,
    /// Standard deviation of the initial codes.
    pub code_init_std: f32,
    /// The codes are stored divided by this factor and multiplied back in the forward pass,
    /// so Adam moves them this many times faster than the decoder's weights (each code only
    /// gets a gradient when its object is in the batch).
    #[serde(default = "default_code_lr_scale")]
    pub code_lr_scale: f32,
    /// Stage 2 (sdf): weight of the clamped-L1 SDF loss through the frozen decoder, added
    /// to the code regression loss (0 = code MSE only).
    pub encoder_sdf_weight: f32,
    /// Occupancy: weight of the inside samples in the cross-entropy; 0 = the outside/inside
    /// ratio of the training samples (balanced classes). Without it (weight 1) the thin,
    /// varied shapes, inside in well under half of the samples at every place of the box,
    /// taught the first runs to predict "outside" everywhere (no surface).
    #[serde(default)]
    pub occupancy_pos_weight: f32,
    /// Seed of initialisation, batches and query sampling.
    pub seed: u64,
    /// Steps between validations.
    pub eval_every: usize,
    /// Steps between checkpoints (weights, Adam state, progress) within a stage; 0 = at
    /// every validation. A stage's last step always checkpoints.
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Cells per axis of the dense marching-cubes grid used by validation.
    pub val_res: usize,
    /// Input normalisation mean (RGB).
    pub mean: [f32; 3],
    /// Input normalisation std (RGB).
    pub std: [f32; 3],
}

fn default_code_lr_scale() -> f32 {
    1.0
}

/// Names of the built-in presets.
pub const PRESETS: &[&str] = &["test", "cpu"];

impl ImplicitConfig {
    /// A built-in preset of `kind`: `test` (the integration test, seconds) or `cpu` (the
    /// shipped model, about 10 minutes on 2 shared cores).
    pub fn preset(name: &str, kind: Kind) -> Result<Self, TrainError> {
        let mut c = match name {
            "test" => ImplicitConfig {
                preset: name.into(),
                model_id: String::new(),
                kind,
                latent: 16,
                encoder: EncoderConfig {
                    image: 32,
                    channels: vec![8, 16, 32],
                    strides: vec![2, 2, 2],
                    kernels: vec![],
                    hidden: 64,
                },
                decoder: DecoderConfig {
                    hidden: 32,
                    layers: 2,
                },
                data: ImplicitData {
                    kind: crate::datasets::SYNTHETIC.into(),
                    seed: 7,
                    objects_per_class: 6,
                    views: 2,
                    gt_points: 512,
                    sdf_samples: 1024,
                    train_samples: 0,
                    val_samples: 4,
                    shapenet: None,
                    pix3d: None,
                },
                batch: 8,
                queries: 256,
                steps: 300,
                encoder_steps: 150,
                lr: 3e-3,
                lr_final_ratio: 0.1,
                warmup: 5,
                clamp: 0.1,
                latent_reg: 1e-4,
                code_init_std: 0.01,
                code_lr_scale: 10.0,
                encoder_sdf_weight: 0.0,
                occupancy_pos_weight: 0.0,
                seed: 1,
                eval_every: 75,
                checkpoint_every: 0,
                val_res: 16,
                mean: [0.5; 3],
                std: [0.5; 3],
            },
            "cpu" => ImplicitConfig {
                preset: name.into(),
                model_id: String::new(),
                kind,
                latent: 32,
                // the default point model's patchify stack: 8x8/s8 then 2x2/s2, no padding
                encoder: EncoderConfig {
                    image: 64,
                    channels: vec![32, 64],
                    strides: vec![8, 2],
                    kernels: vec![8, 2],
                    hidden: 256,
                },
                decoder: DecoderConfig {
                    hidden: 64,
                    layers: 3,
                },
                data: ImplicitData {
                    kind: crate::datasets::SYNTHETIC.into(),
                    seed: 2026,
                    objects_per_class: 150,
                    views: 4,
                    gt_points: 2048,
                    sdf_samples: 4096,
                    train_samples: 0,
                    val_samples: 16,
                    shapenet: None,
                    pix3d: None,
                },
                batch: 32,
                queries: 256,
                steps: 4000,
                encoder_steps: 2500,
                lr: 1e-3,
                lr_final_ratio: 0.05,
                warmup: 50,
                clamp: 0.1,
                latent_reg: 1e-4,
                code_init_std: 0.01,
                code_lr_scale: 10.0,
                encoder_sdf_weight: 1.0,
                occupancy_pos_weight: 0.0,
                seed: 1,
                eval_every: 500,
                checkpoint_every: 0,
                val_res: 32,
                mean: [0.5; 3],
                std: [0.5; 3],
            },
            other => {
                return Err(TrainError::Config(format!(
                    "unknown implicit preset `{other}` (one of {})",
                    PRESETS.join(", ")
                )))
            }
        };
        c.model_id = format!("implicit-{}-{name}", kind.name());
        Ok(c)
    }

    /// Learning rate at `step` of a stage of `total` steps (linear warm-up, cosine decay).
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        crate::lmnet::lr_at(self.lr, self.lr_final_ratio, self.warmup, total, step)
    }

    /// Steps between checkpoints (`checkpoint_every`, or `eval_every` when 0).
    pub fn checkpoint_interval(&self) -> usize {
        crate::lmnet::checkpoint_interval(self.checkpoint_every, self.eval_every)
    }

    /// Whether a checkpoint of `other` loads into this configuration's networks: same kind,
    /// latent, encoder, decoder, and data (the auto-decoder holds one code per training
    /// object).
    pub fn same_shape(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.latent == other.latent
            && self.encoder == other.encoder
            && self.decoder == other.decoder
            && self.data == other.data
    }

    /// Checks the values that would otherwise fail deep inside training or export.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |s: &str| Err(TrainError::Config(s.to_string()));
        let e = &self.encoder;
        conv_stack::check("encoder", e.image, &e.channels, &e.strides, &e.kernels)
            .map_err(TrainError::Config)?;
        if e.image < 8 || e.hidden == 0 || self.latent == 0 || self.latent > 4096 {
            return bad("encoder.image >= 8, encoder.hidden > 0 and 1 <= latent <= 4096");
        }
        if self.decoder.hidden == 0 {
            return bad("decoder.hidden must be > 0");
        }
        if self.batch == 0 || self.queries == 0 || self.steps == 0 || self.lr <= 0.0 {
            return bad("batch, queries, steps must be > 0 and lr > 0");
        }
        if self.kind == Kind::Sdf && self.encoder_steps == 0 {
            return bad("encoder_steps must be > 0 for kind sdf");
        }
        if self.clamp.is_nan()
            || self.clamp <= 0.0
            || self.code_lr_scale.is_nan()
            || self.code_lr_scale <= 0.0
            || self.latent_reg < 0.0
            || self.encoder_sdf_weight < 0.0
            || self.occupancy_pos_weight.is_nan()
            || self.occupancy_pos_weight < 0.0
        {
            return bad(
                "clamp and code_lr_scale must be > 0, latent_reg, encoder_sdf_weight and occupancy_pos_weight >= 0",
            );
        }
        crate::lmnet::check_model_id(&self.model_id)?;
        let d = &self.data;
        let synthetic = d.kind == crate::datasets::SYNTHETIC;
        if d.gt_points == 0 || d.sdf_samples == 0 {
            return bad("data.gt_points, sdf_samples must be > 0");
        }
        if synthetic && (d.objects_per_class == 0 || d.views == 0) {
            return bad("data.objects_per_class, views must be > 0");
        }
        self.spec().check()?;
        if self.val_res < 4 || self.eval_every == 0 {
            return bad("val_res must be >= 4 and eval_every > 0");
        }
        Ok(())
    }

    /// Reads a saved `config.json`.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        crate::lmnet::load_json(path)
    }

    /// Writes `config.json`.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        crate::lmnet::save_json(self, path)
    }

    /// The synthetic dataset this configuration describes (no voxels).
    pub fn synth(&self) -> SynthConfig {
        SynthConfig {
            seed: self.data.seed,
            objects_per_class: self.data.objects_per_class,
            views: self.data.views,
            image_size: self.encoder.image as u32,
            n_points: self.data.gt_points,
            voxel_res: 0,
            n_sdf: self.data.sdf_samples,
            ..SynthConfig::default()
        }
    }

    /// What the implicit trainer asks of the configured data: pictures, surface points and
    /// SDF samples.
    pub fn spec(&self) -> crate::datasets::DataSpec<'_> {
        crate::datasets::DataSpec {
            kind: &self.data.kind,
            shapenet: self.data.shapenet.as_ref(),
            pix3d: self.data.pix3d.as_ref(),
            want: self.synth(),
            part_classes: 0,
        }
    }

    /// The `shapecast.dataset` string.
    pub fn dataset_note(&self) -> String {
        if self.data.kind != crate::datasets::SYNTHETIC {
            return format!(
                "{} sdf_samples={}",
                self.spec().describe(),
                self.data.sdf_samples
            );
        }
        format!(
            "synthetic seed={} objects_per_class={} views={} sdf_samples={}",
            self.data.seed, self.data.objects_per_class, self.data.views, self.data.sdf_samples
        )
    }
}

/// Ground truth of one object.
#[derive(Debug, Clone)]
pub struct ObjectData {
    /// Object index in the whole dataset ([`Sample::object`]).
    pub object: u32,
    /// Class id.
    pub class_id: u16,
    /// Query points with signed distance (negative inside).
    pub sdf: Vec<([f32; 3], f32)>,
    /// Surface points (evaluation ground truth).
    pub points: Vec<[f32; 3]>,
}

/// One picture of one object.
#[derive(Debug, Clone)]
pub struct View {
    /// Index into [`ImplicitSet::objects`].
    pub obj: usize,
    /// RGB8 picture, `side x side x 3`.
    pub image: Vec<u8>,
}

/// One split in memory: objects (ground truth once per object) and their pictures.
#[derive(Debug, Clone)]
pub struct ImplicitSet {
    /// Picture side.
    pub side: usize,
    /// Objects.
    pub objects: Vec<ObjectData>,
    /// Pictures.
    pub views: Vec<View>,
}

impl ImplicitSet {
    /// Groups samples by object (first occurrence order).
    pub fn from_samples(samples: Vec<Sample>, side: usize) -> Result<Self, TrainError> {
        let mut objects: Vec<ObjectData> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let mut views = Vec::with_capacity(samples.len());
        for s in samples {
            if s.width as usize != side || s.height as usize != side || s.sdf.is_empty() {
                return Err(TrainError::Config(format!(
                    "sample of object {} is {}x{} with {} SDF samples (want {side}x{side}, > 0)",
                    s.object,
                    s.width,
                    s.height,
                    s.sdf.len()
                )));
            }
            let obj = *index.entry(s.object).or_insert_with(|| {
                objects.push(ObjectData {
                    object: s.object,
                    class_id: s.class_id,
                    sdf: s.sdf.clone(),
                    points: s.points.clone(),
                });
                objects.len() - 1
            });
            views.push(View {
                obj,
                image: s.image,
            });
        }
        Ok(ImplicitSet {
            side,
            objects,
            views,
        })
    }

    /// The picture of view `v` as normalised `C x H x W` f32.
    pub fn image_chw(&self, v: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
        let hw = self.side * self.side;
        let mut out = vec![0.0f32; 3 * hw];
        for (i, px) in self.views[v].image.chunks_exact(3).take(hw).enumerate() {
            for c in 0..3 {
                out[c * hw + i] = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
            }
        }
        out
    }
}

/// Loads up to `limit` pictures (0 = all) of `split`, spread evenly over the split (whole
/// objects first), on all cores.
pub fn load_set(
    cfg: &ImplicitConfig,
    split: Split,
    limit: usize,
) -> Result<ImplicitSet, TrainError> {
    let (samples, _) = crate::datasets::load_spec(&cfg.spec(), split, limit)?;
    ImplicitSet::from_samples(samples, cfg.encoder.image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip() {
        for kind in [Kind::Sdf, Kind::Occupancy] {
            for p in PRESETS {
                let c = ImplicitConfig::preset(p, kind).unwrap();
                c.validate().unwrap();
                let text = serde_json::to_string(&c).unwrap();
                let back: ImplicitConfig = serde_json::from_str(&text).unwrap();
                assert_eq!(back, c);
                assert!(c.lr_at(c.steps - 1, c.steps) < c.lr_at(c.warmup, c.steps));
            }
        }
        assert!(ImplicitConfig::preset("nope", Kind::Sdf).is_err());
        assert!("voxel".parse::<Kind>().is_err());
    }
}
