//! Triangle meshes: loaders (OBJ, OFF, STL ascii/binary, PLY), normalisation into the object
//! frame, and area-weighted surface sampling.

use std::path::Path;

use rand::Rng;

use super::{cross, norm, sub, DataError};

/// A triangle mesh with a part label per face.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    /// Vertex positions.
    pub vertices: Vec<[f32; 3]>,
    /// Triangles, counter-clockwise seen from outside where the source says so.
    pub faces: Vec<[u32; 3]>,
    /// Part index per face (index into `part_names`).
    pub face_parts: Vec<u8>,
    /// Part names (OBJ groups/objects; `body` when the file has none).
    pub part_names: Vec<String>,
}

/// A surface sample: point, part label, unit face normal.
pub type SurfaceSample = ([f32; 3], u8, [f32; 3]);

/// Most parts a mesh may carry (labels are `u8`).
pub const MAX_PARTS: usize = 255;

impl Mesh {
    /// Loads `.obj`, `.off`, `.stl` or `.ply`, chosen by extension (then by content).
    pub fn load(path: impl AsRef<Path>) -> Result<Mesh, DataError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mesh = match ext.as_str() {
            "obj" => parse_obj(&bytes, path)?,
            "off" => parse_off(&bytes, path)?,
            "stl" => parse_stl(&bytes, path)?,
            "ply" => parse_ply(&bytes, path)?,
            _ => {
                if bytes.starts_with(b"ply") {
                    parse_ply(&bytes, path)?
                } else if bytes.starts_with(b"OFF") || bytes.starts_with(b"COFF") {
                    parse_off(&bytes, path)?
                } else if bytes.starts_with(b"solid") {
                    parse_stl(&bytes, path)?
                } else {
                    return Err(DataError::parse(
                        path,
                        "unknown mesh format (expected .obj, .off, .stl or .ply)",
                    ));
                }
            }
        };
        if mesh.faces.is_empty() {
            return Err(DataError::parse(path, "mesh has no triangles"));
        }
        Ok(mesh)
    }

    /// Appends `other` with all its faces labelled `part`.
    pub fn append(&mut self, other: &Mesh, part: u8) {
        let base = self.vertices.len() as u32;
        self.vertices.extend_from_slice(&other.vertices);
        self.faces.extend(
            other
                .faces
                .iter()
                .map(|f| [f[0] + base, f[1] + base, f[2] + base]),
        );
        self.face_parts
            .extend(std::iter::repeat_n(part, other.faces.len()));
    }

    /// Axis-aligned bounds `(min, max)` of the vertices used by faces; `None` when empty.
    pub fn bounds(&self) -> Option<([f32; 3], [f32; 3])> {
        let mut lo = [f32::INFINITY; 3];
        let mut hi = [f32::NEG_INFINITY; 3];
        let mut any = false;
        for f in &self.faces {
            for &v in f {
                let p = self.vertices[v as usize];
                for k in 0..3 {
                    lo[k] = lo[k].min(p[k]);
                    hi[k] = hi[k].max(p[k]);
                }
                any = true;
            }
        }
        any.then_some((lo, hi))
    }

    /// Moves and scales the mesh so its bounding box is centred at the origin with its longest
    /// side `1 - 2 * margin` (inside `[-0.5, 0.5]^3`). Returns `(centre, scale)` applied as
    /// `p' = (p - centre) * scale`.
    pub fn normalize(&mut self, margin: f32) -> Result<([f32; 3], f32), DataError> {
        let (lo, hi) = self
            .bounds()
            .ok_or_else(|| DataError::Degenerate("no faces".into()))?;
        let c = [
            0.5 * (lo[0] + hi[0]),
            0.5 * (lo[1] + hi[1]),
            0.5 * (lo[2] + hi[2]),
        ];
        let ext = (hi[0] - lo[0]).max(hi[1] - lo[1]).max(hi[2] - lo[2]);
        if !(ext.is_finite() && ext > 0.0) {
            return Err(DataError::Degenerate(format!("extent {ext}")));
        }
        let s = (1.0 - 2.0 * margin) / ext;
        for p in &mut self.vertices {
            *p = [(p[0] - c[0]) * s, (p[1] - c[1]) * s, (p[2] - c[2]) * s];
        }
        Ok((c, s))
    }

    /// Applies `p' = M p + t` to every vertex (M row-major).
    pub fn transform(&mut self, m: [[f32; 3]; 3], t: [f32; 3]) {
        for p in &mut self.vertices {
            let q = *p;
            *p = [
                m[0][0] * q[0] + m[0][1] * q[1] + m[0][2] * q[2] + t[0],
                m[1][0] * q[0] + m[1][1] * q[1] + m[1][2] * q[2] + t[1],
                m[2][0] * q[0] + m[2][1] * q[1] + m[2][2] * q[2] + t[2],
            ];
        }
    }

    /// Triangle corners of face `i`.
    pub fn triangle(&self, i: usize) -> [[f32; 3]; 3] {
        let f = self.faces[i];
        [
            self.vertices[f[0] as usize],
            self.vertices[f[1] as usize],
            self.vertices[f[2] as usize],
        ]
    }

    /// Total surface area.
    pub fn area(&self) -> f32 {
        (0..self.faces.len())
            .map(|i| tri_area(self.triangle(i)))
            .sum()
    }

    /// Area-weighted uniform surface samples: `(point, part, unit face normal)` for each of `n`.
    pub fn sample_surface<R: Rng>(
        &self,
        n: usize,
        rng: &mut R,
    ) -> Result<Vec<SurfaceSample>, DataError> {
        let mut cdf = Vec::with_capacity(self.faces.len());
        let mut total = 0.0f64;
        for i in 0..self.faces.len() {
            total += f64::from(tri_area(self.triangle(i)));
            cdf.push(total);
        }
        if total.is_nan() || total <= 0.0 {
            return Err(DataError::Degenerate("zero surface area".into()));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let r = rng.gen::<f64>() * total;
            let i = cdf.partition_point(|&c| c <= r).min(cdf.len() - 1);
            let [a, b, c] = self.triangle(i);
            let (mut u, mut v) = (rng.gen::<f32>(), rng.gen::<f32>());
            if u + v > 1.0 {
                u = 1.0 - u;
                v = 1.0 - v;
            }
            let p = [
                a[0] + u * (b[0] - a[0]) + v * (c[0] - a[0]),
                a[1] + u * (b[1] - a[1]) + v * (c[1] - a[1]),
                a[2] + u * (b[2] - a[2]) + v * (c[2] - a[2]),
            ];
            let nrm = super::normalize(cross(sub(b, a), sub(c, a)));
            let part = self.face_parts.get(i).copied().unwrap_or(0);
            out.push((p, part, nrm));
        }
        Ok(out)
    }

    fn check(mut self, path: &Path) -> Result<Mesh, DataError> {
        let n = self.vertices.len();
        if self
            .vertices
            .iter()
            .any(|p| p.iter().any(|v| !v.is_finite()))
        {
            return Err(DataError::parse(path, "non-finite vertex coordinate"));
        }
        for f in &self.faces {
            if f.iter().any(|&v| v as usize >= n) {
                return Err(DataError::parse(
                    path,
                    format!("face {f:?} indexes past {n} vertices"),
                ));
            }
        }
        if self.part_names.is_empty() {
            self.part_names.push("body".into());
        }
        self.face_parts.resize(self.faces.len(), 0);
        Ok(self)
    }
}

/// Area of a triangle.
pub fn tri_area(t: [[f32; 3]; 3]) -> f32 {
    0.5 * norm(cross(sub(t[1], t[0]), sub(t[2], t[0])))
}

fn text<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str, DataError> {
    std::str::from_utf8(bytes).map_err(|e| DataError::parse(path, format!("not UTF-8 text: {e}")))
}

fn num<T: std::str::FromStr>(tok: Option<&str>, path: &Path, line: usize) -> Result<T, DataError> {
    let t = tok.ok_or_else(|| DataError::parse(path, format!("line {line}: missing number")))?;
    t.parse()
        .map_err(|_| DataError::parse(path, format!("line {line}: bad number `{t}`")))
}

/// Parses Wavefront OBJ (`v`, `f` with `v/vt/vn` and negative indices, polygons
/// fan-triangulated; `g`/`o` names become parts).
pub fn parse_obj(bytes: &[u8], path: &Path) -> Result<Mesh, DataError> {
    let text = String::from_utf8_lossy(bytes);
    let mut m = Mesh::default();
    let mut part: u8 = 0;
    let mut poly: Vec<u32> = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let ln = ln + 1;
        let line = line.split('#').next().unwrap_or("");
        let mut it = line.split_whitespace();
        match it.next() {
            Some("v") => {
                let x = num(it.next(), path, ln)?;
                let y = num(it.next(), path, ln)?;
                let z = num(it.next(), path, ln)?;
                m.vertices.push([x, y, z]);
            }
            Some("f") => {
                poly.clear();
                for tok in it {
                    let first = tok.split('/').next().unwrap_or("");
                    let i: i64 = first.parse().map_err(|_| {
                        DataError::parse(path, format!("line {ln}: bad face index `{tok}`"))
                    })?;
                    let n = m.vertices.len() as i64;
                    let idx = if i > 0 { i - 1 } else { n + i };
                    if idx < 0 || idx >= n {
                        return Err(DataError::parse(
                            path,
                            format!("line {ln}: face index {i} out of range ({n} vertices)"),
                        ));
                    }
                    poly.push(idx as u32);
                }
                for k in 1..poly.len().saturating_sub(1) {
                    m.faces.push([poly[0], poly[k], poly[k + 1]]);
                    m.face_parts.push(part);
                }
            }
            Some("g") | Some("o") => {
                let name = it.collect::<Vec<_>>().join(" ");
                let name = if name.is_empty() { "body".into() } else { name };
                part = match m.part_names.iter().position(|p| *p == name) {
                    Some(p) => p as u8,
                    None if m.part_names.len() < MAX_PARTS => {
                        m.part_names.push(name);
                        (m.part_names.len() - 1) as u8
                    }
                    None => (MAX_PARTS - 1) as u8,
                };
            }
            _ => {}
        }
    }
    // Faces before the first group belong to part 0; make sure it has a name.
    if m.part_names.is_empty() && !m.faces.is_empty() {
        m.part_names.push("body".into());
    }
    m.check(path)
}

/// Parses OFF (`OFF` / `COFF` header, also the ModelNet form `OFF12 20 0` glued on one line).
pub fn parse_off(bytes: &[u8], path: &Path) -> Result<Mesh, DataError> {
    let text = text(bytes, path)?;
    let mut toks = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split_whitespace());
    let head = toks
        .next()
        .ok_or_else(|| DataError::parse(path, "empty file"))?;
    let rest = head
        .strip_prefix("COFF")
        .or_else(|| head.strip_prefix("NOFF"))
        .or_else(|| head.strip_prefix("OFF"))
        .ok_or_else(|| DataError::parse(path, "missing OFF header"))?;
    let mut first = (!rest.is_empty()).then_some(rest);
    let mut next = || first.take().or_else(|| toks.next());
    let nv: usize = num(next(), path, 1)?;
    let nf: usize = num(next(), path, 1)?;
    let _ne: usize = num(next(), path, 1)?;
    let remaining = text.len();
    if nv > remaining || nf > remaining {
        return Err(DataError::parse(path, "header counts exceed file size"));
    }
    let mut m = Mesh::default();
    m.vertices.reserve(nv);
    for _ in 0..nv {
        let x = num(next(), path, 0)?;
        let y = num(next(), path, 0)?;
        let z = num(next(), path, 0)?;
        m.vertices.push([x, y, z]);
    }
    let mut poly = Vec::new();
    for _ in 0..nf {
        let k: usize = num(next(), path, 0)?;
        if k > nv.max(3) {
            return Err(DataError::parse(path, format!("face with {k} corners")));
        }
        poly.clear();
        for _ in 0..k {
            let i: u32 = num(next(), path, 0)?;
            poly.push(i);
        }
        for j in 1..k.saturating_sub(1) {
            m.faces.push([poly[0], poly[j], poly[j + 1]]);
        }
        // Colour values after the indices (COFF faces) are not read: they would be taken as
        // the next face's count only if present; ModelNet has none.
    }
    m.check(path)
}

/// Parses STL, binary or ascii.
pub fn parse_stl(bytes: &[u8], path: &Path) -> Result<Mesh, DataError> {
    // A binary file's size is exactly 84 + 50 n; ascii files start with `solid` but some binary
    // exporters also write `solid` in the header, so the size decides.
    if bytes.len() >= 84 {
        let n = u32::from_le_bytes([bytes[80], bytes[81], bytes[82], bytes[83]]) as usize;
        if n.checked_mul(50).and_then(|b| b.checked_add(84)) == Some(bytes.len()) {
            let mut m = Mesh::default();
            m.vertices.reserve(3 * n);
            for i in 0..n {
                let rec = &bytes[84 + 50 * i..84 + 50 * i + 50];
                let f = |o: usize| f32::from_le_bytes([rec[o], rec[o + 1], rec[o + 2], rec[o + 3]]);
                let base = m.vertices.len() as u32;
                for v in 0..3 {
                    let o = 12 + 12 * v;
                    m.vertices.push([f(o), f(o + 4), f(o + 8)]);
                }
                m.faces.push([base, base + 1, base + 2]);
            }
            return m.check(path);
        }
    }
    let text = text(bytes, path)?;
    if !text.trim_start().starts_with("solid") {
        return Err(DataError::parse(path, "neither binary nor ascii STL"));
    }
    let mut m = Mesh::default();
    let mut corners = Vec::with_capacity(3);
    for (ln, line) in text.lines().enumerate() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("vertex") => {
                let x = num(it.next(), path, ln + 1)?;
                let y = num(it.next(), path, ln + 1)?;
                let z = num(it.next(), path, ln + 1)?;
                corners.push([x, y, z]);
            }
            Some("endloop") => {
                if corners.len() >= 3 {
                    let base = m.vertices.len() as u32;
                    m.vertices.extend_from_slice(&corners);
                    for k in 1..corners.len() as u32 - 1 {
                        m.faces.push([base, base + k, base + k + 1]);
                    }
                }
                corners.clear();
            }
            _ => {}
        }
    }
    m.check(path)
}

/// Parses PLY through `shapecast_geom::ply` (faces fan-triangulated there).
pub fn parse_ply(bytes: &[u8], path: &Path) -> Result<Mesh, DataError> {
    let d = shapecast_geom::ply::read_ply(bytes).map_err(|e| DataError::Ply {
        path: path.into(),
        cause: e,
    })?;
    Mesh {
        vertices: d.vertices,
        faces: d.faces,
        ..Mesh::default()
    }
    .check(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const CUBE_OBJ: &str =
        "# cube\no box\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\nv 1 0 1\nv 1 1 1\nv 0 1 1\n\
f 1 4 3 2\nf 5 6 7 8\ng side\nf 1 2 6 5\nf 2/1/1 3/2/2 7/3/3 6/4/4\nf 3 4 8 7\nf -4 -8 -5 -1\n";

    #[test]
    fn obj_cube_parts_area_and_normalize() {
        let mut m = parse_obj(CUBE_OBJ.as_bytes(), Path::new("c.obj")).unwrap();
        assert_eq!(m.faces.len(), 12);
        assert_eq!(m.part_names, vec!["box".to_string(), "side".to_string()]);
        assert_eq!(m.face_parts.iter().filter(|&&p| p == 0).count(), 4);
        assert!((m.area() - 6.0).abs() < 1e-5);
        m.normalize(0.0).unwrap();
        let (lo, hi) = m.bounds().unwrap();
        assert_eq!(lo, [-0.5; 3]);
        assert_eq!(hi, [0.5; 3]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let s = m.sample_surface(3000, &mut rng).unwrap();
        // Every sample lies on a face of the unit cube.
        for (p, _, _) in &s {
            assert!(p.iter().any(|v| (v.abs() - 0.5).abs() < 1e-5), "{p:?}");
        }
        // Two of six faces are `box`: about a third of the samples.
        let frac = s.iter().filter(|x| x.1 == 0).count() as f32 / 3000.0;
        assert!((frac - 1.0 / 3.0).abs() < 0.05, "{frac}");
    }

    #[test]
    fn obj_rejects_bad_index() {
        let e = parse_obj(b"v 0 0 0\nf 1 2 3\n", Path::new("x.obj")).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn off_plain_and_glued_header() {
        let a = "OFF\n4 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n3 0 1 2\n3 0 2 3\n";
        let b = "OFF4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n";
        let ma = parse_off(a.as_bytes(), Path::new("a.off")).unwrap();
        let mb = parse_off(b.as_bytes(), Path::new("b.off")).unwrap();
        assert_eq!(ma.faces, mb.faces);
        assert!((ma.area() - 1.0).abs() < 1e-6);
        assert!(parse_off(b"OFF\n4 2 0\n0 0 0\n", Path::new("t.off")).is_err());
        assert!(parse_off(
            b"OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
            Path::new("t.off")
        )
        .is_err());
    }

    #[test]
    fn stl_binary_and_ascii_agree() {
        let tri = [[0.0f32, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]];
        let mut bin = vec![0u8; 80];
        bin.extend_from_slice(&1u32.to_le_bytes());
        bin.extend_from_slice(&[0u8; 12]);
        for v in tri {
            for c in v {
                bin.extend_from_slice(&c.to_le_bytes());
            }
        }
        bin.extend_from_slice(&[0, 0]);
        let ascii = "solid t\nfacet normal 0 0 1\nouter loop\nvertex 0 0 0\nvertex 2 0 0\nvertex 0 2 0\nendloop\nendfacet\nendsolid t\n";
        let mb = parse_stl(&bin, Path::new("b.stl")).unwrap();
        let ma = parse_stl(ascii.as_bytes(), Path::new("a.stl")).unwrap();
        assert_eq!(mb.vertices, ma.vertices);
        assert_eq!(mb.faces, ma.faces);
        assert!((ma.area() - 2.0).abs() < 1e-6);
        assert!(parse_stl(&bin[..100], Path::new("t.stl")).is_err());
    }

    #[test]
    fn ply_through_geom() {
        let d = shapecast_geom::ply::PlyData::mesh(
            vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            vec![[0, 1, 2]],
        );
        let mut buf = Vec::new();
        shapecast_geom::ply::write_ply(&mut buf, &d).unwrap();
        let m = parse_ply(&buf, Path::new("t.ply")).unwrap();
        assert_eq!(m.faces, vec![[0, 1, 2]]);
        assert_eq!(m.part_names, vec!["body".to_string()]);
    }
}
