//! Objects for voxel training: every view of an object (normalised `C x H x W` pictures) and
//! the object's `R^3` solid occupancy, grouped with [`Dataset::views_of`].

use crate::data::{Dataset, Split, SynthConfig};
use crate::datasets::{open_dataset, DataSpec};
use crate::TrainError;

use super::VoxelTrainConfig;

/// One object with all its views.
#[derive(Debug, Clone, PartialEq)]
pub struct VoxelObject {
    /// Object index in the dataset.
    pub object: u32,
    /// Class id.
    pub class_id: u16,
    /// Normalised pictures, `3 x H x W` each, in view order.
    pub views: Vec<Vec<f32>>,
    /// Occupancy, 0/1, index `x*R*R + y*R + z` (the contract's `occupancy` order).
    pub voxels: Vec<u8>,
}

/// The synthetic dataset of a configuration (voxels at the model's resolution, no points).
pub fn synth_config(cfg: &VoxelTrainConfig) -> SynthConfig {
    SynthConfig {
        seed: cfg.data.seed,
        objects_per_class: cfg.data.objects_per_class,
        views: cfg.data.views,
        image_size: cfg.model.image as u32,
        n_points: 0,
        voxel_res: cfg.model.resolution,
        n_sdf: 0,
        ..SynthConfig::default()
    }
}

/// What the voxel trainer asks of the configured data: pictures and `R^3` voxels.
pub fn spec(cfg: &VoxelTrainConfig) -> DataSpec<'_> {
    DataSpec {
        kind: &cfg.data.kind,
        shapenet: cfg.data.shapenet.as_ref(),
        pix3d: cfg.data.pix3d.as_ref(),
        want: synth_config(cfg),
        part_classes: 0,
    }
}

/// Opens one split of the configured dataset.
pub fn open_split(cfg: &VoxelTrainConfig, split: Split) -> Result<Box<dyn Dataset>, TrainError> {
    open_dataset(&spec(cfg), split)
}

/// `shapecast.dataset` text of the configured data.
pub fn describe(cfg: &VoxelTrainConfig) -> String {
    format!("{} voxels={}", spec(cfg).describe(), cfg.model.resolution)
}

/// Loads up to `limit` objects (0 = all) of `split`, spread evenly over the split, on all
/// cores; returns them with the dataset's class names.
pub fn load_objects(
    cfg: &VoxelTrainConfig,
    split: Split,
    limit: usize,
) -> Result<(Vec<VoxelObject>, Vec<String>), TrainError> {
    let ds = open_split(cfg, split)?;
    // group sample indices by object
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut seen = vec![false; ds.len()];
    for i in 0..ds.len() {
        if seen.get(i).copied().unwrap_or(true) {
            continue;
        }
        let g = ds.views_of(i);
        for &j in &g {
            if let Some(s) = seen.get_mut(j) {
                *s = true;
            }
        }
        if !g.is_empty() {
            groups.push(g);
        }
    }
    let n = groups.len();
    let take = if limit == 0 { n } else { limit.min(n) };
    let picked: Vec<&Vec<usize>> = (0..take).map(|i| &groups[i * n / take]).collect();
    let (mean, std) = (cfg.mean, cfg.std);
    let r = cfg.model.resolution;
    let ds_ref: &dyn Dataset = ds.as_ref();
    let out = crate::datasets::parallel_map(&picked, |g| load_object(ds_ref, g, mean, std, r))?;
    let out = crate::datasets::non_empty(out, split)?;
    Ok((out, ds.class_names().to_vec()))
}

fn load_object(
    ds: &dyn Dataset,
    group: &[usize],
    mean: [f32; 3],
    std: [f32; 3],
    r: usize,
) -> Result<VoxelObject, TrainError> {
    let mut views = Vec::with_capacity(group.len());
    let mut first = None;
    for &i in group {
        let s = ds.get(i)?;
        if s.voxel_res as usize != r || s.voxels.len() != r * r * r {
            return Err(TrainError::Config(format!(
                "sample {i} has {} voxels at resolution {} (want {r}^3)",
                s.voxels.len(),
                s.voxel_res
            )));
        }
        views.push(s.image_chw(mean, std));
        if first.is_none() {
            first = Some((s.object, s.class_id, s.voxels));
        }
    }
    let (object, class_id, voxels) =
        first.ok_or_else(|| TrainError::Config("object without views".into()))?;
    Ok(VoxelObject {
        object,
        class_id,
        views,
        voxels,
    })
}
