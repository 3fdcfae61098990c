//! Format version 5 (tag `0xA6`; its session-6/7 draft was `0xA5`): format 4's tree, running-sum plane fit
//! and raw tangent coordinates, with fewer modelled decisions per point.
//! Where format 4 codes a chain of binary decisions, format 5 codes one
//! symbol of an adaptive 16-ary model ([`Cdf`], one range-coder step):
//!
//! * a cell of 2 or 3 points codes at once how its points split up: the
//!   number of depths on which they all stay on one side (their sides as
//!   raw bits) and, for 3 points, which side gets two ([`code_run`]; format
//!   4: one or more decisions per depth);
//! * the count split of a cell of 4..=15 points is the symbol `k` (0..=n)
//!   itself (format 4: a one-sided flag, then a side bit or about two
//!   bisection decisions); bigger cells code the deviation from `n / 2`
//!   as an Elias-gamma class symbol plus raw bits ([`code_big`]);
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
//! symbols decoded slower than format 4; session 8: the fit's spread
//! bucket alone as a context, 12 % slower decoding for 0.26 % fewer
//! bytes). It costs residual bits: format 5 is about 2 % larger than
//! format 4 in all (session 8; 2.7 % before the run, big-cell and prior
//! changes).
//!
//! Every model starts from a table trained offline on clouds unlike the
//! benchmark's ([`super::v5_prior`], `bench/pointcode/train_clouds.py`):
//! the models learn slowly on a few thousand points, and a trained start
//! saves about 0.4 % of the bytes at no decoding cost.
//!
//! The bitstream is specified in `crates/wire/SPEC.md`, section 5.9.

use super::fast::{
    fit, tangents, DecSide, EncSide, Plane, Side, Sums, DEPTHS, KMAX, MIN_FIT, PLAIN_MODELLED, RING,
};
use super::rc::{BitCoder, Cdf, Decoder, Encoder, Fp};
use super::v5_prior::{BIG_PRIOR, PRIOR_COUNT, RES_PRIOR, RUN_PRIOR, SMALL_PRIOR};
use crate::Error;

/// Largest cell whose count split is one symbol.
const SMALL: usize = 15;
/// log2(SMALL + 1).
const SMALL_LOG: usize = 4;
/// Count-symbol contexts: (n - 4, history of the axis); cells of 2 and 3
/// points are coded by [`code_run`].
pub(super) const SMALL_CTX: usize = (SMALL - 3) * 3;
/// Residual-symbol contexts: cell size bucket (6) x last residual's
/// bucket (3).
pub(super) const RES_CTX: usize = 6 * 3;
/// Slots of the count-symbol and residual-symbol tables: the next power of
/// two above [`SMALL_CTX`] and [`RES_CTX`], so that an index is bounded by
/// a mask instead of a modulo (the slots past the contexts are never used).
pub(super) const SMALL_SLOTS: usize = 64;
pub(super) const RES_SLOTS: usize = 32;
const _: () = assert!(SMALL_CTX <= SMALL_SLOTS && RES_CTX <= RES_SLOTS);
const _: () = assert!(SMALL_SLOTS.is_power_of_two() && RES_SLOTS.is_power_of_two());
/// Contexts of cells of 2 or 3 points (n, axis, history of the axis) and
/// their table slots.
pub(super) const RUN_CTX: usize = 18;
pub(super) const RUN_SLOTS: usize = 32;
const _: () = assert!(RUN_CTX <= RUN_SLOTS && RUN_SLOTS.is_power_of_two());

/// Largest Elias-gamma class of a big cell's split deviation with its own
/// symbols.
const BIG_CLASS: u32 = 5;
/// Size buckets of big cells (by log2 n: 16..31, 32..63, ..., 256+).
const BIG_LB: usize = 5;
/// Big-cell split contexts (size bucket, history of the axis) and their
/// table slots.
pub(super) const BIG_CTX: usize = BIG_LB * 3;
pub(super) const BIG_SLOTS: usize = 16;
const _: () = assert!(BIG_CTX <= BIG_SLOTS && BIG_SLOTS.is_power_of_two());

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
    big: [Cdf; BIG_SLOTS],
    run: [Cdf; RUN_SLOTS],
    plain: [[Fp; 16]; 3],
    res: [Cdf; RES_SLOTS],
    /// Bucket of the last residual symbol ([`LAST_OF`]).
    last: usize,
    /// Test-only: symbols coded per count and residual context.
    #[cfg(test)]
    stats: Stats,
}

/// Test-only: how often each symbol was coded in each context (the symbols
/// depend only on the points, not on the models).
#[cfg(test)]
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    pub(crate) small: [[u32; 16]; SMALL_SLOTS],
    pub(crate) res: [[u32; 16]; RES_SLOTS],
    pub(crate) big: [[u32; 16]; BIG_SLOTS],
    pub(crate) run: [[u32; 16]; RUN_SLOTS],
}

/// First count-symbol context of a cell of `n` (4..=15) points: `(n - 4)
/// * 3` (the split history of the axis is added to it).
const SMALL_BASE: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut n = 4;
    while n <= SMALL {
        t[n] = ((n - 4) * 3) as u8;
        n += 1;
    }
    t
};

/// The trained prior tables `p` ([`super::v5_prior`]) in the first `N` of
/// `S` slots (the slots past the contexts are never used), as if each had
/// coded [`PRIOR_COUNT`] symbols.
const fn prior_tables<const N: usize, const S: usize>(p: &[[i16; 16]; N]) -> [Cdf; S] {
    let mut t = [Cdf::uniform(16); S];
    let mut i = 0;
    while i < N {
        t[i] = Cdf::with_count(p[i], PRIOR_COUNT);
        i += 1;
    }
    t
}

/// Initial count-symbol models (context `i`: `n = i / 3 + 4` points).
pub(super) const SMALL_INIT: [Cdf; SMALL_SLOTS] = prior_tables(&SMALL_PRIOR);
/// Initial residual models (context `i`: cell size bucket `(i / 3) % 6`).
pub(super) const RES_INIT: [Cdf; RES_SLOTS] = prior_tables(&RES_PRIOR);
/// Initial big-cell split models.
pub(super) const BIG_INIT: [Cdf; BIG_SLOTS] = prior_tables(&BIG_PRIOR);
/// Initial models of cells of 2 or 3 points.
pub(super) const RUN_INIT: [Cdf; RUN_SLOTS] = prior_tables(&RUN_PRIOR);

/// Symbols residual context `i` can code: a cell of `rb + 2` free bits
/// (`rb = i / 3`) holds `|e| < 2^(rb + 2)`, classes below `rb + 2`, so the
/// symbols `0..=2 (rb + 2)` (the training tool gives the others only the
/// floor).
#[cfg(test)]
pub(super) const fn res_symbols(i: usize) -> usize {
    let a = 2 * ((i / 3) % 6 + 2) + 1;
    if a < 16 {
        a
    } else {
        16
    }
}

impl Models {
    fn new() -> Self {
        Self::with(&SMALL_INIT, &RES_INIT)
    }

    #[inline(always)]
    fn with(small: &[Cdf; SMALL_SLOTS], res: &[Cdf; RES_SLOTS]) -> Self {
        Models {
            small: *small,
            big: BIG_INIT,
            run: RUN_INIT,
            plain: [[Fp::NEW; 16]; 3],
            res: *res,
            last: 0,
            #[cfg(test)]
            stats: Stats {
                small: [[0; 16]; SMALL_SLOTS],
                res: [[0; 16]; RES_SLOTS],
                big: [[0; 16]; BIG_SLOTS],
                run: [[0; 16]; RUN_SLOTS],
            },
        }
    }
}

/// Codes `k`, the number of the cell's `n >= 2` points in the lower half
/// along the split axis, whose split history is `h` (0..=2); returns the
/// (decoded) `k`.
#[inline(always)]
fn code_split<C: BitCoder>(c: &mut C, m: &mut Models, h: usize, n: usize, k: usize) -> usize {
    if n <= SMALL {
        let ctx = SMALL_BASE[n & 15] as usize + h;
        let s = c.sym(&mut m.small[ctx & (SMALL_SLOTS - 1)], k);
        #[cfg(test)]
        {
            m.stats.small[ctx & (SMALL_SLOTS - 1)][s % 16] += 1;
        }
        if s > n {
            c.invalid();
            return n;
        }
        s
    } else {
        code_big(c, m, h, n, k)
    }
}

/// Codes how a cell of `n` (2 or 3) points splits up: `j` (at most
/// `room`), the number of depths on which all points lie on the same side,
/// and `k` (1..n), the number in the lower half at the next depth, as one
/// symbol: pairs `min(j, 15)`, triples `2 min(j, 7) + k - 1`; symbol 15
/// (pairs) or 14 and 15 (triples) are escapes followed by `j - 15` or `j -
/// 7` in 6 raw bits. Then the `j` sides raw (first depth first; bit `d` of
/// `sides`). Returns the (decoded) `j`, sides and `k`; `j = room` means
/// identical points (no split follows).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn code_run<C: BitCoder>(
    c: &mut C,
    m: &mut Models,
    axis: usize,
    h: usize,
    n: usize,
    room: u32,
    j: u32,
    sides: u64,
    k: usize,
) -> (u32, u64, usize) {
    let three = usize::from(n > 2);
    let ctx = 9 * three + 3 * axis.min(2) + h;
    // Escape threshold of j: 15 for pairs, 7 for triples.
    let esc = (15 - 8 * three) as u32;
    let kk = k.wrapping_sub(1) & three;
    let s = (j.min(esc) as usize) * (1 + three) + kk;
    let s = c.sym(&mut m.run[ctx & (RUN_SLOTS - 1)], s);
    #[cfg(test)]
    {
        m.stats.run[ctx & (RUN_SLOTS - 1)][s % 16] += 1;
    }
    let (mut got, k) = ((s >> three) as u32, 1 + (s & three));
    if got >= esc {
        got = esc + c.raw(j.wrapping_sub(esc), 6);
    }
    if got > room {
        c.invalid();
        got = room;
    }
    let j = got;
    let low = c.raw(sides as u32, j.min(32));
    // (Runs past 32 depths are rare: skip the empty read.)
    let high = if j > 32 {
        c.raw((sides >> 32) as u32, j - 32)
    } else {
        0
    };
    (j, u64::from(low) | u64::from(high) << 32, k)
}

/// Codes the split `k` of a cell of `n > SMALL` points as one symbol: all
/// in the lower half (0), all in the upper half (1), the deviation `d = k -
/// n / 2` zero (2), or its Elias-gamma class up to [`BIG_CLASS`] with its
/// sign (3 + 2 class + [d < 0]), else an escape (15: the sign and the
/// class above [`BIG_CLASS`] in 5 raw bits); then the bits of `|d|` below
/// its leading 1, raw. Returns the (decoded) `k`.
#[inline(always)]
fn code_big<C: BitCoder>(c: &mut C, m: &mut Models, hx: usize, n: usize, k: usize) -> usize {
    let h = (n / 2) as i64;
    let d = k as i64 - h;
    let mag = d.unsigned_abs();
    let cls = 63 - mag.max(1).leading_zeros();
    let s = if k == n {
        0
    } else if k == 0 {
        1
    } else if d == 0 {
        2
    } else if cls <= BIG_CLASS {
        3 + 2 * cls as usize + usize::from(d < 0)
    } else {
        ESCAPE
    };
    let lb = ((usize::BITS - 1 - n.leading_zeros()) as usize - SMALL_LOG).min(BIG_LB - 1);
    let ctx = 3 * lb + hx;
    let s = c.sym(&mut m.big[ctx & (BIG_SLOTS - 1)], s);
    #[cfg(test)]
    {
        m.stats.big[ctx & (BIG_SLOTS - 1)][s % 16] += 1;
    }
    let (neg, cls) = match s {
        0 => return n,
        1 => return 0,
        2 => return h as usize,
        ESCAPE => {
            let v = c.raw(u32::from(d < 0) | (cls.wrapping_sub(BIG_CLASS + 1) << 1), 6);
            (v & 1 == 1, BIG_CLASS + 1 + (v >> 1))
        }
        _ => ((s - 3) & 1 == 1, (s as u32 - 3) / 2),
    };
    let low = c.raw(mag as u32, cls) as u64;
    let got = ((1u64 << cls) | low) as i64;
    let k = if neg { h - got } else { h + got };
    if k < 1 || k >= n as i64 {
        c.invalid();
        return h as usize;
    }
    k as usize
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
    let ctx = ctx + m.last;
    let s = c.sym(&mut m.res[ctx & (RES_SLOTS - 1)], s);
    #[cfg(test)]
    {
        m.stats.res[ctx & (RES_SLOTS - 1)][s % 16] += 1;
    }
    m.last = LAST_OF[s % 16] as usize;
    // Symbol 0 (e = 0) takes the same branch-free path as the classes, as
    // class 0 with its leading 1 masked off (no raw bit either way): whether
    // a residual is zero is as unpredictable as the data.
    let (neg, k) = if s < ESCAPE {
        (
            ((s.wrapping_sub(1)) & 1 == 1) ^ flip,
            (s as u32).saturating_sub(1) / 2,
        )
    } else {
        // Sign, then the class above MAX_CLASS + 1 in 4 bits.
        let v = c.raw(u32::from(neg) | (cls.wrapping_sub(MAX_CLASS + 1) << 1), 5);
        (v & 1 == 1, MAX_CLASS + 1 + (v >> 1))
    };
    let low = c.raw(mag as u32, k) as u64;
    let got = ((1u64 << k) | low) & 0u64.wrapping_sub(u64::from(s != 0));
    let room = if neg { pi } else { hi - pi } as u64;
    if got > room {
        c.invalid();
    }
    let got = got.min(room) as i64;
    // pi - got or pi + got, without a branch.
    let sign = -i64::from(neg);
    pi + ((got ^ sign) - sign)
}

/// A point or cell corner packed in one integer, axis `a` in bits `16 a ..
/// 16 a + 16`. The walk keeps corners, points and split histories packed, so
/// that setting the lane of a run-time axis is a shift and an OR in a
/// register. As `[u16; 3]` / `[u8; 3]` arrays they were written to the stack
/// lane by lane and then read back whole, which the CPU cannot forward from
/// the narrower stores: a store-forwarding stall of a dozen cycles on the
/// decoder's chain several times per point (bench/pointcode/RESULTS.md,
/// session 9).
type Packed = u64;

/// Lane `a` (0..=2) of `x`.
#[inline(always)]
fn lane(x: Packed, a: usize) -> u16 {
    (x >> ((16 * a) & 63)) as u16
}

/// `v` in lane `a` (0..=2).
#[inline(always)]
fn at(v: u64, a: usize) -> Packed {
    v << ((16 * a) & 63)
}

#[inline(always)]
fn pack(p: [u16; 3]) -> Packed {
    u64::from(p[0]) | u64::from(p[1]) << 16 | u64::from(p[2]) << 32
}

#[inline(always)]
fn unpack(x: Packed) -> [u16; 3] {
    [x as u16, (x >> 16) as u16, (x >> 32) as u16]
}

/// The axis split after `a` (0 -> 1 -> 2 -> 0), without a table.
#[inline(always)]
fn next_axis(a: usize) -> usize {
    (0b00_10_01 >> ((2 * a) & 31)) & 3
}

/// Split history of axis `a` in `hist` (one byte per axis: 0 none yet, 1
/// one-sided, 2 two-sided).
#[inline(always)]
fn hist_of(hist: u32, a: usize) -> usize {
    ((hist >> ((8 * a) & 31)) & 0xFF) as usize
}

/// `hist` with the history of axis `a` set to `v`.
#[inline(always)]
fn set_hist(hist: u32, a: usize, v: u32) -> u32 {
    let sh = (8 * a) & 31;
    (hist & !(0xFF << sh)) | v << sh
}

/// Codes the single point `p` of the cell with corner `corner` (packed)
/// at depth `t` (`base` free bits on the last axis of the level, one more
/// on the axes already split at it), given the plane `plane` (if any);
/// returns the (decoded) point, packed. As format 4 except for the
/// residual.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn code_point<C: BitCoder>(
    c: &mut C,
    m: &mut Models,
    plane: Option<Plane>,
    corner: Packed,
    base: u8,
    part: usize,
    p: Packed,
    ctx: usize,
) -> Packed {
    // Free bits on axis `a`.
    let r = |a: usize| base - u8::from(part > a);
    c.cat(1);
    let Some(pl) = plane else {
        let mut q = corner;
        for a in 0..3 {
            let ra = r(a);
            let pa = lane(p, a);
            let raw_bits = ra.saturating_sub(PLAIN_MODELLED);
            for i in (raw_bits..ra).rev() {
                if c.fbit(&mut m.plain[a][i as usize], (pa >> i) & 1 == 1) {
                    q |= at(1 << i, a);
                }
            }
            q |= at(u64::from(c.raw(u32::from(pa), u32::from(raw_bits))), a);
        }
        return q;
    };
    let w = pl.axis;
    let (u, v) = tangents(w);
    let (ru, rv, rw) = (r(u), r(v), r(w));
    c.cat(2);
    let mu = (1u32 << ru) - 1;
    let tv = c.raw(
        (u32::from(lane(p, u)) & mu) | (u32::from(lane(p, v)) << ru),
        u32::from(ru + rv),
    );
    // Offsets of the tangent coordinates in the cell.
    let (ou, ov) = (tv & mu, (tv >> ru) & 0xFFFF);
    let q = corner | at(u64::from(ou), u) | at(u64::from(ov), v);
    if rw == 0 {
        return q;
    }
    let du = f64::from(ou) - pl.pu;
    let dv = f64::from(ov) - pl.pv;
    let rel = pl.pw + pl.bu * du + pl.bv * dv;
    let pred = (rel * 16.0) as i64;
    let hi = (1i64 << rw) - 1;
    let pi = (pred.saturating_add(8) >> 4).clamp(0, hi);
    let cw = lane(corner, w);
    let e = (i64::from(lane(p, w)) - i64::from(cw)) - pi;
    c.cat(8 + pl.sb);
    let frac = pred.saturating_sub(16 * pi);
    let val = code_residual5(c, m, ctx, frac < 0, pi, hi, e);
    // `val` is in 0..=hi: the corner's low `rw` bits are 0.
    q | at(val as u64, w)
}

/// State shared by the encoder's and the decoder's tree walk (as format 4;
/// the range coder is a separate local of the caller, so that its state can
/// live in registers).
struct Walk {
    m: Models,
    bits: u8,
    ev: u64,
    /// `ring[j % RING]`: the running sums after event `j` (`ring[ev %
    /// RING]` is the total; format 4 keeps a separate total, whose copy into
    /// the ring read it back wider than its fields had just been written).
    ring: [Sums; RING],
    entry: [u64; DEPTHS],
    anc: usize,
}

impl Walk {
    fn new(bits: u8) -> Self {
        Self::with(bits, Models::new())
    }

    #[inline(always)]
    fn with(bits: u8, m: Models) -> Self {
        Walk {
            m,
            bits,
            ev: 0,
            ring: [Sums::default(); RING],
            entry: [0; DEPTHS],
            anc: 0,
        }
    }

    #[inline(always)]
    fn push(&mut self, p: Packed, k: u64) {
        let mut s = self.ring[self.ev as usize % RING];
        s.add(unpack(p), k);
        self.ev = self.ev.wrapping_add(1);
        self.ring[self.ev as usize % RING] = s;
    }

    /// Codes the isolated point `p` of the node at depth `t`; returns it
    /// and adds it to the running sums (ancestor search as format 4).
    #[inline(always)]
    fn point<C: BitCoder>(&mut self, c: &mut C, t: u32, corner: Packed, p: Packed) -> Packed {
        let lvl = (t / 3) as u8;
        let part = (t % 3) as usize;
        let base = self.bits - lvl;
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
            let total = &self.ring[self.ev as usize % RING];
            let e = &self.ring[self.ev.wrapping_sub(m) as usize % RING];
            fit(&total.minus(e), unpack(corner))
        } else {
            None
        };
        // Free bits of the cell (its size), known before the fit.
        let rb = base.clamp(2, 7) as usize - 2;
        let ctx = 3 * rb;
        let q = code_point(c, &mut self.m, plane, corner, base, part, p, ctx);
        self.push(q, 1);
        q
    }
}

/// A node waiting to be coded: the upper child of a two-sided split.
/// 32 bytes: counts and offsets fit `u32` (at most [`super::MAX_POINTS`]
/// points).
#[derive(Clone, Copy, Default)]
struct Pending {
    corner: Packed,
    t: u32,
    lo: u32,
    n: u32,
    hist: u32,
    bit: u16,
    axis: u8,
}

/// Pushes the upper child of a two-sided split (`n` points from `lo`,
/// corner `corner`, depth `t`) onto the pending stack (at most one per
/// depth: a full stack, which a valid walk never has, drops it).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn push_upper(
    stack: &mut [Pending; DEPTHS],
    sp: &mut usize,
    corner: Packed,
    t: u32,
    lo: usize,
    n: usize,
    hist: u32,
    bit: u16,
    axis: usize,
) {
    if let Some(slot) = stack.get_mut(*sp) {
        *slot = Pending {
            corner,
            t,
            lo: lo as u32,
            n: n as u32,
            hist,
            bit,
            axis: axis as u8,
        };
        *sp += 1;
    }
}

/// The whole tree walk, depth first, lower child first (canonical order),
/// with an explicit stack of pending upper children (at most one per depth).
#[inline(always)]
fn walk<C: BitCoder, S: Side>(c: &mut C, w: &mut Walk, side: &mut S, total: usize) {
    let end = 3 * w.bits as u32;
    let mut stack = [Pending::default(); DEPTHS];
    let mut sp = 0usize;
    let (mut t, mut lo, mut n) = (0u32, 0usize, total);
    let mut corner: Packed = 0;
    let mut hist = 0u32;
    let mut axis = 0usize;
    let mut bit = 1u16 << (w.bits - 1);
    loop {
        if t >= end {
            side.put(lo, n, unpack(corner));
            w.push(corner, n as u64);
        } else if n == 1 {
            let q = w.point(c, t, corner, pack(side.get(lo)));
            side.put(lo, 1, unpack(q));
        } else if n <= 3 {
            // Two or three points: the depths on which all lie on the same
            // side and the split after them (one symbol, the sides raw).
            let (j, sides, k) = side.run(lo, n, t, end, axis, bit);
            c.cat(0);
            let h = hist_of(hist, axis);
            let (j, sides, k) = code_run(c, &mut w.m, axis, h, n, end - t, j, sides, k);
            for d in 0..j {
                w.entry[t as usize % DEPTHS] = w.ev;
                hist = set_hist(hist, axis, 1);
                corner |= at(((sides >> (d % 64)) & 1) * u64::from(bit), axis);
                t += 1;
                bit >>= u32::from(axis == 2);
                axis = next_axis(axis);
            }
            if t < end {
                w.entry[t as usize % DEPTHS] = w.ev;
                hist = set_hist(hist, axis, 2);
                let up = corner | at(u64::from(bit), axis);
                t += 1;
                bit >>= u32::from(axis == 2);
                axis = next_axis(axis);
                if n == 2 && t < end {
                    // A pair splits into two single points: code both
                    // here (lower first), without a trip through the
                    // dispatch and the stack (the upper one as if popped).
                    let q = w.point(c, t, corner, pack(side.get(lo)));
                    side.put(lo, 1, unpack(q));
                    w.anc = w.anc.min(t as usize);
                    let q = w.point(c, t, up, pack(side.get(lo + 1)));
                    side.put(lo + 1, 1, unpack(q));
                } else {
                    push_upper(&mut stack, &mut sp, up, t, lo + k, n - k, hist, bit, axis);
                    n = k;
                    continue;
                }
            } else {
                continue;
            }
        } else {
            w.entry[t as usize % DEPTHS] = w.ev;
            let k = side.lower(lo, n, axis, bit);
            c.cat(0);
            let k = code_split(c, &mut w.m, hist_of(hist, axis), n, k);
            t += 1;
            let (a, b) = (axis, bit);
            bit >>= u32::from(axis == 2);
            axis = next_axis(axis);
            if k == n {
                hist = set_hist(hist, a, 1);
            } else if k == 0 {
                hist = set_hist(hist, a, 1);
                corner |= at(u64::from(b), a);
            } else {
                hist = set_hist(hist, a, 2);
                let up = corner | at(u64::from(b), a);
                push_upper(&mut stack, &mut sp, up, t, lo + k, n - k, hist, bit, axis);
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

/// Test-only: encodes with the given initial count and residual models;
/// returns the stream length (`None` if it did not fit) and the symbols
/// coded per context.
#[cfg(test)]
pub(crate) fn encode_with_models(
    points: &[[u16; 3]],
    bits: u8,
    out: &mut [u8],
    small: &[Cdf; SMALL_SLOTS],
    res: &[Cdf; RES_SLOTS],
    big: &[Cdf; BIG_SLOTS],
    run: &[Cdf; RUN_SLOTS],
) -> (Option<usize>, Stats) {
    let mut c = Encoder::new(out);
    let mut m = Models::with(small, res);
    m.big = *big;
    m.run = *run;
    let mut w = Walk::with(bits, m);
    walk(&mut c, &mut w, &mut EncSide::new(points), points.len());
    (c.finish().ok(), w.m.stats)
}
