//! The tree coder shared by encoder and decoder: count splitting along a
//! binary kd-tree (x, y, z, x, ... halvings, i.e. Morton order) and direct
//! coding of isolated points with a plane prediction from coded neighbours.

use super::rc::{BitCoder, Decoder, Encoder, Prob};
use crate::Error;

/// Most neighbours used in a plane fit.
pub const MAX_NEIGHBOURS: usize = 6;
/// How many already-coded points (backwards in canonical order) are scanned
/// for neighbours of an isolated point.
const SCAN: usize = 16;
/// Neighbour radius in units of the isolated cell's longest side.
const RADIUS_CELLS: i32 = 3;

/// Count buckets of a splitting cell: 2, 3, 4..=7, 8+.
const NB: usize = 4;
/// Distance buckets of the prediction to a bisection boundary.
const DB: usize = 8;
/// Spread buckets of the plane fit (5 by residual, 1 for few neighbours).
const SB: usize = 6;

#[inline(always)]
fn nbucket(n: usize) -> usize {
    match n {
        0..=2 => 0,
        3 => 1,
        4..=7 => 2,
        _ => 3,
    }
}

/// All adaptive contexts (536 models, about 2.1 KiB, on the stack).
#[derive(Debug, Clone)]
pub(crate) struct Models {
    one_sided: [[[[Prob; NB]; 9]; 3]; 3],
    side: [[[Prob; NB]; 3]; 3],
    interior: [[Prob; 8]; NB],
    plain: [[Prob; 16]; 3],
    tangent: [[[Prob; 4]; SB]; 2],
    normal: [[Prob; DB]; SB],
}

impl Models {
    const fn new() -> Self {
        Models {
            one_sided: [[[[Prob::NEW; NB]; 9]; 3]; 3],
            side: [[[Prob::NEW; NB]; 3]; 3],
            interior: [[Prob::NEW; 8]; NB],
            plain: [[Prob::NEW; 16]; 3],
            tangent: [[[Prob::NEW; 4]; SB]; 2],
            normal: [[Prob::NEW; DB]; SB],
        }
    }
}

/// Codes `k`, the number of the cell's `n >= 2` points in its lower half.
#[inline]
fn code_count<C: BitCoder>(
    c: &mut C,
    m: &mut Models,
    t: u32,
    hist: [u8; 3],
    n: usize,
    k: usize,
) -> usize {
    let axis = (t % 3) as usize;
    let nb = nbucket(n);
    let ha = hist[axis] as usize;
    let ho = hist[(axis + 1) % 3] as usize * 3 + hist[(axis + 2) % 3] as usize;
    let one = c.bit(&mut m.one_sided[axis][ha][ho][nb], k == 0 || k == n);
    if one {
        let upper = c.bit(&mut m.side[axis][ha][nb], k == 0);
        return if upper { 0 } else { n };
    }
    if n == 2 {
        return 1;
    }
    // k in [1, n-1] by bisection.
    let (mut a, mut b) = (1usize, n - 1);
    let mut depth = 0usize;
    while a < b {
        let mid = a + (b - a) / 2;
        if c.bit(&mut m.interior[nb][depth.min(7)], k > mid) {
            a = mid + 1;
        } else {
            b = mid;
        }
        depth += 1;
    }
    a
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
}

#[inline(always)]
fn tangents(axis: usize) -> (usize, usize) {
    match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

/// Gathers neighbours among `past` and fits a plane; `None` when fewer than 3
/// usable neighbours or a degenerate configuration. A backward scan over the
/// last [`SCAN`] coded points keeps the [`MAX_NEIGHBOURS`] nearest (squared
/// distance; ties keep the earlier scanned) inside the radius; when that
/// gives no fit, the scan is repeated with twice the radius.
fn fit_plane(past: &[[u16; 3]], cd: [i32; 3], r: [u8; 3]) -> Option<Fit> {
    let rmax = r[0].max(r[1]).max(r[2]);
    let radius = RADIUS_CELLS << (rmax as i32 + 1); // doubled units
    let start = past.len().saturating_sub(SCAN);
    let recent = &past[start..];
    fit_in(recent, cd, radius).or_else(|| fit_in(recent, cd, 2 * radius))
}

/// The nearest neighbours inside `radius` among `recent` (scanned backwards),
/// then [`fit_points`].
fn fit_in(recent: &[[u16; 3]], cd: [i32; 3], radius: i32) -> Option<Fit> {
    let mut d2 = [i64::MAX; MAX_NEIGHBOURS];
    let mut pts = [[0i32; 3]; MAX_NEIGHBOURS];
    let mut cnt = 0usize;
    for q in recent.iter().rev() {
        let rel = [
            2 * q[0] as i32 + 1 - cd[0],
            2 * q[1] as i32 + 1 - cd[1],
            2 * q[2] as i32 + 1 - cd[2],
        ];
        if rel[0].abs().max(rel[1].abs()).max(rel[2].abs()) > radius {
            continue;
        }
        let key = rel[0] as i64 * rel[0] as i64
            + rel[1] as i64 * rel[1] as i64
            + rel[2] as i64 * rel[2] as i64;
        if key >= d2[MAX_NEIGHBOURS - 1] {
            continue;
        }
        let mut at = MAX_NEIGHBOURS - 1;
        while at > 0 && d2[at - 1] > key {
            d2[at] = d2[at - 1];
            pts[at] = pts[at - 1];
            at -= 1;
        }
        d2[at] = key;
        pts[at] = rel;
        cnt = (cnt + 1).min(MAX_NEIGHBOURS);
    }
    fit_points(&pts[..cnt])
}

/// Least-squares plane through `nb` (relative, doubled units). The scatter
/// matrix `S_ij = n·Σ a_i·a_j - Σ a_i·Σ a_j` (n² times the covariance) is
/// exact in `i64`; the 2×2 solves run on `f64` in a fixed operation order.
fn fit_points(nb: &[[i32; 3]]) -> Option<Fit> {
    let cnt = nb.len();
    if cnt < 3 {
        return None;
    }
    let mut s = [0i64; 3];
    let mut ss = [0i64; 6]; // xx, yy, zz, xy, xz, yz
    for v in nb {
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
    let n = cnt as i64;
    let sc = |k: usize, i: usize, j: usize| (n * ss[k] - s[i] * s[j]) as f64;
    let (sxx, syy, szz) = (sc(0, 0, 0), sc(1, 1, 1), sc(2, 2, 2));
    let (sxy, sxz, syz) = (sc(3, 0, 1), sc(4, 0, 2), sc(5, 1, 2));
    // Per normal axis w: (S_uu, S_vv, S_uv, S_uw, S_vw, S_ww).
    let cand = [
        (syy, szz, syz, sxy, sxz, sxx),
        (sxx, szz, sxz, sxy, syz, syy),
        (sxx, syy, sxy, sxz, syz, szz),
    ];
    let mut best: Option<(f64, usize, f64, f64)> = None;
    for (axis, &(suu, svv, suv, suw, svw, sww)) in cand.iter().enumerate() {
        let det = suu * svv - suv * suv;
        if det <= 1e-9 * (suu * svv + 1.0) {
            continue;
        }
        let bu = (suw * svv - svw * suv) / det;
        let bv = (svw * suu - suw * suv) / det;
        let msr = sww - bu * suw - bv * svw;
        if best.is_none_or(|(b, ..)| msr < b) {
            best = Some((msr, axis, bu, bv));
        }
    }
    let (msr, axis, bu, bv) = best?;
    let (u, v) = tangents(axis);
    let nf = cnt as f64;
    // Mean squared residual in real units: msr / n² / 4 (doubled units).
    let var = msr / (4.0 * nf * nf);
    let sb = if cnt < 5 {
        5
    } else if var < 0.25 {
        0
    } else if var < 1.0 {
        1
    } else if var < 4.0 {
        2
    } else if var < 16.0 {
        3
    } else {
        4
    };
    Some(Fit {
        axis,
        w0: s[axis] as f64 / nf,
        uc: s[u] as f64 / nf,
        vc: s[v] as f64 / nf,
        bu,
        bv,
        sb,
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

#[inline(always)]
fn dbucket(d: i64) -> usize {
    // |d| in 1/16 units: <0.5, <1, <2, <4, <8, <16, <32, more.
    let a = d.unsigned_abs();
    if a < 8 {
        0
    } else {
        ((64 - (a >> 3).leading_zeros()) as usize).min(DB - 1)
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
    let Some(fit) = fit_plane(past, cd, r) else {
        for a in 0..3 {
            for i in (0..r[a]).rev() {
                if c.bit(&mut m.plain[a][i as usize], (p[a] >> i) & 1 == 1) {
                    q[a] |= 1 << i;
                }
            }
        }
        return q;
    };
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
    // Predicted normal coordinate, 1/16 units, absolute.
    let w = fit.axis;
    let u0 = (2 * q[u] as i32 + 1 - cd[u]) as f64;
    let v0 = (2 * q[v] as i32 + 1 - cd[v]) as f64;
    let rel = fit.w0 + fit.bu * (u0 - fit.uc) + fit.bv * (v0 - fit.vc);
    // Doubled units -> 1/16 units; `as` saturates (and maps NaN to 0).
    let pred = (cd[w] as i64) * 8 + (rel * 8.0) as i64;
    let ctx = &mut m.normal[fit.sb];
    for i in (0..r[w]).rev() {
        let mid = (q[w] as i64 | (1 << i)) * 16;
        let d = pred - mid;
        let up = d >= 0;
        let bit = (p[w] >> i) & 1 == 1;
        let agree = c.bit(&mut ctx[dbucket(d)], bit == up);
        if agree == up {
            q[w] |= 1 << i;
        }
    }
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
        code_count(&mut self.c, &mut self.m, t, hist, n, k);
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
        let k = code_count(&mut self.c, &mut self.m, t, hist, n, 0);
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
    // A valid stream is consumed exactly (see `Encoder::finish`).
    if d.c.over > 0 {
        return Err(Error::Truncated);
    }
    if !d.c.exact() {
        return Err(Error::Malformed);
    }
    Ok(())
}
