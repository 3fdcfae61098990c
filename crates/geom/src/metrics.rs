//! Reconstruction metrics: Chamfer distance, F-score (Tatarchenko et al., "What do single-view
//! 3D reconstruction networks learn?", CVPR 2019) and voxel IoU, with a static k-d tree for
//! nearest-neighbour queries (10k x 10k points in milliseconds).
//!
//! Conventions (state them when you report numbers):
//! * `chamfer_l2` = mean over predicted points of the *squared* distance to the nearest
//!   ground-truth point + the same from ground truth to prediction (the sum of both directions,
//!   as in PSGN / Pixel2Mesh / 3D-R2N2 follow-ups).
//! * `chamfer_l1` = half the sum of the two directional means of the (unsquared) Euclidean
//!   distance (the "Chamfer-L1" of Occupancy Networks).
//! * F-score at `t`: precision = fraction of predicted points within `t` of the ground truth,
//!   recall = fraction of ground-truth points within `t` of the prediction,
//!   `F = 2 P R / (P + R)` (0 when both are 0). Values are fractions in `[0, 1]`.
//! * Voxel IoU = |pred AND gt| / |pred OR gt|; 1 when both grids are empty.

/// Errors of the metric functions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// One of the point sets is empty.
    #[error("empty point set ({0})")]
    Empty(&'static str),
    /// A coordinate is NaN or infinite.
    #[error("non-finite coordinate in {0}")]
    NonFinite(&'static str),
    /// Two grids have different sizes.
    #[error("grid sizes differ: {0} vs {1}")]
    SizeMismatch(usize, usize),
}

const LEAF: usize = 8;

/// A static 3D k-d tree over a point set (points reordered in place, implicit layout).
#[derive(Debug, Clone)]
pub struct KdTree {
    pts: Vec<[f32; 3]>,
    /// Original index of each stored point.
    idx: Vec<u32>,
    /// Split axis of the node whose median sits at each position (unused in leaves).
    axis: Vec<u8>,
}

impl KdTree {
    /// Builds the tree (O(n log n)).
    pub fn new(points: &[[f32; 3]]) -> Self {
        let mut items: Vec<([f32; 3], u32)> = points
            .iter()
            .enumerate()
            .map(|(i, p)| (*p, i as u32))
            .collect();
        let mut axis = vec![0u8; points.len()];
        build(&mut items, &mut axis, 0);
        Self {
            pts: items.iter().map(|x| x.0).collect(),
            idx: items.iter().map(|x| x.1).collect(),
            axis,
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.pts.len()
    }

    /// True when the tree holds no points.
    pub fn is_empty(&self) -> bool {
        self.pts.is_empty()
    }

    /// Nearest point to `q`: `(squared distance, index into the original slice)`;
    /// `None` when the tree is empty.
    pub fn nearest(&self, q: [f32; 3]) -> Option<(f32, usize)> {
        if self.pts.is_empty() {
            return None;
        }
        let mut best = (f32::INFINITY, 0usize);
        self.nn(q, 0, self.pts.len(), &mut best);
        Some((best.0, self.idx[best.1] as usize))
    }

    /// Squared distance from `q` to its nearest point (infinity when empty).
    pub fn nearest_dist2(&self, q: [f32; 3]) -> f32 {
        self.nearest(q).map_or(f32::INFINITY, |b| b.0)
    }

    fn nn(&self, q: [f32; 3], lo: usize, hi: usize, best: &mut (f32, usize)) {
        if hi - lo <= LEAF {
            for i in lo..hi {
                let d = dist2(q, self.pts[i]);
                if d < best.0 {
                    *best = (d, i);
                }
            }
            return;
        }
        let mid = lo + (hi - lo) / 2;
        let p = self.pts[mid];
        let d = dist2(q, p);
        if d < best.0 {
            *best = (d, mid);
        }
        let ax = self.axis[mid] as usize;
        let diff = q[ax] - p[ax];
        let (first, second) = if diff < 0.0 {
            ((lo, mid), (mid + 1, hi))
        } else {
            ((mid + 1, hi), (lo, mid))
        };
        self.nn(q, first.0, first.1, best);
        if diff * diff < best.0 {
            self.nn(q, second.0, second.1, best);
        }
    }
}

fn build(items: &mut [([f32; 3], u32)], axis: &mut [u8], _depth: usize) {
    let n = items.len();
    if n <= LEAF {
        return;
    }
    // Split on the axis of largest spread.
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for (p, _) in items.iter() {
        for k in 0..3 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let ax = (0..3)
        .max_by(|&a, &b| (hi[a] - lo[a]).total_cmp(&(hi[b] - lo[b])))
        .unwrap_or(0);
    let mid = n / 2;
    items.select_nth_unstable_by(mid, |a, b| a.0[ax].total_cmp(&b.0[ax]));
    axis[mid] = ax as u8;
    let (left, rest) = items.split_at_mut(mid);
    let (al, arest) = axis.split_at_mut(mid);
    build(left, al, _depth + 1);
    build(&mut rest[1..], &mut arest[1..], _depth + 1);
}

fn dist2(a: [f32; 3], b: [f32; 3]) -> f32 {
    let d = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
}

fn check(points: &[[f32; 3]], what: &'static str) -> Result<(), MetricsError> {
    if points.is_empty() {
        return Err(MetricsError::Empty(what));
    }
    if points.iter().any(|p| p.iter().any(|v| !v.is_finite())) {
        return Err(MetricsError::NonFinite(what));
    }
    Ok(())
}

/// Nearest-neighbour distances (unsquared) in both directions between a prediction and the
/// ground truth; every metric on point sets derives from these.
#[derive(Debug, Clone, PartialEq)]
pub struct PointDistances {
    /// For each predicted point, the distance to the nearest ground-truth point.
    pub pred_to_gt: Vec<f32>,
    /// For each ground-truth point, the distance to the nearest predicted point.
    pub gt_to_pred: Vec<f32>,
}

/// Chamfer distances (see the module conventions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chamfer {
    /// Sum of the two directional mean squared distances.
    pub l2: f32,
    /// Half the sum of the two directional mean distances.
    pub l1: f32,
    /// Mean squared distance prediction -> ground truth (accuracy).
    pub pred_to_gt_l2: f32,
    /// Mean squared distance ground truth -> prediction (completeness).
    pub gt_to_pred_l2: f32,
}

/// F-score at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FScore {
    /// Distance threshold.
    pub threshold: f32,
    /// Fraction of predicted points within the threshold of the ground truth.
    pub precision: f32,
    /// Fraction of ground-truth points within the threshold of the prediction.
    pub recall: f32,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub fscore: f32,
}

impl PointDistances {
    /// Computes both directions with k-d trees.
    pub fn new(pred: &[[f32; 3]], gt: &[[f32; 3]]) -> Result<Self, MetricsError> {
        check(pred, "prediction")?;
        check(gt, "ground truth")?;
        let tg = KdTree::new(gt);
        let tp = KdTree::new(pred);
        Ok(Self {
            pred_to_gt: pred.iter().map(|&p| tg.nearest_dist2(p).sqrt()).collect(),
            gt_to_pred: gt.iter().map(|&p| tp.nearest_dist2(p).sqrt()).collect(),
        })
    }

    /// Chamfer distances.
    pub fn chamfer(&self) -> Chamfer {
        let mean = |v: &[f32], sq: bool| {
            let s: f64 = v
                .iter()
                .map(|&d| {
                    if sq {
                        f64::from(d) * f64::from(d)
                    } else {
                        f64::from(d)
                    }
                })
                .sum();
            (s / v.len().max(1) as f64) as f32
        };
        let a2 = mean(&self.pred_to_gt, true);
        let b2 = mean(&self.gt_to_pred, true);
        Chamfer {
            l2: a2 + b2,
            l1: 0.5 * (mean(&self.pred_to_gt, false) + mean(&self.gt_to_pred, false)),
            pred_to_gt_l2: a2,
            gt_to_pred_l2: b2,
        }
    }

    /// F-score at `threshold` (a point at exactly the threshold counts as matched).
    pub fn fscore(&self, threshold: f32) -> FScore {
        let frac = |v: &[f32]| {
            v.iter().filter(|&&d| d <= threshold).count() as f32 / v.len().max(1) as f32
        };
        let precision = frac(&self.pred_to_gt);
        let recall = frac(&self.gt_to_pred);
        let fscore = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        FScore {
            threshold,
            precision,
            recall,
            fscore,
        }
    }

    /// F-scores at several thresholds.
    pub fn fscores(&self, thresholds: &[f32]) -> Vec<FScore> {
        thresholds.iter().map(|&t| self.fscore(t)).collect()
    }
}

/// Chamfer distances between a prediction and the ground truth.
pub fn chamfer(pred: &[[f32; 3]], gt: &[[f32; 3]]) -> Result<Chamfer, MetricsError> {
    Ok(PointDistances::new(pred, gt)?.chamfer())
}

/// F-score at one threshold.
pub fn fscore(pred: &[[f32; 3]], gt: &[[f32; 3]], threshold: f32) -> Result<FScore, MetricsError> {
    Ok(PointDistances::new(pred, gt)?.fscore(threshold))
}

/// F-scores at several thresholds (distances computed once).
pub fn fscores(
    pred: &[[f32; 3]],
    gt: &[[f32; 3]],
    thresholds: &[f32],
) -> Result<Vec<FScore>, MetricsError> {
    Ok(PointDistances::new(pred, gt)?.fscores(thresholds))
}

/// IoU of two occupancy grids (non-zero = occupied).
pub fn voxel_iou(pred: &[u8], gt: &[u8]) -> Result<f32, MetricsError> {
    if pred.len() != gt.len() {
        return Err(MetricsError::SizeMismatch(pred.len(), gt.len()));
    }
    let (mut inter, mut union) = (0usize, 0usize);
    for (&a, &b) in pred.iter().zip(gt) {
        let (a, b) = (a != 0, b != 0);
        inter += usize::from(a && b);
        union += usize::from(a || b);
    }
    Ok(if union == 0 {
        1.0
    } else {
        inter as f32 / union as f32
    })
}

/// IoU of predicted probabilities (occupied where `p >= threshold`) against a 0/1 grid.
pub fn voxel_iou_prob(pred: &[f32], threshold: f32, gt: &[u8]) -> Result<f32, MetricsError> {
    let bin: Vec<u8> = pred.iter().map(|&p| u8::from(p >= threshold)).collect();
    voxel_iou(&bin, gt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn cloud(n: usize, seed: u64) -> Vec<[f32; 3]> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                [
                    rng.gen_range(-0.5..0.5),
                    rng.gen_range(-0.5..0.5),
                    rng.gen_range(-0.5..0.5),
                ]
            })
            .collect()
    }

    #[test]
    fn kdtree_matches_brute_force() {
        let pts = cloud(3000, 1);
        let qs = cloud(500, 2);
        let t = KdTree::new(&pts);
        assert_eq!(t.len(), 3000);
        for q in qs {
            let (d, i) = t.nearest(q).unwrap();
            let (bd, bi) = pts
                .iter()
                .enumerate()
                .map(|(i, p)| (dist2(q, *p), i))
                .fold((f32::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a });
            assert_eq!(d, bd);
            assert_eq!(dist2(q, pts[i]), dist2(q, pts[bi]));
        }
        assert!(KdTree::new(&[]).nearest([0.0; 3]).is_none());
        // Duplicates and a single point.
        let dup = vec![[1.0, 2.0, 3.0]; 50];
        assert_eq!(KdTree::new(&dup).nearest([0.0; 3]).unwrap().0, 14.0);
    }

    #[test]
    fn chamfer_known_answers() {
        let a = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]];
        assert_eq!(chamfer(&a, &a).unwrap().l2, 0.0);
        // Shift by 0.1 along z: every nearest distance is 0.1.
        let b: Vec<[f32; 3]> = a.iter().map(|p| [p[0], p[1], p[2] + 0.1]).collect();
        let c = chamfer(&a, &b).unwrap();
        assert!((c.l2 - 0.02).abs() < 1e-6, "{c:?}");
        assert!((c.l1 - 0.1).abs() < 1e-6, "{c:?}");
        // Asymmetric: pred = {0}, gt = {0, 2}: pred->gt 0, gt->pred mean (0 + 4) / 2 = 2.
        let c = chamfer(&[[0.0; 3]], &[[0.0; 3], [2.0, 0.0, 0.0]]).unwrap();
        assert_eq!(c.pred_to_gt_l2, 0.0);
        assert_eq!(c.gt_to_pred_l2, 2.0);
        assert_eq!(c.l2, 2.0);
        assert_eq!(c.l1, 0.5);
        assert_eq!(chamfer(&[], &a), Err(MetricsError::Empty("prediction")));
        assert_eq!(
            chamfer(&a, &[[f32::NAN, 0.0, 0.0]]),
            Err(MetricsError::NonFinite("ground truth"))
        );
    }

    #[test]
    fn fscore_known_answers() {
        let gt = [
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [2.0, 0.0, 0.0],
            [3.0, 0.0, 0.0],
        ];
        // Prediction covers the first two gt points exactly and adds one far outlier.
        let pred = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [10.0, 0.0, 0.0]];
        let f = fscore(&pred, &gt, 0.5).unwrap();
        assert!((f.precision - 2.0 / 3.0).abs() < 1e-6);
        assert!((f.recall - 0.5).abs() < 1e-6);
        let expect = 2.0 * (2.0 / 3.0) * 0.5 / (2.0 / 3.0 + 0.5);
        assert!((f.fscore - expect).abs() < 1e-6);
        let fs = fscores(&pred, &gt, &[0.5, 1.0, 100.0]).unwrap();
        // gt 2 is 1.0 from pred 1 (matched at t = 1), gt 3 is 2.0 away: recall 3/4.
        assert!((fs[1].recall - 0.75).abs() < 1e-6);
        assert_eq!(fs[2].fscore, 1.0);
        let none = fscore(&[[50.0, 0.0, 0.0]], &gt, 0.1).unwrap();
        assert_eq!(none.fscore, 0.0);
    }

    #[test]
    fn large_clouds_agree_with_brute_force() {
        let a = cloud(1500, 3);
        let b = cloud(1200, 4);
        let d = PointDistances::new(&a, &b).unwrap();
        for (i, p) in a.iter().enumerate().step_by(37) {
            let bf = b
                .iter()
                .map(|q| dist2(*p, *q))
                .fold(f32::INFINITY, f32::min)
                .sqrt();
            assert!((d.pred_to_gt[i] - bf).abs() < 1e-6);
        }
        // Denser clouds of the same distribution are closer.
        let c = chamfer(&cloud(5000, 5), &cloud(5000, 6)).unwrap();
        let c2 = chamfer(&cloud(500, 5), &cloud(500, 6)).unwrap();
        assert!(c.l2 < c2.l2);
    }

    #[test]
    fn voxel_iou_known_answers() {
        let a = [1, 1, 0, 0];
        let b = [1, 0, 1, 0];
        assert!((voxel_iou(&a, &b).unwrap() - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(voxel_iou(&a, &a).unwrap(), 1.0);
        assert_eq!(voxel_iou(&[0, 0], &[0, 0]).unwrap(), 1.0);
        assert_eq!(voxel_iou(&[1, 0], &[0, 1]).unwrap(), 0.0);
        assert_eq!(voxel_iou(&a, &[1]), Err(MetricsError::SizeMismatch(4, 1)));
        let p = [0.9, 0.6, 0.4, 0.1];
        assert!((voxel_iou_prob(&p, 0.5, &b).unwrap() - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(voxel_iou_prob(&p, 0.3, &[1, 1, 1, 0]).unwrap(), 1.0);
    }
}
