//! Format version 5 (tag `0xA5`): format 4's tree, running-sum plane fit
//! and raw tangent coordinates, with fewer modelled decisions per point.
//! Where format 4 codes a chain of binary decisions, format 5 codes one
//! symbol of an adaptive 16-ary model ([`Cdf`], one range-coder step):
//!
//! * the count split of a cell of `n <= 15` points is the symbol `k`
//!   (0..=n) itself (format 4: a one-sided flag, then a side bit or about
//!   two bisection decisions); bigger cells keep format 4's decisions;
//! * the normal residual of an isolated point is one symbol (zero, or
//!   Elias-gamma class up to 6 with a side, or an escape) plus its raw low
//!   bits (format 4: a zero flag, a sign and a unary class, 1.6-6.3
//!   decisions).
//!
//! No context of the range coder depends on the plane fit: the residual's
//! contexts are the cell size and the last residual symbol (fewer contexts
//! learn faster on clouds of a few thousand points), and the fit only maps
//! the decoded symbol to a value (which side is "toward" the prediction).
//! So the decoder's range-coder chain never waits for the floating-point
//! fit (format 4's residual contexts need it: spread and offset buckets);
//! the two run side by side in the CPU. That decoupling, not the
//! instruction count, is most of the decode gain (bench/pointcode/RESULTS.md,
//! session 6: with format 4's fit-dependent residual contexts the same
//! symbols decoded slower than format 4); it costs about 2.7 % in size.
//!
//! The bitstream is specified in `crates/wire/SPEC.md`, section 5.9.

use super::fast::{
    fit, tangents, DecSide, EncSide, Plane, Side, Sums, DEPTHS, KMAX, MIN_FIT, PLAIN_MODELLED, RING,
};
use super::model::{code_count, CountModels};
use super::rc::{BitCoder, Cdf, Decoder, Encoder, Fp};
use crate::Error;

/// Largest cell whose count split is one symbol.
const SMALL: usize = 15;
/// Count-symbol contexts: (n - 2, axis, history of the axis); the axis is
/// only told apart for n < 4 (context 0 otherwise).
const SMALL_CTX: usize = (SMALL - 1) * 9;
/// Residual-symbol contexts: cell size bucket (6) x last residual's
/// bucket (3).
const RES_CTX: usize = 6 * 3;
/// Slots of the count-symbol and residual-symbol tables: the next power of
/// two above [`SMALL_CTX`] and [`RES_CTX`], so that an index is bounded by
/// a mask instead of a modulo (the slots past the contexts are never used).
const SMALL_SLOTS: usize = 128;
const RES_SLOTS: usize = 32;
const _: () = assert!(SMALL_CTX <= SMALL_SLOTS && RES_CTX <= RES_SLOTS);
const _: () = assert!(SMALL_SLOTS.is_power_of_two() && RES_SLOTS.is_power_of_two());
/// Largest Elias-gamma class of the residual with its own symbols.
const MAX_CLASS: u32 = 6;
/// Residual symbol announcing a class above [`MAX_CLASS`].
const ESCAPE: usize = 15;

/// Bucket of a residual symbol: 0 (zero), 1 (|e| = 1), 2 (larger).
const LAST_OF: [u8; 16] = [0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];

/// All adaptive contexts (on the stack).
#[derive(Debug, Clone)]
struct Models {
    small: [Cdf; SMALL_SLOTS],
    big: CountModels<Fp>,
    plain: [[Fp; 16]; 3],
    res: [Cdf; RES_SLOTS],
    /// Bucket of the last residual symbol ([`LAST_OF`]).
    last: usize,
}

/// First count-symbol context of a cell of `n` (2..=15) points split on
/// `axis`, at index `3 n + axis`: `(n - 2) * 9`, plus `3 axis` for n < 4
/// (the split history of the axis is added to it).
const SMALL_BASE: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut n = 2;
    while n <= SMALL {
        let mut a = 0;
        while a < 3 {
            t[3 * n + a] = ((n - 2) * 9 + if n < 4 { 3 * a } else { 0 }) as u8;
            a += 1;
        }
        n += 1;
    }
    t
};

/// Initial count-symbol models: context `i` has `n = i / 9 + 2` points, so
/// `n + 1` possible counts, uniform.
pub(super) const SMALL_INIT: [Cdf; SMALL_SLOTS] = {
    let mut t = [Cdf::uniform(3); SMALL_SLOTS];
    let mut i = 0;
    while i < SMALL_CTX {
        t[i] = Cdf::uniform(i / 9 + 3);
        i += 1;
    }
    t
};

/// Initial residual models: context `i` is in cell size bucket `rb = i / 3`
/// (`r = rb + 2` free bits, at most 7 counted), so `|e| < 2^r`, classes
/// below `r`: symbols `0..=2r` are possible, uniform (escape: the floor).
pub(super) const RES_INIT: [Cdf; RES_SLOTS] = {
    let mut t = [Cdf::uniform(3); RES_SLOTS];
    let mut i = 0;
    while i < RES_CTX {
        let a = 2 * (i / 3 + 2) + 1;
        t[i] = Cdf::uniform(if a < 16 { a } else { 16 });
        i += 1;
    }
    t
};

impl Models {
    fn new() -> Self {
        Models {
            small: SMALL_INIT,
            big: CountModels::new(),
            plain: [[Fp::NEW; 16]; 3],
            res: RES_INIT,
            last: 0,
        }
    }
}

/// Codes `k`, the number of the cell's `n >= 2` points in the lower half
/// along `axis`; returns the (decoded) `k`.
#[inline(always)]
fn code_split<C: BitCoder>(
    c: &mut C,
    m: &mut Models,
    axis: usize,
    hist: [u8; 3],
    n: usize,
    k: usize,
) -> usize {
    if n <= SMALL {
        let axis = axis.min(2);
        let ctx = SMALL_BASE[(3 * n + axis) & 63] as usize + hist[axis] as usize;
        let s = c.sym(&mut m.small[ctx & (SMALL_SLOTS - 1)], k);
        if s > n {
            c.invalid();
            return n;
        }
        s
    } else {
        code_count(c, &mut m.big, axis, hist, n, k)
    }
}

/// Codes the normal coordinate `pi + e` (`pi` in `0..=hi`, `hi >= 1`) as one
/// residual symbol and raw low bits; returns the (decoded) coordinate
/// relative to the cell corner. A decoded value outside `0..=hi` marks the
/// stream invalid and is clamped.
#[inline(always)]
fn code_residual5<C: BitCoder>(
    c: &mut C,
    m: &mut Models,
    ctx: usize,
    flip: bool,
    pi: i64,
    hi: i64,
    e: i64,
) -> i64 {
    let mag = e.unsigned_abs();
    let cls = 63 - mag.max(1).leading_zeros();
    let neg = e < 0;
    let s = if e == 0 {
        0
    } else if cls <= MAX_CLASS {
        1 + 2 * cls as usize + usize::from(neg ^ flip)
    } else {
        ESCAPE
    };
    let s = c.sym(&mut m.res[(ctx + m.last) & (RES_SLOTS - 1)], s);
    m.last = LAST_OF[s % 16] as usize;
    if s == 0 {
        return pi;
    }
    let (neg, k) = if s < ESCAPE {
        (((s - 1) & 1 == 1) ^ flip, (s as u32 - 1) / 2)
    } else {
        // Sign, then the class above MAX_CLASS + 1 in 4 bits.
        let v = c.raw(u32::from(neg) | (cls.wrapping_sub(MAX_CLASS + 1) << 1), 5);
        (v & 1 == 1, MAX_CLASS + 1 + (v >> 1))
    };
    let low = c.raw(mag as u32, k) as u64;
    let got = (1u64 << k) | low;
    let room = if neg { pi } else { hi - pi } as u64;
    if got > room {
        c.invalid();
    }
    let got = got.min(room) as i64;
    if neg {
        pi - got
    } else {
        pi + got
    }
}

/// Codes the single point `p` of the cell with corner `corner` and `r[a]`
/// free bits on axis `a`, given the plane `plane` (if any); returns the
/// (decoded) point. As format 4 except for the residual.
#[inline(always)]
fn code_point<C: BitCoder>(
    c: &mut C,
    m: &mut Models,
    plane: Option<Plane>,
    corner: [u16; 3],
    r: [u8; 3],
    p: [u16; 3],
    ctx: usize,
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
    let pred = (rel * 16.0) as i64;
    let hi = (1i64 << r[w]) - 1;
    let pi = (pred.saturating_add(8) >> 4).clamp(0, hi);
    let e = (p[w] as i64 - corner[w] as i64) - pi;
    c.cat(8 + pl.sb);
    let frac = pred.saturating_sub(16 * pi);
    let val = code_residual5(c, m, ctx, frac < 0, pi, hi, e);

    q[w] = corner[w] + val as u16;
    q
}

/// State shared by the encoder's and the decoder's tree walk (as format 4;
/// the range coder is a separate local of the caller, so that its state can
/// live in registers).
struct Walk {
    m: Models,
    bits: u8,
    total: Sums,
    ev: u64,
    ring: [Sums; RING],
    entry: [u64; DEPTHS],
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

    #[inline(always)]
    fn push(&mut self, p: [u16; 3], k: u64) {
        self.total.add(p, k);
        self.ev = self.ev.wrapping_add(1);
        self.ring[self.ev as usize % RING] = self.total;
    }

    /// Codes the isolated point `p` of the node at depth `t`; returns it
    /// and adds it to the running sums (ancestor search as format 4).
    #[inline(always)]
    fn point<C: BitCoder>(&mut self, c: &mut C, t: u32, corner: [u16; 3], p: [u16; 3]) -> [u16; 3] {
        let lvl = (t / 3) as u8;
        let part = (t % 3) as usize;
        let r = [
            self.bits - lvl - u8::from(part > 0),
            self.bits - lvl - u8::from(part > 1),
            self.bits - lvl,
        ];
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
            // The definition (format 4's fixed-length binary search); the
            // property tests check every point.
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
            let e = &self.ring[self.ev.wrapping_sub(m) as usize % RING];
            fit(&self.total.minus(e), corner)
        } else {
            None
        };
        // Free bits of the cell (its size), known before the fit.
        let rb = (self.bits - lvl).clamp(2, 7) as usize - 2;
        let ctx = 3 * rb;
        let q = code_point(c, &mut self.m, plane, corner, r, p, ctx);
        self.push(q, 1);
        q
    }
}

/// A node waiting to be coded: the upper child of a two-sided split.
/// 24 bytes: counts and offsets fit `u32` (at most [`super::MAX_POINTS`]
/// points).
#[derive(Clone, Copy, Default)]
struct Pending {
    t: u32,
    lo: u32,
    n: u32,
    bit: u16,
    corner: [u16; 3],
    axis: u8,
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
            let k = code_split(c, &mut w.m, axis, hist, n, k);
            t += 1;
            let (a, b) = (axis, bit);
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
                        lo: (lo + k) as u32,
                        n: (n - k) as u32,
                        bit,
                        corner: up,
                        axis: axis as u8,
                        hist,
                    };
                    sp += 1;
                }
                n = k;
            }
            continue;
        }
        if sp == 0 || c.full() {
            return;
        }
        sp -= 1;
        let f = stack[sp % DEPTHS];
        w.anc = w.anc.min(f.t as usize);
        (t, axis, bit, lo, n, corner, hist) = (
            f.t,
            f.axis as usize,
            f.bit,
            f.lo as usize,
            f.n as usize,
            f.corner,
            f.hist,
        );
    }
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

/// Test-only: the ideal cost in bits per category (as `fast::cost_of`).
#[cfg(test)]
pub(crate) fn cost_of(points: &[[u16; 3]], bits: u8, out: &mut [u8]) -> [f64; 32] {
    let mut c = Encoder::new(out);
    let mut w = Walk::new(bits);
    walk(&mut c, &mut w, &mut EncSide::new(points), points.len());
    c.cost
}
