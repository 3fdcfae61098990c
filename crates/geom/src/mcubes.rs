//! Marching cubes over dense grids and over sparse sets of cells.
//!
//! The triangle table is derived at first use from the cube's topology rather than typed
//! in: on every face (walked counter-clockwise seen from outside) a segment runs from each
//! outside->inside crossing to the next inside->outside crossing, which separates inside
//! corners on ambiguous faces. A face's resolution depends only on its four corner signs,
//! so neighbouring cells agree and the surface is watertight. The segments of a cube form
//! closed loops, fan-triangulated; triangles wind counter-clockwise seen from outside
//! (normals point from the inside, `value < level`, to the outside).
//!
//! Vertices on shared edges are shared (indexed mesh).

use crate::fasthash::FastMap;
use std::sync::OnceLock;

/// An indexed triangle mesh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct McMesh {
    pub vertices: Vec<[f32; 3]>,
    pub faces: Vec<[u32; 3]>,
}

/// Corner `c` of a unit cube: offset (c & 1, (c >> 1) & 1, (c >> 2) & 1).
const fn corner(c: usize) -> [usize; 3] {
    [c & 1, (c >> 1) & 1, (c >> 2) & 1]
}

/// The 12 edges as (corner, corner) with the first corner the lower one along the axis.
const EDGES: [(usize, usize); 12] = [
    (0, 1),
    (2, 3),
    (4, 5),
    (6, 7), // x edges
    (0, 2),
    (1, 3),
    (4, 6),
    (5, 7), // y edges
    (0, 4),
    (1, 5),
    (2, 6),
    (3, 7), // z edges
];

/// The 6 faces, corners counter-clockwise seen from outside the cube.
const FACES: [[usize; 4]; 6] = [
    [0, 4, 6, 2], // x = 0
    [1, 3, 7, 5], // x = 1
    [0, 1, 5, 4], // y = 0
    [2, 6, 7, 3], // y = 1
    [0, 2, 3, 1], // z = 0
    [4, 5, 7, 6], // z = 1
];

fn edge_of(a: usize, b: usize) -> usize {
    EDGES
        .iter()
        .position(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
        .unwrap_or(0)
}

fn build_table() -> Vec<Vec<[u8; 3]>> {
    let mut table = Vec::with_capacity(256);
    for config in 0..256usize {
        let inside = |c: usize| config & (1 << c) != 0;
        // next[edge] = edge the segment starting at `edge` ends at
        let mut next = [usize::MAX; 12];
        for f in &FACES {
            // crossings in CCW order: (edge, entering = outside->inside)
            let mut cross = Vec::with_capacity(4);
            for i in 0..4 {
                let (a, b) = (f[i], f[(i + 1) % 4]);
                if inside(a) != inside(b) {
                    cross.push((edge_of(a, b), inside(b)));
                }
            }
            for (i, &(e, entering)) in cross.iter().enumerate() {
                if entering {
                    // the next crossing along the walk leaves the inside
                    let (e2, _) = cross[(i + 1) % cross.len()];
                    next[e] = e2;
                }
            }
        }
        let mut tris = Vec::new();
        let mut seen = [false; 12];
        for start in 0..12 {
            if next[start] == usize::MAX || seen[start] {
                continue;
            }
            let mut lp = Vec::new();
            let mut e = start;
            while !seen[e] && next[e] != usize::MAX && lp.len() < 12 {
                seen[e] = true;
                lp.push(e as u8);
                e = next[e];
            }
            for i in 1..lp.len().saturating_sub(1) {
                tris.push([lp[0], lp[i], lp[i + 1]]);
            }
        }
        table.push(tris);
    }
    table
}

fn table() -> &'static [Vec<[u8; 3]>] {
    static T: OnceLock<Vec<Vec<[u8; 3]>>> = OnceLock::new();
    T.get_or_init(build_table)
}

/// Incremental extractor over a lattice of corner values: feed cells one at a time, shared
/// edge vertices are merged.
#[derive(Debug)]
pub struct Extractor {
    origin: [f32; 3],
    spacing: [f32; 3],
    level: f32,
    mesh: McMesh,
    /// (lower corner lattice coords, axis) -> vertex index
    edge_vertex: FastMap<([u32; 3], u8), u32>,
}

impl Extractor {
    /// Lattice corner (i, j, k) sits at `origin + (i, j, k) * spacing`; the surface is
    /// `value = level`, inside where `value < level`.
    pub fn new(origin: [f32; 3], spacing: [f32; 3], level: f32) -> Self {
        Extractor {
            origin,
            spacing,
            level,
            mesh: McMesh::default(),
            edge_vertex: FastMap::default(),
        }
    }

    /// Adds the triangles of the cell whose lowest corner is `c`, with corner values `v`
    /// in corner order (`v[n]` at `c + (n & 1, (n >> 1) & 1, (n >> 2) & 1)`). Non-finite
    /// values count as outside.
    pub fn cell(&mut self, c: [u32; 3], v: [f32; 8]) {
        let mut config = 0usize;
        for (n, &x) in v.iter().enumerate() {
            if x < self.level {
                config |= 1 << n;
            }
        }
        if config == 0 || config == 255 {
            return;
        }
        let tris = &table()[config];
        let mut ids = [u32::MAX; 12];
        for t in tris {
            let mut f = [0u32; 3];
            for (slot, &e) in f.iter_mut().zip(t.iter()) {
                let e = e as usize;
                if ids[e] == u32::MAX {
                    ids[e] = self.vertex(c, e, &v);
                }
                *slot = ids[e];
            }
            if f[0] != f[1] && f[1] != f[2] && f[0] != f[2] {
                self.mesh.faces.push(f);
            }
        }
    }

    fn vertex(&mut self, c: [u32; 3], e: usize, v: &[f32; 8]) -> u32 {
        let (a, b) = EDGES[e];
        let ca = corner(a);
        let axis = e / 4;
        let key = (
            [
                c[0] + ca[0] as u32,
                c[1] + ca[1] as u32,
                c[2] + ca[2] as u32,
            ],
            axis as u8,
        );
        if let Some(&i) = self.edge_vertex.get(&key) {
            return i;
        }
        let (va, vb) = (v[a], v[b]);
        let va = if va.is_finite() { va } else { f32::MAX };
        let vb = if vb.is_finite() { vb } else { f32::MAX };
        let d = vb - va;
        let t = if d.abs() > f32::MIN_POSITIVE && d.is_finite() {
            ((self.level - va) / d).clamp(0.0, 1.0)
        } else {
            0.5
        };
        let p: [f32; 3] = std::array::from_fn(|k| {
            let base = key.0[k] as f32 + if k == axis { t } else { 0.0 };
            self.origin[k] + base * self.spacing[k]
        });
        let i = self.mesh.vertices.len() as u32;
        self.mesh.vertices.push(p);
        self.edge_vertex.insert(key, i);
        i
    }

    /// The mesh so far.
    pub fn finish(self) -> McMesh {
        self.mesh
    }
}

/// Marching cubes over a dense grid of `dims = [nx, ny, nz]` corner values laid out
/// `values[i + nx * (j + ny * k)]`. Returns an empty mesh if `values` is too short.
pub fn marching_cubes(
    values: &[f32],
    dims: [usize; 3],
    origin: [f32; 3],
    spacing: [f32; 3],
    level: f32,
) -> McMesh {
    let [nx, ny, nz] = dims;
    let n = nx.checked_mul(ny).and_then(|a| a.checked_mul(nz));
    if n.is_none_or(|n| values.len() < n) || nx < 2 || ny < 2 || nz < 2 {
        return McMesh::default();
    }
    let at = |i: usize, j: usize, k: usize| values[i + nx * (j + ny * k)];
    let mut ex = Extractor::new(origin, spacing, level);
    for k in 0..nz - 1 {
        for j in 0..ny - 1 {
            for i in 0..nx - 1 {
                let mut v = [0f32; 8];
                for (c, slot) in v.iter_mut().enumerate() {
                    let o = corner(c);
                    *slot = at(i + o[0], j + o[1], k + o[2]);
                }
                ex.cell([i as u32, j as u32, k as u32], v);
            }
        }
    }
    ex.finish()
}

/// Signed volume of a closed mesh (positive when faces wind outward).
pub fn signed_volume(m: &McMesh) -> f64 {
    let mut vol = 0f64;
    for f in &m.faces {
        let a = m.vertices[f[0] as usize].map(f64::from);
        let b = m.vertices[f[1] as usize].map(f64::from);
        let c = m.vertices[f[2] as usize].map(f64::from);
        vol += a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
            + a[2] * (b[0] * c[1] - b[1] * c[0]);
    }
    vol / 6.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sphere_grid(n: usize, r: f32) -> (Vec<f32>, [f32; 3], [f32; 3]) {
        let h = 2.0 / (n - 1) as f32;
        let mut v = Vec::with_capacity(n * n * n);
        for k in 0..n {
            for j in 0..n {
                for i in 0..n {
                    let p = [
                        -1.0 + i as f32 * h,
                        -1.0 + j as f32 * h,
                        -1.0 + k as f32 * h,
                    ];
                    v.push((p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt() - r);
                }
            }
        }
        (v, [-1.0; 3], [h; 3])
    }

    /// Every directed edge appears once and its reverse once: closed, consistently wound.
    fn assert_closed(m: &McMesh) {
        let mut edges = std::collections::HashMap::new();
        for f in &m.faces {
            for i in 0..3 {
                *edges.entry((f[i], f[(i + 1) % 3])).or_insert(0) += 1;
            }
        }
        for (&(a, b), &n) in &edges {
            assert_eq!(n, 1, "directed edge {a}->{b} used {n} times");
            assert_eq!(edges.get(&(b, a)), Some(&1), "edge {a}->{b} has no twin");
        }
    }

    #[test]
    fn table_covers_all_configs_sensibly() {
        let t = table();
        assert_eq!(t.len(), 256);
        assert!(t[0].is_empty() && t[255].is_empty());
        assert_eq!(t[1].len(), 1);
        // complementary single-corner config: one triangle too
        assert_eq!(t[254].len(), 1);
        assert!(t.iter().all(|x| x.len() <= 6));
    }

    #[test]
    fn sphere_is_closed_outward_and_on_the_radius() {
        let (v, o, s) = sphere_grid(33, 0.6);
        let m = marching_cubes(&v, [33; 3], o, s, 0.0);
        assert!(m.faces.len() > 500);
        assert_closed(&m);
        for p in &m.vertices {
            let r = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
            assert!((r - 0.6).abs() < 0.01, "vertex at radius {r}");
        }
        let vol = signed_volume(&m);
        let want = 4.0 / 3.0 * std::f64::consts::PI * 0.6f64.powi(3);
        assert!((vol - want).abs() / want < 0.03, "volume {vol} vs {want}");
    }

    #[test]
    fn random_fields_stay_closed() {
        // arbitrary sign patterns, including all ambiguous faces: still closed and wound
        let n = 9;
        let mut state = 12345u64;
        let mut v = Vec::new();
        for _ in 0..n * n * n {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.push(((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5);
        }
        // outside border so the surface is closed
        for k in 0..n {
            for j in 0..n {
                for i in 0..n {
                    if i == 0 || j == 0 || k == 0 || i == n - 1 || j == n - 1 || k == n - 1 {
                        v[i + n * (j + n * k)] = 1.0;
                    }
                }
            }
        }
        let m = marching_cubes(&v, [n; 3], [0.0; 3], [1.0; 3], 0.0);
        assert!(!m.faces.is_empty());
        assert_closed(&m);
        assert!(signed_volume(&m) > 0.0);
    }

    #[test]
    fn short_or_degenerate_input_is_empty() {
        assert!(
            marching_cubes(&[0.0; 7], [2, 2, 2], [0.0; 3], [1.0; 3], 0.0)
                .faces
                .is_empty()
        );
        assert!(
            marching_cubes(&[], [usize::MAX, 2, 2], [0.0; 3], [1.0; 3], 0.0)
                .faces
                .is_empty()
        );
        let v = [f32::NAN, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0];
        let m = marching_cubes(&v, [2, 2, 2], [0.0; 3], [1.0; 3], 0.0);
        assert!(m.vertices.iter().all(|p| p.iter().all(|c| c.is_finite())));
    }
}
