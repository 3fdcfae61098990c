//! ShapeNet in the 3D-R2N2 layout.
//!
//! ```text
//! <rendering_dir>/<synset>/<model>/rendering/00.png .. 23.png   (137x137 RGBA)
//! <rendering_dir>/<synset>/<model>/rendering/renderings.txt      (file names, one per line)
//! <rendering_dir>/<synset>/<model>/rendering/rendering_metadata.txt
//!        (one line per picture: azimuth elevation in-plane distance-ratio fov)
//! <points_dir>/<synset>/<model>.npy  or  <points_dir>/<synset>/<model>/{points,pointcloud,model}.npy
//!        (float32/float64 [N, 3+], optional)
//! <voxels_dir>/<synset>/<model>/model.binvox   (ShapeNetVox32, optional)
//! <split_dir>/{train,val,test}.txt   (lines `synset/model` or `synset model`, optional;
//!        without them models are split 80/10/10 by hashing `synset/model` with the seed)
//! ```
//!
//! Pictures are composited onto a background colour and resized to the configured size.
//!
//! **One object frame per model** ([`ModelFrame`]): the point cloud is taken to be in
//! ShapeNet's model units (the `.obj` coordinates the renderer drew; for clouds another
//! project normalised, [`PointsUnits::Normalized`] recovers them), the binvox grid is
//! placed in model units by its header's `translate` and `scale`, and both go to the object
//! frame fitted to the model's bounding box (centre to the origin, longest side 0.96): the
//! cloud's box when there is a cloud, else the box of the grid's occupied cells (within one
//! grid cell of the cloud's). Points are then resampled to the configured count, voxels to
//! the configured resolution ([`Binvox::in_frame`]), and the renderer's camera is moved into
//! the same frame ([`Camera::in_frame`]), so projecting the points lands on the picture.
//! There are no SDF samples and no part labels (`point_labels` and `part_names` are empty).
//!
//! **Ground truth is read once per model**, not once per view: a bounded cache keeps the last
//! [`GT_CACHE_MODELS`] models' finished ground truth (resampled points and voxels, exactly
//! what every view of the model carries, and the model's frame for its cameras), so an epoch over the 24 views of each model reads
//! its `.npy` and `.binvox` once. Memory: at most `capacity x (12 x n_points + voxel_res^3)`
//! bytes (256 models at 2048 points and 32^3 voxels: 14.6 MB), plus the models threads are
//! loading at the moment; see [`ShapeNetR2n2::with_gt_cache`].
//!
//! **Cameras** are converted from the 3D-R2N2 renderer's convention into [`Camera`]'s (see
//! [`r2n2_camera`] and `docs/datasets.md`).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::npy;
use super::{splitmix, Camera, DataError, Dataset, Sample, Split};

/// The 13 3D-R2N2 categories.
pub const R2N2_SYNSETS: [(&str, &str); 13] = [
    ("02691156", "airplane"),
    ("02828884", "bench"),
    ("02933112", "cabinet"),
    ("02958343", "car"),
    ("03001627", "chair"),
    ("03211117", "display"),
    ("03636649", "lamp"),
    ("03691459", "speaker"),
    ("04090263", "rifle"),
    ("04256520", "sofa"),
    ("04379243", "table"),
    ("04401088", "telephone"),
    ("04530566", "watercraft"),
];

/// What units a model's `.npy` point cloud is in ([`R2n2Options::points_units`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointsUnits {
    /// ShapeNet model units and axes: sampled from the ShapeNetCore v1 `.obj` the renderer
    /// drew (the default).
    #[default]
    Model,
    /// Moved and scaled per model by another project (any shift, any uniform scale, the
    /// model's axes kept). The object-frame points are the same either way; the model units
    /// the cameras need are recovered from the model's binvox header (`translate` = the
    /// model's bounding-box minimum, `scale` = its longest side), so `voxels_dir` must be
    /// set and models without a `model.binvox` are skipped.
    Normalized,
}

/// Options of the ShapeNet loader.
#[derive(Debug, Clone, PartialEq)]
pub struct R2n2Options {
    /// The `ShapeNetRendering` folder.
    pub rendering_dir: PathBuf,
    /// Folder of `.npy` point clouds (optional).
    pub points_dir: Option<PathBuf>,
    /// The `ShapeNetVox32` folder (optional).
    pub voxels_dir: Option<PathBuf>,
    /// Folder with `train.txt`, `val.txt`, `test.txt` (optional).
    pub split_dir: Option<PathBuf>,
    /// Synsets to load (ids or names; empty = all found).
    pub synsets: Vec<String>,
    /// Output picture side.
    pub image_size: u32,
    /// Points per sample.
    pub n_points: usize,
    /// Voxel resolution of the output (binvox grids are resampled).
    pub voxel_res: usize,
    /// Colour behind transparent pixels.
    pub background: [u8; 3],
    /// Seed of hashed splits and point resampling.
    pub seed: u64,
    /// Skip models without a point cloud (when `points_dir` is set).
    pub require_points: bool,
    /// Skip models without a voxel grid (when `voxels_dir` is set).
    pub require_voxels: bool,
    /// Units of the point clouds (see [`PointsUnits`]).
    pub points_units: PointsUnits,
}

impl Default for R2n2Options {
    fn default() -> Self {
        Self {
            rendering_dir: PathBuf::from("ShapeNetRendering"),
            points_dir: None,
            voxels_dir: None,
            split_dir: None,
            synsets: Vec::new(),
            image_size: 64,
            n_points: 2048,
            voxel_res: 32,
            background: [255, 255, 255],
            seed: 1,
            require_points: true,
            require_voxels: false,
            points_units: PointsUnits::Model,
        }
    }
}

#[derive(Debug, Clone)]
struct Model {
    class_id: u16,
    synset: String,
    id: String,
    views: Vec<(PathBuf, Camera)>,
    points: Option<PathBuf>,
    voxels: Option<PathBuf>,
}

/// Models whose ground truth [`ShapeNetR2n2`] keeps in memory by default.
pub const GT_CACHE_MODELS: usize = 256;

/// One model's ground truth as its samples carry it (normalised and resampled points,
/// resampled voxels): the same for every view of the model.
#[derive(Debug, Default)]
struct ModelGt {
    points: Vec<[f32; 3]>,
    voxels: Vec<u8>,
    /// Model units to object frame (`None` without ground truth to fit it to: the cameras
    /// then stay in model units).
    frame: Option<ModelFrame>,
}

/// A slot of the ground-truth cache: filled by the first thread that needs the model, under
/// the slot's own lock, so threads wanting the same model wait for that one read.
type GtSlot = Arc<Mutex<Option<Arc<ModelGt>>>>;

/// Least-recently-used cache of [`ModelGt`] by model index, at most `capacity` slots.
#[derive(Debug, Default)]
struct GtCache {
    capacity: usize,
    slots: HashMap<usize, GtSlot>,
    /// Model indices, least recently used first.
    order: VecDeque<usize>,
}

impl GtCache {
    /// The slot of model `m` (new and empty when it was not cached), marked most recently
    /// used; evicts the least recently used beyond the capacity.
    fn slot(&mut self, m: usize) -> GtSlot {
        if let Some(pos) = self.order.iter().position(|&k| k == m) {
            self.order.remove(pos);
        }
        self.order.push_back(m);
        let slot = self.slots.entry(m).or_default().clone();
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.slots.remove(&old);
            }
        }
        slot
    }
}

/// Locks `m`, also after another thread panicked holding it (the data stays usable: a slot
/// is either filled or empty).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One split of ShapeNet renderings.
#[derive(Debug)]
pub struct ShapeNetR2n2 {
    opts: R2n2Options,
    models: Vec<Model>,
    /// First sample index of each model (prefix sums of view counts), plus the total.
    starts: Vec<usize>,
    class_names: Vec<String>,
    part_names: Vec<String>,
    cache: Mutex<GtCache>,
    /// Ground-truth files read so far (`.npy` and `.binvox`).
    gt_reads: AtomicUsize,
}

/// Name of a synset (the id itself when it is not an R2N2 category).
pub fn synset_name(id: &str) -> String {
    R2N2_SYNSETS
        .iter()
        .find(|s| s.0 == id)
        .map_or_else(|| id.to_string(), |s| s.1.to_string())
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

fn read_split_file(path: &Path) -> Result<std::collections::HashSet<String>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    Ok(text
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join("/"))
        .collect())
}

/// The 3D-R2N2 renderer's maximum camera distance (`cfg.RENDERING.MAX_CAMERA_DIST`): a
/// metadata line's distance ratio times this is the camera's distance from the origin.
pub const R2N2_MAX_CAMERA_DIST: f32 = 1.75;

/// Field of view of the 3D-R2N2 renderings, degrees: Blender's default camera (35 mm lens on
/// a 32 mm sensor), `2 atan(16 / 35)` = 49.13 degrees. The renderer writes `25` in the
/// metadata's last column but never applies it (its `setViewpoint` ignores `fov`).
pub fn r2n2_fov_deg() -> f32 {
    2.0 * (16.0f32 / 35.0).atan().to_degrees()
}

/// A [`Camera`] from one `rendering_metadata.txt` line of the 3D-R2N2 renderer
/// (`lib/blender_renderer.py`: the camera sits at `(distance_ratio * 1.75, 0, 0)` in Blender
/// and is rotated by the Euler angles `(-in_plane, -elevation, -azimuth)` about the origin;
/// the `.obj` is imported with Blender's default axes, `-Z` forward and `Y` up).
///
/// In ShapeNet's model frame (y up) that puts the camera at
/// `d * (cos(el) cos(az), sin(el), cos(el) sin(az))`: azimuth 0 on `+x`, azimuth 90 on `+z`,
/// positive elevation above. [`Camera`] measures its azimuth from `+z` towards `+x`, so its
/// azimuth is `90 - az`; elevation and in-plane rotation carry over, the distance is
/// `ratio * 1.75` and the field of view [`r2n2_fov_deg`].
///
/// The camera is in **model units** (ShapeNet's `.obj` coordinates, which the renderer
/// used): it looks at the model-unit origin from `ratio * 1.75` away. The loader moves it
/// into each model's object frame with [`Camera::in_frame`] and the model's [`ModelFrame`]
/// (target `(0 - centre) * scale`, distance `ratio * 1.75 * scale`), so that projecting the
/// normalised points lands where the renderer drew them.
pub fn r2n2_camera(azimuth_deg: f32, elevation_deg: f32, in_plane_deg: f32, ratio: f32) -> Camera {
    Camera {
        azimuth_deg: (90.0 - azimuth_deg).rem_euclid(360.0),
        elevation_deg,
        in_plane_deg,
        distance: ratio * R2N2_MAX_CAMERA_DIST,
        fov_deg: r2n2_fov_deg(),
        target: [0.0; 3],
    }
}

/// Parses `rendering_metadata.txt` lines `azimuth elevation in-plane distance-ratio fov` into
/// cameras of our convention ([`r2n2_camera`]; the fov column is read but not used).
pub fn parse_metadata(text: &str, path: &Path) -> Result<Vec<Camera>, DataError> {
    let mut out = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim().trim_start_matches('[').trim_end_matches(']');
        if line.is_empty() {
            continue;
        }
        let v: Vec<f32> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<f32>())
            .collect::<Result<_, _>>()
            .map_err(|_| DataError::parse(path, format!("line {}: bad number", ln + 1)))?;
        if v.len() < 5 {
            return Err(DataError::parse(
                path,
                format!("line {}: {} values, need 5", ln + 1, v.len()),
            ));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(DataError::parse(
                path,
                format!("line {}: a value is not finite", ln + 1),
            ));
        }
        out.push(r2n2_camera(v[0], v[1], v[2], v[3]));
    }
    Ok(out)
}

impl ShapeNetR2n2 {
    /// Scans the folders and keeps the models of `split`.
    pub fn open(opts: R2n2Options, split: Split) -> Result<Self, DataError> {
        let root = &opts.rendering_dir;
        let normalized = opts.points_units == PointsUnits::Normalized && opts.points_dir.is_some();
        if normalized && opts.voxels_dir.is_none() {
            return Err(DataError::Config(
                "points_units = normalized recovers each model's units from its binvox \
                 header: set voxels_dir (the ShapeNetVox32 folder)"
                    .into(),
            ));
        }
        let split_set = match &opts.split_dir {
            Some(d) => Some(read_split_file(&d.join(format!("{}.txt", split.name())))?),
            None => None,
        };
        let mut class_names = Vec::new();
        let mut models = Vec::new();
        for sdir in read_dir_sorted(root)? {
            let synset = sdir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let name = synset_name(&synset);
            if !opts.synsets.is_empty() && !opts.synsets.iter().any(|s| *s == synset || *s == name)
            {
                continue;
            }
            let class_id = class_names.len() as u16;
            for mdir in read_dir_sorted(&sdir)? {
                let id = mdir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string();
                let key = format!("{synset}/{id}");
                let in_split = match &split_set {
                    Some(set) => set.contains(&key) || set.contains(&id),
                    None => Split::of_key(opts.seed, &key) == split,
                };
                if !in_split {
                    continue;
                }
                let rdir = mdir.join("rendering");
                let meta_path = rdir.join("rendering_metadata.txt");
                let list_path = rdir.join("renderings.txt");
                let Ok(meta) = std::fs::read_to_string(&meta_path) else {
                    continue;
                };
                let cams = parse_metadata(&meta, &meta_path)?;
                let names: Vec<String> = match std::fs::read_to_string(&list_path) {
                    Ok(t) => t
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                    Err(_) => (0..cams.len()).map(|i| format!("{i:02}.png")).collect(),
                };
                let views: Vec<(PathBuf, Camera)> = names
                    .iter()
                    .zip(&cams)
                    .map(|(n, c)| (rdir.join(n), *c))
                    .filter(|(p, _)| p.is_file())
                    .collect();
                if views.is_empty() {
                    continue;
                }
                let points = opts.points_dir.as_ref().and_then(|d| {
                    [
                        d.join(&synset).join(format!("{id}.npy")),
                        d.join(&synset).join(&id).join("points.npy"),
                        d.join(&synset).join(&id).join("pointcloud.npy"),
                        d.join(&synset).join(&id).join("model.npy"),
                    ]
                    .into_iter()
                    .find(|p| p.is_file())
                });
                if opts.points_dir.is_some() && opts.require_points && points.is_none() {
                    continue;
                }
                let voxels = opts
                    .voxels_dir
                    .as_ref()
                    .map(|d| d.join(&synset).join(&id).join("model.binvox"))
                    .filter(|p| p.is_file());
                if opts.voxels_dir.is_some() && opts.require_voxels && voxels.is_none() {
                    continue;
                }
                if normalized && voxels.is_none() {
                    continue;
                }
                models.push(Model {
                    class_id,
                    synset: synset.clone(),
                    id,
                    views,
                    points,
                    voxels,
                });
            }
            // Every synset folder gets a class id whether or not this split has models of
            // it, so ids agree across splits.
            class_names.push(name);
        }
        let mut starts = vec![0usize];
        for m in &models {
            starts.push(starts[starts.len() - 1] + m.views.len());
        }
        Ok(Self {
            opts,
            models,
            starts,
            class_names,
            part_names: Vec::new(),
            cache: Mutex::new(GtCache {
                capacity: GT_CACHE_MODELS,
                ..GtCache::default()
            }),
            gt_reads: AtomicUsize::new(0),
        })
    }

    /// Keeps the ground truth of at most `models` models in memory (0: none, every sample
    /// reads its model's files); the default is [`GT_CACHE_MODELS`]. Samples are the same
    /// with any capacity.
    pub fn with_gt_cache(self, models: usize) -> Self {
        *lock(&self.cache) = GtCache {
            capacity: models,
            ..GtCache::default()
        };
        self
    }

    /// Ground-truth files (`.npy` point clouds, `.binvox` grids) read so far.
    pub fn gt_reads(&self) -> usize {
        self.gt_reads.load(Ordering::Relaxed)
    }

    /// Model `m`'s ground truth: from the cache, or read (once, whichever thread asks first).
    fn ground_truth(&self, m: usize) -> Result<Arc<ModelGt>, DataError> {
        let slot = {
            let mut cache = lock(&self.cache);
            if cache.capacity == 0 {
                drop(cache);
                return self.read_ground_truth(m).map(Arc::new);
            }
            cache.slot(m)
        };
        // the cache is unlocked: other models load meanwhile; this model's other views wait
        let mut filled = lock(&slot);
        if let Some(gt) = filled.as_ref() {
            return Ok(Arc::clone(gt));
        }
        // an error leaves the slot empty: the next sample of the model tries again
        let gt = Arc::new(self.read_ground_truth(m)?);
        *filled = Some(Arc::clone(&gt));
        Ok(gt)
    }

    /// Reads and prepares model `m`'s point cloud and voxel grid, both in the model's
    /// [`ModelFrame`] (fitted to the point cloud when there is one, else to the grid).
    fn read_ground_truth(&self, m: usize) -> Result<ModelGt, DataError> {
        let model = &self.models[m];
        let mut cloud = None;
        if let Some(p) = &model.points {
            self.gt_reads.fetch_add(1, Ordering::Relaxed);
            let arr = npy::read_npy(p)?;
            cloud = Some(arr.points().ok_or_else(|| {
                DataError::parse(p, format!("shape {:?}, need [N, 3]", arr.shape))
            })?);
        }
        let normalized = self.opts.points_units == PointsUnits::Normalized && cloud.is_some();
        let grid = match &model.voxels {
            Some(p) if self.opts.voxel_res > 0 || normalized => {
                self.gt_reads.fetch_add(1, Ordering::Relaxed);
                Some(Binvox::read(p)?)
            }
            _ => None,
        };
        // the cloud's own frame, and the model-unit frame of the voxels and the camera: the
        // same for model-unit clouds; for normalised ones the box the binvox header gives
        let cloud_box = cloud.as_deref().and_then(bounds);
        let cloud_frame = cloud_box.and_then(|(lo, hi)| ModelFrame::of_box(lo, hi));
        let frame = match (&grid, cloud_box) {
            (Some(g), Some((lo, hi))) if normalized => g.model_box_of(lo, hi),
            _ => cloud_frame.or_else(|| {
                let (lo, hi) = grid.as_ref()?.occupied_box()?;
                ModelFrame::of_box(lo, hi)
            }),
        };
        let mut points = Vec::new();
        if let Some(mut pts) = cloud {
            if let Some(f) = &cloud_frame {
                pts.iter_mut().for_each(|p| *p = f.apply(*p));
            }
            let mut rng = ChaCha8Rng::seed_from_u64(splitmix(self.opts.seed ^ (m as u64) << 8));
            points = resample(&pts, self.opts.n_points, &mut rng);
        }
        let voxels = match (&grid, &frame) {
            _ if self.opts.voxel_res == 0 => Vec::new(),
            (Some(g), Some(f)) => g.in_frame(f, self.opts.voxel_res),
            // an empty grid and no points to place it by: empty at the output resolution
            (Some(_), None) => vec![0; self.opts.voxel_res.pow(3)],
            (None, _) => Vec::new(),
        };
        Ok(ModelGt {
            points,
            voxels,
            frame,
        })
    }

    /// Number of models in this split.
    pub fn models(&self) -> usize {
        self.models.len()
    }

    /// `synset/model` of the model of sample `i`.
    pub fn model_key(&self, i: usize) -> Option<String> {
        let m = self.locate(i)?.0;
        Some(format!("{}/{}", self.models[m].synset, self.models[m].id))
    }

    fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len() {
            return None;
        }
        let m = self.starts.partition_point(|&s| s <= i) - 1;
        Some((m, i - self.starts[m]))
    }
}

/// Loads a PNG/JPEG, composites alpha onto `bg`, resizes to `size x size`; RGB8.
pub(crate) fn load_picture(path: &Path, bg: [u8; 3], size: u32) -> Result<Vec<u8>, DataError> {
    let img = image::open(path)
        .map_err(|e| DataError::Image {
            path: path.into(),
            cause: e,
        })?
        .to_rgba8();
    let mut rgb = image::RgbImage::new(img.width(), img.height());
    for (d, s) in rgb.pixels_mut().zip(img.pixels()) {
        let a = u16::from(s[3]);
        for k in 0..3 {
            d[k] = ((u16::from(s[k]) * a + u16::from(bg[k]) * (255 - a) + 127) / 255) as u8;
        }
    }
    let out = if rgb.dimensions() == (size, size) {
        rgb
    } else {
        image::imageops::resize(&rgb, size, size, image::imageops::FilterType::Triangle)
    };
    Ok(out.into_raw())
}

/// Where a model's ground truth goes: the model-unit point `p` is at `(p - centre) * scale`
/// in the object frame. The loader fits it to the model's bounding box (centre to the
/// origin, longest side 0.96), from the point cloud when the model has one, else from the
/// occupied cells of its voxel grid; points, voxels and the camera all go through it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelFrame {
    /// Model-unit point that becomes the origin (the bounding box centre).
    pub centre: [f32; 3],
    /// Object-frame units per model unit (`0.96 / longest side`).
    pub scale: f32,
}

/// Bounding box of `points` (`None` when there are none).
fn bounds(points: &[[f32; 3]]) -> Option<([f32; 3], [f32; 3])> {
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for p in points {
        for k in 0..3 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    (!points.is_empty()).then_some((lo, hi))
}

impl ModelFrame {
    /// The frame of the box `lo..hi` (model units); `None` when the box is empty, flat in
    /// every direction or not finite.
    pub fn of_box(lo: [f32; 3], hi: [f32; 3]) -> Option<Self> {
        let ext = (0..3).map(|k| hi[k] - lo[k]).fold(0.0f32, f32::max);
        if !(ext > 0.0 && ext.is_finite()) || lo.iter().any(|v| !v.is_finite()) {
            return None;
        }
        Some(Self {
            centre: [0, 1, 2].map(|k| 0.5 * (lo[k] + hi[k])),
            scale: 0.96 / ext,
        })
    }

    /// The frame of the bounding box of `points` (model units).
    pub fn of_points(points: &[[f32; 3]]) -> Option<Self> {
        let (lo, hi) = bounds(points)?;
        Self::of_box(lo, hi)
    }

    /// A model-unit point in the object frame.
    pub fn apply(&self, p: [f32; 3]) -> [f32; 3] {
        [0, 1, 2].map(|k| (p[k] - self.centre[k]) * self.scale)
    }
}

/// Exactly `n` of `points`: a random subset, or all plus random repeats.
pub(crate) fn resample<R: Rng>(points: &[[f32; 3]], n: usize, rng: &mut R) -> Vec<[f32; 3]> {
    if points.is_empty() || n == 0 {
        return Vec::new();
    }
    if points.len() >= n {
        let mut idx: Vec<usize> = (0..points.len()).collect();
        for i in 0..n {
            let j = rng.gen_range(i..idx.len());
            idx.swap(i, j);
        }
        idx[..n].iter().map(|&i| points[i]).collect()
    } else {
        let mut v = points.to_vec();
        while v.len() < n {
            v.push(points[rng.gen_range(0..points.len())]);
        }
        v
    }
}

/// A `.binvox` voxel grid (ShapeNetVox32) with its header's mapping to model units: the
/// centre of cell `(i, j, k)` is the model-unit point `translate + scale * ((i, j, k) + 0.5)
/// / dim` (binvox's specification; binvox writes the model's bounding-box minimum as
/// `translate` and its longest side as `scale`, so the model fills the grid along its longest
/// axis and sits at the grid's low corner along the others).
#[derive(Debug, Clone, PartialEq)]
pub struct Binvox {
    /// Cells per side (binvox grids are cubes).
    pub dim: usize,
    /// Model-unit corner of the grid (`translate`; 0 when the header has none).
    pub translate: [f32; 3],
    /// Model-unit side of the grid (`scale`; 1 when the header has none).
    pub scale: f32,
    /// Occupancy 0/1 in our layout, index `x*dim*dim + y*dim + z`.
    pub occupancy: Vec<u8>,
}

impl Binvox {
    /// Reads a `.binvox` file.
    pub fn read(path: &Path) -> Result<Self, DataError> {
        let b = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&b).map_err(|m| DataError::parse(path, m))
    }

    /// Parses `.binvox` bytes.
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        let mut pos = 0;
        let mut line = || -> Result<String, String> {
            let end = b[pos..]
                .iter()
                .position(|&c| c == b'\n')
                .ok_or("truncated header")?;
            let s = String::from_utf8_lossy(&b[pos..pos + end])
                .trim()
                .to_string();
            pos += end + 1;
            Ok(s)
        };
        if !line()?.starts_with("#binvox") {
            return Err("not a binvox file".into());
        }
        let floats = |key: &str, rest: &str, n: usize| -> Result<Vec<f32>, String> {
            let v: Vec<f32> = rest
                .split_whitespace()
                .map(|s| s.parse::<f32>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("bad {key} `{rest}`"))?;
            if v.len() != n || v.iter().any(|x| !x.is_finite()) {
                return Err(format!("bad {key} `{rest}`"));
            }
            Ok(v)
        };
        let mut dims = None;
        let mut translate = [0.0f32; 3];
        let mut scale = 1.0f32;
        loop {
            let l = line()?;
            if l == "data" {
                break;
            }
            if let Some(rest) = l.strip_prefix("dim") {
                let d: Vec<usize> = rest
                    .split_whitespace()
                    .map(|s| s.parse().map_err(|_| format!("bad dim `{rest}`")))
                    .collect::<Result<_, _>>()?;
                if d.len() != 3 || d.iter().any(|&x| x == 0 || x > 1024) {
                    return Err(format!("bad dim `{rest}`"));
                }
                if d[0] != d[1] || d[0] != d[2] {
                    return Err(format!("dim `{rest}`: binvox grids are cubes"));
                }
                dims = Some(d[0]);
            } else if let Some(rest) = l.strip_prefix("translate") {
                let v = floats("translate", rest, 3)?;
                translate = [v[0], v[1], v[2]];
            } else if let Some(rest) = l.strip_prefix("scale") {
                scale = floats("scale", rest, 1)?[0];
                if scale <= 0.0 {
                    return Err(format!("bad scale `{rest}`"));
                }
            }
        }
        let d = dims.ok_or("header lacks dim")?;
        let total = d * d * d;
        let mut raw = Vec::with_capacity(total);
        for pair in b[pos..].chunks_exact(2) {
            let (v, n) = (pair[0], usize::from(pair[1]));
            if raw.len() + n > total {
                return Err("run-length data longer than the grid".into());
            }
            raw.extend(std::iter::repeat_n(u8::from(v != 0), n));
        }
        if raw.len() != total {
            return Err(format!(
                "run-length data covers {} of {total} voxels",
                raw.len()
            ));
        }
        // binvox order: x slowest, then z, then y fastest: index = x*d*d + z*d + y.
        let mut occupancy = vec![0u8; total];
        for x in 0..d {
            for y in 0..d {
                for z in 0..d {
                    occupancy[(x * d + y) * d + z] = raw[(x * d + z) * d + y];
                }
            }
        }
        Ok(Self {
            dim: d,
            translate,
            scale,
            occupancy,
        })
    }

    /// Model-unit centre of cell `c`.
    fn cell_centre(&self, c: [usize; 3]) -> [f32; 3] {
        [0, 1, 2].map(|k| self.translate[k] + self.scale * (c[k] as f32 + 0.5) / self.dim as f32)
    }

    /// The model-unit frame of a model whose point cloud another project normalised (any
    /// shift and uniform scale) and whose box in those units is `lo..hi`: binvox put the
    /// model's bounding-box minimum at `translate` and its longest side at `scale`, so the
    /// model-unit box is `translate .. translate + (hi - lo) * scale / longest(hi - lo)`.
    pub fn model_box_of(&self, lo: [f32; 3], hi: [f32; 3]) -> Option<ModelFrame> {
        let ext = (0..3).map(|k| hi[k] - lo[k]).fold(0.0f32, f32::max);
        if !(ext > 0.0 && ext.is_finite()) {
            return None;
        }
        let k = self.scale / ext;
        let top = [0, 1, 2].map(|a| self.translate[a] + (hi[a] - lo[a]) * k);
        ModelFrame::of_box(self.translate, top)
    }

    /// Model-unit box of the occupied cells (their outer faces); `None` when no cell is.
    pub fn occupied_box(&self) -> Option<([f32; 3], [f32; 3])> {
        let d = self.dim;
        let mut lo = [usize::MAX; 3];
        let mut hi = [0usize; 3];
        let mut any = false;
        for (i, _) in self.occupancy.iter().enumerate().filter(|(_, &v)| v != 0) {
            let c = [i / (d * d), i / d % d, i % d];
            for k in 0..3 {
                lo[k] = lo[k].min(c[k]);
                hi[k] = hi[k].max(c[k] + 1);
            }
            any = true;
        }
        let at = |c: usize, k: usize| self.translate[k] + self.scale * c as f32 / d as f32;
        any.then(|| {
            (
                [0, 1, 2].map(|k| at(lo[k], k)),
                [0, 1, 2].map(|k| at(hi[k], k)),
            )
        })
    }

    /// The occupancy in the object frame `frame` at `res`^3 (cell `(i, j, k)` centred at
    /// `-0.5 + ((i, j, k) + 0.5) / res`, our layout): a cell is occupied when the grid cell
    /// at its centre is, or when the centre of an occupied grid cell lies in it (so no
    /// occupied cell is lost when the output is coarser than the grid). Cells outside the
    /// grid are empty.
    pub fn in_frame(&self, frame: &ModelFrame, res: usize) -> Vec<u8> {
        let (d, n) = (self.dim, res);
        let mut out = vec![0u8; n * n * n];
        // grid index of a model-unit coordinate along axis k
        let grid = |x: f32, k: usize| ((x - self.translate[k]) / self.scale * d as f32).floor();
        for i in 0..n {
            for j in 0..n {
                for k in 0..n {
                    let u = [i, j, k].map(|c| -0.5 + (c as f32 + 0.5) / n as f32);
                    let g = [0, 1, 2].map(|a| grid(frame.centre[a] + u[a] / frame.scale, a));
                    if g.iter().all(|&v| v >= 0.0 && v < d as f32) {
                        let (x, y, z) = (g[0] as usize, g[1] as usize, g[2] as usize);
                        out[(i * n + j) * n + k] = self.occupancy[(x * d + y) * d + z];
                    }
                }
            }
        }
        for (c, _) in self.occupancy.iter().enumerate().filter(|(_, &v)| v != 0) {
            let q = frame.apply(self.cell_centre([c / (d * d), c / d % d, c % d]));
            let o = q.map(|v| ((v + 0.5) * n as f32).floor());
            if o.iter().all(|&v| v >= 0.0 && v < n as f32) {
                let (x, y, z) = (o[0] as usize, o[1] as usize, o[2] as usize);
                out[(x * n + y) * n + z] = 1;
            }
        }
        out
    }
}

impl Dataset for ShapeNetR2n2 {
    fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    fn get(&self, i: usize) -> Result<Sample, DataError> {
        let (m, v) = self.locate(i).ok_or(DataError::Index {
            index: i,
            len: self.len(),
        })?;
        let model = &self.models[m];
        let (png, camera) = &model.views[v];
        let image = load_picture(png, self.opts.background, self.opts.image_size)?;
        let gt = self.ground_truth(m)?;
        let (points, voxels) = (gt.points.clone(), gt.voxels.clone());
        // the renderer's camera (model units, aimed at the model-unit origin) moved into the
        // object frame the ground truth was normalised to
        let camera = match &gt.frame {
            Some(f) => camera.in_frame(f.centre, f.scale),
            None => *camera,
        };
        Ok(Sample {
            object: m as u32,
            class_id: model.class_id,
            view: v as u16,
            width: self.opts.image_size,
            height: self.opts.image_size,
            image,
            // no part labels: ShapeNet models carry no part segmentation
            point_labels: Vec::new(),
            points,
            voxel_res: if voxels.is_empty() {
                0
            } else {
                self.opts.voxel_res as u32
            },
            voxels,
            sdf: Vec::new(),
            camera,
        })
    }

    fn views_of(&self, i: usize) -> Vec<usize> {
        match self.locate(i) {
            Some((m, _)) => (self.starts[m]..self.starts[m + 1]).collect(),
            None => Vec::new(),
        }
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn part_names(&self) -> &[String] {
        &self.part_names
    }
}

/// Counts of models per class name (for reports).
pub fn class_histogram(ds: &ShapeNetR2n2) -> HashMap<String, usize> {
    let mut h = HashMap::new();
    for m in &ds.models {
        *h.entry(ds.class_names[usize::from(m.class_id)].clone())
            .or_insert(0) += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{norm, sub};

    fn fixture(root: &Path) {
        crate::data::fixtures::write_r2n2(root).unwrap();
    }

    #[test]
    fn loads_r2n2_layout() {
        let root = std::env::temp_dir().join(format!("shapecast-r2n2-{}", std::process::id()));
        fixture(&root);
        let opts = R2n2Options {
            rendering_dir: root.join("ShapeNetRendering"),
            points_dir: Some(root.join("points")),
            voxels_dir: Some(root.join("ShapeNetVox32")),
            split_dir: Some(root.join("splits")),
            image_size: 32,
            n_points: 128,
            voxel_res: 8,
            ..R2n2Options::default()
        };
        let train = ShapeNetR2n2::open(opts.clone(), Split::Train).unwrap();
        let test = ShapeNetR2n2::open(opts.clone(), Split::Test).unwrap();
        assert_eq!(train.models(), 6);
        assert_eq!(test.models(), 3);
        assert_eq!(train.len(), 18);
        assert_eq!(
            train.class_names(),
            &["airplane".to_string(), "chair".to_string()]
        );
        assert_eq!(train.views_of(4), vec![3, 4, 5]);
        let s = train.get(4).unwrap();
        assert_eq!(s.view, 1);
        assert_eq!((s.width, s.image.len()), (32, 32 * 32 * 3));
        // Centre is the square's colour, corners the white background.
        let c = (16 * 32 + 16) * 3;
        assert_eq!(s.image[c], 200);
        assert_eq!(&s.image[0..3], &[255, 255, 255]);
        // renderer azimuth 30 is our 90 - 30 (see `r2n2_camera`); the distance 0.8 * 1.75
        // model units is scaled into the object frame like the points: this model (airplane
        // 01) spans 12 model units along y (its longest side), 0.96 in the object frame
        assert_eq!(s.camera.azimuth_deg, 60.0);
        let scale = 0.96 / 12.0;
        assert!(
            (s.camera.distance - 1.4 * scale).abs() < 1e-5,
            "{:?}",
            s.camera
        );
        // it looks at the model-unit origin: the box minimum (0, 0, -4) of that model,
        // centre (2.99, 6, -2)
        let want = [-2.99 * scale, -6.0 * scale, 2.0 * scale];
        for (t, w) in s.camera.target.iter().zip(want) {
            assert!((t - w).abs() < 1e-5, "{:?}", s.camera);
        }
        assert_eq!(s.points.len(), 128);
        let ext = (0..3)
            .map(|k| {
                let lo = s.points.iter().map(|p| p[k]).fold(f32::INFINITY, f32::min);
                let hi = s
                    .points
                    .iter()
                    .map(|p| p[k])
                    .fold(f32::NEG_INFINITY, f32::max);
                hi - lo
            })
            .fold(0.0, f32::max);
        assert!(ext <= 0.96 + 1e-5 && ext > 0.8, "{ext}");
        assert_eq!(s.voxels.len(), 512);
        assert_same_frame(&s.points, &s.voxels, 8, 1.5);
        assert_eq!(train.model_key(0).unwrap(), "02691156/02691156model00");
        // Hashed splits partition the models.
        let no_split = R2n2Options {
            split_dir: None,
            ..opts
        };
        let n: usize = [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .map(|sp| ShapeNetR2n2::open(no_split.clone(), sp).unwrap().models())
            .sum();
        assert_eq!(n, 10);
        std::fs::remove_dir_all(&root).ok();
    }

    /// The box of the occupied cells of `voxels` (`res`^3, cell faces at `-0.5 + i / res`)
    /// and the bounding box of `points` agree within `tol` cells on every side: points and
    /// voxels are in the same object frame (within about a cell: the grids quantise; before
    /// the fix the fixture's voxels sat about 3 cells off the points along short axes).
    fn assert_same_frame(points: &[[f32; 3]], voxels: &[u8], res: usize, tol: f32) {
        let (mut plo, mut phi) = ([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]);
        for p in points {
            for k in 0..3 {
                plo[k] = plo[k].min(p[k]);
                phi[k] = phi[k].max(p[k]);
            }
        }
        let (mut vlo, mut vhi) = ([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]);
        for (i, _) in voxels.iter().enumerate().filter(|(_, &v)| v != 0) {
            let c = [i / (res * res), i / res % res, i % res];
            for k in 0..3 {
                vlo[k] = vlo[k].min(-0.5 + c[k] as f32 / res as f32);
                vhi[k] = vhi[k].max(-0.5 + (c[k] + 1) as f32 / res as f32);
            }
        }
        let cell = 1.0 / res as f32;
        for k in 0..3 {
            assert!(
                (vlo[k] - plo[k]).abs() < tol * cell && (vhi[k] - phi[k]).abs() < tol * cell,
                "axis {k}: points {}..{}, voxels {}..{}",
                plo[k],
                phi[k],
                vlo[k],
                vhi[k]
            );
        }
    }

    #[test]
    fn points_and_voxels_share_the_object_frame() {
        // (the bug: the binvox grid was taken as the object frame's box, so a model whose
        // longest side is x sat at the low corner of y and z, and 1/0.96 too large, while its
        // points were centred)
        let root = std::env::temp_dir().join(format!("shapecast-r2n2-fr-{}", std::process::id()));
        fixture(&root);
        let opts = fixture_opts(&root);
        let both = ShapeNetR2n2::open(opts.clone(), Split::Train).unwrap();
        // the voxel trainer opens the data without points: its frame comes from the grid
        let grid_only = ShapeNetR2n2::open(
            R2n2Options {
                points_dir: None,
                ..opts.clone()
            },
            Split::Train,
        )
        .unwrap();
        for m in 0..both.models() {
            let i = both.starts[m];
            let s = both.get(i).unwrap();
            assert!(s.voxels.iter().any(|&v| v != 0));
            assert_same_frame(&s.points, &s.voxels, 8, 1.5);
            // without the points the frame is fitted to the occupied cells, within half a
            // grid cell of the points' box: voxels and camera within 1.5 cells
            let g = grid_only.get(i).unwrap();
            assert!(g.points.is_empty());
            assert_same_frame(&s.points, &g.voxels, 8, 1.5);
            let (a, b) = (s.camera.position(), g.camera.position());
            let off = norm(sub(a, b));
            assert!(
                off < 1.0 / 8.0,
                "model {m}: {:?} vs {:?}",
                s.camera,
                g.camera
            );
        }
        std::fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn binvox_header_places_the_grid() {
        // 4^3, one occupied cell (x 1, y 2, z 3), grid corner (1, -2, 0.5), side 2
        let mut grid = vec![0u8; 64];
        grid[(4 + 2) * 4 + 3] = 1;
        let path = std::env::temp_dir().join(format!("shapecast-bv-{}.binvox", std::process::id()));
        crate::data::fixtures::write_binvox(&path, &grid, 4, [1.0, -2.0, 0.5], 2.0).unwrap();
        let b = Binvox::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!((b.dim, b.translate, b.scale), (4, [1.0, -2.0, 0.5], 2.0));
        assert_eq!(b.occupancy, grid);
        // the cell spans translate + scale * [c, c + 1] / 4 per axis
        let (lo, hi) = b.occupied_box().unwrap();
        assert_eq!((lo, hi), ([1.5, -1.0, 2.0], [2.0, -0.5, 2.5]));
        // in the frame of that box (side 0.5 -> 0.96) the cell fills the middle 0.96:
        // at 4^3 the 4 middle... every cell whose centre is inside it
        let f = ModelFrame::of_box(lo, hi).unwrap();
        assert_eq!(f.apply([1.75, -0.75, 2.25]), [0.0; 3]);
        let v = b.in_frame(&f, 4);
        assert_eq!(v, vec![1u8; 64]);
        // the grid's own frame (its box to [-0.5, 0.5]^3, scale 1 / side) at its own
        // resolution gives the grid back; outside the grid is empty
        let own = ModelFrame {
            centre: [2.0, -1.0, 1.5],
            scale: 0.5,
        };
        assert_eq!(b.in_frame(&own, 4), grid);
        let far = ModelFrame {
            centre: [20.0, -1.0, 1.5],
            scale: 0.5,
        };
        assert!(b.in_frame(&far, 4).iter().all(|&v| v == 0));
        // a coarser output keeps a thin occupied slab (one cell thick at 32^3) that nearest
        // sampling alone would miss
        let mut thin = Binvox {
            dim: 32,
            translate: [0.0; 3],
            scale: 1.0,
            occupancy: vec![0; 32 * 32 * 32],
        };
        for y in 0..32 {
            for z in 0..32 {
                thin.occupancy[(5 * 32 + y) * 32 + z] = 1;
            }
        }
        let unit = ModelFrame {
            centre: [0.5; 3],
            scale: 1.0,
        };
        let coarse = thin.in_frame(&unit, 5);
        assert_eq!(coarse.iter().filter(|&&v| v != 0).count(), 25);
    }

    #[test]
    fn metadata_and_binvox_errors() {
        let p = Path::new("m.txt");
        let c = parse_metadata("10 20 0 0.5 25\n\n[30, 40, 0, 1.0, 25]\n", p).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].elevation_deg, 40.0);
        assert!(parse_metadata("1 2 3\n", p).is_err());
        assert!(parse_metadata("a b c d e\n", p).is_err());
        // a NaN or infinite camera would turn every projection into NaN
        assert!(parse_metadata("NaN 20 0 0.5 25\n", p).is_err());
        assert!(parse_metadata("10 20 0 inf 25\n", p).is_err());
        let parse = |b: &[u8]| Binvox::parse(b).map(|b| b.occupancy);
        assert!(parse(b"#binvox 1\ndim 2 2 2\ndata\n\x01\x07").is_err());
        assert!(parse(b"#binvox 1\ndim 2 2 2\ndata\n\x01\x09").is_err());
        assert_eq!(
            parse(b"#binvox 1\ndim 2 2 2\ndata\n\x01\x08").unwrap(),
            vec![1; 8]
        );
        assert!(parse(b"nope").is_err());
        // the header's mapping must be usable: finite, positive scale, cubic grid
        assert!(parse(b"#binvox 1\ndim 2 2 2\nscale 0\ndata\n\x01\x08").is_err());
        assert!(parse(b"#binvox 1\ndim 2 2 2\nscale nan\ndata\n\x01\x08").is_err());
        assert!(parse(b"#binvox 1\ndim 2 2 2\ntranslate 1 2\ndata\n\x01\x08").is_err());
        assert!(parse(b"#binvox 1\ndim 2 2 1\ndata\n\x01\x04").is_err());
    }

    fn fixture_opts(root: &Path) -> R2n2Options {
        R2n2Options {
            rendering_dir: root.join("ShapeNetRendering"),
            points_dir: Some(root.join("points")),
            voxels_dir: Some(root.join("ShapeNetVox32")),
            split_dir: Some(root.join("splits")),
            image_size: 16,
            n_points: 64,
            voxel_res: 8,
            ..R2n2Options::default()
        }
    }

    #[test]
    fn ground_truth_is_read_once_per_model() {
        let root = std::env::temp_dir().join(format!("shapecast-r2n2-gt-{}", std::process::id()));
        fixture(&root);
        let opts = fixture_opts(&root);
        // 6 models x 3 views, each model with a point cloud and a binvox grid
        let cached = ShapeNetR2n2::open(opts.clone(), Split::Train).unwrap();
        let uncached = ShapeNetR2n2::open(opts.clone(), Split::Train)
            .unwrap()
            .with_gt_cache(0);
        assert_eq!((cached.models(), cached.len()), (6, 18));
        for i in 0..cached.len() {
            assert_eq!(
                cached.get(i).unwrap(),
                uncached.get(i).unwrap(),
                "sample {i}"
            );
        }
        // one read per file and model with the cache; one per view without
        assert_eq!(cached.gt_reads(), 6 * 2);
        assert_eq!(uncached.gt_reads(), 18 * 2);
        // a second epoch reads nothing while every model fits
        for i in 0..cached.len() {
            cached.get(i).unwrap();
        }
        assert_eq!(cached.gt_reads(), 6 * 2);
        // the capacity bounds what is kept: one model, least recently used evicted
        let one = ShapeNetR2n2::open(opts, Split::Train)
            .unwrap()
            .with_gt_cache(1);
        for i in [0, 1, 3, 4, 0, 2] {
            one.get(i).unwrap();
        }
        // model 0 read, hit; model 1 read (evicts 0), hit; model 0 read again, hit
        assert_eq!(one.gt_reads(), 3 * 2);
        let cache = lock(&one.cache);
        assert!(cache.slots.len() <= 1 && cache.order.len() <= 1);
        drop(cache);
        std::fs::remove_dir_all(&root).ok();
    }

    /// Where the 3D-R2N2 renderer puts an object point, computed from the projection public
    /// code builds for these renderings (DISN / occupancy networks' `getBlenderProj`: camera
    /// at `(ratio * 1.75, 0, 0)`, rotated by `-elevation` about y and `-azimuth` about z in
    /// Blender, Blender's camera y and z flipped, 35 mm lens on a 32 mm sensor), composed
    /// with Blender's default `.obj` import (`(x, y, z)` -> `(x, -z, y)`): camera frame x
    /// right, y down, z forward, and pixels of a 137-pixel picture. Distance ratio 0.8.
    /// (azimuth, elevation, object point, camera-frame point, pixel)
    type RendererCase = (f32, f32, [f32; 3], [f32; 3], [f32; 2]);

    #[rustfmt::skip]
    const RENDERER: [RendererCase; 9] = [
        (0.0, 0.0, [0.5, 0.0, 0.0], [0.0, 0.0, 0.9], [68.5, 68.5]),
        (0.0, 0.0, [0.0, 0.5, 0.0], [0.0, -0.5, 1.4], [68.5, 14.984]),
        (0.0, 0.0, [0.0, 0.0, 0.5], [-0.5, 0.0, 1.4], [14.984, 68.5]),
        (90.0, 0.0, [0.5, 0.0, 0.0], [0.5, 0.0, 1.4], [122.016, 68.5]),
        (90.0, 0.0, [0.0, 0.0, 0.5], [0.0, 0.0, 0.9], [68.5, 68.5]),
        (0.0, 30.0, [0.5, 0.0, 0.0], [0.0, 0.25, 0.96699], [68.5, 107.24]),
        (0.0, 30.0, [0.0, 0.5, 0.0], [0.0, -0.43301, 1.15], [68.5, 12.079]),
        (210.0, 25.0, [0.5, 0.0, 0.0], [-0.25, -0.183, 1.79244], [47.601, 53.202]),
        (210.0, 25.0, [0.0, 0.0, 0.5], [0.43301, -0.10565, 1.62658], [108.39, 58.767]),
    ];

    fn assert_renderer_view(cam: &Camera, p: [f32; 3], want: [f32; 3], px: [f32; 2]) {
        let got = cam.to_camera(p);
        for k in 0..3 {
            assert!(
                (got[k] - want[k]).abs() < 1e-4,
                "{cam:?} {p:?}: {got:?} != {want:?}"
            );
        }
        let uv = cam.project(p, 137).unwrap();
        for k in 0..2 {
            assert!(
                (uv[k] - px[k]).abs() < 2e-2,
                "{cam:?} {p:?}: pixel {uv:?} != {px:?}"
            );
        }
    }

    #[test]
    fn r2n2_cameras_follow_the_renderer_convention() {
        for (az, el, p, want, px) in RENDERER {
            let line = format!("{az} {el} 0 0.8 25\n");
            let cam = parse_metadata(&line, Path::new("m.txt")).unwrap()[0];
            assert_renderer_view(&cam, p, want, px);
        }
        // the same through the loader: a model whose three views are azimuth 0 and 90 at
        // elevation 0, and azimuth 0 at elevation 30
        let root = std::env::temp_dir().join(format!("shapenet-r2n2-cam-{}", std::process::id()));
        fixture(&root);
        let meta = root.join("ShapeNetRendering/03001627/03001627model00/rendering");
        std::fs::write(
            meta.join("rendering_metadata.txt"),
            "0 0 0 0.8 25\n90 0 0 0.8 25\n0 30 0 0.8 25\n",
        )
        .unwrap();
        let ds = ShapeNetR2n2::open(fixture_opts(&root), Split::Train).unwrap();
        let key = "03001627/03001627model00";
        let first = (0..ds.len())
            .find(|&i| ds.model_key(i).as_deref() == Some(key))
            .unwrap();
        // The loader's samples are in that model's object frame: its fixture cloud spans
        // (0, 0, -4)..(2.99, 12, 0) model units, so a model-unit point p is at
        // (p - (1.495, 6, -2)) * 0.08 (longest side 12 -> 0.96), and camera-frame
        // coordinates scale by 0.08 too; the pixels stay the renderer's.
        let (centre, scale) = ([1.495, 6.0, -2.0], 0.96 / 12.0);
        let to_frame = |p: [f32; 3]| [0, 1, 2].map(|k| (p[k] - centre[k]) * scale);
        for (view, (az, el)) in [(0.0, 0.0), (90.0, 0.0), (0.0, 30.0)]
            .into_iter()
            .enumerate()
        {
            let s = ds.get(first + view).unwrap();
            for &(a, e, p, want, px) in RENDERER.iter().filter(|r| (r.0, r.1) == (az, el)) {
                assert_eq!((a, e), (az, el));
                assert_renderer_view(&s.camera, to_frame(p), want.map(|v| v * scale), px);
            }
        }
        // viewer-centred points (`data.frame` = camera): azimuth 90 looks along -z, so the
        // object's +x is the picture's right and its +y the picture's up
        let s = ds.get(first + 1).unwrap();
        let q = crate::data::camera_frame_points(
            &[[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0], [0.0, 0.25, 0.0]],
            &s.camera,
        );
        assert!(q[0][0] > 0.4 && q[1][0] < -0.4 && q[2][1] < 0.0, "{q:?}");
        std::fs::remove_dir_all(&root).ok();
    }
}
