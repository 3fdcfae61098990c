//! Camera through `nokhwa` (cargo feature `camera-nokhwa`, V4L2 input only): the alternative
//! backend to [`super::v4l_camera`].
//!
//! nokhwa's camera object is not `Send`, so it lives on its own capture thread, which hands
//! frames over through a channel of one slot (bounded: a slow consumer makes the thread wait,
//! the driver then drops frames, the newest one wins).

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
    Resolution,
};
use nokhwa::Camera;

use super::{Frame, FrameSource, PixelFormat, SourceError};
use crate::config::CameraConfig;

/// How long to wait for one frame (or for the camera to open) before calling it lost.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(3);

/// A camera nokhwa found: (index, name).
pub fn list_cameras() -> Result<Vec<(String, String)>, SourceError> {
    let cams = nokhwa::query(ApiBackend::Video4Linux)
        .map_err(|e| SourceError::NoCamera(format!("nokhwa: {e}")))?;
    if cams.is_empty() {
        return Err(SourceError::NoCamera("nokhwa found no V4L2 camera".into()));
    }
    Ok(cams
        .iter()
        .map(|c| (c.index().to_string(), c.human_name()))
        .collect())
}

fn frame_format(f: PixelFormat) -> Option<FrameFormat> {
    Some(match f {
        PixelFormat::Yuyv => FrameFormat::YUYV,
        PixelFormat::Mjpeg => FrameFormat::MJPEG,
        PixelFormat::Nv12 => FrameFormat::NV12,
        PixelFormat::Grey => FrameFormat::GRAY,
        PixelFormat::Rgb24 => FrameFormat::RAWRGB,
        _ => return None,
    })
}

fn pixel_format(f: FrameFormat) -> Option<PixelFormat> {
    Some(match f {
        FrameFormat::YUYV => PixelFormat::Yuyv,
        FrameFormat::MJPEG => PixelFormat::Mjpeg,
        FrameFormat::NV12 => PixelFormat::Nv12,
        FrameFormat::GRAY => PixelFormat::Grey,
        FrameFormat::RAWRGB => PixelFormat::Rgb24,
        _ => return None,
    })
}

/// What the capture thread sends.
type Msg = Result<Frame, SourceError>;

/// A camera opened through nokhwa, captured on its own thread.
#[derive(Debug)]
pub struct NokhwaCamera {
    device: String,
    rx: Receiver<Msg>,
    desc: String,
    seq: u64,
}

impl NokhwaCamera {
    /// Opens `cfg.device` (an index such as `0`, or `/dev/videoN`) with the configured format,
    /// size and rate (exactly; a camera that cannot is [`SourceError::Invalid`]).
    pub fn open(cfg: &CameraConfig) -> Result<NokhwaCamera, SourceError> {
        let index: u32 = cfg
            .device
            .strip_prefix("/dev/video")
            .unwrap_or(&cfg.device)
            .parse()
            .map_err(|_| {
                SourceError::Invalid(format!(
                    "nokhwa needs camera.device as an index or /dev/videoN, got `{}`",
                    cfg.device
                ))
            })?;
        let path = format!("/dev/video{index}");
        if !std::path::Path::new(&path).exists() {
            return Err(SourceError::NoCamera(format!("{path} does not exist")));
        }
        let ff = frame_format(cfg.format)
            .ok_or_else(|| SourceError::Invalid(format!("nokhwa cannot capture {}", cfg.format)))?;
        let want = CameraFormat::new(Resolution::new(cfg.width, cfg.height), ff, cfg.fps);
        let (tx, rx) = mpsc::sync_channel::<Msg>(1);
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<String, SourceError>>(1);
        let dev = path.clone();
        std::thread::Builder::new()
            .name(format!("nokhwa {path}"))
            .spawn(move || capture(index, want, dev, tx, ready_tx))
            .map_err(|e| SourceError::Invalid(format!("cannot start the capture thread: {e}")))?;
        let desc = match ready_rx.recv_timeout(FRAME_TIMEOUT * 2) {
            Ok(Ok(desc)) => desc,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(SourceError::NoCamera(format!(
                    "{path}: no answer while opening"
                )))
            }
        };
        Ok(NokhwaCamera {
            device: path,
            rx,
            desc,
            seq: 0,
        })
    }
}

/// The capture thread: opens the camera, reports how, then sends frames until the receiver is
/// gone or the camera fails.
fn capture(
    index: u32,
    want: CameraFormat,
    dev: String,
    tx: SyncSender<Msg>,
    ready: SyncSender<Result<String, SourceError>>,
) {
    let requested = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Exact(want));
    let mut cam = match Camera::with_backend(
        CameraIndex::Index(index),
        requested,
        ApiBackend::Video4Linux,
    ) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(SourceError::NoCamera(format!("{dev}: {e}"))));
            return;
        }
    };
    if let Err(e) = cam.open_stream() {
        let _ = ready.send(Err(SourceError::Disconnected {
            device: dev,
            reason: e.to_string(),
        }));
        return;
    }
    let got = cam.camera_format();
    let Some(format) = pixel_format(got.format()) else {
        let _ = ready.send(Err(SourceError::Invalid(format!(
            "{dev}: nokhwa negotiated unsupported {:?}",
            got.format()
        ))));
        return;
    };
    let (width, height) = (got.resolution().width(), got.resolution().height());
    if ready
        .send(Ok(format!(
            "nokhwa camera {dev} ({width}x{height} {format} @ {} fps)",
            got.frame_rate()
        )))
        .is_err()
    {
        return;
    }
    loop {
        let msg = match cam.frame_raw() {
            Ok(buf) => {
                let capture_ts = Instant::now();
                super::convert::unpad(format, width, height, 0, &buf)
                    .map(|data| Frame {
                        width,
                        height,
                        format,
                        data,
                        capture_ts,
                        seq: 0,
                    })
                    .map_err(|e| SourceError::BadFrame {
                        what: dev.clone(),
                        reason: e.to_string(),
                    })
            }
            Err(e) => Err(SourceError::Disconnected {
                device: dev.clone(),
                reason: e.to_string(),
            }),
        };
        let fatal = matches!(msg, Err(SourceError::Disconnected { .. }));
        if tx.send(msg).is_err() || fatal {
            let _ = cam.stop_stream();
            return;
        }
    }
}

impl FrameSource for NokhwaCamera {
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        match self.rx.recv_timeout(FRAME_TIMEOUT) {
            Ok(Ok(mut f)) => {
                f.seq = self.seq;
                self.seq += 1;
                Ok(f)
            }
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Timeout) => Err(SourceError::Disconnected {
                device: self.device.clone(),
                reason: format!("no frame for {} s", FRAME_TIMEOUT.as_secs()),
            }),
            Err(RecvTimeoutError::Disconnected) => Err(SourceError::Disconnected {
                device: self.device.clone(),
                reason: "capture thread ended".into(),
            }),
        }
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_map_both_ways() {
        for f in PixelFormat::CAMERA {
            let ff = frame_format(f).unwrap();
            assert_eq!(pixel_format(ff), Some(f));
        }
        assert_eq!(frame_format(PixelFormat::Bgr24), None);
    }

    #[test]
    fn absent_camera_is_transient_and_bad_device_names_are_invalid() {
        let mut cfg = crate::config::Config::builtin().unwrap().camera;
        cfg.backend = crate::config::CameraBackend::Nokhwa;
        cfg.device = "/dev/video4095".into();
        let err = NokhwaCamera::open(&cfg).unwrap_err();
        assert!(err.is_transient(), "{err}");
        cfg.device = "front".into();
        let err = NokhwaCamera::open(&cfg).unwrap_err();
        assert_eq!(err.kind(), crate::source::ErrorKind::Fatal, "{err}");
    }

    #[test]
    fn enumeration_gives_cameras_or_a_reason() {
        match list_cameras() {
            Ok(c) => assert!(!c.is_empty()),
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    }
}
