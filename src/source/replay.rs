//! Replay of a recorded serial stream: the bytes the serial link wrote, i.e. COBS-encoded
//! frames each followed by a 0x00 delimiter. This reads and splits the bytes only; decoding
//! the COBS frames is the link layer's job.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{Repeat, SourceError};

/// Longest encoded frame accepted by [`crate::source::open`] (bytes between delimiters): the
/// serial link's largest frame plus its COBS overhead (one byte in 254) and CRC.
pub const DEFAULT_MAX_FRAME: usize = shapecast_link::serial::DEFAULT_MAX_FRAME
    + shapecast_link::serial::DEFAULT_MAX_FRAME / 254
    + 64;

/// Hands out the COBS frames of a recording, one per call, without their 0x00 delimiter.
#[derive(Debug)]
pub struct WireReplay {
    path: PathBuf,
    reader: BufReader<File>,
    repeat: Repeat,
    max_frame: usize,
    pass: u64,
    in_pass: u64,
    /// Frames handed out in this pass.
    given_in_pass: u64,
    /// Frames handed out.
    frames: u64,
    /// Frames skipped: longer than `max_frame`, or cut short at the end of the file.
    dropped: u64,
    /// Where a call that gave up (read budget spent) stopped: the frame read so far, and
    /// whether it is an oversized one being discarded up to its delimiter.
    pending: Vec<u8>,
    skipping: bool,
}

impl WireReplay {
    pub fn open(path: &Path, repeat: Repeat, max_frame: usize) -> Result<WireReplay, SourceError> {
        let file = File::open(path).map_err(|e| SourceError::io(path, e))?;
        Ok(WireReplay {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 16, file),
            repeat,
            max_frame: max_frame.max(1),
            pass: 0,
            in_pass: 0,
            given_in_pass: 0,
            frames: 0,
            dropped: 0,
            pending: Vec::new(),
            skipping: false,
        })
    }

    /// The next encoded frame (COBS bytes, no delimiter; never empty). Empty frames (runs of
    /// delimiters) are skipped; a frame longer than the limit is skipped whole and counted in
    /// [`WireReplay::dropped`], as a serial receiver resynchronises on the next delimiter;
    /// bytes after the last delimiter are an incomplete frame and are dropped too.
    /// [`SourceError::EndOfStream`] after the last play.
    ///
    /// One call reads at most about `2 * max_frame` bytes: past that (an endless run of
    /// delimiters or of bytes without one, e.g. a FIFO or `/dev/zero`) it returns
    /// [`SourceError::BadFrame`], so the caller gets back to its stop check; the next call
    /// goes on where this one stopped.
    pub fn next_packet(&mut self) -> Result<Vec<u8>, SourceError> {
        let mut frame = std::mem::take(&mut self.pending);
        let mut oversized = std::mem::take(&mut self.skipping);
        let budget = self.max_frame.saturating_mul(2).max(1 << 16);
        let mut read = 0usize;
        loop {
            if read > budget {
                self.pending = frame;
                self.skipping = oversized;
                return Err(SourceError::BadFrame {
                    what: format!("replay {}", self.path.display()),
                    reason: format!("no complete frame in the last {read} bytes"),
                });
            }
            if !self.repeat.allows(self.pass) {
                return Err(SourceError::EndOfStream);
            }
            let buf = self
                .reader
                .fill_buf()
                .map_err(|e| SourceError::io(&self.path, e))?;
            if buf.is_empty() {
                // End of file.
                if !frame.is_empty() || oversized {
                    self.dropped += 1;
                    log::warn!(
                        "replay {}: dropped {} bytes after the last delimiter (incomplete frame)",
                        self.path.display(),
                        frame.len()
                    );
                    frame.clear();
                    oversized = false;
                }
                if self.given_in_pass == 0 {
                    // Nothing usable in a whole pass: another pass would give nothing either
                    // (and with `Repeat::Forever` this call would never return).
                    return Err(SourceError::Invalid(if self.in_pass == 0 {
                        format!("recording {} holds no complete frame", self.path.display())
                    } else {
                        format!(
                            "recording {} holds no usable frame: all {} are longer than {} bytes",
                            self.path.display(),
                            self.in_pass,
                            self.max_frame
                        )
                    }));
                }
                self.reader
                    .seek(SeekFrom::Start(0))
                    .map_err(|e| SourceError::io(&self.path, e))?;
                self.pass += 1;
                self.in_pass = 0;
                self.given_in_pass = 0;
                continue;
            }
            let (chunk, found) = match buf.iter().position(|&b| b == 0) {
                Some(i) => (&buf[..i], Some(i)),
                None => (buf, None),
            };
            if !oversized {
                if frame.len() + chunk.len() > self.max_frame {
                    oversized = true;
                    frame.clear();
                } else {
                    frame.extend_from_slice(chunk);
                }
            }
            let used = found.map_or(chunk.len(), |i| i + 1);
            self.reader.consume(used);
            read += used;
            if found.is_some() {
                if oversized {
                    self.dropped += 1;
                    self.in_pass += 1;
                    oversized = false;
                    log::warn!(
                        "replay {}: skipped a frame longer than {} bytes",
                        self.path.display(),
                        self.max_frame
                    );
                    continue;
                }
                if frame.is_empty() {
                    continue;
                }
                self.in_pass += 1;
                self.given_in_pass += 1;
                self.frames += 1;
                return Ok(frame);
            }
        }
    }

    /// The recording's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Plays of the recording started so far, minus one (0 during the first).
    pub fn pass(&self) -> u64 {
        self.pass
    }

    /// Frames handed out so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames skipped so far (oversized or incomplete).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    pub fn describe(&self) -> String {
        format!(
            "replay {} ({})",
            self.path.display(),
            self.repeat.describe(self.pass)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ErrorKind;

    fn write(name: &str, data: &[u8]) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("shapecast-replay-{}-{name}", std::process::id()));
        std::fs::write(&p, data).unwrap();
        p
    }

    fn all(r: &mut WireReplay) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        loop {
            match r.next_packet() {
                Ok(p) => v.push(p),
                Err(e) if e.is_end() => return v,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn splits_on_delimiters_and_loops() {
        let p = write("a", b"\x03ab\x02c\x00\x00\x02z\x00");
        let mut r = WireReplay::open(&p, Repeat::Times(2), 100).unwrap();
        let got = all(&mut r);
        assert_eq!(
            got,
            vec![
                b"\x03ab\x02c".to_vec(),
                b"\x02z".to_vec(),
                b"\x03ab\x02c".to_vec(),
                b"\x02z".to_vec()
            ]
        );
        assert_eq!((r.frames(), r.dropped()), (4, 0));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn oversized_and_incomplete_frames_are_dropped() {
        let mut data = vec![0x05; 300];
        data.push(0);
        data.extend_from_slice(b"\x02k\x00\x04tail");
        let p = write("b", &data);
        let mut r = WireReplay::open(&p, Repeat::Times(1), 100).unwrap();
        assert_eq!(all(&mut r), vec![b"\x02k".to_vec()]);
        assert_eq!(r.dropped(), 2);
        std::fs::remove_file(p).unwrap();
    }

    /// Calls until a frame (or another end) comes; BadFrame results are counted.
    fn next_skipping(r: &mut WireReplay) -> (Result<Vec<u8>, SourceError>, usize) {
        let mut bad = 0;
        loop {
            match r.next_packet() {
                Err(e) if e.kind() == ErrorKind::BadFrame => bad += 1,
                other => return (other, bad),
            }
        }
    }

    #[test]
    fn endless_delimiters_return_to_the_caller_and_lose_nothing() {
        // 300 KB of delimiters (a sparse file, /dev/zero): each call reads a bounded amount
        // and returns, instead of looping inside one call.
        let mut data = vec![0u8; 300_000];
        data.extend_from_slice(b"\x02z\x00");
        let p = write("zeros", &data);
        let mut r = WireReplay::open(&p, Repeat::Times(1), 100).unwrap();
        let (got, bad) = next_skipping(&mut r);
        assert_eq!(got.unwrap(), b"\x02z");
        assert!(bad >= 4, "{bad} early returns");
        assert!(r.next_packet().unwrap_err().is_end());
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_frame_read_across_an_early_return_comes_out_whole() {
        // An oversized frame, then a good one that ends past the first call's read budget
        // (2 x max_frame): the second call resumes inside the good frame.
        let max = 100_000;
        let good: Vec<u8> = (0..99_000u32).map(|i| (i % 251 + 1) as u8).collect();
        let mut data = vec![0x05; 170_000];
        data.push(0);
        data.extend_from_slice(&good);
        data.push(0);
        let p = write("resume", &data);
        let mut r = WireReplay::open(&p, Repeat::Times(1), max).unwrap();
        let (got, bad) = next_skipping(&mut r);
        assert_eq!(got.unwrap(), good);
        assert_eq!(bad, 1);
        assert_eq!((r.frames(), r.dropped()), (1, 1));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn large_frames_across_buffer_refills() {
        // Frames larger than the 64 KiB reader buffer still come out whole.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 255 + 1) as u8).collect();
        let mut data = big.clone();
        data.push(0);
        data.extend_from_slice(&big[..10]);
        data.push(0);
        let p = write("c", &data);
        let mut r = WireReplay::open(&p, Repeat::Times(1), 1 << 20).unwrap();
        assert_eq!(all(&mut r), vec![big.clone(), big[..10].to_vec()]);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn recording_of_only_oversized_frames_is_an_error_not_a_spin() {
        // Every frame is over the limit: with `loops = 0` (forever) this used to rewind and
        // skip forever inside one `next_packet` call, never returning (not even to a stop
        // flag).
        let mut data = vec![0x05; 300];
        data.push(0);
        data.extend_from_slice(&[0x07; 200]);
        data.push(0);
        let p = write("e", &data);
        let mut r = WireReplay::open(&p, Repeat::Forever, 100).unwrap();
        let err = r.next_packet().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fatal, "{err}");
        assert!(err.to_string().contains("100 bytes"), "{err}");
        assert_eq!(r.dropped(), 2);
        std::fs::remove_file(p).unwrap();
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any file, played forever, gives a frame or an error within one call; frames are
        /// never empty, never hold a delimiter and never exceed the limit.
        #[test]
        fn any_recording_returns_from_every_call(
            data in proptest::collection::vec(
                proptest::prop_oneof![3 => proptest::prelude::Just(0u8), 7 => proptest::prelude::any::<u8>()],
                0..600,
            ),
            max in 1usize..64,
        ) {
            let p = write(&format!("prop-{}", data.len()), &data);
            let mut r = WireReplay::open(&p, Repeat::Forever, max).unwrap();
            for _ in 0..8 {
                match r.next_packet() {
                    Ok(f) => {
                        proptest::prop_assert!(!f.is_empty() && f.len() <= max && !f.contains(&0));
                    }
                    Err(e) => {
                        proptest::prop_assert_eq!(e.kind(), ErrorKind::Fatal);
                        break;
                    }
                }
            }
            std::fs::remove_file(p).unwrap();
        }
    }

    #[test]
    fn recording_without_frames_is_an_error_not_a_spin() {
        let p = write("d", b"no delimiter at all");
        let mut r = WireReplay::open(&p, Repeat::Forever, 100).unwrap();
        assert_eq!(r.next_packet().unwrap_err().kind(), ErrorKind::Fatal);
        std::fs::remove_file(p).unwrap();
    }
}
