//! Pix3D: real photographs aligned with IKEA models.
//!
//! ```text
//! <root>/pix3d.json     [ { "img": "img/chair/0001.png", "mask": "mask/chair/0001.png",
//!                           "model": "model/chair/IKEA_X/model.obj", "category": "chair",
//!                           "bbox": [x0, y0, x1, y1], "img_size": [w, h],
//!                           "rot_mat": [[..],[..],[..]], "trans_mat": [..], "focal_length": 35,
//!                           "cam_position": [x, y, z], "inplane_rotation": r,
//!                           "truncated": false, "occluded": false, ... }, ... ]
//! <root>/img/...  <root>/mask/...  <root>/model/.../*.obj
//! ```
//!
//! Each entry is one sample: the photo cropped to a square around `bbox` (10 % margin, outside
//! the photo filled with the background colour), optionally masked, resized. Ground truth
//! comes from the model (normalised into the object frame): surface points, voxels and SDF
//! samples, computed once per model and cached; there are no part labels (`point_labels` and
//! `part_names` are empty). Models are split 80/10/10 by hashing the model
//! path with the seed, so a model never appears in two splits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::mesh::Mesh;
use super::volume::{self, MeshSdf};
use super::{splitmix, Camera, DataError, Dataset, Sample, Split};

/// Options of the Pix3D loader.
#[derive(Debug, Clone, PartialEq)]
pub struct Pix3dOptions {
    /// Folder holding `pix3d.json`.
    pub root: PathBuf,
    /// Categories to keep (empty = all).
    pub categories: Vec<String>,
    /// Output picture side.
    pub image_size: u32,
    /// Points per sample.
    pub n_points: usize,
    /// Voxel resolution (0 = none).
    pub voxel_res: usize,
    /// SDF samples (0 = none).
    pub n_sdf: usize,
    /// Replace pixels outside the mask by the background colour.
    pub use_mask: bool,
    /// Background colour (crop padding and masked pixels).
    pub background: [u8; 3],
    /// Skip entries marked truncated or occluded.
    pub skip_occluded: bool,
    /// Seed of the split and of ground-truth sampling.
    pub seed: u64,
}

impl Default for Pix3dOptions {
    fn default() -> Self {
        Self {
            root: PathBuf::from("pix3d"),
            categories: Vec::new(),
            image_size: 64,
            n_points: 2048,
            voxel_res: 32,
            n_sdf: 2048,
            use_mask: true,
            background: [255, 255, 255],
            skip_occluded: true,
            seed: 1,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    img: PathBuf,
    mask: Option<PathBuf>,
    model: String,
    class_id: u16,
    bbox: [f32; 4],
    focal_mm: f32,
    cam_position: [f32; 3],
    inplane_rad: f32,
}

#[derive(Debug)]
struct ModelGt {
    points: Vec<[f32; 3]>,
    voxels: Vec<u8>,
    sdf: Vec<([f32; 3], f32)>,
    /// Normalisation scale (object units per model unit).
    scale: f32,
    centre: [f32; 3],
}

/// One split of Pix3D.
#[derive(Debug)]
pub struct Pix3d {
    opts: Pix3dOptions,
    entries: Vec<Entry>,
    /// Sample indices per model path.
    by_model: HashMap<String, Vec<usize>>,
    /// Object index per model path (order of first appearance in `pix3d.json`): all photos
    /// of one model are one object.
    model_index: HashMap<String, u32>,
    class_names: Vec<String>,
    part_names: Vec<String>,
    cache: Mutex<HashMap<String, Arc<ModelGt>>>,
}

fn f32s(v: &Value) -> Option<Vec<f32>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_f64().map(|f| f as f32))
        .collect()
}

impl Pix3d {
    /// Reads `pix3d.json` and keeps the entries of `split`.
    pub fn open(opts: Pix3dOptions, split: Split) -> Result<Self, DataError> {
        let jpath = opts.root.join("pix3d.json");
        let text = std::fs::read_to_string(&jpath).map_err(|e| DataError::io(&jpath, e))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| DataError::parse(&jpath, e.to_string()))?;
        let list = json
            .as_array()
            .ok_or_else(|| DataError::parse(&jpath, "top level is not a list"))?;
        // Class ids over all categories in the file (sorted), whatever the split.
        let mut class_names: Vec<String> = list
            .iter()
            .filter_map(|e| e.get("category")?.as_str().map(String::from))
            .filter(|c| opts.categories.is_empty() || opts.categories.contains(c))
            .collect();
        class_names.sort();
        class_names.dedup();
        let mut entries = Vec::new();
        let mut by_model: HashMap<String, Vec<usize>> = HashMap::new();
        let mut model_index: HashMap<String, u32> = HashMap::new();
        for (k, e) in list.iter().enumerate() {
            let bad = |what: &str| DataError::parse(&jpath, format!("entry {k}: {what}"));
            let Some(cat) = e.get("category").and_then(Value::as_str) else {
                return Err(bad("no category"));
            };
            let Some(class_id) = class_names.iter().position(|c| c == cat) else {
                continue;
            };
            if opts.skip_occluded
                && (e.get("truncated").and_then(Value::as_bool) == Some(true)
                    || e.get("occluded").and_then(Value::as_bool) == Some(true))
            {
                continue;
            }
            let model = e
                .get("model")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no model"))?
                .to_string();
            if Split::of_key(opts.seed, &model) != split {
                continue;
            }
            let img = e
                .get("img")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no img"))?;
            let bbox = e.get("bbox").and_then(f32s).ok_or_else(|| bad("no bbox"))?;
            if bbox.len() != 4 || !(bbox[2] > bbox[0] && bbox[3] > bbox[1]) {
                return Err(bad("bbox must be [x0, y0, x1, y1]"));
            }
            let cam = e
                .get("cam_position")
                .and_then(f32s)
                .filter(|v| v.len() == 3)
                .unwrap_or_else(|| vec![0.0, 0.0, 2.0]);
            let next = model_index.len() as u32;
            model_index.entry(model.clone()).or_insert(next);
            by_model
                .entry(model.clone())
                .or_default()
                .push(entries.len());
            entries.push(Entry {
                img: opts.root.join(img),
                mask: e
                    .get("mask")
                    .and_then(Value::as_str)
                    .map(|m| opts.root.join(m)),
                model,
                class_id: class_id as u16,
                bbox: [bbox[0], bbox[1], bbox[2], bbox[3]],
                focal_mm: e
                    .get("focal_length")
                    .and_then(Value::as_f64)
                    .unwrap_or(35.0) as f32,
                cam_position: [cam[0], cam[1], cam[2]],
                inplane_rad: e
                    .get("inplane_rotation")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0) as f32,
            });
        }
        Ok(Self {
            opts,
            entries,
            by_model,
            model_index,
            class_names,
            part_names: Vec::new(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Number of distinct models in this split.
    pub fn models(&self) -> usize {
        self.by_model.len()
    }

    fn model_gt(&self, model: &str) -> Result<Arc<ModelGt>, DataError> {
        if let Ok(c) = self.cache.lock() {
            if let Some(g) = c.get(model) {
                return Ok(g.clone());
            }
        }
        let mut h = self.opts.seed;
        for b in model.bytes() {
            h = splitmix(h ^ u64::from(b));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(h);
        let mut mesh = Mesh::load(self.opts.root.join(model))?;
        let (centre, scale) = mesh.normalize(0.02)?;
        let points: Vec<[f32; 3]> = mesh
            .sample_surface(self.opts.n_points, &mut rng)?
            .into_iter()
            .map(|s| s.0)
            .collect();
        let (voxels, sdf) = if self.opts.voxel_res > 0 || self.opts.n_sdf > 0 {
            let ms = MeshSdf::new(&mesh, 100_000, &mut rng)?;
            let f = |p: [f32; 3]| ms.sdf(p);
            let vox = if self.opts.voxel_res > 0 {
                volume::voxelize(f, self.opts.voxel_res)
            } else {
                Vec::new()
            };
            let seeds: Vec<[f32; 3]> = if points.len() >= 256 {
                points.clone()
            } else {
                mesh.sample_surface(1024, &mut rng)?
                    .into_iter()
                    .map(|s| s.0)
                    .collect()
            };
            let sdf = if self.opts.n_sdf > 0 {
                volume::sdf_samples(f, &seeds, self.opts.n_sdf, &mut rng)
            } else {
                Vec::new()
            };
            (vox, sdf)
        } else {
            (Vec::new(), Vec::new())
        };
        let gt = Arc::new(ModelGt {
            points,
            voxels,
            sdf,
            scale,
            centre,
        });
        if let Ok(mut c) = self.cache.lock() {
            c.insert(model.to_string(), gt.clone());
        }
        Ok(gt)
    }
}

/// Crops a square around `bbox` (10 % margin), masks, resizes; RGB8.
fn crop_picture(e: &Entry, opts: &Pix3dOptions) -> Result<(Vec<u8>, f32), DataError> {
    let img = image::open(&e.img)
        .map_err(|err| DataError::Image {
            path: e.img.clone(),
            cause: err,
        })?
        .to_rgb8();
    let mask = match (&e.mask, opts.use_mask) {
        (Some(m), true) => Some(
            image::open(m)
                .map_err(|err| DataError::Image {
                    path: m.clone(),
                    cause: err,
                })?
                .to_luma8(),
        ),
        _ => None,
    };
    let (w, h) = img.dimensions();
    let [x0, y0, x1, y1] = e.bbox;
    let side = ((x1 - x0).max(y1 - y0) * 1.1).max(1.0);
    let (cx, cy) = (0.5 * (x0 + x1), 0.5 * (y0 + y1));
    let (ox, oy) = (cx - 0.5 * side, cy - 0.5 * side);
    let s = side.ceil().min(8192.0) as u32;
    let bg = image::Rgb(opts.background);
    let mut crop = image::RgbImage::from_pixel(s, s, bg);
    for y in 0..s {
        let sy = (oy + y as f32).floor();
        if sy < 0.0 || sy >= h as f32 {
            continue;
        }
        for x in 0..s {
            let sx = (ox + x as f32).floor();
            if sx < 0.0 || sx >= w as f32 {
                continue;
            }
            let (sx, sy) = (sx as u32, sy as u32);
            let keep = match &mask {
                Some(m) if m.dimensions() == (w, h) => m.get_pixel(sx, sy)[0] >= 128,
                _ => true,
            };
            if keep {
                crop.put_pixel(x, y, *img.get_pixel(sx, sy));
            }
        }
    }
    let out = image::imageops::resize(
        &crop,
        opts.image_size,
        opts.image_size,
        image::imageops::FilterType::Triangle,
    );
    // Field of view of the crop: focal length in pixels of the full photo (32 mm sensor width).
    let f_px = e.focal_mm / 32.0 * w as f32;
    let fov = 2.0 * (0.5 * side / f_px.max(1e-3)).atan().to_degrees();
    Ok((out.into_raw(), fov))
}

impl Dataset for Pix3d {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, i: usize) -> Result<Sample, DataError> {
        let e = self.entries.get(i).ok_or(DataError::Index {
            index: i,
            len: self.entries.len(),
        })?;
        let gt = self.model_gt(&e.model)?;
        let (image, fov) = crop_picture(e, &self.opts)?;
        let c = e.cam_position;
        let c = [
            (c[0] - gt.centre[0]) * gt.scale,
            (c[1] - gt.centre[1]) * gt.scale,
            (c[2] - gt.centre[2]) * gt.scale,
        ];
        let d = super::norm(c).max(1e-6);
        let camera = Camera {
            azimuth_deg: c[0].atan2(c[2]).to_degrees(),
            elevation_deg: (c[1] / d).clamp(-1.0, 1.0).asin().to_degrees(),
            in_plane_deg: e.inplane_rad.to_degrees(),
            distance: d,
            fov_deg: fov,
            target: [0.0; 3],
        };
        let view = self.by_model[&e.model]
            .iter()
            .position(|&j| j == i)
            .unwrap_or(0);
        Ok(Sample {
            object: self.model_index.get(&e.model).copied().unwrap_or(0),
            class_id: e.class_id,
            view: view.min(usize::from(u16::MAX)) as u16,
            width: self.opts.image_size,
            height: self.opts.image_size,
            image,
            // no part labels: Pix3D models carry no part segmentation
            point_labels: Vec::new(),
            points: gt.points.clone(),
            voxel_res: if gt.voxels.is_empty() {
                0
            } else {
                self.opts.voxel_res as u32
            },
            voxels: gt.voxels.clone(),
            sdf: gt.sdf.clone(),
            camera,
        })
    }

    fn views_of(&self, i: usize) -> Vec<usize> {
        self.entries
            .get(i)
            .and_then(|e| self.by_model.get(&e.model).cloned())
            .unwrap_or_default()
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn part_names(&self) -> &[String] {
        &self.part_names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(root: &Path, n_models: usize) {
        crate::data::fixtures::write_pix3d(root, n_models).unwrap();
    }

    #[test]
    fn loads_pix3d_layout() {
        let root = std::env::temp_dir().join(format!("shapecast-pix3d-{}", std::process::id()));
        fixture(&root, 20);
        let opts = Pix3dOptions {
            root: root.clone(),
            image_size: 16,
            n_points: 200,
            voxel_res: 8,
            n_sdf: 100,
            ..Pix3dOptions::default()
        };
        let sets: Vec<Pix3d> = [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .map(|s| Pix3d::open(opts.clone(), s).unwrap())
            .collect();
        // 20 models x 2 photos, minus one occluded photo.
        assert_eq!(sets.iter().map(|d| d.len()).sum::<usize>(), 39);
        assert_eq!(sets.iter().map(|d| d.models()).sum::<usize>(), 20);
        let d = &sets[0];
        assert_eq!(d.class_names(), &["chair".to_string(), "table".to_string()]);
        let i = (0..d.len()).find(|&i| d.views_of(i).len() == 2).unwrap();
        let s = d.get(i).unwrap();
        assert_eq!(s.image.len(), 16 * 16 * 3);
        // Centre red, corner background white (masked blue and crop padding).
        let c = (8 * 16 + 8) * 3;
        assert_eq!(&s.image[c..c + 3], &[255, 0, 0]);
        assert!(
            s.image[0] == 255 && s.image[1] > 200,
            "{:?}",
            &s.image[0..3]
        );
        // The blue outside the mask is gone: every pixel is a blend of red and white (g == b).
        assert!(s.image.chunks(3).all(|p| p[1].abs_diff(p[2]) <= 1));
        assert_eq!(s.points.len(), 200);
        assert_eq!(s.voxels.len(), 512);
        assert_eq!(s.sdf.len(), 100);
        // Box 2 x 2 x 2 normalised to side 0.96: all points on its faces.
        for p in &s.points {
            assert!(p.iter().any(|v| (v.abs() - 0.48).abs() < 1e-4), "{p:?}");
        }
        assert!(s
            .sdf
            .iter()
            .all(|(p, d)| (*d < 0.0) == p.iter().all(|v| v.abs() < 0.48)));
        assert!((s.camera.in_plane_deg - 0.1f32.to_degrees()).abs() < 1e-4);
        assert!(s.camera.elevation_deg > 0.0);
        assert!(d.get(d.len()).is_err());
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn rejects_bad_json() {
        let root = std::env::temp_dir().join(format!("shapecast-pix3d-bad-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("pix3d.json"), "{\"not\": \"a list\"}").unwrap();
        let opts = Pix3dOptions {
            root: root.clone(),
            ..Pix3dOptions::default()
        };
        assert!(Pix3d::open(opts.clone(), Split::Train).is_err());
        std::fs::write(root.join("pix3d.json"), "[{\"category\": \"chair\", \"model\": \"m.obj\", \"img\": \"a.png\", \"bbox\": [5, 5, 1, 1]}]").unwrap();
        let r: Vec<_> = [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .map(|s| Pix3d::open(opts.clone(), s))
            .collect();
        assert!(r.iter().any(|x| x.is_err()));
        std::fs::remove_dir_all(&root).ok();
    }
}
