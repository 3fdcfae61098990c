//! Training of the two implicit pipelines: Adam, cosine learning rate, metrics CSV,
//! loss-curve PNG, weights saved in the run folder.
//!
//! * [`train_sdf`]: stage 1 auto-decoder (codes + decoder, clamped L1 + latent-norm
//!   regulariser), stage 2 image encoder -> code.
//! * [`train_occupancy`]: encoder + decoder jointly, BCE.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::eval::{decode_surface, SurfaceMetrics};
use super::net::{clamped_l1, weighted_bce_logits, ImageEncoder, ImplicitDecoder};
use super::{ImplicitConfig, ImplicitSet, Kind};
use crate::lmnet::{
    load_checkpoint, load_module, resume_seed, save_checkpoint, save_module, trim_csv_after,
    BatchOrder, CheckpointFiles,
};
use crate::TrainError;

/// File names inside an implicit run folder.
pub mod files {
    /// Saved configuration.
    pub const CONFIG: &str = "config.json";
    /// Metrics, one row per logged step.
    pub const METRICS: &str = "metrics.csv";
    /// Loss curve picture (train loss blue, validation Chamfer-L2 orange).
    pub const CURVE: &str = "loss.png";
    /// Image encoder weights (burn named MessagePack; burn adds the extension).
    pub const ENCODER: &str = "encoder";
    /// Decoder weights.
    pub const DECODER: &str = "decoder";
    /// Auto-decoder (decoder + per-object codes) of an SDF run.
    pub const AUTODECODER: &str = "autodecoder";
    /// Summary of the finished run.
    pub const SUMMARY: &str = "summary.json";
    /// Weights of the joint occupancy network's latest checkpoint (encoder + decoder).
    pub const OCCUPANCY: &str = "occupancy";
    /// Progress of the latest checkpoint ([`super::ImplicitState`]).
    pub const STATE: &str = "state.json";
    /// Adam state of the auto-decoder stage's latest checkpoint.
    pub const AUTODECODER_OPTIM: &str = "autodecoder_optim";
    /// Adam state of the encoder stage's latest checkpoint.
    pub const ENCODER_OPTIM: &str = "encoder_optim";
    /// Adam state of the occupancy run's latest checkpoint.
    pub const OCCUPANCY_OPTIM: &str = "occupancy_optim";
}

const AUTODECODER_CKPT: CheckpointFiles = CheckpointFiles {
    weights: files::AUTODECODER,
    optim: files::AUTODECODER_OPTIM,
    state: files::STATE,
};
const ENCODER_CKPT: CheckpointFiles = CheckpointFiles {
    weights: files::ENCODER,
    optim: files::ENCODER_OPTIM,
    state: files::STATE,
};
const OCCUPANCY_CKPT: CheckpointFiles = CheckpointFiles {
    weights: files::OCCUPANCY,
    optim: files::OCCUPANCY_OPTIM,
    state: files::STATE,
};

/// Progress of an implicit run, saved with every checkpoint; a resumed run continues the
/// stage it names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImplicitState {
    /// Stage of the checkpoint: `autodecoder`, `encoder` or `occupancy`.
    pub stage: String,
    /// Steps done in that stage.
    pub step: usize,
    /// Wall seconds of the whole run so far.
    pub elapsed_s: f64,
    /// Wall seconds of the stage so far.
    pub stage_s: f64,
    /// Mean loss of the stage's first logging window.
    pub first_loss: Option<f32>,
    /// Mean loss of the stage's latest logging window.
    pub last_loss: Option<f32>,
    /// Decoder queries trained on in the stage.
    pub queries: usize,
    /// Compute seconds of the stage.
    pub compute_s: f64,
    /// Word position of the query-sampling generator (decimal).
    pub rng_word_pos: String,
    /// Stages finished before this one.
    pub finished: Vec<StageSummary>,
    /// Latest validation figures.
    pub last_val: Option<SurfaceMetrics>,
}

/// What one training stage did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageSummary {
    /// `autodecoder`, `encoder` or `occupancy`.
    pub stage: String,
    /// Steps run.
    pub steps: usize,
    /// Mean loss of the first logging window.
    pub first_loss: f32,
    /// Mean loss of the last logging window.
    pub last_loss: f32,
    /// Wall time of the stage, seconds.
    pub seconds: f64,
    /// Decoder query points per second (training forward + backward).
    pub queries_per_s: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImplicitSummary {
    /// The stages, in order.
    pub stages: Vec<StageSummary>,
    /// Last validation figures (pictures of the validation split, burn, dense grid).
    pub last_val: Option<SurfaceMetrics>,
    /// Total wall time, seconds.
    pub elapsed_s: f64,
}

/// Saves a module under `name` in `out`.
fn save<B: Backend, M: Module<B>>(m: &M, out: &Path, name: &str) -> Result<(), TrainError> {
    save_module(m, &out.join(name))
}

/// Loads the encoder and decoder saved in a run folder (any backend).
#[allow(clippy::type_complexity)]
pub fn load_run<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<(ImplicitConfig, ImageEncoder<B>, ImplicitDecoder<B>), TrainError> {
    let cfg = ImplicitConfig::load(&run.join(files::CONFIG))?;
    let enc = load_module(
        cfg.init_encoder::<B>(device),
        &run.join(files::ENCODER),
        device,
    )?;
    let dec = load_module(
        cfg.init_decoder::<B>(device),
        &run.join(files::DECODER),
        device,
    )?;
    Ok((cfg, enc, dec))
}

/// Query points of a batch: `[B, Q, 3]` positions, `[B, Q]` signed distances, near-band
/// mask, sign and occupancy, as flat vectors.
struct Queries {
    xyz: Vec<f32>,
    sdf: Vec<f32>,
    near: Vec<f32>,
    sign: Vec<f32>,
    occ: Vec<f32>,
}

fn sample_queries(
    set: &ImplicitSet,
    objs: &[usize],
    q: usize,
    delta: f32,
    rng: &mut ChaCha8Rng,
) -> Queries {
    let n = objs.len() * q;
    let mut s = Queries {
        xyz: Vec::with_capacity(n * 3),
        sdf: Vec::with_capacity(n),
        near: Vec::with_capacity(n),
        sign: Vec::with_capacity(n),
        occ: Vec::with_capacity(n),
    };
    for &o in objs {
        let samples = &set.objects[o].sdf;
        for _ in 0..q {
            let (p, d) = samples[rng.gen_range(0..samples.len())];
            s.xyz.extend_from_slice(&p);
            s.sdf.push(d);
            s.near.push(if d.abs() < delta { 1.0 } else { 0.0 });
            s.sign.push(if d < 0.0 { -1.0 } else { 1.0 });
            s.occ.push(if d < 0.0 { 1.0 } else { 0.0 });
        }
    }
    s
}

fn t2<B: Backend>(v: Vec<f32>, b: usize, q: usize, dev: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v, [b, q]), dev)
}

fn images<B: Backend>(
    set: &ImplicitSet,
    views: &[usize],
    cfg: &ImplicitConfig,
    dev: &B::Device,
) -> Tensor<B, 4> {
    let s = set.side;
    let mut v = Vec::with_capacity(views.len() * 3 * s * s);
    for &i in views {
        v.extend(set.image_chw(i, cfg.mean, cfg.std));
    }
    Tensor::from_data(TensorData::new(v, [views.len(), 3, s, s]), dev)
}

/// Loss bookkeeping of one stage: logging windows, CSV rows, progress line.
struct Log {
    stage: &'static str,
    csv: PathBuf,
    offset: usize,
    window: (f64, usize),
    first: Option<f32>,
    last: f32,
    t0: Instant,
    run_t0: Instant,
    queries: usize,
    compute_s: f64,
    quiet: bool,
    /// Stage seconds before this call (resumed stage).
    prior_s: f64,
    /// Run seconds before this call (resumed run).
    run_prior_s: f64,
}

impl Log {
    fn new(stage: &'static str, csv: PathBuf, offset: usize, run_t0: Instant, quiet: bool) -> Self {
        Log {
            stage,
            csv,
            offset,
            window: (0.0, 0),
            first: None,
            last: f32::NAN,
            t0: Instant::now(),
            run_t0,
            queries: 0,
            compute_s: 0.0,
            quiet,
            prior_s: 0.0,
            run_prior_s: 0.0,
        }
    }

    /// Continues the bookkeeping of a checkpoint's stage.
    fn restore(&mut self, st: &ImplicitState) {
        self.first = st.first_loss;
        self.last = st.last_loss.unwrap_or(f32::NAN);
        self.queries = st.queries;
        self.compute_s = st.compute_s;
        self.prior_s = st.stage_s;
        self.run_prior_s = st.elapsed_s;
    }

    fn run_elapsed(&self) -> f64 {
        self.run_prior_s + self.run_t0.elapsed().as_secs_f64()
    }

    /// The progress to save after `step` steps of this stage.
    fn state(
        &self,
        step: usize,
        rng: &ChaCha8Rng,
        finished: &[StageSummary],
        last_val: &Option<SurfaceMetrics>,
    ) -> ImplicitState {
        ImplicitState {
            stage: self.stage.into(),
            step,
            elapsed_s: self.run_elapsed(),
            stage_s: self.prior_s + self.t0.elapsed().as_secs_f64(),
            first_loss: self.first,
            last_loss: self.last.is_finite().then_some(self.last),
            queries: self.queries,
            compute_s: self.compute_s,
            rng_word_pos: rng.get_word_pos().to_string(),
            finished: finished.to_vec(),
            last_val: last_val.clone(),
        }
    }

    /// After step `done` of a stage of `steps` steps: at a logging step (every `log_every`)
    /// writes the CSV row, at a validation step (every `eval_every`, when `has_val`) first
    /// validating with `validate` and keeping the figures in `last_val`. Returns whether the
    /// step checkpoints (every `ckpt_every`, and the last).
    #[allow(clippy::too_many_arguments)]
    fn step_done(
        &mut self,
        done: usize,
        lr: f64,
        steps: usize,
        [eval_every, log_every, ckpt_every]: [usize; 3],
        has_val: bool,
        last_val: &mut Option<SurfaceMetrics>,
        validate: impl FnOnce() -> Result<SurfaceMetrics, TrainError>,
    ) -> Result<bool, TrainError> {
        let at_eval = done % eval_every == 0 || done == steps;
        if done % log_every == 0 || at_eval {
            let m = if at_eval && has_val {
                Some(validate()?)
            } else {
                None
            };
            self.flush(done, lr, m.as_ref())?;
            if m.is_some() {
                *last_val = m;
            }
        }
        Ok(done % ckpt_every == 0 || done == steps)
    }

    fn push(&mut self, loss: f32) {
        self.window.0 += f64::from(loss);
        self.window.1 += 1;
    }

    fn flush(
        &mut self,
        step: usize,
        lr: f64,
        val: Option<&SurfaceMetrics>,
    ) -> Result<(), TrainError> {
        if self.window.1 == 0 {
            return Ok(());
        }
        let l = (self.window.0 / self.window.1 as f64) as f32;
        self.window = (0.0, 0);
        self.first.get_or_insert(l);
        self.last = l;
        let (vc, vf) = val
            .map(|m| {
                (
                    format!("{:.6}", m.chamfer_l2),
                    format!("{:.3}", m.fscore_1pct),
                )
            })
            .unwrap_or_default();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.csv)
            .map_err(|e| TrainError::io(&self.csv, e))?;
        writeln!(
            f,
            "{},{},{l:.6},{lr:.4e},{vc},{vf},{:.1}",
            self.offset + step,
            self.stage,
            self.run_elapsed()
        )
        .map_err(|e| TrainError::io(&self.csv, e))?;
        let line = format!(
            "{} step {:>6}  loss {l:.5}{}",
            self.stage,
            step,
            val.map(|m| format!(
                "  val Chamfer-L2 {:.5} F@1% {:.2} (empty {})",
                m.chamfer_l2, m.fscore_1pct, m.empty
            ))
            .unwrap_or_default()
        );
        if self.quiet {
            log::debug!("{line}");
        } else {
            log::info!("{line}");
        }
        Ok(())
    }

    fn summary(&self, steps: usize) -> StageSummary {
        StageSummary {
            stage: self.stage.into(),
            steps,
            first_loss: self.first.unwrap_or(f32::NAN),
            last_loss: self.last,
            seconds: self.prior_s + self.t0.elapsed().as_secs_f64(),
            queries_per_s: self.queries as f64 / self.compute_s.max(1e-9),
        }
    }
}

fn check_finite(loss: f32, stage: &str, step: usize) -> Result<(), TrainError> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(TrainError::Check(format!(
            "{stage}: loss is not finite at step {step}"
        )))
    }
}

/// Validation on pictures: encoder -> latent, dense decoder grid, marching cubes, metrics.
pub fn validate<B: Backend>(
    enc: &ImageEncoder<B>,
    dec: &ImplicitDecoder<B>,
    set: &ImplicitSet,
    cfg: &ImplicitConfig,
    limit: usize,
    device: &B::Device,
) -> Result<SurfaceMetrics, TrainError> {
    let n = if limit == 0 {
        set.views.len()
    } else {
        limit.min(set.views.len())
    };
    let views: Vec<usize> = (0..n).map(|i| i * set.views.len() / n.max(1)).collect();
    let mut all = Vec::new();
    for chunk in views.chunks(16) {
        let z = enc.forward(images::<B>(set, chunk, cfg, device));
        for (k, &v) in chunk.iter().enumerate() {
            let zk = z.clone().slice(k..k + 1);
            let m = decode_surface(
                |xyz| decoder_values(dec, zk.clone(), xyz, device),
                cfg.kind,
                cfg.val_res,
                &set.objects[set.views[v].obj].points,
                v as u64,
            )?;
            all.push(m.metrics);
        }
    }
    Ok(SurfaceMetrics::mean(&all))
}

/// Decoder values at `xyz` for one latent `[1, Z]` (burn, in chunks).
pub fn decoder_values<B: Backend>(
    dec: &ImplicitDecoder<B>,
    latent: Tensor<B, 2>,
    xyz: &[[f32; 3]],
    device: &B::Device,
) -> Result<Vec<f32>, TrainError> {
    let mut out = Vec::with_capacity(xyz.len());
    for part in xyz.chunks(32768) {
        let flat: Vec<f32> = part.iter().flatten().copied().collect();
        let t = Tensor::<B, 3>::from_data(TensorData::new(flat, [1, part.len(), 3]), device);
        let v = dec.forward(latent.clone(), t);
        out.extend(
            v.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| TrainError::Onnx(format!("decoder readout: {e:?}")))?,
        );
    }
    Ok(out)
}

/// Surfaces decoded from the learned codes of (up to 8) training objects.
fn fit_training_objects<B: Backend>(
    ad: &super::net::AutoDecoder<B>,
    train: &ImplicitSet,
    cfg: &ImplicitConfig,
    device: &B::Device,
) -> Result<SurfaceMetrics, TrainError> {
    let n = train.objects.len();
    let codes = ad.all_codes();
    let mut ms = Vec::new();
    for o in (0..n).step_by((n / 8).max(1)).take(8) {
        let z = codes.clone().slice(o..o + 1);
        let m = decode_surface(
            |xyz| decoder_values(&ad.decoder, z.clone(), xyz, device),
            Kind::Sdf,
            cfg.val_res,
            &train.objects[o].points,
            o as u64,
        )?;
        ms.push(m.metrics);
    }
    Ok(SurfaceMetrics::mean(&ms))
}

/// Validates, checks a resume against the saved configuration, saves the configuration and
/// opens the metrics CSV (new, or trimmed to the checkpoint); returns the CSV path and the
/// checkpoint's progress when resuming from one.
fn start_run(
    cfg: &ImplicitConfig,
    out: &Path,
    resume: bool,
) -> Result<(PathBuf, Option<ImplicitState>), TrainError> {
    cfg.validate()?;
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let config_path = out.join(files::CONFIG);
    let state_path = out.join(files::STATE);
    let saved = if resume && config_path.exists() && state_path.exists() {
        let old = ImplicitConfig::load(&config_path)?;
        if !old.same_shape(cfg) {
            return Err(TrainError::Config(format!(
                "{}: the saved run has another kind, network shape or data; cannot resume",
                config_path.display()
            )));
        }
        let st: ImplicitState = crate::lmnet::load_json(&state_path)?;
        Some(st)
    } else {
        let _ = std::fs::remove_file(&state_path);
        None
    };
    cfg.save(&config_path)?;
    let csv = out.join(files::METRICS);
    match &saved {
        Some(st) => {
            let offset = if st.stage == "encoder" {
                st.finished.first().map(|s| s.steps).unwrap_or(0)
            } else {
                0
            };
            trim_csv_after(&csv, offset + st.step)?;
        }
        None => std::fs::write(
            &csv,
            "step,stage,loss,lr,val_chamfer_l2,val_fscore_1pct,elapsed_s\n",
        )
        .map_err(|e| TrainError::io(&csv, e))?,
    }
    Ok((csv, saved))
}

/// Trains the configured kind; writes config, metrics, curve and weights into `out`, with
/// a checkpoint (weights, Adam state, progress) every `checkpoint_interval` steps. With
/// `resume`, continues from the checkpoint in `out` (refused when the saved configuration
/// has another kind, network shape or data).
pub fn train_implicit<B: AutodiffBackend>(
    cfg: &ImplicitConfig,
    train: &ImplicitSet,
    val: &ImplicitSet,
    out: &Path,
    resume: bool,
    device: &B::Device,
    quiet: bool,
) -> Result<ImplicitSummary, TrainError> {
    match cfg.kind {
        Kind::Sdf => train_sdf::<B>(cfg, train, val, out, resume, device, quiet),
        Kind::Occupancy => train_occupancy::<B>(cfg, train, val, out, resume, device, quiet),
    }
}

/// DeepSDF: auto-decoder, then the image encoder. A resume continues the stage of the
/// checkpoint; once stage 2 has a checkpoint, stage 1 can no longer grow.
pub fn train_sdf<B: AutodiffBackend>(
    cfg: &ImplicitConfig,
    train: &ImplicitSet,
    val: &ImplicitSet,
    out: &Path,
    resume: bool,
    device: &B::Device,
    quiet: bool,
) -> Result<ImplicitSummary, TrainError> {
    let (csv, saved) = start_run(cfg, out, resume)?;
    let _rng = crate::backend::seed_exclusive::<B>(device, cfg.seed);
    let run_t0 = Instant::now();
    let n_obj = train.objects.len();
    if n_obj == 0 || train.views.is_empty() {
        return Err(TrainError::Config("no training objects".into()));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x1a7e);

    // ---- stage 1: auto-decoder
    let mut ad = cfg.init_auto_decoder::<B>(n_obj, device);
    let mut optim = AdamConfig::new().init();
    let log_every = cfg.eval_every.clamp(1, 25);
    let ckpt_every = cfg.checkpoint_interval();
    let mut log = Log::new("autodecoder", csv.clone(), 0, run_t0, quiet);
    let mut start = 0;
    let mut stage2: Option<ImplicitState> = None;
    match saved {
        Some(st) if st.stage == "autodecoder" => {
            let (m, o, _) = load_checkpoint::<B, _, _, ImplicitState>(
                ad,
                optim,
                out,
                AUTODECODER_CKPT,
                device,
            )?;
            (ad, optim) = (m, o);
            restore_rng(&st, &mut rng)?;
            log.restore(&st);
            start = st.step;
            log::info!("autodecoder: resumed from step {start}");
        }
        Some(st) if st.stage == "encoder" => {
            let done1 = st.finished.first().map(|s| s.steps).unwrap_or(0);
            if done1 != cfg.steps {
                return Err(TrainError::Config(format!(
                    "the auto-decoder stage finished at {done1} steps and the encoder stage has \
                     started; stage 1 cannot change to {} steps (start a new run)",
                    cfg.steps
                )));
            }
            ad = load_module(ad, &out.join(files::AUTODECODER), device)?;
            stage2 = Some(st);
        }
        Some(st) => {
            return Err(TrainError::Config(format!(
                "checkpoint of stage `{}` in an sdf run",
                st.stage
            )))
        }
        None => {}
    }
    let s1 = if let Some(st) = &stage2 {
        st.finished.first().cloned().ok_or_else(|| {
            TrainError::Config("encoder checkpoint without the auto-decoder stage".into())
        })?
    } else {
        if start > 0 {
            B::seed(device, resume_seed(cfg.seed, start));
        }
        let mut batcher = BatchOrder::new(cfg.seed, n_obj, cfg.batch.min(n_obj));
        for step in start..cfg.steps {
            let objs = batcher.at(step);
            let b = objs.len();
            let q = sample_queries(train, &objs, cfg.queries, cfg.clamp, &mut rng);
            let t0 = Instant::now();
            let idx: Vec<i64> = objs.iter().map(|&o| o as i64).collect();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [b]), device);
            let codes = ad.codes_of(idx);
            let xyz =
                Tensor::<B, 3>::from_data(TensorData::new(q.xyz, [b, cfg.queries, 3]), device);
            let pred = ad.decoder.forward(codes.clone(), xyz);
            let data = clamped_l1(
                pred,
                t2::<B>(q.sdf, b, cfg.queries, device),
                t2::<B>(q.near, b, cfg.queries, device),
                t2::<B>(q.sign, b, cfg.queries, device),
                cfg.clamp,
            );
            let reg = codes
                .powi_scalar(2)
                .sum_dim(1)
                .mean()
                .mul_scalar(cfg.latent_reg);
            let loss = data.clone() + reg;
            let grads = GradientsParams::from_grads(loss.backward(), &ad);
            let lr = cfg.lr_at(step, cfg.steps);
            ad = optim.step(lr, ad, grads);
            let l: f32 = data.into_scalar().elem();
            log.compute_s += t0.elapsed().as_secs_f64();
            log.queries += b * cfg.queries;
            check_finite(l, "autodecoder", step)?;
            log.push(l);
            let done = step + 1;
            let at_eval = done % cfg.eval_every == 0 || done == cfg.steps;
            if done % log_every == 0 || at_eval {
                if at_eval {
                    // how well codes + decoder fit training objects (no pictures in this stage)
                    let m = fit_training_objects(&ad.valid(), train, cfg, device)?;
                    log::info!(
                        "autodecoder step {done}: fit of {} training objects Chamfer-L2 {:.5} F@1% {:.2}",
                        m.samples,
                        m.chamfer_l2,
                        m.fscore_1pct
                    );
                }
                log.flush(done, lr, None)?;
            }
            if done % ckpt_every == 0 || done == cfg.steps {
                let st = log.state(done, &rng, &[], &None);
                save_checkpoint(&ad, &optim, &st, out, AUTODECODER_CKPT)?;
            }
        }
        log.summary(cfg.steps)
    };
    save::<B, _>(&ad, out, files::AUTODECODER)?;
    save::<B, _>(&ad.decoder, out, files::DECODER)?;

    // ---- stage 2: image encoder -> code (decoder frozen)
    let codes = ad.all_codes().detach();
    let dec = ad.decoder.clone().no_grad();
    let mut enc = cfg.init_encoder::<B>(device);
    let mut optim = AdamConfig::new().init();
    let run_prior = log.run_prior_s;
    let mut log = Log::new("encoder", csv, cfg.steps, run_t0, quiet);
    log.run_prior_s = run_prior;
    let mut last_val = None;
    let mut start = 0;
    if let Some(st) = &stage2 {
        let (m, o, _) =
            load_checkpoint::<B, _, _, ImplicitState>(enc, optim, out, ENCODER_CKPT, device)?;
        (enc, optim) = (m, o);
        restore_rng(st, &mut rng)?;
        log.restore(st);
        last_val = st.last_val.clone();
        start = st.step;
        B::seed(device, resume_seed(cfg.seed, cfg.steps + start));
        log::info!("encoder: resumed from step {start}");
    }
    let finished = [s1.clone()];
    let n = train.views.len();
    let mut batcher = BatchOrder::new(cfg.seed ^ 2, n, cfg.batch.min(n));
    for step in start..cfg.encoder_steps {
        let views = batcher.at(step);
        let b = views.len();
        let objs: Vec<usize> = views.iter().map(|&v| train.views[v].obj).collect();
        let q = (cfg.encoder_sdf_weight > 0.0)
            .then(|| sample_queries(train, &objs, cfg.queries, cfg.clamp, &mut rng));
        let t0 = Instant::now();
        let img = images::<B>(train, &views, cfg, device);
        let idx: Vec<i64> = objs.iter().map(|&o| o as i64).collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [b]), device);
        let target = codes.clone().select(0, idx);
        let z = enc.forward(img);
        let mse = (z.clone() - target).powi_scalar(2).mean();
        let mut loss = mse.clone();
        if let Some(q) = q {
            let xyz =
                Tensor::<B, 3>::from_data(TensorData::new(q.xyz, [b, cfg.queries, 3]), device);
            let pred = dec.forward(z, xyz);
            let l = clamped_l1(
                pred,
                t2::<B>(q.sdf, b, cfg.queries, device),
                t2::<B>(q.near, b, cfg.queries, device),
                t2::<B>(q.sign, b, cfg.queries, device),
                cfg.clamp,
            );
            loss = loss + l.mul_scalar(cfg.encoder_sdf_weight);
            log.queries += b * cfg.queries;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &enc);
        let lr = cfg.lr_at(step, cfg.encoder_steps);
        enc = optim.step(lr, enc, grads);
        let l: f32 = mse.into_scalar().elem();
        log.compute_s += t0.elapsed().as_secs_f64();
        check_finite(l, "encoder", step)?;
        log.push(l);
        let done = step + 1;
        let every = [cfg.eval_every, log_every, ckpt_every];
        let has_val = !val.views.is_empty();
        if log.step_done(
            done,
            lr,
            cfg.encoder_steps,
            every,
            has_val,
            &mut last_val,
            || {
                let (e, d) = (enc.valid(), dec.valid());
                validate(&e, &d, val, cfg, cfg.data.val_samples, device)
            },
        )? {
            let st = log.state(done, &rng, &finished, &last_val);
            save_checkpoint(&enc, &optim, &st, out, ENCODER_CKPT)?;
        }
    }
    let s2 = log.summary(cfg.encoder_steps);
    save::<B, _>(&enc, out, files::ENCODER)?;
    let elapsed = log.run_elapsed();
    finish(out, vec![s1, s2], last_val, elapsed)
}

/// Occupancy network: encoder + decoder jointly with BCE.
pub fn train_occupancy<B: AutodiffBackend>(
    cfg: &ImplicitConfig,
    train: &ImplicitSet,
    val: &ImplicitSet,
    out: &Path,
    resume: bool,
    device: &B::Device,
    quiet: bool,
) -> Result<ImplicitSummary, TrainError> {
    let (csv, saved) = start_run(cfg, out, resume)?;
    let _rng = crate::backend::seed_exclusive::<B>(device, cfg.seed);
    let run_t0 = Instant::now();
    if train.views.is_empty() {
        return Err(TrainError::Config("no training pictures".into()));
    }
    let pos_weight = occupancy_pos_weight(cfg, train);
    log::info!("occupancy: inside samples weigh {pos_weight:.2}x the outside ones");
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x0cc);
    let mut net = cfg.init_occupancy::<B>(device);
    let mut optim = AdamConfig::new().init();
    let log_every = cfg.eval_every.clamp(1, 25);
    let ckpt_every = cfg.checkpoint_interval();
    let mut log = Log::new("occupancy", csv, 0, run_t0, quiet);
    let mut last_val = None;
    let mut start = 0;
    if let Some(st) = saved {
        if st.stage != "occupancy" {
            return Err(TrainError::Config(format!(
                "checkpoint of stage `{}` in an occupancy run",
                st.stage
            )));
        }
        let (m, o, _) =
            load_checkpoint::<B, _, _, ImplicitState>(net, optim, out, OCCUPANCY_CKPT, device)?;
        (net, optim) = (m, o);
        restore_rng(&st, &mut rng)?;
        log.restore(&st);
        last_val = st.last_val.clone();
        start = st.step;
        B::seed(device, resume_seed(cfg.seed, start));
        log::info!("occupancy: resumed from step {start}");
    }
    let n = train.views.len();
    let mut batcher = BatchOrder::new(cfg.seed, n, cfg.batch.min(n));
    for step in start..cfg.steps {
        let views = batcher.at(step);
        let b = views.len();
        let objs: Vec<usize> = views.iter().map(|&v| train.views[v].obj).collect();
        let q = sample_queries(train, &objs, cfg.queries, cfg.clamp, &mut rng);
        let t0 = Instant::now();
        let z = net.encoder.forward(images::<B>(train, &views, cfg, device));
        let xyz = Tensor::<B, 3>::from_data(TensorData::new(q.xyz, [b, cfg.queries, 3]), device);
        let logits = net.decoder.forward(z, xyz);
        let loss = weighted_bce_logits(logits, t2::<B>(q.occ, b, cfg.queries, device), pos_weight);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let lr = cfg.lr_at(step, cfg.steps);
        net = optim.step(lr, net, grads);
        let l: f32 = loss.into_scalar().elem();
        log.compute_s += t0.elapsed().as_secs_f64();
        log.queries += b * cfg.queries;
        check_finite(l, "occupancy", step)?;
        log.push(l);
        let done = step + 1;
        let every = [cfg.eval_every, log_every, ckpt_every];
        let has_val = !val.views.is_empty();
        if log.step_done(done, lr, cfg.steps, every, has_val, &mut last_val, || {
            let v = net.valid();
            validate(
                &v.encoder,
                &v.decoder,
                val,
                cfg,
                cfg.data.val_samples,
                device,
            )
        })? {
            let st = log.state(done, &rng, &[], &last_val);
            save_checkpoint(&net, &optim, &st, out, OCCUPANCY_CKPT)?;
        }
    }
    let s = log.summary(cfg.steps);
    save::<B, _>(&net.encoder, out, files::ENCODER)?;
    save::<B, _>(&net.decoder, out, files::DECODER)?;
    let elapsed = log.run_elapsed();
    finish(out, vec![s], last_val, elapsed)
}

/// The weight of inside samples: the configured one, or the outside/inside ratio of the
/// training samples (clamped to 1..=50).
pub fn occupancy_pos_weight(cfg: &ImplicitConfig, train: &ImplicitSet) -> f32 {
    if cfg.occupancy_pos_weight > 0.0 {
        return cfg.occupancy_pos_weight;
    }
    let (mut inside, mut total) = (0usize, 0usize);
    for o in &train.objects {
        inside += o.sdf.iter().filter(|s| s.1 < 0.0).count();
        total += o.sdf.len();
    }
    if inside == 0 {
        return 1.0;
    }
    ((total - inside) as f32 / inside as f32).clamp(1.0, 50.0)
}

fn restore_rng(st: &ImplicitState, rng: &mut ChaCha8Rng) -> Result<(), TrainError> {
    let pos: u128 = st.rng_word_pos.parse().map_err(|_| {
        TrainError::Config(format!(
            "checkpoint: bad generator position `{}`",
            st.rng_word_pos
        ))
    })?;
    rng.set_word_pos(pos);
    Ok(())
}

fn finish(
    out: &Path,
    stages: Vec<StageSummary>,
    last_val: Option<SurfaceMetrics>,
    elapsed_s: f64,
) -> Result<ImplicitSummary, TrainError> {
    let summary = ImplicitSummary {
        stages,
        last_val,
        elapsed_s,
    };
    let p = out.join(files::SUMMARY);
    let text = serde_json::to_string_pretty(&summary).map_err(|e| TrainError::Parse {
        path: p.clone(),
        msg: e.to_string(),
    })?;
    std::fs::write(&p, text).map_err(|e| TrainError::io(&p, e))?;
    crate::plot::loss_curve_png(&out.join(files::METRICS), &out.join(files::CURVE))?;
    Ok(summary)
}
