//! Head decoding: network outputs -> point clouds, surface voxels, meshes.
//!
//! Every function checks the lengths it is given against the model's declared shapes and
//! returns an error instead of indexing out of bounds; non-finite coordinates are dropped
//! (and counted) rather than sent.

use crate::meta::{Bounds, ModelMeta};

/// Errors of decoding a head's outputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// An output's length does not match what the metadata declares.
    #[error("output `{name}` has {got} values, expected {want}")]
    Length {
        name: &'static str,
        got: usize,
        want: usize,
    },
    /// Something else is inconsistent.
    #[error("{0}")]
    Invalid(String),
}

fn check_len(name: &'static str, v: &[f32], want: usize) -> Result<(), HeadError> {
    if v.len() != want {
        return Err(HeadError::Length {
            name,
            got: v.len(),
            want,
        });
    }
    Ok(())
}

/// One reconstruction hypothesis: points with optional per-point attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cloud {
    pub points: Vec<[f32; 3]>,
    /// Class id per point (argmax of the label logits).
    pub labels: Option<Vec<u8>>,
    /// Confidence per point in [0, 1].
    pub confidence: Option<Vec<f32>>,
}

/// A triangle mesh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    pub vertices: Vec<[f32; 3]>,
    pub faces: Vec<[u32; 3]>,
    /// Class id per vertex.
    pub labels: Option<Vec<u8>>,
}

/// Voxel grid result: the occupied cells (bitmap, wire order) and the surface points.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VoxelGrid {
    pub resolution: usize,
    /// `occupied[x + r*(y + r*z)]`.
    pub occupied: Vec<bool>,
}

/// What a head decoded from one frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconstruction {
    /// Point hypotheses, most likely first (points head: K of them; other heads: one, the
    /// surface points).
    pub clouds: Vec<Cloud>,
    /// Mesh heads and implicit heads (marching cubes) give a mesh.
    pub mesh: Option<Mesh>,
    /// Voxel heads give the grid.
    pub voxels: Option<VoxelGrid>,
    /// Non-finite coordinates dropped.
    pub dropped_nonfinite: usize,
    /// Implicit head: decoder queries made.
    pub queries: u64,
}

impl Reconstruction {
    /// Points of the first (most likely) hypothesis.
    pub fn points(&self) -> &[[f32; 3]] {
        self.clouds
            .first()
            .map(|c| c.points.as_slice())
            .unwrap_or(&[])
    }
}

fn argmax(v: &[f32]) -> u8 {
    let mut best = 0usize;
    let mut bv = f32::NEG_INFINITY;
    for (i, &x) in v.iter().enumerate() {
        if x > bv {
            bv = x;
            best = i;
        }
    }
    best.min(255) as u8
}

/// points head: `points` [1,K,N,3], optional `labels` [1,K,N,L], `confidence` [1,K,N].
pub fn decode_points(
    meta: &ModelMeta,
    points: &[f32],
    labels: Option<&[f32]>,
    confidence: Option<&[f32]>,
) -> Result<Reconstruction, HeadError> {
    let (n, k) = meta
        .points
        .ok_or_else(|| HeadError::Invalid("not a points model".into()))?;
    check_len("points", points, k * n * 3)?;
    let l = meta.classes.len();
    if let Some(lab) = labels {
        if l == 0 {
            return Err(HeadError::Invalid("labels output without classes".into()));
        }
        check_len("labels", lab, k * n * l)?;
    }
    if let Some(c) = confidence {
        check_len("confidence", c, k * n)?;
    }
    let mut out = Reconstruction::default();
    for h in 0..k {
        let mut cloud = Cloud {
            points: Vec::with_capacity(n),
            labels: labels.map(|_| Vec::with_capacity(n)),
            confidence: confidence.map(|_| Vec::with_capacity(n)),
        };
        for i in 0..n {
            let j = h * n + i;
            let p = [points[3 * j], points[3 * j + 1], points[3 * j + 2]];
            if !p.iter().all(|c| c.is_finite()) {
                out.dropped_nonfinite += 1;
                continue;
            }
            cloud.points.push(p);
            if let (Some(dst), Some(src)) = (cloud.labels.as_mut(), labels) {
                dst.push(argmax(&src[j * l..(j + 1) * l]));
            }
            if let (Some(dst), Some(src)) = (cloud.confidence.as_mut(), confidence) {
                let c = src[j];
                dst.push(if c.is_finite() {
                    c.clamp(0.0, 1.0)
                } else {
                    0.0
                });
            }
        }
        out.clouds.push(cloud);
    }
    Ok(out)
}

/// Logit of a probability threshold.
pub fn logit(p: f32) -> f32 {
    (p / (1.0 - p)).ln()
}

/// Centre of voxel (i, j, k) of an R grid in `b`.
pub fn voxel_centre(b: &Bounds, r: usize, i: usize, j: usize, k: usize) -> [f32; 3] {
    let e = b.extent();
    let f = |idx: usize, a: usize| b.min[a] + (idx as f32 + 0.5) / r as f32 * e[a];
    [f(i, 0), f(j, 1), f(k, 2)]
}

/// voxels head: `occupancy` [1,R,R,R] logits (element [i,j,k] = cell x=i, y=j, z=k).
/// Gives the occupied grid and, as the cloud, the centres of the surface cells: occupied
/// cells with at least one free 6-neighbour (or on the grid border).
pub fn decode_voxels(meta: &ModelMeta, occupancy: &[f32]) -> Result<Reconstruction, HeadError> {
    let (r, t) = meta
        .voxels
        .ok_or_else(|| HeadError::Invalid("not a voxels model".into()))?;
    check_len("occupancy", occupancy, r * r * r)?;
    let thr = logit(t);
    // wire order: x + r*(y + r*z); model order: ((i*r)+j)*r+k with i=x
    let mut occ = vec![false; r * r * r];
    for i in 0..r {
        for j in 0..r {
            for k in 0..r {
                let v = occupancy[(i * r + j) * r + k];
                occ[i + r * (j + r * k)] = v > thr; // NaN -> free
            }
        }
    }
    let at = |x: usize, y: usize, z: usize| occ[x + r * (y + r * z)];
    let mut pts = Vec::new();
    for z in 0..r {
        for y in 0..r {
            for x in 0..r {
                if !at(x, y, z) {
                    continue;
                }
                let border = x == 0 || y == 0 || z == 0 || x + 1 == r || y + 1 == r || z + 1 == r;
                let surface = border
                    || !at(x - 1, y, z)
                    || !at(x + 1, y, z)
                    || !at(x, y - 1, z)
                    || !at(x, y + 1, z)
                    || !at(x, y, z - 1)
                    || !at(x, y, z + 1);
                if surface {
                    pts.push(voxel_centre(&meta.bounds, r, x, y, z));
                }
            }
        }
    }
    Ok(Reconstruction {
        clouds: vec![Cloud {
            points: pts,
            ..Cloud::default()
        }],
        voxels: Some(VoxelGrid {
            resolution: r,
            occupied: occ,
        }),
        ..Reconstruction::default()
    })
}

/// mesh head: vertices = template + `offsets` [1,V,3]; faces from the metadata; optional
/// `labels` [1,V,L]. The cloud is the vertex set.
pub fn decode_mesh(
    meta: &ModelMeta,
    offsets: &[f32],
    labels: Option<&[f32]>,
) -> Result<Reconstruction, HeadError> {
    let m = meta
        .mesh
        .as_ref()
        .ok_or_else(|| HeadError::Invalid("not a mesh model".into()))?;
    let v = m.template.len();
    check_len("offsets", offsets, v * 3)?;
    let l = meta.classes.len();
    if let Some(lab) = labels {
        check_len("labels", lab, v * l.max(1))?;
    }
    let mut out = Reconstruction::default();
    let mut vertices = Vec::with_capacity(v);
    for (i, t) in m.template.iter().enumerate() {
        let mut p = [
            t[0] + offsets[3 * i],
            t[1] + offsets[3 * i + 1],
            t[2] + offsets[3 * i + 2],
        ];
        if !p.iter().all(|c| c.is_finite()) {
            // keep the index valid for the faces: fall back to the template vertex
            out.dropped_nonfinite += 1;
            p = *t;
        }
        vertices.push(p);
    }
    let vlabels = labels.map(|lab| {
        (0..v)
            .map(|i| argmax(&lab[i * l..(i + 1) * l]))
            .collect::<Vec<u8>>()
    });
    out.clouds.push(Cloud {
        points: vertices.clone(),
        labels: vlabels.clone(),
        confidence: None,
    });
    out.mesh = Some(Mesh {
        vertices,
        faces: m.faces.clone(),
        labels: vlabels,
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(head: &str, extra: &[(&str, &str)]) -> ModelMeta {
        let mut m: BTreeMap<String, String> = [
            ("shapecast.contract", "1"),
            ("shapecast.model_id", "t"),
            ("shapecast.input.width", "8"),
            ("shapecast.input.height", "8"),
            ("shapecast.input.color", "rgb"),
            ("shapecast.input.mean", "0,0,0"),
            ("shapecast.input.std", "1,1,1"),
            ("shapecast.input.crop", "stretch"),
            ("shapecast.frame", "object"),
            ("shapecast.units", "normalized"),
            ("shapecast.bounds", "-1,-1,-1,1,1,1"),
            ("shapecast.precision", "f32"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        m.insert("shapecast.head".into(), head.into());
        for (k, v) in extra {
            m.insert((*k).into(), (*v).into());
        }
        ModelMeta::parse(&m).unwrap()
    }

    #[test]
    fn points_with_labels_confidence_and_nan() {
        let m = meta(
            "points",
            &[
                ("shapecast.points", "2"),
                ("shapecast.hypotheses", "2"),
                ("shapecast.classes", "a,b"),
            ],
        );
        let pts = [
            0.0,
            0.1,
            0.2,
            f32::NAN,
            0.0,
            0.0,
            1.0,
            1.0,
            1.0,
            -1.0,
            -1.0,
            -1.0,
        ];
        let lab = [0.0, 1.0, 5.0, 0.0, 2.0, 1.0, -1.0, 3.0];
        let conf = [0.5, 0.7, 2.0, f32::NAN];
        let r = decode_points(&m, &pts, Some(&lab), Some(&conf)).unwrap();
        assert_eq!(r.clouds.len(), 2);
        assert_eq!(r.clouds[0].points, vec![[0.0, 0.1, 0.2]]);
        assert_eq!(r.clouds[0].labels, Some(vec![1]));
        assert_eq!(r.clouds[1].labels, Some(vec![0, 1]));
        assert_eq!(r.clouds[1].confidence, Some(vec![1.0, 0.0]));
        assert_eq!(r.dropped_nonfinite, 1);
        assert!(matches!(
            decode_points(&m, &pts[..9], None, None),
            Err(HeadError::Length { name: "points", .. })
        ));
        assert!(decode_points(&m, &pts, Some(&lab[..3]), None).is_err());
    }

    #[test]
    fn voxels_surface_of_a_solid_cube() {
        let m = meta("voxels", &[("shapecast.voxels.resolution", "6")]);
        let r = 6;
        let mut occ = vec![-5.0f32; r * r * r];
        for i in 1..5 {
            for j in 1..5 {
                for k in 1..5 {
                    occ[(i * r + j) * r + k] = 5.0;
                }
            }
        }
        let rec = decode_voxels(&m, &occ).unwrap();
        // 4^3 cube: 64 occupied, 8 interior (2^3), 56 surface
        assert_eq!(
            rec.voxels
                .as_ref()
                .unwrap()
                .occupied
                .iter()
                .filter(|b| **b)
                .count(),
            64
        );
        assert_eq!(rec.points().len(), 56);
        let c = voxel_centre(&m.bounds, r, 0, 0, 0);
        assert!((c[0] + 1.0 - 1.0 / 6.0).abs() < 1e-6, "{c:?}");
        assert!(decode_voxels(&m, &occ[1..]).is_err());
    }

    #[test]
    fn mesh_template_plus_offsets() {
        let m = meta(
            "mesh",
            &[
                ("shapecast.mesh.template", "0,0,0,1,0,0,0,1,0"),
                ("shapecast.mesh.faces", "0,1,2"),
            ],
        );
        let off = [0.1, 0.0, 0.0, 0.0, 0.1, 0.0, f32::INFINITY, 0.0, 0.0];
        let r = decode_mesh(&m, &off, None).unwrap();
        let mesh = r.mesh.unwrap();
        assert_eq!(
            mesh.vertices,
            vec![[0.1, 0.0, 0.0], [1.0, 0.1, 0.0], [0.0, 1.0, 0.0]]
        );
        assert_eq!(mesh.faces, vec![[0, 1, 2]]);
        assert_eq!(r.dropped_nonfinite, 1);
    }
}
