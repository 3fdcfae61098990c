//! Serial framing: `0x00 || COBS(body) || 0x00`, body = `payload || CRC-32(payload) LE`.
//!
//! The leading `0x00` is an empty frame that readers ignore; it makes sure a
//! single corrupted, dropped or inserted byte costs at most the one frame it
//! hit, even when it hits a delimiter. With a pre-shared key
//! ([`encode_frame_auth`], [`FrameReader::with_key`]) the body is
//! `seq u32 LE || payload || tag[16] || CRC-32 LE` (see SPEC.md).

use crate::auth::{Key, ReplayVerdict, ReplayWindow, DOMAIN_SERIAL, TAG_LEN};
use crate::{crc32, Error};

/// Bytes of CRC after the payload.
pub const CRC_LEN: usize = 4;
/// Bytes of sequence number before the payload of an authenticated frame.
pub const SEQ_LEN: usize = 4;

/// Worst-case bytes [`encode_frame`] writes for a payload of `payload_len`
/// bytes (leading delimiter, COBS overhead, CRC, trailing delimiter).
pub const fn max_encoded_len(payload_len: usize) -> usize {
    cobs_max(payload_len + CRC_LEN) + 2
}

/// Worst-case bytes [`encode_frame_auth`] writes for a payload of `payload_len`.
pub const fn max_encoded_len_auth(payload_len: usize) -> usize {
    max_encoded_len(payload_len + SEQ_LEN + TAG_LEN)
}

const fn cobs_max(len: usize) -> usize {
    len + len / 254 + 1
}

/// Streaming COBS encoder into a caller buffer; every write is bounds checked.
struct CobsWriter<'o> {
    out: &'o mut [u8],
    pos: usize,
    code_idx: usize,
    code: u8,
}

impl<'o> CobsWriter<'o> {
    fn new(out: &'o mut [u8], start: usize) -> Result<Self, Error> {
        if start >= out.len() {
            return Err(Error::BufferTooSmall);
        }
        Ok(CobsWriter {
            out,
            pos: start + 1,
            code_idx: start,
            code: 1,
        })
    }

    fn put(&mut self, idx: usize, b: u8) -> Result<(), Error> {
        *self.out.get_mut(idx).ok_or(Error::BufferTooSmall)? = b;
        Ok(())
    }

    fn close_block(&mut self) -> Result<(), Error> {
        self.put(self.code_idx, self.code)?;
        self.code_idx = self.pos;
        self.pos += 1;
        self.code = 1;
        Ok(())
    }

    fn extend(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        while !bytes.is_empty() {
            // Data bytes the current block can still take (code starts at 1).
            let room = usize::from(0xFF - self.code);
            let chunk = &bytes[..bytes.len().min(room)];
            let zero = chunk.iter().position(|&b| b == 0);
            let n = zero.unwrap_or(chunk.len());
            self.out
                .get_mut(self.pos..self.pos + n)
                .ok_or(Error::BufferTooSmall)?
                .copy_from_slice(&chunk[..n]);
            self.pos += n;
            // n <= room <= 254, so the code stays <= 0xFF.
            self.code += n as u8;
            if zero.is_some() {
                self.close_block()?;
                bytes = &bytes[n + 1..];
            } else {
                if self.code == 0xFF {
                    self.close_block()?;
                }
                bytes = &bytes[n..];
            }
        }
        Ok(())
    }

    /// Writes the last code byte and the trailing delimiter; returns the end.
    fn finish(mut self) -> Result<usize, Error> {
        self.put(self.code_idx, self.code)?;
        self.put(self.pos, 0)?;
        Ok(self.pos + 1)
    }
}

/// Encodes one frame into `out`; returns the number of bytes written.
/// `out` must hold at least [`max_encoded_len`]`(payload.len())` bytes,
/// otherwise [`Error::BufferTooSmall`] (checked before anything is written).
pub fn encode_frame(payload: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    if out.len() < max_encoded_len(payload.len()) {
        return Err(Error::BufferTooSmall);
    }
    out[0] = 0;
    let mut w = CobsWriter::new(out, 1)?;
    w.extend(payload)?;
    w.extend(&crc32(&[payload]).to_le_bytes())?;
    w.finish()
}

/// Encodes one authenticated frame (`seq` must increase by one per frame,
/// starting anywhere; it is the replay-guard counter). `out` must hold
/// [`max_encoded_len_auth`]`(payload.len())` bytes.
pub fn encode_frame_auth(
    payload: &[u8],
    key: &Key,
    seq: u32,
    out: &mut [u8],
) -> Result<usize, Error> {
    if out.len() < max_encoded_len_auth(payload.len()) {
        return Err(Error::BufferTooSmall);
    }
    let seq = seq.to_le_bytes();
    let tag = key.tag(DOMAIN_SERIAL, &[&seq, payload]);
    let crc = crc32(&[&seq, payload, &tag]);
    out[0] = 0;
    let mut w = CobsWriter::new(out, 1)?;
    w.extend(&seq)?;
    w.extend(payload)?;
    w.extend(&tag)?;
    w.extend(&crc.to_le_bytes())?;
    w.finish()
}

/// Counters of a [`FrameReader`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Frames delivered intact.
    pub frames_ok: u64,
    /// Frames whose CRC did not match.
    pub crc_errors: u64,
    /// Frames with broken COBS structure or too short to hold a CRC.
    pub cobs_errors: u64,
    /// Frames longer than the reader's buffer.
    pub overflows: u64,
    /// Authenticated frames whose tag did not verify.
    pub bad_tags: u64,
    /// Authenticated frames rejected by the replay guard.
    pub replays: u64,
    /// Raw bytes (delimiters excluded) of every frame that was not delivered.
    pub bytes_discarded: u64,
}

/// Incremental frame decoder. `N` is the largest decoded body
/// (payload + 4, or payload + 24 with a key) it accepts. No allocation;
/// never panics on any input.
#[derive(Debug, Clone)]
pub struct FrameReader<const N: usize> {
    buf: [u8; N],
    len: usize,
    /// Raw bytes seen since the last delimiter.
    raw: usize,
    /// Data bytes left in the current COBS block.
    remaining: u8,
    /// Code byte of the current block; 0 before the first block.
    code: u8,
    /// First error of the current frame; the rest of it is skipped.
    fault: Option<Error>,
    key: Option<Key>,
    window: ReplayWindow,
    stats: ReaderStats,
}

impl<const N: usize> Default for FrameReader<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FrameReader<N> {
    /// Reader for unauthenticated frames.
    pub const fn new() -> Self {
        FrameReader {
            buf: [0; N],
            len: 0,
            raw: 0,
            remaining: 0,
            code: 0,
            fault: None,
            key: None,
            window: ReplayWindow::new(),
            stats: ReaderStats {
                frames_ok: 0,
                crc_errors: 0,
                cobs_errors: 0,
                overflows: 0,
                bad_tags: 0,
                replays: 0,
                bytes_discarded: 0,
            },
        }
    }

    /// Reader for frames made by [`encode_frame_auth`] with the same key.
    pub const fn with_key(key: Key) -> Self {
        let mut r = Self::new();
        r.key = Some(key);
        r
    }

    /// Counters so far.
    pub fn stats(&self) -> ReaderStats {
        self.stats
    }

    /// Feeds raw link bytes; calls `on_frame` once per completed frame with
    /// the payload or with the reason it was dropped. Bytes of an unfinished
    /// frame are kept for the next call.
    pub fn feed(&mut self, bytes: &[u8], mut on_frame: impl FnMut(Result<&[u8], Error>)) {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if b == 0 {
                self.end_frame(&mut on_frame);
                i += 1;
            } else if self.fault.is_some() {
                // Skipping a bad frame: jump to the next delimiter.
                let rest = &bytes[i..];
                let n = rest.iter().position(|&x| x == 0).unwrap_or(rest.len());
                self.raw += n;
                i += n;
            } else if self.remaining > 0 {
                // Inside a COBS block: copy the run of data bytes at once.
                let run = &bytes[i..bytes.len().min(i + self.remaining as usize)];
                let n = run.iter().position(|&x| x == 0).unwrap_or(run.len());
                match self.buf.get_mut(self.len..self.len + n) {
                    Some(dst) => {
                        dst.copy_from_slice(&run[..n]);
                        self.len += n;
                    }
                    None => self.fault = Some(Error::FrameTooLarge),
                }
                // n <= remaining <= 254, so this fits in u8.
                self.remaining -= n as u8;
                self.raw += n;
                i += n;
            } else {
                self.raw += 1;
                self.push_raw(b);
                i += 1;
            }
        }
    }

    fn push_raw(&mut self, b: u8) {
        if self.remaining == 0 {
            // A code byte. The zero implied by the previous block is only
            // materialised now that we know another block follows.
            if self.code != 0 && self.code != 0xFF {
                self.push_data(0);
            }
            self.code = b;
            self.remaining = b - 1;
        } else {
            self.push_data(b);
            self.remaining -= 1;
        }
    }

    fn push_data(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.fault = Some(Error::FrameTooLarge),
        }
    }

    fn end_frame(&mut self, on_frame: &mut impl FnMut(Result<&[u8], Error>)) {
        let raw = self.raw;
        let fault = self.fault;
        let incomplete = self.remaining != 0;
        let len = self.len;
        self.reset();
        if raw == 0 {
            return; // empty frame: leading/trailing delimiter or line idle
        }
        let result = match fault {
            Some(e) => Err(e),
            None if incomplete || len < CRC_LEN => Err(Error::Cobs),
            None => self.check_body(len),
        };
        match result {
            Ok((start, end)) => {
                self.stats.frames_ok += 1;
                on_frame(Ok(&self.buf[start..end]));
            }
            Err(e) => {
                match e {
                    Error::BadCrc => self.stats.crc_errors += 1,
                    Error::FrameTooLarge => self.stats.overflows += 1,
                    Error::BadTag => self.stats.bad_tags += 1,
                    Error::Replay => self.stats.replays += 1,
                    _ => self.stats.cobs_errors += 1,
                }
                self.stats.bytes_discarded += raw as u64;
                on_frame(Err(e));
            }
        }
    }

    /// Checks CRC (and tag, replay) of `buf[..len]`; returns the payload range.
    fn check_body(&mut self, len: usize) -> Result<(usize, usize), Error> {
        let body = self.buf.get(..len).ok_or(Error::Malformed)?;
        let (data, crc) = body.split_at(len - CRC_LEN);
        let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32(&[data]) != crc {
            return Err(Error::BadCrc);
        }
        let Some(key) = &self.key else {
            return Ok((0, data.len()));
        };
        if data.len() < SEQ_LEN + TAG_LEN {
            return Err(Error::BadTag);
        }
        let (seq_b, rest) = data.split_at(SEQ_LEN);
        let (payload, tag) = rest.split_at(rest.len() - TAG_LEN);
        if !key.verify(DOMAIN_SERIAL, &[seq_b, payload], tag) {
            return Err(Error::BadTag);
        }
        let seq = u32::from_le_bytes([seq_b[0], seq_b[1], seq_b[2], seq_b[3]]);
        if self.window.check(seq) != ReplayVerdict::Fresh {
            return Err(Error::Replay);
        }
        self.window.accept(seq);
        Ok((SEQ_LEN, SEQ_LEN + payload.len()))
    }

    fn reset(&mut self) {
        self.len = 0;
        self.raw = 0;
        self.remaining = 0;
        self.code = 0;
        self.fault = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect<const N: usize>(
        r: &mut FrameReader<N>,
        bytes: &[u8],
    ) -> Vec<Result<Vec<u8>, Error>> {
        let mut v = Vec::new();
        r.feed(bytes, |f| v.push(f.map(|p| p.to_vec())));
        v
    }

    #[test]
    fn golden_small_frame() {
        // payload 11 00 22 ; CRC-32/ISO-HDLC of it = crc32(b"\x11\x00\x22")
        let payload = [0x11, 0x00, 0x22];
        let mut out = [0u8; 32];
        let n = encode_frame(&payload, &mut out).unwrap();
        let crc = crc32(&[&payload]).to_le_bytes();
        assert!(
            crc.iter().all(|&b| b != 0),
            "pick a payload whose CRC has no zero"
        );
        let mut expect = vec![0x00, 0x02, 0x11, 0x06, 0x22];
        expect.extend_from_slice(&crc);
        expect.push(0x00);
        assert_eq!(&out[..n], &expect[..]);
    }

    #[test]
    fn long_runs_and_exact_254_blocks() {
        for len in [0usize, 1, 253, 254, 255, 508, 509, 1000] {
            for fill in [0u8, 1, 0xFF] {
                let payload: Vec<u8> = (0..len)
                    .map(|i| if fill == 1 { (i % 255 + 1) as u8 } else { fill })
                    .collect();
                let mut out = vec![0u8; max_encoded_len(len)];
                let n = encode_frame(&payload, &mut out).unwrap();
                assert!(out[1..n - 1].iter().all(|&b| b != 0));
                let mut r = FrameReader::<1100>::new();
                let got = collect(&mut r, &out[..n]);
                assert_eq!(got, vec![Ok(payload.clone())], "len {len} fill {fill}");
            }
        }
    }

    #[test]
    fn too_small_buffer_and_overflow() {
        let payload = [7u8; 100];
        let mut out = [0u8; 50];
        assert_eq!(encode_frame(&payload, &mut out), Err(Error::BufferTooSmall));
        let mut out = [0u8; 200];
        let n = encode_frame(&payload, &mut out).unwrap();
        let mut r = FrameReader::<64>::new();
        assert_eq!(collect(&mut r, &out[..n]), vec![Err(Error::FrameTooLarge)]);
        assert_eq!(r.stats().overflows, 1);
        // and recovers
        let n = encode_frame(&payload[..10], &mut out).unwrap();
        assert_eq!(collect(&mut r, &out[..n]), vec![Ok(payload[..10].to_vec())]);
    }

    #[test]
    fn auth_frames() {
        let key = Key::new([3; 32]);
        let mut out = [0u8; 128];
        let mut r = FrameReader::<128>::with_key(key.clone());
        let n = encode_frame_auth(b"hello", &key, 1, &mut out).unwrap();
        assert_eq!(collect(&mut r, &out[..n]), vec![Ok(b"hello".to_vec())]);
        // replay of the same frame
        assert_eq!(collect(&mut r, &out[..n]), vec![Err(Error::Replay)]);
        // wrong key
        let n = encode_frame_auth(b"hello", &Key::new([4; 32]), 2, &mut out).unwrap();
        assert_eq!(collect(&mut r, &out[..n]), vec![Err(Error::BadTag)]);
        // unauthenticated frame to an authenticating reader
        let n = encode_frame(b"hello, this is long enough", &mut out).unwrap();
        assert_eq!(collect(&mut r, &out[..n]), vec![Err(Error::BadTag)]);
        let s = r.stats();
        assert_eq!((s.frames_ok, s.bad_tags, s.replays), (1, 2, 1));
    }
}
