//! Mesh reconstruction by template deformation (Pixel2Mesh-style losses, one stage): an
//! icosphere template (642 vertices at 3 subdivisions) is deformed by per-vertex offsets
//! predicted from the picture (CNN encoder -> fully connected -> `V x 3`).
//!
//! Loss: Chamfer between the deformed mesh (its vertices plus points sampled uniformly on
//! its faces, fresh barycentric samples every step) and the ground-truth surface points,
//! plus a Laplacian smoothness term on the offsets (`|L offsets|^2` with the uniform graph
//! Laplacian `L = I - D^-1 A` of the template: neighbouring vertices move alike) and an
//! edge-length term (mean squared edge length: keeps faces from stretching).
//!
//! Export: `image` -> `offsets` `[1, V, 3]`, with the template and the faces in the metadata
//! (`shapecast.mesh.template`, `shapecast.mesh.faces`, counter-clockwise seen from outside).

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use burn::module::{AutodiffModule, Initializer, Module};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use shapecast_onnx::{Dim, GraphBuilder};

use crate::data::Sample;
use crate::eval::{point_metrics, PointMetrics};
use crate::export::{within_tolerance, write_graph};
use crate::inference::TractRunner;
use crate::lmnet::{
    base_metadata, batch_tensors, check_model_id, check_resume_shape, checkpoint_interval,
    export_encoder, export_linear, floats, fmt_list, load_checkpoint, load_json, load_module,
    lr_at, max_abs_diff, onnx_err, resume_seed, save_checkpoint, save_json, save_module,
    BatchOrder, CheckpointFiles, EncoderConfig, ImageEncoder, StageLoop, StageState, StageSummary,
    SynthData,
};
use crate::loss::point_loss_indexed;
use crate::TrainError;

// ------------------------------------------------------------------ template

/// A triangle mesh: vertices and counter-clockwise (seen from outside) faces.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateMesh {
    /// Vertex positions.
    pub vertices: Vec<[f32; 3]>,
    /// Triangles (vertex indices).
    pub faces: Vec<[u32; 3]>,
}

fn normalize(p: [f32; 3], r: f32) -> [f32; 3] {
    let n = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt().max(1e-12);
    [p[0] * r / n, p[1] * r / n, p[2] * r / n]
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// An icosphere of `radius`: the icosahedron subdivided `subdivisions` times (each edge
/// split at its midpoint, pushed to the sphere): `10 * 4^s + 2` vertices, `20 * 4^s` faces.
pub fn icosphere(subdivisions: u32, radius: f32) -> TemplateMesh {
    let t = (1.0 + 5f32.sqrt()) / 2.0;
    let mut v: Vec<[f32; 3]> = [
        [-1.0, t, 0.0],
        [1.0, t, 0.0],
        [-1.0, -t, 0.0],
        [1.0, -t, 0.0],
        [0.0, -1.0, t],
        [0.0, 1.0, t],
        [0.0, -1.0, -t],
        [0.0, 1.0, -t],
        [t, 0.0, -1.0],
        [t, 0.0, 1.0],
        [-t, 0.0, -1.0],
        [-t, 0.0, 1.0],
    ]
    .iter()
    .map(|&p| normalize(p, 1.0))
    .collect();
    let mut f: Vec<[u32; 3]> = vec![
        [0, 11, 5],
        [0, 5, 1],
        [0, 1, 7],
        [0, 7, 10],
        [0, 10, 11],
        [1, 5, 9],
        [5, 11, 4],
        [11, 10, 2],
        [10, 7, 6],
        [7, 1, 8],
        [3, 9, 4],
        [3, 4, 2],
        [3, 2, 6],
        [3, 6, 8],
        [3, 8, 9],
        [4, 9, 5],
        [2, 4, 11],
        [6, 2, 10],
        [8, 6, 7],
        [9, 8, 1],
    ];
    for _ in 0..subdivisions {
        let mut mid: HashMap<(u32, u32), u32> = HashMap::new();
        let mut next = Vec::with_capacity(f.len() * 4);
        let mut midpoint = |a: u32, b: u32, v: &mut Vec<[f32; 3]>| -> u32 {
            let key = (a.min(b), a.max(b));
            *mid.entry(key).or_insert_with(|| {
                let (p, q) = (v[a as usize], v[b as usize]);
                v.push(normalize(
                    [
                        (p[0] + q[0]) / 2.0,
                        (p[1] + q[1]) / 2.0,
                        (p[2] + q[2]) / 2.0,
                    ],
                    1.0,
                ));
                (v.len() - 1) as u32
            })
        };
        for &[a, b, c] in &f {
            let ab = midpoint(a, b, &mut v);
            let bc = midpoint(b, c, &mut v);
            let ca = midpoint(c, a, &mut v);
            next.extend([[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]);
        }
        f = next;
    }
    // counter-clockwise seen from outside: the normal points away from the centre
    for tri in f.iter_mut() {
        let [a, b, c] = tri.map(|i| v[i as usize]);
        let n = cross(sub(b, a), sub(c, a));
        if dot(n, a) < 0.0 {
            tri.swap(1, 2);
        }
    }
    TemplateMesh {
        vertices: v.into_iter().map(|p| normalize(p, radius)).collect(),
        faces: f,
    }
}

impl TemplateMesh {
    /// Unique undirected edges.
    pub fn edges(&self) -> Vec<[u32; 2]> {
        let mut e: Vec<[u32; 2]> = self
            .faces
            .iter()
            .flat_map(|&[a, b, c]| [[a, b], [b, c], [c, a]])
            .map(|[a, b]| [a.min(b), a.max(b)])
            .collect();
        e.sort_unstable();
        e.dedup();
        e
    }

    /// Dense uniform Laplacian `L = I - D^-1 A` (`V x V`, row-major).
    pub fn laplacian(&self) -> Vec<f32> {
        let n = self.vertices.len();
        let mut nb: Vec<Vec<u32>> = vec![Vec::new(); n];
        for [a, b] in self.edges() {
            nb[a as usize].push(b);
            nb[b as usize].push(a);
        }
        let mut l = vec![0.0f32; n * n];
        for (i, ns) in nb.iter().enumerate() {
            l[i * n + i] = 1.0;
            let w = 1.0 / ns.len().max(1) as f32;
            for &j in ns {
                l[i * n + j as usize] -= w;
            }
        }
        l
    }

    /// `n` points sampled uniformly (area-weighted) on the surface of this mesh with
    /// `vertices` replaced by `verts`.
    pub fn sample_surface<R: Rng>(
        &self,
        verts: &[[f32; 3]],
        n: usize,
        rng: &mut R,
    ) -> Vec<[f32; 3]> {
        let areas: Vec<f32> = self
            .faces
            .iter()
            .map(|&[a, b, c]| {
                let (p, q, r) = (verts[a as usize], verts[b as usize], verts[c as usize]);
                let x = cross(sub(q, p), sub(r, p));
                0.5 * dot(x, x).sqrt()
            })
            .collect();
        let total: f32 = areas.iter().sum();
        if !total.is_finite() || total <= 0.0 {
            return verts.iter().cycle().take(n).copied().collect();
        }
        let mut cdf = Vec::with_capacity(areas.len());
        let mut acc = 0.0;
        for a in &areas {
            acc += a / total;
            cdf.push(acc);
        }
        (0..n)
            .map(|_| {
                let u: f32 = rng.gen();
                let fi = cdf.partition_point(|&c| c < u).min(self.faces.len() - 1);
                let [a, b, c] = self.faces[fi];
                let (p, q, r) = (verts[a as usize], verts[b as usize], verts[c as usize]);
                let (mut s, mut t): (f32, f32) = (rng.gen(), rng.gen());
                if s + t > 1.0 {
                    s = 1.0 - s;
                    t = 1.0 - t;
                }
                let w = 1.0 - s - t;
                [
                    w * p[0] + s * q[0] + t * r[0],
                    w * p[1] + s * q[1] + t * r[1],
                    w * p[2] + s * q[2] + t * r[2],
                ]
            })
            .collect()
    }
}

// ------------------------------------------------------------------ configuration

/// Everything a mesh run needs; saved as `config.json` in the run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshConfig {
    /// Preset the run started from.
    pub preset: String,
    /// `shapecast.model_id` of the export.
    pub model_id: String,
    /// The data.
    pub data: SynthData,
    /// Image encoder.
    pub encoder: EncoderConfig,
    /// Icosphere subdivisions (3: 642 vertices, 1280 faces).
    pub subdivisions: u32,
    /// Template sphere radius (object-frame units).
    pub radius: f32,
    /// Points sampled on the faces per mesh and step for the Chamfer term.
    pub face_samples: usize,
    /// Weight of the Laplacian smoothness term.
    pub laplacian_weight: f32,
    /// Weight of the edge-length term.
    pub edge_weight: f32,
    /// Images per step.
    pub batch: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate (Adam).
    pub lr: f64,
    /// Final learning rate as a fraction of `lr` (cosine).
    pub lr_final_ratio: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Seed of initialisation, batch order and face samples.
    pub seed: u64,
    /// Steps between validations.
    pub eval_every: usize,
    /// Steps between checkpoints (weights, Adam state, progress); 0 = at every validation.
    /// The last step always checkpoints.
    #[serde(default)]
    pub checkpoint_every: usize,
    /// Input normalisation mean.
    pub mean: [f32; 3],
    /// Input normalisation std.
    pub std: [f32; 3],
}

/// Names of the mesh presets.
pub const PRESETS: &[&str] = &["test", "cpu-small"];

impl MeshConfig {
    /// A preset: `test` (CI, seconds) or `cpu-small` (the shipped model, ~12 min on 2 cores).
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        match name {
            "test" => Ok(Self {
                preset: name.into(),
                model_id: "mesh-test".into(),
                data: SynthData::test(256),
                encoder: EncoderConfig::test(),
                subdivisions: 2,
                radius: 0.3,
                face_samples: 256,
                laplacian_weight: 0.5,
                edge_weight: 0.05,
                batch: 8,
                steps: 150,
                lr: 2e-3,
                lr_final_ratio: 0.1,
                warmup: 5,
                seed: 1,
                eval_every: 50,
                checkpoint_every: 0,
                mean: [0.5; 3],
                std: [0.5; 3],
            }),
            "cpu-small" => Ok(Self {
                preset: name.into(),
                model_id: "mesh-cpu-small".into(),
                data: SynthData::cpu_small(),
                encoder: EncoderConfig::cpu_small(),
                subdivisions: 3,
                radius: 0.3,
                face_samples: 1024,
                laplacian_weight: 0.5,
                edge_weight: 0.05,
                batch: 16,
                steps: 1200,
                lr: 1e-3,
                lr_final_ratio: 0.05,
                warmup: 20,
                seed: 1,
                eval_every: 250,
                checkpoint_every: 0,
                mean: [0.5; 3],
                std: [0.5; 3],
            }),
            other => Err(TrainError::Config(format!(
                "unknown mesh preset `{other}` (one of {})",
                PRESETS.join(", ")
            ))),
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.encoder.validate()?;
        let bad = |s: &str| Err(TrainError::Config(s.to_string()));
        if self.subdivisions > 5 || self.radius <= 0.0 || self.radius >= 0.5 {
            return bad("subdivisions must be <= 5 and 0 < radius < 0.5");
        }
        if self.batch == 0 || self.steps == 0 || self.lr <= 0.0 || self.eval_every == 0 {
            return bad("batch, steps, eval_every must be > 0 and lr > 0");
        }
        check_model_id(&self.model_id)?;
        self.data.validate()
    }

    /// Steps between checkpoints (`checkpoint_every`, or `eval_every` when 0).
    pub fn checkpoint_interval(&self) -> usize {
        checkpoint_interval(self.checkpoint_every, self.eval_every)
    }

    /// Whether `other` builds the same network (a checkpoint of one loads into the other).
    pub fn same_shape(&self, other: &Self) -> bool {
        self.encoder == other.encoder
            && self.subdivisions == other.subdivisions
            && self.radius == other.radius
    }

    /// The template of this configuration.
    pub fn template(&self) -> TemplateMesh {
        icosphere(self.subdivisions, self.radius)
    }
}

// ------------------------------------------------------------------ network

/// Image -> per-vertex offsets of the template.
#[derive(Module, Debug)]
pub struct MeshNet<B: Backend> {
    /// CNN + fully connected layer.
    pub encoder: ImageEncoder<B>,
    /// Offset head (`hidden -> V * 3`, small initial weights: training starts at the sphere).
    pub head: Linear<B>,
    /// `V`.
    pub vertices: usize,
}

impl<B: Backend> MeshNet<B> {
    /// Builds the network of `cfg`.
    pub fn new(cfg: &MeshConfig, device: &B::Device) -> Self {
        let v = cfg.template().vertices.len();
        Self {
            encoder: cfg.encoder.init(device),
            head: LinearConfig::new(cfg.encoder.hidden, v * 3)
                .with_initializer(Initializer::Uniform {
                    min: -1e-3,
                    max: 1e-3,
                })
                .init(device),
            vertices: v,
        }
    }

    /// Offsets `[B, V, 3]` of pictures `[B, 3, H, W]`.
    pub fn forward(&self, image: Tensor<B, 4>) -> Tensor<B, 3> {
        let b = image.dims()[0];
        self.head
            .forward(self.encoder.forward(image))
            .reshape([b, self.vertices, 3])
    }
}

/// Template-derived constant tensors of the loss.
#[derive(Debug, Clone)]
pub struct MeshConstants<B: Backend> {
    /// Template `[1, V, 3]`.
    pub template: Tensor<B, 3>,
    /// Laplacian `[V, V]`.
    pub laplacian: Tensor<B, 2>,
    /// Edge endpoints `[E]` each.
    pub edge_a: Tensor<B, 1, Int>,
    /// Second endpoints.
    pub edge_b: Tensor<B, 1, Int>,
}

impl<B: Backend> MeshConstants<B> {
    /// The constants of `t`.
    pub fn new(t: &TemplateMesh, device: &B::Device) -> Self {
        let v = t.vertices.len();
        let edges = t.edges();
        let flat: Vec<f32> = t.vertices.iter().flatten().copied().collect();
        Self {
            template: Tensor::from_data(TensorData::new(flat, [1, v, 3]), device),
            laplacian: Tensor::from_data(TensorData::new(t.laplacian(), [v, v]), device),
            edge_a: Tensor::from_data(
                TensorData::new(
                    edges.iter().map(|e| i64::from(e[0])).collect::<Vec<_>>(),
                    [edges.len()],
                ),
                device,
            ),
            edge_b: Tensor::from_data(
                TensorData::new(
                    edges.iter().map(|e| i64::from(e[1])).collect::<Vec<_>>(),
                    [edges.len()],
                ),
                device,
            ),
        }
    }
}

/// Loss terms of a batch.
#[derive(Debug, Clone)]
pub struct MeshLoss<B: Backend> {
    /// Weighted sum.
    pub total: Tensor<B, 1>,
    /// Chamfer (vertices + face samples vs ground truth).
    pub chamfer: Tensor<B, 1>,
    /// Laplacian term.
    pub laplacian: Tensor<B, 1>,
    /// Edge-length term.
    pub edge: Tensor<B, 1>,
}

/// The loss of offsets `[B, V, 3]` against ground-truth points `[B, M, 3]`; `faces`
/// `(a, b, c)` index vectors `[S]` and barycentric weights `[S, 3]` of this step's face
/// samples.
#[allow(clippy::too_many_arguments)]
pub fn mesh_loss<B: Backend>(
    offsets: Tensor<B, 3>,
    gt: Tensor<B, 3>,
    k: &MeshConstants<B>,
    face_idx: [Tensor<B, 1, Int>; 3],
    bary: Tensor<B, 2>,
    laplacian_weight: f32,
    edge_weight: f32,
) -> MeshLoss<B> {
    let [b, v, _] = offsets.dims();
    let s = bary.dims()[0];
    let verts = k.template.clone() + offsets.clone();
    let [ia, ib, ic] = face_idx;
    let w = |j: usize| bary.clone().narrow(1, j, 1).reshape([1, s, 1]);
    let samples = verts.clone().select(1, ia) * w(0)
        + verts.clone().select(1, ib) * w(1)
        + verts.clone().select(1, ic) * w(2);
    let pred = Tensor::cat(vec![verts.clone(), samples], 1);
    let chamfer = point_loss_indexed(pred.unsqueeze_dim::<4>(1), gt, None, None, 0.0).chamfer;
    // Laplacian of the offsets: [V, V] x [V, B*3]
    let off = offsets.swap_dims(0, 1).reshape([v, b * 3]);
    let lap = k
        .laplacian
        .clone()
        .matmul(off)
        .powi_scalar(2)
        .sum_dim(1)
        .mean()
        .div_scalar(b as f32);
    let e = verts.clone().select(1, k.edge_a.clone()) - verts.select(1, k.edge_b.clone());
    let edge = e.powi_scalar(2).sum_dim(2).mean();
    let total = chamfer.clone()
        + lap.clone().mul_scalar(laplacian_weight)
        + edge.clone().mul_scalar(edge_weight);
    MeshLoss {
        total,
        chamfer,
        laplacian: lap,
        edge,
    }
}

/// Random face samples of a step: uniform over faces (the template's faces have about equal
/// areas), uniform barycentric coordinates.
pub fn face_samples<B: Backend, R: Rng>(
    t: &TemplateMesh,
    n: usize,
    rng: &mut R,
    device: &B::Device,
) -> ([Tensor<B, 1, Int>; 3], Tensor<B, 2>) {
    let mut idx = [
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    let mut w = Vec::with_capacity(n * 3);
    for _ in 0..n {
        let f = t.faces[rng.gen_range(0..t.faces.len())];
        for (list, &vi) in idx.iter_mut().zip(&f) {
            list.push(i64::from(vi));
        }
        let (mut s, mut u): (f32, f32) = (rng.gen(), rng.gen());
        if s + u > 1.0 {
            s = 1.0 - s;
            u = 1.0 - u;
        }
        w.extend([1.0 - s - u, s, u]);
    }
    let [a, b, c] = idx;
    let mk = |v: Vec<i64>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), device);
    (
        [mk(a), mk(b), mk(c)],
        Tensor::from_data(TensorData::new(w, [n, 3]), device),
    )
}

// ------------------------------------------------------------------ training

/// File names inside a run folder: those of a point run and the summary.
pub mod files {
    pub use crate::training::files::*;
    /// Summary (JSON).
    pub const SUMMARY: &str = "summary.json";
}

/// Checkpoint files of a mesh run.
pub const CHECKPOINT: CheckpointFiles = crate::training::CHECKPOINT;

fn to_cloud(v: &[f32]) -> Vec<[f32; 3]> {
    v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect()
}

/// Figures of predicted meshes against ground truth: on `gt.len()` points sampled on the
/// mesh surface, and on the vertices alone.
pub fn mesh_metrics<R: Rng>(
    t: &TemplateMesh,
    verts: &[[f32; 3]],
    gt: &[[f32; 3]],
    rng: &mut R,
) -> (PointMetrics, PointMetrics) {
    let surf = t.sample_surface(verts, gt.len().max(1), rng);
    (point_metrics(&surf, gt), point_metrics(verts, gt))
}

/// Validation: surface-sample Chamfer/F-score of the predicted meshes.
pub fn validate<B: Backend>(
    net: &MeshNet<B>,
    t: &TemplateMesh,
    val: &[Sample],
    cfg: &MeshConfig,
    device: &B::Device,
) -> Result<PointMetrics, TrainError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let v = t.vertices.len();
    let mut all = Vec::new();
    for chunk in val.chunks(cfg.batch) {
        let refs: Vec<&Sample> = chunk.iter().collect();
        let (img, _) = batch_tensors::<B>(&refs, cfg.mean, cfg.std, device)?;
        let off = floats(net.forward(img))?;
        for (i, s) in chunk.iter().enumerate() {
            let verts: Vec<[f32; 3]> = to_cloud(&off[i * v * 3..(i + 1) * v * 3])
                .iter()
                .zip(&t.vertices)
                .map(|(o, p)| [p[0] + o[0], p[1] + o[1], p[2] + o[2]])
                .collect();
            all.push(mesh_metrics(t, &verts, &s.points, &mut rng).0);
        }
    }
    Ok(PointMetrics::mean(&all))
}

/// Trains the mesh network; writes `config.json`, `model.mpk`, `metrics.csv`, `loss.png`,
/// `summary.json` into `out`, with a checkpoint (weights, Adam state, progress) every
/// `checkpoint_interval` steps. With `resume`, continues from the checkpoint in `out`
/// (refused when the saved configuration has another network shape).
pub fn train_mesh<B: AutodiffBackend>(
    cfg: &MeshConfig,
    train: &[Sample],
    val: &[Sample],
    out: &Path,
    resume: bool,
    device: &B::Device,
) -> Result<(MeshNet<B::InnerBackend>, StageSummary), TrainError> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(TrainError::Config("no training samples".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| TrainError::io(out, e))?;
    let resume =
        resume && check_resume_shape(out, "network differs", |s: &MeshConfig| s.same_shape(cfg))?;
    save_json(cfg, &out.join(files::CONFIG))?;
    let _rng = crate::backend::seed_exclusive::<B>(device, cfg.seed);
    let t = cfg.template();
    let k = MeshConstants::<B>::new(&t, device);
    let mut net: MeshNet<B> = MeshNet::new(cfg, device);
    let mut optim = AdamConfig::new().init::<B, MeshNet<B>>();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xface);
    let mut state = StageState::default();
    if resume {
        let (m, o, st) =
            load_checkpoint::<B, _, _, StageState>(net, optim, out, CHECKPOINT, device)?;
        (net, optim) = (m, o);
        if let Some(st) = st {
            state = st;
            state.restore_rng(&mut rng)?;
            B::seed(device, resume_seed(cfg.seed, state.step));
            log::info!("mesh: resumed from step {}", state.step);
        }
    } else {
        let _ = std::fs::remove_file(out.join(files::STATE));
    }
    let mut lp = StageLoop::new(
        state,
        &out.join(files::METRICS),
        cfg.steps,
        cfg.eval_every,
        cfg.checkpoint_interval(),
    )?;
    let start = lp.start;
    let mut order = BatchOrder::new(cfg.seed, train.len(), cfg.batch);
    for step in start..cfg.steps {
        let refs: Vec<&Sample> = order.at(step).into_iter().map(|i| &train[i]).collect();
        let (img, pts) = batch_tensors::<B>(&refs, cfg.mean, cfg.std, device)?;
        let (fi, bary) = face_samples::<B, _>(&t, cfg.face_samples, &mut rng, device);
        let off = net.forward(img);
        let loss = mesh_loss(
            off,
            pts,
            &k,
            fi,
            bary,
            cfg.laplacian_weight,
            cfg.edge_weight,
        );
        let lr = lr_at(cfg.lr, cfg.lr_final_ratio, cfg.warmup, cfg.steps, step);
        let grads = GradientsParams::from_grads(loss.total.backward(), &net);
        let cd: f32 = loss.chamfer.into_scalar().elem();
        let lap: f32 = loss.laplacian.into_scalar().elem();
        if !cd.is_finite() || !lap.is_finite() {
            return Err(TrainError::Check(format!(
                "mesh loss is not finite at step {step}"
            )));
        }
        net = optim.step(lr, net, grads);
        let checkpoint = lp.after_step(step, lr, cd, lap, !val.is_empty(), |done, l, lp| {
            let m = validate(&net.valid(), &t, val, cfg, device)?;
            log::info!(
                "mesh step {done:>5}  train chamfer {l:.5}  laplacian {lp:.6}  val chamfer-L2 {:.5}  F@1% {:.2}",
                m.chamfer_l2,
                m.fscore_1pct
            );
            Ok(m)
        })?;
        if checkpoint {
            lp.state.save_rng(&rng);
            save_checkpoint(&net, &optim, &lp.state, out, CHECKPOINT)?;
        }
    }
    let (sum, csv) = lp.finish();
    let net = net.valid();
    save_module(&net, &out.join(files::MODEL))?;
    csv.plot(&out.join(files::CURVE))?;
    save_json(&sum, &out.join(files::SUMMARY))?;
    Ok((net, sum))
}

/// Loads a run's weights.
pub fn load_run<B: Backend>(
    run: &Path,
    device: &B::Device,
) -> Result<(MeshConfig, MeshNet<B>), TrainError> {
    let cfg: MeshConfig = load_json(&run.join(files::CONFIG))?;
    cfg.validate()?;
    let net = load_module(
        MeshNet::<B>::new(&cfg, device),
        &run.join(files::MODEL),
        device,
    )?;
    Ok((cfg, net))
}

// ------------------------------------------------------------------ export

/// Builds the ONNX graph: `image` `[1, 3, H, W]` -> `offsets` `[1, V, 3]`.
pub fn mesh_graph<B: Backend>(
    net: &MeshNet<B>,
    cfg: &MeshConfig,
    metrics: Option<&str>,
) -> Result<GraphBuilder, TrainError> {
    let t = cfg.template();
    let v = t.vertices.len();
    let side = cfg.encoder.image;
    let mut g = GraphBuilder::new(&cfg.model_id);
    let x = g.input(
        "image",
        &[Dim::Fixed(1), 3.into(), side.into(), side.into()],
    );
    let h = export_encoder(&mut g, &net.encoder, &x)?;
    let o = export_linear(&mut g, &h, "head", &net.head)?;
    let o = g.reshape(&o, &[1, v as i64, 3]);
    g.output_with_dims(&o, "offsets", &[1.into(), v.into(), 3.into()])
        .map_err(onnx_err)?;
    let mut meta = base_metadata(
        "mesh",
        &cfg.model_id,
        side,
        cfg.mean,
        cfg.std,
        &cfg.data.describe(),
    );
    let flat: Vec<f32> = t.vertices.iter().flatten().copied().collect();
    meta.push(("shapecast.mesh.template".into(), fmt_list(&flat)));
    meta.push((
        "shapecast.mesh.faces".into(),
        t.faces
            .iter()
            .flatten()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(","),
    ));
    if let Some(m) = metrics {
        meta.push(("shapecast.metrics".into(), m.to_string()));
    }
    g.metadata_list(&meta);
    Ok(g)
}

/// Writes the export, loads it with tract and checks that it reproduces burn's offsets on
/// `probes` within `tol`; returns the largest absolute difference.
pub fn export_mesh<B: Backend>(
    net: &MeshNet<B>,
    cfg: &MeshConfig,
    path: &Path,
    probes: &[Vec<f32>],
    tol: f32,
    metrics: Option<&str>,
    device: &B::Device,
) -> Result<f32, TrainError> {
    let g = mesh_graph(net, cfg, metrics)?;
    write_graph(&g, path)?;
    let side = cfg.encoder.image;
    let runner = TractRunner::load(path, side)?;
    let mut worst = 0.0f32;
    for probe in probes {
        let img =
            Tensor::<B, 4>::from_data(TensorData::new(probe.clone(), [1, 3, side, side]), device);
        let want = floats(net.forward(img))?;
        let got = runner.run(probe)?;
        if got.shape != [1, net.vertices, 3] {
            return Err(TrainError::Check(format!(
                "tract output shape {:?}, expected [1, {}, 3]",
                got.shape, net.vertices
            )));
        }
        worst = worst.max(max_abs_diff(&want, &got.points)?);
    }
    within_tolerance(path, worst, tol)
}

// ------------------------------------------------------------------ evaluation

/// Test-split figures of a mesh export.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MeshEval {
    /// Model file.
    pub model: String,
    /// Samples.
    pub samples: usize,
    /// Points sampled on the predicted surface vs ground truth.
    pub surface: PointMetrics,
    /// Predicted vertices vs ground truth.
    pub vertices: PointMetrics,
    /// The undeformed template vs ground truth (baseline).
    pub template: PointMetrics,
    /// Mean |offset|.
    pub mean_offset: f32,
    /// tract inference, median ms per picture.
    pub infer_ms_p50: f64,
}

/// Runs the export with tract on `set`.
pub fn eval_mesh(model: &Path, cfg: &MeshConfig, set: &[Sample]) -> Result<MeshEval, TrainError> {
    let t = cfg.template();
    let runner = TractRunner::load(model, cfg.encoder.image)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1234);
    let (mut surf, mut vert, mut base) = (Vec::new(), Vec::new(), Vec::new());
    let mut times = Vec::new();
    let mut off_sum = 0.0f64;
    let mut off_n = 0usize;
    for s in set {
        let t0 = Instant::now();
        let out = runner.run(&s.image_chw(cfg.mean, cfg.std))?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        if out.points.len() != t.vertices.len() * 3 {
            return Err(TrainError::Check(format!(
                "model gives {} offsets values, template has {} vertices",
                out.points.len(),
                t.vertices.len()
            )));
        }
        let verts: Vec<[f32; 3]> = to_cloud(&out.points)
            .iter()
            .zip(&t.vertices)
            .map(|(o, p)| {
                off_sum += f64::from(dot(*o, *o).sqrt());
                off_n += 1;
                [p[0] + o[0], p[1] + o[1], p[2] + o[2]]
            })
            .collect();
        let (a, b) = mesh_metrics(&t, &verts, &s.points, &mut rng);
        surf.push(a);
        vert.push(b);
        base.push(mesh_metrics(&t, &t.vertices, &s.points, &mut rng).0);
    }
    times.sort_by(f64::total_cmp);
    Ok(MeshEval {
        model: model.display().to_string(),
        samples: set.len(),
        surface: PointMetrics::mean(&surf),
        vertices: PointMetrics::mean(&vert),
        template: PointMetrics::mean(&base),
        mean_offset: (off_sum / off_n.max(1) as f64) as f32,
        infer_ms_p50: times.get(times.len() / 2).copied().unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn icosphere_counts_and_winding() {
        for (s, v, f) in [(0u32, 12usize, 20usize), (2, 162, 320), (3, 642, 1280)] {
            let t = icosphere(s, 0.3);
            assert_eq!(t.vertices.len(), v);
            assert_eq!(t.faces.len(), f);
            // closed surface: Euler characteristic 2
            assert_eq!(v as i64 - t.edges().len() as i64 + f as i64, 2);
            for p in &t.vertices {
                assert!((dot(*p, *p).sqrt() - 0.3).abs() < 1e-5);
            }
            for &[a, b, c] in &t.faces {
                let [p, q, r] = [a, b, c].map(|i| t.vertices[i as usize]);
                assert!(dot(cross(sub(q, p), sub(r, p)), p) > 0.0, "inward face");
            }
        }
    }

    #[test]
    fn laplacian_rows_sum_to_zero_and_smooth_offsets_cost_nothing() {
        let t = icosphere(2, 0.3);
        let v = t.vertices.len();
        let l = t.laplacian();
        for i in 0..v {
            let s: f32 = l[i * v..(i + 1) * v].iter().sum();
            assert!(s.abs() < 1e-5);
        }
        let dev = Default::default();
        let k = MeshConstants::<B>::new(&t, &dev);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (fi, bary) = face_samples::<B, _>(&t, 64, &mut rng, &dev);
        let gt: Vec<f32> = t.vertices.iter().flatten().map(|x| x * 1.2).collect();
        let gt = Tensor::<B, 3>::from_data(TensorData::new(gt, [1, v, 3]), &dev);
        // a constant translation is perfectly smooth
        let off = Tensor::<B, 3>::ones([1, v, 3], &dev).mul_scalar(0.1);
        let loss = mesh_loss(off, gt.clone(), &k, fi.clone(), bary.clone(), 1.0, 0.0);
        let lap: f32 = loss.laplacian.into_scalar();
        assert!(lap < 1e-9, "{lap}");
        // random offsets are not
        let noise: Vec<f32> = (0..v * 3).map(|i| ((i * 31) % 17) as f32 / 170.0).collect();
        let off = Tensor::<B, 3>::from_data(TensorData::new(noise, [1, v, 3]), &dev);
        let loss = mesh_loss(off, gt, &k, fi, bary, 1.0, 0.0);
        let lap: f32 = loss.laplacian.into_scalar();
        assert!(lap > 1e-4, "{lap}");
    }

    #[test]
    fn surface_samples_lie_on_the_sphere_cap() {
        let t = icosphere(3, 0.3);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let pts = t.sample_surface(&t.vertices, 500, &mut rng);
        assert_eq!(pts.len(), 500);
        for p in pts {
            let r = dot(p, p).sqrt();
            assert!(r > 0.29 && r <= 0.3 + 1e-5, "{r}");
        }
    }
}
