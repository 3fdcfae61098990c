//! Surface extraction and metrics: the decoder on a dense lattice over the bounds, marching
//! cubes ([`shapecast_geom::mcubes`]), area-weighted points on the mesh, Chamfer and
//! F-score against the ground-truth surface points.
//!
//! Conventions as in [`crate::eval`]: `chamfer_l2 = mean_p d(p,G)^2 + mean_g d(g,P)^2`,
//! `chamfer_l1 = (mean_p d(p,G) + mean_g d(g,P)) / 2`, F-score in percent at thresholds that
//! are fractions of the box side (1). A picture whose decoder gives no surface counts as
//! `empty`: F-score 0 and Chamfer against a single point at the origin.

use std::path::Path;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shapecast_geom::mcubes::{marching_cubes, McMesh};
use shapecast_geom::metrics::PointDistances;

use super::export::TractImplicit;
use super::{ImplicitConfig, ImplicitSet, Kind};
use crate::data::BOUNDS;
use crate::TrainError;

/// Figures of one reconstruction, or a mean of several.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SurfaceMetrics {
    /// Symmetric Chamfer, squared L2.
    pub chamfer_l2: f32,
    /// Symmetric Chamfer, L1, averaged over both directions.
    pub chamfer_l1: f32,
    /// F-score at 1 % of the box side, percent.
    pub fscore_1pct: f32,
    /// F-score at 2 %, percent.
    pub fscore_2pct: f32,
    /// F-score at 5 %, percent.
    pub fscore_5pct: f32,
    /// Reconstructions with no surface.
    pub empty: usize,
    /// Reconstructions averaged.
    pub samples: usize,
}

impl SurfaceMetrics {
    /// Mean of several (counts are summed).
    pub fn mean(all: &[SurfaceMetrics]) -> SurfaceMetrics {
        let n = all.len().max(1) as f32;
        let mut m = SurfaceMetrics::default();
        for a in all {
            m.chamfer_l2 += a.chamfer_l2 / n;
            m.chamfer_l1 += a.chamfer_l1 / n;
            m.fscore_1pct += a.fscore_1pct / n;
            m.fscore_2pct += a.fscore_2pct / n;
            m.fscore_5pct += a.fscore_5pct / n;
            m.empty += a.empty;
            m.samples += a.samples;
        }
        m
    }

    /// Figures of predicted surface points against the ground truth.
    pub fn of_points(pred: &[[f32; 3]], gt: &[[f32; 3]]) -> Result<SurfaceMetrics, TrainError> {
        let empty = pred.is_empty();
        let origin = [[0.0f32; 3]];
        let p = if empty { &origin[..] } else { pred };
        let d =
            PointDistances::new(p, gt).map_err(|e| TrainError::Check(format!("metrics: {e}")))?;
        let c = d.chamfer();
        let f = |t: f32| {
            if empty {
                0.0
            } else {
                100.0 * d.fscore(t).fscore
            }
        };
        Ok(SurfaceMetrics {
            chamfer_l2: c.l2,
            chamfer_l1: c.l1,
            fscore_1pct: f(0.01),
            fscore_2pct: f(0.02),
            fscore_5pct: f(0.05),
            empty: usize::from(empty),
            samples: 1,
        })
    }
}

/// The `(res + 1)^3` lattice corners over [`BOUNDS`], laid out `i + n * (j + n * k)` (x
/// fastest), as [`marching_cubes`] reads them.
pub fn grid(res: usize) -> Vec<[f32; 3]> {
    let n = res + 1;
    let mut out = Vec::with_capacity(n * n * n);
    let at = |a: usize, i: usize| BOUNDS[a] + (BOUNDS[a + 3] - BOUNDS[a]) * i as f32 / res as f32;
    for k in 0..n {
        for j in 0..n {
            for i in 0..n {
                out.push([at(0, i), at(1, j), at(2, k)]);
            }
        }
    }
    out
}

/// Marching cubes over lattice values of `kind` (SDF: inside below 0; occupancy logits:
/// inside above 0).
pub fn extract(values: &[f32], res: usize, kind: Kind) -> McMesh {
    let n = res + 1;
    let spacing: [f32; 3] = std::array::from_fn(|a| (BOUNDS[a + 3] - BOUNDS[a]) / res as f32);
    let origin = [BOUNDS[0], BOUNDS[1], BOUNDS[2]];
    match kind {
        Kind::Sdf => marching_cubes(values, [n; 3], origin, spacing, 0.0),
        Kind::Occupancy => {
            let neg: Vec<f32> = values.iter().map(|v| -v).collect();
            marching_cubes(&neg, [n; 3], origin, spacing, 0.0)
        }
    }
}

/// `n` points on the mesh, area-weighted, deterministic from `seed`.
pub fn sample_mesh(mesh: &McMesh, n: usize, seed: u64) -> Vec<[f32; 3]> {
    let mut cum = Vec::with_capacity(mesh.faces.len());
    let mut total = 0.0f64;
    for f in &mesh.faces {
        let [a, b, c] = f.map(|i| mesh.vertices.get(i as usize).copied().unwrap_or([0.0; 3]));
        let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
        let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
        let x = [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ];
        total += 0.5 * f64::from(x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt();
        cum.push(total);
    }
    if total <= 0.0 || n == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let r = rng.gen::<f64>() * total;
            let fi = cum.partition_point(|&c| c < r).min(mesh.faces.len() - 1);
            let [a, b, c] =
                mesh.faces[fi].map(|i| mesh.vertices.get(i as usize).copied().unwrap_or([0.0; 3]));
            let (mut s, mut t) = (rng.gen::<f32>(), rng.gen::<f32>());
            if s + t > 1.0 {
                s = 1.0 - s;
                t = 1.0 - t;
            }
            std::array::from_fn(|k| a[k] + s * (b[k] - a[k]) + t * (c[k] - a[k]))
        })
        .collect()
}

/// A decoded surface and its figures.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The marching-cubes mesh.
    pub mesh: McMesh,
    /// Figures against the ground truth.
    pub metrics: SurfaceMetrics,
    /// Lattice values.
    pub values: Vec<f32>,
}

/// Evaluates `field` on the `(res + 1)^3` lattice, extracts the surface and scores
/// `gt.len()` points sampled on it against `gt`.
pub fn decode_surface(
    mut field: impl FnMut(&[[f32; 3]]) -> Result<Vec<f32>, TrainError>,
    kind: Kind,
    res: usize,
    gt: &[[f32; 3]],
    seed: u64,
) -> Result<Decoded, TrainError> {
    let pts = grid(res);
    let values = field(&pts)?;
    if values.len() != pts.len() {
        return Err(TrainError::Check(format!(
            "decoder gave {} values for {} points",
            values.len(),
            pts.len()
        )));
    }
    let mesh = extract(&values, res, kind);
    let pred = sample_mesh(&mesh, gt.len().max(1), seed);
    let metrics = SurfaceMetrics::of_points(&pred, gt)?;
    Ok(Decoded {
        mesh,
        metrics,
        values,
    })
}

/// Finite-difference gradient norms of an SDF lattice at corners near the surface
/// (|value| < 2 cells): the contract wants |grad| <= 1 (distances or under-estimates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GradStats {
    /// Median.
    pub p50: f32,
    /// 99th percentile.
    pub p99: f32,
    /// Largest.
    pub max: f32,
    /// Corners measured.
    pub n: usize,
}

/// See [`GradStats`].
pub fn gradient_stats(values: &[f32], res: usize) -> GradStats {
    let n = res + 1;
    let h = (BOUNDS[3] - BOUNDS[0]) / res as f32;
    let at = |i: usize, j: usize, k: usize| values[i + n * (j + n * k)];
    let mut g = Vec::new();
    for k in 0..res {
        for j in 0..res {
            for i in 0..res {
                let v = at(i, j, k);
                if v.abs() >= 2.0 * h {
                    continue;
                }
                let dx = at(i + 1, j, k) - v;
                let dy = at(i, j + 1, k) - v;
                let dz = at(i, j, k + 1) - v;
                g.push((dx * dx + dy * dy + dz * dz).sqrt() / h);
            }
        }
    }
    if g.is_empty() {
        return GradStats::default();
    }
    g.sort_by(f32::total_cmp);
    let q = |p: f32| g[((g.len() - 1) as f32 * p) as usize];
    GradStats {
        p50: q(0.5),
        p99: q(0.99),
        max: g[g.len() - 1],
        n: g.len(),
    }
}

/// Result of evaluating an exported model with tract.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImplicitEvalReport {
    /// Encoder file.
    pub model: String,
    /// Split evaluated.
    pub split: String,
    /// Lattice cells per axis.
    pub res: usize,
    /// Mean figures.
    pub mean: SurfaceMetrics,
    /// SDF gradient norms near the surface, pooled over all pictures (SDF only).
    pub gradient: Option<GradStats>,
    /// Encoder time per picture (tract), median, ms.
    pub encoder_ms_p50: f64,
    /// Dense lattice decode time per picture (tract), median, ms.
    pub decode_ms_p50: f64,
    /// Mean triangles per mesh.
    pub mean_faces: f64,
}

/// Evaluates an exported model (encoder + decoder files) with tract on `set`: up to `limit`
/// pictures (0 = all) spread over the split.
pub fn eval_onnx(
    model: &Path,
    cfg: &ImplicitConfig,
    set: &ImplicitSet,
    split: &str,
    res: usize,
    limit: usize,
) -> Result<ImplicitEvalReport, TrainError> {
    let tr = TractImplicit::load(model, cfg.encoder.image, cfg.latent, 32768)?;
    let n = if limit == 0 {
        set.views.len()
    } else {
        limit.min(set.views.len())
    };
    let mut all = Vec::with_capacity(n);
    let mut enc_ms = Vec::with_capacity(n);
    let mut dec_ms = Vec::with_capacity(n);
    let mut grads: Vec<GradStats> = Vec::new();
    let mut faces = 0usize;
    for i in 0..n {
        let v = i * set.views.len() / n.max(1);
        let img = set.image_chw(v, cfg.mean, cfg.std);
        let t = Instant::now();
        let z = tr.latent(&img)?;
        enc_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let mut dt = 0.0;
        let d = decode_surface(
            |xyz| {
                let r = tr.values(&z, xyz);
                dt = t.elapsed().as_secs_f64() * 1e3;
                r
            },
            cfg.kind,
            res,
            &set.objects[set.views[v].obj].points,
            v as u64,
        )?;
        dec_ms.push(dt);
        faces += d.mesh.faces.len();
        if cfg.kind == Kind::Sdf {
            grads.push(gradient_stats(&d.values, res));
        }
        all.push(d.metrics);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let gradient = (!grads.is_empty()).then(|| GradStats {
        p50: grads.iter().map(|g| g.p50).sum::<f32>() / grads.len() as f32,
        p99: grads.iter().map(|g| g.p99).fold(0.0, f32::max),
        max: grads.iter().map(|g| g.max).fold(0.0, f32::max),
        n: grads.iter().map(|g| g.n).sum(),
    });
    Ok(ImplicitEvalReport {
        model: model.display().to_string(),
        split: split.to_string(),
        res,
        mean: SurfaceMetrics::mean(&all),
        gradient,
        encoder_ms_p50: median(&mut enc_ms),
        decode_ms_p50: median(&mut dec_ms),
        mean_faces: faces as f64 / n.max(1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sphere_sdf_gives_a_sphere_surface() {
        let r = 0.3f32;
        let sdf = |p: [f32; 3]| (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() - r;
        let gt: Vec<[f32; 3]> = (0..500)
            .map(|i| {
                // Fibonacci sphere
                let y = 1.0 - 2.0 * (i as f32 + 0.5) / 500.0;
                let s = (1.0 - y * y).sqrt();
                let phi = i as f32 * 2.399_963;
                [r * s * phi.cos(), r * y, r * s * phi.sin()]
            })
            .collect();
        let d = decode_surface(
            |xyz| Ok(xyz.iter().map(|p| sdf(*p)).collect()),
            Kind::Sdf,
            32,
            &gt,
            1,
        )
        .unwrap();
        assert!(d.metrics.fscore_5pct > 95.0, "{:?}", d.metrics);
        assert!(d.metrics.chamfer_l2 < 2e-3, "{:?}", d.metrics);
        let g = gradient_stats(&d.values, 32);
        assert!((g.p50 - 1.0).abs() < 0.05 && g.max < 1.8, "{g:?}");
        // occupancy logits of the same solid (positive inside) give the same surface
        let o = decode_surface(
            |xyz| Ok(xyz.iter().map(|p| -10.0 * sdf(*p)).collect()),
            Kind::Occupancy,
            32,
            &gt,
            1,
        )
        .unwrap();
        assert!((o.metrics.chamfer_l2 - d.metrics.chamfer_l2).abs() < 1e-4);
        // nothing inside: empty, F = 0
        let e = decode_surface(|xyz| Ok(vec![1.0; xyz.len()]), Kind::Sdf, 8, &gt, 1).unwrap();
        assert_eq!(e.metrics.empty, 1);
        assert_eq!(e.metrics.fscore_1pct, 0.0);
    }
}
