//! The training loop: Adam, cosine learning rate, min-of-K Chamfer (+ part labels),
//! periodic validation, metrics CSV, loss-curve PNG, checkpoints and resume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::Sample;
use crate::eval::{point_metrics, PointMetrics};
use crate::inference::predict_points;
use crate::loss::{point_loss, point_loss_indexed};
use crate::model::PointNet;
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
}

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

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
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

    let mut model: PointNet<B> = cfg.model.init(device);
    let mut optim = AdamConfig::new().init::<B, PointNet<B>>();
    let mut state = TrainState::default();
    let state_path = out.join(files::STATE);
    let metrics_path = out.join(files::METRICS);
    if resume && state_path.exists() {
        let text =
            std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
        state = serde_json::from_str(&text).map_err(|e| TrainError::Parse {
            path: state_path.clone(),
            msg: e.to_string(),
        })?;
        model = model
            .load_file(out.join(files::MODEL), &recorder(), device)
            .map_err(|e| record_err(out.join(files::MODEL), e))?;
        let orec = Recorder::<B>::load(&recorder(), out.join(files::OPTIM), device)
            .map_err(|e| record_err(out.join(files::OPTIM), e))?;
        optim = optim.load_record(orec);
        log::info!("resumed from step {}", state.step);
    } else {
        let mut f =
            std::fs::File::create(&metrics_path).map_err(|e| TrainError::io(&metrics_path, e))?;
        writeln!(f, "step,lr,train_chamfer,train_label_ce,val_chamfer_l2,val_chamfer_l1,val_fscore_1pct,elapsed_s,images_per_s")
            .map_err(|e| TrainError::io(&metrics_path, e))?;
    }

    let pb = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cfg.steps as u64)
    };
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.set_position(state.step as u64);

    let log_every = cfg.eval_every.clamp(1, 25);
    let mut window = (0.0f64, 0.0f64, 0usize);
    let mut first_loss = None;
    let mut last_loss = f32::NAN;
    let mut compute_s = 0.0f64;
    let mut images = 0usize;
    let mut order: Vec<usize> = Vec::new();
    let t_run = Instant::now();
    let elapsed0 = state.elapsed_s;
    let use_labels = cfg.model.classes > 0;

    while state.step < cfg.steps {
        let step = state.step;
        // deterministic batch order: an epoch permutation from (seed, epoch)
        let per_epoch = (train.len() / cfg.batch).max(1);
        let epoch = step / per_epoch;
        if step % per_epoch == 0 || order.is_empty() {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                cfg.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9),
            );
            order = (0..train.len()).collect();
            order.shuffle(&mut rng);
        }
        let pos = (step % per_epoch) * cfg.batch;
        let refs: Vec<&Sample> = (0..cfg.batch)
            .map(|i| &train[order[(pos + i) % order.len()]])
            .collect();
        let batch = make_batch::<B>(&refs, cfg.mean, cfg.std, device)?;
        let t0 = Instant::now();
        let out_ = model.forward(batch.images);
        let loss = (if cfg.chamfer == "dense" {
            point_loss
        } else {
            point_loss_indexed
        })(
            out_.points,
            batch.points,
            out_.labels,
            use_labels.then_some(batch.labels),
            cfg.label_weight,
        );
        let grads = loss.total.backward();
        let grads = GradientsParams::from_grads(grads, &model);
        let lr = cfg.lr_at(step);
        model = optim.step(lr, model, grads);
        let cd: f32 = loss.chamfer.into_scalar().elem();
        let ce: f32 = loss.labels.map(|l| l.into_scalar().elem()).unwrap_or(0.0);
        compute_s += t0.elapsed().as_secs_f64();
        images += cfg.batch;
        if !cd.is_finite() {
            return Err(TrainError::Check(format!(
                "loss is not finite at step {step}"
            )));
        }
        window.0 += f64::from(cd);
        window.1 += f64::from(ce);
        window.2 += 1;
        state.step += 1;
        pb.inc(1);

        let at_eval = state.step % cfg.eval_every == 0 || state.step == cfg.steps;
        if state.step % log_every == 0 || at_eval {
            let tl = (window.0 / window.2 as f64) as f32;
            let tce = (window.1 / window.2 as f64) as f32;
            window = (0.0, 0.0, 0);
            first_loss.get_or_insert(tl);
            last_loss = tl;
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
                let line = format!(
                    "step {:>6}  train chamfer {tl:.5}  val chamfer-L2 {:.5}  F@1% {:.2}  live hidden units {live}/{units}",
                    state.step, m.chamfer_l2, m.fscore_1pct
                );
                if pb.is_hidden() {
                    log::info!("{line}");
                } else {
                    pb.println(line);
                }
                state.last_val = Some(m);
            }
            state.elapsed_s = elapsed0 + t_run.elapsed().as_secs_f64();
            let ips = images as f64 / compute_s.max(1e-9);
            append_line(
                &metrics_path,
                &format!(
                    "{},{lr:.6e},{tl:.6},{tce:.5},{val_cols},{:.1},{ips:.2}",
                    state.step, state.elapsed_s
                ),
            )?;
            pb.set_message(format!("loss {tl:.5} {ips:.1} img/s"));
        }
        if state.step % cfg.checkpoint_every == 0 || state.step == cfg.steps {
            state.elapsed_s = elapsed0 + t_run.elapsed().as_secs_f64();
            checkpoint(&model, &optim, &state, out)?;
            let _ = crate::plot::loss_curve_png(&metrics_path, &out.join(files::CURVE));
        }
    }
    pb.finish_and_clear();
    crate::plot::loss_curve_png(&metrics_path, &out.join(files::CURVE))?;
    Ok(TrainSummary {
        first_loss: first_loss.unwrap_or(f32::NAN),
        last_loss,
        images_per_s: images as f64 / compute_s.max(1e-9),
        state,
    })
}

fn record_err(path: PathBuf, e: burn::record::RecorderError) -> TrainError {
    TrainError::Record {
        path,
        msg: e.to_string(),
    }
}

fn append_line(path: &Path, line: &str) -> Result<(), TrainError> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))?;
    writeln!(f, "{line}").map_err(|e| TrainError::io(path, e))
}

fn checkpoint<B: AutodiffBackend, O: Optimizer<PointNet<B>, B>>(
    model: &PointNet<B>,
    optim: &O,
    state: &TrainState,
    out: &Path,
) -> Result<(), TrainError> {
    model
        .clone()
        .save_file(out.join(files::MODEL), &recorder())
        .map_err(|e| record_err(out.join(files::MODEL), e))?;
    Recorder::<B>::record(&recorder(), optim.to_record(), out.join(files::OPTIM))
        .map_err(|e| record_err(out.join(files::OPTIM), e))?;
    let p = out.join(files::STATE);
    let text = serde_json::to_string_pretty(state).map_err(|e| TrainError::Parse {
        path: p.clone(),
        msg: e.to_string(),
    })?;
    std::fs::write(&p, text).map_err(|e| TrainError::io(&p, e))
}

/// Loads the weights saved in a run folder onto `device` (any backend).
pub fn load_model<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<(TrainConfig, PointNet<B>), TrainError> {
    let cfg = TrainConfig::load(&run.join(files::CONFIG))?;
    let model = cfg
        .model
        .init::<B>(device)
        .load_file(run.join(files::MODEL), &recorder(), device)
        .map_err(|e| record_err(run.join(files::MODEL), e))?;
    Ok((cfg, model))
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
    let mut t = Instant::now();
    for i in 0..steps + 2 {
        if i == 2 {
            t = Instant::now();
        }
        let batch = make_batch::<B>(&refs, cfg.mean, cfg.std, device)?;
        let out = model.forward(batch.images);
        let use_labels = cfg.model.classes > 0;
        let loss = (if cfg.chamfer == "dense" {
            point_loss
        } else {
            point_loss_indexed
        })(
            out.points,
            batch.points,
            out.labels,
            use_labels.then_some(batch.labels),
            cfg.label_weight,
        );
        let grads = GradientsParams::from_grads(loss.total.backward(), &model);
        model = optim.step(cfg.lr, model, grads);
        let _: f32 = loss.chamfer.into_scalar().elem();
    }
    Ok((steps * cfg.batch) as f64 / t.elapsed().as_secs_f64())
}
