//! std transports for shapecast frames.
//!
//! * [`mailbox::LinkSender`]: the device-side, never-blocking,
//!   latest-frame-wins sender over any [`mailbox::Transport`].
//! * [`serial`]: COBS-framed frames over a serial port (`serialport`, no
//!   libudev) or any byte stream.
//! * [`udp`]: fragmented frames over UDP, reassembled on the receiver.
//!
//! The transports carry opaque frame payloads (encoded
//! `shapecast_wire::message::Message`s); they do not look inside them.

pub mod mailbox;
pub mod serial;
pub mod udp;

pub use mailbox::{LinkCounters, LinkSender, Transport};

/// Errors of the transports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// Socket / file I/O failure.
    #[error("I/O error")]
    Io(#[from] std::io::Error),
    /// Opening or configuring a serial port failed.
    #[error("serial port error")]
    Serial(#[from] serialport::Error),
    /// Wire-format error (framing, fragmenting, authentication).
    #[error("wire format error")]
    Wire(#[from] shapecast_wire::Error),
    /// The frame is larger than the transport accepts.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// Maximum accepted.
        max: usize,
    },
    /// The sender was closed.
    #[error("link closed")]
    Closed,
}

/// Whether an I/O error only means "nothing arrived in time" (a read
/// timeout, a non-blocking read with no data, or a signal): the caller polls
/// again instead of failing.
pub(crate) fn is_idle(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::Interrupted
    )
}
