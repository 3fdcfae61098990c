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
//! Points are normalised into the object frame by their bounding box (longest side 0.96) and
//! resampled to the configured count. Voxels keep the binvox grid (resampled nearest to the
//! configured resolution). There are no SDF samples and no part labels (`point_labels` and
//! `part_names` are empty).
//!
//! **Ground truth is read once per model**, not once per view: a bounded cache keeps the last
//! [`GT_CACHE_MODELS`] models' finished ground truth (resampled points and voxels, exactly
//! what every view of the model carries), so an epoch over the 24 views of each model reads
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
/// `ratio * 1.75` (ShapeNet model units) and the field of view [`r2n2_fov_deg`].
pub fn r2n2_camera(azimuth_deg: f32, elevation_deg: f32, in_plane_deg: f32, ratio: f32) -> Camera {
    Camera {
        azimuth_deg: (90.0 - azimuth_deg).rem_euclid(360.0),
        elevation_deg,
        in_plane_deg,
        distance: ratio * R2N2_MAX_CAMERA_DIST,
        fov_deg: r2n2_fov_deg(),
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

    /// Reads and prepares model `m`'s point cloud and voxel grid.
    fn read_ground_truth(&self, m: usize) -> Result<ModelGt, DataError> {
        let model = &self.models[m];
        let mut points = Vec::new();
        if let Some(p) = &model.points {
            self.gt_reads.fetch_add(1, Ordering::Relaxed);
            let arr = npy::read_npy(p)?;
            let mut pts = arr.points().ok_or_else(|| {
                DataError::parse(p, format!("shape {:?}, need [N, 3]", arr.shape))
            })?;
            normalize_points(&mut pts);
            let mut rng = ChaCha8Rng::seed_from_u64(splitmix(self.opts.seed ^ (m as u64) << 8));
            points = resample(&pts, self.opts.n_points, &mut rng);
        }
        let voxels = match &model.voxels {
            Some(p) if self.opts.voxel_res > 0 => {
                self.gt_reads.fetch_add(1, Ordering::Relaxed);
                read_binvox(p, self.opts.voxel_res)?
            }
            _ => Vec::new(),
        };
        Ok(ModelGt { points, voxels })
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

/// Normalises points into the object frame by their bounding box (longest side 0.96).
pub(crate) fn normalize_points(points: &mut [[f32; 3]]) {
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for p in points.iter() {
        for k in 0..3 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let ext = (0..3).map(|k| hi[k] - lo[k]).fold(0.0f32, f32::max);
    if !(ext > 0.0 && ext.is_finite()) {
        return;
    }
    let s = 0.96 / ext;
    for p in points.iter_mut() {
        for k in 0..3 {
            p[k] = (p[k] - 0.5 * (lo[k] + hi[k])) * s;
        }
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

/// Reads a `.binvox` grid into our layout (`x*R*R + y*R + z`), resampled to `res`.
pub fn read_binvox(path: &Path, res: usize) -> Result<Vec<u8>, DataError> {
    let b = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_binvox(&b, res).map_err(|m| DataError::parse(path, m))
}

/// Parses `.binvox` bytes (see [`read_binvox`]).
pub fn parse_binvox(b: &[u8], res: usize) -> Result<Vec<u8>, String> {
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
    let mut dims = None;
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
            dims = Some([d[0], d[1], d[2]]);
        }
    }
    let [d, h, w] = dims.ok_or("header lacks dim")?;
    let total = d * h * w;
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
    // binvox order: x slowest, then z, then y fastest: index = x*(w*h) + z*w + y.
    let mut out = vec![0u8; res * res * res];
    for x in 0..res {
        let sx = x * d / res;
        for y in 0..res {
            let sy = y * w / res;
            for z in 0..res {
                let sz = z * h / res;
                out[(x * res + y) * res + z] = raw[sx * w * h + sz * w + sy];
            }
        }
    }
    Ok(out)
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
            camera: *camera,
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
        // renderer azimuth 30 is our 90 - 30 (see `r2n2_camera`)
        assert_eq!(s.camera.azimuth_deg, 60.0);
        assert!((s.camera.distance - 1.4).abs() < 1e-6);
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
        assert_eq!(s.voxels[(8 + 2) * 8 + 3], 1);
        assert_eq!(s.voxels.iter().filter(|&&v| v == 1).count(), 2);
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
        assert!(parse_binvox(b"#binvox 1\ndim 2 2 2\ndata\n\x01\x07", 2).is_err());
        assert!(parse_binvox(b"#binvox 1\ndim 2 2 2\ndata\n\x01\x09", 2).is_err());
        assert_eq!(
            parse_binvox(b"#binvox 1\ndim 2 2 2\ndata\n\x01\x08", 2).unwrap(),
            vec![1; 8]
        );
        assert!(parse_binvox(b"nope", 2).is_err());
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
        for (view, (az, el)) in [(0.0, 0.0), (90.0, 0.0), (0.0, 30.0)]
            .into_iter()
            .enumerate()
        {
            let s = ds.get(first + view).unwrap();
            for &(a, e, p, want, px) in RENDERER.iter().filter(|r| (r.0, r.1) == (az, el)) {
                assert_eq!((a, e), (az, el));
                assert_renderer_view(&s.camera, p, want, px);
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
