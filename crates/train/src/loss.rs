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
    let [b, k, n, _] = pred.dims();
    let pred = pred.reshape([b * k, n, 3]);
    let gt_k = per_hypothesis(gt, k);
    let d = pairwise_sq_dist(pred, gt_k);
    let cd = chamfer_from_dist(d.clone()).reshape([b, k]);
    let chamfer = cd.min_dim(1).mean();
    // nearest ground-truth point of every predicted point (no gradient through argmin)
    with_label_loss(chamfer, logits, gt_labels, label_weight, || {
        d.detach().argmin(2).reshape([b * k, n])
    })
}

/// The [`PointLoss`] of the min-of-K Chamfer `chamfer`, plus (when `logits` `[B, K, N, L]`
/// and `gt_labels` `[B, M]` are given) the cross-entropy of every predicted point's label
/// against the label of its nearest ground-truth point (`nearest()`: `[B * K, N]` indices),
/// weighted by `label_weight`.
fn with_label_loss<B: Backend>(
    chamfer: Tensor<B, 1>,
    logits: Option<Tensor<B, 4>>,
    gt_labels: Option<Tensor<B, 2, Int>>,
    label_weight: f32,
    nearest: impl FnOnce() -> Tensor<B, 2, Int>,
) -> PointLoss<B> {
    let mut total = chamfer.clone();
    let mut label_loss = None;
    if let (Some(logits), Some(gl)) = (logits, gt_labels) {
        let [b, k, n, l] = logits.dims();
        let m = gl.dims()[1];
        let nn = nearest();
        let gl = if k == 1 {
            gl
        } else {
            gl.unsqueeze_dim::<3>(1)
                .repeat_dim(1, k)
                .reshape([b * k, m])
        };
        let target = gl.gather(1, nn).reshape([b * k * n, 1]);
        let logp = log_softmax(logits.reshape([b * k * n, l]), 1);
        let ce = logp.gather(1, target).mean().neg();
        total = total + ce.clone().mul_scalar(label_weight);
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
    let pred_at_g = pred.clone().gather(1, expand(idx_g, m));
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
    with_label_loss(chamfer, logits, gt_labels, label_weight, || idx_p)
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
