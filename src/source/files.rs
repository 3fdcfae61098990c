//! Image files: one picture, or a folder of pictures played in file-name order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Frame, FrameSource, PixelFormat, Repeat, SourceError};

/// Largest picture accepted (each side), so a hostile file cannot ask for huge buffers.
pub const MAX_SIDE: u32 = 8192;

/// Extensions the folder source picks up (case-insensitive).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Frames decoded from image files, as [`PixelFormat::Rgb24`].
#[derive(Debug)]
pub struct ImageFiles {
    root: PathBuf,
    /// Whether `root` is a folder (listed again at the start of every play).
    is_dir: bool,
    files: Vec<PathBuf>,
    next: usize,
    pass: u64,
    repeat: Repeat,
    seq: u64,
    /// Pictures decoded in the current play.
    decoded_in_pass: usize,
    /// Whether any picture has decoded since the source opened.
    decoded_ever: bool,
}

impl ImageFiles {
    /// A file gives one picture per play; a folder gives its .png/.jpg/.jpeg files sorted by
    /// name (other files are ignored; a folder without pictures is an error).
    pub fn open(path: &Path, repeat: Repeat) -> Result<ImageFiles, SourceError> {
        let meta = std::fs::metadata(path).map_err(|e| SourceError::io(path, e))?;
        let is_dir = meta.is_dir();
        let files = if is_dir {
            list_pictures(path)?
        } else {
            vec![path.to_owned()]
        };
        Ok(ImageFiles {
            root: path.to_owned(),
            is_dir,
            files,
            next: 0,
            pass: 0,
            repeat,
            seq: 0,
            decoded_in_pass: 0,
            decoded_ever: false,
        })
    }

    /// The files played, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

/// The .png/.jpg/.jpeg files of a folder, sorted by name (an error if there is none).
fn list_pictures(folder: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(|e| SourceError::io(folder, e))? {
        let p = entry.map_err(|e| SourceError::io(folder, e))?.path();
        let ok = p.is_file()
            && p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)));
        if ok {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(SourceError::Invalid(format!(
            "image folder {} holds no .png/.jpg/.jpeg file",
            folder.display()
        )));
    }
    Ok(files)
}

/// Decodes an image file to RGB8 within [`MAX_SIDE`].
pub fn decode_file(path: &Path) -> Result<(u32, u32, Vec<u8>), SourceError> {
    let bad = |reason: String| SourceError::BadFrame {
        what: path.display().to_string(),
        reason,
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| SourceError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| SourceError::io(path, e))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| bad(e.to_string()))?;
    let rgb = img.into_rgb8();
    Ok((rgb.width(), rgb.height(), rgb.into_raw()))
}

impl FrameSource for ImageFiles {
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        if self.next >= self.files.len() {
            // A first play in which no file decoded would repeat the same errors forever.
            // Once a picture has decoded, a bad play is only reported (bad frames, with the
            // capture loop's back-off): a file being rewritten by another program decodes
            // again on a later play.
            if self.decoded_in_pass == 0 && !self.decoded_ever {
                return Err(SourceError::Invalid(format!(
                    "none of the {} picture file(s) of {} decodes",
                    self.files.len(),
                    self.root.display()
                )));
            }
            self.next = 0;
            self.pass += 1;
            self.decoded_in_pass = 0;
            if self.is_dir && self.repeat.allows(self.pass) {
                // Each play shows the folder as it is now: pictures removed since the last
                // play are skipped, new ones played. A folder that cannot be listed (or holds
                // no picture any more) keeps the previous list, whose files then fail as bad
                // frames until the pictures are back.
                if let Ok(files) = list_pictures(&self.root) {
                    self.files = files;
                }
            }
        }
        if !self.repeat.allows(self.pass) {
            return Err(SourceError::EndOfStream);
        }
        let path = &self.files[self.next];
        self.next += 1;
        let seq = self.seq;
        self.seq += 1;
        // A file that cannot be decoded is a bad frame: the next call moves on to the next file.
        // One that cannot even be read (removed or made unreadable by another program since
        // the folder was listed) is a bad frame too, not the end of the source, whether or not
        // a picture has decoded yet: the other files still play, a later play lists the folder
        // again, and a play in which nothing decodes ends the source above.
        let (width, height, data) = decode_file(path).map_err(|e| match e {
            SourceError::Io { path, cause } => SourceError::BadFrame {
                what: path.display().to_string(),
                reason: cause.to_string(),
            },
            e => e,
        })?;
        self.decoded_in_pass += 1;
        self.decoded_ever = true;
        Ok(Frame {
            width,
            height,
            format: PixelFormat::Rgb24,
            data,
            capture_ts: Instant::now(),
            seq,
        })
    }

    fn describe(&self) -> String {
        format!(
            "images {} ({} file{}, {})",
            self.root.display(),
            self.files.len(),
            if self.files.len() == 1 { "" } else { "s" },
            self.repeat.describe(self.pass)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{fixtures, scratch_dir, ErrorKind};

    fn drain(s: &mut impl FrameSource, max: usize) -> (Vec<Frame>, SourceError) {
        let mut v = Vec::new();
        for _ in 0..max {
            match s.next_frame() {
                Ok(f) => v.push(f),
                Err(e) => return (v, e),
            }
        }
        panic!("source did not end within {max} frames")
    }

    #[test]
    fn folder_plays_pictures_in_name_order_and_loops() {
        let mut s = ImageFiles::open(&fixtures().join("images"), Repeat::Times(2)).unwrap();
        let names: Vec<_> = s
            .files()
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["a_000.png", "b_001.png", "c_002.jpg"],
            "README.txt is skipped"
        );
        let (frames, end) = drain(&mut s, 100);
        assert!(end.is_end(), "{end}");
        assert_eq!(frames.len(), 6);
        let sizes: Vec<_> = frames.iter().map(|f| (f.width, f.height)).collect();
        assert_eq!(sizes[..3], [(64, 48), (64, 48), (32, 24)]);
        assert_eq!(
            frames[0].data, frames[3].data,
            "second play repeats the first"
        );
        assert_ne!(
            frames[0].data, frames[1].data,
            "testsrc frames 0 and 1 differ"
        );
        assert!(frames.iter().enumerate().all(|(i, f)| f.seq == i as u64));
        assert!(frames.iter().all(|f| f.format == PixelFormat::Rgb24));
        // And it stays ended.
        assert!(s.next_frame().unwrap_err().is_end());
    }

    #[test]
    fn png_decodes_to_the_ffmpeg_rgb_frame() {
        let mut s =
            ImageFiles::open(&fixtures().join("images/a_000.png"), Repeat::Times(1)).unwrap();
        let f = s.next_frame().unwrap();
        let want = std::fs::read(fixtures().join("testsrc.rgb24")).unwrap();
        assert_eq!(
            f.data, want,
            "PNG is lossless: same pixels as ffmpeg's rgb24 dump"
        );
        assert!(s.next_frame().unwrap_err().is_end());
    }

    #[test]
    fn forever_keeps_going() {
        let mut s =
            ImageFiles::open(&fixtures().join("images/a_000.png"), Repeat::Forever).unwrap();
        for i in 0..5 {
            assert_eq!(s.next_frame().unwrap().seq, i);
        }
        assert!(s.describe().contains("forever"), "{}", s.describe());
    }

    #[test]
    fn empty_or_missing_folder_is_an_error() {
        let dir = scratch_dir("empty");
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        let err = ImageFiles::open(&dir, Repeat::Times(1)).unwrap_err();
        assert!(err.to_string().contains("holds no .png"), "{err}");
        let err = ImageFiles::open(&dir.join("nope"), Repeat::Times(1)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fatal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_picture_is_a_bad_frame_and_the_next_one_plays() {
        let dir = scratch_dir("corrupt");
        let good = std::fs::read(fixtures().join("images/a_000.png")).unwrap();
        std::fs::write(dir.join("1.png"), &good[..good.len() / 2]).unwrap();
        std::fs::write(dir.join("2.jpg"), b"\xff\xd8\xff\xe0 definitely not a jpeg").unwrap();
        std::fs::write(dir.join("3.png"), &good).unwrap();
        let mut s = ImageFiles::open(&dir, Repeat::Times(1)).unwrap();
        assert_eq!(s.next_frame().unwrap_err().kind(), ErrorKind::BadFrame);
        assert_eq!(s.next_frame().unwrap_err().kind(), ErrorKind::BadFrame);
        assert_eq!(s.next_frame().unwrap().width, 64);
        assert!(s.next_frame().unwrap_err().is_end());
        // only corrupt files, played forever: refused after one play, not an endless
        // stream of bad frames
        std::fs::remove_file(dir.join("3.png")).unwrap();
        let mut s = ImageFiles::open(&dir, Repeat::Forever).unwrap();
        assert_eq!(s.next_frame().unwrap_err().kind(), ErrorKind::BadFrame);
        assert_eq!(s.next_frame().unwrap_err().kind(), ErrorKind::BadFrame);
        let e = s.next_frame().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fatal, "{e}");
        assert!(
            e.to_string().contains("none of the 2 picture file(s)"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_folder_played_in_a_loop_follows_files_removed_and_added() {
        // A picture removed while the folder plays is a bad frame (it used to be an I/O error
        // that stopped the run with exit code 4), and each play lists the folder again.
        let dir = scratch_dir("relist");
        let a = std::fs::read(fixtures().join("images/a_000.png")).unwrap();
        let c = std::fs::read(fixtures().join("images/c_002.jpg")).unwrap();
        std::fs::write(dir.join("a.png"), &a).unwrap();
        std::fs::write(dir.join("b.png"), &a).unwrap();
        let mut s = ImageFiles::open(&dir, Repeat::Forever).unwrap();
        assert_eq!(s.next_frame().unwrap().width, 64, "a");
        std::fs::remove_file(dir.join("b.png")).unwrap();
        let e = s.next_frame().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadFrame, "{e}");
        assert!(e.to_string().contains("b.png"), "{e}");
        std::fs::write(dir.join("c.jpg"), &c).unwrap();
        // Next play: a, then the new c (32x24); b is gone.
        assert_eq!(s.next_frame().unwrap().width, 64, "a");
        assert_eq!(s.next_frame().unwrap().width, 32, "c, added");
        assert_eq!(s.files().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_first_picture_removed_before_it_plays_is_a_bad_frame_and_the_next_one_plays() {
        // Review finding (session 12): before any picture had decoded, a listed picture that
        // could no longer be read stopped the run (exit 4) although the others would play.
        let dir = scratch_dir("first-gone");
        let a = std::fs::read(fixtures().join("images/a_000.png")).unwrap();
        std::fs::write(dir.join("a.png"), &a).unwrap();
        std::fs::write(dir.join("b.png"), &a).unwrap();
        let mut s = ImageFiles::open(&dir, Repeat::Times(1)).unwrap();
        std::fs::remove_file(dir.join("a.png")).unwrap();
        let e = s.next_frame().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadFrame, "{e}");
        assert!(e.to_string().contains("a.png"), "{e}");
        assert_eq!(s.next_frame().unwrap().width, 64, "b");
        assert!(s.next_frame().unwrap_err().is_end());
        // Every listed picture gone before one played: still refused at the end of the play.
        std::fs::write(dir.join("a.png"), &a).unwrap();
        let mut s = ImageFiles::open(&dir, Repeat::Forever).unwrap();
        std::fs::remove_file(dir.join("a.png")).unwrap();
        std::fs::remove_file(dir.join("b.png")).unwrap();
        assert_eq!(s.next_frame().unwrap_err().kind(), ErrorKind::BadFrame);
        assert_eq!(s.next_frame().unwrap_err().kind(), ErrorKind::BadFrame);
        assert_eq!(s.next_frame().unwrap_err().kind(), ErrorKind::Fatal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_picture_rewritten_mid_stream_is_a_bad_frame_not_the_end() {
        // A single file played forever that another program rewrites: one failed read is a
        // bad frame, and the picture plays again once it decodes (it used to stop the source
        // for good after 16 good plays).
        let dir = scratch_dir("rewrite");
        let good = std::fs::read(fixtures().join("images/a_000.png")).unwrap();
        let path = dir.join("snap.png");
        std::fs::write(&path, &good).unwrap();
        let mut s = ImageFiles::open(&path, Repeat::Forever).unwrap();
        for _ in 0..3 {
            assert_eq!(s.next_frame().unwrap().width, 64);
        }
        std::fs::write(&path, b"half written").unwrap();
        for _ in 0..3 {
            assert_eq!(s.next_frame().unwrap_err().kind(), ErrorKind::BadFrame);
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(s.next_frame().unwrap().width, 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
