//! Order-independent lossless coding of quantized point sets.
//!
//! Points are quantized to `bits` (8..=16) per axis inside announced [`Bounds`]
//! and coded as a multiset: a depth-first binary kd-tree over the Morton order
//! codes how many points fall in the lower half of each cell (count
//! splitting, so duplicates survive), and a cell holding a single point codes
//! that point directly, predicting its coordinate along the local surface
//! normal from a plane fitted to already-coded neighbours. All decisions go
//! through an adaptive binary range coder. The bitstream is specified in
//! section 5 of `crates/wire/SPEC.md`.
//!
//! No heap is used anywhere: working memory is on the stack (the recursion is
//! at most `3 * 16 + 1` frames deep, the context tables hold 536 models, about
//! 2.1 KiB, and a neighbour buffer of [`MAX_NEIGHBOURS`] points; estimated
//! below 8 KiB in all, not measured on the target).

mod code;
mod rc;

use crate::Error;

pub use code::MAX_NEIGHBOURS;

/// Smallest accepted number of quantization bits per axis.
pub const MIN_BITS: u8 = 8;
/// Largest accepted number of quantization bits per axis.
pub const MAX_BITS: u8 = 16;
/// Most points one stream may hold (the count field is a LEB128 `u32`).
pub const MAX_POINTS: usize = u32::MAX as usize;

/// First header byte of an arithmetic-coded stream (format version 1).
pub const TAG_ARITH: u8 = 0xA1;
/// First header byte of a bit-packed (raw) stream, used when the arithmetic
/// stream would be larger.
pub const TAG_RAW: u8 = 0xA0;

/// Axis-aligned bounds the points are quantized in.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bounds {
    pub min: [f32; 3],
    pub max: [f32; 3],
}

fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(MIN_BITS, MAX_BITS)
}

/// Quantizes `p` to `bits` per axis inside `b` (clamped to the bounds; NaN maps
/// to 0). `bits` in 8..=16 (values outside are clamped into that range).
/// The grid has `2^bits` values per axis, `b.min` and `b.max` on grid values,
/// so the step is `(max - min) / (2^bits - 1)`.
pub fn quantize(p: [f32; 3], b: &Bounds, bits: u8) -> [u16; 3] {
    let n = ((1u32 << clamp_bits(bits)) - 1) as f32;
    let mut q = [0u16; 3];
    for i in 0..3 {
        let ext = b.max[i] - b.min[i];
        let t = if ext > 0.0 {
            (p[i] - b.min[i]) / ext
        } else {
            0.0
        };
        q[i] = (t.clamp(0.0, 1.0) * n + 0.5) as u16;
    }
    q
}

/// Inverse of [`quantize`]: the grid value of `q` (error at most half a step
/// for points inside the bounds).
pub fn dequantize(q: [u16; 3], b: &Bounds, bits: u8) -> [f32; 3] {
    let n = ((1u32 << clamp_bits(bits)) - 1) as f32;
    let mut p = [0f32; 3];
    for i in 0..3 {
        p[i] = b.min[i] + (q[i] as f32 / n) * (b.max[i] - b.min[i]);
    }
    p
}

/// Morton key of a point: bits interleaved from the most significant level
/// down, x before y before z inside a level. The canonical order is ascending
/// key (equal points adjacent).
#[inline]
pub fn morton_key(p: [u16; 3]) -> u64 {
    (spread(p[0]) << 2) | (spread(p[1]) << 1) | spread(p[2])
}

/// Compares two points in canonical (Morton) order without building keys:
/// the axis holding the most significant differing bit decides, x before y
/// before z on equal bit positions.
#[inline]
pub fn cmp_canonical(a: &[u16; 3], b: &[u16; 3]) -> core::cmp::Ordering {
    let mut axis = 0;
    let mut top = a[0] ^ b[0];
    for i in 1..3 {
        let d = a[i] ^ b[i];
        // `d` has a higher top bit than `top` iff top < d and top < (top ^ d).
        if top < d && top < (top ^ d) {
            axis = i;
            top = d;
        }
    }
    a[axis].cmp(&b[axis])
}

#[inline(always)]
fn spread(v: u16) -> u64 {
    let mut x = v as u64;
    x = (x | (x << 16)) & 0x0000_FF00_00FF;
    x = (x | (x << 8)) & 0x00F0_0F00_F00F;
    x = (x | (x << 4)) & 0x0C30_C30C_30C3;
    x = (x | (x << 2)) & 0x2492_4924_9249;
    x
}

/// Puts points (and a parallel attribute slice, e.g. labels) into the canonical
/// order that [`decode`] returns (ascending [`morton_key`]). In-place heapsort:
/// no allocation, O(n log n), no recursion. `attrs` must be empty or as long as
/// `points`; any other length leaves `attrs` untouched and sorts only `points`.
/// Attributes of identical points keep an unspecified relative order.
pub fn sort_canonical<A>(points: &mut [[u16; 3]], attrs: &mut [A]) {
    if attrs.len() != points.len() || attrs.is_empty() {
        points.sort_unstable_by(cmp_canonical);
        return;
    }
    let with_attrs = true;
    let n = points.len();
    let swap = |pts: &mut [[u16; 3]], at: &mut [A], i: usize, j: usize| {
        pts.swap(i, j);
        if with_attrs {
            at.swap(i, j);
        }
    };
    let sift = |pts: &mut [[u16; 3]], at: &mut [A], mut root: usize, end: usize| loop {
        let mut child = 2 * root + 1;
        if child >= end {
            break;
        }
        if child + 1 < end && cmp_canonical(&pts[child + 1], &pts[child]).is_gt() {
            child += 1;
        }
        if cmp_canonical(&pts[child], &pts[root]).is_le() {
            break;
        }
        swap(pts, at, root, child);
        root = child;
    };
    for i in (0..n / 2).rev() {
        sift(points, attrs, i, n);
    }
    for end in (1..n).rev() {
        swap(points, attrs, 0, end);
        sift(points, attrs, 0, end);
    }
}

/// Largest possible size of [`encode`]'s output for `n` points at `bits`
/// (the raw fallback bounds it): header plus `3 * bits` bits per point.
pub const fn max_encoded_len(n: usize, bits: u8) -> usize {
    let b = if bits < MIN_BITS {
        MIN_BITS
    } else if bits > MAX_BITS {
        MAX_BITS
    } else {
        bits
    } as usize;
    HEADER_MAX.saturating_add(n.saturating_mul(3 * b).div_ceil(8))
}

/// Longest header: tag, bits, LEB128 count (5 bytes).
const HEADER_MAX: usize = 7;

fn write_header(out: &mut [u8], tag: u8, bits: u8, n: usize) -> Result<usize, Error> {
    let mut buf = [0u8; HEADER_MAX];
    buf[0] = tag;
    buf[1] = bits;
    let mut len = 2;
    let mut v = n as u32;
    loop {
        let byte = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            buf[len] = byte;
            len += 1;
            break;
        }
        buf[len] = byte | 0x80;
        len += 1;
    }
    let dst = out.get_mut(..len).ok_or(Error::BufferTooSmall)?;
    dst.copy_from_slice(&buf[..len]);
    Ok(len)
}

fn read_header(input: &[u8]) -> Result<(u8, u8, usize, usize), Error> {
    let tag = *input.first().ok_or(Error::Truncated)?;
    if tag != TAG_ARITH && tag != TAG_RAW {
        return Err(Error::UnsupportedVersion);
    }
    let bits = *input.get(1).ok_or(Error::Truncated)?;
    if !(MIN_BITS..=MAX_BITS).contains(&bits) {
        return Err(Error::BitsOutOfRange);
    }
    let mut n: u64 = 0;
    let mut pos = 2;
    for i in 0..5 {
        let byte = *input.get(pos).ok_or(Error::Truncated)?;
        pos += 1;
        n |= ((byte & 0x7F) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            if n > u32::MAX as u64 || (i > 0 && byte == 0) {
                return Err(Error::Malformed);
            }
            return Ok((tag, bits, n as usize, pos));
        }
    }
    Err(Error::Malformed)
}

/// Encodes a quantized point multiset. `points` must be in canonical order
/// (see [`sort_canonical`]) with every coordinate below `2^bits`. Returns bytes
/// written into `out`; [`max_encoded_len`] bytes always suffice. No allocation.
pub fn encode(points: &[[u16; 3]], bits: u8, out: &mut [u8]) -> Result<usize, Error> {
    if !(MIN_BITS..=MAX_BITS).contains(&bits) {
        return Err(Error::BitsOutOfRange);
    }
    if u32::try_from(points.len()).is_err() {
        return Err(Error::TooManyPoints);
    }
    let limit = 1u32 << bits;
    let mut prev = 0u64;
    for p in points {
        if p.iter().any(|&c| c as u32 >= limit) {
            return Err(Error::PointOutOfRange);
        }
        let k = morton_key(*p);
        if k < prev {
            return Err(Error::NotCanonical);
        }
        prev = k;
    }
    let n = points.len();
    let hdr = write_header(out, TAG_ARITH, bits, n)?;
    let raw_len = n.saturating_mul(3 * bits as usize).div_ceil(8);
    if n > 0 {
        // Arithmetic stream, given at most as many bytes as the raw form needs.
        let room = (out.len() - hdr).min(raw_len);
        let arith = code::encode_tree(points, bits, &mut out[hdr..hdr + room]);
        match arith {
            Ok(len) if len < raw_len => return Ok(hdr + len),
            Ok(_) | Err(Error::BufferTooSmall) => {}
            Err(e) => return Err(e),
        }
        // Raw fallback.
        let hdr = write_header(out, TAG_RAW, bits, n)?;
        let dst = out
            .get_mut(hdr..hdr + raw_len)
            .ok_or(Error::BufferTooSmall)?;
        write_raw(points, bits, dst);
        return Ok(hdr + raw_len);
    }
    Ok(hdr)
}

fn write_raw(points: &[[u16; 3]], bits: u8, dst: &mut [u8]) {
    dst.fill(0);
    let mut bitpos = 0usize;
    for p in points {
        for &c in p {
            for i in 0..bits as usize {
                if (c >> i) & 1 == 1 {
                    dst[bitpos >> 3] |= 1 << (bitpos & 7);
                }
                bitpos += 1;
            }
        }
    }
}

/// Reads only the header of a point-code stream: (number of points, bits).
/// Lets a caller size the output of [`decode`] before decoding; validates
/// the tag, the bit depth and the count encoding, not the body.
pub fn peek_count(input: &[u8]) -> Result<(usize, u8), Error> {
    let (_, bits, n, _) = read_header(input)?;
    Ok((n, bits))
}

/// Decodes into `out`; returns (number of points, bits). Points come back in
/// canonical order. No allocation; never panics on any input.
pub fn decode(input: &[u8], out: &mut [[u16; 3]]) -> Result<(usize, u8), Error> {
    let (tag, bits, n, pos) = read_header(input)?;
    if n > out.len() {
        return Err(Error::BufferTooSmall);
    }
    let body = &input[pos..];
    let out = &mut out[..n];
    if tag == TAG_RAW {
        let raw_len = n.saturating_mul(3 * bits as usize).div_ceil(8);
        if body.len() < raw_len {
            return Err(Error::Truncated);
        }
        if body.len() > raw_len {
            return Err(Error::Malformed);
        }
        let mut bitpos = 0usize;
        for p in out.iter_mut() {
            for c in p.iter_mut() {
                let mut v = 0u16;
                for i in 0..bits as usize {
                    if (body[bitpos >> 3] >> (bitpos & 7)) & 1 == 1 {
                        v |= 1 << i;
                    }
                    bitpos += 1;
                }
                *c = v;
            }
        }
        out.sort_unstable_by(cmp_canonical);
        return Ok((n, bits));
    }
    if n > 0 {
        code::decode_tree(body, bits, out)?;
    }
    Ok((n, bits))
}

#[cfg(test)]
mod tests;
