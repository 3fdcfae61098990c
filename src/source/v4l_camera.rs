//! V4L2 camera through the `v4l` crate (cargo feature `camera`): MMAP streaming of YUYV,
//! MJPEG, NV12, RGB24 or GREY frames.

use std::path::Path;
use std::time::{Duration, Instant};

use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::{Frame, FrameSource, PixelFormat, SourceError};
use crate::config::CameraConfig;

/// MMAP buffers queued in the driver (bounded).
pub const BUFFERS: u32 = 4;

/// How long to wait for one frame before calling the camera lost.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// A V4L2 capture device found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    pub path: String,
    pub name: String,
    /// The pixel formats it offers that shapecast understands (V4L2 fourcc strings otherwise).
    pub formats: Vec<String>,
}

/// Lists the V4L2 devices (`/dev/video*`) that can capture. An empty list is an error
/// ([`SourceError::NoCamera`]) saying so, so the caller can print it as is.
pub fn list_cameras() -> Result<Vec<CameraInfo>, SourceError> {
    list_cameras_in(Path::new("/dev"))
}

/// [`list_cameras`] over the `video*` nodes of another folder (tests).
pub fn list_cameras_in(dir: &Path) -> Result<Vec<CameraInfo>, SourceError> {
    let mut nodes: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| SourceError::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix("video")
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .collect();
    nodes.sort();
    let mut found = Vec::new();
    for node in &nodes {
        let Ok(dev) = Device::with_path(node) else {
            continue;
        };
        let Ok(caps) = dev.query_caps() else { continue };
        if !caps
            .capabilities
            .contains(v4l::capability::Flags::VIDEO_CAPTURE)
        {
            continue;
        }
        let formats = dev
            .enum_formats()
            .unwrap_or_default()
            .into_iter()
            .map(|d| match PixelFormat::from_fourcc(d.fourcc.repr) {
                Some(f) => f.name().to_owned(),
                None => String::from_utf8_lossy(&d.fourcc.repr).into_owned(),
            })
            .collect();
        found.push(CameraInfo {
            path: node.display().to_string(),
            name: caps.card,
            formats,
        });
    }
    if found.is_empty() {
        return Err(SourceError::NoCamera(if nodes.is_empty() {
            format!("no V4L2 device: {} holds no video* node", dir.display())
        } else {
            format!(
                "none of the {} video* nodes in {} can capture",
                nodes.len(),
                dir.display()
            )
        }));
    }
    Ok(found)
}

/// An open V4L2 camera, streaming.
pub struct V4lCamera {
    device: String,
    width: u32,
    height: u32,
    format: PixelFormat,
    stride: u32,
    // Declared before `_dev` so it is dropped first.
    stream: Option<Stream<'static>>,
    _dev: Device,
    seq: u64,
}

impl std::fmt::Debug for V4lCamera {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

fn lost(device: &str, e: &std::io::Error) -> SourceError {
    SourceError::Disconnected {
        device: device.to_owned(),
        reason: e.to_string(),
    }
}

impl V4lCamera {
    /// Opens `cfg.device` (a path, or an index such as `0`), asks for the configured format,
    /// size and frame rate, and starts MMAP streaming. A missing device is
    /// [`SourceError::NoCamera`] (transient: [`super::Reconnecting`] waits for it); a device
    /// that cannot give the format is [`SourceError::Invalid`] naming what it offers. The
    /// driver may adjust the size; the frames carry the size actually delivered.
    pub fn open(cfg: &CameraConfig) -> Result<V4lCamera, SourceError> {
        let path = match cfg.device.parse::<usize>() {
            Ok(i) => format!("/dev/video{i}"),
            Err(_) => cfg.device.clone(),
        };
        if !Path::new(&path).exists() {
            return Err(SourceError::NoCamera(format!("{path} does not exist")));
        }
        let dev =
            Device::with_path(&path).map_err(|e| SourceError::NoCamera(format!("{path}: {e}")))?;
        let mut fmt = dev.format().map_err(|e| lost(&path, &e))?;
        fmt.width = cfg.width;
        fmt.height = cfg.height;
        fmt.fourcc = FourCC::new(&cfg.format.fourcc());
        let got = dev.set_format(&fmt).map_err(|e| lost(&path, &e))?;
        if got.fourcc.repr != cfg.format.fourcc() {
            let offered: Vec<String> = dev
                .enum_formats()
                .unwrap_or_default()
                .iter()
                .map(|d| String::from_utf8_lossy(&d.fourcc.repr).into_owned())
                .collect();
            return Err(SourceError::Invalid(format!(
                "{path} cannot capture {} (fourcc {}); it offers: {}",
                cfg.format,
                String::from_utf8_lossy(&cfg.format.fourcc()),
                offered.join(", ")
            )));
        }
        if got.width != cfg.width || got.height != cfg.height {
            log::warn!(
                "{path}: asked for {}x{}, the driver gives {}x{}",
                cfg.width,
                cfg.height,
                got.width,
                got.height
            );
        }
        if let Err(e) = dev.set_params(&v4l::video::capture::Parameters::with_fps(cfg.fps)) {
            log::warn!("{path}: cannot set {} fps: {e}", cfg.fps);
        }
        let mut stream =
            Stream::with_buffers(&dev, Type::VideoCapture, BUFFERS).map_err(|e| lost(&path, &e))?;
        stream.set_timeout(FRAME_TIMEOUT);
        Ok(V4lCamera {
            device: path,
            width: got.width,
            height: got.height,
            format: cfg.format,
            stride: got.stride,
            stream: Some(stream),
            _dev: dev,
            seq: 0,
        })
    }
}

impl FrameSource for V4lCamera {
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| SourceError::Disconnected {
                device: self.device.clone(),
                reason: "stream closed".into(),
            })?;
        let (buf, meta) = match stream.next() {
            Ok(x) => x,
            Err(e) => {
                let err = lost(&self.device, &e);
                self.close();
                return Err(err);
            }
        };
        let capture_ts = Instant::now();
        let used = meta.bytesused as usize;
        let data = super::convert::unpad(
            self.format,
            self.width,
            self.height,
            self.stride,
            &buf[..used.min(buf.len())],
        )
        .map_err(|e| SourceError::BadFrame {
            what: self.device.clone(),
            reason: e.to_string(),
        })?;
        let seq = self.seq;
        self.seq += 1;
        Ok(Frame {
            width: self.width,
            height: self.height,
            format: self.format,
            data,
            capture_ts,
            seq,
        })
    }

    fn describe(&self) -> String {
        format!(
            "v4l camera {} ({}x{} {})",
            self.device, self.width, self.height, self.format
        )
    }
}

impl V4lCamera {
    /// Stops streaming. `v4l`'s stream panics in its destructor on an unexpected STREAMOFF
    /// error other than "no such device"; a camera must never take the process down, so the
    /// drop is contained.
    fn close(&mut self) {
        if let Some(s) = self.stream.take() {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(s))).is_err() {
                log::warn!("{}: error while stopping the stream (ignored)", self.device);
            }
        }
    }
}

impl Drop for V4lCamera {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_video_nodes_is_a_clear_no_camera_error() {
        let dir = std::env::temp_dir().join(format!("shapecast-v4l-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Names that are not video nodes are not tried.
        std::fs::write(dir.join("videoX"), b"").unwrap();
        std::fs::write(dir.join("null"), b"").unwrap();
        let err = list_cameras_in(&dir).unwrap_err();
        assert!(err.is_transient());
        assert!(err.to_string().contains("holds no video* node"), "{err}");
        // A node that is not a V4L2 device is skipped, not fatal.
        std::fs::write(dir.join("video0"), b"").unwrap();
        let err = list_cameras_in(&dir).unwrap_err();
        assert!(
            err.to_string().contains("none of the 1 video* nodes"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn machine_enumeration_gives_cameras_or_a_reason() {
        match list_cameras() {
            Ok(cams) => assert!(cams.iter().all(|c| c.path.starts_with("/dev/video"))),
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    }

    #[test]
    fn absent_device_is_transient_no_camera() {
        let mut cfg = crate::config::Config::builtin().unwrap().camera;
        cfg.device = "/dev/video-shapecast-absent".into();
        let err = V4lCamera::open(&cfg).unwrap_err();
        assert!(matches!(err, SourceError::NoCamera(_)), "{err}");
        cfg.device = "/dev/null".into();
        let err = V4lCamera::open(&cfg).unwrap_err();
        assert!(
            err.is_transient() || err.kind() == crate::source::ErrorKind::Fatal,
            "{err}"
        );
    }
}
