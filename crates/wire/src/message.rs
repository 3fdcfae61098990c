//! Versioned messages: one [`PROTOCOL_VERSION`] byte, then the postcard
//! encoding of a [`Message`]. Byte slices are borrowed from the input (zero
//! copy). Every field's bytes are specified in SPEC.md; the golden-byte tests
//! in `tests/wire.rs` freeze them: changing them means bumping the version.

use serde::{Deserialize, Serialize};

use crate::pointcode::Bounds;
use crate::Error;

/// First byte of every encoded message. Bump on any change of the bytes.
pub const PROTOCOL_VERSION: u8 = 1;
/// Most hypotheses (alternative reconstructions) in one point-cloud frame.
pub const MAX_HYPOTHESES: usize = 8;
/// Longest model id, bytes of UTF-8.
pub const MAX_MODEL_ID: usize = 32;
/// Largest voxel grid resolution accepted.
pub const MAX_VOXEL_RESOLUTION: u16 = 512;

/// What the model's head produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeadKind {
    /// A point set (one or more hypotheses).
    Points,
    /// An occupancy voxel grid.
    Voxels,
    /// An implicit surface (SDF/occupancy) that the device meshes.
    Implicit,
    /// A triangle mesh.
    Mesh,
}

/// Units of the coordinates inside [`Bounds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Units {
    /// Metres, camera frame.
    Metres,
    /// Millimetres, camera frame.
    Millimetres,
    /// Normalized object coordinates (unit cube or sphere).
    Normalized,
}

/// Width of the vertex indices in [`MeshFrame::faces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexWidth {
    /// u16 little-endian.
    U16,
    /// u32 little-endian.
    U32,
}

impl IndexWidth {
    /// Bytes per index.
    pub const fn bytes(self) -> usize {
        match self {
            IndexWidth::U16 => 2,
            IndexWidth::U32 => 4,
        }
    }
}

/// Sent by a device when it starts and every few seconds: what it streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// Sender id (also in every frame message and datagram header).
    pub device_id: u32,
    /// Model name, at most [`MAX_MODEL_ID`] bytes.
    #[serde(borrow)]
    pub model_id: &'a str,
    /// What the head produces.
    pub head: HeadKind,
    /// Units of the bounds.
    pub units: Units,
    /// Default quantization bounds.
    pub bounds: Bounds,
    /// Default quantization bits per axis (8..=16).
    pub point_bits: u8,
    /// Most points per hypothesis the device sends.
    pub max_points: u32,
    /// Voxel grid resolution (0 if the head is not voxels).
    pub voxel_resolution: u16,
    /// Number of label classes (0 = no labels).
    pub num_classes: u8,
    /// Model input width and height in pixels.
    pub input_size: [u16; 2],
}

/// One reconstruction hypothesis of a [`PointCloudFrame`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hypothesis<'a> {
    /// Output of [`crate::pointcode::encode`].
    #[serde(borrow, with = "bytes")]
    pub points: &'a [u8],
    /// One class byte per point, in the canonical order `pointcode::decode` returns.
    #[serde(borrow, with = "opt_bytes")]
    pub labels: Option<&'a [u8]>,
    /// One confidence byte (0..=255 ~ 0..1) per point, same order.
    #[serde(borrow, with = "opt_bytes")]
    pub confidence: Option<&'a [u8]>,
}

/// A point-cloud reconstruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointCloudFrame<'a> {
    /// Sender id.
    pub device_id: u32,
    /// Frame number (increases by one per captured frame).
    pub frame_id: u32,
    /// Capture time, µs since device boot.
    pub capture_ts_us: u64,
    /// Quantization bits per axis (8..=16), same as inside the point code.
    pub bits: u8,
    /// Quantization bounds.
    pub bounds: Bounds,
    /// 1..=8 hypotheses, most likely first.
    #[serde(borrow)]
    pub hypotheses: heapless::Vec<Hypothesis<'a>, MAX_HYPOTHESES>,
}

/// An occupancy grid reconstruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoxelFrame<'a> {
    /// Sender id.
    pub device_id: u32,
    /// Frame number.
    pub frame_id: u32,
    /// Capture time, µs since device boot.
    pub capture_ts_us: u64,
    /// Cells per axis (e.g. 32), 1..=[`MAX_VOXEL_RESOLUTION`].
    pub resolution: u16,
    /// Box the grid spans.
    pub bounds: Bounds,
    /// `ceil(r³/8)` bytes; cell (x,y,z) is bit `i % 8` (LSB first) of byte
    /// `i / 8`, `i = x + r*(y + r*z)`.
    #[serde(borrow, with = "bytes")]
    pub occupancy: &'a [u8],
}

/// A triangle-mesh reconstruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshFrame<'a> {
    /// Sender id.
    pub device_id: u32,
    /// Frame number.
    pub frame_id: u32,
    /// Capture time, µs since device boot.
    pub capture_ts_us: u64,
    /// Quantization bits of the vertices (8..=16).
    pub bits: u8,
    /// Quantization bounds of the vertices.
    pub bounds: Bounds,
    /// Width of the indices in `faces`.
    pub index_width: IndexWidth,
    /// Quantized vertices: x, y, z as u16 LE each (6 bytes per vertex).
    #[serde(borrow, with = "bytes")]
    pub vertices: &'a [u8],
    /// Triangles: 3 indices per face, `index_width` LE each, counter-clockwise seen from outside.
    #[serde(borrow, with = "bytes")]
    pub faces: &'a [u8],
    /// One class byte per vertex.
    #[serde(borrow, with = "opt_bytes")]
    pub labels: Option<&'a [u8]>,
}

/// Frame counters of a [`Stats`] message (since boot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Frames taken from the camera.
    pub captured: u32,
    /// Frames that went through the model.
    pub inferred: u32,
    /// Frame messages handed to the link.
    pub sent: u32,
}

/// Drop counters of a [`Stats`] message (since boot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Frames skipped because a newer one was ready.
    pub stale_frames: u32,
    /// Results dropped because the link queue was full.
    pub link_busy: u32,
    /// Link write errors.
    pub send_errors: u32,
    /// Camera read errors.
    pub camera_errors: u32,
}

/// Latency percentiles of one pipeline stage, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: u32,
    /// 90th percentile.
    pub p90_us: u32,
    /// 99th percentile.
    pub p99_us: u32,
    /// Maximum.
    pub max_us: u32,
}

/// Per-stage latency of a [`Stats`] message (over the reporting window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageLatency {
    /// Camera capture.
    pub capture: Percentiles,
    /// Pixel format conversion.
    pub convert: Percentiles,
    /// Resize / normalize.
    pub preprocess: Percentiles,
    /// Model run.
    pub inference: Percentiles,
    /// Head decoding (points, voxels, surface extraction).
    pub decode: Percentiles,
    /// Wire encoding.
    pub encode: Percentiles,
    /// Link send.
    pub send: Percentiles,
}

/// Heartbeat with health figures, sent about once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Sender id.
    pub device_id: u32,
    /// Time since boot, ms.
    pub uptime_ms: u64,
    /// Output frames per second × 100.
    pub fps_x100: u32,
    /// Frame counters.
    pub counters: Counters,
    /// Drop counters.
    pub drops: Drops,
    /// Latency per stage.
    pub latency: StageLatency,
}

/// Everything that travels on a shapecast link.
// No allocation in this crate, so no boxing: the enum is ~450 bytes of
// slices and scalars, which is fine on any stack this crate targets.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// Device announcement (variant 0).
    #[serde(borrow)]
    Hello(Hello<'a>),
    /// Point cloud (variant 1).
    #[serde(borrow)]
    PointCloud(PointCloudFrame<'a>),
    /// Voxel grid (variant 2).
    #[serde(borrow)]
    Voxels(VoxelFrame<'a>),
    /// Mesh (variant 3).
    #[serde(borrow)]
    Mesh(MeshFrame<'a>),
    /// Heartbeat (variant 4).
    Stats(Stats),
}

impl Message<'_> {
    /// Sender id of any message.
    pub fn device_id(&self) -> u32 {
        match self {
            Message::Hello(m) => m.device_id,
            Message::PointCloud(m) => m.device_id,
            Message::Voxels(m) => m.device_id,
            Message::Mesh(m) => m.device_id,
            Message::Stats(m) => m.device_id,
        }
    }

    /// Frame number of frame messages.
    pub fn frame_id(&self) -> Option<u32> {
        match self {
            Message::PointCloud(m) => Some(m.frame_id),
            Message::Voxels(m) => Some(m.frame_id),
            Message::Mesh(m) => Some(m.frame_id),
            Message::Hello(_) | Message::Stats(_) => None,
        }
    }

    /// Capture time (µs since device boot) of frame messages.
    pub fn capture_ts_us(&self) -> Option<u64> {
        match self {
            Message::PointCloud(m) => Some(m.capture_ts_us),
            Message::Voxels(m) => Some(m.capture_ts_us),
            Message::Mesh(m) => Some(m.capture_ts_us),
            Message::Hello(_) | Message::Stats(_) => None,
        }
    }

    /// Quantization bounds of frame messages.
    pub fn bounds(&self) -> Option<Bounds> {
        match self {
            Message::PointCloud(m) => Some(m.bounds),
            Message::Voxels(m) => Some(m.bounds),
            Message::Mesh(m) => Some(m.bounds),
            Message::Hello(_) | Message::Stats(_) => None,
        }
    }

    /// Checks the invariants that postcard cannot express (see SPEC.md,
    /// "Validation"). Done by both [`encode_message`] and [`decode_message`].
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Message::Hello(h) => {
                check_bounds(&h.bounds)?;
                check_bits(h.point_bits)?;
                if h.model_id.len() > MAX_MODEL_ID || h.voxel_resolution > MAX_VOXEL_RESOLUTION {
                    return Err(Error::Malformed);
                }
            }
            Message::PointCloud(p) => {
                check_bounds(&p.bounds)?;
                check_bits(p.bits)?;
                if p.hypotheses.is_empty() {
                    return Err(Error::Malformed);
                }
                for h in &p.hypotheses {
                    if let (Some(l), Some(c)) = (h.labels, h.confidence) {
                        if l.len() != c.len() {
                            return Err(Error::Malformed);
                        }
                    }
                }
            }
            Message::Voxels(v) => {
                check_bounds(&v.bounds)?;
                if v.resolution == 0 || v.resolution > MAX_VOXEL_RESOLUTION {
                    return Err(Error::Malformed);
                }
                if v.occupancy.len() != occupancy_len(v.resolution) {
                    return Err(Error::Malformed);
                }
            }
            Message::Mesh(m) => {
                check_bounds(&m.bounds)?;
                check_bits(m.bits)?;
                let w = m.index_width.bytes();
                if m.vertices.len() % 6 != 0 || m.faces.len() % (3 * w) != 0 {
                    return Err(Error::Malformed);
                }
                let nv = m.vertices.len() / 6;
                if m.labels.is_some_and(|l| l.len() != nv) {
                    return Err(Error::Malformed);
                }
                let max = (1u32 << m.bits) - 1;
                if m.vertices
                    .chunks_exact(2)
                    .any(|c| u32::from(u16::from_le_bytes([c[0], c[1]])) > max)
                {
                    return Err(Error::Malformed);
                }
                if m.faces.chunks_exact(w).any(|c| index_at(c) as usize >= nv) {
                    return Err(Error::Malformed);
                }
            }
            Message::Stats(_) => {}
        }
        Ok(())
    }
}

fn index_at(c: &[u8]) -> u32 {
    match *c {
        [a, b] => u32::from(u16::from_le_bytes([a, b])),
        [a, b, c, d] => u32::from_le_bytes([a, b, c, d]),
        _ => u32::MAX,
    }
}

fn check_bits(bits: u8) -> Result<(), Error> {
    if (8..=16).contains(&bits) {
        Ok(())
    } else {
        Err(Error::BitsOutOfRange)
    }
}

/// Finite ends, `min <= max`, and a finite extent (`max - min` of two finite floats can
/// still be infinite, and every dequantized point would then be inf/NaN).
fn check_bounds(b: &Bounds) -> Result<(), Error> {
    for i in 0..3 {
        if !b.min[i].is_finite()
            || !b.max[i].is_finite()
            || b.min[i] > b.max[i]
            || !(b.max[i] - b.min[i]).is_finite()
        {
            return Err(Error::Malformed);
        }
    }
    Ok(())
}

/// Bytes of the occupancy bitmap of a `resolution`³ grid.
pub const fn occupancy_len(resolution: u16) -> usize {
    let r = resolution as usize;
    (r * r * r).div_ceil(8)
}

/// Whether cell (x, y, z) is occupied in a bitmap of [`VoxelFrame::occupancy`]
/// layout; `false` outside the grid or the bitmap.
pub fn voxel_occupied(occupancy: &[u8], resolution: u16, x: u16, y: u16, z: u16) -> bool {
    let r = resolution as usize;
    let (x, y, z) = (x as usize, y as usize, z as usize);
    if x >= r || y >= r || z >= r {
        return false;
    }
    let i = x + r * (y + r * z);
    occupancy
        .get(i / 8)
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Sets cell (x, y, z) in an occupancy bitmap (ignored outside the grid).
pub fn voxel_set(occupancy: &mut [u8], resolution: u16, x: u16, y: u16, z: u16) {
    let r = resolution as usize;
    let (x, y, z) = (x as usize, y as usize, z as usize);
    if x >= r || y >= r || z >= r {
        return;
    }
    let i = x + r * (y + r * z);
    if let Some(b) = occupancy.get_mut(i / 8) {
        *b |= 1 << (i % 8);
    }
}

/// Vertex `i` of [`MeshFrame::vertices`].
pub fn mesh_vertex(vertices: &[u8], i: usize) -> Option<[u16; 3]> {
    let v = vertices.get(i * 6..i * 6 + 6)?;
    Some([
        u16::from_le_bytes([v[0], v[1]]),
        u16::from_le_bytes([v[2], v[3]]),
        u16::from_le_bytes([v[4], v[5]]),
    ])
}

/// Face `i` of [`MeshFrame::faces`].
pub fn mesh_face(faces: &[u8], width: IndexWidth, i: usize) -> Option<[u32; 3]> {
    let w = width.bytes();
    let f = faces.get(i * 3 * w..(i + 1) * 3 * w)?;
    Some([
        index_at(&f[..w]),
        index_at(&f[w..2 * w]),
        index_at(&f[2 * w..]),
    ])
}

fn map_postcard(e: postcard::Error) -> Error {
    match e {
        postcard::Error::SerializeBufferFull => Error::BufferTooSmall,
        postcard::Error::DeserializeUnexpectedEnd => Error::Truncated,
        _ => Error::Malformed,
    }
}

/// Writes `PROTOCOL_VERSION || postcard(msg)` into `out`; returns its length.
/// The message is validated first.
pub fn encode_message(msg: &Message<'_>, out: &mut [u8]) -> Result<usize, Error> {
    msg.validate()?;
    let (first, rest) = out.split_first_mut().ok_or(Error::BufferTooSmall)?;
    *first = PROTOCOL_VERSION;
    let n = postcard::to_slice(msg, rest).map_err(map_postcard)?.len();
    Ok(n + 1)
}

/// Decodes and validates one message; slices borrow from `input`. Trailing
/// bytes are [`Error::Malformed`].
pub fn decode_message(input: &[u8]) -> Result<Message<'_>, Error> {
    let (&version, rest) = input.split_first().ok_or(Error::Truncated)?;
    if version != PROTOCOL_VERSION {
        return Err(Error::UnsupportedVersion);
    }
    let (msg, tail): (Message<'_>, _) = postcard::take_from_bytes(rest).map_err(map_postcard)?;
    if !tail.is_empty() {
        return Err(Error::Malformed);
    }
    msg.validate()?;
    Ok(msg)
}

/// Postcard byte strings (`varint length || bytes`) for `&[u8]` fields.
mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'de [u8], D::Error> {
        <&'de [u8]>::deserialize(d)
    }
}

/// `Option<&[u8]>` as postcard option (`0x00` or `0x01 || bytes`).
mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    struct Bytes<'a>(&'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub(super) fn serialize<S: Serializer>(v: &Option<&[u8]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&Bytes(b)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<&'de [u8]>, D::Error> {
        Option::<&'de [u8]>::deserialize(d)
    }
}
