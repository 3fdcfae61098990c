//! Evaluation: Chamfer (L2 and L1), F-score at thresholds (with a PNG curve), and a contact
//! sheet (input | prediction | ground truth) of ONNX models run by tract on a dataset split.
//!
//! Definitions (object frame, bounds side 1, so thresholds are fractions of the box side):
//! with `d(p, Q)` the distance from `p` to the nearest point of `Q`,
//! `chamfer_l2 = mean_p d(p,G)^2 + mean_g d(g,P)^2`,
//! `chamfer_l1 = (mean_p d(p,G) + mean_g d(g,P)) / 2`,
//! `F(t) = 100 * 2 P R / (P + R)` with precision `P = frac(d(p,G) < t)` and recall
//! `R = frac(d(g,P) < t)` (Tatarchenko et al. 2019).

use std::path::Path;

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::data::Sample;
use crate::inference::TractRunner;
use crate::plot::{draw_text, line_plot, save_png, Series};
use crate::TrainError;

/// Thresholds of the F-score curve (fractions of the box side).
pub const THRESHOLDS: [f32; 10] = [
    0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
];

/// Figures of one prediction (or a mean of several).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PointMetrics {
    /// Symmetric Chamfer, squared L2.
    pub chamfer_l2: f32,
    /// Symmetric Chamfer, L1 (Euclidean), averaged over both directions.
    pub chamfer_l1: f32,
    /// F-score at 1 % of the box side, percent.
    pub fscore_1pct: f32,
    /// F-score at each of [`THRESHOLDS`], percent.
    pub fscore: Vec<f32>,
}

impl PointMetrics {
    /// Element-wise mean.
    pub fn mean(all: &[PointMetrics]) -> PointMetrics {
        let n = all.len().max(1) as f32;
        let mut m = PointMetrics {
            fscore: vec![0.0; THRESHOLDS.len()],
            ..Default::default()
        };
        for a in all {
            m.chamfer_l2 += a.chamfer_l2 / n;
            m.chamfer_l1 += a.chamfer_l1 / n;
            m.fscore_1pct += a.fscore_1pct / n;
            for (s, v) in m.fscore.iter_mut().zip(&a.fscore) {
                *s += v / n;
            }
        }
        m
    }
}

/// Distance from every point of `a` to its nearest point of `b` (brute force).
pub fn nearest(a: &[[f32; 3]], b: &[[f32; 3]]) -> Vec<f32> {
    a.iter()
        .map(|p| {
            b.iter()
                .map(|q| {
                    let d = [p[0] - q[0], p[1] - q[1], p[2] - q[2]];
                    d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
                })
                .fold(f32::INFINITY, f32::min)
                .sqrt()
        })
        .collect()
}

fn fscore_at(dp: &[f32], dg: &[f32], t: f32) -> f32 {
    let p = dp.iter().filter(|&&d| d < t).count() as f32 / dp.len().max(1) as f32;
    let r = dg.iter().filter(|&&d| d < t).count() as f32 / dg.len().max(1) as f32;
    if p + r > 0.0 {
        100.0 * 2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

/// All figures of a prediction against ground truth.
pub fn point_metrics(pred: &[[f32; 3]], gt: &[[f32; 3]]) -> PointMetrics {
    if pred.is_empty() || gt.is_empty() {
        return PointMetrics {
            chamfer_l2: f32::INFINITY,
            chamfer_l1: f32::INFINITY,
            fscore_1pct: 0.0,
            fscore: vec![0.0; THRESHOLDS.len()],
        };
    }
    let dp = nearest(pred, gt);
    let dg = nearest(gt, pred);
    let mean = |v: &[f32], sq: bool| {
        v.iter().map(|d| if sq { d * d } else { *d }).sum::<f32>() / v.len() as f32
    };
    PointMetrics {
        chamfer_l2: mean(&dp, true) + mean(&dg, true),
        chamfer_l1: 0.5 * (mean(&dp, false) + mean(&dg, false)),
        fscore_1pct: fscore_at(&dp, &dg, 0.01),
        fscore: THRESHOLDS.iter().map(|&t| fscore_at(&dp, &dg, t)).collect(),
    }
}

/// One point cloud.
pub type Cloud = Vec<[f32; 3]>;

/// Result of evaluating one ONNX model on samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// Model file.
    pub model: String,
    /// Samples evaluated.
    pub samples: usize,
    /// Mean figures (first hypothesis).
    pub mean: PointMetrics,
    /// Mean figures of the best hypothesis per sample (oracle; equals `mean` when K = 1).
    pub best_of_k: PointMetrics,
    /// tract inference time per picture, median, milliseconds.
    pub infer_ms_p50: f64,
    /// tract inference time per picture, 99th percentile, milliseconds.
    pub infer_ms_p99: f64,
    /// Part-label accuracy of hypothesis 0, when the model has a `labels` output and the
    /// samples have part labels (see [`label_accuracy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_accuracy: Option<LabelAccuracy>,
}

/// Semantic reconstruction scored against the ground-truth parts: every predicted point
/// takes the part of its nearest ground-truth point as its truth (and every ground-truth
/// point the predicted label of its nearest predicted point), so the figure needs no
/// correspondence between the two clouds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelAccuracy {
    /// Fraction of predicted points whose label is the part of the nearest true point.
    pub predicted: f32,
    /// Fraction of true points whose part is the label of the nearest predicted point.
    pub truth: f32,
    /// Mean over the parts present in the truth or the labelling of the per-part
    /// intersection over union of the true points' labelling (`truth` direction): a part
    /// predicted where the object has none scores 0.
    pub part_miou: f32,
    /// Samples that had labels on both sides (the means are over these).
    #[serde(default)]
    pub samples: usize,
    /// Per part `(part, intersection, union)` counts of true points (`truth` direction),
    /// summed over the samples: a part's IoU over the whole split is `intersection / union`.
    #[serde(default)]
    pub part_counts: Vec<(u8, u64, u64)>,
}

impl LabelAccuracy {
    /// Each part's IoU over all samples with its union size, by part id.
    pub fn part_ious(&self) -> Vec<(u8, f32, u64)> {
        self.part_counts
            .iter()
            .map(|&(p, i, u)| (p, i as f32 / u.max(1) as f32, u))
            .collect()
    }
}

/// Index of the nearest point of `b` for every point of `a` (brute force; clouds of a few
/// thousand points).
fn nearest_index(a: &[[f32; 3]], b: &[[f32; 3]]) -> Vec<usize> {
    a.iter()
        .map(|p| {
            let mut best = (f32::INFINITY, 0);
            for (j, q) in b.iter().enumerate() {
                let d = (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2);
                if d < best.0 {
                    best = (d, j);
                }
            }
            best.1
        })
        .collect()
}

/// [`LabelAccuracy`] of predicted points `pred` with labels `pred_labels` against true
/// points `gt` with parts `gt_labels`; `None` when either cloud is empty or lengths differ
/// (in particular when the ground truth has no part labels: empty `gt_labels`).
pub fn label_accuracy(
    pred: &[[f32; 3]],
    pred_labels: &[u8],
    gt: &[[f32; 3]],
    gt_labels: &[u8],
) -> Option<LabelAccuracy> {
    if pred.is_empty()
        || gt.is_empty()
        || pred.len() != pred_labels.len()
        || gt.len() != gt_labels.len()
    {
        return None;
    }
    let to_gt = nearest_index(pred, gt);
    let to_pred = nearest_index(gt, pred);
    let hit =
        |n: usize, f: &dyn Fn(usize) -> bool| (0..n).filter(|&i| f(i)).count() as f32 / n as f32;
    let predicted = hit(pred.len(), &|i| pred_labels[i] == gt_labels[to_gt[i]]);
    let truth = hit(gt.len(), &|i| gt_labels[i] == pred_labels[to_pred[i]]);
    let mut ious = Vec::new();
    let mut part_counts = Vec::new();
    let labelled: Vec<u8> = to_pred.iter().map(|&j| pred_labels[j]).collect();
    for part in 0..=255u8 {
        if !gt_labels.contains(&part) && !labelled.contains(&part) {
            continue;
        }
        let (mut inter, mut union) = (0usize, 0usize);
        for (&t, &p) in gt_labels.iter().zip(&labelled) {
            inter += usize::from(t == part && p == part);
            union += usize::from(t == part || p == part);
        }
        ious.push(inter as f32 / union.max(1) as f32);
        part_counts.push((part, inter as u64, union as u64));
    }
    let part_miou = ious.iter().sum::<f32>() / ious.len().max(1) as f32;
    Some(LabelAccuracy {
        predicted,
        truth,
        part_miou,
        samples: 1,
        part_counts,
    })
}

/// Runs `runner` on every sample and averages the figures; keeps the first `keep`
/// predictions (hypothesis 0) for pictures.
pub fn eval_onnx(
    runner: &TractRunner,
    name: &str,
    samples: &[Sample],
    mean: [f32; 3],
    std: [f32; 3],
    keep: usize,
) -> Result<(EvalReport, Vec<Cloud>), TrainError> {
    let mut first = Vec::with_capacity(samples.len());
    let mut best = Vec::with_capacity(samples.len());
    let mut kept = Vec::new();
    let mut times = Vec::with_capacity(samples.len());
    let mut labels: Vec<LabelAccuracy> = Vec::new();
    for s in samples {
        let input = s.image_chw(mean, std);
        let t0 = std::time::Instant::now();
        let out = runner.run(&input)?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        let k = out.shape.get(1).copied().unwrap_or(1);
        let mut ms: Vec<PointMetrics> = (0..k)
            .map(|h| point_metrics(&out.hypothesis(h), &s.points))
            .collect();
        if kept.len() < keep {
            kept.push(out.hypothesis(0));
        }
        if let Some(acc) = out
            .argmax_labels(0)
            .and_then(|l| label_accuracy(&out.hypothesis(0), &l, &s.points, &s.point_labels))
        {
            labels.push(acc);
        }
        let m0 = ms[0].clone();
        ms.sort_by(|a, b| a.chamfer_l2.total_cmp(&b.chamfer_l2));
        best.push(ms.swap_remove(0));
        first.push(m0);
    }
    times.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok((
        EvalReport {
            model: name.to_string(),
            samples: samples.len(),
            mean: PointMetrics::mean(&first),
            best_of_k: PointMetrics::mean(&best),
            infer_ms_p50: pct(0.5),
            infer_ms_p99: pct(0.99),
            label_accuracy: (!labels.is_empty()).then(|| {
                let n = labels.len() as f32;
                LabelAccuracy {
                    predicted: labels.iter().map(|a| a.predicted).sum::<f32>() / n,
                    truth: labels.iter().map(|a| a.truth).sum::<f32>() / n,
                    part_miou: labels.iter().map(|a| a.part_miou).sum::<f32>() / n,
                    samples: labels.len(),
                    part_counts: {
                        let mut sum = std::collections::BTreeMap::<u8, (u64, u64)>::new();
                        for (p, i, u) in labels.iter().flat_map(|a| a.part_counts.iter()) {
                            let e = sum.entry(*p).or_default();
                            e.0 += i;
                            e.1 += u;
                        }
                        sum.into_iter().map(|(p, (i, u))| (p, i, u)).collect()
                    },
                }
            }),
        },
        kept,
    ))
}

/// How much a model's predictions depend on the picture (a model whose hidden units died
/// predicts nearly the same cloud for every picture).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PictureDependence {
    /// Pictures scored.
    pub pictures: usize,
    /// The model's mean Chamfer-L2 on them.
    pub model_chamfer_l2: f32,
    /// The best fixed cloud: each of the first `candidates` predictions reused for every
    /// picture; the lowest mean Chamfer-L2 of those.
    pub best_fixed_chamfer_l2: f32,
    /// Candidate clouds tried for `best_fixed_chamfer_l2`.
    pub candidates: usize,
    /// Mean Chamfer-L2 between the predictions of two different pictures (pairs `i`, `i+1`):
    /// how far apart the model's outputs are.
    pub prediction_spread_l2: f32,
    /// The same for the ground-truth clouds of those pictures.
    pub truth_spread_l2: f32,
    /// Mean Chamfer-L2 per class id `(class_id, pictures, chamfer_l2)`.
    pub per_class: Vec<(u16, usize, f32)>,
}

/// Measures [`PictureDependence`] on `pictures` samples spread evenly over `samples` (a
/// split is ordered by class) with `candidates` fixed clouds.
pub fn picture_dependence(
    runner: &TractRunner,
    samples: &[Sample],
    mean: [f32; 3],
    std: [f32; 3],
    pictures: usize,
    candidates: usize,
) -> Result<PictureDependence, TrainError> {
    let take = pictures.min(samples.len());
    let set: Vec<&Sample> = (0..take)
        .map(|i| &samples[i * samples.len() / take])
        .collect();
    if set.len() < 2 {
        return Err(TrainError::Config(
            "picture dependence needs 2 or more samples".into(),
        ));
    }
    let mut preds: Vec<Cloud> = Vec::with_capacity(set.len());
    for s in &set {
        preds.push(runner.run(&s.image_chw(mean, std))?.hypothesis(0));
    }
    let l2 = |a: &Cloud, b: &[[f32; 3]]| point_metrics(a, b).chamfer_l2;
    let own: Vec<f32> = preds
        .iter()
        .zip(&set)
        .map(|(p, s)| l2(p, &s.points))
        .collect();
    let mean_of = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
    let cands = candidates.clamp(1, preds.len());
    let mut best = f32::INFINITY;
    for c in &preds[..cands] {
        let m = mean_of(&set.iter().map(|s| l2(c, &s.points)).collect::<Vec<_>>());
        best = best.min(m);
    }
    let pairs = set.len() - 1;
    let pred_spread = mean_of(
        &(0..pairs)
            .map(|i| l2(&preds[i], &preds[i + 1]))
            .collect::<Vec<_>>(),
    );
    let truth_spread = mean_of(
        &(0..pairs)
            .map(|i| l2(&set[i].points, &set[i + 1].points))
            .collect::<Vec<_>>(),
    );
    let mut per: std::collections::BTreeMap<u16, (usize, f32)> = Default::default();
    for (s, &v) in set.iter().zip(&own) {
        let e = per.entry(s.class_id).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += v;
    }
    Ok(PictureDependence {
        pictures: set.len(),
        model_chamfer_l2: mean_of(&own),
        best_fixed_chamfer_l2: best,
        candidates: cands,
        prediction_spread_l2: pred_spread,
        truth_spread_l2: truth_spread,
        per_class: per
            .into_iter()
            .map(|(c, (n, sum))| (c, n, sum / n as f32))
            .collect(),
    })
}

/// Plots F-score against threshold (percent of the box side) for each report.
pub fn fscore_plot(reports: &[EvalReport], out: &Path) -> Result<(), TrainError> {
    let series: Vec<Series> = reports
        .iter()
        .map(|r| Series {
            points: THRESHOLDS
                .iter()
                .zip(&r.mean.fscore)
                .map(|(&t, &f)| (f64::from(t) * 100.0, f64::from(f)))
                .collect(),
        })
        .collect();
    line_plot(&series, false, out)
}

/// Draws `pts` as depth-shaded dots seen from the sample's camera into a `size` square.
pub fn render_points(sample: &Sample, pts: &[[f32; 3]], size: u32, color: [u8; 3]) -> RgbImage {
    render_points_in(sample, pts, size, color, false)
}

/// [`render_points`] for points in the object frame (`camera_frame` false) or in the
/// viewer-centred camera frame (x right, y down, z forward, centred on the object: drawn
/// as if the object's centre were at the camera's distance on its axis).
pub fn render_points_in(
    sample: &Sample,
    pts: &[[f32; 3]],
    size: u32,
    color: [u8; 3],
    camera_frame: bool,
) -> RgbImage {
    let mut img = RgbImage::from_pixel(size, size, Rgb([255, 255, 255]));
    let cam = &sample.camera;
    let (f, h) = (cam.focal_px(size), 0.5 * size as f32);
    let mut proj: Vec<[f32; 3]> = pts
        .iter()
        .filter_map(|&p| {
            if camera_frame {
                let z = p[2] + cam.distance;
                (z > 1e-6).then(|| [h + f * p[0] / z, h + f * p[1] / z, z])
            } else {
                cam.project(p, size)
            }
        })
        .collect();
    if proj.is_empty() {
        return img;
    }
    let (mut z0, mut z1) = (f32::MAX, f32::MIN);
    for p in &proj {
        z0 = z0.min(p[2]);
        z1 = z1.max(p[2]);
    }
    // far first, near last
    proj.sort_by(|a, b| b[2].total_cmp(&a[2]));
    for p in proj {
        let shade = 1.0 - 0.6 * (p[2] - z0) / (z1 - z0).max(1e-6);
        let c = [
            (f32::from(color[0]) * shade) as u8,
            (f32::from(color[1]) * shade) as u8,
            (f32::from(color[2]) * shade) as u8,
        ];
        let (x, y) = (p[0] as i32, p[1] as i32);
        for dy in 0..2 {
            for dx in 0..2 {
                let (px, py) = (x + dx, y + dy);
                if px >= 0 && py >= 0 && (px as u32) < size && (py as u32) < size {
                    img.put_pixel(px as u32, py as u32, Rgb(c));
                }
            }
        }
    }
    img
}

/// Contact sheet: one row per sample, columns input | prediction | ground truth.
pub fn contact_sheet(
    samples: &[Sample],
    preds: &[Vec<[f32; 3]>],
    cell: u32,
    out: &Path,
) -> Result<(), TrainError> {
    contact_sheet_in(samples, preds, cell, out, false)
}

/// [`contact_sheet`] with predictions and ground truth in the object frame or (when
/// `camera_frame`) in the viewer-centred camera frame; see [`render_points_in`].
pub fn contact_sheet_in(
    samples: &[Sample],
    preds: &[Vec<[f32; 3]>],
    cell: u32,
    out: &Path,
    camera_frame: bool,
) -> Result<(), TrainError> {
    let rows = samples.len().min(preds.len()) as u32;
    let mut sheet =
        RgbImage::from_pixel(3 * cell + 8, rows.max(1) * (cell + 4), Rgb([200, 200, 200]));
    for (r, (s, p)) in samples.iter().zip(preds).enumerate() {
        let y0 = r as u32 * (cell + 4);
        if let Some(src) = RgbImage::from_raw(s.width, s.height, s.image.clone()) {
            let big =
                image::imageops::resize(&src, cell, cell, image::imageops::FilterType::Nearest);
            image::imageops::replace(&mut sheet, &big, 0, i64::from(y0));
        }
        let pr = render_points_in(s, p, cell, [30, 90, 200], camera_frame);
        image::imageops::replace(&mut sheet, &pr, i64::from(cell + 4), i64::from(y0));
        let gt = render_points_in(s, &s.points, cell, [40, 150, 40], camera_frame);
        image::imageops::replace(&mut sheet, &gt, i64::from(2 * cell + 8), i64::from(y0));
        draw_text(
            &mut sheet,
            2,
            y0 as i32 + 2,
            &format!("{r}"),
            2,
            [255, 0, 0],
        );
    }
    save_png(&sheet, out)
}

/// Writes `report`s as JSON.
pub fn write_reports(reports: &[EvalReport], out: &Path) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(reports).map_err(|e| TrainError::Parse {
        path: out.to_path_buf(),
        msg: e.to_string(),
    })?;
    std::fs::write(out, text).map_err(|e| TrainError::io(out, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_accuracy_scores_parts_without_correspondence() {
        // two parts: lower half 0, upper half 1; the prediction is the same surface,
        // shifted a little and in another order
        let gt: Vec<[f32; 3]> = (0..200)
            .map(|i| [(i % 10) as f32 * 0.1, (i / 10) as f32 * 0.05, 0.0])
            .collect();
        let gt_l: Vec<u8> = gt.iter().map(|p| u8::from(p[1] >= 0.5)).collect();
        let pred: Vec<[f32; 3]> = gt
            .iter()
            .rev()
            .map(|p| [p[0] + 0.01, p[1], 0.002])
            .collect();
        let right: Vec<u8> = pred.iter().map(|p| u8::from(p[1] >= 0.5)).collect();
        let a = label_accuracy(&pred, &right, &gt, &gt_l).unwrap();
        assert_eq!((a.predicted, a.truth, a.part_miou), (1.0, 1.0, 1.0));
        // every label wrong
        let wrong: Vec<u8> = right.iter().map(|l| 1 - l).collect();
        let a = label_accuracy(&pred, &wrong, &gt, &gt_l).unwrap();
        assert_eq!((a.predicted, a.truth, a.part_miou), (0.0, 0.0, 0.0));
        // one label for everything: half right, IoU 1/2 on the part it names, 0 on the other
        let one = vec![0u8; pred.len()];
        let a = label_accuracy(&pred, &one, &gt, &gt_l).unwrap();
        assert!((a.predicted - 0.5).abs() < 1e-6 && (a.truth - 0.5).abs() < 1e-6);
        assert!((a.part_miou - 0.25).abs() < 1e-6, "{}", a.part_miou);
        // a part the object does not have, predicted on half the points, scores IoU 0
        let extra: Vec<u8> = right.iter().map(|&l| if l == 1 { 7 } else { 0 }).collect();
        let a = label_accuracy(&pred, &extra, &gt, &gt_l).unwrap();
        assert!((a.part_miou - 1.0 / 3.0).abs() < 1e-6, "{}", a.part_miou);
        assert_eq!(
            a.part_ious(),
            vec![(0, 1.0, 100), (1, 0.0, 100), (7, 0.0, 100)]
        );
        assert!(label_accuracy(&pred, &one[1..], &gt, &gt_l).is_none());
        assert!(label_accuracy(&[], &[], &gt, &gt_l).is_none());
        // a dataset without part labels (ShapeNet, Pix3D) is not scored as "all part 0"
        assert!(label_accuracy(&pred, &one, &gt, &[]).is_none());
    }

    #[test]
    fn metrics_of_identical_and_shifted_clouds() {
        let a: Vec<[f32; 3]> = (0..50).map(|i| [i as f32 * 0.02, 0.0, 0.0]).collect();
        let m = point_metrics(&a, &a);
        assert_eq!(m.chamfer_l2, 0.0);
        assert!((m.fscore_1pct - 100.0).abs() < 1e-4);
        let b: Vec<[f32; 3]> = a.iter().map(|p| [p[0], 0.05, 0.0]).collect();
        let m = point_metrics(&a, &b);
        assert!((m.chamfer_l2 - 2.0 * 0.0025).abs() < 1e-6, "{m:?}");
        assert!((m.chamfer_l1 - 0.05).abs() < 1e-6);
        assert_eq!(m.fscore_1pct, 0.0);
    }
}
