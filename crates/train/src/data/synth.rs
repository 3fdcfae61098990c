//! The synthetic dataset: procedural shapes (and optional user meshes) rendered from random
//! viewpoints, 3D-R2N2 style, with exact ground truth. Deterministic from the seed; generated
//! on the fly (ground truth of recently used objects is cached, so the views of one object
//! are cheap).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::mesh::Mesh;
use super::raster::{self, Background, RenderOptions};
use super::shapes::{self, Shape, CLASS_NAMES, PART_NAMES, PART_SURFACE};
use super::volume::{self, MeshSdf};
use super::{splitmix, Camera, DataError, Dataset, Sample, Split};

/// Settings of the synthetic dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Seed of everything (shapes, views, splits).
    pub seed: u64,
    /// Procedural objects per class over all splits (about 80/10/10 train/val/test).
    pub objects_per_class: usize,
    /// Pictures per object.
    pub views: usize,
    /// Picture side in pixels (square).
    pub image_size: u32,
    /// Surface points per sample (0 = none).
    pub n_points: usize,
    /// Voxel resolution (0 = no voxels).
    pub voxel_res: usize,
    /// SDF samples per sample (0 = none).
    pub n_sdf: usize,
    /// Procedural classes to use, by name (empty = all of [`CLASS_NAMES`]).
    pub classes: Vec<String>,
    /// User meshes (OBJ/OFF/STL/PLY); each is one object whose class is its parent folder's
    /// name. Assigned to splits by hashing the file name.
    pub meshes: Vec<PathBuf>,
    /// Elevation range of the camera, degrees.
    pub elevation_deg: (f32, f32),
    /// Distance range of the camera (object-frame units).
    pub distance: (f32, f32),
    /// Field of view range, degrees.
    pub fov_deg: (f32, f32),
    /// Supersampling of the rasteriser per axis.
    pub supersample: u32,
    /// Objects whose ground truth is kept in memory.
    pub cache_objects: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            objects_per_class: 500,
            views: 8,
            image_size: 64,
            n_points: 2048,
            voxel_res: 32,
            n_sdf: 2048,
            classes: Vec::new(),
            meshes: Vec::new(),
            elevation_deg: (-5.0, 40.0),
            distance: (2.1, 2.9),
            fov_deg: (30.0, 36.0),
            supersample: 2,
            cache_objects: 256,
        }
    }
}

#[derive(Debug, Clone)]
enum Source {
    Procedural { class: u16 },
    Mesh { path: PathBuf },
}

#[derive(Debug, Clone)]
struct Object {
    id: u32,
    /// Stable name (`<class>-<k>` or the mesh path): seeds the shape and views, and picks the
    /// split, independently of how many objects or classes the configuration has.
    key: String,
    class_id: u16,
    source: Source,
}

/// Per-object ground truth and appearance.
#[derive(Debug)]
struct ObjectGt {
    mesh: Mesh,
    colors: Vec<[f32; 3]>,
    points: Vec<[f32; 3]>,
    labels: Vec<u8>,
    voxels: Vec<u8>,
    sdf: Vec<([f32; 3], f32)>,
}

/// Procedural (and user-mesh) objects rendered on the fly; see [`SynthConfig`].
#[derive(Debug)]
pub struct SyntheticDataset {
    cfg: SynthConfig,
    split: Split,
    objects: Vec<Object>,
    class_names: Vec<String>,
    part_names: Vec<String>,
    cache: Mutex<HashMap<u32, Arc<ObjectGt>>>,
}

impl SyntheticDataset {
    /// The objects of `split` under `cfg`.
    pub fn new(cfg: SynthConfig, split: Split) -> Result<Self, DataError> {
        if cfg.views == 0 || cfg.views > usize::from(u16::MAX) {
            return Err(DataError::Config(format!("views = {}", cfg.views)));
        }
        if cfg.image_size < 8 || cfg.image_size > 4096 {
            return Err(DataError::Config(format!(
                "image_size = {}",
                cfg.image_size
            )));
        }
        if cfg.voxel_res > 256 {
            return Err(DataError::Config(format!("voxel_res = {}", cfg.voxel_res)));
        }
        let mut classes: Vec<u16> = Vec::new();
        if cfg.classes.is_empty() {
            classes.extend(0..CLASS_NAMES.len() as u16);
        } else {
            for name in &cfg.classes {
                let c = CLASS_NAMES.iter().position(|c| c == name).ok_or_else(|| {
                    DataError::Config(format!(
                        "unknown class `{name}` (have: {})",
                        CLASS_NAMES.join(", ")
                    ))
                })?;
                classes.push(c as u16);
            }
        }
        let mut class_names: Vec<String> = classes
            .iter()
            .map(|&c| CLASS_NAMES[c as usize].to_string())
            .collect();
        let mut objects = Vec::new();
        let mut id = 0u32;
        for (ci, &c) in classes.iter().enumerate() {
            for k in 0..cfg.objects_per_class {
                let key = format!("{}-{k}", CLASS_NAMES[c as usize]);
                if Split::of_key(cfg.seed, &key) == split {
                    objects.push(Object {
                        id,
                        key,
                        class_id: ci as u16,
                        source: Source::Procedural { class: c },
                    });
                }
                id += 1;
            }
        }
        for path in &cfg.meshes {
            let class = path
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .unwrap_or("mesh")
                .to_string();
            let ci = match class_names.iter().position(|c| *c == class) {
                Some(i) => i,
                None => {
                    class_names.push(class);
                    class_names.len() - 1
                }
            };
            let key = path.display().to_string();
            if Split::of_key(cfg.seed, &key) == split {
                objects.push(Object {
                    id,
                    key,
                    class_id: ci as u16,
                    source: Source::Mesh { path: path.clone() },
                });
            }
            id += 1;
        }
        Ok(Self {
            cfg,
            split,
            objects,
            class_names,
            part_names: PART_NAMES.iter().map(|s| s.to_string()).collect(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SynthConfig {
        &self.cfg
    }

    /// The split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// Number of objects in this split.
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    fn object_seed(&self, key: &str) -> u64 {
        let mut h = splitmix(self.cfg.seed ^ 0x5eed);
        for b in key.bytes() {
            h = splitmix(h ^ u64::from(b));
        }
        h
    }

    fn ground_truth(&self, obj: &Object) -> Result<Arc<ObjectGt>, DataError> {
        if let Ok(c) = self.cache.lock() {
            if let Some(gt) = c.get(&obj.id) {
                return Ok(gt.clone());
            }
        }
        let gt = Arc::new(self.make_gt(obj)?);
        if self.cfg.cache_objects > 0 {
            if let Ok(mut c) = self.cache.lock() {
                if c.len() >= self.cfg.cache_objects {
                    c.clear();
                }
                c.insert(obj.id, gt.clone());
            }
        }
        Ok(gt)
    }

    fn make_gt(&self, obj: &Object) -> Result<ObjectGt, DataError> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.object_seed(&obj.key));
        let cfg = &self.cfg;
        match &obj.source {
            Source::Procedural { class } => {
                let shape = shapes::generate(*class, &mut rng)?;
                let (mesh, prim_of_face) = shape.mesh();
                let colors = part_colors(PART_NAMES.len(), &mut rng);
                let (points, labels) = if cfg.n_points > 0 {
                    shape
                        .sample_surface(&mesh, &prim_of_face, cfg.n_points, &mut rng)?
                        .into_iter()
                        .unzip()
                } else {
                    (Vec::new(), Vec::new())
                };
                let surf = shape_surface(&shape, &mesh, &prim_of_face, &points, &mut rng)?;
                let f = |p: [f32; 3]| shape.sdf(p);
                Ok(self.finish_gt(mesh, colors, points, labels, &f, &surf, &mut rng))
            }
            Source::Mesh { path } => {
                let mut mesh = Mesh::load(path)?;
                mesh.normalize(0.02)?;
                let colors = part_colors(mesh.part_names.len().max(1), &mut rng);
                let sdf = MeshSdf::new(&mesh, 100_000, &mut rng)?;
                let surf: Vec<[f32; 3]> = mesh
                    .sample_surface(cfg.n_points.max(1024), &mut rng)?
                    .into_iter()
                    .map(|s| s.0)
                    .collect();
                let points: Vec<[f32; 3]> = surf.iter().copied().take(cfg.n_points).collect();
                let labels = vec![PART_SURFACE; points.len()];
                let f = |p: [f32; 3]| sdf.sdf(p);
                Ok(self.finish_gt(mesh, colors, points, labels, &f, &surf, &mut rng))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_gt(
        &self,
        mesh: Mesh,
        colors: Vec<[f32; 3]>,
        points: Vec<[f32; 3]>,
        labels: Vec<u8>,
        f: &dyn Fn([f32; 3]) -> f32,
        surface: &[[f32; 3]],
        rng: &mut ChaCha8Rng,
    ) -> ObjectGt {
        let voxels = if self.cfg.voxel_res > 0 {
            volume::voxelize(f, self.cfg.voxel_res)
        } else {
            Vec::new()
        };
        let sdf = if self.cfg.n_sdf > 0 {
            volume::sdf_samples(f, surface, self.cfg.n_sdf, rng)
        } else {
            Vec::new()
        };
        ObjectGt {
            mesh,
            colors,
            points,
            labels,
            voxels,
            sdf,
        }
    }

    /// The camera, light and background of view `view` of object `id`.
    fn view_setup(&self, key: &str, view: usize) -> (Camera, RenderOptions) {
        let cfg = &self.cfg;
        let mut rng = ChaCha8Rng::seed_from_u64(splitmix(
            self.object_seed(key) ^ splitmix(view as u64 + 0x71e3),
        ));
        let cam = Camera {
            azimuth_deg: rng.gen_range(0.0..360.0),
            elevation_deg: range(&mut rng, cfg.elevation_deg),
            in_plane_deg: 0.0,
            distance: range(&mut rng, cfg.distance),
            fov_deg: range(&mut rng, cfg.fov_deg),
            target: [0.0; 3],
        };
        let eye = super::normalize(cam.position());
        let jitter = [
            rng.gen_range(-0.8..0.8),
            rng.gen_range(0.0..1.0),
            rng.gen_range(-0.8..0.8),
        ];
        let opts = RenderOptions {
            size: cfg.image_size,
            supersample: cfg.supersample,
            light_dir: super::normalize(super::add(eye, jitter)),
            ambient: rng.gen_range(0.2..0.5),
            background: Background::random(&mut rng),
        };
        (cam, opts)
    }
}

/// Surface points used to seed near-surface SDF samples: the ground-truth points when there
/// are enough, else a fresh set.
fn shape_surface(
    shape: &Shape,
    mesh: &Mesh,
    prim_of_face: &[u16],
    points: &[[f32; 3]],
    rng: &mut ChaCha8Rng,
) -> Result<Vec<[f32; 3]>, DataError> {
    if points.len() >= 256 {
        return Ok(points.to_vec());
    }
    Ok(shape
        .sample_surface(mesh, prim_of_face, 1024, rng)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

fn range(rng: &mut ChaCha8Rng, r: (f32, f32)) -> f32 {
    if r.1 > r.0 {
        rng.gen_range(r.0..r.1)
    } else {
        r.0
    }
}

/// Random part colours: one colour for the whole object (half the time) or one per part.
fn part_colors(n: usize, rng: &mut ChaCha8Rng) -> Vec<[f32; 3]> {
    let col = |rng: &mut ChaCha8Rng| {
        [
            rng.gen_range(0.15..1.0),
            rng.gen_range(0.15..1.0),
            rng.gen_range(0.15..1.0),
        ]
    };
    if rng.gen_bool(0.5) {
        vec![col(rng); n]
    } else {
        (0..n).map(|_| col(rng)).collect()
    }
}

impl Dataset for SyntheticDataset {
    fn len(&self) -> usize {
        self.objects.len() * self.cfg.views
    }

    fn get(&self, i: usize) -> Result<Sample, DataError> {
        if i >= self.len() {
            return Err(DataError::Index {
                index: i,
                len: self.len(),
            });
        }
        let (o, view) = (i / self.cfg.views, i % self.cfg.views);
        let obj = &self.objects[o];
        let gt = self.ground_truth(obj)?;
        let (camera, opts) = self.view_setup(&obj.key, view);
        let r = raster::render(&gt.mesh, &gt.colors, &camera, &opts);
        Ok(Sample {
            object: obj.id,
            class_id: obj.class_id,
            view: view as u16,
            width: self.cfg.image_size,
            height: self.cfg.image_size,
            image: r.rgb,
            points: gt.points.clone(),
            point_labels: gt.labels.clone(),
            voxels: gt.voxels.clone(),
            voxel_res: if gt.voxels.is_empty() {
                0
            } else {
                self.cfg.voxel_res as u32
            },
            sdf: gt.sdf.clone(),
            camera,
        })
    }

    fn views_of(&self, i: usize) -> Vec<usize> {
        if i >= self.len() {
            return Vec::new();
        }
        let o = i / self.cfg.views;
        (o * self.cfg.views..(o + 1) * self.cfg.views).collect()
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

    fn small() -> SynthConfig {
        SynthConfig {
            objects_per_class: 20,
            views: 3,
            image_size: 32,
            n_points: 256,
            voxel_res: 16,
            n_sdf: 256,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn splits_partition_objects_and_are_deterministic() {
        let cfg = small();
        let sets: Vec<SyntheticDataset> = [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .map(|s| SyntheticDataset::new(cfg.clone(), s).unwrap())
            .collect();
        let total: usize = sets.iter().map(|d| d.objects()).sum();
        assert_eq!(total, 20 * CLASS_NAMES.len());
        assert!(sets[0].objects() > sets[2].objects());
        let mut ids: Vec<u32> = sets
            .iter()
            .flat_map(|d| d.objects.iter().map(|o| o.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), total);
        let a = sets[2].get(4).unwrap();
        let again = SyntheticDataset::new(cfg.clone(), Split::Test)
            .unwrap()
            .get(4)
            .unwrap();
        assert_eq!(a, again);
        let other = SyntheticDataset::new(SynthConfig { seed: 2, ..cfg }, Split::Test).unwrap();
        assert_ne!(other.get(4).unwrap().image, a.image);
    }

    #[test]
    fn objects_do_not_depend_on_the_config_size() {
        // Object `chair-k` looks the same whatever objects_per_class or class list is used.
        let a = SyntheticDataset::new(small(), Split::Test).unwrap();
        let cfg_b = SynthConfig {
            objects_per_class: 40,
            classes: vec!["table".into(), "chair".into()],
            ..small()
        };
        let b = SyntheticDataset::new(cfg_b, Split::Test).unwrap();
        let first_chair = |d: &SyntheticDataset| {
            d.objects
                .iter()
                .position(|o| o.key.starts_with("chair-"))
                .map(|o| (d.objects[o].key.clone(), d.get(o * 3 + 1).unwrap()))
                .unwrap()
        };
        let (ka, sa) = first_chair(&a);
        let (kb, sb) = first_chair(&b);
        assert_eq!(ka, kb);
        assert_eq!(sa.image, sb.image);
        assert_eq!(sa.points, sb.points);
    }

    #[test]
    fn samples_are_complete_and_consistent() {
        let d = SyntheticDataset::new(small(), Split::Train).unwrap();
        assert_eq!(d.len(), d.objects() * 3);
        assert_eq!(d.views_of(4), vec![3, 4, 5]);
        let s = d.get(4).unwrap();
        let s2 = d.get(5).unwrap();
        assert_eq!(
            s.points, s2.points,
            "views of one object share ground truth"
        );
        assert_ne!(s.image, s2.image);
        assert_eq!(s.image.len(), 32 * 32 * 3);
        assert_eq!(s.points.len(), 256);
        assert_eq!(s.point_labels.len(), 256);
        assert_eq!(s.voxels.len(), 16 * 16 * 16);
        assert_eq!(s.voxel_res, 16);
        assert_eq!(s.sdf.len(), 256);
        assert!(s.points.iter().all(|p| p.iter().all(|v| v.abs() <= 0.5)));
        assert!(s.voxels.contains(&1) && s.voxels.contains(&0));
        assert!(s.sdf.iter().any(|x| x.1 < 0.0) && s.sdf.iter().any(|x| x.1 > 0.0));
        // Surface points project inside the picture.
        for p in &s.points {
            let q = s.camera.project(*p, 32).unwrap();
            assert!(
                q[0] > -1.0 && q[0] < 33.0 && q[1] > -1.0 && q[1] < 33.0,
                "{q:?}"
            );
        }
        assert!(d.get(d.len()).is_err());
        assert!(d.views_of(d.len()).is_empty());
        assert_eq!(d.class_names().len(), CLASS_NAMES.len());
    }

    #[test]
    fn voxels_agree_with_points() {
        // Every surface point's voxel is occupied (the surface band is kept).
        let d = SyntheticDataset::new(
            SynthConfig {
                voxel_res: 32,
                ..small()
            },
            Split::Train,
        )
        .unwrap();
        for i in (0..d.len()).step_by(7).take(12) {
            let s = d.get(i).unwrap();
            let r = 32usize;
            let idx = |v: f32| (((v + 0.5) * r as f32) as usize).min(r - 1);
            let miss = s
                .points
                .iter()
                .filter(|p| s.voxels[(idx(p[0]) * r + idx(p[1])) * r + idx(p[2])] == 0)
                .count();
            assert!(
                miss * 50 < s.points.len(),
                "class {} misses {miss}",
                s.class_id
            );
        }
    }

    #[test]
    fn user_meshes_become_objects() {
        let dir = std::env::temp_dir().join(format!("shapecast-synth-{}", std::process::id()));
        let cls = dir.join("cube");
        std::fs::create_dir_all(&cls).unwrap();
        let mut meshes = Vec::new();
        for k in 0..12 {
            let p = cls.join(format!("c{k}.obj"));
            std::fs::write(
                &p,
                "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 2\nv 1 0 2\nv 1 1 2\nv 0 1 2\n\
                 f 1 4 3 2\nf 5 6 7 8\nf 1 2 6 5\nf 2 3 7 6\nf 3 4 8 7\nf 4 1 5 8\n",
            )
            .unwrap();
            meshes.push(p);
        }
        let cfg = SynthConfig {
            classes: vec!["mug".into()],
            objects_per_class: 0,
            meshes,
            ..small()
        };
        let sets: Vec<SyntheticDataset> = [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .map(|s| SyntheticDataset::new(cfg.clone(), s).unwrap())
            .collect();
        assert_eq!(sets.iter().map(|d| d.objects()).sum::<usize>(), 12);
        let d = sets.iter().find(|d| d.objects() > 0).unwrap();
        assert_eq!(d.class_names(), &["mug".to_string(), "cube".to_string()]);
        let s = d.get(0).unwrap();
        assert_eq!(s.class_id, 1);
        // Box 0.48 x 0.48 x 0.96 (normalised, margin 0.02): voxel occupancy about 0.22 + band.
        let occ = s.voxels.iter().filter(|&&v| v == 1).count() as f32 / s.voxels.len() as f32;
        assert!(occ > 0.2 && occ < 0.45, "{occ}");
        let inside = s
            .sdf
            .iter()
            .filter(|x| x.1 < 0.0)
            .all(|x| x.0[0].abs() < 0.25 && x.0[2].abs() < 0.49);
        assert!(inside);
        std::fs::remove_dir_all(&dir).ok();
    }
}
