//! Turns a run's [`DataConfig`](crate::config::DataConfig) into in-memory samples.

use crate::config::TrainConfig;
use crate::data::{Dataset, Sample, Split, SynthConfig, SyntheticDataset};
use crate::TrainError;

/// The synthetic dataset a configuration describes (no voxels or SDF: point models only).
pub fn synth_config(cfg: &TrainConfig) -> SynthConfig {
    SynthConfig {
        seed: cfg.data.seed,
        objects_per_class: cfg.data.objects_per_class,
        views: cfg.data.views,
        image_size: cfg.model.image as u32,
        n_points: cfg.data.gt_points,
        voxel_res: 0,
        n_sdf: 0,
        ..SynthConfig::default()
    }
}

/// Opens one split of the configured dataset.
pub fn open_split(cfg: &TrainConfig, split: Split) -> Result<Box<dyn Dataset>, TrainError> {
    match cfg.data.kind.as_str() {
        "synthetic" => Ok(Box::new(SyntheticDataset::new(synth_config(cfg), split)?)),
        other => Err(TrainError::Config(format!(
            "unknown data.kind `{other}` (synthetic)"
        ))),
    }
}

/// Loads up to `limit` samples (0 = all) of `split`, spread evenly over the split, on all
/// cores; returns them with the dataset's part names.
pub fn load_split(
    cfg: &TrainConfig,
    split: Split,
    limit: usize,
) -> Result<(Vec<Sample>, Vec<String>), TrainError> {
    let ds = open_split(cfg, split)?;
    let samples = load_samples(ds.as_ref(), split, limit)?;
    Ok((samples, ds.part_names().to_vec()))
}

/// Loads up to `limit` samples (0 = all) of one split of `ds`, spread evenly over it (whole
/// objects first: consecutive views share cached ground truth), on all cores. An empty
/// result is an error naming the split.
pub fn load_samples(
    ds: &dyn Dataset,
    split: Split,
    limit: usize,
) -> Result<Vec<Sample>, TrainError> {
    let n = ds.len();
    let take = if limit == 0 { n } else { limit.min(n) };
    let idx: Vec<usize> = (0..take).map(|i| i * n / take).collect();
    let out = parallel_map(&idx, |&i| ds.get(i).map_err(TrainError::from))?;
    non_empty(out, split)
}

/// `items` unless empty, else an error naming the split.
pub fn non_empty<T>(items: Vec<T>, split: Split) -> Result<Vec<T>, TrainError> {
    if items.is_empty() {
        return Err(TrainError::Config(format!(
            "split {} of the dataset is empty",
            split.name()
        )));
    }
    Ok(items)
}

/// Maps `f` over `items` on all cores (at most 16 threads), keeping their order; the first
/// error is returned.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, TrainError> + Sync,
) -> Result<Vec<R>, TrainError> {
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    let parts: Vec<Result<Vec<R>, TrainError>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Result<Vec<_>, _>>()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(TrainError::Config("a loader thread panicked".into())))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}
