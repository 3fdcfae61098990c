//! Raw frame dumps: frames of one size and format laid end to end (what `ffmpeg -f rawvideo`
//! or a camera capture writes), or concatenated JPEGs for MJPEG.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::jpeg::read_jpeg;
use super::{Frame, FrameSource, PixelFormat, Repeat, SourceError};

/// Largest JPEG accepted in an MJPEG dump.
pub const MAX_JPEG: usize = 16 * 1024 * 1024;

/// Frames read from a raw dump file.
#[derive(Debug)]
pub struct RawFrames {
    path: PathBuf,
    reader: BufReader<File>,
    width: u32,
    height: u32,
    format: PixelFormat,
    /// Bytes per frame; None for MJPEG.
    frame_len: Option<usize>,
    /// Frames in the file (fixed-size formats).
    count: Option<u64>,
    in_pass: u64,
    /// Whether any whole frame has been read since the source opened.
    played_ever: bool,
    /// Whether the file must be opened again (by its path) before the next read: set at the
    /// end of every play, and kept while reopening fails.
    stale: bool,
    /// Whether the input is a regular file. A pipe, FIFO or character device cannot be played
    /// again: opening a FIFO anew blocks until another writer comes (the capture thread
    /// could then never see a stop request), so such an input ends at its end, whatever
    /// `loops` says.
    regular: bool,
    pass: u64,
    repeat: Repeat,
    seq: u64,
}

impl RawFrames {
    /// Opens a dump of `width` x `height` frames of `format`. For fixed-size formats the file
    /// length must be a whole, non-zero number of frames.
    pub fn open(
        path: &Path,
        width: u32,
        height: u32,
        format: PixelFormat,
        repeat: Repeat,
    ) -> Result<RawFrames, SourceError> {
        if width == 0
            || height == 0
            || width > super::files::MAX_SIDE
            || height > super::files::MAX_SIDE
        {
            return Err(SourceError::Invalid(format!(
                "raw frame size {width}x{height} is not within 1..={}",
                super::files::MAX_SIDE
            )));
        }
        let file = File::open(path).map_err(|e| SourceError::io(path, e))?;
        let meta = file.metadata().map_err(|e| SourceError::io(path, e))?;
        let (len, regular) = (meta.len(), meta.is_file());
        let frame_len = format.frame_len(width, height);
        let count = match frame_len {
            Some(fl) => {
                let fl64 = fl as u64;
                if len == 0 || len % fl64 != 0 {
                    return Err(SourceError::Invalid(format!(
                        "raw dump {} is {len} bytes, not a whole number of {width}x{height} {format} frames ({fl} bytes each)",
                        path.display()
                    )));
                }
                Some(len / fl64)
            }
            None => None,
        };
        Ok(RawFrames {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 16, file),
            width,
            height,
            format,
            frame_len,
            count,
            in_pass: 0,
            played_ever: false,
            stale: false,
            regular,
            pass: 0,
            repeat,
            seq: 0,
        })
    }

    /// Ends the play: the next read (if plays remain) opens the file again.
    fn rewind(&mut self) {
        self.pass += 1;
        self.in_pass = 0;
        self.stale = true;
    }

    /// Opens the dump again by its path, so that each play reads the file as it is now: a
    /// dump replaced by a rename (the usual way to update a file atomically) is played, not
    /// the old unlinked one, and a dump that grew or shrank is counted again.
    fn reopen(&mut self) -> Result<(), SourceError> {
        let file = File::open(&self.path).map_err(|e| SourceError::io(&self.path, e))?;
        let len = file
            .metadata()
            .map_err(|e| SourceError::io(&self.path, e))?
            .len();
        if let Some(fl) = self.frame_len {
            let fl64 = fl as u64;
            if len == 0 || len % fl64 != 0 {
                return Err(SourceError::Invalid(format!(
                    "raw dump {} is now {len} bytes, not a whole number of {}x{} {} frames ({fl} bytes each)",
                    self.path.display(),
                    self.width,
                    self.height,
                    self.format
                )));
            }
            self.count = Some(len / fl64);
        }
        self.reader = BufReader::with_capacity(1 << 16, file);
        Ok(())
    }

    /// An error met after frames were played: the dump is being rewritten or replaced by
    /// another program, so it is a bad frame (the capture loop backs off, a later call tries
    /// again), not the end of the source.
    fn after_played(&self, e: SourceError) -> SourceError {
        match e {
            SourceError::Io { .. } | SourceError::Invalid(_) if self.played_ever => {
                SourceError::BadFrame {
                    what: self.path.display().to_string(),
                    reason: e.to_string(),
                }
            }
            e => e,
        }
    }

    /// The next frame's bytes, rewinding at the end of the file while plays remain.
    fn read_next(&mut self) -> Result<Vec<u8>, SourceError> {
        loop {
            if !self.repeat.allows(self.pass) {
                return Err(SourceError::EndOfStream);
            }
            if self.stale {
                if !self.regular {
                    log::info!(
                        "{} is not a regular file (a pipe or device): it ends at its end of input, it cannot be played again",
                        self.path.display()
                    );
                    return Err(SourceError::EndOfStream);
                }
                self.reopen().map_err(|e| self.after_played(e))?;
                self.stale = false;
            }
            match self.frame_len {
                Some(fl) => {
                    if Some(self.in_pass) == self.count {
                        self.rewind();
                        continue;
                    }
                    let mut buf = vec![0; fl];
                    if let Err(e) = self.reader.read_exact(&mut buf) {
                        // Shorter than when it was counted (truncated by another program):
                        // this play ends here, the next one reads the file as it is then.
                        let truncated = e.kind() == std::io::ErrorKind::UnexpectedEof;
                        let e = self.after_played(SourceError::io(&self.path, e));
                        if truncated || e.kind() == super::ErrorKind::BadFrame {
                            self.rewind();
                            return Err(SourceError::BadFrame {
                                what: self.path.display().to_string(),
                                reason: if truncated {
                                    "the dump ended inside a frame (truncated since it was opened)"
                                        .into()
                                } else {
                                    e.to_string()
                                },
                            });
                        }
                        return Err(e);
                    }
                    self.in_pass += 1;
                    self.played_ever = true;
                    return Ok(buf);
                }
                None => match read_jpeg(&mut self.reader, MAX_JPEG) {
                    Ok(Some(j)) => {
                        self.in_pass += 1;
                        self.played_ever = true;
                        return Ok(j);
                    }
                    Ok(None) if self.in_pass == 0 => {
                        if !self.played_ever {
                            return Err(SourceError::Invalid(format!(
                                "MJPEG dump {} holds no whole JPEG picture",
                                self.path.display()
                            )));
                        }
                        // It had pictures before (rewritten since): report the empty play
                        // (the capture loop backs off) rather than rewinding in a loop.
                        self.rewind();
                        return Err(SourceError::BadFrame {
                            what: self.path.display().to_string(),
                            reason: "no whole JPEG picture in this play of the dump".into(),
                        });
                    }
                    Ok(None) => self.rewind(),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::InvalidData
                            || e.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        // A damaged picture: report it; the next call resumes after it (or
                        // rewinds at the end of the file). Only whole pictures count as
                        // played (`in_pass`), so a dump holding none (no start marker, or
                        // only damaged pictures) is refused at the end of its first play
                        // instead of being read again and again; once one picture has been
                        // read, a later bad play (a file being rewritten) is only reported.
                        return Err(SourceError::BadFrame {
                            what: self.path.display().to_string(),
                            reason: e.to_string(),
                        });
                    }
                    Err(e) => {
                        let e = self.after_played(SourceError::io(&self.path, e));
                        if e.kind() == super::ErrorKind::BadFrame {
                            self.rewind();
                        }
                        return Err(e);
                    }
                },
            }
        }
    }
}

impl FrameSource for RawFrames {
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        let data = self.read_next()?;
        let seq = self.seq;
        self.seq += 1;
        Ok(Frame {
            width: self.width,
            height: self.height,
            format: self.format,
            data,
            capture_ts: Instant::now(),
            seq,
        })
    }

    fn describe(&self) -> String {
        let frames = match self.count {
            Some(n) => format!("{n} frames"),
            None => "JPEG stream".to_owned(),
        };
        format!(
            "raw {} ({}x{} {}, {frames}, {})",
            self.path.display(),
            self.width,
            self.height,
            self.format,
            self.repeat.describe(self.pass)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{fixtures, scratch_dir, ErrorKind};

    #[test]
    fn yuyv_dump_gives_its_frames_then_loops() {
        let path = fixtures().join("dump3.yuyv422");
        let data = std::fs::read(&path).unwrap();
        let mut s = RawFrames::open(&path, 64, 48, PixelFormat::Yuyv, Repeat::Times(2)).unwrap();
        let fl = 64 * 48 * 2;
        for i in 0..6 {
            let f = s.next_frame().unwrap();
            let k = i % 3;
            assert_eq!(f.data, data[k * fl..(k + 1) * fl], "frame {i}");
            assert_eq!(
                (f.width, f.height, f.format, f.seq),
                (64, 48, PixelFormat::Yuyv, i as u64)
            );
        }
        assert!(s.next_frame().unwrap_err().is_end());
        // Frame 0 of the dump is the single-frame fixture.
        assert_eq!(
            data[..fl],
            std::fs::read(fixtures().join("testsrc.yuyv422")).unwrap()[..]
        );
    }

    #[test]
    fn an_mjpeg_dump_longer_than_a_picture_with_none_in_it_is_refused() {
        // Over MAX_JPEG bytes without a start marker: the early returns of the marker search
        // are reported but not counted as pictures, so looping forever is refused at the
        // end of the first play instead of reading the file again and again.
        let path = std::env::temp_dir().join(format!("shapecast-raw-{}.mjpeg", std::process::id()));
        std::fs::write(&path, vec![0u8; MAX_JPEG + 1000]).unwrap();
        let mut s = RawFrames::open(&path, 64, 48, PixelFormat::Mjpeg, Repeat::Forever).unwrap();
        let e1 = s.next_frame().unwrap_err();
        assert_eq!(e1.kind(), ErrorKind::BadFrame, "{e1}");
        let e2 = s.next_frame().unwrap_err();
        assert_eq!(e2.kind(), ErrorKind::Fatal, "{e2}");
        assert!(
            e2.to_string().contains("holds no whole JPEG picture"),
            "{e2}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_mjpeg_dump_rewritten_mid_stream_is_reported_not_refused() {
        // Pictures were read from it before: an emptied or damaged dump gives bad frames
        // (never a tight rewind loop, never the end of the source), and plays again once
        // whole pictures are back.
        let dir = scratch_dir("rawrw");
        let pic = std::fs::read(fixtures().join("testsrc.mjpeg")).unwrap();
        let path = dir.join("live.mjpeg");
        std::fs::write(&path, &pic).unwrap();
        let mut s = RawFrames::open(&path, 64, 48, PixelFormat::Mjpeg, Repeat::Forever).unwrap();
        assert_eq!(s.next_frame().unwrap().data, pic);
        assert_eq!(s.next_frame().unwrap().data, pic);
        for contents in [&b""[..], &pic[..pic.len() / 2]] {
            std::fs::write(&path, contents).unwrap();
            for _ in 0..3 {
                let e = s.next_frame().unwrap_err();
                assert_eq!(e.kind(), ErrorKind::BadFrame, "{e}");
            }
        }
        std::fs::write(&path, &pic).unwrap();
        let f = (0..4).find_map(|_| match s.next_frame() {
            Ok(f) => Some(f),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::BadFrame, "{e}");
                None
            }
        });
        assert_eq!(f.expect("plays again within 4 calls").data, pic);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_raw_dump_truncated_or_replaced_mid_stream_is_reported_then_played_as_it_is_now() {
        // A fixed-size dump that another program truncates while it plays: the short read is
        // a bad frame (it used to be an I/O error that stopped the source), a dump of no whole
        // frame stays a bad frame, and a dump replaced by a rename is played in its new form
        // (the old code rewound the file descriptor of the unlinked file forever).
        let dir = scratch_dir("rawtr");
        let data = std::fs::read(fixtures().join("dump3.yuyv422")).unwrap();
        let fl = data.len() / 3;
        let path = dir.join("live.yuyv");
        // 24 frames (147 KiB), more than the reader's 64 KiB buffer holds.
        let long = data.repeat(8);
        std::fs::write(&path, &long).unwrap();
        let mut s = RawFrames::open(&path, 64, 48, PixelFormat::Yuyv, Repeat::Forever).unwrap();
        assert_eq!(s.next_frame().unwrap().data, data[..fl]);
        std::fs::write(&path, &long[..10 * fl + fl / 2]).unwrap();
        // Frames still buffered come out, then the short read is a bad frame.
        let e = (0..24)
            .find_map(|_| s.next_frame().err())
            .expect("the truncation is noticed within the play");
        assert_eq!(e.kind(), ErrorKind::BadFrame, "{e}");
        // Now not a whole number of frames: each later call is a bad frame.
        for _ in 0..3 {
            let e = s.next_frame().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadFrame, "{e}");
            assert!(e.to_string().contains("not a whole number"), "{e}");
        }
        // Replaced by rename with frames 3, 2 (reversed): played in that order.
        let tmp = dir.join("live.yuyv.new");
        let mut reversed = data[2 * fl..].to_vec();
        reversed.extend_from_slice(&data[fl..2 * fl]);
        std::fs::write(&tmp, &reversed).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let f = s.next_frame().unwrap();
        assert_eq!(f.data, data[2 * fl..], "the new dump's first frame");
        assert_eq!(s.next_frame().unwrap().data, data[fl..2 * fl]);
        assert_eq!(
            s.next_frame().unwrap().data,
            data[2 * fl..],
            "loops over the new dump"
        );
        // Removed: bad frames, and it plays again when the file is back.
        std::fs::remove_file(&path).unwrap();
        let _ = s.next_frame(); // the rest of this play may still be buffered
        let _ = s.next_frame();
        let e = s.next_frame().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadFrame, "{e}");
        std::fs::write(&path, &data).unwrap();
        let f = (0..3).find_map(|_| s.next_frame().ok());
        assert_eq!(f.expect("plays again").data, data[..fl]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_mjpeg_dump_replaced_by_rename_is_played_in_its_new_form() {
        let dir = scratch_dir("rawmv");
        let pic = std::fs::read(fixtures().join("testsrc.mjpeg")).unwrap();
        let path = dir.join("live.mjpeg");
        std::fs::write(&path, &pic).unwrap();
        let mut s = RawFrames::open(&path, 64, 48, PixelFormat::Mjpeg, Repeat::Forever).unwrap();
        assert_eq!(s.next_frame().unwrap().data, pic);
        // The reference pictures of the replacement: dump3.mjpeg's three.
        let dump3 = fixtures().join("dump3.mjpeg");
        let mut r = RawFrames::open(&dump3, 64, 48, PixelFormat::Mjpeg, Repeat::Times(1)).unwrap();
        let want: Vec<_> = (0..3).map(|_| r.next_frame().unwrap().data).collect();
        assert!(want[1] != pic && want[2] != pic);
        let tmp = dir.join("live.mjpeg.new");
        std::fs::copy(&dump3, &tmp).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        // The old file's play ends (its one picture was read), then the new dump plays.
        let frames: Vec<_> = (0..4).map(|_| s.next_frame().unwrap().data).collect();
        assert_eq!(frames[..3], want[..]);
        assert_eq!(frames[3], want[0], "loops over the new dump");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn wrong_shape_is_refused_with_sizes() {
        let path = fixtures().join("dump3.yuyv422");
        let err = RawFrames::open(&path, 64, 47, PixelFormat::Yuyv, Repeat::Times(1)).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a whole number of 64x47 yuyv frames"),
            "{err}"
        );
        assert_eq!(err.kind(), ErrorKind::Fatal);
        assert!(RawFrames::open(&path, 0, 48, PixelFormat::Yuyv, Repeat::Times(1)).is_err());
        assert!(RawFrames::open(
            &fixtures().join("nope"),
            64,
            48,
            PixelFormat::Yuyv,
            Repeat::Times(1)
        )
        .is_err());
    }

    /// A FIFO cannot be played again: at its end the source ends, even with `loops = 0`. The
    /// old code opened the FIFO anew, which blocks until another writer comes: the capture
    /// thread hung and the runtime could not stop.
    #[cfg(unix)]
    #[test]
    fn an_mjpeg_fifo_ends_at_its_end_even_when_looping_forever() {
        let dir = scratch_dir("raw-fifo");
        let fifo = dir.join("in.mjpeg");
        let _ = std::fs::remove_file(&fifo);
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let pictures = std::fs::read(fixtures().join("dump3.mjpeg")).unwrap();
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(&fifo, pictures).unwrap())
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s =
                RawFrames::open(&fifo, 64, 48, PixelFormat::Mjpeg, Repeat::Forever).unwrap();
            let mut frames = 0;
            let end = loop {
                match s.next_frame() {
                    Ok(_) => frames += 1,
                    Err(e) => break e,
                }
            };
            tx.send((frames, end.is_end(), end.to_string())).unwrap();
        });
        let (frames, ended, why) = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the source blocked at the FIFO's end instead of ending");
        writer.join().unwrap();
        assert_eq!(frames, 3);
        assert!(ended, "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mjpeg_dump_splits_into_pictures() {
        let path = fixtures().join("dump3.mjpeg");
        let mut s = RawFrames::open(&path, 64, 48, PixelFormat::Mjpeg, Repeat::Times(2)).unwrap();
        let mut frames = Vec::new();
        loop {
            match s.next_frame() {
                Ok(f) => frames.push(f),
                Err(e) if e.is_end() => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(frames.len(), 6);
        assert_eq!(frames[0].data, frames[3].data);
        let mut rgb = Vec::new();
        frames[2].to_rgb8(&mut rgb).unwrap();
        assert_eq!(rgb.len(), 64 * 48 * 3);
    }

    #[test]
    fn damaged_mjpeg_picture_is_a_bad_frame() {
        let dir = scratch_dir("rawmj");
        let pic = std::fs::read(fixtures().join("testsrc.mjpeg")).unwrap();
        let mut data = pic.clone();
        data.extend_from_slice(&pic[..pic.len() / 2]); // cut short at the end
        let path = dir.join("cut.mjpeg");
        std::fs::write(&path, &data).unwrap();
        let mut s = RawFrames::open(&path, 64, 48, PixelFormat::Mjpeg, Repeat::Times(1)).unwrap();
        assert_eq!(s.next_frame().unwrap().data, pic);
        assert_eq!(s.next_frame().unwrap_err().kind(), ErrorKind::BadFrame);
        assert!(s.next_frame().unwrap_err().is_end());
        // only damaged pictures, played forever: refused at the end of the first play
        let mut bad = pic[..pic.len() / 2].to_vec();
        bad.extend_from_slice(&pic[..pic.len() / 3]);
        std::fs::write(&path, &bad).unwrap();
        let mut s = RawFrames::open(&path, 64, 48, PixelFormat::Mjpeg, Repeat::Forever).unwrap();
        let mut bad_frames = 0;
        let e = loop {
            match s.next_frame() {
                Err(e) if e.kind() == ErrorKind::BadFrame && bad_frames < 10 => bad_frames += 1,
                Err(e) => break e,
                Ok(_) => panic!("no picture in it is whole"),
            }
        };
        assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
        assert!(e.to_string().contains("holds no whole JPEG picture"), "{e}");
        assert!((1..=2).contains(&bad_frames), "{bad_frames}");
        std::fs::write(&path, b"nothing").unwrap();
        let mut s = RawFrames::open(&path, 64, 48, PixelFormat::Mjpeg, Repeat::Forever).unwrap();
        assert_eq!(
            s.next_frame().unwrap_err().kind(),
            ErrorKind::Fatal,
            "must not spin forever"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
