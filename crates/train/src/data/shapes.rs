//! Procedural shapes: unions of primitives with exact (or sign-exact) signed distance
//! functions and matching tessellations, grouped into object classes with part labels.
//!
//! Primitives: box, solid of revolution of a 2D profile polygon ("lathe": cylinders, cones,
//! frusta, hollow mugs, lamp shades, vases), capsule, torus; each placed by a rigid transform
//! and optionally clipped by a half-space. A [`Shape`] is their union, normalised into the
//! object frame (`[-0.5, 0.5]^3`, y up, longest side `1 - 2 * margin`).

use rand::Rng;

use super::mesh::Mesh;
use super::DataError;

/// Object classes the generator makes, index = class id.
pub const CLASS_NAMES: [&str; 6] = ["chair", "table", "mug", "lamp", "airplane", "vase"];

/// Part names of all generated shapes, index = part label. User meshes use `surface`.
pub const PART_NAMES: [&str; 15] = [
    "seat", "back", "leg", "arm", "top", "body", "handle", "base", "stem", "shade", "fuselage",
    "wing", "tail", "engine", "surface",
];

/// Part label of user meshes.
pub const PART_SURFACE: u8 = 14;

const SEAT: u8 = 0;
const BACK: u8 = 1;
const LEG: u8 = 2;
const ARM: u8 = 3;
const TOP: u8 = 4;
const BODY: u8 = 5;
const HANDLE: u8 = 6;
const BASE: u8 = 7;
const STEM: u8 = 8;
const SHADE: u8 = 9;
const FUSELAGE: u8 = 10;
const WING: u8 = 11;
const TAIL: u8 = 12;
const ENGINE: u8 = 13;

const SEGMENTS: usize = 24;

/// A primitive in its local frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    /// Axis-aligned box with half extents.
    Box {
        /// Half extents.
        half: [f32; 3],
    },
    /// Solid of revolution about the local y axis of a closed polygon in the (radius, y)
    /// half-plane (radius >= 0).
    Lathe {
        /// Profile vertices `(r, y)`.
        profile: Vec<[f32; 2]>,
    },
    /// Segment from `(0, -half_len, 0)` to `(0, half_len, 0)` thickened by `radius`.
    Capsule {
        /// Half length of the axis segment.
        half_len: f32,
        /// Radius.
        radius: f32,
    },
    /// Torus about the local z axis (ring in the xy plane).
    Torus {
        /// Ring radius.
        major: f32,
        /// Tube radius.
        minor: f32,
    },
}

/// A placed, labelled primitive: local = `rot^T (p - pos)`, optionally clipped to
/// `local.x >= clip_x`.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The primitive.
    pub prim: Prim,
    /// Rotation, local -> object (columns are the local axes), row-major.
    pub rot: [[f32; 3]; 3],
    /// Translation.
    pub pos: [f32; 3],
    /// Keep only `local.x >= clip_x` (used by mug handles).
    pub clip_x: Option<f32>,
    /// Part label.
    pub part: u8,
}

/// A union of primitives in the normalised object frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Class id (index into [`CLASS_NAMES`]).
    pub class_id: u16,
    /// The primitives, in raw (pre-normalisation) coordinates.
    pub prims: Vec<Placed>,
    /// Normalisation `p_obj = (p_raw - centre) * scale`.
    pub centre: [f32; 3],
    /// See `centre`.
    pub scale: f32,
}

const I3: [[f32; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

fn rot_x(a: f32) -> [[f32; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}
fn rot_y(a: f32) -> [[f32; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}
fn rot_z(a: f32) -> [[f32; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}
fn matmul(a: [[f32; 3]; 3], b: [[f32; 3]; 3]) -> [[f32; 3]; 3] {
    let mut r = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            r[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    r
}
fn mul_v(m: [[f32; 3]; 3], v: [f32; 3]) -> [f32; 3] {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}
fn mul_tv(m: [[f32; 3]; 3], v: [f32; 3]) -> [f32; 3] {
    [
        m[0][0] * v[0] + m[1][0] * v[1] + m[2][0] * v[2],
        m[0][1] * v[0] + m[1][1] * v[1] + m[2][1] * v[2],
        m[0][2] * v[0] + m[1][2] * v[1] + m[2][2] * v[2],
    ]
}

/// Signed distance to a closed polygon (negative inside).
///
/// With `skip_axis`, edges lying on the axis `x = 0` count for the inside test but not for the
/// distance (a solid of revolution has no surface there).
fn sd_polygon(p: [f32; 2], v: &[[f32; 2]], skip_axis: bool) -> f32 {
    let n = v.len();
    if n < 3 {
        return f32::INFINITY;
    }
    let mut d = f32::INFINITY;
    let mut s = 1.0f32;
    let mut j = n - 1;
    for i in 0..n {
        let e = [v[j][0] - v[i][0], v[j][1] - v[i][1]];
        let w = [p[0] - v[i][0], p[1] - v[i][1]];
        let ee = e[0] * e[0] + e[1] * e[1];
        let t = if ee > 0.0 {
            ((w[0] * e[0] + w[1] * e[1]) / ee).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let on_axis = skip_axis && v[i][0] <= 1e-9 && v[j][0] <= 1e-9;
        if !on_axis {
            let b = [w[0] - e[0] * t, w[1] - e[1] * t];
            d = d.min(b[0] * b[0] + b[1] * b[1]);
        }
        let c1 = p[1] >= v[i][1];
        let c2 = p[1] < v[j][1];
        let c3 = e[0] * w[1] > e[1] * w[0];
        if (c1 && c2 && c3) || (!c1 && !c2 && !c3) {
            s = -s;
        }
        j = i;
    }
    s * d.sqrt()
}

impl Prim {
    /// Signed distance in the local frame.
    pub fn sdf(&self, q: [f32; 3]) -> f32 {
        match self {
            Prim::Box { half } => {
                let d = [
                    q[0].abs() - half[0],
                    q[1].abs() - half[1],
                    q[2].abs() - half[2],
                ];
                let o = [d[0].max(0.0), d[1].max(0.0), d[2].max(0.0)];
                (o[0] * o[0] + o[1] * o[1] + o[2] * o[2]).sqrt() + d[0].max(d[1]).max(d[2]).min(0.0)
            }
            Prim::Lathe { profile } => sd_polygon(
                [(q[0] * q[0] + q[2] * q[2]).sqrt().max(1e-7), q[1]],
                profile,
                true,
            ),
            Prim::Capsule { half_len, radius } => {
                let y = q[1].clamp(-half_len, *half_len);
                let d = [q[0], q[1] - y, q[2]];
                (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt() - radius
            }
            Prim::Torus { major, minor } => {
                let a = (q[0] * q[0] + q[1] * q[1]).sqrt() - major;
                (a * a + q[2] * q[2]).sqrt() - minor
            }
        }
    }

    /// Tessellation in the local frame.
    pub fn tessellate(&self) -> Mesh {
        let mut m = Mesh::default();
        match self {
            Prim::Box { half } => {
                let h = *half;
                for i in 0..8 {
                    m.vertices.push([
                        if i & 1 == 0 { -h[0] } else { h[0] },
                        if i & 2 == 0 { -h[1] } else { h[1] },
                        if i & 4 == 0 { -h[2] } else { h[2] },
                    ]);
                }
                let quads = [
                    [0, 4, 6, 2], // -x
                    [1, 3, 7, 5], // +x
                    [0, 1, 5, 4], // -y
                    [2, 6, 7, 3], // +y
                    [0, 2, 3, 1], // -z
                    [4, 5, 7, 6], // +z
                ];
                for q in quads {
                    m.faces.push([q[0], q[1], q[2]]);
                    m.faces.push([q[0], q[2], q[3]]);
                }
            }
            Prim::Lathe { profile } => {
                let n = SEGMENTS as u32;
                let np = profile.len() as u32;
                for a in 0..SEGMENTS {
                    let t = a as f32 / SEGMENTS as f32 * std::f32::consts::TAU;
                    let (s, c) = t.sin_cos();
                    for p in profile {
                        m.vertices.push([p[0] * c, p[1], p[0] * s]);
                    }
                }
                for a in 0..n {
                    let b = (a + 1) % n;
                    for i in 0..np {
                        let j = (i + 1) % np;
                        let (p0, p1) = (a * np + i, a * np + j);
                        let (q0, q1) = (b * np + i, b * np + j);
                        let (ri, rj) = (profile[i as usize][0], profile[j as usize][0]);
                        if ri > 1e-9 {
                            m.faces.push([p0, q0, p1]);
                        }
                        if rj > 1e-9 {
                            m.faces.push([p1, q0, q1]);
                        }
                    }
                }
            }
            Prim::Capsule { half_len, radius } => {
                let rings = SEGMENTS / 2;
                let n = SEGMENTS as u32;
                // Latitude rings from the bottom pole to the top pole; the equator is doubled
                // (bottom hemisphere at -half_len, top at +half_len).
                let mut lat = Vec::new();
                for k in 0..=rings / 2 {
                    let phi = -std::f32::consts::FRAC_PI_2
                        + k as f32 / rings as f32 * std::f32::consts::PI;
                    lat.push((phi, -half_len));
                }
                for k in rings / 2..=rings {
                    let phi = -std::f32::consts::FRAC_PI_2
                        + k as f32 / rings as f32 * std::f32::consts::PI;
                    lat.push((phi, *half_len));
                }
                for &(phi, off) in &lat {
                    for a in 0..SEGMENTS {
                        let t = a as f32 / SEGMENTS as f32 * std::f32::consts::TAU;
                        m.vertices.push([
                            radius * phi.cos() * t.cos(),
                            radius * phi.sin() + off,
                            radius * phi.cos() * t.sin(),
                        ]);
                    }
                }
                for k in 0..lat.len() as u32 - 1 {
                    for a in 0..n {
                        let b = (a + 1) % n;
                        let (p0, p1, q0, q1) =
                            (k * n + a, (k + 1) * n + a, k * n + b, (k + 1) * n + b);
                        // Skip the degenerate triangles at the poles.
                        if k > 0 {
                            m.faces.push([p0, q0, p1]);
                        }
                        if k + 2 < lat.len() as u32 {
                            m.faces.push([p1, q0, q1]);
                        }
                    }
                }
            }
            Prim::Torus { major, minor } => {
                let nu = SEGMENTS as u32;
                let nv = (SEGMENTS / 2) as u32;
                for u in 0..nu {
                    let tu = u as f32 / nu as f32 * std::f32::consts::TAU;
                    for v in 0..nv {
                        let tv = v as f32 / nv as f32 * std::f32::consts::TAU;
                        let r = major + minor * tv.cos();
                        m.vertices
                            .push([r * tu.cos(), r * tu.sin(), minor * tv.sin()]);
                    }
                }
                for u in 0..nu {
                    let u1 = (u + 1) % nu;
                    for v in 0..nv {
                        let v1 = (v + 1) % nv;
                        m.faces.push([u * nv + v, u1 * nv + v, u * nv + v1]);
                        m.faces.push([u * nv + v1, u1 * nv + v, u1 * nv + v1]);
                    }
                }
            }
        }
        m.face_parts = vec![0; m.faces.len()];
        m.part_names = vec!["body".into()];
        m
    }
}

impl Placed {
    fn new(prim: Prim, rot: [[f32; 3]; 3], pos: [f32; 3], part: u8) -> Self {
        Self {
            prim,
            rot,
            pos,
            clip_x: None,
            part,
        }
    }

    /// Signed distance in raw coordinates.
    pub fn sdf(&self, p: [f32; 3]) -> f32 {
        let q = mul_tv(
            self.rot,
            [p[0] - self.pos[0], p[1] - self.pos[1], p[2] - self.pos[2]],
        );
        let d = self.prim.sdf(q);
        match self.clip_x {
            Some(cx) => d.max(cx - q[0]),
            None => d,
        }
    }
}

impl Shape {
    /// Signed distance at an object-frame point (negative inside).
    pub fn sdf(&self, p: [f32; 3]) -> f32 {
        let r = self.to_raw(p);
        self.prims
            .iter()
            .map(|pr| pr.sdf(r))
            .fold(f32::INFINITY, f32::min)
            * self.scale
    }

    /// Signed distance of primitive `i` alone (object frame).
    pub fn prim_sdf(&self, i: usize, p: [f32; 3]) -> f32 {
        self.prims[i].sdf(self.to_raw(p)) * self.scale
    }

    fn to_raw(&self, p: [f32; 3]) -> [f32; 3] {
        let s = 1.0 / self.scale;
        [
            p[0] * s + self.centre[0],
            p[1] * s + self.centre[1],
            p[2] * s + self.centre[2],
        ]
    }

    /// Tessellation of every primitive in the object frame, faces labelled by part;
    /// `prim_of_face` gives the primitive each face came from.
    pub fn mesh(&self) -> (Mesh, Vec<u16>) {
        let mut out = Mesh {
            part_names: PART_NAMES.iter().map(|s| s.to_string()).collect(),
            ..Mesh::default()
        };
        let mut prim_of_face = Vec::new();
        for (i, pl) in self.prims.iter().enumerate() {
            let mut m = pl.prim.tessellate();
            if let Some(cx) = pl.clip_x {
                let keep: Vec<[u32; 3]> = m
                    .faces
                    .iter()
                    .copied()
                    .filter(|f| f.iter().any(|&v| m.vertices[v as usize][0] >= cx))
                    .collect();
                m.faces = keep;
                m.face_parts = vec![0; m.faces.len()];
            }
            let s = self.scale;
            let c = self.centre;
            for v in &mut m.vertices {
                let w = mul_v(pl.rot, *v);
                *v = [
                    (w[0] + pl.pos[0] - c[0]) * s,
                    (w[1] + pl.pos[1] - c[1]) * s,
                    (w[2] + pl.pos[2] - c[2]) * s,
                ];
            }
            prim_of_face.extend(std::iter::repeat_n(i as u16, m.faces.len()));
            out.append(&m, pl.part);
        }
        (out, prim_of_face)
    }

    /// Surface samples `(point, part)` of the union: area-weighted on the tessellation, keeping
    /// only points on the union's boundary (not buried inside another primitive).
    pub fn sample_surface<R: Rng>(
        &self,
        mesh: &Mesh,
        prim_of_face: &[u16],
        n: usize,
        rng: &mut R,
    ) -> Result<Vec<([f32; 3], u8)>, DataError> {
        const TOL: f32 = 0.01;
        // Each candidate carries its face's primitive; sample faces via the mesh sampler
        // with the primitive index stashed as the part.
        let mut tagged = mesh.clone();
        tagged.face_parts = prim_of_face.iter().map(|&p| p.min(254) as u8).collect();
        let mut out = Vec::with_capacity(n);
        for _round in 0..8 {
            let need = n - out.len();
            let cands = tagged.sample_surface(need + need / 2 + 16, rng)?;
            for (p, prim, _) in cands {
                let i = prim as usize;
                if self.prim_sdf(i, p) > TOL || self.sdf(p) < -TOL {
                    continue;
                }
                out.push((p, self.prims[i].part));
                if out.len() == n {
                    return Ok(out);
                }
            }
        }
        Err(DataError::Degenerate(format!(
            "only {} of {n} surface samples lie on the union",
            out.len()
        )))
    }

    fn finish(class_id: u16, prims: Vec<Placed>, margin: f32) -> Result<Shape, DataError> {
        let mut s = Shape {
            class_id,
            prims,
            centre: [0.0; 3],
            scale: 1.0,
        };
        let (mut m, _) = s.mesh();
        let (c, k) = m.normalize(margin)?;
        s.centre = c;
        s.scale = k;
        Ok(s)
    }
}

fn u<R: Rng>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    rng.gen_range(lo..hi)
}

fn bx(hx: f32, hy: f32, hz: f32, pos: [f32; 3], part: u8) -> Placed {
    Placed::new(Prim::Box { half: [hx, hy, hz] }, I3, pos, part)
}

fn cylinder(r0: f32, r1: f32, y0: f32, y1: f32, pos: [f32; 3], part: u8) -> Placed {
    Placed::new(
        Prim::Lathe {
            profile: vec![[0.0, y0], [r0, y0], [r1, y1], [0.0, y1]],
        },
        I3,
        pos,
        part,
    )
}

/// A capsule from `a` to `b`.
fn capsule(a: [f32; 3], b: [f32; 3], r: f32, part: u8) -> Placed {
    let d = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt().max(1e-6);
    let y = [d[0] / len, d[1] / len, d[2] / len];
    let helper = if y[1].abs() < 0.9 {
        [0.0, 1.0, 0.0]
    } else {
        [1.0, 0.0, 0.0]
    };
    let x = super::normalize(super::cross(y, helper));
    let z = super::cross(x, y);
    let rot = [[x[0], y[0], z[0]], [x[1], y[1], z[1]], [x[2], y[2], z[2]]];
    Placed::new(
        Prim::Capsule {
            half_len: 0.5 * len,
            radius: r,
        },
        rot,
        [
            0.5 * (a[0] + b[0]),
            0.5 * (a[1] + b[1]),
            0.5 * (a[2] + b[2]),
        ],
        part,
    )
}

/// Generates a random shape of class `class_id` (see [`CLASS_NAMES`]).
pub fn generate<R: Rng>(class_id: u16, rng: &mut R) -> Result<Shape, DataError> {
    let prims = match class_id {
        0 => chair(rng),
        1 => table(rng),
        2 => mug(rng),
        3 => lamp(rng),
        4 => airplane(rng),
        5 => vase(rng),
        other => {
            return Err(DataError::Config(format!(
                "no procedural class {other} (0..{})",
                CLASS_NAMES.len()
            )))
        }
    };
    Shape::finish(class_id, prims, 0.02)
}

fn legs4<R: Rng>(rng: &mut R, w: f32, d: f32, h: f32, part: u8, out: &mut Vec<Placed>) {
    let inset = u(rng, 0.03, 0.12);
    let round = rng.gen_bool(0.5);
    let r = u(rng, 0.015, 0.035);
    let splay = if rng.gen_bool(0.3) {
        u(rng, 0.0, 0.06)
    } else {
        0.0
    };
    for (sx, sz) in [(-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)] {
        let x = sx * (w * 0.5 - inset);
        let z = sz * (d * 0.5 - inset);
        if round || splay > 0.0 {
            out.push(capsule(
                [x + sx * splay, 0.0, z + sz * splay],
                [x, h, z],
                r,
                part,
            ));
        } else {
            out.push(bx(r, 0.5 * h, r, [x, 0.5 * h, z], part));
        }
    }
}

fn chair<R: Rng>(rng: &mut R) -> Vec<Placed> {
    let mut v = Vec::new();
    let w = u(rng, 0.4, 0.6);
    let d = u(rng, 0.4, 0.6);
    let t = u(rng, 0.03, 0.08);
    let hs = u(rng, 0.38, 0.5);
    v.push(bx(
        0.5 * w,
        0.5 * t,
        0.5 * d,
        [0.0, hs - 0.5 * t, 0.0],
        SEAT,
    ));
    if rng.gen_bool(0.75) {
        legs4(rng, w, d, hs - t, LEG, &mut v);
    } else {
        // Office chair: column and star base.
        let r = u(rng, 0.025, 0.045);
        v.push(cylinder(r, r, 0.05, hs - t, [0.0; 3], LEG));
        let arms = rng.gen_range(4..=5);
        let len = u(rng, 0.2, 0.3);
        for k in 0..arms {
            let a = k as f32 / arms as f32 * std::f32::consts::TAU;
            v.push(capsule(
                [0.0, 0.05, 0.0],
                [len * a.cos(), 0.02, len * a.sin()],
                0.02,
                LEG,
            ));
        }
    }
    let hb = u(rng, 0.3, 0.6);
    let tb = u(rng, 0.025, 0.06);
    let tilt = u(rng, 0.0, 0.3);
    let mut back = bx(
        0.5 * w * u(rng, 0.8, 1.0),
        0.5 * hb,
        0.5 * tb,
        [0.0; 3],
        BACK,
    );
    back.rot = rot_x(-tilt);
    let c = mul_v(back.rot, [0.0, 0.5 * hb, 0.0]);
    back.pos = [0.0, hs + c[1] - 0.01, -0.5 * d + 0.5 * tb + c[2]];
    v.push(back);
    if rng.gen_bool(0.35) {
        let ha = u(rng, 0.15, 0.25);
        let ta = u(rng, 0.03, 0.06);
        for sx in [-1.0, 1.0] {
            let x = sx * (0.5 * w - 0.5 * ta);
            v.push(bx(0.5 * ta, 0.02, 0.5 * d * 0.9, [x, hs + ha, 0.0], ARM));
            v.push(bx(
                0.5 * ta,
                0.5 * ha,
                0.02,
                [x, hs + 0.5 * ha, 0.4 * d],
                ARM,
            ));
        }
    }
    v
}

fn table<R: Rng>(rng: &mut R) -> Vec<Placed> {
    let mut v = Vec::new();
    let h = u(rng, 0.5, 0.8);
    let t = u(rng, 0.03, 0.07);
    let round = rng.gen_bool(0.3);
    let (w, d) = if round {
        let r = u(rng, 0.4, 0.7);
        v.push(cylinder(r, r, h - t, h, [0.0; 3], TOP));
        (r * 1.4, r * 1.4)
    } else {
        let w = u(rng, 0.8, 1.6);
        let d = u(rng, 0.5, 1.0).min(w);
        v.push(bx(0.5 * w, 0.5 * t, 0.5 * d, [0.0, h - 0.5 * t, 0.0], TOP));
        (w, d)
    };
    if round || rng.gen_bool(0.2) {
        let r = u(rng, 0.03, 0.08);
        v.push(cylinder(r, r, 0.0, h - t, [0.0; 3], LEG));
        let rb = u(rng, 0.2, 0.35);
        v.push(cylinder(
            rb,
            rb * 0.8,
            0.0,
            u(rng, 0.02, 0.05),
            [0.0; 3],
            BASE,
        ));
    } else {
        legs4(rng, w, d, h - t, LEG, &mut v);
        if rng.gen_bool(0.3) {
            // A shelf between the legs.
            let ys = u(rng, 0.1, 0.3) * h;
            v.push(bx(0.45 * w, 0.015, 0.45 * d, [0.0, ys, 0.0], TOP));
        }
    }
    v
}

fn mug<R: Rng>(rng: &mut R) -> Vec<Placed> {
    let r0 = u(rng, 0.3, 0.45);
    let r1 = r0 * u(rng, 0.85, 1.2);
    let h = u(rng, 0.7, 1.2);
    let wall = u(rng, 0.03, 0.06);
    let bottom = u(rng, 0.04, 0.08);
    let body = Placed::new(
        Prim::Lathe {
            profile: vec![
                [0.0, 0.0],
                [r0, 0.0],
                [r1, h],
                [r1 - wall, h],
                [r0 - wall, bottom],
                [0.0, bottom],
            ],
        },
        I3,
        [0.0; 3],
        BODY,
    );
    let major = u(rng, 0.18, 0.3) * h;
    let minor = u(rng, 0.03, 0.05);
    let rm = 0.5 * (r0 + r1);
    let mut handle = Placed::new(
        Prim::Torus { major, minor },
        rot_y(u(rng, -0.2, 0.2)),
        [rm, 0.5 * h, 0.0],
        HANDLE,
    );
    handle.clip_x = Some(-0.5 * wall);
    vec![body, handle]
}

fn lamp<R: Rng>(rng: &mut R) -> Vec<Placed> {
    let mut v = Vec::new();
    let rb = u(rng, 0.15, 0.3);
    let hb = u(rng, 0.03, 0.08);
    v.push(cylinder(rb, rb * u(rng, 0.5, 1.0), 0.0, hb, [0.0; 3], BASE));
    let hs = u(rng, 0.5, 1.2);
    let rs = u(rng, 0.012, 0.03);
    let top = if rng.gen_bool(0.6) {
        v.push(capsule([0.0, hb, 0.0], [0.0, hs, 0.0], rs, STEM));
        [0.0, hs, 0.0]
    } else {
        // Bent arm.
        let elbow = [u(rng, -0.1, 0.1), hs * u(rng, 0.5, 0.7), 0.0];
        let end = [u(rng, 0.2, 0.4), hs, 0.0];
        v.push(capsule([0.0, hb, 0.0], elbow, rs, STEM));
        v.push(capsule(elbow, end, rs, STEM));
        end
    };
    let sb = u(rng, 0.15, 0.35);
    let st = sb * u(rng, 0.3, 0.9);
    let sh = u(rng, 0.15, 0.35);
    let th = u(rng, 0.01, 0.025);
    let y0 = top[1] - 0.5 * sh;
    v.push(Placed::new(
        Prim::Lathe {
            profile: vec![[sb, 0.0], [st, sh], [st - th, sh], [sb - th, 0.0]],
        },
        I3,
        [top[0], y0, top[2]],
        SHADE,
    ));
    v
}

fn airplane<R: Rng>(rng: &mut R) -> Vec<Placed> {
    let mut v = Vec::new();
    let len = u(rng, 1.0, 1.6);
    let rf = u(rng, 0.05, 0.1);
    v.push(capsule(
        [0.0, 0.0, -0.5 * len],
        [0.0, 0.0, 0.5 * len],
        rf,
        FUSELAGE,
    ));
    let span = u(rng, 0.45, 0.75);
    let chord = u(rng, 0.12, 0.28);
    let tw = u(rng, 0.012, 0.025);
    let sweep = u(rng, 0.0, 0.6);
    let dihedral = u(rng, -0.05, 0.12);
    let zw = u(rng, -0.1, 0.15) * len;
    let yw = u(rng, -0.6, 0.4) * rf;
    for sx in [-1.0f32, 1.0] {
        let rot = matmul(rot_y(sx * sweep), rot_z(sx * dihedral));
        let c = mul_v(rot, [sx * 0.5 * span, 0.0, 0.0]);
        v.push(Placed::new(
            Prim::Box {
                half: [0.5 * span, 0.5 * tw, 0.5 * chord],
            },
            rot,
            [c[0], yw + c[1], zw - c[2].abs()],
            WING,
        ));
        if rng.gen_bool(0.6) {
            let re = u(rng, 0.03, 0.06);
            let xe = sx * span * u(rng, 0.25, 0.5);
            let ze = zw - (xe.abs() * sweep.tan()) + 0.3 * chord;
            v.push(capsule(
                [xe, yw - re - 0.5 * tw, ze - 0.1],
                [xe, yw - re - 0.5 * tw, ze + 0.15],
                re,
                ENGINE,
            ));
        }
    }
    // Tail: horizontal stabiliser and vertical fin at the rear (-z).
    let zt = -0.5 * len + 0.08;
    let ss = u(rng, 0.15, 0.3);
    let sc = u(rng, 0.08, 0.15);
    v.push(bx(ss, 0.5 * tw, 0.5 * sc, [0.0, 0.0, zt], TAIL));
    let fh = u(rng, 0.15, 0.3);
    let mut fin = bx(0.5 * tw, 0.5 * fh, 0.5 * sc * 1.3, [0.0; 3], TAIL);
    fin.rot = rot_x(u(rng, 0.0, 0.5));
    let c = mul_v(fin.rot, [0.0, 0.5 * fh, 0.0]);
    fin.pos = [0.0, c[1] + 0.5 * rf, zt + c[2]];
    v.push(fin);
    v
}

fn vase<R: Rng>(rng: &mut R) -> Vec<Placed> {
    let h = u(rng, 0.8, 1.6);
    let k = rng.gen_range(4..8);
    let wall = u(rng, 0.02, 0.04);
    let mut outer = Vec::new();
    for i in 0..=k {
        let y = h * i as f32 / k as f32;
        outer.push([u(rng, 0.12, 0.45), y]);
    }
    let mut profile = vec![[0.0, 0.0]];
    profile.extend(outer.iter().copied());
    let neck = outer[k][0];
    let inner = (neck - wall).max(0.02);
    profile.push([inner, h]);
    profile.push([inner, h * 0.85]);
    profile.push([0.0, h * 0.85]);
    vec![Placed::new(Prim::Lathe { profile }, I3, [0.0; 3], BODY)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn primitive_sdfs_known_values() {
        let b = Prim::Box {
            half: [1.0, 2.0, 3.0],
        };
        assert!((b.sdf([0.0; 3]) + 1.0).abs() < 1e-6);
        assert!((b.sdf([2.0, 0.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!((b.sdf([2.0, 3.0, 0.0]) - 2f32.sqrt()).abs() < 1e-6);
        let c = Prim::Lathe {
            profile: vec![[0.0, -1.0], [0.5, -1.0], [0.5, 1.0], [0.0, 1.0]],
        };
        assert!((c.sdf([0.0, 0.0, 0.0]) + 0.5).abs() < 1e-6);
        assert!((c.sdf([0.0, 0.0, 1.5]) - 1.0).abs() < 1e-6);
        assert!((c.sdf([0.3, 1.5, 0.0]) - 0.5).abs() < 1e-6);
        let cap = Prim::Capsule {
            half_len: 1.0,
            radius: 0.5,
        };
        assert!((cap.sdf([0.0, 3.0, 0.0]) - 1.5).abs() < 1e-6);
        assert!((cap.sdf([1.0, 0.0, 0.0]) - 0.5).abs() < 1e-6);
        let t = Prim::Torus {
            major: 1.0,
            minor: 0.25,
        };
        assert!((t.sdf([1.0, 0.0, 0.0]) + 0.25).abs() < 1e-6);
        assert!((t.sdf([0.0; 3]) - 0.75).abs() < 1e-6);
    }

    #[test]
    fn tessellations_are_closed_and_match_sdf() {
        let prims = [
            Prim::Box {
                half: [0.3, 0.2, 0.1],
            },
            Prim::Lathe {
                profile: vec![
                    [0.0, 0.0],
                    [0.4, 0.0],
                    [0.4, 1.0],
                    [0.35, 1.0],
                    [0.35, 0.1],
                    [0.0, 0.1],
                ],
            },
            Prim::Capsule {
                half_len: 0.3,
                radius: 0.1,
            },
            Prim::Torus {
                major: 0.4,
                minor: 0.1,
            },
        ];
        for p in prims {
            let m = p.tessellate();
            // Closed: every undirected edge is shared by exactly two faces (after merging
            // coincident vertices by position).
            let key = |v: [f32; 3]| {
                [
                    (v[0] * 1e4).round() as i64,
                    (v[1] * 1e4).round() as i64,
                    (v[2] * 1e4).round() as i64,
                ]
            };
            let mut edges = std::collections::HashMap::new();
            for f in &m.faces {
                for k in 0..3 {
                    let a = key(m.vertices[f[k] as usize]);
                    let b = key(m.vertices[f[(k + 1) % 3] as usize]);
                    if a == b {
                        continue;
                    }
                    let e = if a < b { (a, b) } else { (b, a) };
                    *edges.entry(e).or_insert(0) += 1;
                }
            }
            assert!(edges.values().all(|&c| c == 2), "{p:?} not closed");
            for v in &m.vertices {
                assert!(
                    p.sdf(*v).abs() < 1e-4,
                    "{p:?} vertex {v:?} sdf {}",
                    p.sdf(*v)
                );
            }
        }
    }

    #[test]
    fn every_class_generates_normalised_shapes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for class in 0..CLASS_NAMES.len() as u16 {
            for _ in 0..5 {
                let s = generate(class, &mut rng).unwrap();
                let (m, pf) = s.mesh();
                let (lo, hi) = m.bounds().unwrap();
                let ext = (0..3).map(|k| hi[k] - lo[k]).fold(0.0, f32::max);
                assert!((ext - 0.96).abs() < 1e-3, "class {class} extent {ext}");
                assert!(lo.iter().all(|&v| v >= -0.5) && hi.iter().all(|&v| v <= 0.5));
                let pts = s.sample_surface(&m, &pf, 500, &mut rng).unwrap();
                for (p, part) in &pts {
                    assert!(
                        s.sdf(*p).abs() < 0.012,
                        "class {class}: {p:?} sdf {}",
                        s.sdf(*p)
                    );
                    assert!((*part as usize) < PART_NAMES.len());
                }
                // The centre of the box is not inside a thin shape everywhere, but the shape
                // has some interior: the minimum SDF over its surface-shifted samples is < 0.
                assert!(pts
                    .iter()
                    .any(|(p, _)| s.sdf([p[0] * 0.98, p[1] * 0.98, p[2] * 0.98]) < 0.0));
            }
        }
        assert!(generate(99, &mut rng).is_err());
    }
}
