//! PLY and XYZ point/mesh files.
//!
//! Writing: binary little-endian PLY (what Open3D, MeshLab and CloudCompare
//! read), points with optional `label` (uchar) and `confidence` (float)
//! vertex properties, meshes with triangle faces (`list uchar int
//! vertex_indices`).
//!
//! Reading: PLY in `ascii`, `binary_little_endian` and `binary_big_endian`
//! (vertices with `x`,`y`,`z` of any scalar type, optional `label` and
//! `confidence`, faces as index lists of any length, fan-triangulated; other
//! elements are skipped) and XYZ text (`x y z [...]` per line, whitespace or
//! comma separated, `#` comments). Every malformed input gives a typed
//! [`PlyError`]; nothing here panics on file contents, and no allocation is
//! sized from a header count without checking it against the data present.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Errors of reading or writing PLY/XYZ files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlyError {
    /// Underlying I/O failure.
    #[error("I/O error")]
    Io(#[from] io::Error),
    /// The file is larger than [`MAX_FILE`] (it is read whole into memory).
    #[error("file of {bytes} bytes is larger than the {max} bytes read at most")]
    TooLarge {
        /// Size of the file.
        bytes: u64,
        /// [`MAX_FILE`].
        max: u64,
    },
    /// The header is missing, malformed or uses something unsupported.
    #[error("bad PLY header: {0}")]
    Header(String),
    /// The body ended before all declared elements were read.
    #[error("PLY body truncated while reading element `{0}`")]
    Truncated(String),
    /// A value in the body could not be parsed or is out of range.
    #[error("bad value in {what}: {msg}")]
    Value {
        /// Where (element name or `line N`).
        what: String,
        /// What is wrong.
        msg: String,
    },
    /// A face refers to a vertex that does not exist.
    #[error("face {face} refers to vertex {index} but there are only {vertices} vertices")]
    BadIndex {
        /// Face number.
        face: usize,
        /// Offending index.
        index: i64,
        /// Number of vertices.
        vertices: usize,
    },
    /// Arguments given to a writer are inconsistent.
    #[error("invalid data to write: {0}")]
    Invalid(String),
    /// The file extension is not one this module reads.
    #[error("unsupported file type `{0}` (expected .ply or .xyz/.txt/.pts)")]
    UnknownFormat(String),
}

/// Contents of a point or mesh file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlyData {
    /// Vertex positions.
    pub vertices: Vec<[f32; 3]>,
    /// Triangles (indices into `vertices`); empty for point clouds.
    pub faces: Vec<[u32; 3]>,
    /// Per-vertex labels (same length as `vertices`) if the file has them.
    pub labels: Option<Vec<u8>>,
    /// Per-vertex confidence (same length as `vertices`) if the file has it.
    pub confidence: Option<Vec<f32>>,
}

impl PlyData {
    /// A point cloud without attributes.
    pub fn points(vertices: Vec<[f32; 3]>) -> Self {
        Self {
            vertices,
            ..Self::default()
        }
    }

    /// A triangle mesh.
    pub fn mesh(vertices: Vec<[f32; 3]>, faces: Vec<[u32; 3]>) -> Self {
        Self {
            vertices,
            faces,
            ..Self::default()
        }
    }

    fn check(&self) -> Result<(), PlyError> {
        let n = self.vertices.len();
        if n > u32::MAX as usize {
            return Err(PlyError::Invalid("more than 2^32-1 vertices".into()));
        }
        if let Some(l) = &self.labels {
            if l.len() != n {
                return Err(PlyError::Invalid(format!(
                    "{} labels for {} vertices",
                    l.len(),
                    n
                )));
            }
        }
        if let Some(c) = &self.confidence {
            if c.len() != n {
                return Err(PlyError::Invalid(format!(
                    "{} confidences for {} vertices",
                    c.len(),
                    n
                )));
            }
        }
        for (i, f) in self.faces.iter().enumerate() {
            for &v in f {
                if v as usize >= n {
                    return Err(PlyError::BadIndex {
                        face: i,
                        index: i64::from(v),
                        vertices: n,
                    });
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- writing

/// Writes `data` as binary little-endian PLY.
pub fn write_ply<W: Write>(w: W, data: &PlyData) -> Result<(), PlyError> {
    data.check()?;
    let mut w = BufWriter::new(w);
    let mut h = String::new();
    h.push_str("ply\nformat binary_little_endian 1.0\ncomment written by shapecast\n");
    h.push_str(&format!("element vertex {}\n", data.vertices.len()));
    h.push_str("property float x\nproperty float y\nproperty float z\n");
    if data.labels.is_some() {
        h.push_str("property uchar label\n");
    }
    if data.confidence.is_some() {
        h.push_str("property float confidence\n");
    }
    if !data.faces.is_empty() {
        h.push_str(&format!("element face {}\n", data.faces.len()));
        h.push_str("property list uchar int vertex_indices\n");
    }
    h.push_str("end_header\n");
    w.write_all(h.as_bytes())?;
    for (i, v) in data.vertices.iter().enumerate() {
        for c in v {
            w.write_all(&c.to_le_bytes())?;
        }
        if let Some(l) = &data.labels {
            w.write_all(&[l[i]])?;
        }
        if let Some(c) = &data.confidence {
            w.write_all(&c[i].to_le_bytes())?;
        }
    }
    for f in &data.faces {
        w.write_all(&[3u8])?;
        for &i in f {
            // Checked above: every index < vertex count <= u32::MAX; PLY `int` is
            // signed, and readers treat indices > i32::MAX as negative, so refuse.
            let i = i32::try_from(i)
                .map_err(|_| PlyError::Invalid("vertex index beyond i32 range".into()))?;
            w.write_all(&i.to_le_bytes())?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Writes a point cloud with optional per-point labels and confidence.
pub fn write_points<W: Write>(
    w: W,
    points: &[[f32; 3]],
    labels: Option<&[u8]>,
    confidence: Option<&[f32]>,
) -> Result<(), PlyError> {
    write_ply(
        w,
        &PlyData {
            vertices: points.to_vec(),
            faces: Vec::new(),
            labels: labels.map(<[u8]>::to_vec),
            confidence: confidence.map(<[f32]>::to_vec),
        },
    )
}

/// Writes a triangle mesh.
pub fn write_mesh<W: Write>(
    w: W,
    vertices: &[[f32; 3]],
    faces: &[[u32; 3]],
) -> Result<(), PlyError> {
    write_ply(w, &PlyData::mesh(vertices.to_vec(), faces.to_vec()))
}

/// Writes `data` to a file at `path` (binary little-endian PLY).
pub fn save_ply(path: impl AsRef<Path>, data: &PlyData) -> Result<(), PlyError> {
    data.check()?;
    let f = fs::File::create(path.as_ref())?;
    write_ply(f, data)
}

/// Writes points as XYZ text (`x y z` per line).
pub fn write_xyz<W: Write>(w: W, points: &[[f32; 3]]) -> Result<(), PlyError> {
    let mut w = BufWriter::new(w);
    for p in points {
        writeln!(w, "{} {} {}", p[0], p[1], p[2])?;
    }
    w.flush()?;
    Ok(())
}

// ---------------------------------------------------------------- reading

/// Largest file [`load`] reads (whole, into memory): 1 GiB, about 90 M binary vertices.
pub const MAX_FILE: u64 = 1 << 30;

/// The bytes of `path`, refused when longer than `max` (checked while reading, so a file
/// that grows, or a device file like /dev/zero, is refused too).
fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, PlyError> {
    use std::io::Read;
    let f = fs::File::open(path)?;
    let hint = f.metadata().map(|m| m.len()).unwrap_or(0);
    if hint > max {
        return Err(PlyError::TooLarge { bytes: hint, max });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(PlyError::TooLarge {
            bytes: bytes.len() as u64,
            max,
        });
    }
    Ok(bytes)
}

/// Reads a `.ply` or XYZ-like text file (`.xyz`, `.txt`, `.pts`), chosen by
/// extension (a file starting with `ply\n` is read as PLY whatever its name).
pub fn load(path: impl AsRef<Path>) -> Result<PlyData, PlyError> {
    let path = path.as_ref();
    let bytes = read_capped(path, MAX_FILE)?;
    if bytes.starts_with(b"ply\n") || bytes.starts_with(b"ply\r\n") {
        return read_ply(&bytes);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "ply" => read_ply(&bytes),
        "xyz" | "txt" | "pts" | "xyzn" | "csv" => read_xyz(&bytes),
        _ => Err(PlyError::UnknownFormat(path.display().to_string())),
    }
}

/// Reads XYZ text: each non-empty, non-`#` line holds at least three numbers
/// (x y z; further columns are ignored), separated by whitespace or commas.
pub fn read_xyz(bytes: &[u8]) -> Result<PlyData, PlyError> {
    let text = std::str::from_utf8(bytes).map_err(|e| PlyError::Value {
        what: "XYZ file".into(),
        msg: format!("not UTF-8 text: {e}"),
    })?;
    let mut vertices = Vec::new();
    for (ln, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let mut it = line
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .filter(|s| !s.is_empty());
        let mut p = [0f32; 3];
        for (k, slot) in p.iter_mut().enumerate() {
            let tok = it.next().ok_or_else(|| PlyError::Value {
                what: format!("line {}", ln + 1),
                msg: format!("expected 3 coordinates, found {k}"),
            })?;
            *slot = tok.parse::<f32>().map_err(|e| PlyError::Value {
                what: format!("line {}", ln + 1),
                msg: format!("`{tok}`: {e}"),
            })?;
        }
        vertices.push(p);
    }
    Ok(PlyData::points(vertices))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ascii,
    BinLe,
    BinBe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    F32,
    F64,
}

impl Scalar {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "char" | "int8" => Self::I8,
            "uchar" | "uint8" => Self::U8,
            "short" | "int16" => Self::I16,
            "ushort" | "uint16" => Self::U16,
            "int" | "int32" => Self::I32,
            "uint" | "uint32" => Self::U32,
            "float" | "float32" => Self::F32,
            "double" | "float64" => Self::F64,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::I8 | Self::U8 => 1,
            Self::I16 | Self::U16 => 2,
            Self::I32 | Self::U32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    fn is_int(self) -> bool {
        !matches!(self, Self::F32 | Self::F64)
    }
}

#[derive(Debug, Clone)]
enum PropKind {
    Scalar(Scalar),
    List { count: Scalar, item: Scalar },
}

#[derive(Debug, Clone)]
struct Property {
    name: String,
    kind: PropKind,
}

#[derive(Debug, Clone)]
struct Element {
    name: String,
    count: usize,
    props: Vec<Property>,
}

impl Element {
    /// Size of one instance in a binary body when it has no list property.
    fn fixed_stride(&self) -> Option<usize> {
        self.props
            .iter()
            .map(|p| match p.kind {
                PropKind::Scalar(s) => Some(s.size()),
                PropKind::List { .. } => None,
            })
            .sum()
    }

    /// Smallest possible size of one instance in bytes (binary) — used to
    /// bound allocations against the bytes actually present.
    fn min_stride(&self) -> usize {
        self.props
            .iter()
            .map(|p| match p.kind {
                PropKind::Scalar(s) => s.size(),
                PropKind::List { count, .. } => count.size(),
            })
            .sum()
    }
}

struct Header {
    format: Format,
    elements: Vec<Element>,
    body_start: usize,
}

fn header_err(msg: impl Into<String>) -> PlyError {
    PlyError::Header(msg.into())
}

/// Longest header accepted (bytes): a guard against reading a binary blob
/// as one endless header.
const MAX_HEADER: usize = 64 * 1024;

fn parse_header(bytes: &[u8]) -> Result<Header, PlyError> {
    if !(bytes.starts_with(b"ply\n") || bytes.starts_with(b"ply\r\n")) {
        return Err(header_err("file does not start with `ply`"));
    }
    let mut pos = 0usize;
    let mut format = None;
    let mut elements: Vec<Element> = Vec::new();
    let mut first = true;
    loop {
        if pos >= bytes.len() {
            return Err(header_err("missing `end_header`"));
        }
        if pos > MAX_HEADER {
            return Err(header_err("header longer than 64 KiB"));
        }
        let rest = &bytes[pos..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| header_err("missing `end_header`"))?;
        let raw = &rest[..nl];
        pos += nl + 1;
        let line = std::str::from_utf8(raw)
            .map_err(|_| header_err("header is not ASCII text"))?
            .trim_end_matches('\r')
            .trim();
        if first {
            first = false;
            continue; // "ply"
        }
        let mut tok = line.split_whitespace();
        let Some(kw) = tok.next() else { continue };
        match kw {
            "comment" | "obj_info" => {}
            "format" => {
                let f = match tok.next() {
                    Some("ascii") => Format::Ascii,
                    Some("binary_little_endian") => Format::BinLe,
                    Some("binary_big_endian") => Format::BinBe,
                    other => return Err(header_err(format!("unknown format {other:?}"))),
                };
                format = Some(f);
            }
            "element" => {
                let name = tok
                    .next()
                    .ok_or_else(|| header_err("element without a name"))?;
                let count = tok
                    .next()
                    .and_then(|c| c.parse::<usize>().ok())
                    .ok_or_else(|| header_err(format!("element `{name}` without a valid count")))?;
                elements.push(Element {
                    name: name.to_string(),
                    count,
                    props: Vec::new(),
                });
            }
            "property" => {
                let el = elements
                    .last_mut()
                    .ok_or_else(|| header_err("property before any element"))?;
                let t = tok
                    .next()
                    .ok_or_else(|| header_err("property without a type"))?;
                let kind = if t == "list" {
                    let c = tok.next().and_then(Scalar::parse);
                    let i = tok.next().and_then(Scalar::parse);
                    match (c, i) {
                        (Some(count), Some(item)) if count.is_int() => {
                            PropKind::List { count, item }
                        }
                        _ => return Err(header_err(format!("bad list property `{line}`"))),
                    }
                } else {
                    PropKind::Scalar(
                        Scalar::parse(t)
                            .ok_or_else(|| header_err(format!("unknown property type `{t}`")))?,
                    )
                };
                let name = tok
                    .next()
                    .ok_or_else(|| header_err("property without a name"))?;
                el.props.push(Property {
                    name: name.to_string(),
                    kind,
                });
            }
            "end_header" => break,
            other => return Err(header_err(format!("unknown header keyword `{other}`"))),
        }
    }
    let format = format.ok_or_else(|| header_err("missing `format` line"))?;
    Ok(Header {
        format,
        elements,
        body_start: pos,
    })
}

/// Sequential reader of scalars from either a binary or an ASCII body.
enum Body<'a> {
    Bin {
        data: &'a [u8],
        pos: usize,
        big: bool,
    },
    Ascii {
        tokens: std::str::SplitAsciiWhitespace<'a>,
    },
}

impl Body<'_> {
    fn remaining_bytes(&self) -> usize {
        match self {
            Body::Bin { data, pos, .. } => data.len().saturating_sub(*pos),
            // Only used to bound binary allocations.
            Body::Ascii { .. } => 0,
        }
    }

    /// Reads one value of type `s`; `None` at end of data.
    fn read(&mut self, s: Scalar, el: &str) -> Result<f64, PlyError> {
        match self {
            Body::Bin { data, pos, big } => {
                let n = s.size();
                let end = pos
                    .checked_add(n)
                    .filter(|&e| e <= data.len())
                    .ok_or_else(|| PlyError::Truncated(el.to_string()))?;
                let b = &data[*pos..end];
                *pos = end;
                let mut a = [0u8; 8];
                a[..n].copy_from_slice(b);
                if *big {
                    a[..n].reverse();
                }
                Ok(match s {
                    Scalar::I8 => f64::from(a[0] as i8),
                    Scalar::U8 => f64::from(a[0]),
                    Scalar::I16 => f64::from(i16::from_le_bytes([a[0], a[1]])),
                    Scalar::U16 => f64::from(u16::from_le_bytes([a[0], a[1]])),
                    Scalar::I32 => f64::from(i32::from_le_bytes([a[0], a[1], a[2], a[3]])),
                    Scalar::U32 => f64::from(u32::from_le_bytes([a[0], a[1], a[2], a[3]])),
                    Scalar::F32 => f64::from(f32::from_le_bytes([a[0], a[1], a[2], a[3]])),
                    Scalar::F64 => f64::from_le_bytes(a),
                })
            }
            Body::Ascii { tokens } => {
                let t = tokens
                    .next()
                    .ok_or_else(|| PlyError::Truncated(el.to_string()))?;
                let v = if s.is_int() {
                    t.parse::<i64>()
                        .map(|v| v as f64)
                        .map_err(|e| e.to_string())
                } else {
                    t.parse::<f64>().map_err(|e| e.to_string())
                };
                v.map_err(|msg| PlyError::Value {
                    what: format!("element `{el}`"),
                    msg: format!("`{t}`: {msg}"),
                })
            }
        }
    }

    fn skip_bin(&mut self, n: usize, el: &str) -> Result<(), PlyError> {
        match self {
            Body::Bin { data, pos, .. } => {
                let end = pos
                    .checked_add(n)
                    .filter(|&e| e <= data.len())
                    .ok_or_else(|| PlyError::Truncated(el.to_string()))?;
                *pos = end;
                Ok(())
            }
            Body::Ascii { .. } => Ok(()),
        }
    }
}

fn list_len(v: f64, el: &str) -> Result<usize, PlyError> {
    if v < 0.0 || v.fract() != 0.0 || v > 1e6 {
        return Err(PlyError::Value {
            what: format!("element `{el}`"),
            msg: format!("invalid list length {v}"),
        });
    }
    Ok(v as usize)
}

/// Reads a PLY file held in memory.
pub fn read_ply(bytes: &[u8]) -> Result<PlyData, PlyError> {
    let h = parse_header(bytes)?;
    let body_bytes = &bytes[h.body_start..];
    let mut body = match h.format {
        Format::Ascii => Body::Ascii {
            tokens: std::str::from_utf8(body_bytes)
                .map_err(|e| PlyError::Value {
                    what: "ASCII body".into(),
                    msg: format!("not UTF-8 text: {e}"),
                })?
                .split_ascii_whitespace(),
        },
        Format::BinLe | Format::BinBe => Body::Bin {
            data: body_bytes,
            pos: 0,
            big: h.format == Format::BinBe,
        },
    };
    let binary = h.format != Format::Ascii;
    let mut out = PlyData::default();
    let mut seen_vertex = false;
    let mut seen_face = false;
    let mut raw_faces: Vec<Vec<i64>> = Vec::new();
    for el in &h.elements {
        // Bound the up-front reservation by what the body could hold.
        let min = el.min_stride().max(1);
        let cap = if binary {
            el.count.min(body.remaining_bytes() / min)
        } else {
            el.count.min(1 << 16)
        };
        match el.name.as_str() {
            "vertex" if !seen_vertex => {
                seen_vertex = true;
                let idx = |n: &str| el.props.iter().position(|p| p.name == n);
                let (Some(ix), Some(iy), Some(iz)) = (idx("x"), idx("y"), idx("z")) else {
                    return Err(header_err("vertex element lacks x, y or z"));
                };
                for &i in &[ix, iy, iz] {
                    if matches!(el.props[i].kind, PropKind::List { .. }) {
                        return Err(header_err("vertex coordinate declared as a list"));
                    }
                }
                let il = idx("label").filter(|&i| matches!(el.props[i].kind, PropKind::Scalar(_)));
                let ic =
                    idx("confidence").filter(|&i| matches!(el.props[i].kind, PropKind::Scalar(_)));
                out.vertices.reserve(cap);
                let mut labels = il.map(|_| Vec::with_capacity(cap));
                let mut conf = ic.map(|_| Vec::with_capacity(cap));
                let mut vals = vec![0f64; el.props.len()];
                for _ in 0..el.count {
                    for (k, p) in el.props.iter().enumerate() {
                        match p.kind {
                            PropKind::Scalar(s) => vals[k] = body.read(s, &el.name)?,
                            PropKind::List { count, item } => {
                                let n = list_len(body.read(count, &el.name)?, &el.name)?;
                                skip_items(&mut body, item, n, &el.name)?;
                            }
                        }
                    }
                    out.vertices
                        .push([vals[ix] as f32, vals[iy] as f32, vals[iz] as f32]);
                    if let (Some(l), Some(i)) = (labels.as_mut(), il) {
                        l.push(vals[i].clamp(0.0, 255.0) as u8);
                    }
                    if let (Some(c), Some(i)) = (conf.as_mut(), ic) {
                        c.push(vals[i] as f32);
                    }
                }
                out.labels = labels;
                out.confidence = conf;
            }
            "face" if !seen_face => {
                seen_face = true;
                let il = el
                    .props
                    .iter()
                    .position(|p| {
                        (p.name == "vertex_indices" || p.name == "vertex_index")
                            && matches!(p.kind, PropKind::List { .. })
                    })
                    .ok_or_else(|| header_err("face element lacks a vertex_indices list"))?;
                raw_faces.reserve(cap);
                for _ in 0..el.count {
                    let mut face = Vec::new();
                    for (k, p) in el.props.iter().enumerate() {
                        match p.kind {
                            PropKind::Scalar(s) => {
                                body.read(s, &el.name)?;
                            }
                            PropKind::List { count, item } => {
                                let n = list_len(body.read(count, &el.name)?, &el.name)?;
                                if k == il {
                                    for _ in 0..n {
                                        face.push(body.read(item, &el.name)? as i64);
                                    }
                                } else {
                                    skip_items(&mut body, item, n, &el.name)?;
                                }
                            }
                        }
                    }
                    raw_faces.push(face);
                }
            }
            _ => {
                // Unknown (or repeated) element: skip it. One without properties holds
                // no bytes whatever its count (which may be 2^64-1: no loop over it).
                if el.props.is_empty() {
                    continue;
                }
                if binary {
                    if let Some(stride) = el.fixed_stride() {
                        let total = stride
                            .checked_mul(el.count)
                            .ok_or_else(|| PlyError::Truncated(el.name.clone()))?;
                        body.skip_bin(total, &el.name)?;
                        continue;
                    }
                }
                for _ in 0..el.count {
                    for p in &el.props {
                        match p.kind {
                            PropKind::Scalar(s) => {
                                body.read(s, &el.name)?;
                            }
                            PropKind::List { count, item } => {
                                let n = list_len(body.read(count, &el.name)?, &el.name)?;
                                skip_items(&mut body, item, n, &el.name)?;
                            }
                        }
                    }
                }
            }
        }
    }
    if !seen_vertex {
        return Err(header_err("no vertex element"));
    }
    let nv = out.vertices.len();
    for (fi, f) in raw_faces.iter().enumerate() {
        for &i in f {
            if i < 0 || i as usize >= nv {
                return Err(PlyError::BadIndex {
                    face: fi,
                    index: i,
                    vertices: nv,
                });
            }
        }
        // Fan triangulation of polygons; degenerate (<3) faces are dropped.
        for k in 1..f.len().saturating_sub(1) {
            out.faces.push([f[0] as u32, f[k] as u32, f[k + 1] as u32]);
        }
    }
    Ok(out)
}

fn skip_items(body: &mut Body<'_>, item: Scalar, n: usize, el: &str) -> Result<(), PlyError> {
    match body {
        Body::Bin { .. } => body.skip_bin(item.size() * n, el),
        Body::Ascii { .. } => {
            for _ in 0..n {
                body.read(item, el)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_capped_refuses_long_files_and_endless_devices() {
        let p = std::env::temp_dir().join(format!("shapecast-ply-cap-{}.xyz", std::process::id()));
        fs::write(&p, b"0 0 0\n1 1 1\n").unwrap();
        assert_eq!(read_capped(&p, 12).unwrap().len(), 12);
        assert!(matches!(
            read_capped(&p, 11),
            Err(PlyError::TooLarge { bytes: 12, max: 11 })
        ));
        fs::remove_file(&p).unwrap();
        // metadata says 0 bytes; the read itself stops at the cap
        assert!(matches!(
            read_capped(Path::new("/dev/zero"), 1000),
            Err(PlyError::TooLarge { bytes: 1001, .. })
        ));
    }

    fn cloud() -> PlyData {
        PlyData {
            vertices: vec![[0.0, 1.0, 2.0], [-1.5, 0.25, 3.0], [1e-3, -2.0, 0.5]],
            faces: vec![],
            labels: Some(vec![0, 7, 255]),
            confidence: Some(vec![0.5, 1.0, 0.0]),
        }
    }

    #[test]
    fn binary_points_roundtrip() {
        let d = cloud();
        let mut buf = Vec::new();
        write_ply(&mut buf, &d).unwrap();
        assert!(buf.starts_with(b"ply\nformat binary_little_endian 1.0\n"));
        assert_eq!(read_ply(&buf).unwrap(), d);
    }

    #[test]
    fn binary_mesh_roundtrip() {
        let d = PlyData::mesh(
            vec![
                [0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [0.0, 0.0, 1.0],
            ],
            vec![[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]],
        );
        let mut buf = Vec::new();
        write_ply(&mut buf, &d).unwrap();
        assert_eq!(read_ply(&buf).unwrap(), d);
    }

    #[test]
    fn ascii_with_quads_doubles_and_extra_elements() {
        let s = "ply\r\nformat ascii 1.0\r\ncomment hi\r\nelement vertex 4\r\n\
                 property double x\r\nproperty double y\r\nproperty double z\r\n\
                 property uchar red\r\nelement face 1\r\n\
                 property list uchar int vertex_index\r\nelement edge 1\r\n\
                 property int vertex1\r\nproperty int vertex2\r\nend_header\r\n\
                 0 0 0 255\r\n1 0 0 0\r\n1 1 0 0\r\n0 1 0 0\r\n4 0 1 2 3\r\n0 1\r\n";
        let d = read_ply(s.as_bytes()).unwrap();
        assert_eq!(d.vertices.len(), 4);
        assert_eq!(d.vertices[2], [1.0, 1.0, 0.0]);
        assert_eq!(d.faces, vec![[0, 1, 2], [0, 2, 3]]);
        assert!(d.labels.is_none());
    }

    #[test]
    fn big_endian_and_mixed_types() {
        let mut b = b"ply\nformat binary_big_endian 1.0\nelement vertex 1\n\
                      property short x\nproperty int y\nproperty double z\nend_header\n"
            .to_vec();
        b.extend_from_slice(&(-3i16).to_be_bytes());
        b.extend_from_slice(&(70000i32).to_be_bytes());
        b.extend_from_slice(&(0.5f64).to_be_bytes());
        let d = read_ply(&b).unwrap();
        assert_eq!(d.vertices, vec![[-3.0, 70000.0, 0.5]]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        write_ply(
            &mut buf,
            &PlyData {
                faces: vec![[0, 1, 2]],
                ..cloud()
            },
        )
        .unwrap();
        for n in 0..buf.len() {
            assert!(read_ply(&buf[..n]).is_err(), "prefix {n} accepted");
        }
    }

    #[test]
    fn garbage_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut good = Vec::new();
        write_ply(&mut good, &PlyData::mesh(cloud().vertices, vec![[0, 1, 2]])).unwrap();
        for _ in 0..3000 {
            let mut b = good.clone();
            for _ in 0..rng.gen_range(1..6) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            let _ = read_ply(&b);
            let _ = read_xyz(&b);
        }
        for _ in 0..500 {
            let n = rng.gen_range(0..300);
            let b: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let _ = read_ply(&b);
            let mut h = b"ply\nformat ascii 1.0\nelement vertex 99999999999\n".to_vec();
            h.extend_from_slice(&b);
            let _ = read_ply(&h);
        }
    }

    /// One random header: elements (vertex, face or other) with random counts (some huge)
    /// and random property lists, in a random format.
    fn random_header() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let scalar = prop::sample::select(vec![
            "char", "uchar", "short", "ushort", "int", "uint", "float", "double", "int8", "float64",
        ]);
        let prop_line = (
            prop::bool::weighted(0.25),
            scalar.clone(),
            scalar,
            prop::sample::select(vec![
                "x",
                "y",
                "z",
                "label",
                "confidence",
                "vertex_indices",
                "red",
            ]),
        )
            .prop_map(|(list, a, b, name)| {
                if list {
                    format!("property list {a} {b} {name}\n")
                } else {
                    format!("property {a} {name}\n")
                }
            });
        let count = prop_oneof![
            4 => 0usize..6,
            1 => Just(usize::MAX),
            1 => Just(1usize << 40),
            1 => Just(1_000_000usize),
        ];
        let element = (
            prop::sample::select(vec!["vertex", "face", "edge"]),
            count,
            prop::collection::vec(prop_line, 0..5),
            prop::bool::weighted(0.5),
        )
            .prop_map(|(name, n, props, xyz)| {
                let mut e = format!("element {name} {n}\n");
                if xyz && name == "vertex" {
                    e.push_str("property float x\nproperty float y\nproperty float z\n");
                }
                e.extend(props);
                e
            });
        (
            prop::sample::select(vec!["ascii", "binary_little_endian", "binary_big_endian"]),
            prop::collection::vec(element, 0..4),
        )
            .prop_map(|(fmt, els)| format!("ply\nformat {fmt} 1.0\n{}end_header\n", els.concat()))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any header (huge counts, lists anywhere, unknown elements) over any body: an error
        /// or data consistent with itself, quickly, without allocating from the counts.
        #[test]
        fn any_header_over_any_body_is_an_error_or_consistent_data(
            header in random_header(),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            ascii_body in "[0-9 .\\-\n]{0,120}",
        ) {
            for b in [body.as_slice(), ascii_body.as_bytes()] {
                let mut file = header.clone().into_bytes();
                file.extend_from_slice(b);
                let t = std::time::Instant::now();
                if let Ok(d) = read_ply(&file) {
                    let n = d.vertices.len();
                    proptest::prop_assert!(d.labels.as_ref().is_none_or(|l| l.len() == n));
                    proptest::prop_assert!(d.confidence.as_ref().is_none_or(|c| c.len() == n));
                    proptest::prop_assert!(d.faces.iter().flatten().all(|&i| (i as usize) < n));
                }
                proptest::prop_assert!(t.elapsed() < std::time::Duration::from_secs(1), "slow: {header}");
            }
        }
    }

    #[test]
    fn ascii_element_without_properties_and_a_huge_count_is_quick() {
        // An element with no properties holds nothing to read: a count of 2^64-1 must not
        // become 2^64-1 empty loop turns.
        let s = b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n\
                  property float y\nproperty float z\nelement junk 18446744073709551615\n\
                  end_header\n1 2 3\n";
        let t = std::time::Instant::now();
        assert_eq!(read_ply(s).unwrap().vertices, vec![[1.0, 2.0, 3.0]]);
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn huge_counts_do_not_allocate_or_hang() {
        let s = b"ply\nformat binary_little_endian 1.0\nelement vertex 18446744073709551615\n\
                  property float x\nproperty float y\nproperty float z\nend_header\n\0\0\0\0";
        assert!(matches!(read_ply(s), Err(PlyError::Truncated(_))));
        let s = b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\n\
                  property float y\nproperty float z\nelement face 1\n\
                  property list uint int vertex_indices\nend_header\n\xff\xff\xff\xff";
        assert!(read_ply(s).is_err());
    }

    #[test]
    fn header_errors() {
        assert!(matches!(read_ply(b"plx\n"), Err(PlyError::Header(_))));
        assert!(matches!(
            read_ply(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n"),
            Err(PlyError::Header(_))
        ));
        assert!(matches!(
            read_ply(b"ply\nformat weird 1.0\nend_header\n"),
            Err(PlyError::Header(_))
        ));
        assert!(matches!(
            read_ply(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\nend_header\n1 2 abc\n"),
            Err(PlyError::Value { .. })
        ));
    }

    #[test]
    fn bad_face_index() {
        let s = b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n\
                  property float z\nelement face 1\nproperty list uchar int vertex_indices\n\
                  end_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n";
        assert!(matches!(
            read_ply(s),
            Err(PlyError::BadIndex { index: 3, .. })
        ));
        let d = PlyData::mesh(vec![[0.0; 3]], vec![[0, 0, 1]]);
        assert!(matches!(
            write_ply(Vec::new(), &d),
            Err(PlyError::BadIndex { .. })
        ));
    }

    #[test]
    fn xyz_reading() {
        let d = read_xyz(b"# comment\n1 2 3\n\n4,5,6, 0.1 0.2 0.3\n  -7\t8e0 9.5 \r\n").unwrap();
        assert_eq!(
            d.vertices,
            vec![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [-7.0, 8.0, 9.5]]
        );
        assert!(matches!(read_xyz(b"1 2\n"), Err(PlyError::Value { .. })));
        assert!(matches!(read_xyz(b"1 2 x\n"), Err(PlyError::Value { .. })));
        assert!(read_xyz(b"\xff\xfe").is_err());
        let mut buf = Vec::new();
        write_xyz(&mut buf, &d.vertices).unwrap();
        assert_eq!(read_xyz(&buf).unwrap(), d);
    }

    #[test]
    fn mismatched_attributes_rejected() {
        let mut d = cloud();
        d.labels = Some(vec![1]);
        assert!(matches!(
            write_ply(Vec::new(), &d),
            Err(PlyError::Invalid(_))
        ));
    }

    #[test]
    fn load_by_extension() {
        let dir = std::env::temp_dir().join(format!("shapecast-ply-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.ply");
        save_ply(&p, &cloud()).unwrap();
        assert_eq!(load(&p).unwrap(), cloud());
        let x = dir.join("a.xyz");
        fs::write(&x, "1 2 3\n").unwrap();
        assert_eq!(load(&x).unwrap().vertices, vec![[1.0, 2.0, 3.0]]);
        let o = dir.join("a.obj");
        fs::write(&o, "v 1 2 3\n").unwrap();
        assert!(matches!(load(&o), Err(PlyError::UnknownFormat(_))));
        assert!(matches!(
            load(dir.join("missing.ply")),
            Err(PlyError::Io(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
