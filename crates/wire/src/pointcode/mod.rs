//! Order-independent lossless coding of quantized point sets.
//!
//! PLACEHOLDER API (owned by the point-coder work): signatures are fixed,
//! bodies are being written.

use crate::Error;

/// Axis-aligned bounds the points are quantized in.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bounds {
    pub min: [f32; 3],
    pub max: [f32; 3],
}

/// Quantizes `p` to `bits` per axis inside `b` (clamped). `bits` in 8..=16.
pub fn quantize(p: [f32; 3], b: &Bounds, bits: u8) -> [u16; 3] {
    let n = ((1u32 << bits) - 1) as f32;
    let mut q = [0u16; 3];
    for i in 0..3 {
        let ext = b.max[i] - b.min[i];
        let t = if ext > 0.0 { (p[i] - b.min[i]) / ext } else { 0.0 };
        q[i] = (t.clamp(0.0, 1.0) * n + 0.5) as u16;
    }
    q
}

/// Inverse of [`quantize`] (cell centre of the quantized value).
pub fn dequantize(q: [u16; 3], b: &Bounds, bits: u8) -> [f32; 3] {
    let n = ((1u32 << bits) - 1) as f32;
    let mut p = [0f32; 3];
    for i in 0..3 {
        p[i] = b.min[i] + (q[i] as f32 / n) * (b.max[i] - b.min[i]);
    }
    p
}

/// Puts points (and a parallel attribute slice, e.g. labels) into the canonical
/// order that [`decode`] returns. No allocation.
pub fn sort_canonical<A>(points: &mut [[u16; 3]], attrs: &mut [A]) {
    let _ = (points, attrs);
}

/// Encodes a quantized point multiset. `points` must be in canonical order
/// (see [`sort_canonical`]). Returns bytes written into `out`. No allocation.
pub fn encode(points: &[[u16; 3]], bits: u8, out: &mut [u8]) -> Result<usize, Error> {
    let _ = (points, bits, out);
    Err(Error::Malformed)
}

/// Decodes into `out`; returns (number of points, bits). Points come back in
/// canonical order. No allocation; never panics on any input.
pub fn decode(input: &[u8], out: &mut [[u16; 3]]) -> Result<(usize, u8), Error> {
    let _ = (input, out);
    Err(Error::Malformed)
}
