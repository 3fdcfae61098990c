//! Consumers of received messages.

use shapecast_geom::atomic::write_via_temp;
use std::path::{Path, PathBuf};

use shapecast_geom::ply::save_ply;
use shapecast_geom::render::{render_tile, Canvas};

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

/// Writes every frame's geometry as PLY under a folder:
/// `<dir>/<device>/<frame_id>.ply` for the first hypothesis and
/// `<dir>/<device>/<frame_id>_h<k>.ply` for hypothesis `k >= 1`; meshes with
/// faces, voxel grids as the points of occupied cell centres.
#[derive(Debug, Clone)]
pub struct PlyDirSink {
    dir: PathBuf,
}

impl PlyDirSink {
    /// Creates `dir` if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, HostError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Path of hypothesis `k` of frame `frame_id` of `device`.
    pub fn path(dir: &Path, device: u32, frame_id: u32, k: usize) -> PathBuf {
        let d = dir.join(device.to_string());
        if k == 0 {
            d.join(format!("{frame_id}.ply"))
        } else {
            d.join(format!("{frame_id}_h{k}.ply"))
        }
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
        for (k, g) in ev.geometry.iter().enumerate() {
            // Write to a temporary name and rename, so a reader never sees a
            // partial file.
            let path = Self::path(&self.dir, dev, frame_id, k);
            write_via_temp(&path, |tmp| save_ply(tmp, g).map_err(HostError::from))?;
        }
        Ok(ev.geometry.len())
    }
}

/// Writes a picture of every frame under a folder: `<dir>/<device>/<frame_id>.png`, one
/// row of 256-pixel tiles: the first hypothesis (or the voxel centres, or the mesh vertices)
/// seen from two sides, then every further hypothesis from the first side; labels coloured.
#[derive(Debug, Clone)]
pub struct PngDirSink {
    dir: PathBuf,
}

/// Side of one tile of [`PngDirSink`]'s pictures, pixels.
pub const PNG_TILE: u32 = 256;

impl PngDirSink {
    /// Creates `dir` if needed.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, HostError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Path of the picture of frame `frame_id` of `device`.
    pub fn path(dir: &Path, device: u32, frame_id: u32) -> PathBuf {
        dir.join(device.to_string()).join(format!("{frame_id}.png"))
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
        let path = Self::path(&self.dir, dev, frame_id);
        let img = image::RgbImage::from_raw(sheet.width, sheet.height, sheet.rgb)
            .ok_or(HostError::Decode("picture buffer size"))?;
        // Encoded in memory and written with one `fs::write`: `save_with_format` writes
        // through a BufWriter it never flushes, so a full disk could cut the file short
        // without an error.
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| HostError::Io(std::io::Error::other(e)))?;
        write_via_temp::<HostError>(&path, |tmp| Ok(std::fs::write(tmp, &png)?))?;
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
