//! Turns a run's data configuration into datasets and in-memory samples: the one place that
//! opens a split of `synthetic`, `shapenet-r2n2` or `pix3d` data for every trainer
//! ([`open_dataset`]), checking that the dataset has the ground truth the trainer needs.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::data::pix3d::{Pix3d, Pix3dOptions};
use crate::data::shapenet::{PointsUnits, R2n2Options, ShapeNetR2n2};
use crate::data::{Dataset, Sample, Split, SynthConfig, SyntheticDataset};
use crate::TrainError;

/// `data.kind` of the procedural dataset (built in).
pub const SYNTHETIC: &str = "synthetic";
/// `data.kind` of ShapeNet renderings in the 3D-R2N2 layout ([`ShapeNetR2n2`]).
pub const SHAPENET_R2N2: &str = "shapenet-r2n2";
/// `data.kind` of Pix3D ([`Pix3d`]).
pub const PIX3D: &str = "pix3d";
/// Every `data.kind`.
pub const KINDS: &[&str] = &[SYNTHETIC, SHAPENET_R2N2, PIX3D];

pub(crate) fn default_kind() -> String {
    SYNTHETIC.into()
}

fn white() -> [u8; 3] {
    [255, 255, 255]
}

fn yes() -> bool {
    true
}

/// `data.shapenet`: where ShapeNet renderings in the 3D-R2N2 layout are (see
/// [`crate::data::shapenet`]). Picture size, point count and voxel resolution come from the
/// trainer's configuration; the split seed is `data.seed` (used without split files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeNetSource {
    /// The `ShapeNetRendering` folder (`<synset>/<model>/rendering/NN.png`).
    pub rendering_dir: PathBuf,
    /// Folder of `.npy` point clouds (`<synset>/<model>.npy`): the surface points of the
    /// point trainers (`train`, lmnet, mesh) and of `eval`. Models without one are skipped.
    #[serde(default)]
    pub points_dir: Option<PathBuf>,
    /// The `ShapeNetVox32` folder (`<synset>/<model>/model.binvox`): the voxel trainer's
    /// ground truth. Models without one are skipped when voxels are needed.
    #[serde(default)]
    pub voxels_dir: Option<PathBuf>,
    /// Folder with `train.txt`, `val.txt`, `test.txt` (lines `synset/model`); without it
    /// models are split 80/10/10 by hashing `synset/model` with `data.seed`.
    #[serde(default)]
    pub split_dir: Option<PathBuf>,
    /// Synsets to load, ids or names (`03001627` or `chair`); empty = all found.
    #[serde(default)]
    pub synsets: Vec<String>,
    /// Colour behind transparent pixels (RGB).
    #[serde(default = "white")]
    pub background: [u8; 3],
    /// Units of the point clouds: `model` (ShapeNet v1 model units, the default) or
    /// `normalized` (moved and scaled per model by another project: model units, which the
    /// cameras need, are recovered from each model's binvox header, so `voxels_dir` is
    /// required). See `docs/datasets.md`.
    #[serde(default)]
    pub points_units: PointsUnits,
}

/// `data.pix3d`: where Pix3D is (see [`crate::data::pix3d`]). Ground truth (surface points,
/// voxels, SDF samples) is computed from each IKEA model; the split hashes the model path
/// with `data.seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pix3dSource {
    /// The folder holding `pix3d.json`, `img/`, `mask/`, `model/`.
    pub root: PathBuf,
    /// Categories to keep (`chair`, `table`, ...); empty = all.
    #[serde(default)]
    pub categories: Vec<String>,
    /// Replace pixels outside the object's mask by the background colour.
    #[serde(default = "yes")]
    pub use_mask: bool,
    /// Skip photos marked truncated or occluded.
    #[serde(default = "yes")]
    pub skip_occluded: bool,
    /// Background colour (crop padding and masked pixels, RGB).
    #[serde(default = "white")]
    pub background: [u8; 3],
}

/// What one trainer asks of a dataset: where it is (`data.kind` and its section) and the
/// ground truth every sample must carry.
#[derive(Debug, Clone)]
pub struct DataSpec<'a> {
    /// `data.kind` (one of [`KINDS`]).
    pub kind: &'a str,
    /// `data.shapenet`, when the configuration has one.
    pub shapenet: Option<&'a ShapeNetSource>,
    /// `data.pix3d`, when the configuration has one.
    pub pix3d: Option<&'a Pix3dSource>,
    /// The synthetic generator's settings (used as they are for `synthetic`); for every kind
    /// its `image_size`, `n_points` (surface points), `voxel_res` (voxels at that resolution)
    /// and `n_sdf` (SDF samples) are what each sample must carry (0 = not needed), and its
    /// `seed` is the split seed.
    pub want: SynthConfig,
    /// Part classes the trainer learns (0 = no part labels needed).
    pub part_classes: usize,
}

impl DataSpec<'_> {
    /// `shapecast.dataset` text of this data (`synthetic` keeps the format it always had).
    pub fn describe(&self) -> String {
        let w = &self.want;
        match (self.kind, self.shapenet, self.pix3d) {
            (SHAPENET_R2N2, Some(s), _) => format!(
                "shapenet-r2n2 {}{} seed={}",
                s.rendering_dir.display(),
                if s.synsets.is_empty() {
                    String::new()
                } else {
                    format!(" synsets={}", s.synsets.join("+"))
                },
                w.seed
            ),
            (PIX3D, _, Some(p)) => format!(
                "pix3d {}{} seed={}",
                p.root.display(),
                if p.categories.is_empty() {
                    String::new()
                } else {
                    format!(" categories={}", p.categories.join("+"))
                },
                w.seed
            ),
            _ => format!(
                "{} seed={} objects_per_class={} views={}",
                self.kind, w.seed, w.objects_per_class, w.views
            ),
        }
    }

    /// Checks that `data.kind` is known, has its section, and that the dataset can provide
    /// what the trainer needs; the error names the dataset, the missing item and the key.
    pub fn check(&self) -> Result<(), TrainError> {
        let w = &self.want;
        let kind = self.kind;
        let err = |s: String| Err(TrainError::Config(s));
        let no_labels = || {
            err(format!(
                "dataset `{kind}` has no part labels, but the model has {} part classes \
                 (`model.classes`): set model.classes to 0 or train on `data.kind` = `synthetic`",
                self.part_classes
            ))
        };
        match kind {
            SYNTHETIC => Ok(()),
            SHAPENET_R2N2 => {
                let Some(s) = self.shapenet else {
                    return err(format!(
                        "data.kind `{kind}` needs a `data.shapenet` section \
                         (rendering_dir, points_dir, voxels_dir, split_dir, synsets)"
                    ));
                };
                // what no folder can add first, then the folders
                if w.n_sdf > 0 {
                    return err(format!(
                        "dataset `{kind}` has no SDF samples (signed distances), and this \
                         trainer needs {} per sample: use `data.kind` = `pix3d` or `synthetic`",
                        w.n_sdf
                    ));
                }
                if self.part_classes > 0 {
                    return no_labels();
                }
                if w.n_points > 0 && s.points_dir.is_none() {
                    return err(format!(
                        "dataset `{kind}` has no surface points without \
                         `data.shapenet.points_dir` (a folder of .npy point clouds), and this \
                         trainer needs {} per sample",
                        w.n_points
                    ));
                }
                if w.voxel_res > 0 && s.voxels_dir.is_none() {
                    return err(format!(
                        "dataset `{kind}` has no voxels without `data.shapenet.voxels_dir` \
                         (the ShapeNetVox32 folder), and this trainer needs {r}^3 occupancy",
                        r = w.voxel_res
                    ));
                }
                Ok(())
            }
            PIX3D => {
                if self.pix3d.is_none() {
                    return err(format!(
                        "data.kind `{kind}` needs a `data.pix3d` section (root, categories)"
                    ));
                }
                if self.part_classes > 0 {
                    return no_labels();
                }
                Ok(())
            }
            other => err(format!(
                "unknown data.kind `{other}` (one of {})",
                KINDS.join(", ")
            )),
        }
    }
}

/// Opens one split of the dataset `spec` names, after [`DataSpec::check`]. `synthetic` is
/// the generator with `spec.want` exactly; the others load with `want`'s picture size,
/// point count, voxel resolution and SDF count, and skip models lacking a needed file.
pub fn open_dataset(spec: &DataSpec<'_>, split: Split) -> Result<Box<dyn Dataset>, TrainError> {
    spec.check()?;
    let w = &spec.want;
    let ds: Box<dyn Dataset> = match (spec.kind, spec.shapenet, spec.pix3d) {
        (SHAPENET_R2N2, Some(s), _) => Box::new(ShapeNetR2n2::open(
            R2n2Options {
                rendering_dir: s.rendering_dir.clone(),
                points_dir: s.points_dir.clone().filter(|_| w.n_points > 0),
                // normalised point clouds need the binvox headers even without voxels
                voxels_dir: s.voxels_dir.clone().filter(|_| {
                    w.voxel_res > 0 || (w.n_points > 0 && s.points_units == PointsUnits::Normalized)
                }),
                split_dir: s.split_dir.clone(),
                synsets: s.synsets.clone(),
                image_size: w.image_size,
                n_points: w.n_points,
                voxel_res: w.voxel_res,
                background: s.background,
                seed: w.seed,
                require_points: true,
                require_voxels: true,
                points_units: s.points_units,
            },
            split,
        )?),
        (PIX3D, _, Some(p)) => Box::new(Pix3d::open(
            Pix3dOptions {
                root: p.root.clone(),
                categories: p.categories.clone(),
                image_size: w.image_size,
                n_points: w.n_points,
                voxel_res: w.voxel_res,
                n_sdf: w.n_sdf,
                use_mask: p.use_mask,
                background: p.background,
                skip_occluded: p.skip_occluded,
                seed: w.seed,
            },
            split,
        )?),
        _ => Box::new(SyntheticDataset::new(w.clone(), split)?),
    };
    Ok(ds)
}

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

/// The data a point-model configuration names; `labelled`: the trainer learns the model's
/// part classes (`train`), else only geometry is scored (`eval`, `quantize`, `export`).
pub fn point_spec(cfg: &TrainConfig, labelled: bool) -> DataSpec<'_> {
    DataSpec {
        kind: &cfg.data.kind,
        shapenet: cfg.data.shapenet.as_ref(),
        pix3d: cfg.data.pix3d.as_ref(),
        want: synth_config(cfg),
        part_classes: if labelled { cfg.model.classes } else { 0 },
    }
}

/// Opens one split of the configured dataset (geometry only: see [`point_spec`]).
pub fn open_split(cfg: &TrainConfig, split: Split) -> Result<Box<dyn Dataset>, TrainError> {
    open_dataset(&point_spec(cfg, false), split)
}

/// Loads up to `limit` samples (0 = all) of `split`, spread evenly over the split, on all
/// cores; returns them with the dataset's part names (empty when it has no part labels).
pub fn load_split(
    cfg: &TrainConfig,
    split: Split,
    limit: usize,
) -> Result<(Vec<Sample>, Vec<String>), TrainError> {
    load_spec(&point_spec(cfg, false), split, limit)
}

/// [`load_split`] for the training run itself: refuses a labelled model (`model.classes` >
/// 0) on a dataset without part labels.
pub fn load_training_split(
    cfg: &TrainConfig,
    split: Split,
    limit: usize,
) -> Result<(Vec<Sample>, Vec<String>), TrainError> {
    load_spec(&point_spec(cfg, true), split, limit)
}

/// Loads up to `limit` samples (0 = all) of `split` of the data `spec` names; returns them
/// with the dataset's part names.
pub fn load_spec(
    spec: &DataSpec<'_>,
    split: Split,
    limit: usize,
) -> Result<(Vec<Sample>, Vec<String>), TrainError> {
    let ds = open_dataset(spec, split)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::implicit::{ImplicitConfig, Kind};
    use crate::lmnet::LmnetConfig;
    use crate::mesh::MeshConfig;
    use crate::voxels::VoxelTrainConfig;

    /// The first `n` samples of `a` and `b` are equal, and both have `len` samples.
    fn same_samples(a: &dyn Dataset, b: &dyn Dataset, n: usize) {
        assert_eq!(a.len(), b.len());
        assert!(a.len() >= n);
        for i in (0..a.len()).step_by((a.len() / n).max(1)).take(n) {
            assert_eq!(a.get(i).unwrap(), b.get(i).unwrap(), "sample {i}");
        }
    }

    #[test]
    fn synthetic_data_is_what_it_was() {
        // every trainer's synthetic data is the generator with the settings it always built
        // (written out here field by field as the trainers did before `open_dataset`)
        let p = TrainConfig::preset("test").unwrap();
        let old = SynthConfig {
            seed: 7,
            objects_per_class: 12,
            views: 2,
            image_size: 32,
            n_points: 256,
            voxel_res: 0,
            n_sdf: 0,
            ..SynthConfig::default()
        };
        for split in [Split::Train, Split::Test] {
            let ds = open_split(&p, split).unwrap();
            let direct = SyntheticDataset::new(old.clone(), split).unwrap();
            same_samples(ds.as_ref(), &direct, 4);
            // part labels stay (the semantic models need them)
            assert_eq!(ds.get(0).unwrap().point_labels.len(), 256);
            assert!(!ds.part_names().is_empty());
        }
        let v = VoxelTrainConfig::preset("test").unwrap();
        let ds = crate::voxels::data::open_split(&v, Split::Val).unwrap();
        let direct = SyntheticDataset::new(
            SynthConfig {
                seed: 7,
                objects_per_class: 6,
                views: 3,
                image_size: v.model.image as u32,
                n_points: 0,
                voxel_res: v.model.resolution,
                n_sdf: 0,
                ..SynthConfig::default()
            },
            Split::Val,
        )
        .unwrap();
        same_samples(ds.as_ref(), &direct, 2);
        let l = LmnetConfig::preset("test").unwrap();
        let got = l.data.load(l.encoder.image, Split::Val, 3).unwrap();
        let direct = SyntheticDataset::new(
            SynthConfig {
                seed: 7,
                objects_per_class: 10,
                views: 2,
                image_size: l.encoder.image as u32,
                n_points: 128,
                voxel_res: 0,
                n_sdf: 0,
                ..SynthConfig::default()
            },
            Split::Val,
        )
        .unwrap();
        assert_eq!(got, load_samples(&direct, Split::Val, 3).unwrap());
        let c = ImplicitConfig::preset("test", Kind::Sdf).unwrap();
        let set = crate::implicit::load_set(&c, Split::Val, 2).unwrap();
        let direct = SyntheticDataset::new(
            SynthConfig {
                seed: 7,
                objects_per_class: 6,
                views: 2,
                image_size: c.encoder.image as u32,
                n_points: 512,
                voxel_res: 0,
                n_sdf: 1024,
                ..SynthConfig::default()
            },
            Split::Val,
        )
        .unwrap();
        let want = load_samples(&direct, Split::Val, 2).unwrap();
        assert_eq!(set.views.len(), want.len());
        for (v, s) in set.views.iter().zip(&want) {
            assert_eq!(v.image, s.image);
            assert_eq!(set.objects[v.obj].sdf, s.sdf);
        }
        // the dataset note of synthetic runs keeps its format
        assert_eq!(
            point_spec(&p, false).describe(),
            "synthetic seed=7 objects_per_class=12 views=2"
        );
        assert_eq!(
            l.data.describe(),
            "synthetic seed=7 objects_per_class=10 views=2"
        );
    }

    #[test]
    fn shipped_configs_parse_as_synthetic_and_keep_their_text() {
        fn check<T>(text: &str, data: impl Fn(&T) -> serde_json::Value)
        where
            T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
        {
            let c: T = serde_json::from_str(text).unwrap();
            let d = data(&c);
            assert_eq!(d["kind"], "synthetic", "{d}");
            assert!(
                d.get("shapenet").is_none() && d.get("pix3d").is_none(),
                "{d}"
            );
            // a saved configuration reads back the same
            let back: T = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back, c);
            // and the data section names the same values as the file
            let file: serde_json::Value = serde_json::from_str(text).unwrap();
            for (k, v) in file["data"].as_object().unwrap() {
                assert_eq!(&d[k], v, "data.{k}");
            }
        }
        for text in [
            include_str!("../../../models/default.config.json"),
            include_str!("../../../models/semantic.base.config.json"),
            include_str!("../../../models/semantic.config.json"),
        ] {
            check::<TrainConfig>(text, |c| serde_json::to_value(&c.data).unwrap());
            let c: TrainConfig = serde_json::from_str(text).unwrap();
            c.validate().unwrap();
        }
        check::<VoxelTrainConfig>(include_str!("../../../models/voxels.config.json"), |c| {
            serde_json::to_value(&c.data).unwrap()
        });
        check::<LmnetConfig>(include_str!("../../../models/lmnet.config.json"), |c| {
            serde_json::to_value(&c.data).unwrap()
        });
        check::<MeshConfig>(include_str!("../../../models/mesh.config.json"), |c| {
            serde_json::to_value(&c.data).unwrap()
        });
        check::<ImplicitConfig>(include_str!("../../../models/implicit.config.json"), |c| {
            serde_json::to_value(&c.data).unwrap()
        });
        // presets save no dataset sections
        let text = serde_json::to_string(&TrainConfig::preset("cpu-small").unwrap()).unwrap();
        assert!(
            !text.contains("shapenet") && !text.contains("pix3d"),
            "{text}"
        );
    }

    #[test]
    fn kinds_and_sections_are_checked() {
        let mut c = TrainConfig::preset("test").unwrap();
        c.data.kind = "shapenet".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("unknown data.kind `shapenet`"), "{e}");
        c.data.kind = SHAPENET_R2N2.into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("data.shapenet"), "{e}");
        c.data.kind = PIX3D.into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("data.pix3d"), "{e}");
        // external kinds need no synthetic counts
        c.data.pix3d = Some(Pix3dSource {
            root: "p".into(),
            categories: vec![],
            use_mask: true,
            skip_occluded: true,
            background: [255; 3],
        });
        c.data.objects_per_class = 0;
        c.data.views = 0;
        c.validate().unwrap();
        c.model.classes = 4;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("`pix3d` has no part labels") && e.contains("model.classes"),
            "{e}"
        );
        // a section with defaults only needs its folder
        let s: ShapeNetSource =
            serde_json::from_str(r#"{"rendering_dir": "ShapeNetRendering"}"#).unwrap();
        assert_eq!(s.background, [255; 3]);
        assert!(s.points_dir.is_none() && s.synsets.is_empty());
        let p: Pix3dSource = serde_json::from_str(r#"{"root": "pix3d"}"#).unwrap();
        assert!(p.use_mask && p.skip_occluded);
    }
}
