//! Format version 4 (tag `0xA4`), the default coder: the count-splitting
//! binary kd-tree of version 3, with isolated points coded from a plane
//! fitted to *running moment sums* instead of a neighbour scan.
//!
//! Every coded point (an *event*; a voxel of identical points is one event)
//! adds its coordinates, squares and products to one running [`Sums`]; a
//! ring keeps the sums after each of the last 16 events, so the moments of
//! the last m events are one subtraction away. Each tree node records the
//! event count when it is entered; the points of a cell are contiguous in
//! Morton order, so the events coded inside an ancestor cell are the last
//! ones. An isolated point takes the smallest ancestor holding at least
//! [`MIN_FIT`] coded events, fits a plane to the moments of the last
//! `min(k, KMAX)` of them (one 2x2 solve), codes its two tangent
//! coordinates as raw bits and its normal coordinate as a residual to the
//! plane (zero flag, sign, Elias-gamma class with modelled unary bits, raw
//! low bits). Per point that is about 6-11 modelled decisions and O(1)
//! arithmetic: no neighbour search, no per-bit geometry. The walk is one
//! loop with a fixed stack of pending upper children (no recursion).

use super::model::{code_count, code_residual, CountModels, ResidualModels, SB};
use super::rc::{BitCoder, Decoder, Encoder, Fp};
use crate::Error;

/// Modelled top bits per axis of a point coded without a plane.
pub(super) const PLAIN_MODELLED: u8 = 2;
/// Fewest coded events in the ancestor cell whose last ones a plane is fitted to.
pub(super) const MIN_FIT: u64 = 3;
/// Fits on fewer points than this use their own spread bucket.
const FEW: u64 = 6;
/// Most recent coded events a plane is fitted to.
pub(super) const KMAX: u64 = 12;
/// Ring of running-sum snapshots (a power of two above [`KMAX`]).
pub(super) const RING: usize = 16;
/// Slots per split depth (3 x 16 bits plus the root, rounded up to a power
/// of two for the fixed-length search in [`Walk::point`]).
pub(super) const DEPTHS: usize = 64;

/// Running moments of the coded points: count, coordinate sums, and sums of
/// squares and products (xx, yy, zz, xy, xz, yz), all modulo 2^64 (wrapping),
/// so that a difference of two snapshots is exact whenever its true value
/// fits.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sums {
    n: u64,
    s: [u64; 3],
    ss: [u64; 6],
}

impl Sums {
    /// `self - e`, component-wise (wrapping): the sums of the events
    /// between two snapshots.
    #[inline(always)]
    pub(super) fn minus(&self, e: &Sums) -> Sums {
        Sums {
            n: self.n.wrapping_sub(e.n),
            s: [
                self.s[0].wrapping_sub(e.s[0]),
                self.s[1].wrapping_sub(e.s[1]),
                self.s[2].wrapping_sub(e.s[2]),
            ],
            ss: [
                self.ss[0].wrapping_sub(e.ss[0]),
                self.ss[1].wrapping_sub(e.ss[1]),
                self.ss[2].wrapping_sub(e.ss[2]),
                self.ss[3].wrapping_sub(e.ss[3]),
                self.ss[4].wrapping_sub(e.ss[4]),
                self.ss[5].wrapping_sub(e.ss[5]),
            ],
        }
    }

    /// Adds `k` copies of `p`.
    #[inline(always)]
    pub(super) fn add(&mut self, p: [u16; 3], k: u64) {
        let (x, y, z) = (p[0] as u64, p[1] as u64, p[2] as u64);
        self.n = self.n.wrapping_add(k);
        let kx = k.wrapping_mul(x);
        let ky = k.wrapping_mul(y);
        let kz = k.wrapping_mul(z);
        self.s[0] = self.s[0].wrapping_add(kx);
        self.s[1] = self.s[1].wrapping_add(ky);
        self.s[2] = self.s[2].wrapping_add(kz);
        self.ss[0] = self.ss[0].wrapping_add(kx.wrapping_mul(x));
        self.ss[1] = self.ss[1].wrapping_add(ky.wrapping_mul(y));
        self.ss[2] = self.ss[2].wrapping_add(kz.wrapping_mul(z));
        self.ss[3] = self.ss[3].wrapping_add(kx.wrapping_mul(y));
        self.ss[4] = self.ss[4].wrapping_add(kx.wrapping_mul(z));
        self.ss[5] = self.ss[5].wrapping_add(ky.wrapping_mul(z));
    }
}

/// All adaptive contexts (on the stack).
#[derive(Debug, Clone)]
struct Models {
    count: CountModels<Fp>,
    plain: [[Fp; 16]; 3],
    normal: ResidualModels<Fp>,
}

impl Models {
    fn new() -> Self {
        Models {
            count: CountModels::new(),
            plain: [[Fp::NEW; 16]; 3],
            normal: ResidualModels::new(),
        }
    }
}

/// `INV[n] = 1 / n` for n in 1..16.
const INV: [f64; 16] = {
    let mut t = [0.0; 16];
    let mut i = 1;
    while i < 16 {
        t[i] = 1.0 / i as f64;
        i += 1;
    }
    t
};

/// A plane `w = pw + bu * (u - pu) + bv * (v - pv)` over the normal axis
/// `axis`, in grid units relative to the isolated cell's corner.
pub(super) struct Plane {
    pub(super) axis: usize,
    pub(super) pu: f64,
    pub(super) pv: f64,
    pub(super) pw: f64,
    pub(super) bu: f64,
    pub(super) bv: f64,
    pub(super) sb: usize,
}

#[inline(always)]
pub(super) fn tangents(axis: usize) -> (usize, usize) {
    match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

/// Least-squares plane of the points whose moments are `d` (a difference of
/// two snapshots), relative to `corner`. `None` for a degenerate set.
#[inline(always)]
pub(super) fn fit(d: &Sums, corner: [u16; 3]) -> Option<Plane> {
    let n = d.n;
    let nf = n as f64;
    // Scatter matrix times n: S_ij = n Σ a_i a_j - Σ a_i Σ a_j, exact in
    // wrapping integers whenever the true value fits (it does for the at most
    // RING points of a fit).
    let sc = |k: usize, i: usize, j: usize| {
        n.wrapping_mul(d.ss[k])
            .wrapping_sub(d.s[i].wrapping_mul(d.s[j])) as i64 as f64
    };
    let (sxx, syy, szz) = (sc(0, 0, 0), sc(1, 1, 1), sc(2, 2, 2));
    let (sxy, sxz, syz) = (sc(3, 0, 1), sc(4, 0, 2), sc(5, 1, 2));
    // Normal axis: the one whose tangent minor is largest.
    let dx = syy * szz - syz * syz;
    let dy = sxx * szz - sxz * sxz;
    let dz = sxx * syy - sxy * sxy;
    let (axis, det, suu, svv, suv, suw, svw, sww) = if dx >= dy && dx >= dz {
        (0, dx, syy, szz, syz, sxy, sxz, sxx)
    } else if dy >= dz {
        (1, dy, sxx, szz, sxz, sxy, syz, syy)
    } else {
        (2, dz, sxx, syy, sxy, sxz, syz, szz)
    };
    let floor = 1e-9 * (suu * svv + 1.0);
    if det.partial_cmp(&floor) != Some(core::cmp::Ordering::Greater) {
        return None;
    }
    let inv = 1.0 / det;
    let bu = (suw * svv - svw * suv) * inv;
    let bv = (svw * suu - suw * suv) * inv;
    // Mean squared residual along the normal axis: msr / n².
    // 1 / n, from a table for the usual small n (bit-identical: IEEE
    // division is correctly rounded at compile time too).
    let inv_n = match INV.get(n as usize) {
        Some(&i) if n > 0 => i,
        _ => 1.0 / nf,
    };
    let var = (sww - bu * suw - bv * svw) * inv_n * inv_n;
    let by_var = usize::from(var >= 0.0625)
        + usize::from(var >= 0.25)
        + usize::from(var >= 1.0)
        + usize::from(var >= 4.0);
    // Branch-free select: SB - 1 for fits on few points.
    let few = usize::from(n < FEW);
    let sb = few * (SB - 1) + (1 - few) * by_var;
    let (u, v) = tangents(axis);
    // Centroid relative to the corner.
    let rel = |a: usize| d.s[a].wrapping_sub(n.wrapping_mul(corner[a] as u64)) as i64 as f64;
    Some(Plane {
        axis,
        pu: rel(u) * inv_n,
        pv: rel(v) * inv_n,
        pw: rel(axis) * inv_n,
        bu,
        bv,
        sb,
    })
}

/// Codes the single point `p` of the cell with corner `corner` and `r[a]`
/// free bits on axis `a`, given the plane `plane` (if any); returns the
/// (decoded) point.
#[inline(always)]
fn code_point<C: BitCoder>(
    c: &mut C,
    m: &mut Models,
    plane: Option<Plane>,
    corner: [u16; 3],
    r: [u8; 3],
    p: [u16; 3],
) -> [u16; 3] {
    let mut q = corner;
    c.cat(1);
    let Some(pl) = plane else {
        for a in 0..3 {
            let raw_bits = r[a].saturating_sub(PLAIN_MODELLED);
            for i in (raw_bits..r[a]).rev() {
                if c.fbit(&mut m.plain[a][i as usize], (p[a] >> i) & 1 == 1) {
                    q[a] |= 1 << i;
                }
            }
            q[a] |= c.raw(p[a] as u32, raw_bits as u32) as u16;
        }
        return q;
    };
    let w = pl.axis;
    let (u, v) = tangents(w);
    c.cat(2);
    // Both tangent coordinates in one raw read (the same bits as two: u's
    // low r[u] bits, then v's low r[v] bits; r[u] + r[v] <= 32).
    let mu = (1u32 << r[u]) - 1;
    let tv = c.raw(
        (p[u] as u32 & mu) | ((p[v] as u32) << r[u]),
        u32::from(r[u] + r[v]),
    );
    q[u] |= (tv & mu) as u16;
    q[v] |= (tv >> r[u]) as u16;
    if r[w] == 0 {
        return q;
    }
    let du = (q[u] - corner[u]) as f64 - pl.pu;
    let dv = (q[v] - corner[v]) as f64 - pl.pv;
    let rel = pl.pw + pl.bu * du + pl.bv * dv;
    // 1/16 grid units relative to the corner (`as` saturates, NaN -> 0).
    let pred = (rel * 16.0) as i64;
    let hi = (1i64 << r[w]) - 1;
    let pi = (pred.saturating_add(8) >> 4).clamp(0, hi);
    let frac = pred.saturating_sub(16 * pi);
    let e = (p[w] as i64 - corner[w] as i64) - pi;
    let sb = pl.sb;
    c.cat(8 + sb);
    let val = code_residual(c, &mut m.normal, sb, frac, pi, 0, hi, e);
    q[w] = corner[w] + val as u16;
    q
}

/// State shared by the encoder's and the decoder's tree walk. The range
/// coder is not part of it but a local of the caller, passed along: so its
/// state lives in registers, not in this struct (3-5 % faster decoding,
/// bench/pointcode/RESULTS.md, session 7).
struct Walk {
    m: Models,
    bits: u8,
    /// Running sums of all coded points.
    total: Sums,
    /// Number of coding events so far (an isolated point, or a group of
    /// identical points at the last level).
    ev: u64,
    /// `ring[j % RING]`: the running sums before event `j`.
    ring: [Sums; RING],
    /// Event count when the node at each depth of the current path was
    /// entered.
    entry: [u64; DEPTHS],
    /// Number of depths `d` of the current path with `entry[d] + MIN_FIT <=
    /// ev` when last computed (a lower bound of it, after pops).
    anc: usize,
}

impl Walk {
    fn new(bits: u8) -> Self {
        Walk {
            m: Models::new(),
            bits,
            total: Sums::default(),
            ev: 0,
            ring: [Sums::default(); RING],
            entry: [0; DEPTHS],
            anc: 0,
        }
    }

    /// Adds `k` copies of `p` to the running sums (one event).
    #[inline(always)]
    fn push(&mut self, p: [u16; 3], k: u64) {
        self.total.add(p, k);
        self.ev = self.ev.wrapping_add(1);
        self.ring[self.ev as usize % RING] = self.total;
    }

    /// Plane fitted to the last `m` (1..=RING-1) events.
    #[inline(always)]
    fn fit_last(&self, m: u64, corner: [u16; 3]) -> Option<Plane> {
        let tt = &self.total;
        let e = &self.ring[self.ev.wrapping_sub(m) as usize % RING];
        let diff = Sums {
            n: tt.n.wrapping_sub(e.n),
            s: [
                tt.s[0].wrapping_sub(e.s[0]),
                tt.s[1].wrapping_sub(e.s[1]),
                tt.s[2].wrapping_sub(e.s[2]),
            ],
            ss: [
                tt.ss[0].wrapping_sub(e.ss[0]),
                tt.ss[1].wrapping_sub(e.ss[1]),
                tt.ss[2].wrapping_sub(e.ss[2]),
                tt.ss[3].wrapping_sub(e.ss[3]),
                tt.ss[4].wrapping_sub(e.ss[4]),
                tt.ss[5].wrapping_sub(e.ss[5]),
            ],
        };
        fit(&diff, corner)
    }

    /// Codes the isolated point `p` of the node at depth `t` (corner
    /// `corner`); returns it and adds it to the running sums.
    #[inline(always)]
    fn point<C: BitCoder>(&mut self, c: &mut C, t: u32, corner: [u16; 3], p: [u16; 3]) -> [u16; 3] {
        let lvl = (t / 3) as u8;
        let part = (t % 3) as usize;
        let r = [
            self.bits - lvl - u8::from(part > 0),
            self.bits - lvl - u8::from(part > 1),
            self.bits - lvl,
        ];
        // The last (at most KMAX) coded events inside the smallest ancestor
        // holding at least MIN_FIT of them.
        // `entry[..t]` is non-decreasing (deeper cells were entered later),
        // so that ancestor is at depth `lo - 1`, where `lo` = the number of
        // depths d < t with `entry[d] + MIN_FIT <= ev` (0: none).
        //
        // That count only grows while the path stays (`ev` grows), and a
        // pop to depth `d` keeps `entry[..d]` (`walk` clamps `self.anc` to
        // `d` there), so `lo` is advanced from its last value: two steps
        // branch-free, then a loop (entered for about 1 point in 10). This
        // replaced a fixed-length binary search over 64 depths (-7 % decode
        // time, same result, checked in test builds).
        let need = self.ev.wrapping_sub(MIN_FIT);
        let enough = self.ev >= MIN_FIT;
        let t = t as usize;
        let mut lo = self.anc.min(t);
        let ok = |lo: usize| enough & (lo < t) & (self.entry[lo % DEPTHS] <= need);
        lo += usize::from(ok(lo));
        lo += usize::from(ok(lo));
        while ok(lo) {
            lo += 1;
        }
        self.anc = lo;
        #[cfg(test)]
        {
            // The definition: a fixed-length binary search over all depths
            // (what session 4 ran); the property tests check every point.
            let (mut b, mut half) = (0usize, DEPTHS / 2);
            while half > 0 {
                let i = b + half - 1;
                let ok = enough & (i < t) & (self.entry[i % DEPTHS] <= need);
                b += usize::from(ok) * half;
                half /= 2;
            }
            assert_eq!(lo, b, "ancestor count");
        }
        let m = if lo > 0 {
            self.ev
                .wrapping_sub(self.entry[(lo - 1) % DEPTHS])
                .min(KMAX)
        } else {
            0
        };
        let plane = if m > 0 {
            self.fit_last(m, corner)
        } else {
            None
        };
        let q = code_point(c, &mut self.m, plane, corner, r, p);
        self.push(q, 1);
        q
    }
}

/// What differs between encoding and decoding in the tree walk.
pub(super) trait Side {
    /// Encoder: the number of points of `lo..lo + n` in the lower half
    /// (bit `bit` of `axis` clear); decoder: 0 (ignored).
    fn lower(&self, lo: usize, n: usize, axis: usize, bit: u16) -> usize;
    /// Encoder: point `i`; decoder: anything.
    fn get(&self, i: usize) -> [u16; 3];
    /// Decoder: stores `n` copies of `p` from `i` on.
    fn put(&mut self, i: usize, n: usize, p: [u16; 3]);
    /// Encoder (format 5): for the `n` (2 or 3) points from `i` of the
    /// node at depth `t` (split on `axis` at `bit`), the number `j` of
    /// depths before `end` on which they all lie on the same side, those
    /// sides (bit `d` set: upper half at depth `t + d`) and the number of
    /// them in the lower half at the depth after (if `t + j < end`);
    /// decoder: (0, 0, 0).
    fn run(
        &self,
        _i: usize,
        _n: usize,
        _t: u32,
        _end: u32,
        _axis: usize,
        _bit: u16,
    ) -> (u32, u64, usize) {
        (0, 0, 0)
    }
}

/// The encoder's side: the points, and whether one of them was not where
/// the walk coded it (see [`EncSide::new`]).
pub(super) struct EncSide<'a> {
    points: &'a [[u16; 3]],
    misplaced: bool,
}

impl<'a> EncSide<'a> {
    /// The walk assigns each point to a leaf or isolated cell by its
    /// position in `points` (the split counts are binary searches, which
    /// assume the canonical order); `put` checks that each point is the
    /// coded one, i.e. lies in its cell. All points in their cells, visited
    /// in Morton order, means `points` is in canonical order: so the
    /// encoder needs no separate order check (`misplaced` is the verdict,
    /// valid when the walk ran to the end).
    pub(super) fn new(points: &'a [[u16; 3]]) -> Self {
        EncSide {
            points,
            misplaced: false,
        }
    }

    /// Whether a point was not where the walk coded it (the input was not in
    /// canonical order).
    pub(super) fn misplaced(&self) -> bool {
        self.misplaced
    }
}

impl Side for EncSide<'_> {
    #[inline(always)]
    fn lower(&self, lo: usize, n: usize, axis: usize, bit: u16) -> usize {
        self.points[lo..lo + n].partition_point(|p| p[axis] & bit == 0)
    }
    #[inline(always)]
    fn get(&self, i: usize) -> [u16; 3] {
        self.points[i]
    }
    #[inline(always)]
    fn put(&mut self, i: usize, n: usize, p: [u16; 3]) {
        for q in &self.points[i..i + n] {
            self.misplaced |= *q != p;
        }
    }
    #[inline(always)]
    fn run(
        &self,
        i: usize,
        n: usize,
        t: u32,
        end: u32,
        axis: usize,
        bit: u16,
    ) -> (u32, u64, usize) {
        let p = self.points[i];
        let last = self.points[i + n - 1];
        let mid = self.points[i + n / 2];
        let (mut j, mut sides) = (0u32, 0u64);
        let (mut a, mut b) = (axis.min(2), bit);
        while t + j < end && ((p[a] ^ last[a]) | (p[a] ^ mid[a])) & b == 0 {
            sides |= u64::from(p[a] & b != 0) << (j % 64);
            j += 1;
            b >>= u32::from(a == 2);
            a = [1, 2, 0][a];
        }
        let k = self.points[i..i + n].partition_point(|q| q[a] & b == 0);
        (j, sides, k)
    }
}

pub(super) struct DecSide<'a>(pub(super) &'a mut [[u16; 3]]);

impl Side for DecSide<'_> {
    #[inline(always)]
    fn lower(&self, _lo: usize, _n: usize, _axis: usize, _bit: u16) -> usize {
        0
    }
    #[inline(always)]
    fn get(&self, _i: usize) -> [u16; 3] {
        [0; 3]
    }
    #[inline(always)]
    fn put(&mut self, i: usize, n: usize, p: [u16; 3]) {
        for q in &mut self.0[i..i + n] {
            *q = p;
        }
    }
}

/// A node waiting to be coded: the upper child of a two-sided split.
#[derive(Clone, Copy, Default)]
struct Pending {
    t: u32,
    axis: usize,
    bit: u16,
    lo: usize,
    n: usize,
    corner: [u16; 3],
    hist: [u8; 3],
}

/// The whole tree walk, depth first, lower child first (canonical order),
/// with an explicit stack of pending upper children (at most one per depth).
#[inline(always)]
fn walk<C: BitCoder, S: Side>(c: &mut C, w: &mut Walk, side: &mut S, total: usize) {
    let end = 3 * w.bits as u32;
    let mut stack = [Pending::default(); DEPTHS];
    let mut sp = 0usize;
    let (mut t, mut lo, mut n) = (0u32, 0usize, total);
    let mut corner = [0u16; 3];
    let mut hist = [0u8; 3];
    // Axis split at depth t (t mod 3) and the bit it splits at.
    let mut axis = 0usize;
    let mut bit = 1u16 << (w.bits - 1);
    loop {
        if t >= end {
            side.put(lo, n, corner);
            w.push(corner, n as u64);
        } else if n == 1 {
            let q = w.point(c, t, corner, side.get(lo));
            side.put(lo, 1, q);
        } else {
            w.entry[t as usize % DEPTHS] = w.ev;
            let k = side.lower(lo, n, axis, bit);
            c.cat(0);
            let k = code_count(c, &mut w.m.count, axis, hist, n, k);
            t += 1;
            let (a, b) = (axis, bit);
            // Next depth's axis and bit.
            bit >>= u32::from(axis == 2);
            axis = [1, 2, 0][axis.min(2)];
            if k == n {
                hist[a] = 1;
            } else if k == 0 {
                hist[a] = 1;
                corner[a] |= b;
            } else {
                hist[a] = 2;
                let mut up = corner;
                up[a] |= b;
                if let Some(slot) = stack.get_mut(sp) {
                    *slot = Pending {
                        t,
                        axis,
                        bit,
                        lo: lo + k,
                        n: n - k,
                        corner: up,
                        hist,
                    };
                    sp += 1;
                }
                n = k;
            }
            continue;
        }
        // Leaf done: resume the most recent pending upper child.
        match pop(&stack, &mut sp, c, w) {
            Some(f) => (t, axis, bit, lo, n, corner, hist) = f,
            None => return,
        }
    }
}

/// State of a resumed node: depth, axis, bit, first point, count, corner,
/// split history.
type Resume = (u32, usize, u16, usize, usize, [u16; 3], [u8; 3]);

/// Pops the most recent pending upper child, `None` when none is left (or
/// the encoder's output is full: it stops early).
#[inline(always)]
fn pop<C: BitCoder>(stack: &[Pending], sp: &mut usize, c: &C, w: &mut Walk) -> Option<Resume> {
    if *sp == 0 || c.full() {
        return None;
    }
    *sp -= 1;
    let f = stack[*sp % DEPTHS];
    // The path is cut back to depth `f.t`: deeper entries are stale.
    w.anc = w.anc.min(f.t as usize);
    Some((f.t, f.axis, f.bit, f.lo, f.n, f.corner, f.hist))
}

/// Arithmetic-codes the tree of `points` (non-empty, coordinates checked
/// below `2^bits`); `Err(NotCanonical)` if they are not in canonical order
/// (unless the output filled up first: then `Err(BufferTooSmall)`).
pub(crate) fn encode_tree(points: &[[u16; 3]], bits: u8, out: &mut [u8]) -> Result<usize, Error> {
    let mut c = Encoder::new(out);
    let mut w = Walk::new(bits);
    let mut side = EncSide::new(points);
    walk(&mut c, &mut w, &mut side, points.len());
    if side.misplaced() && !c.full() {
        return Err(Error::NotCanonical);
    }
    c.finish()
}

/// Decodes a tree of `out.len()` (non-zero) points.
pub(crate) fn decode_tree(body: &[u8], bits: u8, out: &mut [[u16; 3]]) -> Result<(), Error> {
    let n = out.len();
    let mut c = Decoder::new(body)?;
    let mut w = Walk::new(bits);
    walk(&mut c, &mut w, &mut DecSide(out), n);
    c.finish()
}

/// Test-only: the ideal cost in bits per category (as `code::cost_of`).
#[cfg(test)]
pub(crate) fn cost_of(points: &[[u16; 3]], bits: u8, out: &mut [u8]) -> [f64; 32] {
    let mut c = Encoder::new(out);
    let mut w = Walk::new(bits);
    walk(&mut c, &mut w, &mut EncSide::new(points), points.len());
    c.cost
}
