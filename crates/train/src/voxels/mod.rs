//! Voxel models (3D-R2N2): single-view 32^3 occupancy trained with a (positively weighted)
//! binary cross-entropy, and the multi-view variant whose recurrent fusion state (3D-R2N2's
//! 3D convolutional GRU over a `4^3` grid of cells, or a flat GRU over the image latent) is
//! exported as the contract's `state_in` / `state_out` pair.
//!
//! * [`model`]: the network ([`VoxelNet`]), generic over the burn backend.
//! * [`data`]: objects with all their views and their `R^3` occupancy, from the synthetic
//!   dataset.
//! * [`train`]: the loop (Adam, cosine learning rate, per-view loss along sequences of
//!   views, validation IoU, metrics CSV, loss curve, checkpoints, resume) and the IoU
//!   evaluation per number of fused views.
//! * [`export`]: ONNX with the contract's metadata, checked against burn in tract.
//!
//! Run configuration: [`VoxelTrainConfig`] (presets `test`, `test-flat`, `cpu`, `cpu-flat`,
//! `cpu-single`), saved as `config.json` in the run folder.

pub mod data;
pub mod export;
pub mod model;
pub mod train;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use model::{GruCell, VoxelNet, VoxelNetConfig};

use crate::TrainError;

/// Where the objects come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoxelDataConfig {
    /// `synthetic` (procedural, built in), `shapenet-r2n2` (section `shapenet`, with
    /// `voxels_dir`) or `pix3d` (section `pix3d`); see [`crate::datasets`].
    pub kind: String,
    /// Dataset seed (synthetic: objects, views, split; ShapeNet without split files and
    /// Pix3D: the hashed split).
    pub seed: u64,
    /// Procedural objects per class (all splits together; about 80/10/10); synthetic only.
    pub objects_per_class: usize,
    /// Views rendered per object (>= the fused sequence length); on ShapeNet / Pix3D the
    /// views per object that the multi-view evaluation fuses (objects with fewer are left
    /// out of it).
    pub views: usize,
    /// Training objects held in memory (0 = the whole train split).
    pub train_objects: usize,
    /// Validation objects for the periodic validation.
    pub val_objects: usize,
    /// ShapeNet renderings (3D-R2N2 layout) when `kind` is `shapenet-r2n2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shapenet: Option<crate::datasets::ShapeNetSource>,
    /// Pix3D when `kind` is `pix3d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pix3d: Option<crate::datasets::Pix3dSource>,
}

/// Everything a voxel run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoxelTrainConfig {
    /// Preset the run started from.
    pub preset: String,
    /// `shapecast.model_id` of the export.
    pub model_id: String,
    /// The network.
    pub model: VoxelNetConfig,
    /// The data.
    pub data: VoxelDataConfig,
    /// Objects per step.
    pub batch: usize,
    /// Views per training sequence (fusion: the views fused, loss after every one; single
    /// view: independent views of each object in the batch).
    pub seq_views: usize,
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate (Adam); cosine decay to `lr * lr_final_ratio`.
    pub lr: f64,
    /// Final learning rate as a fraction of `lr`.
    pub lr_final_ratio: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Weight of occupied cells in the cross-entropy (most cells are empty).
    pub pos_weight: f32,
    /// Occupancy probability threshold (`shapecast.voxels.threshold`, IoU).
    pub threshold: f32,
    /// Seed of initialisation, batch order and view choice.
    pub seed: u64,
    /// Steps between validations.
    pub eval_every: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Input normalisation mean (RGB).
    pub mean: [f32; 3],
    /// Input normalisation std (RGB).
    pub std: [f32; 3],
}

/// Names of the built-in presets.
pub const PRESETS: &[&str] = &["test", "test-flat", "cpu", "cpu-flat", "cpu-single"];

impl VoxelTrainConfig {
    /// A built-in preset: `test` (CI smoke run, 3D convolutional GRU, seconds), `test-flat`
    /// (the same with the flat GRU), `cpu` (the shipped model: patchify encoder, 3D
    /// convolutional GRU over a `32 x 4^3` state, upsampling decoder), `cpu-flat` (the
    /// previous shipped model: 3x3 encoder, flat GRU), `cpu-single` (`cpu-flat` without
    /// fusion).
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        let grid_model = |image: usize| VoxelNetConfig {
            image,
            channels: vec![32, 64, 128],
            strides: vec![4, 2, 2],
            kernels: vec![4, 2, 2],
            latent: 256,
            fusion: true,
            state: 0,
            resolution: 32,
            coarse: 0,
            cell_channels: 0,
            cell_hidden: 0,
            grid: 4,
            grid_channels: 32,
            up_channels: vec![32, 16],
            refine: 1,
            latent_norm: true,
        };
        let flat_model = |fusion: bool| VoxelNetConfig {
            image: 64,
            channels: vec![16, 32, 64, 64, 128],
            strides: vec![2, 2, 2, 1, 2],
            kernels: vec![],
            latent: 128,
            fusion,
            state: 128,
            resolution: 32,
            coarse: 8,
            cell_channels: 8,
            cell_hidden: 64,
            grid: 0,
            grid_channels: 0,
            up_channels: vec![],
            refine: 0,
            latent_norm: false,
        };
        let cpu = |model_id: &str, model: VoxelNetConfig| VoxelTrainConfig {
            preset: name.into(),
            model_id: model_id.into(),
            model,
            data: VoxelDataConfig {
                kind: "synthetic".into(),
                seed: 2026,
                objects_per_class: 120,
                views: 4,
                train_objects: 0,
                val_objects: 40,
                shapenet: None,
                pix3d: None,
            },
            batch: 8,
            seq_views: 4,
            steps: 1500,
            lr: 1e-3,
            lr_final_ratio: 0.05,
            warmup: 30,
            pos_weight: 2.0,
            threshold: 0.5,
            seed: 1,
            eval_every: 250,
            checkpoint_every: 250,
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        match name {
            "test" | "test-flat" => {
                let model = if name == "test" {
                    VoxelNetConfig {
                        image: 32,
                        channels: vec![8, 16],
                        strides: vec![4, 2],
                        kernels: vec![4, 2],
                        latent: 32,
                        grid_channels: 4,
                        up_channels: vec![8, 4],
                        ..grid_model(32)
                    }
                } else {
                    VoxelNetConfig {
                        image: 32,
                        channels: vec![8, 16, 32],
                        strides: vec![2, 2, 2],
                        latent: 32,
                        state: 32,
                        coarse: 4,
                        cell_channels: 4,
                        cell_hidden: 32,
                        ..flat_model(true)
                    }
                };
                Ok(VoxelTrainConfig {
                    preset: name.into(),
                    model_id: "r2n2-test".into(),
                    model,
                    data: VoxelDataConfig {
                        kind: "synthetic".into(),
                        seed: 7,
                        objects_per_class: 6,
                        views: 3,
                        train_objects: 0,
                        val_objects: 4,
                        shapenet: None,
                        pix3d: None,
                    },
                    batch: 4,
                    seq_views: 3,
                    steps: 150,
                    lr: 3e-3,
                    lr_final_ratio: 0.1,
                    warmup: 3,
                    pos_weight: 2.0,
                    threshold: 0.5,
                    seed: 1,
                    eval_every: 75,
                    checkpoint_every: 75,
                    mean: [0.5; 3],
                    std: [0.5; 3],
                })
            }
            "cpu" => Ok(cpu("r2n2-convgru-cpu", grid_model(64))),
            "cpu-flat" => Ok(cpu("r2n2-gru64-cpu", flat_model(true))),
            "cpu-single" => Ok(cpu("r2n2-single64-cpu", flat_model(false))),
            other => Err(TrainError::Config(format!(
                "unknown voxel preset `{other}` (one of {})",
                PRESETS.join(", ")
            ))),
        }
    }

    /// Checks the values that would otherwise fail deep inside training.
    pub fn validate(&self) -> Result<(), TrainError> {
        self.model.validate()?;
        let bad = |s: &str| Err(TrainError::Config(s.to_string()));
        if self.batch == 0 || self.steps == 0 || self.lr <= 0.0 || self.seq_views == 0 {
            return bad("batch, steps, seq_views must be > 0 and lr > 0");
        }
        if self.seq_views > self.data.views {
            return bad("seq_views must be <= data.views");
        }
        let in_range = self.threshold > 0.0 && self.threshold < 1.0 && self.pos_weight > 0.0;
        if !in_range {
            return bad("threshold must be in (0, 1) and pos_weight > 0");
        }
        crate::lmnet::check_model_id(&self.model_id)?;
        let synthetic = self.data.kind == crate::datasets::SYNTHETIC;
        if self.data.views == 0 || (synthetic && self.data.objects_per_class == 0) {
            return bad("data.objects_per_class and data.views must be > 0");
        }
        data::spec(self).check()?;
        if self.eval_every == 0 || self.checkpoint_every == 0 {
            return bad("eval_every and checkpoint_every must be > 0");
        }
        Ok(())
    }

    /// Learning rate at `step` (linear warm-up, cosine decay).
    pub fn lr_at(&self, step: usize) -> f64 {
        crate::lmnet::lr_at(self.lr, self.lr_final_ratio, self.warmup, self.steps, step)
    }

    /// Logit of the threshold (a cell is occupied when its logit is above it).
    pub fn logit_threshold(&self) -> f32 {
        (self.threshold / (1.0 - self.threshold)).ln()
    }

    /// Reads a saved `config.json`.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        crate::lmnet::load_json(path)
    }

    /// Writes `config.json`.
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        crate::lmnet::save_json(self, path)
    }
}

/// Intersection over union of two occupancy grids given as "occupied" flags; 1 when both
/// are empty.
pub fn iou(pred: &[bool], gt: &[bool]) -> f32 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&p, &g) in pred.iter().zip(gt) {
        inter += usize::from(p && g);
        union += usize::from(p || g);
    }
    if union == 0 {
        1.0
    } else {
        inter as f32 / union as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for p in PRESETS {
            let c = VoxelTrainConfig::preset(p).unwrap();
            c.validate().unwrap();
            assert!(c.lr_at(c.steps - 1) < c.lr_at(c.warmup));
            assert!(c.logit_threshold().abs() < 1e-6);
        }
        assert!(VoxelTrainConfig::preset("nope").is_err());
        let mut c = VoxelTrainConfig::preset("test").unwrap();
        c.seq_views = c.data.views + 1;
        assert!(c.validate().is_err());
    }

    #[test]
    fn iou_counts() {
        let a = [true, true, false, false];
        let b = [true, false, true, false];
        assert!((iou(&a, &b) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[false; 3], &[false; 3]), 1.0);
        assert_eq!(iou(&a, &a), 1.0);
    }
}
