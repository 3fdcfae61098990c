//! Turning wire messages into geometry ([`PlyData`]) and point files into
//! wire point coding (the `encode` / `decode` subcommands).

use shapecast_geom::ply::PlyData;
use shapecast_wire::message::{
    encode_message, mesh_face, mesh_vertex, voxel_occupied, Hypothesis, Message, PointCloudFrame,
};
use shapecast_wire::pointcode::{self, Bounds};

use crate::HostError;

/// Most points decoded from one message: all hypotheses of a point-cloud frame together,
/// the occupied cells of a voxel frame (bounds host memory and file size per frame).
pub const MAX_POINTS: usize = 1 << 20;

/// Largest message file `decode` reads (a received frame is at most 512 KiB; a message
/// made by `encode` of a million points with labels and confidence is under 10 MiB).
pub const MAX_MESSAGE_FILE: u64 = 64 << 20;

/// Points a point-cloud message may announce whatever its size (all hypotheses together).
/// Duplicates cost almost nothing in the point code (a voxel holding n identical points
/// codes no more than one point), so a legitimate frame can be tiny: a model whose output
/// collapses onto one voxel, or lies outside the bounds and is clamped onto one corner,
/// sends 8192 points in 16 bytes. 65 536 covers eight such hypotheses of the edge
/// runtime's default 8192 points.
pub const FREE_POINTS: usize = 1 << 16;

/// Points per byte of point code a message may announce beyond [`FREE_POINTS`]. Measured
/// (pointcode format 4; format 5 is within 2 %): surfaces cost 0.5-1.3 B/point at 8-10 bits and the densest cloud
/// tried, 1 M points on a sphere at 8 bits (about 16 points per occupied voxel), 5.5
/// points/B; 64 leaves 12x margin over that, so only clouds made mostly of large piles of
/// duplicates (more than ~60 per occupied voxel) above [`FREE_POINTS`] are refused. With
/// it a 167-byte message can no longer become 8 M points: at most ~73 K.
pub const POINTS_PER_CODE_BYTE: usize = 64;

/// Checks the point counts announced by the hypotheses' headers (before any decoding)
/// against [`MAX_POINTS`] and the plausibility bound [`FREE_POINTS`] +
/// [`POINTS_PER_CODE_BYTE`] x (bytes of point code), both over the whole message. Returns
/// the count of each hypothesis.
pub fn check_point_budget(hypotheses: &[Hypothesis<'_>]) -> Result<Vec<usize>, HostError> {
    let counts = hypotheses
        .iter()
        .map(|h| pointcode_count(h.points))
        .collect::<Result<Vec<_>, _>>()?;
    // u64: 8 counts of up to 2^32 - 1 each (a usize on 32-bit targets could wrap)
    let points: u64 = counts.iter().map(|&n| n as u64).sum();
    let code_bytes: u64 = hypotheses.iter().map(|h| h.points.len() as u64).sum();
    let plausible = (FREE_POINTS as u64).saturating_add(code_bytes * POINTS_PER_CODE_BYTE as u64);
    let limit = plausible.min(MAX_POINTS as u64);
    if points > limit {
        return Err(HostError::TooManyPoints {
            points,
            code_bytes,
            limit,
        });
    }
    Ok(counts)
}

/// Geometry of one message: one entry per hypothesis for point clouds
/// (most likely first), one for voxels (occupied cell centres) and meshes,
/// none for Hello/Stats.
pub fn message_to_ply(msg: &Message<'_>) -> Result<Vec<PlyData>, HostError> {
    match msg {
        Message::PointCloud(p) => {
            check_point_budget(&p.hypotheses)?;
            p.hypotheses
                .iter()
                .map(|h| hypothesis_to_ply(h, &p.bounds, p.bits))
                .collect()
        }
        Message::Voxels(v) => {
            let r = v.resolution;
            // Count before expanding: a 512 KiB bitmap can hold 4 M occupied cells.
            let occupied: usize = v.occupancy.iter().map(|b| b.count_ones() as usize).sum();
            if occupied > MAX_POINTS {
                return Err(HostError::Decode("voxel frame has too many occupied cells"));
            }
            let mut pts = Vec::with_capacity(occupied);
            let step = |i: usize| (v.bounds.max[i] - v.bounds.min[i]) / f32::from(r);
            let s = [step(0), step(1), step(2)];
            for z in 0..r {
                for y in 0..r {
                    for x in 0..r {
                        if voxel_occupied(v.occupancy, r, x, y, z) {
                            let c = [x, y, z];
                            pts.push(std::array::from_fn(|i| {
                                v.bounds.min[i] + (f32::from(c[i]) + 0.5) * s[i]
                            }));
                        }
                    }
                }
            }
            Ok(vec![PlyData::points(pts)])
        }
        Message::Mesh(m) => {
            let nv = m.vertices.len() / 6;
            let vertices = (0..nv)
                .map(|i| {
                    mesh_vertex(m.vertices, i)
                        .map(|q| pointcode::dequantize(q, &m.bounds, m.bits))
                        .ok_or(HostError::Decode("mesh vertex out of range"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let nf = m.faces.len() / (3 * m.index_width.bytes());
            let faces = (0..nf)
                .map(|i| {
                    mesh_face(m.faces, m.index_width, i)
                        .filter(|f| f.iter().all(|&v| (v as usize) < nv))
                        .ok_or(HostError::Decode("mesh face out of range"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![PlyData {
                vertices,
                faces,
                labels: m.labels.map(<[u8]>::to_vec),
                confidence: None,
            }])
        }
        Message::Hello(_) | Message::Stats(_) => Ok(Vec::new()),
    }
}

/// Number of points announced in a point-code stream header (tag, bits,
/// LEB128 count), without decoding it (`pointcode::peek_count`).
pub fn pointcode_count(code: &[u8]) -> Result<usize, HostError> {
    let (n, _bits) = pointcode::peek_count(code)?;
    Ok(n)
}

/// Decodes one hypothesis to points (plus labels and confidence 0..1). Refuses more than
/// [`MAX_POINTS`]; [`message_to_ply`] also bounds the whole message
/// ([`check_point_budget`]).
pub fn hypothesis_to_ply(h: &Hypothesis<'_>, b: &Bounds, bits: u8) -> Result<PlyData, HostError> {
    let n = pointcode_count(h.points)?;
    if n > MAX_POINTS {
        return Err(HostError::Wire(shapecast_wire::Error::TooManyPoints));
    }
    let mut q = vec![[0u16; 3]; n];
    let (got, code_bits) = pointcode::decode(h.points, &mut q)?;
    if code_bits != bits {
        return Err(HostError::Decode(
            "point code bits differ from the frame's bits",
        ));
    }
    q.truncate(got);
    let bad = |a: Option<&[u8]>| a.is_some_and(|a| a.len() != got);
    if bad(h.labels) || bad(h.confidence) {
        return Err(HostError::Decode(
            "attribute count differs from point count",
        ));
    }
    Ok(PlyData {
        vertices: q
            .iter()
            .map(|&p| pointcode::dequantize(p, b, bits))
            .collect(),
        faces: Vec::new(),
        labels: h.labels.map(<[u8]>::to_vec),
        confidence: h
            .confidence
            .map(|c| c.iter().map(|&v| f32::from(v) / 255.0).collect()),
    })
}

/// Bounding box of `points` (a degenerate axis is widened slightly so that
/// quantization stays well defined).
pub fn bounds_of(points: &[[f32; 3]]) -> Result<Bounds, HostError> {
    let mut min = [f32::INFINITY; 3];
    let mut max = [f32::NEG_INFINITY; 3];
    for p in points {
        for i in 0..3 {
            if !p[i].is_finite() {
                return Err(HostError::Decode("non-finite coordinate in input"));
            }
            min[i] = min[i].min(p[i]);
            max[i] = max[i].max(p[i]);
        }
    }
    if points.is_empty() {
        return Ok(Bounds {
            min: [0.0; 3],
            max: [1.0; 3],
        });
    }
    for i in 0..3 {
        if max[i] <= min[i] {
            // relative for large coordinates: 1e30 + 1e-3 is still 1e30
            max[i] = min[i] + (min[i].abs() * 1e-6).max(1e-3);
        }
    }
    Ok(Bounds { min, max })
}

/// Result of [`encode_points`].
#[derive(Debug, Clone)]
pub struct Encoded {
    /// The whole wire message (`Message::PointCloud`, one hypothesis).
    pub message: Vec<u8>,
    /// Bytes of the point code alone.
    pub point_code_len: usize,
    /// Points coded.
    pub points: usize,
    /// Bounds used.
    pub bounds: Bounds,
}

/// Quantizes `data`'s vertices at `bits` inside `bounds` (or their bounding
/// box), codes them, and wraps them in a point-cloud message carrying the
/// labels and confidence of the file if it has them. A cloud over the point budget a
/// receiver accepts ([`check_point_budget`]: [`MAX_POINTS`], or many duplicates) is
/// refused with [`HostError::TooManyPoints`], as [`message_to_ply`] would refuse it.
pub fn encode_points(
    data: &PlyData,
    bits: u8,
    bounds: Option<Bounds>,
    device_id: u32,
    frame_id: u32,
) -> Result<Encoded, HostError> {
    if !(pointcode::MIN_BITS..=pointcode::MAX_BITS).contains(&bits) {
        return Err(HostError::Wire(shapecast_wire::Error::BitsOutOfRange));
    }
    // Checked whether or not bounds are given: quantizing maps NaN to the min corner.
    if data.vertices.iter().flatten().any(|c| !c.is_finite()) {
        return Err(HostError::Decode("non-finite coordinate in input"));
    }
    let n = data.vertices.len();
    // Over the receiver's budget whatever the coding gives: refused before any work (the
    // plausibility part of the budget is checked on the coded message below).
    if n > MAX_POINTS {
        return Err(HostError::TooManyPoints {
            points: n as u64,
            code_bytes: 0,
            limit: MAX_POINTS as u64,
        });
    }
    if data.labels.as_ref().is_some_and(|l| l.len() != n)
        || data.confidence.as_ref().is_some_and(|c| c.len() != n)
    {
        return Err(HostError::Decode(
            "attribute count differs from point count",
        ));
    }
    let bounds = match bounds {
        Some(b) => b,
        None => bounds_of(&data.vertices)?,
    };
    if !bounds.is_usable() {
        return Err(HostError::Decode(
            "bounds need min < max and a finite max - min on every axis",
        ));
    }
    let mut q: Vec<[u16; 3]> = data
        .vertices
        .iter()
        .map(|&p| pointcode::quantize(p, &bounds, bits))
        .collect();
    // Attributes travel as one byte each; sort them along with the points.
    let mut attrs: Vec<(u8, u8)> = (0..n)
        .map(|i| {
            let l = data.labels.as_ref().map_or(0, |l| l[i]);
            let c = data
                .confidence
                .as_ref()
                .map_or(0, |c| (c[i].clamp(0.0, 1.0) * 255.0).round() as u8);
            (l, c)
        })
        .collect();
    pointcode::sort_canonical(&mut q, &mut attrs);
    let mut code = vec![0u8; pointcode::max_encoded_len(n, bits)];
    let len = pointcode::encode(&q, bits, &mut code)?;
    code.truncate(len);
    let labels: Option<Vec<u8>> = data
        .labels
        .as_ref()
        .map(|_| attrs.iter().map(|a| a.0).collect());
    let conf: Option<Vec<u8>> = data
        .confidence
        .as_ref()
        .map(|_| attrs.iter().map(|a| a.1).collect());
    let mut hypotheses = heapless::Vec::new();
    hypotheses
        .push(Hypothesis {
            points: &code,
            labels: labels.as_deref(),
            confidence: conf.as_deref(),
        })
        .map_err(|_| HostError::Decode("hypothesis list full"))?;
    // What a receiver (and `decode`) would refuse is not written either.
    check_point_budget(&hypotheses)?;
    let msg = Message::PointCloud(PointCloudFrame {
        device_id,
        frame_id,
        capture_ts_us: 0,
        bits,
        bounds,
        hypotheses,
    });
    let mut out = vec![0u8; len + 2 * n + 256];
    let m = encode_message(&msg, &mut out)?;
    out.truncate(m);
    Ok(Encoded {
        message: out,
        point_code_len: len,
        points: n,
        bounds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_refuses_what_decode_refuses() {
        // One point over MAX_POINTS, all distinct at 12 bits: encoding it would write a
        // message that `message_to_ply` (the receiver and `decode`) refuses.
        let n = MAX_POINTS + 1;
        let data = PlyData {
            vertices: (0..n)
                .map(|i| [(i % 4096) as f32, (i / 4096) as f32, (i % 13) as f32])
                .collect(),
            ..PlyData::default()
        };
        let e = encode_points(&data, 12, None, 0, 0).unwrap_err();
        assert!(
            matches!(e, HostError::TooManyPoints { points, .. } if points == n as u64),
            "{e}"
        );
        // at the limit it encodes, and what it wrote converts back
        let data = PlyData {
            vertices: data.vertices[..MAX_POINTS].to_vec(),
            ..PlyData::default()
        };
        let enc = encode_points(&data, 12, None, 0, 0).unwrap();
        let msg = shapecast_wire::message::decode_message(&enc.message).unwrap();
        assert_eq!(message_to_ply(&msg).unwrap()[0].vertices.len(), MAX_POINTS);
    }
}
