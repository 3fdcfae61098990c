//! What both tree coders (format 3, `code.rs`, and format 4, `fast.rs`)
//! code the same way, generic over their probability model: the count split
//! of a cell and the residual of an isolated point's normal coordinate.
//! Format 3 uses counter-based [`Prob`] models, format 4 fixed-rate [`Fp`]
//! ones; the decisions, their order and their contexts are the same, so both
//! bitstreams are unchanged by the sharing (golden-byte tests).

use super::rc::{BitCoder, Fp, Prob};

/// An adaptive binary model the range coder can code a decision with.
pub(crate) trait Model: Copy {
    /// A fresh model (probability 1/2).
    const NEW: Self;
    /// Codes `bit` with this model (the decoder ignores `bit` and returns
    /// the decoded one), then adapts the model.
    fn code<C: BitCoder>(&mut self, c: &mut C, bit: bool) -> bool;
}

impl Model for Prob {
    const NEW: Self = Prob::NEW;
    #[inline(always)]
    fn code<C: BitCoder>(&mut self, c: &mut C, bit: bool) -> bool {
        c.bit(self, bit)
    }
}

impl Model for Fp {
    const NEW: Self = Fp::NEW;
    #[inline(always)]
    fn code<C: BitCoder>(&mut self, c: &mut C, bit: bool) -> bool {
        c.fbit(self, bit)
    }
}

/// Count buckets of a splitting cell: 2, 3, 4..=7, 8+.
pub(crate) const NB: usize = 4;
/// Spread buckets of a plane fit (by residual variance, plus one for a fit
/// on few points).
pub(crate) const SB: usize = 6;
/// Buckets of the prediction's distance to its rounded value.
pub(crate) const ZB: usize = 3;
/// Elias-gamma class contexts of the normal residual.
pub(crate) const NC: usize = 6;

/// Count bucket of a cell of `n` points: 0 for n <= 2, 1 for 3, 2 for
/// 4..=7, 3 for 8+ (one table load).
#[inline(always)]
pub(crate) fn nbucket(n: usize) -> usize {
    const NBUCKET: [u8; 9] = [0, 0, 0, 1, 2, 2, 2, 2, 3];
    NBUCKET[n.min(8)] as usize
}

/// Contexts of the count split.
#[derive(Debug, Clone)]
pub(crate) struct CountModels<M> {
    one_sided: [[[[M; NB]; 9]; 3]; 3],
    side: [[[M; NB]; 3]; 3],
    interior: [[M; 8]; NB],
}

impl<M: Model> CountModels<M> {
    pub(crate) fn new() -> Self {
        CountModels {
            one_sided: [[[[M::NEW; NB]; 9]; 3]; 3],
            side: [[[M::NEW; NB]; 3]; 3],
            interior: [[M::NEW; 8]; NB],
        }
    }
}

/// Codes `k`, the number of the cell's `n >= 2` points in its lower half
/// along `axis` (0..3), given the split history `hist` of the path (per
/// axis: 0 none yet, 1 last split one-sided, 2 two-sided): a one-sided flag
/// (context: axis, history, count bucket), the side of a one-sided split,
/// else `k` in `1..n` by bisection. Returns `k` (decoded by the decoder).
#[inline(always)]
pub(crate) fn code_count<C: BitCoder, M: Model>(
    c: &mut C,
    m: &mut CountModels<M>,
    axis: usize,
    hist: [u8; 3],
    n: usize,
    k: usize,
) -> usize {
    const NEXT: [usize; 3] = [1, 2, 0];
    const PREV: [usize; 3] = [2, 0, 1];
    let axis = axis.min(2);
    let nb = nbucket(n);
    let ha = hist[axis] as usize;
    let ho = hist[NEXT[axis]] as usize * 3 + hist[PREV[axis]] as usize;
    let one = m.one_sided[axis][ha][ho][nb].code(c, k == 0 || k == n);
    if one {
        let upper = m.side[axis][ha][nb].code(c, k == 0);
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
        if m.interior[nb][depth.min(7)].code(c, k > mid) {
            a = mid + 1;
        } else {
            b = mid;
        }
        depth += 1;
    }
    a
}

/// Contexts of the normal residual.
#[derive(Debug, Clone)]
pub(crate) struct ResidualModels<M> {
    nzero: [[M; ZB]; SB],
    nsign: [[M; 3]; SB],
    nclass: [[M; NC]; SB],
}

impl<M: Model> ResidualModels<M> {
    pub(crate) fn new() -> Self {
        ResidualModels {
            nzero: [[M::NEW; ZB]; SB],
            nsign: [[M::NEW; 3]; SB],
            nclass: [[M::NEW; NC]; SB],
        }
    }
}

/// Codes the normal coordinate `pi + e` of an isolated point, where `pi`
/// in `lo..=hi` (`lo < hi`) is the rounded prediction, `frac` the
/// prediction minus `16 pi` in 1/16 grid units and `sb` the fit's spread
/// bucket: a zero flag (context: sb, |frac| bucket), the sign (context: sb,
/// sign of frac; forced at the edges of `lo..=hi`), then |e| >= 1 as Elias
/// gamma: the class floor(log2 |e|) in unary with modelled bits, capped by
/// the room left on that side, and the bits below the leading 1 raw.
/// Returns the (decoded) coordinate; a decoded value past the room marks
/// the stream invalid and is clamped.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn code_residual<C: BitCoder, M: Model>(
    c: &mut C,
    m: &mut ResidualModels<M>,
    sb: usize,
    frac: i64,
    pi: i64,
    lo: i64,
    hi: i64,
    e: i64,
) -> i64 {
    let zb = (frac.unsigned_abs() as usize / 3).min(ZB - 1);
    if m.nzero[sb][zb].code(c, e == 0) {
        return pi;
    }
    // Sign: forced at the cell's edges.
    let pos = if pi == lo {
        true
    } else if pi == hi {
        false
    } else {
        let sc = if frac > 0 {
            0
        } else if frac < 0 {
            1
        } else {
            2
        };
        m.nsign[sb][sc].code(c, e > 0)
    };
    let room = if pos { hi - pi } else { pi - lo } as u64; // >= 1
    let maxc = 63 - room.leading_zeros(); // largest class that fits
    let mag = e.unsigned_abs().max(1);
    let cls = 63 - mag.leading_zeros();
    let mut k = 0u32;
    while k < maxc {
        if !m.nclass[sb][(k as usize).min(NC - 1)].code(c, k < cls) {
            break;
        }
        k += 1;
    }
    let low = c.raw(mag as u32, k) as u64;
    let got = (1u64 << k) | low;
    if got > room {
        c.invalid();
    }
    let got = got.min(room) as i64;
    if pos {
        pi + got
    } else {
        pi - got
    }
}
