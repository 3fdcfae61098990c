//! Datasets: the synthetic generator and loaders for ShapeNet (3D-R2N2 layout) and Pix3D.
//!
//! Every dataset yields [`Sample`]s: one picture of one object plus that object's ground
//! truth in the canonical *object frame* (y up, centred, scaled so the object's bounding box
//! fits `[-0.5, 0.5]^3` with its longest side = 1). That frame is the contract's
//! `shapecast.frame = object`, `shapecast.units = normalized`, `shapecast.bounds =
//! -0.5,-0.5,-0.5,0.5,0.5,0.5` (see [`BOUNDS`]).
//!
//! * [`synth::SyntheticDataset`]: procedural chairs, tables, mugs, lamps, airplanes (unions of
//!   primitives with part labels) and any OBJ/OFF/STL/PLY meshes, rendered by a software
//!   rasteriser ([`raster`]); deterministic from a seed, needs no download.
//! * [`shapenet::ShapeNetR2n2`]: `ShapeNetRendering/<synset>/<id>/rendering/NN.png` with
//!   `rendering_metadata.txt`, point clouds as `.npy`, voxels as `.binvox`, split files.
//! * [`pix3d::Pix3d`]: `pix3d.json` with `img/`, `mask/`, `model/*.obj`.
//!
//! [`write_samples`] renders test-split pictures and their ground truth for the runtime demo.

#[doc(hidden)]
pub mod fixtures;
pub mod mesh;
pub mod npy;
pub mod pix3d;
pub mod raster;
pub mod samples;
pub mod shapenet;
pub mod shapes;
pub mod synth;
pub mod volume;

use std::path::PathBuf;

pub use samples::{write_samples, write_samples_with};
pub use synth::{SynthConfig, SyntheticDataset};

/// The object-frame box every ground-truth coordinate lies in (`xmin,ymin,zmin,xmax,ymax,zmax`).
pub const BOUNDS: [f32; 6] = [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5];

/// Errors of loading or generating data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (in the message, not a separate `source()`, so `{:#}` chains name it once).
        cause: std::io::Error,
    },
    /// A file's contents are malformed.
    #[error("{path}: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A picture could not be decoded or encoded.
    #[error("{path}: {cause}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The cause (in the message, not a separate `source()`, so `{:#}` chains name it once).
        cause: image::ImageError,
    },
    /// A PLY file could not be read or written.
    #[error("{path}: {cause}")]
    Ply {
        /// The file.
        path: PathBuf,
        /// The cause (in the message, not a separate `source()`, so `{:#}` chains name it once).
        cause: shapecast_geom::ply::PlyError,
    },
    /// Index out of range.
    #[error("sample index {index} out of range (dataset has {len})")]
    Index {
        /// Requested index.
        index: usize,
        /// Dataset length.
        len: usize,
    },
    /// A dataset folder does not have the expected layout or holds nothing usable.
    #[error("{0}")]
    Layout(String),
    /// A mesh has no usable triangles (zero area or empty).
    #[error("degenerate mesh: {0}")]
    Degenerate(String),
    /// A configuration value is out of range.
    #[error("bad configuration: {0}")]
    Config(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            cause: source,
        }
    }
    pub(crate) fn parse(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Self::Parse {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

/// Which part of a dataset. Splits are by *object* (all views of one object are in the same
/// split) and fixed by the dataset seed (or by split files where a dataset has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training objects (about 80 %).
    Train,
    /// Validation objects (about 10 %).
    Val,
    /// Test objects (about 10 %).
    Test,
}

impl Split {
    /// Lower-case name (`train`, `val`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// The split an object falls in by hashing its key with `seed` (80/10/10).
    pub fn of_key(seed: u64, key: &str) -> Split {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in key.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        match splitmix(h) % 10 {
            8 => Split::Val,
            9 => Split::Test,
            _ => Split::Train,
        }
    }
}

impl std::str::FromStr for Split {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => Err(DataError::Config(format!(
                "unknown split `{other}` (train, val, test)"
            ))),
        }
    }
}

pub(crate) fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A pin-hole camera looking at [`Camera::target`] (the object-frame origin for synthetic
/// data and Pix3D; for ShapeNet the point the renderer aimed at, see
/// [`shapenet::r2n2_camera`] and [`Camera::in_frame`]).
///
/// Position: `target + distance * (cos(el) sin(az), sin(el), cos(el) cos(az))` (object frame,
/// y up), looking at `target` with up = +y, then rolled by `in_plane_deg` about the view axis.
/// Camera frame: x right, y down, z forward (the contract's `camera` frame).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    /// Azimuth about +y, degrees.
    pub azimuth_deg: f32,
    /// Elevation above the xz plane, degrees.
    pub elevation_deg: f32,
    /// Roll about the viewing axis, degrees.
    pub in_plane_deg: f32,
    /// Distance from [`Self::target`], object-frame units.
    pub distance: f32,
    /// Vertical (= horizontal, square pictures) field of view, degrees.
    pub fov_deg: f32,
    /// The point the camera looks at, object frame (`[0; 3]`, the origin, unless a
    /// dataset's renderer aimed elsewhere: ShapeNet's looked at its model-unit origin).
    pub target: [f32; 3],
}

impl Default for Camera {
    fn default() -> Self {
        Self {
            azimuth_deg: 30.0,
            elevation_deg: 20.0,
            in_plane_deg: 0.0,
            distance: 2.0,
            fov_deg: 35.0,
            target: [0.0; 3],
        }
    }
}

impl Camera {
    /// Camera centre relative to [`Self::target`] (the same arithmetic, bit for bit, as
    /// before cameras had a target: synthetic pictures do not change).
    fn offset(&self) -> [f32; 3] {
        let (az, el) = (
            self.azimuth_deg.to_radians(),
            self.elevation_deg.to_radians(),
        );
        [
            self.distance * el.cos() * az.sin(),
            self.distance * el.sin(),
            self.distance * el.cos() * az.cos(),
        ]
    }

    /// Camera centre in the object frame.
    pub fn position(&self) -> [f32; 3] {
        add(self.target, self.offset())
    }

    /// This camera after a change of frame `p -> (p - centre) * scale` (the camera moves
    /// with the points: its target maps like a point, its distance scales, its orientation
    /// and field of view stay). The ShapeNet loader uses it to carry the renderer's camera,
    /// given in model units, into the object frame the model's ground truth was normalised
    /// to; `project` of the normalised points then lands where the renderer drew them.
    pub fn in_frame(&self, centre: [f32; 3], s: f32) -> Camera {
        Camera {
            target: scale(sub(self.target, centre), s),
            distance: self.distance * s,
            ..*self
        }
    }

    /// Rotation rows (camera x, y, z axes expressed in the object frame): `p_cam = R (p - c)`.
    pub fn rotation(&self) -> [[f32; 3]; 3] {
        let c = self.offset();
        let fwd = normalize([-c[0], -c[1], -c[2]]);
        let mut up = [0.0, 1.0, 0.0];
        if cross(fwd, up).iter().map(|v| v * v).sum::<f32>() < 1e-10 {
            up = [0.0, 0.0, -1.0];
        }
        let right = normalize(cross(fwd, up));
        let down = cross(fwd, right);
        let (s, co) = self.in_plane_deg.to_radians().sin_cos();
        let r2 = add(scale(right, co), scale(down, s));
        let d2 = add(scale(right, -s), scale(down, co));
        [r2, d2, fwd]
    }

    /// Object-frame point to camera frame (x right, y down, z forward).
    pub fn to_camera(&self, p: [f32; 3]) -> [f32; 3] {
        let r = self.rotation();
        let c = self.position();
        let d = sub(p, c);
        [dot(r[0], d), dot(r[1], d), dot(r[2], d)]
    }

    /// Focal length in pixels for a `size`-pixel square picture.
    pub fn focal_px(&self, size: u32) -> f32 {
        0.5 * size as f32 / (0.5 * self.fov_deg.to_radians()).tan()
    }

    /// Projects an object-frame point to pixel coordinates `(u, v, depth)` in a square
    /// picture of `size` pixels (pixel centres at `i + 0.5`); `None` behind the camera.
    pub fn project(&self, p: [f32; 3], size: u32) -> Option<[f32; 3]> {
        let q = self.to_camera(p);
        if q[2] <= 1e-6 {
            return None;
        }
        let f = self.focal_px(size);
        let h = 0.5 * size as f32;
        Some([h + f * q[0] / q[2], h + f * q[1] / q[2], q[2]])
    }
}

/// One picture of one object with the object's ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Object index within the whole dataset (stable across splits).
    pub object: u32,
    /// Class id, index into [`Dataset::class_names`].
    pub class_id: u16,
    /// View number of this picture among the object's views.
    pub view: u16,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// RGB8 picture, row-major `H x W x 3`.
    pub image: Vec<u8>,
    /// Surface samples in the object frame, inside [`BOUNDS`]; exactly the configured count
    /// when the dataset has surface ground truth, empty otherwise.
    pub points: Vec<[f32; 3]>,
    /// Part label per point (index into [`Dataset::part_names`]): same length as `points`
    /// when the dataset has part labels (the synthetic one), **empty** when it has none
    /// (ShapeNet, Pix3D: their [`Dataset::part_names`] is empty too). Consumers must treat
    /// empty labels as "unknown", never as part 0: training a labelled model on them is
    /// refused and `eval` reports no label figures.
    pub point_labels: Vec<u8>,
    /// `R^3` solid occupancy, 0/1, index `x*R*R + y*R + z`, cell centre
    /// `-0.5 + (i + 0.5) / R`; empty when the dataset has no volumetric ground truth.
    pub voxels: Vec<u8>,
    /// Voxel resolution `R` (0 when `voxels` is empty).
    pub voxel_res: u32,
    /// Query points with signed distance (negative inside), half near the surface, half
    /// uniform in the bounds; empty when the dataset has no volumetric ground truth.
    pub sdf: Vec<([f32; 3], f32)>,
    /// The camera that took the picture.
    pub camera: Camera,
}

impl Sample {
    /// The picture as `C x H x W` f32 normalised with `x = (pixel / 255 - mean) / std`
    /// (the contract's `image` input, RGB order).
    pub fn image_chw(&self, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
        let hw = (self.width * self.height) as usize;
        let mut out = vec![0.0f32; 3 * hw];
        for (i, px) in self.image.chunks_exact(3).take(hw).enumerate() {
            for c in 0..3 {
                out[c * hw + i] = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
            }
        }
        out
    }

    /// Moves the surface points into the *viewer-centred* frame of [`Self::camera`]: rotated
    /// into the camera's axes (x right, y down, z forward, the contract's `camera` frame),
    /// then re-centred on their bounding box and scaled so its longest side is 1 (inside
    /// [`BOUNDS`], like the object frame). The target then no longer depends on the azimuth
    /// the picture was taken from, which a symmetric object (table, mug, vase) does not show.
    /// Voxels and SDF samples are left in the object frame (point models only).
    pub fn into_camera_frame(mut self) -> Self {
        self.points = camera_frame_points(&self.points, &self.camera);
        self
    }

    /// Occupancy of the SDF samples (1 inside, 0 outside), same order as `sdf`.
    pub fn occupancy(&self) -> Vec<f32> {
        self.sdf
            .iter()
            .map(|&(_, d)| if d < 0.0 { 1.0 } else { 0.0 })
            .collect()
    }
}

/// A source of samples. Indices `0..len()` enumerate (object, view) pairs of one split.
pub trait Dataset: Send + Sync {
    /// Number of samples (object views) in this split.
    fn len(&self) -> usize;
    /// True when the split holds no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The `i`-th sample; deterministic (the same `i` always gives the same sample).
    fn get(&self, i: usize) -> Result<Sample, DataError>;
    /// Indices of all samples showing the same object as sample `i` (including `i`), in view
    /// order: the sequences a multi-view fusion model trains on.
    fn views_of(&self, i: usize) -> Vec<usize>;
    /// Class names, index = `Sample::class_id`.
    fn class_names(&self) -> &[String];
    /// Part names, index = `Sample::point_labels` value; empty when the dataset has no
    /// part labels.
    fn part_names(&self) -> &[String];
}

/// Object-frame points rotated into `camera`'s axes (no translation), re-centred on their
/// bounding box and scaled to a longest side of 1; see [`Sample::into_camera_frame`].
pub fn camera_frame_points(points: &[[f32; 3]], camera: &Camera) -> Vec<[f32; 3]> {
    let r = camera.rotation();
    let rot: Vec<[f32; 3]> = points
        .iter()
        .map(|&p| [dot(r[0], p), dot(r[1], p), dot(r[2], p)])
        .collect();
    let mut lo = [f32::INFINITY; 3];
    let mut hi = [f32::NEG_INFINITY; 3];
    for p in &rot {
        for k in 0..3 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    let side = (0..3).map(|k| hi[k] - lo[k]).fold(0.0f32, f32::max);
    if !(side.is_finite() && side > 0.0) {
        return rot;
    }
    let c = scale(add(lo, hi), 0.5);
    rot.iter().map(|&p| scale(sub(p, c), 1.0 / side)).collect()
}

// ---------------------------------------------------------------- small vector helpers

pub(crate) fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub(crate) fn add(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
pub(crate) fn scale(a: [f32; 3], s: f32) -> [f32; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}
pub(crate) fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub(crate) fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
pub(crate) fn norm(a: [f32; 3]) -> f32 {
    dot(a, a).sqrt()
}
pub(crate) fn normalize(a: [f32; 3]) -> [f32; 3] {
    let n = norm(a);
    if n > 0.0 {
        scale(a, 1.0 / n)
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_projects_origin_to_centre() {
        let cam = Camera {
            azimuth_deg: 47.0,
            elevation_deg: 25.0,
            in_plane_deg: 10.0,
            distance: 2.5,
            fov_deg: 40.0,
            target: [0.0; 3],
        };
        let p = cam.project([0.0; 3], 64).unwrap();
        assert!((p[0] - 32.0).abs() < 1e-4 && (p[1] - 32.0).abs() < 1e-4);
        assert!((p[2] - 2.5).abs() < 1e-5);
        // +y (up) projects above the centre when there is no roll.
        let cam0 = Camera {
            in_plane_deg: 0.0,
            ..cam
        };
        let up = cam0.project([0.0, 0.3, 0.0], 64).unwrap();
        assert!(up[1] < 32.0, "{up:?}");
        assert!((up[0] - 32.0).abs() < 1e-3);
    }

    #[test]
    fn camera_frame_points_follow_the_camera_and_stay_in_bounds() {
        let cam = Camera {
            azimuth_deg: 90.0,
            elevation_deg: 0.0,
            ..Camera::default()
        };
        // a long thin bar along object x, a short stub along +y
        let mut pts: Vec<[f32; 3]> = (0..=10)
            .map(|i| [i as f32 / 10.0 - 0.5, 0.0, 0.0])
            .collect();
        pts.push([0.0, 0.25, 0.0]);
        let q = camera_frame_points(&pts, &cam);
        // camera on +x looking at -x: object x is the viewing axis (z), object +y is up
        // (camera -y); the bar spans z with length 1, centred
        let (zmin, zmax) = q
            .iter()
            .fold((f32::MAX, f32::MIN), |a, p| (a.0.min(p[2]), a.1.max(p[2])));
        assert!((zmax - zmin - 1.0).abs() < 1e-5 && (zmax + zmin).abs() < 1e-5);
        assert!(q.iter().all(|p| p[0].abs() < 1e-5));
        let stub = q[11];
        assert!(stub[1] < 0.0, "object up must be camera -y: {stub:?}");
        for p in &q {
            assert!(p.iter().all(|c| c.abs() <= 0.5 + 1e-6));
        }
        // distances are scaled uniformly (1 here: the bar already had length 1)
        let d = |a: [f32; 3], b: [f32; 3]| norm(sub(a, b));
        assert!((d(q[0], q[11]) - d(pts[0], pts[11])).abs() < 1e-5);
    }

    #[test]
    fn split_by_key_is_stable_and_balanced() {
        let mut n = [0usize; 3];
        for i in 0..2000 {
            let s = Split::of_key(7, &format!("obj{i}"));
            assert_eq!(s, Split::of_key(7, &format!("obj{i}")));
            n[s as usize] += 1;
        }
        assert!(n[0] > 1450 && n[0] < 1750, "{n:?}");
        assert!(n[1] > 120 && n[2] > 120, "{n:?}");
        assert_eq!("valid".parse::<Split>().unwrap(), Split::Val);
    }
}
