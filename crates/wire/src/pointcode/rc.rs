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
        let rate = RATES[self.n as usize];
        if (self.n as usize) < RATES.len() - 1 {
            self.n += 1;
        }
        let p = self.p0 as u32;
        let p = if bit {
            p - (p >> rate)
        } else {
            p + ((65535 - p) >> rate)
        };
        self.p0 = p as u16;
    }
}

/// Something that codes binary decisions: the encoder takes the bit and
/// returns it, the decoder ignores the argument and returns the decoded bit.
pub(crate) trait BitCoder {
    fn bit(&mut self, m: &mut Prob, bit: bool) -> bool;
}

/// Range encoder writing into a borrowed slice.
#[derive(Debug)]
pub(crate) struct Encoder<'a> {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: &'a mut [u8],
    pos: usize,
    /// First byte of the LZMA scheme is always 0 and is not written.
    first: bool,
    pub(crate) overflow: bool,
}

impl<'a> Encoder<'a> {
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        Encoder {
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            out,
            pos: 0,
            first: true,
            overflow: false,
        }
    }

    #[inline(always)]
    fn put(&mut self, b: u8) {
        if self.first {
            self.first = false;
            return;
        }
        if self.pos < self.out.len() {
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

    #[inline(always)]
    fn normalize(&mut self) {
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    /// Flushes the coder; returns the number of bytes written. The decoder
    /// reads exactly these bytes (4 initial bytes plus one per normalisation
    /// shift, the same shifts as the encoder's), so a valid stream is consumed
    /// exactly: nothing is trimmed, which lets the decoder reject truncated
    /// and over-long streams.
    pub(crate) fn finish(mut self) -> Result<usize, Error> {
        for _ in 0..5 {
            self.shift_low();
        }
        if self.overflow {
            return Err(Error::BufferTooSmall);
        }
        Ok(self.pos)
    }
}

impl BitCoder for Encoder<'_> {
    #[inline(always)]
    fn bit(&mut self, m: &mut Prob, bit: bool) -> bool {
        let bound = (self.range >> PROB_BITS) * m.p12();
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
}

/// Range decoder over a borrowed slice; reads zeros past the end and counts them.
#[derive(Debug)]
pub(crate) struct Decoder<'a> {
    code: u32,
    range: u32,
    input: &'a [u8],
    pos: usize,
    pub(crate) over: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        let mut d = Decoder {
            code: 0,
            range: u32::MAX,
            input,
            pos: 0,
            over: 0,
        };
        for _ in 0..4 {
            d.code = (d.code << 8) | d.next() as u32;
        }
        d
    }

    /// Whether the whole input was consumed exactly (no byte left, none read
    /// past the end).
    pub(crate) fn exact(&self) -> bool {
        self.over == 0 && self.pos == self.input.len()
    }

    #[inline(always)]
    fn next(&mut self) -> u8 {
        if let Some(&b) = self.input.get(self.pos) {
            self.pos += 1;
            b
        } else {
            self.over += 1;
            0
        }
    }

    #[inline(always)]
    fn normalize(&mut self) {
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | self.next() as u32;
        }
    }
}

impl BitCoder for Decoder<'_> {
    #[inline(always)]
    fn bit(&mut self, m: &mut Prob, _bit: bool) -> bool {
        let bound = (self.range >> PROB_BITS) * m.p12();
        let bit = self.code >= bound;
        if bit {
            self.code -= bound;
            self.range -= bound;
        } else {
            self.range = bound;
        }
        m.update(bit);
        self.normalize();
        bit
    }
}
