//! The training loop: Adam, cosine learning rate, min-of-K Chamfer (+ part labels),
//! periodic validation, metrics CSV, loss-curve PNG, checkpoints and resume.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::Sample;
use crate::eval::{point_metrics, PointMetrics};
use crate::inference::predict_points;
use crate::lmnet::{load_checkpoint, load_module, save_checkpoint, BatchOrder, CheckpointFiles};
use crate::loss::{
    class_weights, label_histogram, point_loss_indexed_with, point_loss_with, LabelBalance,
    LabelTerm, PointLoss,
};
use crate::model::{PointNet, PointOutput};
use crate::TrainError;

/// File names inside a run folder.
pub mod files {
    /// Saved configuration.
    pub const CONFIG: &str = "config.json";
    /// Metrics, one row per logged step.
    pub const METRICS: &str = "metrics.csv";
    /// Loss curve picture.
    pub const CURVE: &str = "loss.png";
    /// Latest model weights (burn named MessagePack, extension added by burn).
    pub const MODEL: &str = "model";
    /// Optimizer state of the latest checkpoint.
    pub const OPTIM: &str = "optim";
    /// Progress of the latest checkpoint.
    pub const STATE: &str = "state.json";
    /// Part-label weights of the run (training-set part counts and the weights of its
    /// `label_balance`), written when the model has classes.
    pub const LABEL_WEIGHTS: &str = "label_weights.json";
}

/// The part-label weights of a run, as [`files::LABEL_WEIGHTS`] holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelWeights {
    /// The configuration's `label_balance`.
    pub balance: LabelBalance,
    /// Ground-truth points per part over the training samples.
    pub counts: Vec<u64>,
    /// Weight per part ([`class_weights`]).
    pub weights: Vec<f32>,
}

impl LabelWeights {
    /// Counts the parts of the ground-truth points of `train` (labels `>= classes` are not
    /// counted) and derives the weights of `balance`.
    pub fn of(train: &[Sample], classes: usize, balance: LabelBalance) -> Self {
        let counts = label_histogram(train.iter().map(|s| s.point_labels.as_slice()), classes);
        let weights = class_weights(&counts, balance);
        Self {
            balance,
            counts,
            weights,
        }
    }

    /// The weights as a tensor, `None` when every weight is 1 (the plain cross-entropy).
    pub fn tensor<B: Backend>(&self, device: &B::Device) -> Option<Tensor<B, 1>> {
        (self.balance != LabelBalance::None).then(|| {
            Tensor::from_data(
                TensorData::new(self.weights.clone(), [self.weights.len()]),
                device,
            )
        })
    }
}

/// Checkpoint files of a point run (also those of a voxel run: the same names).
pub const CHECKPOINT: CheckpointFiles = CheckpointFiles {
    weights: files::MODEL,
    optim: files::OPTIM,
    state: files::STATE,
};

/// Progress saved with every checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Steps done.
    pub step: usize,
    /// Training wall time so far, seconds.
    pub elapsed_s: f64,
    /// Last validation figures.
    pub last_val: Option<PointMetrics>,
    /// Train loss (Chamfer) averaged over the last logging window.
    pub last_train_loss: Option<f32>,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainSummary {
    /// Final state.
    pub state: TrainState,
    /// Mean training loss of the first logging window.
    pub first_loss: f32,
    /// Mean training loss of the last logging window.
    pub last_loss: f32,
    /// Training images per second (compute only, data already in memory).
    pub images_per_s: f64,
}

/// A batch in tensors.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    /// `[B, 3, H, W]` normalised pictures.
    pub images: Tensor<B, 4>,
    /// `[B, M, 3]` ground-truth surface points.
    pub points: Tensor<B, 3>,
    /// `[B, M]` part labels.
    pub labels: Tensor<B, 2, Int>,
}

/// Stacks samples into tensors (all samples must have the same picture size and point count).
/// Samples without part labels (empty `point_labels`: ShapeNet, Pix3D) get placeholder 0
/// labels, which only a model without a label head may be given: a labelled run on such data
/// is refused before (`DataSpec::check`, and [`LabelWeights`] counting no labelled point).
pub fn make_batch<B: Backend>(
    samples: &[&Sample],
    mean: [f32; 3],
    std: [f32; 3],
    device: &B::Device,
) -> Result<Batch<B>, TrainError> {
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
    let mut lab = Vec::with_capacity(samples.len() * m);
    for s in samples {
        if s.width as usize != w || s.height as usize != h || s.points.len() != m {
            return Err(TrainError::Config(format!(
                "samples differ in size: {}x{} with {} points vs {w}x{h} with {m}",
                s.width,
                s.height,
                s.points.len()
            )));
        }
        img.extend(s.image_chw(mean, std));
        pts.extend(s.points.iter().flatten());
        if s.point_labels.len() == m {
            lab.extend(s.point_labels.iter().map(|&l| i64::from(l)));
        } else {
            lab.extend(std::iter::repeat_n(0i64, m));
        }
    }
    let b = samples.len();
    Ok(Batch {
        images: Tensor::from_data(TensorData::new(img, [b, 3, h, w]), device),
        points: Tensor::from_data(TensorData::new(pts, [b, m, 3]), device),
        labels: Tensor::from_data(TensorData::new(lab, [b, m]), device),
    })
}

/// Validation: forward passes on `val` and the figures of [`point_metrics`] (first
/// hypothesis), averaged.
pub fn validate<B: Backend>(
    model: &PointNet<B>,
    val: &[Sample],
    cfg: &TrainConfig,
    device: &B::Device,
) -> Result<PointMetrics, TrainError> {
    let mut all = Vec::with_capacity(val.len());
    for chunk in val.chunks(cfg.batch.max(1)) {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let batch = make_batch::<B>(&refs, cfg.mean, cfg.std, device)?;
        let preds = predict_points(model, batch.images);
        for (s, p) in chunk.iter().zip(preds) {
            all.push(point_metrics(&p[0], &s.points));
        }
    }
    Ok(PointMetrics::mean(&all))
}

/// Hidden-unit activity on `val`: `(live, total)` where a unit is live when its
/// pre-activation (after the hidden batch normalisation, before the ReLU/LeakyReLU) is
/// positive on at least one picture. A ReLU unit that is never positive outputs 0 for
/// every picture (dead); the 2026-11 default model had 7 of 384 live.
pub fn hidden_activity<B: Backend>(
    model: &PointNet<B>,
    val: &[Sample],
    cfg: &TrainConfig,
    device: &B::Device,
) -> Result<(usize, usize), TrainError> {
    let hidden = cfg.model.hidden;
    let mut live = vec![false; hidden];
    for chunk in val.chunks(cfg.batch.max(1)) {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let batch = make_batch::<B>(&refs, cfg.mean, cfg.std, device)?;
        let z = model
            .hidden_pre(batch.images)
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| TrainError::Check(format!("hidden readout: {e:?}")))?;
        for row in z.chunks(hidden) {
            for (l, &v) in live.iter_mut().zip(row) {
                *l |= v > 0.0;
            }
        }
    }
    Ok((live.iter().filter(|&&l| l).count(), hidden))
}

/// The training loss of a point batch: min-of-K Chamfer (dense or indexed, as configured)
/// plus the part-label cross-entropy when the model has classes (weighted per part by
/// `class_weights`, both directions when `label_symmetric`).
fn batch_loss<B: Backend>(
    cfg: &TrainConfig,
    out: PointOutput<B>,
    points: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    class_weights: Option<&Tensor<B, 1>>,
) -> PointLoss<B> {
    let term = (cfg.model.classes > 0).then(|| LabelTerm {
        gt_labels: labels,
        weight: cfg.label_weight,
        class_weights: class_weights.cloned(),
        symmetric: cfg.label_symmetric,
    });
    (if cfg.chamfer == "dense" {
        point_loss_with
    } else {
        point_loss_indexed_with
    })(out.points, points, out.labels, term)
}

/// The part-label weights of a run on `train` (`None` without classes); writes them into
/// `out` ([`files::LABEL_WEIGHTS`]) when given.
fn run_label_weights<B: Backend>(
    cfg: &TrainConfig,
    train: &[Sample],
    out: Option<&Path>,
    device: &B::Device,
) -> Result<Option<Tensor<B, 1>>, TrainError> {
    if cfg.model.classes == 0 {
        return Ok(None);
    }
    let lw = LabelWeights::of(train, cfg.model.classes, cfg.label_balance);
    if lw.counts.iter().all(|&c| c == 0) {
        return Err(TrainError::Config(format!(
            "the model has {} part classes but no training sample carries part labels \
             (point_labels) below that count",
            cfg.model.classes
        )));
    }
    if let Some(out) = out {
        crate::lmnet::save_json(&lw, &out.join(files::LABEL_WEIGHTS))?;
    }
    if cfg.label_balance != LabelBalance::None {
        log::info!(
            "label weights ({}): {}",
            cfg.label_balance,
            lw.weights
                .iter()
                .map(|w| format!("{w:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(lw.tensor(device))
}

/// Trains a point model on in-memory samples; writes everything into `out`. With
/// `resume`, continues from the checkpoint in `out` (same configuration).
pub fn train_points<B: AutodiffBackend>(
    cfg: &TrainConfig,
    train: &[Sample],
    val: &[Sample],
    out: &Path,
    resume: bool,
    device: &B::Device,
    quiet: bool,
) -> Result<TrainSummary, TrainError> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(TrainError::Config("no training samples".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    cfg.save(&out.join(files::CONFIG))?;
    let _rng = crate::backend::seed_exclusive::<B>(device, cfg.seed);

    let metrics_path = out.join(files::METRICS);
    let (mut model, mut optim, mut state) = resume_or_start::<B, _, _, TrainState>(
        cfg.model.init(device),
        AdamConfig::new().init::<B, PointNet<B>>(),
        out,
        resume,
        &metrics_path,
        "step,lr,train_chamfer,train_label_ce,val_chamfer_l2,val_chamfer_l1,val_fscore_1pct,elapsed_s,images_per_s",
        device,
    )?;
    if cfg.lr_restart > 0 && state.step < cfg.lr_restart {
        return Err(TrainError::Config(format!(
            "lr_restart = {} but training starts at step {}: a fine-tune resumes (--resume) from a \
             checkpoint at or after its restart step (is there one at step {} in {}?)",
            cfg.lr_restart,
            state.step,
            cfg.lr_restart,
            out.display()
        )));
    }
    let mut run = RunProgress::new(
        quiet,
        cfg.steps,
        state.step,
        state.elapsed_s,
        cfg.eval_every,
    );
    let mut window = (0.0f64, 0.0f64, 0usize);
    let mut order = BatchOrder::new(cfg.seed, train.len(), cfg.batch);
    let class_w = run_label_weights::<B>(cfg, train, Some(out), device)?;

    while state.step < cfg.steps {
        let step = state.step;
        // deterministic batch order: an epoch permutation from (seed, epoch)
        let refs: Vec<&Sample> = order.at(step).into_iter().map(|i| &train[i]).collect();
        let batch = make_batch::<B>(&refs, cfg.mean, cfg.std, device)?;
        let t0 = Instant::now();
        let lr = cfg.lr_at(step);
        let (cd, ce);
        (model, cd, ce) = train_step(cfg, model, &mut optim, batch, class_w.as_ref(), lr);
        run.computed(t0, cfg.batch);
        check_finite(cd, step)?;
        window.0 += f64::from(cd);
        window.1 += f64::from(ce);
        window.2 += 1;
        state.step += 1;
        run.inc();

        let at_eval = run.at_eval(state.step, cfg.steps);
        if run.at_log(state.step) || at_eval {
            let tl = (window.0 / window.2 as f64) as f32;
            let tce = (window.1 / window.2 as f64) as f32;
            window = (0.0, 0.0, 0);
            run.logged(tl);
            state.last_train_loss = Some(tl);
            let mut val_cols = ",,".to_string();
            if at_eval && !val.is_empty() {
                let vm = model.valid();
                let m = validate(&vm, val, cfg, device)?;
                let (live, units) = hidden_activity(&vm, val, cfg, device)?;
                val_cols = format!(
                    "{:.6},{:.6},{:.3}",
                    m.chamfer_l2, m.chamfer_l1, m.fscore_1pct
                );
                run.say(format!(
                    "step {:>6}  train chamfer {tl:.5}  val chamfer-L2 {:.5}  F@1% {:.2}  live hidden units {live}/{units}",
                    state.step, m.chamfer_l2, m.fscore_1pct
                ));
                state.last_val = Some(m);
            }
            state.elapsed_s = run.elapsed();
            let ips = run.images_per_s();
            append_line(
                &metrics_path,
                &format!(
                    "{},{lr:.6e},{tl:.6},{tce:.5},{val_cols},{:.1},{ips:.2}",
                    state.step, state.elapsed_s
                ),
            )?;
            run.message(tl, ips);
        }
        if state.step % cfg.checkpoint_every == 0 || state.step == cfg.steps {
            state.elapsed_s = run.elapsed();
            save_checkpoint(&model, &optim, &state, out, CHECKPOINT)?;
            let _ = crate::plot::loss_curve_png(&metrics_path, &out.join(files::CURVE));
        }
    }
    let (first_loss, last_loss, images_per_s) = run.finish();
    crate::plot::loss_curve_png(&metrics_path, &out.join(files::CURVE))?;
    Ok(TrainSummary {
        first_loss,
        last_loss,
        images_per_s,
        state,
    })
}

/// Fails when the training loss of `step` is not finite.
pub(crate) fn check_finite(loss: f32, step: usize) -> Result<(), TrainError> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(TrainError::Check(format!(
            "loss is not finite at step {step}"
        )))
    }
}

/// Progress of a run-folder training loop, as [`resume_or_start`] restores it.
pub(crate) trait RunState: DeserializeOwned + Default {
    /// Steps done.
    fn step(&self) -> usize;
}

impl RunState for TrainState {
    fn step(&self) -> usize {
        self.step
    }
}

/// Start of a run-folder training loop (points, voxels): with `resume` and a checkpoint
/// ([`CHECKPOINT`]) in `out`, the saved weights, Adam state and progress; otherwise the
/// fresh `model` and `optim`, default progress, and a new metrics CSV with `header`.
pub(crate) fn resume_or_start<B, M, O, S>(
    model: M,
    optim: O,
    out: &Path,
    resume: bool,
    metrics: &Path,
    header: &str,
    device: &B::Device,
) -> Result<(M, O, S), TrainError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    S: RunState,
{
    let (model, optim) = if resume {
        match load_checkpoint::<B, M, O, S>(model, optim, out, CHECKPOINT, device)? {
            (model, optim, Some(state)) => {
                log::info!("resumed from step {}", state.step());
                return Ok((model, optim, state));
            }
            (model, optim, None) => (model, optim),
        }
    } else {
        (model, optim)
    };
    let mut f = std::fs::File::create(metrics).map_err(|e| TrainError::io(metrics, e))?;
    writeln!(f, "{header}").map_err(|e| TrainError::io(metrics, e))?;
    Ok((model, optim, S::default()))
}

/// Appends a line to a metrics CSV.
pub(crate) fn append_line(path: &Path, line: &str) -> Result<(), TrainError> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))
}

/// The progress bar, the logging cadence, the loss of the first and last logging window
/// and the throughput of a run-folder training loop (points, voxels).
pub(crate) struct RunProgress {
    pb: ProgressBar,
    log_every: usize,
    eval_every: usize,
    first_loss: Option<f32>,
    last_loss: f32,
    compute_s: f64,
    images: usize,
    t_run: Instant,
    elapsed0: f64,
}

impl RunProgress {
    /// A loop of `steps` steps continuing at `step` after `elapsed0` seconds (a hidden bar
    /// when `quiet`); logs every `eval_every` steps, at most every 25.
    pub fn new(quiet: bool, steps: usize, step: usize, elapsed0: f64, eval_every: usize) -> Self {
        let pb = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(steps as u64)
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb.set_position(step as u64);
        Self {
            pb,
            log_every: eval_every.clamp(1, 25),
            eval_every,
            first_loss: None,
            last_loss: f32::NAN,
            compute_s: 0.0,
            images: 0,
            t_run: Instant::now(),
            elapsed0,
        }
    }

    /// Counts a step's compute time (since `t0`) and pictures.
    pub fn computed(&mut self, t0: Instant, images: usize) {
        self.compute_s += t0.elapsed().as_secs_f64();
        self.images += images;
    }

    /// Advances the bar by a step.
    pub fn inc(&self) {
        self.pb.inc(1);
    }

    /// Whether `done` steps (of `steps`) is a validation step.
    pub fn at_eval(&self, done: usize, steps: usize) -> bool {
        done % self.eval_every == 0 || done == steps
    }

    /// Whether `done` steps is a logging step.
    pub fn at_log(&self, done: usize) -> bool {
        done % self.log_every == 0
    }

    /// Records the mean loss of a logging window.
    pub fn logged(&mut self, loss: f32) {
        self.first_loss.get_or_insert(loss);
        self.last_loss = loss;
    }

    /// Prints a line above the bar (or logs it when the bar is hidden).
    pub fn say(&self, line: String) {
        if self.pb.is_hidden() {
            log::info!("{line}");
        } else {
            self.pb.println(line);
        }
    }

    /// Shows the loss and throughput beside the bar.
    pub fn message(&self, loss: f32, images_per_s: f64) {
        self.pb
            .set_message(format!("loss {loss:.5} {images_per_s:.1} img/s"));
    }

    /// Training seconds of the run so far (all calls together).
    pub fn elapsed(&self) -> f64 {
        self.elapsed0 + self.t_run.elapsed().as_secs_f64()
    }

    /// Pictures per second of compute in this call.
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 / self.compute_s.max(1e-9)
    }

    /// Clears the bar; the first and last window losses and the throughput.
    pub fn finish(self) -> (f32, f32, f64) {
        self.pb.finish_and_clear();
        (
            self.first_loss.unwrap_or(f32::NAN),
            self.last_loss,
            self.images_per_s(),
        )
    }
}

/// Loads the weights saved in a run folder onto `device` (any backend).
pub fn load_model<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<(TrainConfig, PointNet<B>), TrainError> {
    let cfg = TrainConfig::load(&run.join(files::CONFIG))?;
    let model = load_module(cfg.model.init::<B>(device), &run.join(files::MODEL), device)?;
    Ok((cfg, model))
}

/// One optimiser step on `batch` at learning rate `lr`: the updated model, the batch's Chamfer
/// loss and its label cross-entropy (0 without labels). Reading the two values back waits for
/// the step to finish.
fn train_step<B: AutodiffBackend, O: Optimizer<PointNet<B>, B>>(
    cfg: &TrainConfig,
    model: PointNet<B>,
    optim: &mut O,
    batch: Batch<B>,
    class_w: Option<&Tensor<B, 1>>,
    lr: f64,
) -> (PointNet<B>, f32, f32) {
    let loss = batch_loss(
        cfg,
        model.forward(batch.images),
        batch.points,
        batch.labels,
        class_w,
    );
    let grads = GradientsParams::from_grads(loss.total.backward(), &model);
    let model = optim.step(lr, model, grads);
    let cd: f32 = loss.chamfer.into_scalar().elem();
    let ce: f32 = loss.labels.map(|l| l.into_scalar().elem()).unwrap_or(0.0);
    (model, cd, ce)
}

/// Times `steps` training steps (after 2 warm-up steps) of a fresh model; returns images/s.
pub fn bench_steps<B: AutodiffBackend>(
    cfg: &TrainConfig,
    train: &[Sample],
    steps: usize,
    device: &B::Device,
) -> Result<f64, TrainError> {
    let _rng = crate::backend::seed_exclusive::<B>(device, cfg.seed);
    let mut model: PointNet<B> = cfg.model.init(device);
    let mut optim = AdamConfig::new().init::<B, PointNet<B>>();
    let refs: Vec<&Sample> = train.iter().cycle().take(cfg.batch).collect();
    let class_w = run_label_weights::<B>(cfg, train, None, device)?;
    let mut t = Instant::now();
    for i in 0..steps + 2 {
        if i == 2 {
            t = Instant::now();
        }
        let batch = make_batch::<B>(&refs, cfg.mean, cfg.std, device)?;
        (model, _, _) = train_step(cfg, model, &mut optim, batch, class_w.as_ref(), cfg.lr);
    }
    Ok((steps * cfg.batch) as f64 / t.elapsed().as_secs_f64())
}
