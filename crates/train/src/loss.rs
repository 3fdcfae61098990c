//! Losses written in burn tensors (differentiable on every backend).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Pairwise squared distances `[B, N, M]` between `a` `[B, N, 3]` and `b` `[B, M, 3]`,
/// computed as `|a|^2 + |b|^2 - 2 a.b` (one batched matmul) and clamped at 0.
pub fn pairwise_sq_dist<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>) -> Tensor<B, 3> {
    let aa = a.clone().powi_scalar(2).sum_dim(2); // [B, N, 1]
    let bb = b.clone().powi_scalar(2).sum_dim(2).swap_dims(1, 2); // [B, 1, M]
    let ab = a.matmul(b.swap_dims(1, 2)); // [B, N, M]
    (aa + bb - ab.mul_scalar(2.0)).clamp_min(0.0)
}

/// Symmetric Chamfer distance (squared L2, mean over points each way) per batch element:
/// `[B]` from `pred` `[B, N, 3]` and `gt` `[B, M, 3]`.
pub fn chamfer<B: Backend>(pred: Tensor<B, 3>, gt: Tensor<B, 3>) -> Tensor<B, 1> {
    let d = pairwise_sq_dist(pred, gt);
    chamfer_from_dist(d)
}

fn chamfer_from_dist<B: Backend>(d: Tensor<B, 3>) -> Tensor<B, 1> {
    let [b, _, _] = d.dims();
    let fwd = d.clone().min_dim(2).mean_dim(1).reshape([b]); // pred -> gt
    let bwd = d.min_dim(1).mean_dim(2).reshape([b]); // gt -> pred
    fwd + bwd
}

/// `gt` `[B, M, 3]` once per hypothesis: `[B * K, M, 3]` (hypothesis-major within a picture).
fn per_hypothesis<B: Backend>(gt: Tensor<B, 3>, k: usize) -> Tensor<B, 3> {
    if k == 1 {
        return gt;
    }
    let [b, m, _] = gt.dims();
    gt.unsqueeze_dim::<4>(1)
        .repeat_dim(1, k)
        .reshape([b * k, m, 3])
}

/// Loss terms of a point-set batch.
#[derive(Debug, Clone)]
pub struct PointLoss<B: Backend> {
    /// Total loss to minimise (scalar, `[1]`).
    pub total: Tensor<B, 1>,
    /// Min-over-hypotheses Chamfer, batch mean (`[1]`).
    pub chamfer: Tensor<B, 1>,
    /// Part-label cross-entropy (`[1]`), when labels are trained.
    pub labels: Option<Tensor<B, 1>>,
}

/// How the part-label cross-entropy weighs the parts (`label_balance` in a run's
/// configuration). The weights come from the part frequencies of the training set's
/// ground-truth points ([`label_histogram`], [`class_weights`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelBalance {
    /// Every point weighs 1 (plain cross-entropy; runs before session 7).
    #[default]
    None,
    /// Weight `1 / sqrt(f)` of the part's frequency `f`: a part 100x rarer weighs 10x.
    InvSqrt,
    /// Median-frequency balancing (Eigen & Fergus): `median(f) / f`, a part 100x rarer
    /// weighs 100x.
    MedianFreq,
}

impl std::fmt::Display for LabelBalance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LabelBalance::None => "none",
            LabelBalance::InvSqrt => "inv_sqrt",
            LabelBalance::MedianFreq => "median_freq",
        })
    }
}

/// Points per part label (`classes` bins) over `labels` (one slice per sample); labels
/// `>= classes` are not counted.
pub fn label_histogram<'a>(labels: impl IntoIterator<Item = &'a [u8]>, classes: usize) -> Vec<u64> {
    let mut counts = vec![0u64; classes];
    for sample in labels {
        for &l in sample {
            if let Some(c) = counts.get_mut(usize::from(l)) {
                *c += 1;
            }
        }
    }
    counts
}

/// Per-part weights of the label cross-entropy from the point counts `counts` of the
/// training set: the [`LabelBalance`] rule on the parts present (count > 0), normalised to a
/// mean of 1 over those parts; an absent part (never a target) keeps weight 1. The loss is a
/// weighted mean (`sum w·ce / sum w`), so this normalisation does not change it: only the
/// ratios between parts matter. `None` (or no part present): all 1.
pub fn class_weights(counts: &[u64], balance: LabelBalance) -> Vec<f32> {
    let total: u64 = counts.iter().sum();
    let present: Vec<f64> = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 / total as f64)
        .collect();
    if balance == LabelBalance::None || present.is_empty() {
        return vec![1.0; counts.len()];
    }
    let median = {
        let mut f = present.clone();
        f.sort_by(f64::total_cmp);
        let n = f.len();
        if n % 2 == 1 {
            f[n / 2]
        } else {
            0.5 * (f[n / 2 - 1] + f[n / 2])
        }
    };
    let raw = |f: f64| match balance {
        LabelBalance::None => 1.0,
        LabelBalance::InvSqrt => 1.0 / f.sqrt(),
        LabelBalance::MedianFreq => median / f,
    };
    let mean = present.iter().map(|&f| raw(f)).sum::<f64>() / present.len() as f64;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                1.0
            } else {
                (raw(c as f64 / total as f64) / mean) as f32
            }
        })
        .collect()
}

/// The part-label term of a point loss.
#[derive(Debug, Clone)]
pub struct LabelTerm<B: Backend> {
    /// `[B, M]` part label of every ground-truth point.
    pub gt_labels: Tensor<B, 2, Int>,
    /// Weight of the label cross-entropy in the total loss.
    pub weight: f32,
    /// `[L]` per-part weights ([`class_weights`]); `None`: every point weighs 1.
    pub class_weights: Option<Tensor<B, 1>>,
    /// Also score every ground-truth point's part against the logits of its nearest
    /// predicted point (the labelling `eval`'s part IoU scores), and average both
    /// directions.
    pub symmetric: bool,
}

/// Min-of-K Chamfer loss of `pred` `[B, K, N, 3]` against `gt` `[B, M, 3]`, plus (when
/// `logits` `[B, K, N, L]` and `gt_labels` `[B, M]` are given) the cross-entropy of every
/// predicted point's label against the label of its nearest ground-truth point, weighted by
/// `label_weight`.
pub fn point_loss<B: Backend>(
    pred: Tensor<B, 4>,
    gt: Tensor<B, 3>,
    logits: Option<Tensor<B, 4>>,
    gt_labels: Option<Tensor<B, 2, Int>>,
    label_weight: f32,
) -> PointLoss<B> {
    point_loss_with(pred, gt, logits, plain_term(gt_labels, label_weight))
}

/// A [`LabelTerm`] without part weights, one direction (the loss before session 7).
fn plain_term<B: Backend>(
    gt_labels: Option<Tensor<B, 2, Int>>,
    weight: f32,
) -> Option<LabelTerm<B>> {
    gt_labels.map(|gt_labels| LabelTerm {
        gt_labels,
        weight,
        class_weights: None,
        symmetric: false,
    })
}

/// [`point_loss`] with a full [`LabelTerm`] (part weights, both directions).
pub fn point_loss_with<B: Backend>(
    pred: Tensor<B, 4>,
    gt: Tensor<B, 3>,
    logits: Option<Tensor<B, 4>>,
    labels: Option<LabelTerm<B>>,
) -> PointLoss<B> {
    let [b, k, n, _] = pred.dims();
    let m = gt.dims()[1];
    let pred = pred.reshape([b * k, n, 3]);
    let gt_k = per_hypothesis(gt, k);
    let d = pairwise_sq_dist(pred, gt_k);
    let cd = chamfer_from_dist(d.clone()).reshape([b, k]);
    let chamfer = cd.min_dim(1).mean();
    // nearest points of the other cloud (no gradient through argmin)
    with_label_loss(chamfer, logits, labels, || {
        let d = d.detach();
        (
            d.clone().argmin(2).reshape([b * k, n]),
            d.argmin(1).reshape([b * k, m]),
        )
    })
}

/// Cross-entropy of `logits` `[P, L]` against `target` `[P]`: the mean over the rows, or with
/// `class_weights` `[L]` the weighted mean `sum w[t]·ce / sum w[t]` (`w[t]` the weight of
/// the row's target, as PyTorch's weighted `cross_entropy`).
pub fn cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    target: Tensor<B, 1, Int>,
    class_weights: Option<&Tensor<B, 1>>,
) -> Tensor<B, 1> {
    let [p, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    let ce = logp
        .gather(1, target.clone().reshape([p, 1]))
        .reshape([p])
        .neg();
    match class_weights {
        None => ce.mean(),
        Some(w) => {
            let wt = w.clone().select(0, target);
            (ce * wt.clone()).sum() / wt.sum().clamp_min(1e-12)
        }
    }
}

/// The [`PointLoss`] of the min-of-K Chamfer `chamfer`, plus (when `logits` `[B, K, N, L]`
/// and a [`LabelTerm`] are given) the cross-entropy of every predicted point's label against
/// the label of its nearest ground-truth point and, when symmetric, of every ground-truth
/// point's label against the logits of its nearest predicted point (`nearest()`: `[B * K,
/// N]` and `[B * K, M]` indices).
fn with_label_loss<B: Backend>(
    chamfer: Tensor<B, 1>,
    logits: Option<Tensor<B, 4>>,
    labels: Option<LabelTerm<B>>,
    nearest: impl FnOnce() -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>),
) -> PointLoss<B> {
    let mut total = chamfer.clone();
    let mut label_loss = None;
    if let (Some(logits), Some(term)) = (logits, labels) {
        let [b, k, n, l] = logits.dims();
        let gl = term.gt_labels;
        let m = gl.dims()[1];
        let (nn_p, nn_g) = nearest();
        let gl = if k == 1 {
            gl
        } else {
            gl.unsqueeze_dim::<3>(1)
                .repeat_dim(1, k)
                .reshape([b * k, m])
        };
        let w = term.class_weights.as_ref();
        let logits = logits.reshape([b * k, n, l]);
        let target = gl.clone().gather(1, nn_p).reshape([b * k * n]);
        let mut ce = cross_entropy(logits.clone().reshape([b * k * n, l]), target, w);
        if term.symmetric {
            let idx = nn_g
                .unsqueeze_dim::<3>(2)
                .repeat_dim(2, l)
                .reshape([b * k, m, l]);
            let at_gt = logits.gather(1, idx).reshape([b * k * m, l]);
            let back = cross_entropy(at_gt, gl.reshape([b * k * m]), w);
            ce = (ce + back).mul_scalar(0.5);
        }
        total = total + ce.clone().mul_scalar(term.weight);
        label_loss = Some(ce);
    }
    PointLoss {
        total,
        chamfer,
        labels: label_loss,
    }
}

/// Nearest-neighbour indices of a batch, computed on the host by brute force (all cores):
/// `(pred -> gt [B*N], gt -> pred [B*M])`, flat per batch element.
pub fn nearest_indices(
    pred: &[f32],
    gt: &[f32],
    b: usize,
    n: usize,
    m: usize,
) -> (Vec<i64>, Vec<i64>) {
    let mut nn_p = vec![0i64; b * n];
    let mut nn_g = vec![0i64; b * m];
    let work = |bi: usize, np: &mut [i64], ng: &mut [i64]| {
        let p = &pred[bi * n * 3..(bi + 1) * n * 3];
        let g = &gt[bi * m * 3..(bi + 1) * m * 3];
        let mut best_g = vec![f32::INFINITY; m];
        for (i, pi) in p.chunks_exact(3).enumerate() {
            let mut best = f32::INFINITY;
            let mut arg = 0usize;
            for (j, gj) in g.chunks_exact(3).enumerate() {
                let d0 = pi[0] - gj[0];
                let d1 = pi[1] - gj[1];
                let d2 = pi[2] - gj[2];
                let d = d0 * d0 + d1 * d1 + d2 * d2;
                if d < best {
                    best = d;
                    arg = j;
                }
                if d < best_g[j] {
                    best_g[j] = d;
                    ng[j] = i as i64;
                }
            }
            np[i] = arg as i64;
        }
    };
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .clamp(1, b.max(1));
    let per = b.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (ci, (np, ng)) in nn_p
            .chunks_mut(per * n)
            .zip(nn_g.chunks_mut(per * m))
            .enumerate()
        {
            s.spawn(move || {
                for k in 0..np.len() / n {
                    let bi = ci * per + k;
                    work(bi, &mut np[k * n..(k + 1) * n], &mut ng[k * m..(k + 1) * m]);
                }
            });
        }
    });
    (nn_p, nn_g)
}

/// Same loss as [`point_loss`] but the nearest neighbours are searched on the host and the
/// differentiable part is two gathers: `O(B N)` tensor work instead of the `[B, N, M]`
/// distance matrix (the gradient of a min is the gradient at its argmin, so the value and
/// gradient equal the dense form's). Fast on CPU backends.
pub fn point_loss_indexed<B: Backend>(
    pred: Tensor<B, 4>,
    gt: Tensor<B, 3>,
    logits: Option<Tensor<B, 4>>,
    gt_labels: Option<Tensor<B, 2, Int>>,
    label_weight: f32,
) -> PointLoss<B> {
    point_loss_indexed_with(pred, gt, logits, plain_term(gt_labels, label_weight))
}

/// [`point_loss_indexed`] with a full [`LabelTerm`] (part weights, both directions).
pub fn point_loss_indexed_with<B: Backend>(
    pred: Tensor<B, 4>,
    gt: Tensor<B, 3>,
    logits: Option<Tensor<B, 4>>,
    labels: Option<LabelTerm<B>>,
) -> PointLoss<B> {
    let [b, k, n, _] = pred.dims();
    let [_, m, _] = gt.dims();
    let device = pred.device();
    let pred = pred.reshape([b * k, n, 3]);
    let gt_k = per_hypothesis(gt, k);
    let host = |t: Tensor<B, 3>| -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap_or_default()
    };
    let (nn_p, nn_g) = nearest_indices(
        &host(pred.clone().detach()),
        &host(gt_k.clone()),
        b * k,
        n,
        m,
    );
    let idx_p = Tensor::<B, 2, Int>::from_data(TensorData::new(nn_p, [b * k, n]), &device);
    let idx_g = Tensor::<B, 2, Int>::from_data(TensorData::new(nn_g, [b * k, m]), &device);
    let expand = |i: Tensor<B, 2, Int>, len: usize| {
        i.unsqueeze_dim::<3>(2)
            .repeat_dim(2, 3)
            .reshape([b * k, len, 3])
    };
    let gt_at_p = gt_k.clone().gather(1, expand(idx_p.clone(), n));
    let pred_at_g = pred.clone().gather(1, expand(idx_g.clone(), m));
    let fwd = (pred - gt_at_p)
        .powi_scalar(2)
        .sum_dim(2)
        .mean_dim(1)
        .reshape([b * k]);
    let bwd = (gt_k - pred_at_g)
        .powi_scalar(2)
        .sum_dim(2)
        .mean_dim(1)
        .reshape([b * k]);
    let cd = (fwd + bwd).reshape([b, k]);
    let chamfer = cd.min_dim(1).mean();
    with_label_loss(chamfer, logits, labels, || (idx_p, idx_g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn chamfer_matches_brute_force() {
        let dev = Default::default();
        let a = [[0.0f32, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]];
        let b = [[0.0f32, 0.1, 0.0], [1.0, 1.0, 1.0]];
        let ta = Tensor::<B, 2>::from_floats(a, &dev).reshape([1, 3, 3]);
        let tb = Tensor::<B, 2>::from_floats(b, &dev).reshape([1, 2, 3]);
        let got: f32 = chamfer(ta, tb).into_scalar();
        let d = |p: [f32; 3], q: [f32; 3]| (0..3).map(|i| (p[i] - q[i]).powi(2)).sum::<f32>();
        let fwd: f32 = a
            .iter()
            .map(|&p| b.iter().map(|&q| d(p, q)).fold(f32::MAX, f32::min))
            .sum::<f32>()
            / 3.0;
        let bwd: f32 = b
            .iter()
            .map(|&q| a.iter().map(|&p| d(p, q)).fold(f32::MAX, f32::min))
            .sum::<f32>()
            / 2.0;
        assert!((got - (fwd + bwd)).abs() < 1e-5, "{got} vs {}", fwd + bwd);
    }

    #[test]
    fn class_weights_of_a_known_histogram() {
        // frequencies 0.64, 0.16, 0.16, 0.04 (and an absent part 4)
        let counts = [64u64, 16, 16, 4, 0];
        assert_eq!(class_weights(&counts, LabelBalance::None), vec![1.0; 5]);
        // 1/sqrt(f): 1.25, 2.5, 2.5, 5 (mean 2.8125) -> /2.8125
        let w = class_weights(&counts, LabelBalance::InvSqrt);
        let want = [1.25 / 2.8125, 2.5 / 2.8125, 2.5 / 2.8125, 5.0 / 2.8125, 1.0];
        for (g, e) in w.iter().zip(want) {
            assert!((g - e).abs() < 1e-6, "{w:?}");
        }
        assert!((w[..4].iter().sum::<f32>() - 4.0).abs() < 1e-5);
        assert!((w[3] / w[0] - 4.0).abs() < 1e-5); // 16x rarer weighs 4x
                                                   // median f = 0.16: 0.25, 1, 1, 4 (mean 1.5625) -> /1.5625
        let w = class_weights(&counts, LabelBalance::MedianFreq);
        let want = [0.16, 0.64, 0.64, 2.56, 1.0];
        for (g, e) in w.iter().zip(want) {
            assert!((g - e).abs() < 1e-6, "{w:?}");
        }
        // even count of parts: median of the middle two; nothing counted: all 1
        let w = class_weights(&[1, 3], LabelBalance::MedianFreq);
        assert!((w[0] / w[1] - 3.0).abs() < 1e-5, "{w:?}");
        assert_eq!(class_weights(&[0, 0], LabelBalance::InvSqrt), vec![1.0; 2]);
        // histogram of label slices; out-of-range labels are not counted
        let h = label_histogram([&[0u8, 1, 1][..], &[2, 9, 1][..]], 3);
        assert_eq!(h, vec![1, 3, 1]);
    }

    #[test]
    fn weighted_label_loss_equals_hand_computation() {
        let dev = Default::default();
        // two predicted points on two ground-truth points, three parts
        let pred = [[0.0f32, 0.0, 0.0], [1.0, 0.0, 0.0]];
        let gt = [[0.0f32, 0.1, 0.0], [1.0, 0.1, 0.0]];
        let logits = [[2.0f32, 0.0, -1.0], [0.5, 1.5, 0.0]];
        let gt_l = [0i64, 2];
        let cw = [0.5f32, 1.0, 2.0];
        let tp = Tensor::<B, 2>::from_floats(pred, &dev).reshape([1, 1, 2, 3]);
        let tg = Tensor::<B, 2>::from_floats(gt, &dev).reshape([1, 2, 3]);
        let tl = Tensor::<B, 2>::from_floats(logits, &dev).reshape([1, 1, 2, 3]);
        let term = |w: Option<[f32; 3]>, symmetric: bool| {
            Some(LabelTerm {
                gt_labels: Tensor::<B, 2, Int>::from_data(
                    TensorData::new(gt_l.to_vec(), [1, 2]),
                    &dev,
                ),
                weight: 0.1,
                class_weights: w.map(|w| Tensor::<B, 1>::from_floats(w, &dev)),
                symmetric,
            })
        };
        // by hand: ce = logsumexp(z) - z[target]
        let ce = |z: [f32; 3], t: usize| z.iter().map(|v| v.exp()).sum::<f32>().ln() - z[t];
        let (c0, c1) = (ce(logits[0], 0), ce(logits[1], 2));
        let plain = (c0 + c1) / 2.0;
        let weighted = (0.5 * c0 + 2.0 * c1) / 2.5;
        let chamfer = 0.01 + 0.01; // 0.1^2 each way
        for (w, sym, want) in [
            (None, false, plain),
            (Some(cw), false, weighted),
            // every point is the other's nearest: the reverse direction is the same term
            (Some(cw), true, weighted),
        ] {
            for dense in [true, false] {
                let f = if dense {
                    point_loss_with
                } else {
                    point_loss_indexed_with
                };
                let l = f(tp.clone(), tg.clone(), Some(tl.clone()), term(w, sym));
                let got: f32 = l.labels.unwrap().into_scalar();
                assert!(
                    (got - want).abs() < 1e-5,
                    "{w:?} {sym} {dense}: {got} vs {want}"
                );
                let total: f32 = l.total.into_scalar();
                assert!((total - (chamfer + 0.1 * want)).abs() < 1e-5, "{total}");
            }
        }
        // the plain loss through the old entry point is the unweighted one
        let old = point_loss_indexed(
            tp.clone(),
            tg.clone(),
            Some(tl.clone()),
            term(None, false).map(|t| t.gt_labels),
            0.1,
        );
        assert!((old.labels.unwrap().into_scalar() - plain).abs() < 1e-5);
        // symmetric with distinct nearest points: a third predicted point in between, so
        // the two directions differ (gt 1's nearest predicted point is point 2)
        let pred3 = [[0.0f32, 0.0, 0.0], [0.7, 0.0, 0.0], [1.0, 0.05, 0.0]];
        let logits3 = [[2.0f32, 0.0, -1.0], [0.5, 1.5, 0.0], [0.0, 0.3, 0.9]];
        let tp3 = Tensor::<B, 2>::from_floats(pred3, &dev).reshape([1, 1, 3, 3]);
        let tl3 = Tensor::<B, 2>::from_floats(logits3, &dev).reshape([1, 1, 3, 3]);
        // forward: targets 0, 2, 2; backward: gt 0 -> pred 0 (part 0), gt 1 -> pred 2 (part 2)
        let fwd =
            (0.5 * ce(logits3[0], 0) + 2.0 * ce(logits3[1], 2) + 2.0 * ce(logits3[2], 2)) / 4.5;
        let bwd = (0.5 * ce(logits3[0], 0) + 2.0 * ce(logits3[2], 2)) / 2.5;
        for dense in [true, false] {
            let f = if dense {
                point_loss_with
            } else {
                point_loss_indexed_with
            };
            let l = f(
                tp3.clone(),
                tg.clone(),
                Some(tl3.clone()),
                term(Some(cw), true),
            );
            let got: f32 = l.labels.unwrap().into_scalar();
            let want = 0.5 * (fwd + bwd);
            assert!((got - want).abs() < 1e-5, "{dense}: {got} vs {want}");
        }
    }

    #[test]
    fn indexed_loss_equals_dense_loss_and_gradient() {
        use burn::backend::Autodiff;
        type A = Autodiff<B>;
        let dev = Default::default();
        let vals = |n: usize, s: usize| -> Vec<f32> {
            // distinct pseudo-random values (no distance ties)
            let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ s as u64;
            (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        };
        let (b, k, n, m, l) = (2, 2, 17, 13, 3);
        let mk_pred = || {
            Tensor::<A, 4>::from_data(TensorData::new(vals(b * k * n * 3, 1), [b, k, n, 3]), &dev)
                .require_grad()
        };
        let gt = Tensor::<A, 3>::from_data(TensorData::new(vals(b * m * 3, 5), [b, m, 3]), &dev);
        let logits =
            Tensor::<A, 4>::from_data(TensorData::new(vals(b * k * n * l, 9), [b, k, n, l]), &dev);
        let labels = Tensor::<A, 2, Int>::from_data(
            TensorData::new(
                (0..b * m).map(|i| (i % l) as i64).collect::<Vec<_>>(),
                [b, m],
            ),
            &dev,
        );
        let p1 = mk_pred();
        let d = point_loss(
            p1.clone(),
            gt.clone(),
            Some(logits.clone()),
            Some(labels.clone()),
            0.5,
        );
        let p2 = mk_pred();
        let x = point_loss_indexed(p2.clone(), gt, Some(logits), Some(labels), 0.5);
        let (dv, xv): (f32, f32) = (d.total.clone().into_scalar(), x.total.clone().into_scalar());
        assert!((dv - xv).abs() < 1e-5, "{dv} vs {xv}");
        let g1 = p1
            .grad(&d.total.backward())
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let g2 = p2
            .grad(&x.total.backward())
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let worst = g1
            .iter()
            .zip(&g2)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "gradients differ by {worst}");
    }
}
