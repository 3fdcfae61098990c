//! The one error type of the wire crate: flat, `#[non_exhaustive]`, `Copy`.

/// Everything that can go wrong while coding or decoding shapecast bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The output buffer is too small for what must be written.
    BufferTooSmall,
    /// The input ended before the item was complete.
    Truncated,
    /// The input is not a valid encoding (bad tag, bad length, bad symbol).
    Malformed,
    /// A frame's CRC does not match its contents.
    BadCrc,
    /// A frame's authentication tag does not match (wrong key or tampering).
    BadTag,
    /// The protocol version byte is one this build does not speak.
    UnsupportedVersion,
    /// Quantization bits outside 8..=16.
    BitsOutOfRange,
    /// More points than the buffers or format allow.
    TooManyPoints,
    /// A frame larger than the configured maximum.
    FrameTooLarge,
    /// A quantized coordinate does not fit the announced bits (point coder).
    PointOutOfRange,
    /// Points handed to the point encoder are not in canonical order.
    NotCanonical,
    /// An authenticated frame whose sequence number / frame id was already
    /// accepted or lies behind the replay window.
    Replay,
    /// COBS framing is broken (a code byte points past the frame delimiter).
    Cobs,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let s = match self {
            Error::BufferTooSmall => "output buffer too small",
            Error::Truncated => "input truncated",
            Error::Malformed => "malformed input",
            Error::BadCrc => "CRC mismatch",
            Error::BadTag => "authentication tag mismatch",
            Error::UnsupportedVersion => "unsupported protocol version",
            Error::BitsOutOfRange => "quantization bits out of range (8..=16)",
            Error::TooManyPoints => "too many points",
            Error::FrameTooLarge => "frame too large",
            Error::PointOutOfRange => "quantized coordinate out of range for the bits",
            Error::NotCanonical => "points not in canonical order",
            Error::Replay => "replayed or stale authenticated frame",
            Error::Cobs => "broken COBS framing",
        };
        f.write_str(s)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}
