//! Sample pictures for the runtime demo: test-split renderings with their ground truth.

use std::path::{Path, PathBuf};

use shapecast_geom::ply::{self, PlyData};

use super::{DataError, Dataset, Split, SynthConfig, SyntheticDataset};

/// Files written for one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleFiles {
    /// The picture (PNG, RGB).
    pub image: PathBuf,
    /// Ground-truth surface points with part labels (binary PLY, object frame).
    pub points: PathBuf,
    /// Class name.
    pub class: String,
}

/// Renders `n` pictures of `size x size` pixels from the *test* split of the synthetic dataset
/// the shipped default model was trained on (the `cpu-small` preset's data: all classes,
/// 400 objects per class, 4 views) with `seed`; see [`write_samples_with`].
pub fn write_samples(
    dir: &Path,
    n: usize,
    size: u32,
    seed: u64,
) -> Result<Vec<SampleFiles>, DataError> {
    let cfg = SynthConfig {
        seed,
        objects_per_class: 400,
        views: 4,
        image_size: size,
        n_points: 2048,
        voxel_res: 0,
        n_sdf: 0,
        ..SynthConfig::default()
    };
    write_samples_with(dir, n, cfg)
}

/// Renders `n` pictures from the *test* split of the synthetic dataset `cfg` (use the
/// training run's dataset, so that the pictures show unseen objects of the trained classes;
/// classes in turn, distinct objects) into `dir`: `NN_<class>.png`, `NN_<class>.ply`
/// (`cfg.n_points` ground-truth points, `label` = part id) and `samples.json` (class, part
/// names, camera of each). Returns the files written.
pub fn write_samples_with(
    dir: &Path,
    n: usize,
    cfg: SynthConfig,
) -> Result<Vec<SampleFiles>, DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let (seed, size) = (cfg.seed, cfg.image_size);
    let ds = SyntheticDataset::new(cfg, Split::Test)?;
    let classes = ds.class_names().len();
    // Sample indices grouped by class (one view per object, views rotating).
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    let views = ds.config().views;
    for o in 0..ds.objects() {
        let i = o * views + (o % views);
        let s = ds.get(i)?;
        by_class[usize::from(s.class_id)].push(i);
        if by_class.iter().all(|v| v.len() * classes >= n) {
            break;
        }
    }
    let mut out = Vec::new();
    let mut meta = Vec::new();
    let mut round = 0;
    while out.len() < n {
        let mut any = false;
        for list in &by_class {
            if out.len() == n {
                break;
            }
            let Some(&i) = list.get(round) else { continue };
            any = true;
            let s = ds.get(i)?;
            let class = ds.class_names()[usize::from(s.class_id)].clone();
            let stem = format!("{:02}_{class}", out.len());
            let image = dir.join(format!("{stem}.png"));
            image::save_buffer(
                &image,
                &s.image,
                s.width,
                s.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| DataError::Image {
                path: image.clone(),
                cause: e,
            })?;
            let points = dir.join(format!("{stem}.ply"));
            let data = PlyData {
                vertices: s.points.clone(),
                // no `label` property when the dataset has no part labels
                labels: (!s.point_labels.is_empty()).then(|| s.point_labels.clone()),
                ..PlyData::default()
            };
            ply::save_ply(&points, &data).map_err(|e| DataError::Ply {
                path: points.clone(),
                cause: e,
            })?;
            let mut camera = serde_json::json!({
                "azimuth_deg": s.camera.azimuth_deg,
                "elevation_deg": s.camera.elevation_deg,
                "in_plane_deg": s.camera.in_plane_deg,
                "distance": s.camera.distance,
                "fov_deg": s.camera.fov_deg,
            });
            // only a camera that does not look at the origin names its target, so the files
            // of synthetic samples (always the origin) stay as they were
            if s.camera.target != [0.0; 3] {
                camera["target"] = serde_json::json!(s.camera.target);
            }
            meta.push(serde_json::json!({
                "image": format!("{stem}.png"),
                "points": format!("{stem}.ply"),
                "class": class,
                "object": s.object,
                "view": s.view,
                "camera": camera,
            }));
            out.push(SampleFiles {
                image,
                points,
                class,
            });
        }
        if !any {
            break;
        }
        round += 1;
    }
    if out.len() < n {
        return Err(DataError::Config(format!(
            "the test split has only {} objects for {n} samples",
            out.len()
        )));
    }
    let index = serde_json::json!({
        "generator": "shapecast-train synthetic",
        "seed": seed,
        "split": "test",
        "size": size,
        "frame": "object",
        "bounds": super::BOUNDS,
        "part_names": ds.part_names(),
        "samples": meta,
    });
    let path = dir.join("samples.json");
    let text =
        serde_json::to_string_pretty(&index).map_err(|e| DataError::parse(&path, e.to_string()))?;
    std::fs::write(&path, text + "\n").map_err(|e| DataError::io(&path, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pictures_and_ground_truth() {
        let dir = std::env::temp_dir().join(format!("shapecast-samples-{}", std::process::id()));
        let files = write_samples(&dir, 7, 48, 5).unwrap();
        assert_eq!(files.len(), 7);
        let mut classes: Vec<&str> = files.iter().map(|f| f.class.as_str()).collect();
        classes.sort_unstable();
        classes.dedup();
        assert!(classes.len() >= 6, "{classes:?}");
        let img = image::open(&files[0].image).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (48, 48));
        let pts = ply::load(&files[0].points).unwrap();
        assert_eq!(pts.vertices.len(), 2048);
        assert!(pts.labels.is_some());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("samples.json")).unwrap())
                .unwrap();
        assert_eq!(json["samples"].as_array().unwrap().len(), 7);
        std::fs::remove_dir_all(&dir).ok();
    }
}
