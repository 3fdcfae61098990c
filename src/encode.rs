//! Reconstruction -> wire message bytes (`shapecast_wire::message`), with point coding
//! (`shapecast_wire::pointcode`) in the model's bounds at the configured bits.

use shapecast_wire::message::{
    self, HeadKind, Hello, Hypothesis, IndexWidth, MeshFrame, Message, PointCloudFrame, Stats,
    VoxelFrame, MAX_HYPOTHESES,
};
use shapecast_wire::pointcode::{self, Bounds as WireBounds};

use crate::heads::Reconstruction;
use crate::meta::{Bounds, Head, ModelMeta, Units};

/// Errors of encoding a result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("wire: {0}")]
    Wire(#[from] shapecast_wire::Error),
    #[error("{0}")]
    Invalid(String),
}

/// What a frame message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// Points (K hypotheses) with labels and confidence when the model gives them.
    Points,
    /// The mesh (mesh and implicit heads).
    Mesh,
    /// The occupancy grid (voxel heads).
    Voxels,
}

/// Default message form for a head.
pub fn default_send(head: Head) -> Send {
    match head {
        Head::Points | Head::Implicit => Send::Points,
        Head::Voxels => Send::Voxels,
        Head::Mesh => Send::Mesh,
    }
}

/// Wire bounds of model bounds.
pub fn wire_bounds(b: &Bounds) -> WireBounds {
    WireBounds {
        min: b.min,
        max: b.max,
    }
}

/// Point code, labels and confidence bytes of one hypothesis.
type EncodedHypothesis = (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Reusable buffers for encoding frames.
#[derive(Debug)]
pub struct Encoder {
    pub device_id: u32,
    pub bits: u8,
    pub bounds: Bounds,
    pub send: Send,
    q: Vec<[u16; 3]>,
    attrs: Vec<(u8, u8)>,
    hyp: Vec<EncodedHypothesis>,
    bytes: Vec<u8>,
    out: Vec<u8>,
}

impl Encoder {
    pub fn new(device_id: u32, bits: u8, bounds: Bounds, send: Send) -> Result<Self, EncodeError> {
        if !(8..=16).contains(&bits) {
            return Err(EncodeError::Invalid(format!(
                "point bits {bits} outside 8..=16"
            )));
        }
        Ok(Encoder {
            device_id,
            bits,
            bounds,
            send,
            q: Vec::new(),
            attrs: Vec::new(),
            hyp: Vec::new(),
            bytes: Vec::new(),
            out: Vec::new(),
        })
    }

    fn ensure_out(&mut self, n: usize) {
        if self.out.len() < n {
            self.out.resize(n, 0);
        }
    }

    /// The `Hello` message for a model.
    pub fn hello(&mut self, meta: &ModelMeta, max_points: u32) -> Result<&[u8], EncodeError> {
        let head = match meta.head {
            Head::Points => HeadKind::Points,
            Head::Voxels => HeadKind::Voxels,
            Head::Implicit => HeadKind::Implicit,
            Head::Mesh => HeadKind::Mesh,
        };
        let units = match meta.units {
            Units::Normalized => message::Units::Normalized,
            Units::Metres => message::Units::Metres,
            Units::Millimetres => message::Units::Millimetres,
        };
        let h = Hello {
            device_id: self.device_id,
            model_id: &meta.model_id,
            head,
            units,
            bounds: wire_bounds(&self.bounds),
            point_bits: self.bits,
            max_points,
            voxel_resolution: meta.voxels.map(|v| v.0 as u16).unwrap_or(0),
            num_classes: meta.classes.len().min(255) as u8,
            input_size: [
                meta.input.width.min(u16::MAX as usize) as u16,
                meta.input.height.min(u16::MAX as usize) as u16,
            ],
        };
        self.ensure_out(256);
        let n = message::encode_message(&Message::Hello(h), &mut self.out)?;
        Ok(&self.out[..n])
    }

    /// A `Stats` message.
    pub fn stats(&mut self, s: &Stats) -> Result<&[u8], EncodeError> {
        self.ensure_out(512);
        let n = message::encode_message(&Message::Stats(*s), &mut self.out)?;
        Ok(&self.out[..n])
    }

    /// Encodes one result. `frame_id` and `capture_ts_us` go into the message.
    pub fn frame(
        &mut self,
        rec: &Reconstruction,
        frame_id: u32,
        capture_ts_us: u64,
    ) -> Result<&[u8], EncodeError> {
        let wb = wire_bounds(&self.bounds);
        let bits = self.bits;
        let send = match self.send {
            Send::Mesh if rec.mesh.is_none() => Send::Points,
            Send::Voxels if rec.voxels.is_none() => Send::Points,
            s => s,
        };
        match send {
            Send::Points => {
                if rec.clouds.is_empty() {
                    return Err(EncodeError::Invalid("no point cloud to send".into()));
                }
                self.hyp.clear();
                for cloud in rec.clouds.iter().take(MAX_HYPOTHESES) {
                    self.q.clear();
                    self.q.extend(
                        cloud
                            .points
                            .iter()
                            .map(|p| pointcode::quantize(*p, &wb, bits)),
                    );
                    self.attrs.clear();
                    let n = cloud.points.len();
                    for i in 0..n {
                        let l = cloud
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(i))
                            .copied()
                            .unwrap_or(0);
                        let c = cloud
                            .confidence
                            .as_ref()
                            .and_then(|c| c.get(i))
                            .map(|c| (c.clamp(0.0, 1.0) * 255.0 + 0.5) as u8)
                            .unwrap_or(0);
                        self.attrs.push((l, c));
                    }
                    pointcode::sort_canonical(&mut self.q, &mut self.attrs);
                    // generous bound: 6 bytes a point plus headers
                    let cap = 64 + n * 7;
                    if self.bytes.len() < cap {
                        self.bytes.resize(cap, 0);
                    }
                    let len = pointcode::encode(&self.q, bits, &mut self.bytes)?;
                    let labels = cloud
                        .labels
                        .as_ref()
                        .map(|_| self.attrs.iter().map(|a| a.0).collect::<Vec<u8>>());
                    let conf = cloud
                        .confidence
                        .as_ref()
                        .map(|_| self.attrs.iter().map(|a| a.1).collect::<Vec<u8>>());
                    self.hyp.push((self.bytes[..len].to_vec(), labels, conf));
                }
                let mut hv = heapless::Vec::<Hypothesis<'_>, MAX_HYPOTHESES>::new();
                let mut total = 64;
                for (p, l, c) in &self.hyp {
                    total += p.len()
                        + l.as_ref().map_or(0, Vec::len)
                        + c.as_ref().map_or(0, Vec::len)
                        + 16;
                    let _ = hv.push(Hypothesis {
                        points: p,
                        labels: l.as_deref(),
                        confidence: c.as_deref(),
                    });
                }
                let msg = Message::PointCloud(PointCloudFrame {
                    device_id: self.device_id,
                    frame_id,
                    capture_ts_us,
                    bits,
                    bounds: wb,
                    hypotheses: hv,
                });
                if self.out.len() < total {
                    self.out.resize(total, 0);
                }
                let n = message::encode_message(&msg, &mut self.out)?;
                Ok(&self.out[..n])
            }
            Send::Voxels => {
                let g = rec
                    .voxels
                    .as_ref()
                    .ok_or_else(|| EncodeError::Invalid("no grid".into()))?;
                let r = u16::try_from(g.resolution)
                    .map_err(|_| EncodeError::Invalid("grid too large".into()))?;
                let cells = g.resolution.pow(3);
                if g.occupied.len() != cells {
                    return Err(EncodeError::Invalid(format!(
                        "grid of resolution {} holds {} cells, not {cells}",
                        g.resolution,
                        g.occupied.len()
                    )));
                }
                let mut occ = vec![0u8; message::occupancy_len(r)];
                for (i, &o) in g.occupied.iter().enumerate() {
                    if o {
                        occ[i / 8] |= 1 << (i % 8);
                    }
                }
                let msg = Message::Voxels(VoxelFrame {
                    device_id: self.device_id,
                    frame_id,
                    capture_ts_us,
                    resolution: r,
                    bounds: wb,
                    occupancy: &occ,
                });
                self.ensure_out(occ.len() + 64);
                let n = message::encode_message(&msg, &mut self.out)?;
                Ok(&self.out[..n])
            }
            Send::Mesh => {
                let m = rec
                    .mesh
                    .as_ref()
                    .ok_or_else(|| EncodeError::Invalid("no mesh".into()))?;
                let mut verts = Vec::with_capacity(m.vertices.len() * 6);
                for v in &m.vertices {
                    for c in pointcode::quantize(*v, &wb, bits) {
                        verts.extend_from_slice(&c.to_le_bytes());
                    }
                }
                let wide = m.vertices.len() > u16::MAX as usize;
                let width = if wide {
                    IndexWidth::U32
                } else {
                    IndexWidth::U16
                };
                let mut faces = Vec::with_capacity(m.faces.len() * 3 * width.bytes());
                for f in &m.faces {
                    for &i in f {
                        if wide {
                            faces.extend_from_slice(&i.to_le_bytes());
                        } else {
                            faces.extend_from_slice(&(i as u16).to_le_bytes());
                        }
                    }
                }
                let msg = Message::Mesh(MeshFrame {
                    device_id: self.device_id,
                    frame_id,
                    capture_ts_us,
                    bits,
                    bounds: wb,
                    index_width: width,
                    vertices: &verts,
                    faces: &faces,
                    labels: m.labels.as_deref(),
                });
                self.ensure_out(verts.len() + faces.len() + m.vertices.len() + 96);
                let n = message::encode_message(&msg, &mut self.out)?;
                Ok(&self.out[..n])
            }
        }
    }
}
