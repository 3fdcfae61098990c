//! Frame sources: cameras (v4l, nokhwa), image files, raw dumps, recorded wire streams.
//!
//! Every image source implements [`FrameSource`] and hands out [`Frame`]s in the pixel format
//! it got them in; [`convert::to_rgb8`] turns any of them into packed RGB8. A recorded wire
//! stream is not made of pictures: [`WireReplay`] hands out its COBS frames as bytes.
//! [`open`] builds the source a [`Config`] asks for.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::{CameraBackend, Config, SourceKind};

pub mod convert;
mod files;
mod jpeg;
mod raw;
mod reconnect;
mod replay;

#[cfg(feature = "camera")]
pub mod v4l_camera;

#[cfg(feature = "camera-nokhwa")]
pub mod nokhwa_camera;

pub use files::ImageFiles;
pub use raw::RawFrames;
pub use reconnect::{Backoff, Reconnecting};
pub use replay::WireReplay;

/// Pixel layout of a [`Frame`]'s bytes. All formats are tightly packed (no row padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed 4:2:2, bytes Y0 U Y1 V (V4L2 `YUYV`, ffmpeg `yuyv422`).
    Yuyv,
    /// Packed 4:2:2, bytes U Y0 V Y1 (V4L2 `UYVY`, ffmpeg `uyvy422`).
    Uyvy,
    /// 4:2:0, Y plane then interleaved UV plane (V4L2 `NV12`).
    Nv12,
    /// 4:2:0, Y plane, U plane, V plane (V4L2 `YU12`, ffmpeg `yuv420p`, "I420").
    Yuv420,
    /// Packed R G B (V4L2 `RGB3`).
    Rgb24,
    /// Packed B G R (V4L2 `BGR3`).
    Bgr24,
    /// 8-bit luma only, full range (V4L2 `GREY`).
    Grey,
    /// One JPEG picture per frame (V4L2 `MJPG`); variable length.
    Mjpeg,
}

impl PixelFormat {
    /// Every format.
    pub const ALL: [PixelFormat; 8] = [
        PixelFormat::Yuyv,
        PixelFormat::Uyvy,
        PixelFormat::Nv12,
        PixelFormat::Yuv420,
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Grey,
        PixelFormat::Mjpeg,
    ];

    /// The formats the camera backends ask a device for.
    pub const CAMERA: [PixelFormat; 5] = [
        PixelFormat::Yuyv,
        PixelFormat::Mjpeg,
        PixelFormat::Nv12,
        PixelFormat::Rgb24,
        PixelFormat::Grey,
    ];

    /// Name used in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Uyvy => "uyvy",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Yuv420 => "yuv420",
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Bgr24 => "bgr24",
            PixelFormat::Grey => "grey",
            PixelFormat::Mjpeg => "mjpeg",
        }
    }

    /// V4L2 four-character code.
    pub fn fourcc(self) -> [u8; 4] {
        *match self {
            PixelFormat::Yuyv => b"YUYV",
            PixelFormat::Uyvy => b"UYVY",
            PixelFormat::Nv12 => b"NV12",
            PixelFormat::Yuv420 => b"YU12",
            PixelFormat::Rgb24 => b"RGB3",
            PixelFormat::Bgr24 => b"BGR3",
            PixelFormat::Grey => b"GREY",
            PixelFormat::Mjpeg => b"MJPG",
        }
    }

    /// The format of a V4L2 four-character code (`JPEG` is taken as MJPEG).
    pub fn from_fourcc(code: [u8; 4]) -> Option<PixelFormat> {
        if &code == b"JPEG" {
            return Some(PixelFormat::Mjpeg);
        }
        PixelFormat::ALL.into_iter().find(|f| f.fourcc() == code)
    }

    /// Bytes of one tightly packed `width` x `height` frame; None for MJPEG (variable) or on
    /// overflow. Odd sizes round chroma up, as ffmpeg does.
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        match self {
            PixelFormat::Yuyv | PixelFormat::Uyvy => cw.checked_mul(4)?.checked_mul(h),
            PixelFormat::Nv12 | PixelFormat::Yuv420 => w
                .checked_mul(h)?
                .checked_add(cw.checked_mul(ch)?.checked_mul(2)?),
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => w.checked_mul(h)?.checked_mul(3),
            PixelFormat::Grey => w.checked_mul(h),
            PixelFormat::Mjpeg => None,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`PixelFormat::from_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pixel format `{0}` (one of: yuyv, uyvy, nv12, yuv420, rgb24, bgr24, grey, mjpeg)")]
pub struct UnknownPixelFormat(pub String);

impl FromStr for PixelFormat {
    type Err = UnknownPixelFormat;

    /// Config names, plus ffmpeg/V4L2 aliases (`yuyv422`, `gray`, `i420`, `yuv420p`, `jpeg`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "yuyv" | "yuyv422" | "yuy2" => PixelFormat::Yuyv,
            "uyvy" | "uyvy422" => PixelFormat::Uyvy,
            "nv12" => PixelFormat::Nv12,
            "yuv420" | "yuv420p" | "i420" | "yu12" => PixelFormat::Yuv420,
            "rgb24" | "rgb" | "rgb3" => PixelFormat::Rgb24,
            "bgr24" | "bgr" | "bgr3" => PixelFormat::Bgr24,
            "grey" | "gray" | "y8" => PixelFormat::Grey,
            "mjpeg" | "mjpg" | "jpeg" => PixelFormat::Mjpeg,
            _ => return Err(UnknownPixelFormat(s.to_owned())),
        })
    }
}

impl Serialize for PixelFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for PixelFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One picture from a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
    /// Tightly packed pixels ([`PixelFormat::frame_len`] bytes), or one JPEG for MJPEG.
    pub data: Vec<u8>,
    /// When the source got the frame (camera: when the driver handed it over).
    pub capture_ts: Instant,
    /// 0, 1, 2, ... per source; strictly increasing, gaps mean dropped frames.
    pub seq: u64,
}

impl Frame {
    /// Packed RGB8 pixels of this frame (see [`convert::to_rgb8`]).
    pub fn to_rgb8(&self, out: &mut Vec<u8>) -> Result<(), convert::ConvertError> {
        convert::to_rgb8(self, out)
    }
}

/// How an error of a source should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The source has nothing more to give (file sources after their last loop).
    EndOfStream,
    /// The device went away or is not there yet: reopening later may help.
    Transient,
    /// One frame was unusable; the next call may succeed.
    BadFrame,
    /// Retrying will not help (bad configuration, unreadable file, missing feature).
    Fatal,
}

/// Errors of frame sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("end of stream")]
    EndOfStream,
    /// No camera at the configured place (yet).
    #[error("no camera: {0}")]
    NoCamera(String),
    /// The camera vanished or stopped answering mid-stream.
    #[error("camera {device} lost: {reason}")]
    Disconnected { device: String, reason: String },
    #[error("{what}: unusable frame: {reason}")]
    BadFrame { what: String, reason: String },
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        // in the message, not a separate `source()`: `{:#}` chains name it once
        cause: std::io::Error,
    },
    /// A request the source cannot satisfy (format, size, empty folder, ...).
    #[error("{0}")]
    Invalid(String),
    #[error("{what} support is not compiled in: rebuild with `--features {feature}`")]
    NotCompiled {
        what: &'static str,
        feature: &'static str,
    },
    /// A [`Reconnecting`] source was asked to stop while waiting.
    #[error("stopped while waiting for the camera")]
    Stopped,
}

impl SourceError {
    /// How to handle this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SourceError::EndOfStream | SourceError::Stopped => ErrorKind::EndOfStream,
            SourceError::NoCamera(_) | SourceError::Disconnected { .. } => ErrorKind::Transient,
            SourceError::BadFrame { .. } => ErrorKind::BadFrame,
            SourceError::Io { .. } | SourceError::Invalid(_) | SourceError::NotCompiled { .. } => {
                ErrorKind::Fatal
            }
        }
    }

    pub fn is_end(&self) -> bool {
        self.kind() == ErrorKind::EndOfStream
    }

    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> SourceError {
        SourceError::Io {
            path: path.into(),
            cause: source,
        }
    }
}

/// Something that hands out frames one at a time.
pub trait FrameSource: Send {
    /// The next frame. Blocks until one is there (cameras) or returns at once (files).
    fn next_frame(&mut self) -> Result<Frame, SourceError>;

    /// One line saying what this source is, for logs (`images tests/x (3 files, loop 1/3)`).
    fn describe(&self) -> String;
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        (**self).next_frame()
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// How many times a file source plays its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// This many plays (>= 1; `Times(0)` behaves as 1).
    Times(u32),
    Forever,
}

impl Repeat {
    /// From the config's `source.loops` (0 = forever).
    pub fn from_loops(loops: u32) -> Repeat {
        if loops == 0 {
            Repeat::Forever
        } else {
            Repeat::Times(loops)
        }
    }

    /// Whether a play numbered `pass` (0-based) is allowed.
    pub(crate) fn allows(self, pass: u64) -> bool {
        match self {
            Repeat::Times(n) => pass < u64::from(n.max(1)),
            Repeat::Forever => true,
        }
    }

    pub(crate) fn describe(self, pass: u64) -> String {
        match self {
            Repeat::Times(n) => {
                format!("play {}/{}", (pass + 1).min(u64::from(n.max(1))), n.max(1))
            }
            Repeat::Forever => format!("play {} of forever", pass + 1),
        }
    }
}

/// What [`open`] built.
#[derive(Debug)]
pub enum Input {
    /// Pictures to run the model on.
    Frames(Box<dyn FrameSource>),
    /// Recorded wire frames to re-send as they are.
    Wire(WireReplay),
}

impl fmt::Debug for dyn FrameSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Builds the source the configuration asks for. A camera comes wrapped in [`Reconnecting`]
/// (back-off from `camera.reconnect_*`), so a camera that is absent at start or vanishes later
/// is waited for; pass a stop flag with [`Reconnecting::with_stop`] through `stop`.
pub fn open(
    config: &Config,
    stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
) -> Result<Input, SourceError> {
    let s = &config.source;
    let repeat = Repeat::from_loops(s.loops);
    Ok(match s.kind {
        SourceKind::Images => Input::Frames(Box::new(ImageFiles::open(&s.path, repeat)?)),
        SourceKind::Raw => Input::Frames(Box::new(RawFrames::open(
            &s.path,
            config.raw.width,
            config.raw.height,
            config.raw.format,
            repeat,
        )?)),
        SourceKind::Replay => Input::Wire(WireReplay::open(
            &s.path,
            repeat,
            replay::DEFAULT_MAX_FRAME,
        )?),
        SourceKind::Camera => {
            let cam = config.camera.clone();
            let backoff = Backoff::new(
                Duration::from_millis(cam.reconnect_initial_ms),
                Duration::from_millis(cam.reconnect_max_ms),
            );
            let opener = camera_opener(cam)?;
            let mut r = Reconnecting::new(opener, backoff);
            if let Some(stop) = stop {
                r = r.with_stop(stop);
            }
            Input::Frames(Box::new(r))
        }
    })
}

type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// A closure that opens the configured camera, or NotCompiled when the backend's cargo feature
/// is off.
fn camera_opener(cam: crate::config::CameraConfig) -> Result<Opener, SourceError> {
    match cam.backend {
        CameraBackend::V4l => {
            #[cfg(feature = "camera")]
            {
                Ok(Box::new(move || {
                    v4l_camera::V4lCamera::open(&cam).map(|c| Box::new(c) as Box<dyn FrameSource>)
                }))
            }
            #[cfg(not(feature = "camera"))]
            {
                let _ = cam;
                Err(SourceError::NotCompiled {
                    what: "V4L2 camera (camera.backend = \"v4l\")",
                    feature: "camera",
                })
            }
        }
        CameraBackend::Nokhwa => {
            #[cfg(feature = "camera-nokhwa")]
            {
                Ok(Box::new(move || {
                    nokhwa_camera::NokhwaCamera::open(&cam)
                        .map(|c| Box::new(c) as Box<dyn FrameSource>)
                }))
            }
            #[cfg(not(feature = "camera-nokhwa"))]
            {
                let _ = cam;
                Err(SourceError::NotCompiled {
                    what: "nokhwa camera (camera.backend = \"nokhwa\")",
                    feature: "camera-nokhwa",
                })
            }
        }
    }
}

/// The cameras a backend can see, one line each (`/dev/video0: HD Webcam (mjpeg, yuyv)`), for
/// `doctor`-style commands. [`SourceError::NoCamera`] when there is none (a clear reason),
/// [`SourceError::NotCompiled`] when the backend's cargo feature is off.
pub fn list_cameras(backend: CameraBackend) -> Result<Vec<String>, SourceError> {
    match backend {
        CameraBackend::V4l => {
            #[cfg(feature = "camera")]
            {
                Ok(v4l_camera::list_cameras()?
                    .into_iter()
                    .map(|c| format!("{}: {} ({})", c.path, c.name, c.formats.join(", ")))
                    .collect())
            }
            #[cfg(not(feature = "camera"))]
            {
                Err(SourceError::NotCompiled {
                    what: "V4L2 camera (camera.backend = \"v4l\")",
                    feature: "camera",
                })
            }
        }
        CameraBackend::Nokhwa => {
            #[cfg(feature = "camera-nokhwa")]
            {
                Ok(nokhwa_camera::list_cameras()?
                    .into_iter()
                    .map(|(i, name)| format!("/dev/video{i}: {name}"))
                    .collect())
            }
            #[cfg(not(feature = "camera-nokhwa"))]
            {
                Err(SourceError::NotCompiled {
                    what: "nokhwa camera (camera.backend = \"nokhwa\")",
                    feature: "camera-nokhwa",
                })
            }
        }
    }
}

/// Folder of the frame fixtures (tests).
#[cfg(test)]
pub(crate) fn fixtures() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames")
}

/// A fresh, empty scratch folder for one test, `<tmp>/shapecast-<tag>-<pid>` (tests): what a
/// failed run left there under the same process id (containers reuse them) is removed first.
#[cfg(test)]
pub(crate) fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shapecast-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn pixel_format_names_round_trip() {
        for f in PixelFormat::ALL {
            assert_eq!(f.name().parse::<PixelFormat>().unwrap(), f);
            assert_eq!(PixelFormat::from_fourcc(f.fourcc()), Some(f));
        }
        assert_eq!("GRAY".parse::<PixelFormat>().unwrap(), PixelFormat::Grey);
        assert_eq!("yuyv422".parse::<PixelFormat>().unwrap(), PixelFormat::Yuyv);
        assert!("yuv9".parse::<PixelFormat>().is_err());
        assert_eq!(PixelFormat::from_fourcc(*b"XXXX"), None);
    }

    #[test]
    fn frame_lengths_match_ffmpeg_files() {
        let fx = fixtures();
        for (f, file) in [
            (PixelFormat::Yuyv, "testsrc.yuyv422"),
            (PixelFormat::Uyvy, "testsrc.uyvy422"),
            (PixelFormat::Nv12, "testsrc.nv12"),
            (PixelFormat::Yuv420, "testsrc.yuv420p"),
            (PixelFormat::Rgb24, "testsrc.rgb24"),
            (PixelFormat::Bgr24, "testsrc.bgr24"),
            (PixelFormat::Grey, "testsrc.gray"),
        ] {
            let len = std::fs::metadata(fx.join(file)).unwrap().len() as usize;
            assert_eq!(f.frame_len(64, 48), Some(len), "{f}");
        }
        assert_eq!(PixelFormat::Nv12.frame_len(3, 3), Some(9 + 2 * 2 * 2));
        assert_eq!(PixelFormat::Yuyv.frame_len(3, 1), Some(8));
        assert_eq!(PixelFormat::Mjpeg.frame_len(64, 48), None);
        // Overflow is None, never a wrapped length.
        assert_eq!(PixelFormat::Rgb24.frame_len(u32::MAX, u32::MAX), None);
        assert_eq!(PixelFormat::Nv12.frame_len(u32::MAX, u32::MAX), None);
    }

    #[test]
    fn error_kinds() {
        assert_eq!(SourceError::EndOfStream.kind(), ErrorKind::EndOfStream);
        assert!(SourceError::NoCamera("x".into()).is_transient());
        assert_eq!(SourceError::Invalid("x".into()).kind(), ErrorKind::Fatal);
    }

    #[test]
    fn open_from_config_builds_file_sources() {
        let o = Overrides {
            source_kind: Some(SourceKind::Images),
            source_path: Some(fixtures().join("images")),
            loops: Some(1),
            ..Overrides::default()
        };
        let c = crate::config::load_layers(&[("base".into(), crate::config::BASE_TOML.into())], &o)
            .unwrap()
            .config;
        let Input::Frames(mut s) = open(&c, None).unwrap() else {
            panic!("images must give frames")
        };
        let mut n = 0;
        loop {
            match s.next_frame() {
                Ok(_) => n += 1,
                Err(e) if e.is_end() => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(n, 3);
    }

    #[cfg(not(feature = "camera"))]
    #[test]
    fn camera_without_feature_is_a_clear_error() {
        let c = Config::builtin().unwrap();
        let err = open(&c, None).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fatal);
        assert!(err.to_string().contains("--features camera"), "{err}");
    }

    #[test]
    fn camera_listing_gives_cameras_or_a_clear_reason() {
        for b in [CameraBackend::V4l, CameraBackend::Nokhwa] {
            match list_cameras(b) {
                Ok(list) => assert!(!list.is_empty()),
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        matches!(
                            e,
                            SourceError::NoCamera(_) | SourceError::NotCompiled { .. }
                        ),
                        "{b:?}: {text}"
                    );
                    assert!(!text.is_empty());
                }
            }
        }
    }

    #[cfg(feature = "camera")]
    #[test]
    fn camera_source_waits_for_the_camera_and_honours_stop() {
        let o = Overrides {
            camera_device: Some("/dev/video-shapecast-absent".into()),
            ..Overrides::default()
        };
        let c = crate::config::load_layers(&[("base".into(), crate::config::BASE_TOML.into())], &o)
            .unwrap()
            .config;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let Input::Frames(mut s) = open(&c, Some(stop)).unwrap() else {
            panic!("a camera gives frames")
        };
        assert!(matches!(s.next_frame(), Err(SourceError::Stopped)));
    }
}
