//! Order-independent lossless coding of quantized point sets.
//!
//! Points are quantized to `bits` (8..=16) per axis inside announced [`Bounds`]
//! and coded as a multiset: a depth-first binary kd-tree over the Morton order
//! codes how many points fall in the lower half of each cell (count
//! splitting, so duplicates survive), and a cell holding a single point codes
//! that point directly against a plane fitted to already-coded points. Three
//! coders are available ([`Method`]); [`decode`] reads all of them, the
//! header's tag picks the decoder:
//!
//! * [`Method::Fast`] (format version 4, tag [`TAG_FAST`], the default of
//!   [`encode`]): the plane is fitted to running moment sums of the last
//!   (at most 12) coded points of the smallest ancestor cell holding 3 of
//!   them (O(1) per point: no neighbour search), the tangent coordinates are
//!   raw bits and the normal coordinate a modelled residual (zero flag,
//!   sign, Elias-gamma class, raw low bits); fixed-rate binary models. The
//!   walk is iterative with a fixed stack.
//! * [`Method::Symbol`] (format version 5, tag [`TAG_SYMBOL`]): format 4's
//!   tree and plane, with how a cell of 2 or 3 points splits up (all depths
//!   at once), the count split of a cell of 4..=15 points, the deviation
//!   from n/2 of a bigger cell's split and the normal residual each coded
//!   as one symbol of an adaptive 16-ary model that starts from a trained
//!   table, no context depending on the plane fit; about 0.8x format 4's
//!   encode and decode time, 1.95 % larger (not the default).
//! * [`Method::Compact`] (format version 3, tag [`TAG_ARITH`]): neighbours
//!   among the last [`MAX_NEIGHBOURS`] points within a radius, tangent bits
//!   modelled against the plane, counter-based adaptation; about 1.8 %
//!   smaller, about 2.5x slower.
//!
//! Modelled decisions go through an adaptive binary range coder, raw bits
//! into a separate section read without any model. The bitstreams are
//! specified in section 5 of `crates/wire/SPEC.md`.
//!
//! No heap is used anywhere: working memory is on the stack (format 4: a
//! 64-entry pending stack, 16 snapshots of the running sums, 512 two-byte
//! models; format 5: the same stack and sums, 48 two-byte models and 144
//! 16-ary model slots of 34 bytes, 87 used; format 3: recursion at most `3 * 16 + 1` frames deep, 560 models,
//! about 2.2 KiB, and a neighbour buffer of [`MAX_NEIGHBOURS`] points;
//! [`sort_canonical`] holds a 16 KiB key buffer and 6 KiB of counters for
//! 65..=2048 points with the `std` feature (in a frame of its own, so other
//! sizes do not pay for it), else recurses at most 8 levels with 768 bytes of
//! counters each; the coders' state is estimated below 16 KiB, not measured
//! on the target).

mod code;
mod fast;
mod model;
mod rc;
mod v5;
mod v5_prior;

use crate::Error;

pub use code::MAX_NEIGHBOURS;

/// Smallest accepted number of quantization bits per axis.
pub const MIN_BITS: u8 = 8;
/// Largest accepted number of quantization bits per axis.
pub const MAX_BITS: u8 = 16;
/// Most points one stream may hold (the count field is a LEB128 `u32`).
pub const MAX_POINTS: usize = u32::MAX as usize;

/// First header byte of a stream of the fast coder (format version 4, the
/// default of [`encode`]).
pub const TAG_FAST: u8 = 0xA4;
/// First header byte of a stream of the symbol coder (format version 5). `0xA6`, not
/// `0xA5`: format 5's bytes changed in session 8 after its draft had shipped (not as the
/// default) under `0xA5`, so the tag moved with them. `0xA5` is retired: decoders refuse it
/// as [`Error::UnsupportedVersion`] instead of misreading a draft stream.
pub const TAG_SYMBOL: u8 = 0xA6;
/// First header byte of a stream of the compact coder (format version 3;
/// versions 1 and 2, tags `0xA1` and `0xA2`, are no longer read).
pub const TAG_ARITH: u8 = 0xA3;

/// Which arithmetic coder [`encode_with`] uses; the decoder reads each of
/// them (the header's tag says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// Format version 4 (tag `0xA4`): plane from running moment sums,
    /// several times faster than [`Method::Compact`], a few percent larger.
    /// The default until format 5 (session 8).
    Fast,
    /// Format version 3 (tag `0xA3`): plane fitted to a neighbour scan.
    Compact,
    /// Format version 5 (tag `0xA6`), the default: format 4's tree and plane
    /// with 16-ary adaptive symbols (trained starting tables) instead of
    /// chains of binary decisions; faster than format 4 on both sides, <= 2 %
    /// larger.
    #[default]
    Symbol,
}
/// First header byte of a bit-packed (raw) stream, used when the arithmetic
/// stream would be larger.
pub const TAG_RAW: u8 = 0xA0;

/// Axis-aligned bounds the points are quantized in.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bounds {
    pub min: [f32; 3],
    pub max: [f32; 3],
}

impl Bounds {
    /// Whether points can be quantized in these bounds: `min < max` with a finite
    /// `max - min` on every axis (an infinite extent would put every point on the min
    /// corner, and NaN bounds fail the comparison).
    pub fn is_usable(&self) -> bool {
        (0..3).all(|i| self.min[i] < self.max[i] && (self.max[i] - self.min[i]).is_finite())
    }
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

/// Whether `points` is in canonical order (branch-free per pair).
fn in_canonical_order(points: &[[u16; 3]]) -> bool {
    let mut bad = false;
    for w in points.windows(2) {
        bad |= after(&w[0], &w[1]);
    }
    !bad
}

/// Whether `a` comes after `b` in canonical order (`cmp_canonical(a, b)` is
/// `Greater`), branch-free: the axis whose differing bits reach highest
/// decides (x before y before z on equal bit positions).
#[inline(always)]
fn after(a: &[u16; 3], b: &[u16; 3]) -> bool {
    // Leading zeros of each axis' difference (32 when equal).
    let lz = |i: usize| u32::from(a[i] ^ b[i]).leading_zeros();
    let (lx, ly, lz) = (lz(0), lz(1), lz(2));
    let gt = |i: usize| a[i] > b[i];
    let x = (lx <= ly) & (lx <= lz);
    let y = !x & (ly <= lz);
    let z = !x & !y;
    (x & gt(0)) | (y & gt(1)) | (z & gt(2))
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
/// order that [`decode`] returns (ascending [`morton_key`]). No allocation:
/// 65..=2048 points whose Morton keys and indices fit 48 bits (any bit depth
/// without `attrs`; up to 12 bits with) go through a least-significant-digit
/// radix sort on 8-bit key digits with a 16 KiB key buffer and 6 KiB of
/// counters on the stack, without comparisons (mispredicted branches);
/// other inputs through an in-place MSD radix sort on 6-bit Morton digits
/// (two tree levels per pass, American-flag permutation) with insertion sort
/// for small buckets, recursion at most 8 levels deep (256 bytes of counters
/// per level). `attrs` must be empty or as long as `points`; any other length
/// leaves `attrs` untouched and sorts only `points`. Attributes of identical
/// points keep an unspecified relative order.
pub fn sort_canonical<A>(points: &mut [[u16; 3]], attrs: &mut [A]) {
    let with = attrs.len() == points.len();
    let mut all = 0u16;
    for p in points.iter() {
        all |= p[0] | p[1] | p[2];
    }
    // Highest set bit, rounded down to even: the first digit covers bits
    // (s + 1, s) of every axis.
    let hb = 15 - all.leading_zeros().min(15);
    let n = points.len();
    // Bits of a Morton key (3 per level) and of a point's index.
    let key_bits = 3 * (hb + 1);
    let idx_bits = if with {
        usize::BITS - n.saturating_sub(1).leading_zeros()
    } else {
        0
    };
    if LSD_ENABLED && n > LSD_MIN && n <= LSD_MAX && key_bits + idx_bits <= 48 {
        lsd(points, attrs, with, key_bits, idx_bits);
        return;
    }
    radix(points, attrs, with, hb & !1);
}

/// Whether [`sort_canonical`] may use [`lsd`] (~23 KiB of stack): only with
/// the `std` feature on the desktop and server operating systems, whose
/// threads have stacks of 64 KiB and more (Linux, Android, the BSDs, macOS,
/// iOS, Windows). Everywhere else the in-place [`radix`] sort runs (same
/// points, same order; identical points' attributes may come out in another
/// order, which is unspecified): bare metal, and RTOSes such as ESP-IDF or
/// NuttX, which build `std` too but whose task stacks are a few KiB.
const LSD_ENABLED: bool = cfg!(all(
    feature = "std",
    any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly",
        target_os = "macos",
        target_os = "ios",
        target_os = "windows"
    )
));
/// Fewest points [`sort_canonical`] sorts by [`lsd`] (below, the
/// histograms cost more than the insertion sorts of [`radix`]).
const LSD_MIN: usize = 64;
/// Most points [`sort_canonical`] sorts by [`lsd`]: its buffer of
/// [`LSD_MAX`] keys is on the stack (16 KiB).
const LSD_MAX: usize = 2048;

/// Inverse of [`spread`]: every third bit of `x` from bit 0, packed.
#[inline(always)]
fn compact(x: u64) -> u16 {
    let mut x = x & 0x2492_4924_9249;
    x = (x | (x >> 2)) & 0x0C30_C30C_30C3;
    x = (x | (x >> 4)) & 0x00F0_0F00_F00F;
    x = (x | (x >> 8)) & 0x0000_FF00_00FF;
    x = (x | (x >> 16)) & 0xFFFF;
    x as u16
}

/// A 48-bit item in a point's slot.
#[inline(always)]
fn split48(v: u64) -> [u16; 3] {
    [v as u16, (v >> 16) as u16, (v >> 32) as u16]
}

#[inline(always)]
fn join48(p: &[u16; 3]) -> u64 {
    u64::from(p[0]) | u64::from(p[1]) << 16 | u64::from(p[2]) << 32
}

/// [`sort_canonical`] for 65..=[`LSD_MAX`] points whose items (Morton key
/// above the point's index, `key_bits + idx_bits <= 48`) fit a point's 6
/// bytes: least-significant-digit radix sort on 8-bit digits of the key,
/// passing the items between a stack buffer and the points' own slots, then
/// the points rebuilt from their keys (the key is the point) and the
/// attributes moved along the cycles of the permutation. No comparison and
/// no data-dependent branch: the MSD sort's bucket loops and insertion
/// sorts mispredicted about 2.5 branches per point (bench/pointcode/RESULTS.md,
/// session 10). Stable: identical points keep their input order.
///
/// Never inlined: inlined into [`sort_canonical`], its 22 KiB frame was
/// charged to every call, the in-place sort of 10 points included (20.5 KiB
/// of stack instead of 0.9 KiB; measured by stack painting, session 11).
#[inline(never)]
fn lsd<A>(points: &mut [[u16; 3]], attrs: &mut [A], with: bool, key_bits: u32, idx_bits: u32) {
    const MAX_PASSES: usize = 6; // 48 key bits
    let n = points.len();
    let mut buf = [0u64; LSD_MAX];
    let buf = &mut buf[..n];
    let passes = key_bits.div_ceil(8) as usize;
    let mut count = [[0u32; 256]; MAX_PASSES];
    // Items into the buffer, all histograms in the same pass.
    let idx_mask = (1u64 << idx_bits) - 1;
    for (i, (p, b)) in points.iter().zip(buf.iter_mut()).enumerate() {
        let key = morton_key(*p);
        *b = key << idx_bits | (i as u64 & idx_mask);
        for (d, c) in count.iter_mut().enumerate().take(passes) {
            c[((key >> (8 * d)) & 0xFF) as usize] += 1;
        }
    }
    // `true`: the items are in `buf`, else in the points' slots.
    let mut in_buf = true;
    for (d, c) in count.iter().enumerate().take(passes) {
        let sh = idx_bits + 8 * d as u32;
        // A digit all items share leaves the order as it is.
        let first = if in_buf { buf[0] } else { join48(&points[0]) };
        if c[((first >> sh) & 0xFF) as usize] as usize == n {
            continue;
        }
        let mut next = [0u32; 256];
        let mut acc = 0u32;
        for (x, &k) in next.iter_mut().zip(c.iter()) {
            *x = acc;
            acc += k;
        }
        if in_buf {
            for &v in buf.iter() {
                let j = &mut next[((v >> sh) & 0xFF) as usize];
                points[*j as usize] = split48(v);
                *j += 1;
            }
        } else {
            for p in points.iter() {
                let v = join48(p);
                let j = &mut next[((v >> sh) & 0xFF) as usize];
                buf[*j as usize] = v;
                *j += 1;
            }
        }
        in_buf = !in_buf;
    }
    if !in_buf {
        for (b, p) in buf.iter_mut().zip(points.iter()) {
            *b = join48(p);
        }
    }
    if with {
        // Item `j` holds the index of the point that goes to slot `j`:
        // walk each cycle of that permutation once (bit 63 marks a visited
        // slot), swapping the attributes along it.
        const SEEN: u64 = 1 << 63;
        for start in 0..n {
            if buf[start] & SEEN != 0 {
                continue;
            }
            let mut j = start;
            loop {
                buf[j] |= SEEN;
                let k = (buf[j] & idx_mask) as usize;
                if k == start {
                    break;
                }
                attrs.swap(j, k);
                j = k;
            }
        }
    }
    for (p, &v) in points.iter_mut().zip(buf.iter()) {
        let key = (v & !(1 << 63)) >> idx_bits;
        *p = [compact(key >> 2), compact(key >> 1), compact(key)];
    }
}

/// Points per bucket at or below which insertion sort takes over.
const RADIX_CUTOFF: usize = 24;

/// Morton digit of the axis-major index `(x1 x0 y1 y0 z1 z0)`: the bits
/// interleaved as `(x1 y1 z1 x0 y0 z0)`.
const DIGIT: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        let (x, y, z) = (i >> 4, (i >> 2) & 3, i & 3);
        t[i] = (((x & 2) << 4)
            | ((y & 2) << 3)
            | ((z & 2) << 2)
            | ((x & 1) << 2)
            | ((y & 1) << 1)
            | (z & 1)) as u8;
        i += 1;
    }
    t
};

#[inline(always)]
fn digit(p: &[u16; 3], s: u32) -> usize {
    let (x, y, z) = (
        (p[0] >> s) as usize & 3,
        (p[1] >> s) as usize & 3,
        (p[2] >> s) as usize & 3,
    );
    DIGIT[(x << 4) | (y << 2) | z] as usize
}

fn radix<A>(pts: &mut [[u16; 3]], at: &mut [A], with: bool, s: u32) {
    let n = pts.len();
    if n <= RADIX_CUTOFF {
        insertion_sort(pts, at, with);
        return;
    }
    let mut count = [0u32; 64];
    for p in pts.iter() {
        count[digit(p, s)] += 1;
    }
    let mut next = [0u32; 64];
    let mut end = [0u32; 64];
    let mut acc = 0u32;
    for d in 0..64 {
        next[d] = acc;
        acc += count[d];
        end[d] = acc;
    }
    if with {
        for b in 0..64 {
            while next[b] < end[b] {
                let i = next[b] as usize;
                let d = digit(&pts[i], s);
                if d == b {
                    next[b] += 1;
                } else {
                    let j = next[d] as usize;
                    pts.swap(i, j);
                    at.swap(i, j);
                    next[d] += 1;
                }
            }
        }
    } else {
        // Cycle leader: carry the displaced point to its bucket until one
        // of bucket `b` comes back (one store per point, not a swap).
        for b in 0..64 {
            while next[b] < end[b] {
                let i = next[b] as usize;
                let mut v = pts[i];
                let mut d = digit(&v, s);
                while d != b {
                    let j = next[d] as usize;
                    next[d] += 1;
                    core::mem::swap(&mut v, &mut pts[j]);
                    d = digit(&v, s);
                }
                pts[i] = v;
                next[b] += 1;
            }
        }
    }
    if s == 0 {
        return; // every bucket holds identical points
    }
    let mut lo = 0usize;
    for &c in &count {
        let hi = lo + c as usize;
        if c > 1 {
            let (p, a) = (
                &mut pts[lo..hi],
                if with { &mut at[lo..hi] } else { &mut at[..0] },
            );
            radix(p, a, with, s - 2);
        }
        lo = hi;
    }
}

fn insertion_sort<A>(pts: &mut [[u16; 3]], at: &mut [A], with: bool) {
    for i in 1..pts.len() {
        let mut j = i;
        while j > 0 && cmp_canonical(&pts[j - 1], &pts[j]).is_gt() {
            pts.swap(j - 1, j);
            if with {
                at.swap(j - 1, j);
            }
            j -= 1;
        }
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
    if tag != TAG_FAST && tag != TAG_ARITH && tag != TAG_SYMBOL && tag != TAG_RAW {
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
/// Uses the default [`Method`] ([`Method::Symbol`], format 5).
pub fn encode(points: &[[u16; 3]], bits: u8, out: &mut [u8]) -> Result<usize, Error> {
    encode_with(points, bits, Method::default(), out)
}

/// [`encode`] with a chosen coder.
pub fn encode_with(
    points: &[[u16; 3]],
    bits: u8,
    method: Method,
    out: &mut [u8],
) -> Result<usize, Error> {
    if !(MIN_BITS..=MAX_BITS).contains(&bits) {
        return Err(Error::BitsOutOfRange);
    }
    if u32::try_from(points.len()).is_err() {
        return Err(Error::TooManyPoints);
    }
    // Range: every coordinate below 2^bits iff their OR is (one pass,
    // vectorized).
    let mut all = 0u16;
    for p in points {
        all |= p[0] | p[1] | p[2];
    }
    if u32::from(all) >> bits != 0 {
        return Err(Error::PointOutOfRange);
    }
    // Formats 4 and 5 check the order in their walk (`fast::EncSide`: each
    // point must lie in the cell it is coded in), at a fraction of the cost
    // of this check; format 3 and the raw fallback check it here.
    if method == Method::Compact && !in_canonical_order(points) {
        return Err(Error::NotCanonical);
    }
    let n = points.len();
    let tag = match method {
        Method::Fast => TAG_FAST,
        Method::Compact => TAG_ARITH,
        Method::Symbol => TAG_SYMBOL,
    };
    let hdr = write_header(out, tag, bits, n)?;
    let raw_len = n.saturating_mul(3 * bits as usize).div_ceil(8);
    if n > 0 {
        // Arithmetic stream, given at most as many bytes as the raw form needs.
        let room = (out.len() - hdr).min(raw_len);
        let body = &mut out[hdr..hdr + room];
        let arith = match method {
            Method::Fast => fast::encode_tree(points, bits, body),
            Method::Compact => code::encode_tree(points, bits, body),
            Method::Symbol => v5::encode_tree(points, bits, body),
        };
        match arith {
            Ok(len) if len < raw_len => return Ok(hdr + len),
            Ok(_) | Err(Error::BufferTooSmall) => {}
            Err(e) => return Err(e),
        }
        // Raw fallback.
        if !in_canonical_order(points) {
            return Err(Error::NotCanonical);
        }
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
        if tag == TAG_FAST {
            fast::decode_tree(body, bits, out)?;
        } else if tag == TAG_SYMBOL {
            v5::decode_tree(body, bits, out)?;
        } else {
            code::decode_tree(body, bits, out)?;
        }
    }
    Ok((n, bits))
}

#[cfg(test)]
mod tests;
