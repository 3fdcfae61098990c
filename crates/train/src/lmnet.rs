//! 3D-LMNet (Mandikal et al., BMVC 2018): latent embedding matching with a probabilistic
//! latent for several plausible reconstructions.
//!
//! 1. A point-cloud autoencoder ([`PointAe`]): a PointNet-style shared per-point MLP with a
//!    max pool gives the latent `z`; an MLP decodes `z` to `N x 3` points; loss Chamfer.
//! 2. An image encoder ([`LmImage`]) is trained against the frozen autoencoder: it predicts
//!    the mean `mu` and the log standard deviation `log_sigma` of the latent. Its loss is the
//!    paper's probabilistic variant: the mean hypothesis matches the ground-truth latent
//!    (L1), the best of `K` drawn latents `mu + sigma * eps_k` matches it too (L1), and the
//!    view-specific *diversity loss* `|sigma - sigma_view|^2` keeps `sigma` from collapsing
//!    to 0: `sigma_view` grows with the ambiguity of the view (see [`view_ambiguity`])
//!    times the per-dimension spread of the training latents.
//! 3. The export decodes `K` latents `mu + sigma * eps_k` with `K` unit-normal samples
//!    `eps_k` baked into the graph as constants (deterministic; `eps_0 = 0`, so hypothesis 0
//!    is the mean, the most likely one, first as the contract asks): `points` `[1, K, N, 3]`.
//!
//! The image encoder ([`ImageEncoder`]) and the ONNX helpers here are shared with the mesh
//! method ([`crate::mesh`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Initializer, Module};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::activation::{relu, tanh};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use shapecast_onnx::{Dim, GraphBuilder};

use crate::conv_stack;
use crate::data::{Sample, Split, SynthConfig};
use crate::eval::{point_metrics, PointMetrics};
use crate::export::{conv_relu_stack, input_metadata, trained_by, within_tolerance, write_graph};
pub(crate) use crate::export::{floats, fmt_list, linear as export_linear, max_abs_diff, onnx_err};
use crate::inference::TractRunner;
use crate::loss::point_loss_indexed;
use crate::TrainError;

/// Contract version written into every export.
pub const CONTRACT: &str = "1";

// ------------------------------------------------------------------ shared: data

/// The data of a run (pictures of `image` pixels, `gt_points` surface points): the
/// synthetic generator, or ShapeNet / Pix3D on disk (`kind`, see [`crate::datasets`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthData {
    /// `synthetic` (procedural, built in), `shapenet-r2n2` (section `shapenet`) or `pix3d`
    /// (section `pix3d`). Older runs: `synthetic`.
    #[serde(default = "crate::datasets::default_kind")]
    pub kind: String,
    /// Dataset seed (synthetic: objects, views, split; ShapeNet without split files and
    /// Pix3D: the hashed split).
    pub seed: u64,
    /// Procedural objects per class (all splits together; about 80/10/10); synthetic only.
    pub objects_per_class: usize,
    /// Views rendered per object; synthetic only.
    pub views: usize,
    /// Ground-truth surface points per sample.
    pub gt_points: usize,
    /// Training samples held in memory (0 = the whole train split).
    pub train_samples: usize,
    /// Validation samples used during training.
    pub val_samples: usize,
    /// Test samples of `eval` (0 = the whole test split).
    pub test_samples: usize,
    /// ShapeNet renderings (3D-R2N2 layout) when `kind` is `shapenet-r2n2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shapenet: Option<crate::datasets::ShapeNetSource>,
    /// Pix3D when `kind` is `pix3d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pix3d: Option<crate::datasets::Pix3dSource>,
}

impl SynthData {
    /// The CI-sized data of the `test` presets (10 objects per class, 2 views).
    pub fn test(gt_points: usize) -> Self {
        Self {
            kind: crate::datasets::SYNTHETIC.into(),
            seed: 7,
            objects_per_class: 10,
            views: 2,
            gt_points,
            train_samples: 0,
            val_samples: 8,
            test_samples: 8,
            shapenet: None,
            pix3d: None,
        }
    }

    /// The data of the shipped models (160 objects per class, 4 views, 1024 points).
    pub fn cpu_small() -> Self {
        Self {
            kind: crate::datasets::SYNTHETIC.into(),
            seed: 2026,
            objects_per_class: 160,
            views: 4,
            gt_points: 1024,
            train_samples: 0,
            val_samples: 64,
            test_samples: 0,
            shapenet: None,
            pix3d: None,
        }
    }

    /// The generator settings for pictures of `image` pixels.
    pub fn synth(&self, image: usize) -> SynthConfig {
        SynthConfig {
            seed: self.seed,
            objects_per_class: self.objects_per_class,
            views: self.views,
            image_size: image as u32,
            n_points: self.gt_points,
            voxel_res: 0,
            n_sdf: 0,
            ..SynthConfig::default()
        }
    }

    /// What the point trainers ask of the data for pictures of `image` pixels: surface
    /// points, no part labels.
    pub fn spec(&self, image: usize) -> crate::datasets::DataSpec<'_> {
        crate::datasets::DataSpec {
            kind: &self.kind,
            shapenet: self.shapenet.as_ref(),
            pix3d: self.pix3d.as_ref(),
            want: self.synth(image),
            part_classes: 0,
        }
    }

    /// Checks `kind`, its section, and the counts the data needs.
    pub fn validate(&self) -> Result<(), TrainError> {
        let synthetic = self.kind == crate::datasets::SYNTHETIC;
        if self.gt_points == 0 || (synthetic && (self.objects_per_class == 0 || self.views == 0)) {
            return Err(TrainError::Config(
                "data.gt_points (and for synthetic data objects_per_class, views) must be > 0"
                    .into(),
            ));
        }
        self.spec(8).check()
    }

    /// `shapecast.dataset` text.
    pub fn describe(&self) -> String {
        self.spec(0).describe()
    }

    /// Loads up to `limit` samples (0 = all) of `split`, spread evenly, on all cores.
    pub fn load(
        &self,
        image: usize,
        split: Split,
        limit: usize,
    ) -> Result<Vec<Sample>, TrainError> {
        Ok(crate::datasets::load_spec(&self.spec(image), split, limit)?.0)
    }
}

/// Pictures `[B, 3, H, W]` and ground-truth points `[B, M, 3]` of a batch.
pub fn batch_tensors<B: Backend>(
    samples: &[&Sample],
    mean: [f32; 3],
    std: [f32; 3],
    device: &B::Device,
) -> Result<(Tensor<B, 4>, Tensor<B, 3>), TrainError> {
    let first = samples
        .first()
        .ok_or_else(|| TrainError::Config("empty batch".into()))?;
    let (w, h, m) = (
        first.width as usize,
        first.height as usize,
        first.points.len(),
    );
    let mut img: Vec<f32> = Vec::with_capacity(samples.len() * 3 * w * h);
    let mut pts: Vec<f32> = Vec::with_capacity(samples.len() * m * 3);
    for s in samples {
        if s.width as usize != w || s.height as usize != h || s.points.len() != m || m == 0 {
            return Err(TrainError::Config(format!(
                "samples differ in size or have no points: {}x{} with {} points vs {w}x{h} with {m}",
                s.width,
                s.height,
                s.points.len()
            )));
        }
        img.extend(s.image_chw(mean, std));
        pts.extend(s.points.iter().flatten());
    }
    let b = samples.len();
    Ok((
        Tensor::from_data(TensorData::new(img, [b, 3, h, w]), device),
        Tensor::from_data(TensorData::new(pts, [b, m, 3]), device),
    ))
}

/// Deterministic epoch-shuffled batch order over `n` samples.
#[derive(Debug)]
pub struct BatchOrder {
    seed: u64,
    n: usize,
    batch: usize,
    order: Vec<usize>,
    epoch: usize,
}

impl BatchOrder {
    /// Batches of `batch` indices out of `0..n`.
    pub fn new(seed: u64, n: usize, batch: usize) -> Self {
        Self {
            seed,
            n,
            batch: batch.max(1),
            order: Vec::new(),
            epoch: usize::MAX,
        }
    }

    /// Indices of the batch of `step`.
    pub fn at(&mut self, step: usize) -> Vec<usize> {
        let per_epoch = (self.n / self.batch).max(1);
        let epoch = step / per_epoch;
        if epoch != self.epoch {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                self.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9),
            );
            self.order = (0..self.n).collect();
            self.order.shuffle(&mut rng);
            self.epoch = epoch;
        }
        let pos = (step % per_epoch) * self.batch;
        (0..self.batch)
            .map(|i| self.order[(pos + i) % self.order.len()])
            .collect()
    }
}

/// Learning rate at `step`: linear warm-up, cosine decay to `lr * final_ratio`.
pub fn lr_at(lr: f64, final_ratio: f64, warmup: usize, steps: usize, step: usize) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (steps.saturating_sub(warmup).max(1)) as f64;
    let lo = lr * final_ratio;
    lo + 0.5 * (lr - lo) * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())
}

/// A metrics CSV (`step,lr,train_loss,train_aux,val_chamfer_l2,val_chamfer_l1,val_fscore_1pct,elapsed_s`),
/// the column layout [`crate::plot::loss_curve_png`] reads.
#[derive(Debug)]
pub struct MetricsCsv {
    path: PathBuf,
}

impl MetricsCsv {
    /// Creates (truncates) the file and writes the header.
    pub fn create(path: &Path) -> Result<Self, TrainError> {
        let mut f = std::fs::File::create(path).map_err(|e| TrainError::io(path, e))?;
        writeln!(
            f,
            "step,lr,train_loss,train_aux,val_chamfer_l2,val_chamfer_l1,val_fscore_1pct,elapsed_s"
        )
        .map_err(|e| TrainError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Appends a row.
    pub fn row(
        &self,
        step: usize,
        lr: f64,
        loss: f32,
        aux: f32,
        val: Option<&PointMetrics>,
        elapsed: f64,
    ) -> Result<(), TrainError> {
        let v = val
            .map(|m| {
                format!(
                    "{:.6},{:.6},{:.3}",
                    m.chamfer_l2, m.chamfer_l1, m.fscore_1pct
                )
            })
            .unwrap_or_else(|| ",,".into());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| TrainError::io(&self.path, e))?;
        writeln!(f, "{step},{lr:.6e},{loss:.6},{aux:.6},{v},{elapsed:.1}")
            .map_err(|e| TrainError::io(&self.path, e))
    }

    /// Continues the CSV of a stage resumed at `step` (rows logged after it dropped), or
    /// creates it when the stage starts fresh (`step` 0) or the file is missing.
    pub fn resume(path: &Path, step: usize) -> Result<Self, TrainError> {
        if step == 0 || !path.exists() {
            return Self::create(path);
        }
        trim_csv_after(path, step)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// Draws the loss curve PNG beside the CSV.
    pub fn plot(&self, out: &Path) -> Result<(), TrainError> {
        crate::plot::loss_curve_png(&self.path, out)
    }
}

/// Checks a configuration's `model_id` (`shapecast.model_id`: 1..=32 ASCII characters).
pub(crate) fn check_model_id(model_id: &str) -> Result<(), TrainError> {
    if model_id.is_empty() || model_id.len() > 32 || !model_id.is_ascii() {
        return Err(TrainError::Config(
            "model_id must be 1..=32 ASCII characters".into(),
        ));
    }
    Ok(())
}

/// Steps between checkpoints: `checkpoint_every`, or `eval_every` when that is 0.
pub(crate) fn checkpoint_interval(checkpoint_every: usize, eval_every: usize) -> usize {
    if checkpoint_every == 0 {
        eval_every
    } else {
        checkpoint_every
    }
}

pub(crate) fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

pub(crate) fn record_err(path: &Path, e: burn::record::RecorderError) -> TrainError {
    TrainError::Record {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Saves a module's weights under `path` (burn adds `.mpk`).
pub(crate) fn save_module<B: Backend, M: Module<B>>(m: &M, path: &Path) -> Result<(), TrainError> {
    m.clone()
        .save_file(path, &recorder())
        .map_err(|e| record_err(path, e))
}

/// Loads the weights saved under `path` into `m`.
pub(crate) fn load_module<B: Backend, M: Module<B>>(
    m: M,
    path: &Path,
    device: &B::Device,
) -> Result<M, TrainError> {
    m.load_file(path, &recorder(), device)
        .map_err(|e| record_err(path, e))
}

pub(crate) fn save_json<T: Serialize>(v: &T, path: &Path) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| TrainError::Parse {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(|e| TrainError::io(path, e))
}

pub(crate) fn load_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Parse {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

// ------------------------------------------------------------------ shared: checkpoints

/// Progress of a training stage, saved beside its weights at every checkpoint (and what a
/// resumed stage continues from).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageState {
    /// Steps done.
    pub step: usize,
    /// Wall seconds of the stage so far (all calls together).
    pub elapsed_s: f64,
    /// Mean loss of the first logging window of the stage.
    pub first_loss: Option<f32>,
    /// Mean loss of the latest logging window.
    pub last_loss: Option<f32>,
    /// Latest validation figures.
    pub val: Option<PointMetrics>,
    /// Word position of the stage's own ChaCha8 sampling generator (decimal; empty when
    /// the stage draws nothing from one), so a resumed stage draws what an uninterrupted
    /// one would.
    #[serde(default)]
    pub rng_word_pos: String,
}

impl StageState {
    /// The word position of a generator, as saved.
    pub fn save_rng(&mut self, rng: &rand_chacha::ChaCha8Rng) {
        self.rng_word_pos = rng.get_word_pos().to_string();
    }

    /// Moves `rng` to the saved word position (no-op when none was saved).
    pub fn restore_rng(&self, rng: &mut rand_chacha::ChaCha8Rng) -> Result<(), TrainError> {
        if self.rng_word_pos.is_empty() {
            return Ok(());
        }
        let pos: u128 = self.rng_word_pos.parse().map_err(|_| {
            TrainError::Config(format!(
                "checkpoint: bad generator position `{}`",
                self.rng_word_pos
            ))
        })?;
        rng.set_word_pos(pos);
        Ok(())
    }

    /// Summary of the stage at this point.
    pub fn summary(&self, resumed_from: usize) -> StageSummary {
        StageSummary {
            steps: self.step,
            seconds: self.elapsed_s,
            first_loss: self.first_loss.unwrap_or(f32::NAN),
            last_loss: self.last_loss.unwrap_or(f32::NAN),
            val: self.val.clone(),
            resumed_from,
        }
    }
}

/// Bookkeeping shared by the training loops of the run-folder stages (lmnet's two stages,
/// mesh): the loss window, the validation and `metrics.csv` rows at logging steps, the
/// progress in [`StageState`] and when to checkpoint.
pub(crate) struct StageLoop {
    /// Progress (saved with each checkpoint).
    pub state: StageState,
    /// Step this call started from.
    pub start: usize,
    steps: usize,
    eval_every: usize,
    checkpoint_interval: usize,
    csv: MetricsCsv,
    t0: Instant,
    elapsed0: f64,
    // sums of the main and the extra loss, and the steps in the window
    window: (f64, f64, usize),
}

impl StageLoop {
    /// Starts (or continues, from `state`) a stage of `steps` steps whose rows go to `csv`.
    pub fn new(
        state: StageState,
        csv: &Path,
        steps: usize,
        eval_every: usize,
        checkpoint_interval: usize,
    ) -> Result<Self, TrainError> {
        let start = state.step;
        let csv = MetricsCsv::resume(csv, start)?;
        Ok(Self {
            elapsed0: state.elapsed_s,
            state,
            start,
            steps,
            eval_every,
            checkpoint_interval,
            csv,
            t0: Instant::now(),
            window: (0.0, 0.0, 0),
        })
    }

    /// Records step `step`'s `loss` and `extra` loss (the CSV's extra column). At a logging
    /// step writes a CSV row with the window means, and at a validation step (when `has_val`)
    /// first calls `validate(done, loss, extra)` (which logs). Returns whether the step
    /// checkpoints.
    pub fn after_step(
        &mut self,
        step: usize,
        lr: f64,
        loss: f32,
        extra: f32,
        has_val: bool,
        validate: impl FnOnce(usize, f32, f32) -> Result<PointMetrics, TrainError>,
    ) -> Result<bool, TrainError> {
        self.window.0 += f64::from(loss);
        self.window.1 += f64::from(extra);
        self.window.2 += 1;
        let done = step + 1;
        let state = &mut self.state;
        state.step = done;
        state.elapsed_s = self.elapsed0 + self.t0.elapsed().as_secs_f64();
        let at_eval = done % self.eval_every == 0 || done == self.steps;
        if done % log_window() == 0 || at_eval {
            let n = self.window.2 as f64;
            let (l, e) = ((self.window.0 / n) as f32, (self.window.1 / n) as f32);
            self.window = (0.0, 0.0, 0);
            state.first_loss.get_or_insert(l);
            state.last_loss = Some(l);
            let m = if at_eval && has_val {
                Some(validate(done, l, e)?)
            } else {
                None
            };
            self.csv.row(done, lr, l, e, m.as_ref(), state.elapsed_s)?;
            if m.is_some() {
                state.val = m;
            }
        }
        Ok(done % self.checkpoint_interval == 0 || done == self.steps)
    }

    /// The stage's summary and its CSV (to plot).
    pub fn finish(self) -> (StageSummary, MetricsCsv) {
        (self.state.summary(self.start), self.csv)
    }
}

/// File names of one stage's checkpoint inside a run folder: the weights (burn adds
/// `.mpk`), the optimizer state and the [`StageState`] JSON.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointFiles {
    /// Weights.
    pub weights: &'static str,
    /// Optimizer (Adam moments).
    pub optim: &'static str,
    /// Progress.
    pub state: &'static str,
}

/// Saves weights, optimizer state and progress (in that order: the progress file names a
/// complete checkpoint).
pub fn save_checkpoint<B, M, O, S>(
    model: &M,
    optim: &O,
    state: &S,
    out: &Path,
    files: CheckpointFiles,
) -> Result<(), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    S: Serialize,
{
    save_module(model, &out.join(files.weights))?;
    Recorder::<B>::record(&recorder(), optim.to_record(), out.join(files.optim))
        .map_err(|e| record_err(&out.join(files.optim), e))?;
    save_json(state, &out.join(files.state))
}

/// Loads the checkpoint saved by [`save_checkpoint`] into `model` and `optim`; the progress
/// is `None` (and both come back unchanged) when the run folder has no progress file for
/// the stage.
pub fn load_checkpoint<B, M, O, S>(
    model: M,
    optim: O,
    out: &Path,
    files: CheckpointFiles,
    device: &B::Device,
) -> Result<(M, O, Option<S>), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    S: for<'de> Deserialize<'de>,
{
    let sp = out.join(files.state);
    if !sp.exists() {
        return Ok((model, optim, None));
    }
    let state: S = load_json(&sp)?;
    let model = load_module(model, &out.join(files.weights), device)?;
    let rec = Recorder::<B>::load(&recorder(), out.join(files.optim), device)
        .map_err(|e| record_err(&out.join(files.optim), e))?;
    Ok((model, optim.load_record(rec), Some(state)))
}

/// Drops the rows of a metrics CSV logged after `step` (first column; a run stopped
/// between two checkpoints logged rows that its resumed run logs again). The header and
/// rows whose first column is not a number stay.
pub fn trim_csv_after(path: &Path, step: usize) -> Result<(), TrainError> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let s = line.split(',').next().and_then(|f| f.parse::<usize>().ok());
        if s.is_none_or(|s| s <= step) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    std::fs::write(path, kept).map_err(|e| TrainError::io(path, e))
}

/// The seed of the backend generator for a stage started at `step`: the configured seed for
/// a fresh stage, mixed with the step for a resumed one (burn's generator state is not
/// saved, so a resumed stage is reproducible, not bit-identical to an uninterrupted one).
pub fn resume_seed(seed: u64, step: usize) -> u64 {
    if step == 0 {
        seed
    } else {
        seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

// ------------------------------------------------------------------ shared: image encoder

pub(crate) use crate::conv_stack::he;

/// Shape of an [`ImageEncoder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    /// Input picture side in pixels (square RGB).
    pub image: usize,
    /// Output channels of each convolution (batch norm + ReLU after each).
    pub channels: Vec<usize>,
    /// Stride of each convolution.
    pub strides: Vec<usize>,
    /// Kernel side of each convolution: empty = 3x3 (padding 1) everywhere; a layer whose
    /// kernel equals its stride is a patchify layer without padding ([`crate::conv_stack`]).
    #[serde(default)]
    pub kernels: Vec<usize>,
    /// Width of the fully connected layer after the convolutions.
    pub hidden: usize,
    /// ReLU after the fully connected layer. With it, most hidden units of the first
    /// cpu-small runs died (77-87 % never active on test pictures); `false` keeps that layer
    /// linear.
    #[serde(default = "default_true")]
    pub hidden_relu: bool,
}

fn default_true() -> bool {
    true
}

impl EncoderConfig {
    /// The CI-sized encoder of the `test` presets: 32-pixel pictures, the shipped models'
    /// patchify form at half size (4x4/s4 3 -> 16, then 2x2/s2 16 -> 32; 4x4x32 features).
    pub fn test() -> Self {
        Self {
            image: 32,
            channels: vec![16, 32],
            strides: vec![4, 2],
            kernels: vec![4, 2],
            hidden: 64,
            hidden_relu: true,
        }
    }

    /// The encoder of the shipped models (64-pixel pictures): a patchify stack, 8x8/s8
    /// (3 -> 32) and 2x2/s2 (32 -> 64) without padding, the default point model's form.
    pub fn cpu_small() -> Self {
        Self {
            image: 64,
            channels: vec![32, 64],
            strides: vec![8, 2],
            kernels: vec![8, 2],
            hidden: 256,
            hidden_relu: true,
        }
    }

    /// Length of the flattened convolution output.
    pub fn feature_len(&self) -> usize {
        let side = conv_stack::feature_side(self.image, &self.kernels, &self.strides);
        self.channels.last().copied().unwrap_or(3) * side * side
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), TrainError> {
        conv_stack::check(
            "encoder",
            self.image,
            &self.channels,
            &self.strides,
            &self.kernels,
        )
        .map_err(TrainError::Config)?;
        if self.image < 8 || self.hidden == 0 {
            return Err(TrainError::Config(
                "encoder.image must be >= 8 and encoder.hidden > 0".into(),
            ));
        }
        Ok(())
    }

    /// Builds the encoder with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ImageEncoder<B> {
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut cin = 3;
        for (i, &cout) in self.channels.iter().enumerate() {
            convs.push(conv_stack::conv(
                cin,
                cout,
                &self.kernels,
                &self.strides,
                i,
                he(),
                device,
            ));
            norms.push(BatchNormConfig::new(cout).init(device));
            cin = cout;
        }
        let fc = LinearConfig::new(self.feature_len(), self.hidden)
            .with_initializer(he())
            .init(device);
        ImageEncoder {
            convs,
            norms,
            fc,
            hidden_relu: self.hidden_relu,
        }
    }
}

/// A strided CNN (convolutions, batch norm, ReLU) and a fully connected layer (ReLU).
#[derive(Module, Debug)]
pub struct ImageEncoder<B: Backend> {
    /// Convolutions.
    pub convs: Vec<Conv2d<B>>,
    /// Batch norms after the convolutions (folded into them at export).
    pub norms: Vec<BatchNorm<B>>,
    /// Fully connected layer.
    pub fc: Linear<B>,
    /// ReLU after `fc`.
    pub hidden_relu: bool,
}

impl<B: Backend> ImageEncoder<B> {
    /// Features `[B, hidden]` of pictures `[B, 3, H, W]`.
    pub fn forward(&self, image: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = image;
        for (conv, bn) in self.convs.iter().zip(&self.norms) {
            x = relu(bn.forward(conv.forward(x)));
        }
        let [b, c, h, w] = x.dims();
        let y = self.fc.forward(x.reshape([b, c * h * w]));
        if self.hidden_relu {
            relu(y)
        } else {
            y
        }
    }
}

/// Writes the encoder (batch norms folded into the convolutions) on input `x`
/// `[1, 3, H, W]`; returns the features tensor `[1, hidden]`.
pub(crate) fn export_encoder<B: Backend>(
    g: &mut GraphBuilder,
    enc: &ImageEncoder<B>,
    x: &str,
) -> Result<String, TrainError> {
    let x = conv_relu_stack(g, x, enc.convs.iter().zip(enc.norms.iter().map(Some)))?;
    let flat = g.flatten(&x, 1);
    let h = export_linear(g, &flat, "fc", &enc.fc)?;
    Ok(if enc.hidden_relu { g.relu(&h) } else { h })
}

/// The contract metadata every head shares (f32, object frame, normalised units).
pub fn base_metadata(
    head: &str,
    model_id: &str,
    image: usize,
    mean: [f32; 3],
    std: [f32; 3],
    dataset: &str,
) -> Vec<(String, String)> {
    let mut kv = input_metadata(head, model_id, image, &mean, &std);
    kv.extend([trained_by(""), ("shapecast.dataset".into(), dataset.into())]);
    kv
}

// ------------------------------------------------------------------ configuration

/// Everything an LMNet run needs; saved as `config.json` in the run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LmnetConfig {
    /// Preset the run started from.
    pub preset: String,
    /// `shapecast.model_id` of the export.
    pub model_id: String,
    /// The data.
    pub data: SynthData,
    /// Image encoder.
    pub encoder: EncoderConfig,
    /// Latent size `Z`.
    pub latent: usize,
    /// Widths of the shared per-point MLP of the autoencoder's encoder (the last is `Z`
    /// implicitly: the MLP ends with a layer to `latent`).
    pub ae_mlp: Vec<usize>,
    /// Hidden widths of the decoder MLP.
    pub ae_decoder: Vec<usize>,
    /// Points per hypothesis `N` (the autoencoder's output; equals `data.gt_points`).
    pub points: usize,
    /// Hypotheses `K` in the export.
    pub hypotheses: usize,
    /// Latent samples drawn per picture during training of the probabilistic encoder.
    pub train_samples_k: usize,
    /// Half-extent of the decoder's output box (`extent * tanh`).
    pub extent: f32,
    /// Images (or clouds) per step.
    pub batch: usize,
    /// Autoencoder steps.
    pub ae_steps: usize,
    /// Image-encoder steps.
    pub image_steps: usize,
    /// Peak learning rate (Adam).
    pub lr: f64,
    /// Final learning rate as a fraction of `lr` (cosine decay).
    pub lr_final_ratio: f64,
    /// Warm-up steps of each stage.
    pub warmup: usize,
    /// Weight of the diversity loss.
    pub diversity_weight: f32,
    /// Target `sigma` of the most ambiguous view, as a fraction of the per-dimension
    /// standard deviation of the training latents.
    pub sigma_scale: f32,
    /// Seed of initialisation, batch order and the baked samples.
    pub seed: u64,
    /// Steps between validations.
    pub eval_every: usize,
    /// Steps between checkpoints (weights, Adam state, progress) of each stage; 0 = at every
    /// validation. A stage's last step always checkpoints.
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Input normalisation mean.
    pub mean: [f32; 3],
    /// Input normalisation std.
    pub std: [f32; 3],
}

/// Names of the LMNet presets.
pub const PRESETS: &[&str] = &["test", "cpu-small"];

impl LmnetConfig {
    /// A preset: `test` (CI, seconds) or `cpu-small` (the shipped model, ~12 min on 2 cores).
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        match name {
            "test" => Ok(Self {
                preset: name.into(),
                model_id: "lmnet-test".into(),
                data: SynthData::test(128),
                encoder: EncoderConfig::test(),
                latent: 32,
                ae_mlp: vec![32, 64],
                ae_decoder: vec![64],
                points: 128,
                hypotheses: 3,
                train_samples_k: 4,
                extent: 0.5,
                batch: 8,
                ae_steps: 120,
                image_steps: 120,
                lr: 2e-3,
                lr_final_ratio: 0.1,
                warmup: 5,
                diversity_weight: 1.0,
                sigma_scale: 0.5,
                seed: 1,
                eval_every: 40,
                checkpoint_every: 0,
                mean: [0.5; 3],
                std: [0.5; 3],
            }),
            "cpu-small" => Ok(Self {
                preset: name.into(),
                model_id: "lmnet-cpu-small".into(),
                data: SynthData::cpu_small(),
                encoder: EncoderConfig::cpu_small(),
                latent: 128,
                ae_mlp: vec![64, 128],
                ae_decoder: vec![256, 256],
                points: 1024,
                hypotheses: 4,
                train_samples_k: 4,
                extent: 0.5,
                batch: 16,
                ae_steps: 350,
                image_steps: 700,
                lr: 1e-3,
                lr_final_ratio: 0.05,
                warmup: 20,
                diversity_weight: 1.0,
                sigma_scale: 0.5,
                seed: 1,
                eval_every: 250,
                checkpoint_every: 0,
                mean: [0.5; 3],
                std: [0.5; 3],
            }),
            other => Err(TrainError::Config(format!(
                "unknown lmnet preset `{other}` (one of {})",
                PRESETS.join(", ")
            ))),
        }
    }

    /// Checks the values that would otherwise fail deep inside training.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.encoder.validate()?;
        let bad = |s: &str| Err(TrainError::Config(s.to_string()));
        if self.latent == 0 || self.points == 0 || self.hypotheses == 0 || self.batch == 0 {
            return bad("latent, points, hypotheses and batch must be > 0");
        }
        if self.points != self.data.gt_points {
            return bad("points must equal data.gt_points (the autoencoder reproduces the clouds)");
        }
        if self.train_samples_k == 0 || self.lr <= 0.0 || self.eval_every == 0 {
            return bad("train_samples_k, eval_every must be > 0 and lr > 0");
        }
        check_model_id(&self.model_id)?;
        self.data.validate()
    }

    /// Steps between checkpoints (`checkpoint_every`, or `eval_every` when 0).
    pub fn checkpoint_interval(&self) -> usize {
        checkpoint_interval(self.checkpoint_every, self.eval_every)
    }

    /// Whether `other` builds the same networks (a checkpoint of one loads into the other).
    pub fn same_shape(&self, other: &Self) -> bool {
        self.encoder == other.encoder
            && self.latent == other.latent
            && self.ae_mlp == other.ae_mlp
            && self.ae_decoder == other.ae_decoder
            && self.points == other.points
            && self.hypotheses == other.hypotheses
            && self.extent == other.extent
    }

    /// The `K` baked unit-normal samples `[K, Z]` (row-major); row 0 is zero (the mean).
    pub fn baked_eps(&self) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ 0x1e5_b4ed);
        let mut v = vec![0.0f32; self.hypotheses * self.latent];
        for x in v.iter_mut().skip(self.latent) {
            *x = normal(&mut rng);
        }
        v
    }
}

/// A standard normal sample (Box-Muller).
pub(crate) fn normal<R: Rng>(rng: &mut R) -> f32 {
    let u1: f32 = rng.gen_range(f32::EPSILON..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

/// Ambiguity of a view in `[0, 1]`: highest when the camera looks horizontally along the
/// object's z axis (front or back: the depth extent is hidden), lowest from the side or from
/// above. Scales the target `sigma` of the diversity loss.
pub fn view_ambiguity(s: &Sample) -> f32 {
    let az = s.camera.azimuth_deg.to_radians();
    let el = s.camera.elevation_deg.to_radians();
    (az.cos().abs() * el.cos().abs()).clamp(0.0, 1.0)
}

// ------------------------------------------------------------------ networks

/// Point-cloud autoencoder: shared per-point MLP + max pool -> latent; MLP -> `N x 3`.
#[derive(Module, Debug)]
pub struct PointAe<B: Backend> {
    /// Per-point layers (ReLU after each, the last maps to the latent).
    pub enc: Vec<Linear<B>>,
    /// Decoder layers (ReLU between, `extent * tanh` after the last).
    pub dec: Vec<Linear<B>>,
    /// `N`.
    pub points: usize,
    /// Output half-extent.
    pub extent: f32,
}

impl<B: Backend> PointAe<B> {
    /// Builds the autoencoder of `cfg`.
    pub fn new(cfg: &LmnetConfig, device: &B::Device) -> Self {
        let mut enc = Vec::new();
        let mut d = 3;
        for &w in cfg.ae_mlp.iter().chain(std::iter::once(&cfg.latent)) {
            enc.push(LinearConfig::new(d, w).with_initializer(he()).init(device));
            d = w;
        }
        let mut dec = Vec::new();
        let mut d = cfg.latent;
        for &w in &cfg.ae_decoder {
            dec.push(LinearConfig::new(d, w).with_initializer(he()).init(device));
            d = w;
        }
        dec.push(LinearConfig::new(d, cfg.points * 3).init(device));
        Self {
            enc,
            dec,
            points: cfg.points,
            extent: cfg.extent,
        }
    }

    /// Latent `[B, Z]` of clouds `[B, N, 3]`.
    pub fn encode(&self, points: Tensor<B, 3>) -> Tensor<B, 2> {
        let mut x = points;
        for l in &self.enc {
            x = relu(l.forward(x));
        }
        let [b, _, z] = x.dims();
        x.max_dim(1).reshape([b, z])
    }

    /// Clouds `[R, N, 3]` of latents `[R, Z]`.
    pub fn decode(&self, z: Tensor<B, 2>) -> Tensor<B, 3> {
        let r = z.dims()[0];
        let mut x = z;
        let last = self.dec.len() - 1;
        for (i, l) in self.dec.iter().enumerate() {
            x = l.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        tanh(x).mul_scalar(self.extent).reshape([r, self.points, 3])
    }
}

/// Image encoder predicting the latent distribution (`mu`, `log_sigma`).
#[derive(Module, Debug)]
pub struct LmImage<B: Backend> {
    /// CNN + fully connected layer.
    pub encoder: ImageEncoder<B>,
    /// Mean head.
    pub mu: Linear<B>,
    /// Log standard deviation head.
    pub log_sigma: Linear<B>,
}

impl<B: Backend> LmImage<B> {
    /// Builds the image network of `cfg`.
    pub fn new(cfg: &LmnetConfig, device: &B::Device) -> Self {
        Self {
            encoder: cfg.encoder.init(device),
            mu: LinearConfig::new(cfg.encoder.hidden, cfg.latent).init(device),
            log_sigma: LinearConfig::new(cfg.encoder.hidden, cfg.latent)
                .with_initializer(Initializer::Uniform {
                    min: -1e-3,
                    max: 1e-3,
                })
                .init(device),
        }
    }

    /// `(mu, log_sigma)`, each `[B, Z]`.
    pub fn forward(&self, image: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let h = self.encoder.forward(image);
        (self.mu.forward(h.clone()), self.log_sigma.forward(h))
    }
}

/// The whole inference model: image -> `K` hypotheses.
#[derive(Debug)]
pub struct Lmnet<B: Backend> {
    /// Image network.
    pub image: LmImage<B>,
    /// Autoencoder (its decoder is used).
    pub ae: PointAe<B>,
}

impl<B: Backend> Lmnet<B> {
    /// Points `[B, K, N, 3]` of pictures `[B, 3, H, W]` for unit-normal samples `eps`
    /// `[K, Z]`: hypothesis k decodes `mu + exp(log_sigma) * eps_k`.
    pub fn forward(&self, image: Tensor<B, 4>, eps: Tensor<B, 2>) -> Tensor<B, 4> {
        let (mu, ls) = self.image.forward(image);
        let [b, z] = mu.dims();
        let k = eps.dims()[0];
        let zk = mu.reshape([b, 1, z]) + ls.exp().reshape([b, 1, z]) * eps.reshape([1, k, z]);
        let n = self.ae.points;
        self.ae.decode(zk.reshape([b * k, z])).reshape([b, k, n, 3])
    }
}

// ------------------------------------------------------------------ files

/// File names inside a run folder.
pub mod files {
    /// Configuration.
    pub const CONFIG: &str = "config.json";
    /// Autoencoder weights (burn adds `.mpk`).
    pub const AE: &str = "ae";
    /// Image-network weights.
    pub const IMAGE: &str = "image";
    /// Per-dimension standard deviation of the training latents (JSON list).
    pub const LATENT_STD: &str = "latent_std.json";
    /// Autoencoder metrics.
    pub const AE_CSV: &str = "metrics_ae.csv";
    /// Image-stage metrics.
    pub const IMAGE_CSV: &str = "metrics_image.csv";
    /// Adam state of the autoencoder's latest checkpoint.
    pub const AE_OPTIM: &str = "ae_optim";
    /// Progress of the autoencoder's latest checkpoint.
    pub const AE_STATE: &str = "ae_state.json";
    /// Adam state of the image network's latest checkpoint.
    pub const IMAGE_OPTIM: &str = "image_optim";
    /// Progress of the image network's latest checkpoint.
    pub const IMAGE_STATE: &str = "image_state.json";
    /// Summary of the stages (JSON).
    pub const SUMMARY: &str = "summary.json";
}

/// Figures of a finished stage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageSummary {
    /// Steps run.
    pub steps: usize,
    /// Wall seconds.
    pub seconds: f64,
    /// Mean loss of the first logging window.
    pub first_loss: f32,
    /// Mean loss of the last logging window.
    pub last_loss: f32,
    /// Last validation figures (autoencoder: reconstruction of the val clouds; image stage:
    /// the mean hypothesis).
    pub val: Option<PointMetrics>,
    /// Step this call started from (0: a fresh stage; > 0: resumed from a checkpoint).
    #[serde(default)]
    pub resumed_from: usize,
}

fn log_window() -> usize {
    10
}

// ------------------------------------------------------------------ stage 1: autoencoder

/// Validation of the autoencoder: Chamfer/F-score of reconstructed val clouds.
pub fn validate_ae<B: Backend>(
    ae: &PointAe<B>,
    val: &[Sample],
    cfg: &LmnetConfig,
    device: &B::Device,
) -> Result<PointMetrics, TrainError> {
    let mut all = Vec::new();
    for chunk in val.chunks(cfg.batch) {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let (_, pts) = batch_tensors::<B>(&refs, cfg.mean, cfg.std, device)?;
        let rec = floats(ae.decode(ae.encode(pts)))?;
        for (i, s) in chunk.iter().enumerate() {
            let p: Vec<[f32; 3]> = rec[i * cfg.points * 3..(i + 1) * cfg.points * 3]
                .chunks_exact(3)
                .map(|c| [c[0], c[1], c[2]])
                .collect();
            all.push(point_metrics(&p, &s.points));
        }
    }
    Ok(PointMetrics::mean(&all))
}

/// Checkpoint files of the autoencoder stage.
pub const AE_CHECKPOINT: CheckpointFiles = CheckpointFiles {
    weights: files::AE,
    optim: files::AE_OPTIM,
    state: files::AE_STATE,
};

/// Checkpoint files of the image stage.
pub const IMAGE_CHECKPOINT: CheckpointFiles = CheckpointFiles {
    weights: files::IMAGE,
    optim: files::IMAGE_OPTIM,
    state: files::IMAGE_STATE,
};

/// Refuses to resume a run whose saved configuration (`config.json` in `out`) builds
/// other networks (`same_shape` false; `what` names them in the message); returns whether
/// a saved configuration exists.
pub(crate) fn check_resume_shape<C: for<'de> Deserialize<'de>>(
    out: &Path,
    what: &str,
    same_shape: impl FnOnce(&C) -> bool,
) -> Result<bool, TrainError> {
    let path = out.join(files::CONFIG);
    if !path.exists() {
        return Ok(false);
    }
    let saved: C = load_json(&path)?;
    if !same_shape(&saved) {
        return Err(TrainError::Config(format!(
            "{}: the saved {what} in shape from this configuration; cannot resume",
            path.display()
        )));
    }
    Ok(true)
}

/// [`check_resume_shape`] of an LMNet run.
fn check_lmnet_resume(cfg: &LmnetConfig, out: &Path) -> Result<bool, TrainError> {
    check_resume_shape(out, "networks differ", |s: &LmnetConfig| s.same_shape(cfg))
}

/// Trains the autoencoder on the ground-truth clouds of `train`; saves `ae.mpk`,
/// `metrics_ae.csv`, `loss_ae.png` and `latent_std.json` into `out`, with a checkpoint
/// (weights, Adam state, progress) every `checkpoint_interval` steps. With `resume`,
/// continues from the stage's checkpoint in `out` (refused when the saved configuration
/// has other networks); a finished stage is only reloaded.
pub fn train_ae<B: AutodiffBackend>(
    cfg: &LmnetConfig,
    train: &[Sample],
    val: &[Sample],
    out: &Path,
    resume: bool,
    device: &B::Device,
) -> Result<(PointAe<B::InnerBackend>, StageSummary), TrainError> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(TrainError::Config("no training samples".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let resume = resume && check_lmnet_resume(cfg, out)?;
    save_json(cfg, &out.join(files::CONFIG))?;
    let _rng = crate::backend::seed_exclusive::<B>(device, cfg.seed);
    let mut ae: PointAe<B> = PointAe::new(cfg, device);
    let mut optim = AdamConfig::new().init::<B, PointAe<B>>();
    let mut state = StageState::default();
    if resume {
        let (m, o, st) =
            load_checkpoint::<B, _, _, StageState>(ae, optim, out, AE_CHECKPOINT, device)?;
        (ae, optim) = (m, o);
        if let Some(st) = st {
            state = st;
            log::info!("autoencoder: resumed from step {}", state.step);
            B::seed(device, resume_seed(cfg.seed, state.step));
        }
    } else {
        // a fresh autoencoder: checkpoints of an earlier run in this folder no longer apply
        for f in [files::AE_STATE, files::IMAGE_STATE] {
            let _ = std::fs::remove_file(out.join(f));
        }
    }
    let mut lp = StageLoop::new(
        state,
        &out.join(files::AE_CSV),
        cfg.ae_steps,
        cfg.eval_every,
        cfg.checkpoint_interval(),
    )?;
    let start = lp.start;
    let mut order = BatchOrder::new(cfg.seed, train.len(), cfg.batch);
    for step in start..cfg.ae_steps {
        let refs: Vec<&Sample> = order.at(step).into_iter().map(|i| &train[i]).collect();
        let (_, pts) = batch_tensors::<B>(&refs, cfg.mean, cfg.std, device)?;
        let rec = ae.decode(ae.encode(pts.clone()));
        let loss = point_loss_indexed(rec.unsqueeze_dim::<4>(1), pts, None, None, 0.0).total;
        let lr = lr_at(cfg.lr, cfg.lr_final_ratio, cfg.warmup, cfg.ae_steps, step);
        let grads = GradientsParams::from_grads(loss.backward(), &ae);
        let v: f32 = loss.into_scalar().elem();
        if !v.is_finite() {
            return Err(TrainError::Check(format!(
                "autoencoder loss is not finite at step {step}"
            )));
        }
        ae = optim.step(lr, ae, grads);
        let checkpoint = lp.after_step(step, lr, v, 0.0, !val.is_empty(), |done, l, _| {
            let m = validate_ae(&ae.valid(), val, cfg, device)?;
            log::info!(
                "ae step {done:>5}  train chamfer {l:.5}  val chamfer-L2 {:.5}  F@1% {:.2}",
                m.chamfer_l2,
                m.fscore_1pct
            );
            Ok(m)
        })?;
        if checkpoint {
            save_checkpoint(&ae, &optim, &lp.state, out, AE_CHECKPOINT)?;
        }
    }
    let (sum, csv) = lp.finish();
    let ae = ae.valid();
    if start < cfg.ae_steps || !out.join(files::LATENT_STD).exists() {
        save_module(&ae, &out.join(files::AE))?;
        csv.plot(&out.join("loss_ae.png"))?;
        // spread of the training latents (scale of the diversity targets)
        let std = latent_std(&ae, train, cfg, device)?;
        save_json(&std, &out.join(files::LATENT_STD))?;
    }
    Ok((ae, sum))
}

/// Per-dimension standard deviation of the latents of `samples`' clouds.
pub fn latent_std<B: Backend>(
    ae: &PointAe<B>,
    samples: &[Sample],
    cfg: &LmnetConfig,
    device: &B::Device,
) -> Result<Vec<f32>, TrainError> {
    let z = cfg.latent;
    let mut s1 = vec![0.0f64; z];
    let mut s2 = vec![0.0f64; z];
    let mut n = 0usize;
    for chunk in samples.chunks(64) {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let (_, pts) = batch_tensors::<B>(&refs, cfg.mean, cfg.std, device)?;
        let lat = floats(ae.encode(pts))?;
        for row in lat.chunks_exact(z) {
            for (j, &v) in row.iter().enumerate() {
                s1[j] += f64::from(v);
                s2[j] += f64::from(v) * f64::from(v);
            }
            n += 1;
        }
    }
    let n = n.max(1) as f64;
    Ok(s1
        .iter()
        .zip(&s2)
        .map(|(a, b)| ((b / n - (a / n).powi(2)).max(0.0).sqrt()) as f32)
        .collect())
}

// ------------------------------------------------------------------ stage 2+3: image network

/// Validation of the image stage: mean-hypothesis Chamfer/F-score on `val`.
pub fn validate_image<B: Backend>(
    net: &Lmnet<B>,
    val: &[Sample],
    cfg: &LmnetConfig,
    device: &B::Device,
) -> Result<PointMetrics, TrainError> {
    let eps = Tensor::<B, 2>::zeros([1, cfg.latent], device);
    let mut all = Vec::new();
    for chunk in val.chunks(cfg.batch) {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let (img, _) = batch_tensors::<B>(&refs, cfg.mean, cfg.std, device)?;
        let p = floats(net.forward(img, eps.clone()))?;
        for (i, s) in chunk.iter().enumerate() {
            let c: Vec<[f32; 3]> = p[i * cfg.points * 3..(i + 1) * cfg.points * 3]
                .chunks_exact(3)
                .map(|c| [c[0], c[1], c[2]])
                .collect();
            all.push(point_metrics(&c, &s.points));
        }
    }
    Ok(PointMetrics::mean(&all))
}

/// Trains the image network against the frozen autoencoder `ae` (probabilistic latent,
/// best-of-K and mean latent matching, view-specific diversity loss); saves `image.mpk`,
/// `metrics_image.csv` and `loss_image.png` into `out`, with a checkpoint every
/// `checkpoint_interval` steps. With `resume`, continues from the stage's checkpoint (the
/// caller must not resume against an autoencoder that changed since).
#[allow(clippy::too_many_arguments)]
pub fn train_image<B: AutodiffBackend>(
    cfg: &LmnetConfig,
    ae: &PointAe<B::InnerBackend>,
    latent_std: &[f32],
    train: &[Sample],
    val: &[Sample],
    out: &Path,
    resume: bool,
    device: &B::Device,
) -> Result<(LmImage<B::InnerBackend>, StageSummary), TrainError> {
    cfg.validate()?;
    if latent_std.len() != cfg.latent {
        return Err(TrainError::Config(format!(
            "latent_std has {} values, latent is {}",
            latent_std.len(),
            cfg.latent
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let resume = resume && check_lmnet_resume(cfg, out)?;
    // the run's config.json records what this stage ran (e.g. an `--image-steps` override)
    save_json(cfg, &out.join(files::CONFIG))?;
    let _rng = crate::backend::seed_exclusive::<B>(device, cfg.seed.wrapping_add(1));
    let mut net: LmImage<B> = LmImage::new(cfg, device);
    let mut optim = AdamConfig::new().init::<B, LmImage<B>>();
    let mut state = StageState::default();
    if resume {
        let (m, o, st) =
            load_checkpoint::<B, _, _, StageState>(net, optim, out, IMAGE_CHECKPOINT, device)?;
        (net, optim) = (m, o);
        if let Some(st) = st {
            state = st;
            log::info!("image network: resumed from step {}", state.step);
            B::seed(device, resume_seed(cfg.seed.wrapping_add(1), state.step));
        }
    } else {
        let _ = std::fs::remove_file(out.join(files::IMAGE_STATE));
    }
    let mut lp = StageLoop::new(
        state,
        &out.join(files::IMAGE_CSV),
        cfg.image_steps,
        cfg.eval_every,
        cfg.checkpoint_interval(),
    )?;
    let start = lp.start;
    let mut order = BatchOrder::new(cfg.seed.wrapping_add(1), train.len(), cfg.batch);
    let std_t = Tensor::<B, 2>::from_data(
        TensorData::new(latent_std.to_vec(), [1, cfg.latent]),
        device,
    )
    .mul_scalar(cfg.sigma_scale);
    let (z, k) = (cfg.latent, cfg.train_samples_k);
    for step in start..cfg.image_steps {
        let refs: Vec<&Sample> = order.at(step).into_iter().map(|i| &train[i]).collect();
        let b = refs.len();
        let (img, pts) = batch_tensors::<B>(&refs, cfg.mean, cfg.std, device)?;
        let z_gt = Tensor::<B, 2>::from_inner(ae.encode(pts.inner()));
        let amb: Vec<f32> = refs.iter().map(|s| view_ambiguity(s)).collect();
        let target =
            Tensor::<B, 2>::from_data(TensorData::new(amb, [b, 1]), device) * std_t.clone();
        let (mu, ls) = net.forward(img);
        let sigma = ls.exp();
        let mean_loss = (mu.clone() - z_gt.clone()).abs().mean();
        let eps = Tensor::<B, 3>::random([b, k, z], Distribution::Normal(0.0, 1.0), device);
        let zk = mu.reshape([b, 1, z]) + sigma.clone().reshape([b, 1, z]) * eps;
        let dk = (zk - z_gt.reshape([b, 1, z])).abs().mean_dim(2); // [b, k, 1]
        let best_loss = dk.min_dim(1).mean();
        let div = (sigma - target).powi_scalar(2).mean();
        let loss = mean_loss.clone() + best_loss + div.clone().mul_scalar(cfg.diversity_weight);
        let lr = lr_at(
            cfg.lr,
            cfg.lr_final_ratio,
            cfg.warmup,
            cfg.image_steps,
            step,
        );
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let v: f32 = mean_loss.into_scalar().elem();
        let dv: f32 = div.into_scalar().elem();
        if !v.is_finite() || !dv.is_finite() {
            return Err(TrainError::Check(format!(
                "image-stage loss is not finite at step {step}"
            )));
        }
        net = optim.step(lr, net, grads);
        let checkpoint = lp.after_step(step, lr, v, dv, !val.is_empty(), |done, l, d| {
            let full = Lmnet {
                image: net.valid(),
                ae: ae.clone(),
            };
            let m = validate_image(&full, val, cfg, device)?;
            log::info!(
                "image step {done:>5}  latent L1 {l:.5}  diversity {d:.5}  val chamfer-L2 {:.5}  F@1% {:.2}",
                m.chamfer_l2,
                m.fscore_1pct
            );
            Ok(m)
        })?;
        if checkpoint {
            save_checkpoint(&net, &optim, &lp.state, out, IMAGE_CHECKPOINT)?;
        }
    }
    let (sum, csv) = lp.finish();
    let net = net.valid();
    save_module(&net, &out.join(files::IMAGE))?;
    csv.plot(&out.join("loss_image.png"))?;
    Ok((net, sum))
}

/// Loads a run's autoencoder and image network.
pub fn load_run<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<(LmnetConfig, Lmnet<B>), TrainError> {
    let cfg: LmnetConfig = load_json(&run.join(files::CONFIG))?;
    cfg.validate()?;
    let ae = load_module(
        PointAe::<B>::new(&cfg, device),
        &run.join(files::AE),
        device,
    )?;
    let image = load_module(
        LmImage::<B>::new(&cfg, device),
        &run.join(files::IMAGE),
        device,
    )?;
    Ok((cfg, Lmnet { image, ae }))
}

// ------------------------------------------------------------------ export

/// Builds the ONNX graph: `image` `[1, 3, H, W]` -> `points` `[1, K, N, 3]`.
pub fn lmnet_graph<B: Backend>(
    net: &Lmnet<B>,
    cfg: &LmnetConfig,
    metrics: Option<&str>,
) -> Result<GraphBuilder, TrainError> {
    let (k, z, n) = (cfg.hypotheses, cfg.latent, cfg.points);
    let side = cfg.encoder.image;
    let mut g = GraphBuilder::new(&cfg.model_id);
    let x = g.input(
        "image",
        &[Dim::Fixed(1), 3.into(), side.into(), side.into()],
    );
    let h = export_encoder(&mut g, &net.image.encoder, &x)?;
    let mu = export_linear(&mut g, &h, "mu", &net.image.mu)?; // [1, Z]
    let ls = export_linear(&mut g, &h, "log_sigma", &net.image.log_sigma)?;
    let sigma = g.node("Exp", &[&ls], &[]);
    let eps = g
        .init_f32("eps", &[k, z], &cfg.baked_eps())
        .map_err(onnx_err)?;
    let se = g.mul(&sigma, &eps); // [K, Z]
    let mut x = g.add(&mu, &se); // [K, Z]
    let last = net.ae.dec.len() - 1;
    for (i, l) in net.ae.dec.iter().enumerate() {
        x = export_linear(&mut g, &x, &format!("dec{i}"), l)?;
        if i < last {
            x = g.relu(&x);
        }
    }
    let t = g.tanh(&x);
    let ext = g
        .init_f32("extent", &[], &[net.ae.extent])
        .map_err(onnx_err)?;
    let p = g.mul(&t, &ext);
    let p = g.reshape(&p, &[1, k as i64, n as i64, 3]);
    g.output_with_dims(&p, "points", &[1.into(), k.into(), n.into(), 3.into()])
        .map_err(onnx_err)?;
    let mut meta = base_metadata(
        "points",
        &cfg.model_id,
        side,
        cfg.mean,
        cfg.std,
        &cfg.data.describe(),
    );
    meta.push(("shapecast.points".into(), n.to_string()));
    meta.push(("shapecast.hypotheses".into(), k.to_string()));
    if let Some(m) = metrics {
        meta.push(("shapecast.metrics".into(), m.to_string()));
    }
    g.metadata_list(&meta);
    Ok(g)
}

/// Writes the export to `path`, loads it with tract and checks that it reproduces burn's
/// output (same baked samples) on `probes` (`[1, 3, H, W]` each) within `tol`; returns the
/// largest absolute difference.
pub fn export_lmnet<B: Backend>(
    net: &Lmnet<B>,
    cfg: &LmnetConfig,
    path: &Path,
    probes: &[Vec<f32>],
    tol: f32,
    metrics: Option<&str>,
    device: &B::Device,
) -> Result<f32, TrainError> {
    let g = lmnet_graph(net, cfg, metrics)?;
    write_graph(&g, path)?;
    let runner = TractRunner::load(path, cfg.encoder.image)?;
    let side = cfg.encoder.image;
    let eps = Tensor::<B, 2>::from_data(
        TensorData::new(cfg.baked_eps(), [cfg.hypotheses, cfg.latent]),
        device,
    );
    let mut worst = 0.0f32;
    for probe in probes {
        let img =
            Tensor::<B, 4>::from_data(TensorData::new(probe.clone(), [1, 3, side, side]), device);
        let want = floats(net.forward(img, eps.clone()))?;
        let got = runner.run(probe)?;
        if got.shape != [1, cfg.hypotheses, cfg.points, 3] {
            return Err(TrainError::Check(format!(
                "tract output shape {:?}, expected [1, {}, {}, 3]",
                got.shape, cfg.hypotheses, cfg.points
            )));
        }
        worst = worst.max(max_abs_diff(&want, &got.points)?);
    }
    within_tolerance(path, worst, tol)
}

// ------------------------------------------------------------------ evaluation

/// Test-split figures of an LMNet export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LmnetEval {
    /// Model file.
    pub model: String,
    /// Samples.
    pub samples: usize,
    /// Hypotheses per picture.
    pub hypotheses: usize,
    /// Mean hypothesis (hypothesis 0, `eps = 0`).
    pub mean_hypothesis: PointMetrics,
    /// Best of the K hypotheses per picture (lowest Chamfer-L2; oracle).
    pub best_of_k: PointMetrics,
    /// Average over all K hypotheses.
    pub all_hypotheses: PointMetrics,
    /// Diversity: mean pairwise Chamfer-L2 between the hypotheses of a picture.
    pub diversity_chamfer_l2: f32,
    /// Diversity on the most ambiguous half of the views (by [`view_ambiguity`]).
    pub diversity_ambiguous: f32,
    /// Diversity on the least ambiguous half.
    pub diversity_clear: f32,
    /// tract inference, median ms per picture.
    pub infer_ms_p50: f64,
}

/// Runs the export with tract on `set` and measures mean / best-of-K / diversity.
pub fn eval_lmnet(
    model: &Path,
    cfg: &LmnetConfig,
    set: &[Sample],
) -> Result<LmnetEval, TrainError> {
    let runner = TractRunner::load(model, cfg.encoder.image)?;
    let mut mean_h = Vec::new();
    let mut best = Vec::new();
    let mut all = Vec::new();
    let mut div: Vec<(f32, f32)> = Vec::new();
    let mut times = Vec::new();
    let mut k_seen = 0;
    for s in set {
        let t = Instant::now();
        let out = runner.run(&s.image_chw(cfg.mean, cfg.std))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let k = out.shape.get(1).copied().unwrap_or(1);
        k_seen = k;
        let hyps: Vec<Vec<[f32; 3]>> = (0..k).map(|i| out.hypothesis(i)).collect();
        let ms: Vec<PointMetrics> = hyps.iter().map(|h| point_metrics(h, &s.points)).collect();
        mean_h.push(ms[0].clone());
        let bi = (0..k)
            .min_by(|&a, &b| ms[a].chamfer_l2.total_cmp(&ms[b].chamfer_l2))
            .unwrap_or(0);
        best.push(ms[bi].clone());
        all.extend(ms.iter().cloned());
        let mut d = 0.0f32;
        let mut pairs = 0;
        for a in 0..k {
            for b in a + 1..k {
                d += point_metrics(&hyps[a], &hyps[b]).chamfer_l2;
                pairs += 1;
            }
        }
        div.push((
            view_ambiguity(s),
            if pairs > 0 { d / pairs as f32 } else { 0.0 },
        ));
    }
    times.sort_by(f64::total_cmp);
    let mut by_amb = div.clone();
    by_amb.sort_by(|a, b| a.0.total_cmp(&b.0));
    let half = by_amb.len() / 2;
    let avg = |v: &[(f32, f32)]| v.iter().map(|x| x.1).sum::<f32>() / v.len().max(1) as f32;
    Ok(LmnetEval {
        model: model.display().to_string(),
        samples: set.len(),
        hypotheses: k_seen,
        mean_hypothesis: PointMetrics::mean(&mean_h),
        best_of_k: PointMetrics::mean(&best),
        all_hypotheses: PointMetrics::mean(&all),
        diversity_chamfer_l2: avg(&div),
        diversity_ambiguous: avg(&by_amb[half..]),
        diversity_clear: avg(&by_amb[..half]),
        infer_ms_p50: times.get(times.len() / 2).copied().unwrap_or(0.0),
    })
}

/// Probe pictures for the export check: the first `n` of `set`.
pub fn probes(set: &[Sample], n: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<Vec<f32>> {
    set.iter().take(n).map(|s| s.image_chw(mean, std)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn baked_eps_is_deterministic_and_starts_with_the_mean() {
        let cfg = LmnetConfig::preset("test").unwrap();
        let a = cfg.baked_eps();
        assert_eq!(a, cfg.baked_eps());
        assert_eq!(a.len(), cfg.hypotheses * cfg.latent);
        assert!(a[..cfg.latent].iter().all(|&x| x == 0.0));
        let rest = &a[cfg.latent..];
        let m = rest.iter().sum::<f32>() / rest.len() as f32;
        let v = rest.iter().map(|x| (x - m).powi(2)).sum::<f32>() / rest.len() as f32;
        assert!(m.abs() < 0.4 && v > 0.4 && v < 1.8, "mean {m} var {v}");
    }

    #[test]
    fn autoencoder_is_permutation_invariant() {
        let cfg = LmnetConfig::preset("test").unwrap();
        let dev = Default::default();
        let ae = PointAe::<B>::new(&cfg, &dev);
        let pts: Vec<f32> = (0..cfg.points * 3)
            .map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5)
            .collect();
        let mut rev = Vec::new();
        for c in pts.chunks_exact(3).rev() {
            rev.extend_from_slice(c);
        }
        let a = Tensor::<B, 3>::from_data(TensorData::new(pts, [1, cfg.points, 3]), &dev);
        let b = Tensor::<B, 3>::from_data(TensorData::new(rev, [1, cfg.points, 3]), &dev);
        let za = floats(ae.encode(a)).unwrap();
        let zb = floats(ae.encode(b)).unwrap();
        assert_eq!(za.len(), cfg.latent);
        assert!(max_abs_diff(&za, &zb).unwrap() < 1e-6);
    }

    #[test]
    fn hypotheses_differ_only_through_sigma() {
        let cfg = LmnetConfig::preset("test").unwrap();
        let dev = Default::default();
        let net = Lmnet {
            image: LmImage::<B>::new(&cfg, &dev),
            ae: PointAe::<B>::new(&cfg, &dev),
        };
        let side = cfg.encoder.image;
        let img = Tensor::<B, 4>::from_data(
            TensorData::new(
                (0..3 * side * side)
                    .map(|i| (i % 13) as f32 / 6.0 - 1.0)
                    .collect::<Vec<f32>>(),
                [1, 3, side, side],
            ),
            &dev,
        );
        let eps = Tensor::<B, 2>::from_data(
            TensorData::new(cfg.baked_eps(), [cfg.hypotheses, cfg.latent]),
            &dev,
        );
        let p = net.forward(img, eps);
        assert_eq!(p.dims(), [1, cfg.hypotheses, cfg.points, 3]);
        let v = floats(p).unwrap();
        let n3 = cfg.points * 3;
        // sigma is ~1 at initialisation: the sampled hypotheses differ from the mean one
        assert!(max_abs_diff(&v[..n3], &v[n3..2 * n3]).unwrap() > 1e-4);
    }
}
