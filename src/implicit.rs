//! Implicit head: encoder latent + decoder f(latent, xyz) -> surface, coarse to fine.
//!
//! The bounds are a lattice of `fine + 1` corners per axis. Evaluation starts on the
//! corners of a `coarse`^3 grid; a cell is refined (split in 8) when it may hold surface:
//! its corners change side of the level, or (SDF) the smallest |value - level| at a corner
//! is below `margin` x the cell diagonal (a 1-Lipschitz SDF's value bounds the distance to
//! the surface, and every point of a cell is within half a diagonal of a corner);
//! for occupancy logits, the neighbours of such cells are refined too (dilation). Only
//! corners not already known are queried. At the finest level the active cells go through
//! marching cubes ([`shapecast_geom::mcubes`]). [`dense`] evaluates the whole lattice, as
//! the reference.

use crate::heads::{Cloud, HeadError, Mesh, Reconstruction};
use crate::meta::{Bounds, ImplicitKind};
use crate::model::{as_f32, Decoder, ModelError};
use shapecast_geom::fasthash::{FastMap, FastSet};
use shapecast_geom::mcubes::Extractor;

/// Options of the coarse-to-fine search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImplicitOptions {
    /// Cells per axis of the first level (power of two, divides `fine`).
    pub coarse: u32,
    /// Cells per axis of the last level (power of two).
    pub fine: u32,
    /// SDF refinement margin, in cell diagonals. A cell whose corners are all on one side
    /// is still refined when the smallest |value - level| at a corner is below this many
    /// cell diagonals. Every point of a cube lies within half a diagonal of a corner, so 0.5
    /// never misses surface for a 1-Lipschitz SDF (a true distance, or an under-estimate).
    pub margin: f32,
    /// Keep the mesh (faces) in the result.
    pub mesh: bool,
}

impl Default for ImplicitOptions {
    fn default() -> Self {
        ImplicitOptions {
            coarse: 16,
            fine: 64,
            margin: 0.5,
            mesh: true,
        }
    }
}

/// Something that evaluates the implicit function at points (the decoder, or a closure in
/// tests).
pub trait Field {
    /// Writes one value per point of `xyz` into `out` (same length as `xyz`).
    fn eval(&mut self, xyz: &[[f32; 3]], out: &mut Vec<f32>) -> Result<(), ModelError>;
}

impl<F: FnMut([f32; 3]) -> f32> Field for F {
    fn eval(&mut self, xyz: &[[f32; 3]], out: &mut Vec<f32>) -> Result<(), ModelError> {
        out.clear();
        out.extend(xyz.iter().map(|p| self(*p)));
        Ok(())
    }
}

/// The decoder with a fixed latent, evaluating in chunks (the last one padded).
#[derive(Debug)]
pub struct DecoderField<'a> {
    pub decoder: &'a Decoder,
    pub latent: Vec<f32>,
    buf: Vec<f32>,
}

impl<'a> DecoderField<'a> {
    pub fn new(decoder: &'a Decoder, latent: Vec<f32>) -> Self {
        DecoderField {
            decoder,
            latent,
            buf: Vec::new(),
        }
    }
}

impl Field for DecoderField<'_> {
    fn eval(&mut self, xyz: &[[f32; 3]], out: &mut Vec<f32>) -> Result<(), ModelError> {
        out.clear();
        let chunk = self.decoder.chunk;
        for part in xyz.chunks(chunk) {
            self.buf.clear();
            for p in part {
                self.buf.extend_from_slice(p);
            }
            // pad with the last point (results discarded)
            let last = *part.last().unwrap_or(&[0.0; 3]);
            while self.buf.len() < chunk * 3 {
                self.buf.extend_from_slice(&last);
            }
            let mut inputs: [&[f32]; 2] = [&[], &[]];
            inputs[self.decoder.latent_ix] = &self.latent;
            inputs[self.decoder.xyz_ix] = &self.buf;
            let res = self.decoder.net.run(&inputs)?;
            let v = as_f32(&res[0])?;
            if v.len() != chunk {
                return Err(ModelError::Run(format!(
                    "decoder gave {} values for {chunk} queries",
                    v.len()
                )));
            }
            out.extend_from_slice(&v[..part.len()]);
        }
        Ok(())
    }
}

/// Result of a surface search.
#[derive(Debug, Clone, Default)]
pub struct Surface {
    pub mesh: Mesh,
    /// Decoder queries made.
    pub queries: u64,
    /// Cells at the finest level that were meshed.
    pub fine_cells: usize,
}

/// Lattices up to this many corners keep their values in a flat array (16 MiB at most:
/// fine <= 128); larger ones in a hash map of the corners actually queried.
const DENSE_MAX_CORNERS: u64 = 1 << 22;

/// Marks a corner queued for the decoder in this round (never a stored value: those are
/// finite or `f32::MAX`).
const PENDING: f32 = f32::NEG_INFINITY;

/// Corner values, `NaN` = not queried yet.
enum Store {
    Dense { side: usize, v: Vec<f32> },
    Sparse(FastMap<u64, f32>),
}

impl Store {
    fn new(fine: u32) -> Self {
        let side = fine as u64 + 1;
        if side * side * side <= DENSE_MAX_CORNERS {
            Store::Dense {
                side: side as usize,
                v: vec![f32::NAN; (side * side * side) as usize],
            }
        } else {
            Store::Sparse(FastMap::default())
        }
    }

    #[inline]
    fn key(c: [u32; 3]) -> u64 {
        u64::from(c[0]) | u64::from(c[1]) << 21 | u64::from(c[2]) << 42
    }

    /// The stored value (`NaN` when unknown, [`PENDING`] while queued).
    #[inline]
    fn get(&self, c: [u32; 3]) -> f32 {
        match self {
            Store::Dense { side, v } => {
                v[(c[2] as usize * side + c[1] as usize) * side + c[0] as usize]
            }
            Store::Sparse(m) => m.get(&Self::key(c)).copied().unwrap_or(f32::NAN),
        }
    }

    #[inline]
    fn set(&mut self, c: [u32; 3], x: f32) {
        match self {
            Store::Dense { side, v } => {
                v[(c[2] as usize * *side + c[1] as usize) * *side + c[0] as usize] = x
            }
            Store::Sparse(m) => {
                m.insert(Self::key(c), x);
            }
        }
    }
}

struct Lattice {
    bounds: Bounds,
    fine: u32,
    /// sign: values are stored as `s * (v - level)` so that inside < 0
    sign: f32,
    level: f32,
    values: Store,
    queries: u64,
    /// Reused buffers of [`Lattice::fill`].
    todo: Vec<[u32; 3]>,
    xyz: Vec<[f32; 3]>,
    out: Vec<f32>,
}

impl Lattice {
    fn pos(&self, c: [u32; 3]) -> [f32; 3] {
        let e = self.bounds.extent();
        let f = self.fine as f32;
        [
            self.bounds.min[0] + c[0] as f32 / f * e[0],
            self.bounds.min[1] + c[1] as f32 / f * e[1],
            self.bounds.min[2] + c[2] as f32 / f * e[2],
        ]
    }

    /// Evaluates every corner of `cells` (cubes of side `step`) that is not yet known,
    /// each once, in the order first met.
    fn fill(
        &mut self,
        cells: &[[u32; 3]],
        step: u32,
        field: &mut dyn Field,
    ) -> Result<(), ModelError> {
        let mut todo = std::mem::take(&mut self.todo);
        todo.clear();
        for c in cells {
            for k in cell_corners(*c, step) {
                if self.values.get(k).is_nan() {
                    self.values.set(k, PENDING);
                    todo.push(k);
                }
            }
        }
        let res = self.eval(&todo, field);
        if res.is_err() {
            // leave no corner marked as queued
            for k in &todo {
                self.values.set(*k, f32::NAN);
            }
        }
        self.todo = todo;
        res
    }

    fn eval(&mut self, todo: &[[u32; 3]], field: &mut dyn Field) -> Result<(), ModelError> {
        if todo.is_empty() {
            return Ok(());
        }
        let mut xyz = std::mem::take(&mut self.xyz);
        let mut out = std::mem::take(&mut self.out);
        xyz.clear();
        xyz.extend(todo.iter().map(|c| self.pos(*c)));
        out.clear();
        let res = field.eval(&xyz, &mut out);
        let res = match res {
            Ok(()) if out.len() != xyz.len() => Err(ModelError::Run(format!(
                "field gave {} values for {} points",
                out.len(),
                xyz.len()
            ))),
            r => r,
        };
        if res.is_ok() {
            self.queries += xyz.len() as u64;
            for (c, v) in todo.iter().zip(&out) {
                // non-finite values count as outside
                let s = if v.is_finite() {
                    self.sign * (v - self.level)
                } else {
                    f32::MAX
                };
                self.values.set(*c, s);
            }
        }
        self.xyz = xyz;
        self.out = out;
        res
    }

    fn corners(&self, c: [u32; 3], step: u32) -> [f32; 8] {
        cell_corners(c, step).map(|k| {
            let v = self.values.get(k);
            if v.is_nan() {
                f32::MAX
            } else {
                v
            }
        })
    }
}

/// The 8 corners of the cube of side `step` at `c`, in marching-cubes corner order.
#[inline]
fn cell_corners(c: [u32; 3], step: u32) -> [[u32; 3]; 8] {
    std::array::from_fn(|n| {
        let n = n as u32;
        [
            c[0] + (n & 1) * step,
            c[1] + ((n >> 1) & 1) * step,
            c[2] + ((n >> 2) & 1) * step,
        ]
    })
}

fn check_opts(o: &ImplicitOptions) -> Result<(), HeadError> {
    let ok = o.coarse.is_power_of_two()
        && o.fine.is_power_of_two()
        && o.coarse <= o.fine
        && o.fine <= 1024
        && o.coarse >= 1;
    if !ok {
        return Err(HeadError::Invalid(format!(
            "implicit grid: coarse {} and fine {} must be powers of two with coarse <= fine <= 1024",
            o.coarse, o.fine
        )));
    }
    Ok(())
}

/// Error of the surface search.
#[derive(Debug, thiserror::Error)]
pub enum SurfaceError {
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Coarse-to-fine surface extraction.
pub fn coarse_to_fine(
    field: &mut dyn Field,
    bounds: &Bounds,
    kind: ImplicitKind,
    level: f32,
    opts: &ImplicitOptions,
) -> Result<Surface, SurfaceError> {
    check_opts(opts)?;
    let mut lat = Lattice {
        bounds: *bounds,
        fine: opts.fine,
        // SDF: inside is negative; occupancy logit: inside is above the level
        sign: if kind == ImplicitKind::Sdf { 1.0 } else { -1.0 },
        level,
        values: Store::new(opts.fine),
        queries: 0,
        todo: Vec::new(),
        xyz: Vec::new(),
        out: Vec::new(),
    };
    let e = bounds.extent();
    let mut res = opts.coarse;
    let mut step = opts.fine / res;
    let mut cells: Vec<[u32; 3]> = Vec::new();
    for k in 0..res {
        for j in 0..res {
            for i in 0..res {
                cells.push([i * step, j * step, k * step]);
            }
        }
    }
    loop {
        lat.fill(&cells, step, field)?;
        if step == 1 {
            break;
        }
        // which cells may hold surface
        let h = [e[0] / res as f32, e[1] / res as f32, e[2] / res as f32];
        let diag = (h[0] * h[0] + h[1] * h[1] + h[2] * h[2]).sqrt();
        // cells in a deterministic order (the order of `cells`, then dilation order), each once
        let mut active: Vec<[u32; 3]> = Vec::new();
        for c in &cells {
            let v = lat.corners(*c, step);
            let inside = v.iter().filter(|x| **x < 0.0).count();
            let near = kind == ImplicitKind::Sdf && v.iter().any(|x| x.abs() < opts.margin * diag);
            if (inside > 0 && inside < 8) || near {
                active.push(*c);
            }
        }
        if kind == ImplicitKind::Occupancy {
            // dilate by one cell: logits say nothing about distance
            let mut seen: FastSet<[u32; 3]> = active.iter().copied().collect();
            for ix in 0..active.len() {
                let c = active[ix];
                for dz in -1i64..=1 {
                    for dy in -1i64..=1 {
                        for dx in -1i64..=1 {
                            let n = [
                                c[0] as i64 + dx * step as i64,
                                c[1] as i64 + dy * step as i64,
                                c[2] as i64 + dz * step as i64,
                            ];
                            if n.iter().all(|x| *x >= 0 && *x < opts.fine as i64) {
                                let n = [n[0] as u32, n[1] as u32, n[2] as u32];
                                if seen.insert(n) {
                                    active.push(n);
                                }
                            }
                        }
                    }
                }
            }
        }
        let half = step / 2;
        let mut next = Vec::with_capacity(active.len() * 8);
        for c in active {
            for n in 0..8u32 {
                next.push([
                    c[0] + (n & 1) * half,
                    c[1] + ((n >> 1) & 1) * half,
                    c[2] + ((n >> 2) & 1) * half,
                ]);
            }
        }
        cells = next;
        step = half;
        res *= 2;
    }
    // marching cubes on the finest active cells
    let f = opts.fine as f32;
    let mut ex = Extractor::new(bounds.min, [e[0] / f, e[1] / f, e[2] / f], 0.0);
    let mut fine_cells = 0;
    for c in &cells {
        let v = lat.corners(*c, 1);
        let inside = v.iter().filter(|x| **x < 0.0).count();
        if inside > 0 && inside < 8 {
            fine_cells += 1;
            ex.cell(*c, v);
        }
    }
    let m = ex.finish();
    Ok(Surface {
        mesh: Mesh {
            vertices: m.vertices,
            faces: m.faces,
            labels: None,
        },
        queries: lat.queries,
        fine_cells,
    })
}

/// Dense reference: every corner of the `fine`^3 grid is queried.
pub fn dense(
    field: &mut dyn Field,
    bounds: &Bounds,
    kind: ImplicitKind,
    level: f32,
    fine: u32,
) -> Result<Surface, SurfaceError> {
    let opts = ImplicitOptions {
        coarse: fine,
        fine,
        margin: 0.0,
        mesh: true,
    };
    coarse_to_fine(field, bounds, kind, level, &opts)
}

/// Turns a surface into the head's reconstruction: the vertices as the cloud (at most
/// `max_points`, evenly strided) and the mesh if asked for.
pub fn to_reconstruction(s: Surface, max_points: usize, keep_mesh: bool) -> Reconstruction {
    let v = &s.mesh.vertices;
    let n = v.len();
    let points: Vec<[f32; 3]> = if n <= max_points || max_points == 0 {
        v.clone()
    } else {
        (0..max_points).map(|i| v[i * n / max_points]).collect()
    };
    Reconstruction {
        clouds: vec![Cloud {
            points,
            ..Cloud::default()
        }],
        mesh: keep_mesh.then_some(s.mesh),
        queries: s.queries,
        ..Reconstruction::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> Bounds {
        Bounds {
            min: [-1.0; 3],
            max: [1.0; 3],
        }
    }

    #[test]
    fn sphere_sdf_matches_dense_with_far_fewer_queries() {
        let mut f = |p: [f32; 3]| (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() - 0.5;
        let opts = ImplicitOptions {
            coarse: 8,
            fine: 64,
            ..ImplicitOptions::default()
        };
        let c2f = coarse_to_fine(&mut f, &unit(), ImplicitKind::Sdf, 0.0, &opts).unwrap();
        let d = dense(&mut f, &unit(), ImplicitKind::Sdf, 0.0, 64).unwrap();
        assert_eq!(d.queries, 65 * 65 * 65);
        assert!(
            c2f.queries * 4 < d.queries,
            "{} vs {}",
            c2f.queries,
            d.queries
        );
        // same cells meshed from the same corner values: identical surface
        assert_eq!(c2f.mesh.faces.len(), d.mesh.faces.len());
        let mut a = c2f.mesh.vertices.clone();
        let mut b = d.mesh.vertices.clone();
        let key = |p: &[f32; 3]| (p[0].to_bits(), p[1].to_bits(), p[2].to_bits());
        a.sort_by_key(key);
        b.sort_by_key(key);
        assert_eq!(a, b);
    }

    #[test]
    fn occupancy_logits_are_inside_above_the_level() {
        let mut f = |p: [f32; 3]| 10.0 * (0.25 - (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]));
        let opts = ImplicitOptions {
            coarse: 4,
            fine: 32,
            ..ImplicitOptions::default()
        };
        let s = coarse_to_fine(&mut f, &unit(), ImplicitKind::Occupancy, 0.0, &opts).unwrap();
        assert!(!s.mesh.faces.is_empty());
        let vol = shapecast_geom::mcubes::signed_volume(&shapecast_geom::mcubes::McMesh {
            vertices: s.mesh.vertices.clone(),
            faces: s.mesh.faces.clone(),
        });
        assert!(vol > 0.4 && vol < 0.6, "volume {vol}");
        for p in &s.mesh.vertices {
            let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
            assert!((r - 0.5).abs() < 0.02);
        }
    }

    #[test]
    fn bad_options_and_bad_fields_are_errors() {
        let mut f = |_: [f32; 3]| 0.0;
        let bad = ImplicitOptions {
            coarse: 3,
            ..ImplicitOptions::default()
        };
        assert!(coarse_to_fine(&mut f, &unit(), ImplicitKind::Sdf, 0.0, &bad).is_err());
        let mut nan = |_: [f32; 3]| f32::NAN;
        let s = coarse_to_fine(
            &mut nan,
            &unit(),
            ImplicitKind::Sdf,
            0.0,
            &ImplicitOptions::default(),
        )
        .unwrap();
        assert!(s.mesh.faces.is_empty());
    }
}
