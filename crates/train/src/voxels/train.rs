//! Training and evaluation of voxel models: Adam with a cosine learning rate, weighted binary
//! cross-entropy after every view of a sequence, validation IoU, metrics CSV, loss curve,
//! checkpoints and resume.

use std::path::Path;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::data::VoxelObject;
use super::model::VoxelNet;
use super::{iou, VoxelTrainConfig};
use crate::export::floats;
use crate::lmnet::{load_module, save_checkpoint, BatchOrder};
use crate::training::{
    append_line, check_finite, resume_or_start, RunProgress, RunState, CHECKPOINT,
};
use crate::TrainError;

/// File names inside a voxel run folder: those of a point run (the loss curve shows the
/// train BCE and 1 - validation IoU, log scale).
pub use crate::training::files;

/// Mean IoU after fusing `views` views.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ViewIou {
    /// Views fused (single-view models: probabilities averaged over the views).
    pub views: usize,
    /// Mean IoU over the objects.
    pub iou: f32,
}

/// Progress saved with every checkpoint.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VoxelTrainState {
    /// Steps done.
    pub step: usize,
    /// Training wall time so far, seconds.
    pub elapsed_s: f64,
    /// Last validation IoU per number of views.
    pub last_val: Vec<ViewIou>,
    /// Train loss averaged over the last logging window.
    pub last_train_loss: Option<f32>,
}

impl RunState for VoxelTrainState {
    fn step(&self) -> usize {
        self.step
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VoxelTrainSummary {
    /// Final state.
    pub state: VoxelTrainState,
    /// Mean training loss of the first logging window of this call.
    pub first_loss: f32,
    /// Mean training loss of the last logging window.
    pub last_loss: f32,
    /// Training pictures per second (compute only).
    pub images_per_s: f64,
}

/// Binary cross-entropy on logits with a weight `pos_weight` on occupied cells, averaged
/// over all cells: `(1 - y) x + (1 + (w - 1) y) softplus(-x)`, written stably.
pub fn weighted_bce<B: Backend>(
    logits: Tensor<B, 4>,
    target: Tensor<B, 4>,
    pos_weight: f32,
) -> Tensor<B, 1> {
    let softplus_neg =
        logits.clone().neg().clamp_min(0.0) + logits.clone().abs().neg().exp().log1p();
    let w = target.clone().mul_scalar(pos_weight - 1.0).add_scalar(1.0);
    let l = target.neg().add_scalar(1.0) * logits + w * softplus_neg;
    l.mean()
}

/// Sequences of views as one tensor `[N, T, 3, H, W]`; `views[n]` lists the view indices of
/// object `n`.
pub fn sequence_tensor<B: Backend>(
    objects: &[&VoxelObject],
    views: &[Vec<usize>],
    side: usize,
    device: &B::Device,
) -> Result<Tensor<B, 5>, TrainError> {
    let t = views.first().map(|v| v.len()).unwrap_or(0);
    let per = 3 * side * side;
    let mut img = Vec::with_capacity(objects.len() * t * per);
    for (o, vs) in objects.iter().zip(views) {
        if vs.len() != t {
            return Err(TrainError::Config("sequences of different lengths".into()));
        }
        for &v in vs {
            let pic = o.views.get(v).ok_or_else(|| {
                TrainError::Config(format!("object {} has no view {v}", o.object))
            })?;
            if pic.len() != per {
                return Err(TrainError::Config(format!(
                    "object {} view {v}: {} values, want 3x{side}x{side}",
                    o.object,
                    pic.len()
                )));
            }
            img.extend_from_slice(pic);
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(img, [objects.len(), t, 3, side, side]),
        device,
    ))
}

/// Occupancy targets `[N, R, R, R]` (0/1 floats).
pub fn target_tensor<B: Backend>(
    objects: &[&VoxelObject],
    r: usize,
    device: &B::Device,
) -> Result<Tensor<B, 4>, TrainError> {
    let mut v = Vec::with_capacity(objects.len() * r * r * r);
    for o in objects {
        if o.voxels.len() != r * r * r {
            return Err(TrainError::Config(format!(
                "object {} has {} voxels, want {r}^3",
                o.object,
                o.voxels.len()
            )));
        }
        v.extend(o.voxels.iter().map(|&b| f32::from(b.min(1))));
    }
    Ok(Tensor::from_data(
        TensorData::new(v, [objects.len(), r, r, r]),
        device,
    ))
}

/// The objects of `objects` with at least as many views as the largest of `counts`, and
/// that number of views.
pub(crate) fn usable_objects<'a>(
    objects: &'a [VoxelObject],
    counts: &[usize],
) -> Result<(Vec<&'a VoxelObject>, usize), TrainError> {
    let tmax = counts.iter().copied().max().unwrap_or(1).max(1);
    let usable: Vec<&VoxelObject> = objects.iter().filter(|o| o.views.len() >= tmax).collect();
    if usable.is_empty() {
        return Err(TrainError::Config(format!(
            "no object has {tmax} views to evaluate"
        )));
    }
    Ok((usable, tmax))
}

/// IoU sums per number of fused views (burn and tract evaluations alike): a fusion model's
/// grid after `k` views is its logits after view `k` above the threshold's logit; a
/// single-view model's is the mean occupancy probability of the first `k` views above the
/// threshold.
pub(crate) struct ViewIouSums<'a> {
    counts: &'a [usize],
    sums: Vec<f64>,
    objects: usize,
    threshold: f32,
    logit_threshold: f32,
    fusion: bool,
}

impl<'a> ViewIouSums<'a> {
    /// Sums for the view counts `counts` of a model that fuses (`fusion`) or not.
    pub fn new(counts: &'a [usize], threshold: f32, fusion: bool) -> Self {
        Self {
            counts,
            sums: vec![0.0; counts.len()],
            objects: 0,
            threshold,
            logit_threshold: (threshold / (1.0 - threshold)).ln(),
            fusion,
        }
    }

    /// Adds an object with ground truth `voxels`; `logit(t, c)` is the model's logit of
    /// cell `c` (of `cells`) after view `t` (0-based).
    pub fn add(&mut self, voxels: &[u8], cells: usize, logit: impl Fn(usize, usize) -> f32) {
        let gt: Vec<bool> = voxels.iter().map(|&v| v > 0).collect();
        for (ci, &k) in self.counts.iter().enumerate() {
            let k = k.max(1);
            let pred: Vec<bool> = if self.fusion {
                (0..cells)
                    .map(|c| logit(k - 1, c) > self.logit_threshold)
                    .collect()
            } else {
                (0..cells)
                    .map(|c| {
                        let p: f32 = (0..k).map(|t| sigmoid1(logit(t, c))).sum::<f32>() / k as f32;
                        p > self.threshold
                    })
                    .collect()
            };
            self.sums[ci] += f64::from(iou(&pred, &gt));
        }
        self.objects += 1;
    }

    /// Mean IoU per view count over the objects added.
    pub fn means(self) -> Vec<ViewIou> {
        let n = self.objects as f64;
        self.counts
            .iter()
            .zip(self.sums)
            .map(|(&views, s)| ViewIou {
                views,
                iou: (s / n) as f32,
            })
            .collect()
    }
}

/// Mean IoU on `objects` after 1..=T views for each `T` in `counts` (views taken in view
/// order). Fusion models fuse the views in their state; single-view models average the
/// occupancy probabilities of the views (a baseline for fusion).
pub fn evaluate<B: Backend>(
    model: &VoxelNet<B>,
    objects: &[VoxelObject],
    counts: &[usize],
    cfg: &VoxelTrainConfig,
    device: &B::Device,
) -> Result<Vec<ViewIou>, TrainError> {
    let (usable, tmax) = usable_objects(objects, counts)?;
    let r = cfg.model.resolution;
    let cells = r * r * r;
    let mut sums = ViewIouSums::new(counts, cfg.threshold, model.fuses());
    for chunk in usable.chunks(cfg.batch.max(1)) {
        let seq: Vec<Vec<usize>> = chunk.iter().map(|_| (0..tmax).collect()).collect();
        let x = sequence_tensor::<B>(chunk, &seq, cfg.model.image, device)?;
        let outs: Vec<Vec<f32>> = model
            .forward_sequence(x)
            .into_iter()
            .map(floats)
            .collect::<Result<_, _>>()?;
        for (n, o) in chunk.iter().enumerate() {
            sums.add(&o.voxels, cells, |t, c| outs[t][n * cells + c]);
        }
    }
    Ok(sums.means())
}

/// The mean-shape baseline: one fixed grid for every picture, the cells occupied in more
/// than `fraction` of the `train` objects; returns its mean IoU on `eval`.
pub fn mean_shape_iou(train: &[VoxelObject], eval: &[VoxelObject], fraction: f32) -> f32 {
    let Some(first) = train.first() else {
        return 0.0;
    };
    let mut count = vec![0u32; first.voxels.len()];
    for o in train {
        for (c, &v) in count.iter_mut().zip(&o.voxels) {
            *c += u32::from(v > 0);
        }
    }
    let pred: Vec<bool> = count
        .iter()
        .map(|&c| c as f32 > fraction * train.len() as f32)
        .collect();
    if eval.is_empty() {
        return 0.0;
    }
    let sum: f64 = eval
        .iter()
        .map(|o| {
            let gt: Vec<bool> = o.voxels.iter().map(|&v| v > 0).collect();
            f64::from(iou(&pred, &gt))
        })
        .sum();
    (sum / eval.len() as f64) as f32
}

/// The class-mean oracle: for each eval object, the grid of cells occupied in more than
/// `fraction` of the train objects of its class (knows the class, not the picture); mean IoU
/// on `eval`. What a network that only recognises the class could reach.
pub fn class_mean_iou(train: &[VoxelObject], eval: &[VoxelObject], fraction: f32) -> f32 {
    let mut by_class: std::collections::BTreeMap<u16, Vec<VoxelObject>> = Default::default();
    for o in train {
        by_class.entry(o.class_id).or_default().push(o.clone());
    }
    let mut sum = 0.0f64;
    for o in eval {
        let same = by_class.get(&o.class_id).map(Vec::as_slice).unwrap_or(&[]);
        sum += f64::from(mean_shape_iou(same, std::slice::from_ref(o), fraction));
    }
    (sum / eval.len().max(1) as f64) as f32
}

fn sigmoid1(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The view counts evaluated for a configuration: 1, 2, 4, ... up to the views per object.
pub fn view_counts(cfg: &VoxelTrainConfig) -> Vec<usize> {
    let mut v = vec![1];
    let mut k = 2;
    while k <= cfg.data.views {
        v.push(k);
        k *= 2;
    }
    if *v.last().unwrap_or(&1) != cfg.data.views {
        v.push(cfg.data.views);
    }
    v
}

/// Trains a voxel model on in-memory objects; writes everything into `out`. With `resume`,
/// continues from the checkpoint in `out`.
pub fn train_voxels<B: AutodiffBackend>(
    cfg: &VoxelTrainConfig,
    train: &[VoxelObject],
    val: &[VoxelObject],
    out: &Path,
    resume: bool,
    device: &B::Device,
    quiet: bool,
) -> Result<VoxelTrainSummary, TrainError> {
    cfg.validate()?;
    let train: Vec<&VoxelObject> = train
        .iter()
        .filter(|o| o.views.len() >= cfg.seq_views)
        .collect();
    if train.is_empty() {
        return Err(TrainError::Config(format!(
            "no training object has {} views",
            cfg.seq_views
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let state_path = out.join(files::STATE);
    let metrics_path = out.join(files::METRICS);
    let config_path = out.join(files::CONFIG);
    let resuming = resume && state_path.exists();
    if resuming {
        let saved = VoxelTrainConfig::load(&config_path)?;
        if saved.model != cfg.model {
            return Err(TrainError::Config(format!(
                "{}: the saved model shape differs from this configuration; cannot resume",
                config_path.display()
            )));
        }
    }
    cfg.save(&config_path)?;
    let _rng = crate::backend::seed_exclusive::<B>(device, cfg.seed);

    let header = format!(
        "step,lr,train_bce,val_iou_1view,val_iou_{}views,elapsed_s,images_per_s",
        cfg.seq_views
    );
    let (mut model, mut optim, mut state) = resume_or_start::<B, _, _, VoxelTrainState>(
        cfg.model.init(device),
        AdamConfig::new().init::<B, VoxelNet<B>>(),
        out,
        resuming,
        &metrics_path,
        &header,
        device,
    )?;
    let mut run = RunProgress::new(
        quiet,
        cfg.steps,
        state.step,
        state.elapsed_s,
        cfg.eval_every,
    );
    let mut window = (0.0f64, 0usize);
    let mut order = BatchOrder::new(cfg.seed, train.len(), cfg.batch);
    let r = cfg.model.resolution;
    let val_counts = [1, cfg.seq_views];

    while state.step < cfg.steps {
        let step = state.step;
        // deterministic from (seed, step): resuming continues the same order and views
        let objs: Vec<&VoxelObject> = order.at(step).into_iter().map(|i| train[i]).collect();
        let mut vrng = rand_chacha::ChaCha8Rng::seed_from_u64(
            cfg.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ step as u64,
        );
        let views: Vec<Vec<usize>> = objs
            .iter()
            .map(|o| {
                let mut v: Vec<usize> = (0..o.views.len()).collect();
                v.shuffle(&mut vrng);
                v.truncate(cfg.seq_views);
                v
            })
            .collect();
        let x = sequence_tensor::<B>(&objs, &views, cfg.model.image, device)?;
        let y = target_tensor::<B>(&objs, r, device)?;
        let t0 = Instant::now();
        let outs = model.forward_sequence(x);
        let t = outs.len() as f32;
        let mut loss: Option<Tensor<B, 1>> = None;
        for o in outs {
            let l = weighted_bce(o, y.clone(), cfg.pos_weight);
            loss = Some(match loss {
                Some(a) => a + l,
                None => l,
            });
        }
        let loss = loss
            .ok_or_else(|| TrainError::Config("empty sequence".into()))?
            .div_scalar(t);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = cfg.lr_at(step);
        let lv: f32 = loss.into_scalar().elem();
        model = optim.step(lr, model, grads);
        run.computed(t0, cfg.batch * cfg.seq_views);
        check_finite(lv, step)?;
        window.0 += f64::from(lv);
        window.1 += 1;
        state.step += 1;
        run.inc();

        let at_eval = run.at_eval(state.step, cfg.steps);
        if run.at_log(state.step) || at_eval {
            let tl = (window.0 / window.1.max(1) as f64) as f32;
            window = (0.0, 0);
            run.logged(tl);
            state.last_train_loss = Some(tl);
            let mut val_cols = ",".to_string();
            if at_eval && !val.is_empty() {
                let m = evaluate(&model.valid(), val, &val_counts, cfg, device)?;
                val_cols = format!("{:.4},{:.4}", m[0].iou, m[1].iou);
                run.say(format!(
                    "step {:>6}  train bce {tl:.5}  val IoU 1 view {:.4}, {} views {:.4}",
                    state.step, m[0].iou, cfg.seq_views, m[1].iou
                ));
                state.last_val = m;
            }
            state.elapsed_s = run.elapsed();
            let ips = run.images_per_s();
            append_line(
                &metrics_path,
                &format!(
                    "{},{lr:.6e},{tl:.6},{val_cols},{:.1},{ips:.2}",
                    state.step, state.elapsed_s
                ),
            )?;
            run.message(tl, ips);
        }
        if state.step % cfg.checkpoint_every == 0 || state.step == cfg.steps {
            state.elapsed_s = run.elapsed();
            save_checkpoint(&model, &optim, &state, out, CHECKPOINT)?;
            let _ = loss_curve(&metrics_path, &out.join(files::CURVE));
        }
    }
    let (first_loss, last_loss, images_per_s) = run.finish();
    loss_curve(&metrics_path, &out.join(files::CURVE))?;
    Ok(VoxelTrainSummary {
        first_loss,
        last_loss,
        images_per_s,
        state,
    })
}

/// Plots train BCE and `1 - IoU` (fused views) from the metrics CSV (log scale).
pub fn loss_curve(metrics_csv: &Path, out: &Path) -> Result<(), TrainError> {
    use crate::plot::Series;
    let text = std::fs::read_to_string(metrics_csv).map_err(|e| TrainError::io(metrics_csv, e))?;
    let mut train = Series { points: vec![] };
    let mut val = Series { points: vec![] };
    for row in text.lines().skip(1) {
        let f: Vec<&str> = row.split(',').collect();
        let Some(Ok(step)) = f.first().map(|s| s.parse::<f64>()) else {
            continue;
        };
        if let Some(Ok(t)) = f.get(2).map(|s| s.parse::<f64>()) {
            train.points.push((step, t));
        }
        if let Some(Ok(v)) = f.get(4).map(|s| s.parse::<f64>()) {
            val.points.push((step, 1.0 - v));
        }
    }
    crate::plot::line_plot(&[train, val], true, out)
}

/// Loads the configuration and weights saved in a run folder onto `device` (any backend).
pub fn load_voxel_model<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<(VoxelTrainConfig, VoxelNet<B>), TrainError> {
    let cfg = VoxelTrainConfig::load(&run.join(files::CONFIG))?;
    let model = load_module(cfg.model.init::<B>(device), &run.join(files::MODEL), device)?;
    Ok((cfg, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NdArrayCpu;

    #[test]
    fn weighted_bce_matches_the_formula() {
        let dev = Default::default();
        let x = [-3.0f32, -0.5, 0.0, 2.0];
        let y = [0.0f32, 1.0, 1.0, 0.0];
        let lt = Tensor::<NdArrayCpu, 1>::from_floats(x.as_slice(), &dev).reshape([1, 1, 2, 2]);
        let yt = Tensor::<NdArrayCpu, 1>::from_floats(y.as_slice(), &dev).reshape([1, 1, 2, 2]);
        let got: f32 = weighted_bce(lt, yt, 3.0).into_scalar();
        let want: f32 = x
            .iter()
            .zip(&y)
            .map(|(&x, &y)| {
                let p = sigmoid1(x);
                -(3.0 * y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            })
            .sum::<f32>()
            / 4.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn view_counts_are_powers_of_two_and_all() {
        let mut c = VoxelTrainConfig::preset("test").unwrap();
        c.data.views = 4;
        assert_eq!(view_counts(&c), vec![1, 2, 4]);
        c.data.views = 6;
        assert_eq!(view_counts(&c), vec![1, 2, 4, 6]);
        c.data.views = 1;
        assert_eq!(view_counts(&c), vec![1]);
    }
}
