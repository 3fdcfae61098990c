//! Host side of shapecast: receives frames from devices over UDP and/or a
//! serial port, decodes them, keeps per-device statistics and hands every
//! message to a [`Sink`] (e.g. [`PlyDirSink`], which writes PLY files).
//!
//! The [`Receiver`] runs in-process (one reader thread per transport plus one
//! worker thread), so other programs (the edge runtime's `demo`, tests,
//! benchmarks) can embed it; the `shapecast-host` binary is a thin CLI over it.
//!
//! Memory is bounded: fixed reassembly slots, a bounded queue between the
//! readers and the worker (frames are dropped and counted when it is full), a
//! bounded number of tracked devices (an idle one makes room for a new one) and
//! a bounded point count per message. Sinks never replace an existing file.
//! Rules, limits and exit codes: crates/host/README.md.

pub mod convert;
pub mod mcap;
pub mod receiver;
pub mod sink;
pub mod stats;

pub use mcap::McapSink;
pub use receiver::{Event, Receiver, ReceiverConfig, Source};
pub use sink::{FnSink, PlyDirSink, PngDirSink, Sink};
pub use stats::{DeviceStats, HostStats};

/// Errors of the host library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// A transport failed (bind, open, read).
    #[error("link error")]
    Link(#[from] shapecast_link::LinkError),
    /// Wire decoding failed.
    #[error("wire format error")]
    Wire(#[from] shapecast_wire::Error),
    /// A message decoded but its contents are inconsistent.
    #[error("cannot decode frame contents: {0}")]
    Decode(&'static str),
    /// A point-cloud message announces more points than the host decodes from one
    /// message: more than [`convert::MAX_POINTS`] in all, or more than its bytes of point
    /// code can plausibly hold ([`convert::FREE_POINTS`] + [`convert::POINTS_PER_CODE_BYTE`]
    /// per byte).
    #[error(
        "point cloud announces {points} points in {code_bytes} bytes of point code; at most \
         {limit} are accepted (host limits: {} points per message, and {} plus {} per byte \
         of point code)",
        convert::MAX_POINTS,
        convert::FREE_POINTS,
        convert::POINTS_PER_CODE_BYTE
    )]
    TooManyPoints {
        /// Points announced by all hypotheses together.
        points: u64,
        /// Bytes of point code of all hypotheses together.
        code_bytes: u64,
        /// The most accepted for this message.
        limit: u64,
    },
    /// Reading or writing a PLY/XYZ file failed.
    #[error("PLY/XYZ file error")]
    Ply(#[from] shapecast_geom::ply::PlyError),
    /// File system or thread failure.
    #[error("I/O error")]
    Io(#[from] std::io::Error),
    /// The configuration asks for nothing or something impossible.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// `e` and its sources, `outer: inner: ...` (what anyhow's `{:#}` prints), for log lines.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
