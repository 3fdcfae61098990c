//! Shared by the point-coding fuzz targets: the first byte picks the bit depth (low 6 bits)
//! and the coder (top two bits: 0 fast, format 4; 2 compact, format 3; 1 or 3 symbol,
//! format 5); every 6 further bytes are one point (3 little-endian u16 masked to the depth).
use shapecast_wire::pointcode;

pub fn bits_method_points(b: u8, rest: &[u8]) -> (u8, pointcode::Method, Vec<[u16; 3]>) {
    let bits = pointcode::MIN_BITS + (b & 0x3F) % (pointcode::MAX_BITS - pointcode::MIN_BITS + 1);
    let method = match b >> 6 {
        2 => pointcode::Method::Compact,
        1 | 3 => pointcode::Method::Symbol,
        _ => pointcode::Method::Fast,
    };
    let mask = ((1u32 << bits) - 1) as u16;
    let pts = rest
        .chunks_exact(6)
        .map(|c| {
            let v = |i: usize| u16::from_le_bytes([c[i], c[i + 1]]) & mask;
            [v(0), v(2), v(4)]
        })
        .collect();
    (bits, method, pts)
}
