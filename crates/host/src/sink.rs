//! Consumers of received messages.

use shapecast_geom::atomic::{create_new_file, remove_stale_temps, write_via_temp_no_clobber};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shapecast_geom::ply::write_ply;
use shapecast_geom::render::{render_tile, Canvas};
use std::io::Write;

use crate::{Event, HostError};

/// Receives every decoded message on the receiver's worker thread.
pub trait Sink: Send + 'static {
    /// Handles one message; returns the number of files written.
    fn on_message(&mut self, ev: &Event<'_>) -> Result<usize, HostError>;

    /// Called once after the last message (the receiver stopped): flush and close files.
    fn close(&mut self) -> Result<(), HostError> {
        Ok(())
    }
}

/// Versions of one file name a sink tries (`<frame_id>.ply`, `<frame_id>.1.ply`, ...,
/// `<frame_id>.999.ply`) before giving up with an error.
pub const MAX_VERSIONS: u32 = 1000;

/// Devices whose current version number a sink remembers (bounded; forgetting one only
/// costs a few failed link calls at its next frame).
const MAX_HINTS: usize = 4096;

/// `<frame_id>[_h<k>][.<n>].<ext>` under `<dir>/<device>/`.
fn versioned(dir: &Path, device: u32, frame_id: u32, k: usize, n: u32, ext: &str) -> PathBuf {
    let h = if k == 0 {
        String::new()
    } else {
        format!("_h{k}")
    };
    let v = if n == 0 {
        String::new()
    } else {
        format!(".{n}")
    };
    dir.join(device.to_string())
        .join(format!("{frame_id}{h}{v}.{ext}"))
}

/// Per device, the version number its last frame was written under: the next frame of
/// the device tries that one first, so that the files of one device run share a suffix.
#[derive(Debug, Clone, Default)]
struct Versions(BTreeMap<u32, u32>);

impl Versions {
    fn start(&self, dev: u32) -> u32 {
        self.0.get(&dev).copied().unwrap_or(0)
    }

    fn set(&mut self, dev: u32, n: u32, path: &Path) {
        if n != self.start(dev) {
            log::info!(
                "device {dev}: earlier files under the same frame ids (a device restart?); \
                 writing {} and on",
                path.display()
            );
        }
        if self.0.len() >= MAX_HINTS && !self.0.contains_key(&dev) {
            self.0.clear();
        }
        self.0.insert(dev, n);
    }
}

/// How old a temporary file must be before a new sink removes it as left by a killed writer.
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes what killed writers left under a sink's folder (their temporary files, which
/// can be hard links to published files), logging how many.
fn sweep_stale_temps(dir: &Path) {
    let n = remove_stale_temps(dir, STALE_TEMP_AGE);
    if n > 0 {
        log::info!(
            "removed {n} temporary file(s) left by interrupted writers under {}",
            dir.display()
        );
    }
}

/// Writes `write`'s file under the first free version `n >= from` of `path(n)`; returns
/// the version used. Never replaces a file.
fn write_new(
    from: u32,
    path: impl Fn(u32) -> PathBuf,
    write: impl FnOnce(&Path) -> Result<(), HostError>,
) -> Result<(u32, PathBuf), HostError> {
    let from = from.min(MAX_VERSIONS - 1);
    let got = write_via_temp_no_clobber((from..MAX_VERSIONS).map(&path), write)?;
    let n = (from..MAX_VERSIONS)
        .find(|&n| path(n) == got)
        .unwrap_or(from);
    Ok((n, got))
}

/// Writes every frame's geometry as PLY under a folder:
/// `<dir>/<device>/<frame_id>.ply` for the first hypothesis and
/// `<dir>/<device>/<frame_id>_h<k>.ply` for hypothesis `k >= 1`; meshes with
/// faces, voxel grids as the points of occupied cell centres.
///
/// Nothing is ever replaced: device frame ids restart at 0 when the device restarts, so
/// when `<frame_id>.ply` exists the frame goes to the next free version
/// `<frame_id>.<n>.ply` (`<frame_id>_h<k>.<n>.ply`), n = 1, 2, ... (at most
/// [`MAX_VERSIONS`]), and the device's later frames try the same n first. Files appear
/// whole (written under a temporary name, then linked to the final one).
#[derive(Debug, Clone)]
pub struct PlyDirSink {
    dir: PathBuf,
    versions: Versions,
}

impl PlyDirSink {
    /// Creates `dir` if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, HostError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        sweep_stale_temps(&dir);
        Ok(Self {
            dir,
            versions: Versions::default(),
        })
    }

    /// Path of hypothesis `k` of frame `frame_id` of `device` when no earlier file had the
    /// name (the common case: an empty folder and one run of each device).
    pub fn path(dir: &Path, device: u32, frame_id: u32, k: usize) -> PathBuf {
        Self::versioned_path(dir, device, frame_id, k, 0)
    }

    /// Path of version `n` of hypothesis `k` of frame `frame_id` of `device`: version 0 is
    /// [`path`](Self::path), version n >= 1 `<frame_id>[_h<k>].<n>.ply`.
    pub fn versioned_path(dir: &Path, device: u32, frame_id: u32, k: usize, n: u32) -> PathBuf {
        versioned(dir, device, frame_id, k, n, "ply")
    }
}

impl Sink for PlyDirSink {
    fn on_message(&mut self, ev: &Event<'_>) -> Result<usize, HostError> {
        let Some(frame_id) = ev.message.frame_id() else {
            return Ok(0);
        };
        let dev = ev.message.device_id();
        if ev.geometry.is_empty() {
            return Ok(0);
        }
        std::fs::create_dir_all(self.dir.join(dev.to_string()))?;
        let mut from = self.versions.start(dev);
        for (k, g) in ev.geometry.iter().enumerate() {
            // Written under a temporary name and linked to a free final name: a reader
            // never sees a partial file and no earlier file is replaced.
            let (n, path) = write_new(
                from,
                |n| Self::versioned_path(&self.dir, dev, frame_id, k, n),
                |tmp| {
                    // created here, never through a name planted at the temporary path
                    let f = create_new_file(tmp)?;
                    write_ply(f, g).map_err(HostError::from)
                },
            )?;
            if k == 0 {
                self.versions.set(dev, n, &path);
                from = n;
            }
        }
        Ok(ev.geometry.len())
    }
}

/// Writes a picture of every frame under a folder: `<dir>/<device>/<frame_id>.png`, one
/// row of 256-pixel tiles: the first hypothesis (or the voxel centres, or the mesh vertices)
/// seen from two sides, then every further hypothesis from the first side; labels coloured.
/// Never replaces a file: as [`PlyDirSink`], an existing name makes `<frame_id>.<n>.png`.
#[derive(Debug, Clone)]
pub struct PngDirSink {
    dir: PathBuf,
    versions: Versions,
}

/// Side of one tile of [`PngDirSink`]'s pictures, pixels.
pub const PNG_TILE: u32 = 256;

impl PngDirSink {
    /// Creates `dir` if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, HostError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        sweep_stale_temps(&dir);
        Ok(Self {
            dir,
            versions: Versions::default(),
        })
    }

    /// Path of the picture of frame `frame_id` of `device` when no earlier file had the
    /// name (the common case).
    pub fn path(dir: &Path, device: u32, frame_id: u32) -> PathBuf {
        Self::versioned_path(dir, device, frame_id, 0)
    }

    /// Path of version `n` of the picture: version 0 is [`path`](Self::path), version
    /// n >= 1 `<frame_id>.<n>.png`.
    pub fn versioned_path(dir: &Path, device: u32, frame_id: u32, n: u32) -> PathBuf {
        versioned(dir, device, frame_id, 0, n, "png")
    }
}

impl Sink for PngDirSink {
    fn on_message(&mut self, ev: &Event<'_>) -> Result<usize, HostError> {
        let (Some(frame_id), Some(b)) = (ev.message.frame_id(), ev.message.bounds()) else {
            return Ok(0);
        };
        let Some(first) = ev.geometry.first() else {
            return Ok(0);
        };
        let dev = ev.message.device_id();
        let bounds = (b.min, b.max);
        let tiles = ev.geometry.len() as u32 + 1;
        let mut sheet = Canvas::new(tiles * PNG_TILE, PNG_TILE, [0, 0, 0]);
        let views = [(first, 35.0f32), (first, -55.0)]
            .into_iter()
            .chain(ev.geometry[1..].iter().map(|g| (g, 35.0)));
        for (k, (g, yaw)) in views.enumerate() {
            let tile = render_tile(&g.vertices, g.labels.as_deref(), PNG_TILE, bounds, yaw);
            sheet.blit(&tile, k as i64 * i64::from(PNG_TILE), 0);
        }
        std::fs::create_dir_all(self.dir.join(dev.to_string()))?;
        let img = image::RgbImage::from_raw(sheet.width, sheet.height, sheet.rgb)
            .ok_or(HostError::Decode("picture buffer size"))?;
        // Encoded in memory and written with one `fs::write`: `save_with_format` writes
        // through a BufWriter it never flushes, so a full disk could cut the file short
        // without an error.
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| HostError::Io(std::io::Error::other(e)))?;
        let (n, path) = write_new(
            self.versions.start(dev),
            |n| Self::versioned_path(&self.dir, dev, frame_id, n),
            |tmp| Ok(create_new_file(tmp)?.write_all(&png)?),
        )?;
        self.versions.set(dev, n, &path);
        Ok(1)
    }
}

/// An optional sink: `None` takes every message and writes nothing.
impl<S: Sink> Sink for Option<S> {
    fn on_message(&mut self, ev: &Event<'_>) -> Result<usize, HostError> {
        self.as_mut().map_or(Ok(0), |s| s.on_message(ev))
    }

    fn close(&mut self) -> Result<(), HostError> {
        self.as_mut().map_or(Ok(()), Sink::close)
    }
}

/// A sink from a closure.
#[derive(Debug)]
pub struct FnSink<F>(pub F);

impl<F> Sink for FnSink<F>
where
    F: FnMut(&Event<'_>) -> Result<usize, HostError> + Send + 'static,
{
    fn on_message(&mut self, ev: &Event<'_>) -> Result<usize, HostError> {
        (self.0)(ev)
    }
}

/// Two sinks in turn (e.g. PLY files plus a test's checks).
#[derive(Debug)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: Sink, B: Sink> Sink for Tee<A, B> {
    fn on_message(&mut self, ev: &Event<'_>) -> Result<usize, HostError> {
        // both sinks see every message, whatever the other did; the first error is returned
        let a = self.0.on_message(ev);
        let b = self.1.on_message(ev);
        Ok(a? + b?)
    }

    fn close(&mut self) -> Result<(), HostError> {
        let a = self.0.close();
        let b = self.1.close();
        a.and(b)
    }
}
