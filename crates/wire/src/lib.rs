//! shapecast wire format: versioned postcard messages ([`message`]), the
//! order-independent point coder ([`pointcode`]), COBS serial framing
//! ([`serial`]), UDP fragmentation ([`fragment`]) and optional pre-shared-key
//! authentication ([`auth`]). `no_std`, never allocates, never panics on
//! input. Every byte is specified in SPEC.md beside this crate.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod auth;
pub mod error;
pub mod fragment;
pub mod message;
pub mod pointcode;
pub mod serial;

pub use error::Error;

/// CRC table layout: slice-by-16 (16 KiB table, ~3x faster) with `std`,
/// one 1 KiB table on bare-metal builds to save flash. Same CRC either way.
#[cfg(feature = "std")]
type CrcTable = crc::Table<16>;
#[cfg(not(feature = "std"))]
type CrcTable = crc::Table<1>;

/// CRC-32 used everywhere in the wire format: CRC-32/ISO-HDLC (the zlib /
/// Ethernet CRC: poly 0x04C11DB7 reflected, init and xorout 0xFFFFFFFF).
pub const CRC32: crc::Crc<u32, CrcTable> = crc::Crc::<u32, CrcTable>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32 of the concatenation of `parts`.
pub fn crc32(parts: &[&[u8]]) -> u32 {
    let mut d = CRC32.digest();
    for p in parts {
        d.update(p);
    }
    d.finalize()
}
