//! Binary adaptive range coder (LZMA-style carry-less byte output) and the
//! adaptive probability model used by the point coder.
//!
//! Everything is integer arithmetic, so encoder and decoder agree bit for bit on
//! every platform. No allocation: the encoder writes into a caller slice.

use crate::Error;

/// Probability precision used in the range multiply (bits).
const PROB_BITS: u32 = 12;
/// Normalisation threshold of the range.
const TOP: u32 = 1 << 24;

/// Adaptation shift per observation count: fast at first (about a KT estimate),
/// then settling at 6 (indexed by the saturating count).
const RATES: [u8; 40] = [
    1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    6, 6, 6, 6, 6, 6, 6, 6,
];

/// [`RATES`] widened to every `u8` index (entries past 39 repeat the last).
const RATE_OF: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = RATES[if i < RATES.len() { i } else { RATES.len() - 1 }];
        i += 1;
    }
    t
};

/// One adaptive binary context: probability of a 0 bit (16-bit) and a count of
/// observations (saturating) that selects the adaptation speed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prob {
    p0: u16,
    n: u8,
}

impl Prob {
    pub(crate) const NEW: Prob = Prob { p0: 1 << 15, n: 0 };

    #[inline(always)]
    fn p12(self) -> u32 {
        // 16-bit state -> 12-bit probability clamped to [1, 4095].
        let p = (self.p0 as u32) >> (16 - PROB_BITS);
        p.clamp(1, (1 << PROB_BITS) - 1)
    }

    #[inline(always)]
    fn update(&mut self, bit: bool) {
        // `n` never exceeds 39; indexing the 256-entry table needs no check.
        let rate = RATE_OF[self.n as usize] as u32;
        self.n += u8::from((self.n as usize) < RATES.len() - 1);
        let p = self.p0 as u32;
        // Branch-free: a 1 moves p toward 0, a 0 toward 65535.
        let up = p + ((65535 - p) >> rate);
        let down = p - (p >> rate);
        self.p0 = if bit { down } else { up } as u16;
    }
}

/// Adaptation shift of [`Fp`].
pub(crate) const FP_SHIFT: u32 = 4;

/// Fast adaptive binary model of format 4: the probability of a 0 bit in
/// 16 bits, moved by 1/16 of the distance toward the observed bit. Starting
/// at 32768 it stays within [15, 65521], so `(range >> 16) * p` lies strictly
/// inside (0, range) for every range >= 2^24: no clamp, no counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fp(pub(crate) u16);

impl Fp {
    pub(crate) const NEW: Fp = Fp(1 << 15);

    #[inline(always)]
    fn update(&mut self, bit: bool) {
        let p = self.0 as u32;
        let up = p + ((65536 - p) >> FP_SHIFT);
        let down = p - (p >> FP_SHIFT);
        self.0 = if bit { down } else { up } as u16;
    }
}

/// Symbols of a [`Cdf`] (format 5).
pub(crate) const NSYM: usize = 16;
/// Total of a [`Cdf`]: `2^CDF_BITS`.
pub(crate) const CDF_BITS: u32 = 15;
/// Smallest gap between neighbouring entries an adapted [`Cdf`] converges
/// to (the probability floor of a symbol, in 1/2^15).
const CDF_FLOOR: i16 = 4;
/// Adaptation shift of a [`Cdf`] by the number of symbols it coded
/// (saturating at the last entry): 3 for the first 4 symbols, 4 up to 16,
/// 5 up to 56, 6 up to 160, then 7.
const CDF_RATE: [u32; 256] = {
    let mut t = [7u32; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if i < 4 {
            3
        } else if i < 16 {
            4
        } else if i < 56 {
            5
        } else if i < 160 {
            6
        } else {
            7
        };
        i += 1;
    }
    t
};

/// `CDF_TARGET[s][i] = i * 4 + [i > s] * (2^15 - 64)`: what a [`Cdf`]
/// moves toward after coding symbol `s`.
const CDF_TARGET: [[i16; NSYM]; NSYM] = {
    let big = (1i32 << CDF_BITS) - NSYM as i32 * CDF_FLOOR as i32;
    let mut t = [[0i16; NSYM]; NSYM];
    let mut s = 0;
    while s < NSYM {
        let mut i = 0;
        while i < NSYM {
            t[s][i] = (i as i32 * CDF_FLOOR as i32 + if i > s { big } else { 0 }) as i16;
            i += 1;
        }
        s += 1;
    }
    t
};

/// Adaptive 16-symbol model of format 5: `0[i]` is the cumulative
/// frequency of the symbols below `i` (`0[0] = 0`, strictly increasing,
/// below the total 2^15, which symbol 15's interval ends at). After coding
/// symbol s every entry moves 1/16 of the way toward the target
/// `i * 4 + [i > s] * (2^15 - 64)`; both the entries and the target are
/// strictly increasing, so the entries stay strictly increasing (every
/// symbol keeps a non-zero interval) and below 2^15.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cdf(pub(crate) [i16; NSYM], u8);

impl Cdf {
    /// Uniform over the first `a` (1..=16) symbols; the others get the
    /// floor gap.
    pub(crate) const fn uniform(a: usize) -> Cdf {
        let mut c = [0i16; NSYM];
        let top = (1i32 << CDF_BITS) - (NSYM - a) as i32 * CDF_FLOOR as i32;
        let mut i = 0;
        while i < NSYM {
            c[i] = if i <= a {
                (i as i32 * top / a as i32) as i16
            } else {
                ((1i32 << CDF_BITS) - (NSYM - i) as i32 * CDF_FLOOR as i32) as i16
            };
            i += 1;
        }
        Cdf(c, 0)
    }

    /// The table `c` (entry 0 is 0, strictly increasing, below 2^15) as
    /// if it had already coded `n` symbols (`n` selects the adaptation
    /// shift, [`CDF_RATE`]).
    pub(crate) const fn with_count(c: [i16; NSYM], n: u8) -> Cdf {
        Cdf(c, n)
    }

    /// Test-only: the table closest to the weights `w` (non-negative, not
    /// all 0; every symbol keeps at least the floor gap), as if it had
    /// coded `n` symbols.
    #[cfg(test)]
    pub(crate) fn from_weights(w: &[f64; NSYM], n: u8) -> Cdf {
        let total = 1i32 << CDF_BITS;
        let sum: f64 = w.iter().sum();
        let mut c = [0i32; NSYM];
        let mut acc = 0.0;
        for i in 0..NSYM {
            c[i] = (acc * f64::from(total) / sum + 0.5) as i32;
            acc += w[i];
        }
        let floor = i32::from(CDF_FLOOR);
        for i in 1..NSYM {
            c[i] = c[i].max(c[i - 1] + floor);
        }
        c[NSYM - 1] = c[NSYM - 1].min(total - floor);
        for i in (1..NSYM - 1).rev() {
            c[i] = c[i].min(c[i + 1] - floor);
        }
        c[0] = 0;
        Cdf(c.map(|x| x as i16), n)
    }

    #[inline(always)]
    fn update(&mut self, s: usize) {
        // Lanes (vectorized): one target row per coded symbol.
        let t = &CDF_TARGET[s % NSYM];
        let sh = CDF_RATE[self.1 as usize % CDF_RATE.len()];
        self.1 += u8::from((self.1 as usize) < CDF_RATE.len() - 1);
        Self::step(&mut self.0, t, sh);
    }

    /// `c[i] += (t[i] - c[i]) >> sh` for the 16 lanes (`sh` in 3..=7; no
    /// overflow: both in 0..2^15): SSE2 on x86-64, where the auto-vectorized
    /// loop assembled the upper half lane by lane.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[allow(unsafe_code)]
    #[inline(always)]
    pub(crate) fn step(c: &mut [i16; NSYM], t: &[i16; NSYM], sh: u32) {
        use core::arch::x86_64::{
            __m128i, _mm_add_epi16, _mm_cvtsi32_si128, _mm_loadu_si128, _mm_sra_epi16,
            _mm_storeu_si128, _mm_sub_epi16,
        };
        let cp: *mut __m128i = c.as_mut_ptr().cast();
        let tp: *const __m128i = t.as_ptr().cast();
        // SAFETY: SSE2 is part of the x86-64 baseline; the unaligned 16-byte
        // loads and stores stay inside the two 32-byte tables.
        unsafe {
            let n = _mm_cvtsi32_si128(sh as i32);
            for h in 0..2 {
                let v = _mm_loadu_si128(cp.add(h));
                let d = _mm_sra_epi16(_mm_sub_epi16(_mm_loadu_si128(tp.add(h)), v), n);
                _mm_storeu_si128(cp.add(h), _mm_add_epi16(v, d));
            }
        }
    }

    /// [`Cdf::step`] on other targets (auto-vectorized).
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    #[inline(always)]
    pub(crate) fn step(c: &mut [i16; NSYM], t: &[i16; NSYM], sh: u32) {
        Self::step_portable(c, t, sh);
    }

    /// `c[i] += (t[i] - c[i]) >> sh` lane by lane: the definition of [`Cdf::step`], which
    /// the tests compare the SSE2 version with.
    #[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
    #[inline(always)]
    pub(crate) fn step_portable(c: &mut [i16; NSYM], t: &[i16; NSYM], sh: u32) {
        for (c, &t) in c.iter_mut().zip(t.iter()) {
            *c += (t - *c) >> sh;
        }
    }

    /// The largest `s` with entry `s <= q` (`q >= 0`; entry 0 is 0): the
    /// entries increase, so it is the number of entries `<= q`, minus 1.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[allow(unsafe_code)]
    #[inline(always)]
    pub(crate) fn search(&self, q: i16) -> usize {
        // SSE2 (baseline on x86-64): compare the 16 lanes with `q`, pack
        // the lane masks to bytes and take the first lane above `q` from
        // the byte mask (the entries increase, so the lanes `<= q` are a
        // prefix; entry 0 is 0, so it is at least 1). Same result as the
        // portable sum below, fewer instructions than its horizontal add.
        use core::arch::x86_64::{
            __m128i, _mm_cmpgt_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
            _mm_set1_epi16,
        };
        let c: *const __m128i = self.0.as_ptr().cast();
        // SAFETY: SSE2 is part of the x86-64 baseline (every x86-64 CPU has
        // it); the two unaligned 16-byte loads read the 32-byte table.
        let mask = unsafe {
            let lo = _mm_loadu_si128(c);
            let hi = _mm_loadu_si128(c.add(1));
            let qv = _mm_set1_epi16(q);
            let above = _mm_packs_epi16(_mm_cmpgt_epi16(lo, qv), _mm_cmpgt_epi16(hi, qv));
            _mm_movemask_epi8(above) as u32 | 1 << NSYM
        };
        (mask.trailing_zeros() as usize).wrapping_sub(1) % NSYM
    }

    /// [`Cdf::search`] on targets other than x86-64.
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    #[inline(always)]
    pub(crate) fn search(&self, q: i16) -> usize {
        self.search_portable(q)
    }

    /// The largest `s` with entry `s <= q` (`q >= 0`; entry 0 is 0): the
    /// entries increase, so it is the number of entries `<= q`, minus 1.
    #[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
    #[inline(always)]
    pub(crate) fn search_portable(&self, q: i16) -> usize {
        // `(q - c) >> 15` is -1 iff c > q (no overflow: both in 0..2^15);
        // lanes summed in i16 (vectorized).
        let mut above = 0i16;
        for &c in &self.0 {
            above += (q - c) >> 15;
        }
        (NSYM as i16 - 1 + above) as usize % NSYM
    }

    /// Interval `[lo, hi)` of symbol `s` in a range of `range` with unit
    /// `r = range >> 15` (symbol 15 takes the rest of the range).
    #[inline(always)]
    fn interval(&self, s: usize, r: u32, range: u32) -> (u32, u32) {
        let lo = r * self.0[s % NSYM] as u32;
        let hi = if s + 1 < NSYM {
            r * self.0[(s + 1) % NSYM] as u32
        } else {
            range
        };
        (lo, hi)
    }
}

/// Something that codes binary decisions: the encoder takes the bit and
/// returns it, the decoder ignores the argument and returns the decoded bit.
pub(crate) trait BitCoder {
    fn bit(&mut self, m: &mut Prob, bit: bool) -> bool;
    /// Codes one decision with a [`Fp`] model (format 4).
    fn fbit(&mut self, m: &mut Fp, bit: bool) -> bool;
    /// Codes symbol `s` (0..16) with a [`Cdf`] (format 5); the decoder
    /// ignores `s` and returns the decoded symbol.
    fn sym(&mut self, m: &mut Cdf, s: usize) -> usize;
    /// Codes the low `k` (0..=32) bits of `v` as raw (equiprobable) bits in
    /// the separate raw section, least significant first; returns them.
    fn raw(&mut self, v: u32, k: u32) -> u32;
    /// Marks the stream invalid (the decoder met a value no encoder writes).
    fn invalid(&mut self) {}
    /// Whether the encoder's output is full (the decoder: never).
    fn full(&self) -> bool {
        false
    }
    /// Test-only cost accounting: the category of the following decisions.
    #[inline(always)]
    fn cat(&mut self, _c: usize) {}
}

/// Range encoder writing into a borrowed slice.
///
/// Same bytes as the LZMA scheme (a cache byte plus a count of pending
/// 0xFF bytes, delayed until no carry can reach them), but each byte is
/// written as soon as it leaves the 32-bit window of `low`, and a carry
/// (bit 32 of `low`) is added to the bytes already written: to the last one,
/// and past it only through 0xFF bytes (1 carry in about 256). So a
/// symbol's normalisation (0, 1 or 2 bytes) and the raw-bit output are
/// branch-free stores: their loops were the encoder's most mispredicted
/// branches (about 2 per point, bench/pointcode/RESULTS.md, session 10).
#[derive(Debug)]
pub(crate) struct Encoder<'a> {
    /// Bits 0..32: the low end of the interval below the written bytes;
    /// bit 32: a carry not yet added to them.
    low: u64,
    range: u32,
    out: &'a mut [u8],
    pos: usize,
    pub(crate) overflow: bool,
    /// Raw-bit accumulator (LSB first) and its number of pending bits.
    acc: u64,
    nacc: u32,
    /// Raw bytes written so far, stored backwards from the end of `out`.
    nraw: usize,
    /// Test-only accounting: ideal cost in bits per category (`cat`).
    #[cfg(test)]
    pub(crate) cost: [f64; 32],
    #[cfg(test)]
    pub(crate) cat: usize,
    /// Test-only: carries that went through a 0xFF byte.
    #[cfg(test)]
    through: u64,
}

/// log2 for the test-only cost accounting (no `std` float functions here).
#[cfg(test)]
pub(crate) fn log2(x: f64) -> f64 {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let ln = 2.0 * t * (1.0 + t2 * (1.0 / 3.0 + t2 * (0.2 + t2 * (1.0 / 7.0 + t2 / 9.0))));
    e as f64 + ln / core::f64::consts::LN_2
}

impl<'a> Encoder<'a> {
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        Encoder {
            low: 0,
            range: u32::MAX,
            out,
            pos: 0,
            overflow: false,
            acc: 0,
            nacc: 0,
            nraw: 0,
            #[cfg(test)]
            cost: [0.0; 32],
            #[cfg(test)]
            cat: 0,
            #[cfg(test)]
            through: 0,
        }
    }

    #[inline(always)]
    fn put_raw(&mut self, b: u8) {
        if self.pos + self.nraw < self.out.len() {
            let at = self.out.len() - 1 - self.nraw;
            self.out[at] = b;
            self.nraw += 1;
        } else {
            self.overflow = true;
        }
    }

    #[inline(always)]
    fn put(&mut self, b: u8) {
        if self.pos + self.nraw < self.out.len() {
            self.out[self.pos] = b;
            self.pos += 1;
        } else {
            self.overflow = true;
        }
    }

    /// Adds the carry (bit 32 of `low`) to the bytes written so far and
    /// clears it. `low + range` never exceeds 2^33 (LZMA's invariant), so
    /// the carry is 0 or 1, and the coded value stays below 1: no carry
    /// reaches past the first byte (none comes before it).
    #[inline(always)]
    fn carry(&mut self) {
        let c = (self.low >> 32) as u8;
        self.low &= 0xFFFF_FFFF;
        if let Some(i) = self.pos.checked_sub(1) {
            let b = self.out[i];
            if (b == 0xFF) & (c != 0) {
                self.carry_through(i);
            } else {
                self.out[i] = b.wrapping_add(c);
            }
        }
    }

    /// A carry into byte `i`, which is 0xFF: it and the 0xFF bytes before it
    /// wrap to 0, the byte before them takes the carry.
    #[cold]
    fn carry_through(&mut self, mut i: usize) {
        #[cfg(test)]
        {
            self.through += 1;
        }
        loop {
            let b = self.out[i];
            self.out[i] = b.wrapping_add(1);
            if b != 0xFF || i == 0 {
                return;
            }
            i -= 1;
        }
    }

    /// Moves the top byte of the 32-bit window out to the output.
    #[inline(always)]
    fn shift_low(&mut self) {
        self.carry();
        self.put((self.low >> 24) as u8);
        self.low = (self.low << 8) & 0xFFFF_FFFF;
    }

    #[inline(always)]
    fn normalize(&mut self) {
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    /// [`Encoder::normalize`] after a [`Cdf`] symbol: as the decoder's
    /// `normalize_symbol`, at most two bytes are due (the symbol left at
    /// least `range >> 15 >= 2^9`), counted and stored without a branch.
    #[inline(always)]
    fn normalize_symbol(&mut self) {
        let n = u32::from(self.range < TOP) + u32::from(self.range < 1 << 16);
        self.carry();
        let pos = self.pos;
        // Both candidate bytes are stored; `pos` moves past the `n` due.
        // Room for both: the store stays out of the raw bytes at the end.
        if pos + 2 + self.nraw <= self.out.len() {
            let w = ((self.low >> 16) as u16).to_be_bytes();
            self.out[pos..pos + 2].copy_from_slice(&w);
            self.pos = pos + n as usize;
        } else {
            for i in 0..n {
                self.put((self.low >> (24 - 8 * i)) as u8);
            }
        }
        let sh = 8 * n;
        self.low = (self.low << sh) & 0xFFFF_FFFF;
        self.range <<= sh;
        debug_assert!(self.range >= TOP);
    }

    /// Flushes the coder; returns the number of bytes written. The decoder
    /// reads exactly these bytes (4 initial bytes plus one per normalisation
    /// shift, the same shifts as the encoder's), so a valid stream is consumed
    /// exactly: nothing is trimmed, which lets the decoder reject truncated
    /// and over-long streams.
    ///
    /// The raw bytes, buffered backwards from the end of `out`, are moved in
    /// production order right after the range-coder bytes.
    pub(crate) fn finish(mut self) -> Result<usize, Error> {
        // The 4 bytes of the window (LZMA: 5 shifts, the first of which
        // writes its initial cache byte, always 0, which is not stored).
        for _ in 0..4 {
            self.shift_low();
        }
        if self.nacc > 0 {
            let b = self.acc as u8;
            self.put_raw(b);
        }
        if self.overflow {
            return Err(Error::BufferTooSmall);
        }
        // Body: LEB128 length of the range-coder section, that section, then
        // the raw bytes in the order they were produced.
        let mut leb = [0u8; 5];
        let mut l = 0;
        let mut v = self.pos as u32;
        loop {
            let b = (v & 0x7F) as u8;
            v >>= 7;
            if v == 0 {
                leb[l] = b;
                l += 1;
                break;
            }
            leb[l] = b | 0x80;
            l += 1;
        }
        let len = self.out.len();
        let (pos, nraw) = (self.pos, self.nraw);
        if l + pos + nraw > len {
            return Err(Error::BufferTooSmall);
        }
        self.out.copy_within(0..pos, l);
        self.out[..l].copy_from_slice(&leb[..l]);
        self.out[len - nraw..].reverse();
        self.out.copy_within(len - nraw..len, l + pos);
        Ok(l + pos + nraw)
    }
}

impl BitCoder for Encoder<'_> {
    #[inline(always)]
    fn full(&self) -> bool {
        self.overflow
    }

    #[cfg(test)]
    fn cat(&mut self, c: usize) {
        self.cat = c;
    }

    #[inline(always)]
    fn bit(&mut self, m: &mut Prob, bit: bool) -> bool {
        let bound = (self.range >> PROB_BITS) * m.p12();
        #[cfg(test)]
        {
            let p0 = m.p12() as f64 / 4096.0;
            self.cost[self.cat] -= log2(if bit { 1.0 - p0 } else { p0 });
            self.cost[(16 + self.cat) % 32] += 1.0;
        }
        let mask = 0u32.wrapping_sub(u32::from(bit));
        self.low += (bound & mask) as u64;
        self.range = (bound & !mask) | ((self.range - bound) & mask);
        m.update(bit);
        self.normalize();
        bit
    }

    #[inline(always)]
    fn fbit(&mut self, m: &mut Fp, bit: bool) -> bool {
        let bound = (self.range >> 16) * m.0 as u32;
        #[cfg(test)]
        {
            let p0 = m.0 as f64 / 65536.0;
            self.cost[self.cat] -= log2(if bit { 1.0 - p0 } else { p0 });
            self.cost[(16 + self.cat) % 32] += 1.0;
        }
        if bit {
            self.low += bound as u64;
            self.range -= bound;
        } else {
            self.range = bound;
        }
        m.update(bit);
        self.normalize();
        bit
    }

    #[inline(always)]
    fn sym(&mut self, m: &mut Cdf, s: usize) -> usize {
        let s = s % NSYM;
        let (lo, hi) = m.interval(s, self.range >> CDF_BITS, self.range);
        #[cfg(test)]
        {
            let p = f64::from(hi - lo) / f64::from(self.range);
            self.cost[self.cat] -= log2(p);
            self.cost[(16 + self.cat) % 32] += 1.0;
        }
        self.low += lo as u64;
        self.range = hi - lo;
        m.update(s);
        self.normalize_symbol();
        s
    }

    #[inline(always)]
    fn raw(&mut self, v: u32, k: u32) -> u32 {
        // At most 7 pending bits + 32 fit the 64-bit accumulator.
        let v = v & ((1u64 << k) - 1) as u32;
        #[cfg(test)]
        {
            self.cost[self.cat] += k as f64;
        }
        self.acc |= (v as u64) << self.nacc;
        self.nacc += k;
        // The complete bytes (0..=4 of at most 39 bits), stored without a
        // loop: the 4 low bytes of the accumulator go backwards below the
        // raw bytes written so far (first byte highest), if they stay clear
        // of the range-coder bytes; the next call overwrites those not due.
        let len = self.out.len();
        if self.pos + self.nraw + 4 <= len {
            let at = len - self.nraw - 4;
            self.out[at..at + 4].copy_from_slice(&(self.acc as u32).to_be_bytes());
            let m = self.nacc / 8;
            self.nraw += m as usize;
            self.acc >>= 8 * m;
            self.nacc -= 8 * m;
        } else {
            while self.nacc >= 8 {
                let b = self.acc as u8;
                self.put_raw(b);
                self.acc >>= 8;
                self.nacc -= 8;
            }
        }
        v
    }
}

/// Range decoder over a borrowed slice; reads zeros past the end and counts them.
#[derive(Debug)]
pub(crate) struct Decoder<'a> {
    code: u32,
    range: u32,
    input: &'a [u8],
    pos: usize,
    /// Raw section, read forwards.
    raw: &'a [u8],
    /// Raw bits consumed so far.
    rbit: u64,
    /// Set when a decoded value is impossible (see [`BitCoder::invalid`]).
    pub(crate) bad: bool,
}

impl<'a> Decoder<'a> {
    /// Splits the body into its range-coder and raw sections (LEB128 length
    /// of the former first) and primes the range decoder.
    pub(crate) fn new(body: &'a [u8]) -> Result<Self, Error> {
        let mut n: u64 = 0;
        let mut l = 0usize;
        loop {
            let byte = *body.get(l).ok_or(Error::Truncated)?;
            n |= ((byte & 0x7F) as u64) << (7 * l);
            l += 1;
            if byte & 0x80 == 0 {
                if l > 1 && byte == 0 {
                    return Err(Error::Malformed);
                }
                break;
            }
            if l == 5 {
                return Err(Error::Malformed);
            }
        }
        let rest = &body[l..];
        if n > rest.len() as u64 {
            return Err(Error::Truncated);
        }
        let (input, raw) = rest.split_at(n as usize);
        let mut d = Decoder {
            code: 0,
            range: u32::MAX,
            input,
            pos: 0,
            raw,
            rbit: 0,
            bad: false,
        };
        for _ in 0..4 {
            d.code = (d.code << 8) | d.next() as u32;
        }
        Ok(d)
    }

    /// Raw bytes the consumed raw bits occupy.
    fn raw_used(&self) -> u64 {
        self.rbit.div_ceil(8)
    }

    /// Decodes one binary decision whose 0-interval is `[0, bound)`: narrows the range to
    /// the decoded side, branch-free (the decoded bit is unpredictable).
    #[inline(always)]
    fn split(&mut self, bound: u32) -> bool {
        let bit = self.code >= bound;
        let mask = 0u32.wrapping_sub(u32::from(bit));
        self.code -= bound & mask;
        self.range = (bound & !mask) | ((self.range - bound) & mask);
        bit
    }

    /// The verdict on a stream after its last symbol: a valid stream is consumed exactly
    /// (see `Encoder::finish`); reading past the end is `Truncated`, anything else off
    /// (leftover bytes, non-zero padding, an impossible symbol) `Malformed`.
    pub(crate) fn finish(&self) -> Result<(), Error> {
        if self.overrun() {
            return Err(Error::Truncated);
        }
        if self.bad || !self.exact() {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Whether a byte past the end of either section was needed.
    pub(crate) fn overrun(&self) -> bool {
        self.pos > self.input.len() || self.raw_used() > self.raw.len() as u64
    }

    /// Whether both sections were consumed exactly (no byte left, none read
    /// past the end) and the padding bits of the last raw byte are 0.
    pub(crate) fn exact(&self) -> bool {
        let pad_zero = match self.raw.last() {
            Some(&b) if self.rbit % 8 != 0 => b >> (self.rbit % 8) == 0,
            _ => true,
        };
        !self.overrun()
            && self.pos == self.input.len()
            && self.raw_used() == self.raw.len() as u64
            && pad_zero
    }

    /// The next byte (0 past the end; `pos` keeps counting, so an
    /// over-read shows as `pos > input.len()`).
    #[inline(always)]
    fn next(&mut self) -> u8 {
        let b = self.input.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// Shifts in bytes until `range >= 2^24` (as the encoder's
    /// `normalize`), one at a time: after a binary decision (formats 3
    /// and 4), where a byte is due about once in eight decisions.
    #[inline(always)]
    fn normalize(&mut self) {
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | self.next() as u32;
        }
    }

    /// [`Decoder::normalize`] after a [`Cdf`] symbol (format 5): it leaves
    /// at least `range >> 15 >= 2^9` of the range (every symbol's interval
    /// is at least `range >> 15` wide), so at most two bytes come in, and
    /// both counts are taken without a branch: whether a byte is due after
    /// a symbol is as random as the decoded data, and the loop's exit was
    /// format 5's most mispredicted branch (about one per point;
    /// bench/pointcode/RESULTS.md, session 9). The loop after it never runs
    /// for a range left by a symbol.
    #[inline(always)]
    fn normalize_symbol(&mut self) {
        let n = u32::from(self.range < TOP) + u32::from(self.range < 1 << 16);
        let b0 = u32::from(self.input.get(self.pos).copied().unwrap_or(0));
        let b1 = u32::from(self.input.get(self.pos + 1).copied().unwrap_or(0));
        let sh = 8 * n;
        // n = 0: nothing; 1: b0; 2: b0 then b1.
        let bytes = (b0 << 8 | b1) >> (16 - sh);
        self.code = ((u64::from(self.code) << sh) as u32) | bytes;
        self.range = (u64::from(self.range) << sh) as u32;
        self.pos += n as usize;
        self.normalize();
    }
}

impl BitCoder for Decoder<'_> {
    fn invalid(&mut self) {
        self.bad = true;
    }

    #[inline(always)]
    fn bit(&mut self, m: &mut Prob, _bit: bool) -> bool {
        let bit = self.split((self.range >> PROB_BITS) * m.p12());
        m.update(bit);
        self.normalize();
        bit
    }

    #[inline(always)]
    fn fbit(&mut self, m: &mut Fp, _bit: bool) -> bool {
        let bit = self.split((self.range >> 16) * m.0 as u32);
        m.update(bit);
        self.normalize();
        bit
    }

    #[inline(always)]
    fn sym(&mut self, m: &mut Cdf, _s: usize) -> usize {
        let r = self.range >> CDF_BITS; // >= 2^9: range >= 2^24
                                        // Largest s with r * cdf[s] <= code: the entries <= code / r
                                        // (cdf[0] = 0 always counts). code / r <= 2^15 + 2^6 for a valid
                                        // state; clamped, a corrupt state (code >= range) decodes as 15.
        let q = (self.code / r).min(i16::MAX as u32) as i16;
        let s = m.search(q);
        let (lo, hi) = m.interval(s, r, self.range);
        self.code -= lo;
        self.range = hi - lo;
        m.update(s);
        self.normalize_symbol();
        s
    }

    #[inline(always)]
    fn raw(&mut self, _v: u32, k: u32) -> u32 {
        // Position-based reader: one 8-byte little-endian load at the byte
        // holding the next bit (zeros past the end; over-reads are detected
        // from `rbit` afterwards), no refill loop.
        // The fast path is one 8-byte load; the word is built as a `u64` on
        // both paths (an `[u8; 8]` shared by both was assembled byte by
        // byte on the fast path too: 25 instructions instead of 1).
        let i = (self.rbit >> 3) as usize;
        let word = match self.raw.get(i..i.saturating_add(8)) {
            Some(b) => b.try_into().map(u64::from_le_bytes).unwrap_or(0),
            None => {
                let mut w = 0u64;
                for j in 0..8 {
                    w |= u64::from(self.raw.get(i + j).copied().unwrap_or(0)) << (8 * j);
                }
                w
            }
        } >> (self.rbit & 7);
        self.rbit += u64::from(k);
        (word & ((1u64 << k) - 1)) as u32
    }
}

#[cfg(test)]
mod normalize_tests {
    use super::{Decoder, TOP};

    /// The branch-free `Decoder::normalize_symbol` shifts in the same bytes as
    /// the byte-by-byte loop it replaced, for every range a coding step
    /// can leave (at least 2^9) and for streams ending at every position.
    #[test]
    fn normalize_matches_the_byte_loop() {
        let body: [u8; 12] = [
            9, 1, 0x80, 0xFF, 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0,
        ];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for range in (9..31)
            .flat_map(|b| [1u32 << b, (1u32 << b) + 1, (1u32 << (b + 1)) - 1])
            .chain([u32::MAX, TOP - 1, TOP])
        {
            for pos in 0..12 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let code = (x >> 32) as u32 % range;
                let mut d = Decoder::new(&body).expect("length byte");
                d.pos = pos;
                d.range = range;
                d.code = code;
                let (mut r, mut c, mut p) = (range, code, pos);
                while r < TOP {
                    r <<= 8;
                    c = (c << 8) | u32::from(d.input.get(p).copied().unwrap_or(0));
                    p += 1;
                }
                d.normalize_symbol();
                assert_eq!(
                    (d.range, d.code, d.pos),
                    (r, c, p),
                    "range {range:#x} pos {pos}"
                );
            }
        }
    }
}

#[cfg(test)]
mod encoder_tests {
    use super::{BitCoder, Cdf, Encoder, Fp, Prob, CDF_BITS, TOP};
    use crate::Error;

    /// The LZMA-style encoder the direct-carry [`Encoder`] replaced (session
    /// 9): a cache byte and a count of pending 0xFF bytes, written once no
    /// carry can reach them; raw bits byte by byte. Same interval
    /// arithmetic, so the streams must be identical.
    struct Lzma<'a> {
        low: u64,
        range: u32,
        cache: u8,
        cache_size: u64,
        out: &'a mut [u8],
        pos: usize,
        first: bool,
        overflow: bool,
        acc: u64,
        nacc: u32,
        nraw: usize,
    }

    impl<'a> Lzma<'a> {
        fn new(out: &'a mut [u8]) -> Self {
            Lzma {
                low: 0,
                range: u32::MAX,
                cache: 0,
                cache_size: 1,
                out,
                pos: 0,
                first: true,
                overflow: false,
                acc: 0,
                nacc: 0,
                nraw: 0,
            }
        }
        fn put_raw(&mut self, b: u8) {
            if self.pos + self.nraw < self.out.len() {
                let at = self.out.len() - 1 - self.nraw;
                self.out[at] = b;
                self.nraw += 1;
            } else {
                self.overflow = true;
            }
        }
        fn put(&mut self, b: u8) {
            if self.first {
                self.first = false;
                return;
            }
            if self.pos + self.nraw < self.out.len() {
                self.out[self.pos] = b;
                self.pos += 1;
            } else {
                self.overflow = true;
            }
        }
        fn shift_low(&mut self) {
            if (self.low as u32) < 0xFF00_0000 || (self.low >> 32) != 0 {
                let carry = (self.low >> 32) as u8;
                let mut temp = self.cache;
                loop {
                    self.put(temp.wrapping_add(carry));
                    temp = 0xFF;
                    self.cache_size -= 1;
                    if self.cache_size == 0 {
                        break;
                    }
                }
                self.cache = (self.low >> 24) as u8;
            }
            self.cache_size += 1;
            self.low = (self.low & 0x00FF_FFFF) << 8;
        }
        fn normalize(&mut self) {
            while self.range < TOP {
                self.range <<= 8;
                self.shift_low();
            }
        }
        fn sym(&mut self, m: &mut Cdf, s: usize) {
            let (lo, hi) = m.interval(s, self.range >> CDF_BITS, self.range);
            self.low += lo as u64;
            self.range = hi - lo;
            m.update(s);
            self.normalize();
        }
        fn fbit(&mut self, m: &mut Fp, bit: bool) {
            let bound = (self.range >> 16) * m.0 as u32;
            if bit {
                self.low += bound as u64;
                self.range -= bound;
            } else {
                self.range = bound;
            }
            m.update(bit);
            self.normalize();
        }
        fn bit(&mut self, m: &mut Prob, bit: bool) {
            let bound = (self.range >> super::PROB_BITS) * m.p12();
            if bit {
                self.low += bound as u64;
                self.range -= bound;
            } else {
                self.range = bound;
            }
            m.update(bit);
            self.normalize();
        }
        fn raw(&mut self, v: u32, k: u32) {
            let v = v & ((1u64 << k) - 1) as u32;
            self.acc |= (v as u64) << self.nacc;
            self.nacc += k;
            while self.nacc >= 8 {
                let b = self.acc as u8;
                self.put_raw(b);
                self.acc >>= 8;
                self.nacc -= 8;
            }
        }
        fn finish(mut self) -> Result<usize, Error> {
            for _ in 0..5 {
                self.shift_low();
            }
            if self.nacc > 0 {
                let b = self.acc as u8;
                self.put_raw(b);
            }
            if self.overflow {
                return Err(Error::BufferTooSmall);
            }
            let mut leb = [0u8; 5];
            let mut l = 0;
            let mut v = self.pos as u32;
            loop {
                let b = (v & 0x7F) as u8;
                v >>= 7;
                if v == 0 {
                    leb[l] = b;
                    l += 1;
                    break;
                }
                leb[l] = b | 0x80;
                l += 1;
            }
            let len = self.out.len();
            let (pos, nraw) = (self.pos, self.nraw);
            if l + pos + nraw > len {
                return Err(Error::BufferTooSmall);
            }
            self.out.copy_within(0..pos, l);
            self.out[..l].copy_from_slice(&leb[..l]);
            self.out[len - nraw..].reverse();
            self.out.copy_within(len - nraw..len, l + pos);
            Ok(l + pos + nraw)
        }
    }

    /// An encoder's verdict and its buffer.
    type Coded = (Result<usize, Error>, Vec<u8>);

    /// One pseudo-random stream of symbols (skewed models, so that long
    /// runs of 0xFF bytes and carries into them occur), binary decisions
    /// and raw bits, coded by both encoders into buffers of `cap` bytes;
    /// returns the results and the bytes.
    fn both(seed: u64, ops: usize, cap: usize) -> (Coded, Coded, u64) {
        let mut x = seed;
        let mut rnd = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        let mut a = vec![0u8; cap];
        let mut b = vec![0u8; cap];
        let mut e = Encoder::new(&mut a);
        let mut r = Lzma::new(&mut b);
        let (mut ce, mut cr) = ([Cdf::uniform(16); 4], [Cdf::uniform(16); 4]);
        let (mut fe, mut fr) = (Fp::NEW, Fp::NEW);
        let (mut pe, mut pr) = (Prob::NEW, Prob::NEW);
        for _ in 0..ops {
            let v = rnd();
            match v % 8 {
                0..=3 => {
                    // Mostly symbol 15 of a table that learns it: the
                    // interval sits at the top of the range (carries).
                    let i = (v >> 3) as usize % 4;
                    let s = if (v >> 5) % 16 == 0 {
                        (v >> 9) as usize % 16
                    } else {
                        15
                    };
                    e.sym(&mut ce[i], s);
                    r.sym(&mut cr[i], s);
                }
                4 | 5 => {
                    let bit = (v >> 3) % 8 != 0;
                    e.fbit(&mut fe, bit);
                    r.fbit(&mut fr, bit);
                }
                6 => {
                    let bit = (v >> 3) % 3 == 0;
                    e.bit(&mut pe, bit);
                    r.bit(&mut pr, bit);
                }
                _ => {
                    let k = (v >> 3) as u32 % 33;
                    let w = rnd() as u32 ^ (rnd() as u32) << 16;
                    e.raw(w, k);
                    r.raw(w, k);
                }
            }
        }
        let through = e.through;
        let (ra, rb) = (e.finish(), r.finish());
        ((ra, a), (rb, b), through)
    }

    /// The direct-carry encoder writes the LZMA encoder's bytes, carries
    /// through runs of 0xFF bytes included, and fills up (BufferTooSmall)
    /// at the same buffer sizes.
    #[test]
    fn encoder_matches_lzma_reference() {
        let mut through = 0;
        for seed in 0..40u64 {
            let ((ra, a), (rb, b), t) = both(seed, 20_000, 1 << 16);
            through += t;
            let len = ra.expect("fits");
            assert_eq!(Ok(len), rb, "seed {seed}");
            assert_eq!(a[..len], b[..len], "seed {seed}");
            // Buffers around the needed size: same verdict, same bytes.
            for cap in (len.saturating_sub(12)..len + 12).chain([0, 1, 5, len / 2]) {
                let ((ra, a), (rb, b), _) = both(seed, 20_000, cap);
                assert_eq!(ra, rb, "seed {seed} cap {cap}");
                if let Ok(l) = ra {
                    assert_eq!(a[..l], b[..l], "seed {seed} cap {cap}");
                }
            }
        }
        assert!(through > 0, "no carry through a 0xFF byte was exercised");
    }
}
