//! Format version 3 (tag `0xA3`, `Method::Compact`): the tree coder shared
//! by encoder and decoder: count splitting along a binary kd-tree (x, y, z,
//! x, ... halvings, i.e. Morton order) and direct coding of isolated points
//! with a plane prediction from coded neighbours.

use super::model::{code_count, code_residual, CountModels, ResidualModels, SB};
use super::rc::{BitCoder, Decoder, Encoder, Prob};
use crate::Error;

/// How many already-coded points (backwards in canonical order) are
/// considered as neighbours of an isolated point.
pub const MAX_NEIGHBOURS: usize = 12;
/// Neighbour radius `R` in units of the isolated cell's longest side.
const RADIUS_CELLS: i32 = 2;

/// Modelled top bits per axis of a point coded without a plane fit.
const PLAIN_MODELLED: u8 = 2;

/// All adaptive contexts (on the stack).
#[derive(Debug, Clone)]
pub(crate) struct Models {
    count: CountModels<Prob>,
    plain: [[Prob; 16]; 3],
    tangent: [[[Prob; 4]; SB]; 2],
    normal: ResidualModels<Prob>,
}

impl Models {
    fn new() -> Self {
        Models {
            count: CountModels::new(),
            plain: [[Prob::NEW; 16]; 3],
            tangent: [[[Prob::NEW; 4]; SB]; 2],
            normal: ResidualModels::new(),
        }
    }
}

/// Plane fit of the neighbours of an isolated cell: the normal axis `axis`
/// and `w = w0 + bu * (u - uc) + bv * (v - vc)` in doubled units relative to
/// the cell centre.
#[derive(Debug, Clone, Copy)]
struct Fit {
    axis: usize,
    w0: f64,
    uc: f64,
    vc: f64,
    bu: f64,
    bv: f64,
    /// Spread bucket (0..SB).
    sb: usize,
    /// Mean squared residual (real units).
    var: f64,
}

#[inline(always)]
fn tangents(axis: usize) -> (usize, usize) {
    match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

/// Gathers neighbours among the last [`MAX_NEIGHBOURS`] coded points and
/// fits a plane; `None` when fewer than 3 usable neighbours or a degenerate
/// configuration. All points within Chebyshev radius `R` of the cell centre
/// are used; when fewer than 3, all within `2R`, then `4R`. When the fit's
/// residual is large (spread bucket >= [`SB_RETRY`]), the points within `R/2`
/// are fitted too and the fit with the smaller residual is kept (repairs
/// neighbourhoods that straddle two faces). Branch-free scan.
fn fit_plane(past: &[[u16; 3]], cd: [i32; 3], r: [u8; 3]) -> Option<Fit> {
    let rmax = r[0].max(r[1]).max(r[2]);
    let radius = RADIUS_CELLS << (rmax as i32 + 1); // doubled units
                                                    // A fixed-size window (unrolled scan); at the start of the stream the
                                                    // missing slots are masked out.
    let mut pad = [[0u16; 3]; MAX_NEIGHBOURS];
    let (win, valid): (&[[u16; 3]; MAX_NEIGHBOURS], u32) = match past.last_chunk::<MAX_NEIGHBOURS>()
    {
        Some(w) => (w, (1u32 << MAX_NEIGHBOURS) - 1),
        None => {
            let k = past.len().min(MAX_NEIGHBOURS);
            pad[..k].copy_from_slice(&past[past.len() - k..]);
            (&pad, (1u32 << k) - 1)
        }
    };
    let mut rel = [[0i32; 3]; MAX_NEIGHBOURS];
    let mut cheb = [0i32; MAX_NEIGHBOURS];
    for i in 0..MAX_NEIGHBOURS {
        let q = win[i];
        let v = [
            2 * q[0] as i32 + 1 - cd[0],
            2 * q[1] as i32 + 1 - cd[1],
            2 * q[2] as i32 + 1 - cd[2],
        ];
        cheb[i] = v[0].abs().max(v[1].abs()).max(v[2].abs());
        rel[i] = v;
    }
    let (mut near, mut mid, mut far, mut vfar) = (0u32, 0u32, 0u32, 0u32);
    for (i, &c) in cheb.iter().enumerate() {
        near |= u32::from(c <= radius / 2) << i;
        mid |= u32::from(c <= radius) << i;
        far |= u32::from(c <= 2 * radius) << i;
        vfar |= u32::from(c <= 4 * radius) << i;
    }
    let (near, mid, far, vfar) = (near & valid, mid & valid, far & valid, vfar & valid);
    let mask = if mid.count_ones() >= 3 {
        mid
    } else if far.count_ones() >= 3 {
        far
    } else {
        vfar
    };
    let fit = fit_mask(&rel, mask)?;
    if fit.sb >= SB_RETRY && near.count_ones() >= 3 && near != mask {
        if let Some(f2) = fit_mask(&rel, near) {
            if f2.var < fit.var {
                return Some(f2);
            }
        }
    }
    Some(fit)
}

/// Spread bucket from which a fit is retried on the nearest neighbours.
const SB_RETRY: usize = 2;

/// Plane fit of the neighbours selected by `mask` (bit i: `rel[i]`).
fn fit_mask(rel: &[[i32; 3]; MAX_NEIGHBOURS], mask: u32) -> Option<Fit> {
    let cnt = mask.count_ones();
    if cnt < 3 {
        return None;
    }
    let mut s = [0i64; 3];
    let mut ss = [0i64; 6]; // xx, yy, zz, xy, xz, yz
    let mut m = mask;
    while m != 0 {
        let v = rel[(m.trailing_zeros() as usize) % MAX_NEIGHBOURS];
        m &= m - 1;
        let (x, y, z) = (v[0] as i64, v[1] as i64, v[2] as i64);
        s[0] += x;
        s[1] += y;
        s[2] += z;
        ss[0] += x * x;
        ss[1] += y * y;
        ss[2] += z * z;
        ss[3] += x * y;
        ss[4] += x * z;
        ss[5] += y * z;
    }
    fit_sums(cnt as i64, s, ss)
}

/// Least-squares plane from the sums of `n` neighbours (relative, doubled
/// units). The scatter matrix `S_ij = n·Σ a_i·a_j - Σ a_i·Σ a_j` (n² times
/// the covariance) is exact in `i64`; the normal axis is the one whose 2×2
/// tangent minor is largest (equivalently the smallest residual), solved on
/// `f64` in a fixed operation order.
fn fit_sums(n: i64, s: [i64; 3], ss: [i64; 6]) -> Option<Fit> {
    let cnt = n as usize;
    let sc = |k: usize, i: usize, j: usize| (n * ss[k] - s[i] * s[j]) as f64;
    let (sxx, syy, szz) = (sc(0, 0, 0), sc(1, 1, 1), sc(2, 2, 2));
    let (sxy, sxz, syz) = (sc(3, 0, 1), sc(4, 0, 2), sc(5, 1, 2));
    // Per normal axis w: (S_uu, S_vv, S_uv, S_uw, S_vw, S_ww).
    let cand = [
        (syy, szz, syz, sxy, sxz, sxx),
        (sxx, szz, sxz, sxy, syz, syy),
        (sxx, syy, sxy, sxz, syz, szz),
    ];
    let mut best = (0.0f64, 3usize);
    for (axis, &(suu, svv, suv, ..)) in cand.iter().enumerate() {
        let det = suu * svv - suv * suv;
        if det > best.0 && det > 1e-9 * (suu * svv + 1.0) {
            best = (det, axis);
        }
    }
    let (det, axis) = best;
    let &(suu, svv, suv, suw, svw, sww) = cand.get(axis)?;
    let inv_det = 1.0 / det;
    let bu = (suw * svv - svw * suv) * inv_det;
    let bv = (svw * suu - suw * suv) * inv_det;
    let msr = sww - bu * suw - bv * svw;
    let (u, v) = tangents(axis);
    let inv_n = 1.0 / n as f64;
    // Mean squared residual in real units: msr / n² / 4 (doubled units).
    let var = msr * inv_n * inv_n * 0.25;
    let sb = if cnt < 5 {
        5
    } else {
        usize::from(var >= 0.25)
            + usize::from(var >= 1.0)
            + usize::from(var >= 4.0)
            + usize::from(var >= 16.0)
    };
    Some(Fit {
        axis,
        w0: s[axis] as f64 * inv_n,
        uc: s[u] as f64 * inv_n,
        vc: s[v] as f64 * inv_n,
        bu,
        bv,
        sb,
        var,
    })
}

/// Margin (doubled units) added to a cell's normal range when testing whether
/// the fitted plane crosses part of the cell.
const PLANE_MARGIN: f64 = 2.0;

#[inline(always)]
fn fabs(x: f64) -> f64 {
    if x < 0.0 {
        -x
    } else {
        x
    }
}

/// Codes the single point `p` of the cell at split depth `t` with corner
/// `corner`; returns the (decoded) point.
fn code_point<C: BitCoder>(
    c: &mut C,
    m: &mut Models,
    past: &[[u16; 3]],
    corner: [u16; 3],
    t: u32,
    bits: u8,
    p: [u16; 3],
) -> [u16; 3] {
    let lvl = (t / 3) as u8;
    let part = (t % 3) as usize;
    let mut r = [0u8; 3];
    for (a, ra) in r.iter_mut().enumerate() {
        *ra = bits - lvl - u8::from(a < part);
    }
    let cd = [
        2 * corner[0] as i32 + (1i32 << r[0]),
        2 * corner[1] as i32 + (1i32 << r[1]),
        2 * corner[2] as i32 + (1i32 << r[2]),
    ];
    let mut q = corner;
    c.cat(1);
    let Some(fit) = fit_plane(past, cd, r) else {
        // No fit: the top PLAIN_MODELLED bits of each axis modelled by bit
        // index, the rest raw.
        for a in 0..3 {
            let raw_bits = r[a].saturating_sub(PLAIN_MODELLED);
            for i in (raw_bits..r[a]).rev() {
                if c.bit(&mut m.plain[a][i as usize], (p[a] >> i) & 1 == 1) {
                    q[a] |= 1 << i;
                }
            }
            q[a] |= c.raw(p[a] as u32, raw_bits as u32) as u16;
        }
        return q;
    };
    c.cat(2);
    let (u, v) = tangents(fit.axis);
    // Tangent coordinates: each bisection is coded in the context of which
    // halves the fitted plane crosses inside the cell's normal range.
    let wlim = (1i32 << r[fit.axis]) as f64 + PLANE_MARGIN;
    let mut span = [r[u], r[v]];
    for (ti, a) in [u, v].into_iter().enumerate() {
        for i in (0..r[a]).rev() {
            span[ti] = i;
            // Centre and half extent (doubled units) of the lower half and of
            // the other tangent axis' remaining range.
            let hu = (1i32 << i) as f64;
            let lo_c = (2 * q[a] as i32 - cd[a]) as f64 + hu;
            let (oa, oi) = if ti == 0 { (v, span[1]) } else { (u, 0) };
            let ho = if ti == 0 { (1i32 << oi) as f64 } else { 0.0 };
            let o_c = if ti == 0 {
                (2 * q[oa] as i32 - cd[oa]) as f64 + ho
            } else {
                (2 * q[oa] as i32 + 1 - cd[oa]) as f64
            };
            let crosses = |x: f64| {
                let (du, dv, eu, ev) = if ti == 0 {
                    (x - fit.uc, o_c - fit.vc, hu, ho)
                } else {
                    (o_c - fit.uc, x - fit.vc, ho, hu)
                };
                let wc = fit.w0 + fit.bu * du + fit.bv * dv;
                let ext = fabs(fit.bu) * eu + fabs(fit.bv) * ev;
                wc - ext <= wlim && wc + ext >= -wlim
            };
            let state = usize::from(crosses(lo_c)) | (usize::from(crosses(lo_c + 2.0 * hu)) << 1);
            if c.bit(&mut m.tangent[ti][fit.sb][state], (p[a] >> i) & 1 == 1) {
                q[a] |= 1 << i;
            }
            if state == 3 {
                // The plane crosses both halves: the lower bits are close to
                // uniform and go to the raw section in one call.
                q[a] |= c.raw(p[a] as u32, i as u32) as u16;
                break;
            }
        }
    }
    // Normal axis: residual to the rounded prediction, clamped to the cell.
    c.cat(8 + fit.sb);
    let w = fit.axis;
    let u0 = (2 * q[u] as i32 + 1 - cd[u]) as f64;
    let v0 = (2 * q[v] as i32 + 1 - cd[v]) as f64;
    let rel = fit.w0 + fit.bu * (u0 - fit.uc) + fit.bv * (v0 - fit.vc);
    // Doubled units relative to the centre -> 1/16 grid units, absolute
    // (`as` saturates and maps NaN to 0).
    let pred = (cd[w] as i64 - 1) * 8 + (rel * 8.0) as i64;
    let lo = corner[w] as i64;
    let hi = lo + (1i64 << r[w]) - 1;
    if lo == hi {
        return q; // no free bit on the normal axis: q[w] = corner[w]
    }
    let pi = (pred.saturating_add(8) >> 4).clamp(lo, hi);
    let frac = pred.saturating_sub(16 * pi);
    let e = p[w] as i64 - pi;
    let val = code_residual(c, &mut m.normal, fit.sb, frac, pi, lo, hi, e);
    q[w] = val as u16;
    q
}

struct TreeEnc<'a, 'b> {
    c: Encoder<'b>,
    m: Models,
    pts: &'a [[u16; 3]],
    bits: u8,
}

impl TreeEnc<'_, '_> {
    fn node(&mut self, t: u32, lo: usize, hi: usize, corner: [u16; 3], hist: [u8; 3]) {
        if t == 3 * self.bits as u32 || self.c.overflow {
            return;
        }
        let n = hi - lo;
        if n == 1 {
            code_point(
                &mut self.c,
                &mut self.m,
                &self.pts[..lo],
                corner,
                t,
                self.bits,
                self.pts[lo],
            );
            return;
        }
        let axis = (t % 3) as usize;
        let shift = self.bits as u32 - 1 - t / 3;
        let mid = lo + self.pts[lo..hi].partition_point(|p| (p[axis] >> shift) & 1 == 0);
        let k = mid - lo;
        self.c.cat(0);
        code_count(&mut self.c, &mut self.m.count, (t % 3) as usize, hist, n, k);
        let mut h = hist;
        h[axis] = if k == 0 || k == n { 1 } else { 2 };
        if k > 0 {
            self.node(t + 1, lo, mid, corner, h);
        }
        if k < n {
            let mut up = corner;
            up[axis] |= 1 << shift;
            self.node(t + 1, mid, hi, up, h);
        }
    }
}

/// Arithmetic-codes the tree of `points` (canonical, validated, non-empty).
pub(crate) fn encode_tree(points: &[[u16; 3]], bits: u8, out: &mut [u8]) -> Result<usize, Error> {
    let mut e = TreeEnc {
        c: Encoder::new(out),
        m: Models::new(),
        pts: points,
        bits,
    };
    e.node(0, 0, points.len(), [0; 3], [0; 3]);
    e.c.finish()
}

struct TreeDec<'a, 'b> {
    c: Decoder<'b>,
    m: Models,
    out: &'a mut [[u16; 3]],
    bits: u8,
}

impl TreeDec<'_, '_> {
    fn node(&mut self, t: u32, lo: usize, n: usize, corner: [u16; 3], hist: [u8; 3]) {
        if t == 3 * self.bits as u32 {
            for p in &mut self.out[lo..lo + n] {
                *p = corner;
            }
            return;
        }
        if n == 1 {
            let q = code_point(
                &mut self.c,
                &mut self.m,
                &self.out[..lo],
                corner,
                t,
                self.bits,
                [0; 3],
            );
            self.out[lo] = q;
            return;
        }
        let axis = (t % 3) as usize;
        let shift = self.bits as u32 - 1 - t / 3;
        let k = code_count(&mut self.c, &mut self.m.count, (t % 3) as usize, hist, n, 0);
        let mut h = hist;
        h[axis] = if k == 0 || k == n { 1 } else { 2 };
        if k > 0 {
            self.node(t + 1, lo, k, corner, h);
        }
        if k < n {
            let mut up = corner;
            up[axis] |= 1 << shift;
            self.node(t + 1, lo + k, n - k, up, h);
        }
    }
}

/// Decodes a tree of `out.len()` (non-zero) points.
pub(crate) fn decode_tree(body: &[u8], bits: u8, out: &mut [[u16; 3]]) -> Result<(), Error> {
    let n = out.len();
    let mut d = TreeDec {
        c: Decoder::new(body)?,
        m: Models::new(),
        out,
        bits,
    };
    d.node(0, 0, n, [0; 3], [0; 3]);
    d.c.finish()
}

/// Test-only: the ideal cost in bits per category (0 count splits, 1 points
/// without a fit, 2 tangent coordinates, 8 + sb normal coordinate by spread
/// bucket) and, at 16 + category, the number of modelled decisions.
#[cfg(test)]
pub(crate) fn cost_of(points: &[[u16; 3]], bits: u8, out: &mut [u8]) -> [f64; 32] {
    let mut e = TreeEnc {
        c: Encoder::new(out),
        m: Models::new(),
        pts: points,
        bits,
    };
    e.node(0, 0, points.len(), [0; 3], [0; 3]);
    e.c.cost
}
