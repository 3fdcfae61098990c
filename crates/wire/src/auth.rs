//! Optional pre-shared-key authentication.
//!
//! Tag = the first 16 bytes of HMAC-SHA256(key, domain || message), where
//! `domain` is one byte separating the serial ([`DOMAIN_SERIAL`]) and UDP
//! ([`DOMAIN_DATAGRAM`]) uses of the same key. Verification is constant time.
//!
//! [`ReplayWindow`] is the cheap replay guard used by the serial reader and
//! the UDP reassembler (see SPEC.md, "Authentication").

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::Error;

/// Key length in bytes (256-bit pre-shared key).
pub const KEY_LEN: usize = 32;
/// Length of the truncated tag appended to authenticated frames/datagrams.
pub const TAG_LEN: usize = 16;
/// Domain byte of serial-frame tags.
pub const DOMAIN_SERIAL: u8 = b'S';
/// Domain byte of datagram tags.
pub const DOMAIN_DATAGRAM: u8 = b'U';

type HmacSha256 = Hmac<Sha256>;

/// A 256-bit pre-shared key. `Debug` never prints the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl core::fmt::Debug for Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// Wraps raw key bytes.
    pub const fn new(bytes: [u8; KEY_LEN]) -> Self {
        Key(bytes)
    }

    /// Raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses exactly 64 hex digits (either case), surrounding ASCII
    /// whitespace ignored. Anything else is [`Error::Malformed`].
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        let s = s.trim_ascii();
        let b = s.as_bytes();
        if b.len() != 2 * KEY_LEN {
            return Err(Error::Malformed);
        }
        let mut k = [0u8; KEY_LEN];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = hex_val(pair[0]).ok_or(Error::Malformed)?;
            let lo = hex_val(pair[1]).ok_or(Error::Malformed)?;
            k[i] = (hi << 4) | lo;
        }
        Ok(Key(k))
    }

    /// Reads a PSK file holding 64 hex digits (a trailing newline is fine). At most 4 KiB are
    /// read, so a wrong path (`/dev/zero`, a large file) is an error, not an unbounded read.
    #[cfg(feature = "std")]
    pub fn load(path: &std::path::Path) -> std::io::Result<Self> {
        use std::io::Read;
        const CAP: u64 = 4096;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(CAP + 1)
            .read_to_string(&mut text)?;
        if text.len() as u64 > CAP {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "PSK file is longer than 4096 bytes: it must hold exactly 64 hex digits",
            ));
        }
        Key::from_hex(&text).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "PSK file must hold exactly 64 hex digits",
            )
        })
    }

    fn mac(&self, domain: u8, parts: &[&[u8]]) -> Option<HmacSha256> {
        // HMAC accepts keys of any length, so this never fails in practice.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0).ok()?;
        mac.update(&[domain]);
        for p in parts {
            mac.update(p);
        }
        Some(mac)
    }

    /// Tag over `domain || parts[0] || parts[1] || ...`.
    pub fn tag(&self, domain: u8, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let mut t = [0u8; TAG_LEN];
        if let Some(mac) = self.mac(domain, parts) {
            let full = mac.finalize().into_bytes();
            t.copy_from_slice(&full[..TAG_LEN]);
        }
        t
    }

    /// Constant-time check of a tag made by [`Key::tag`].
    pub fn verify(&self, domain: u8, parts: &[&[u8]], tag: &[u8]) -> bool {
        if tag.len() != TAG_LEN {
            return false;
        }
        match self.mac(domain, parts) {
            Some(mac) => mac.verify_truncated_left(tag).is_ok(),
            None => false,
        }
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Width of the replay window: sequence numbers up to this far behind the
/// newest accepted one are still accepted once (reordering).
pub const REPLAY_WINDOW: u32 = 64;
/// A sequence number more than this far behind the newest accepted one is
/// taken as a sender restart and resets the window (see SPEC.md for what this
/// does and does not protect against).
pub const REPLAY_RESYNC_GAP: u32 = 1024;

/// Sliding-window anti-replay filter over 32-bit sequence numbers
/// (serial sequence counter or UDP frame id), IPsec style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    newest: u32,
    /// Bit i set = `newest - i` was accepted.
    seen: u64,
    started: bool,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

/// Verdict of [`ReplayWindow::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// Not seen before: accept (then call [`ReplayWindow::accept`]).
    Fresh,
    /// Already accepted.
    Duplicate,
    /// Behind the window but not far enough to be a restart.
    Stale,
}

impl ReplayWindow {
    /// An empty window (accepts anything first).
    pub const fn new() -> Self {
        ReplayWindow {
            newest: 0,
            seen: 0,
            started: false,
        }
    }

    /// Classifies `seq` without changing the window.
    pub fn check(&self, seq: u32) -> ReplayVerdict {
        if !self.started {
            return ReplayVerdict::Fresh;
        }
        let ahead = seq.wrapping_sub(self.newest);
        if ahead != 0 && ahead < 0x8000_0000 {
            return ReplayVerdict::Fresh;
        }
        let behind = self.newest.wrapping_sub(seq);
        if behind < REPLAY_WINDOW {
            if self.seen & (1u64 << behind) != 0 {
                ReplayVerdict::Duplicate
            } else {
                ReplayVerdict::Fresh
            }
        } else if behind > REPLAY_RESYNC_GAP {
            ReplayVerdict::Fresh
        } else {
            ReplayVerdict::Stale
        }
    }

    /// Records `seq` as accepted (call after the tag verified and
    /// [`check`](Self::check) said `Fresh`).
    pub fn accept(&mut self, seq: u32) {
        if !self.started {
            *self = ReplayWindow {
                newest: seq,
                seen: 1,
                started: true,
            };
            return;
        }
        let ahead = seq.wrapping_sub(self.newest);
        if ahead != 0 && ahead < 0x8000_0000 {
            self.seen = if ahead >= 64 { 0 } else { self.seen << ahead };
            self.seen |= 1;
            self.newest = seq;
            return;
        }
        let behind = self.newest.wrapping_sub(seq);
        if behind < REPLAY_WINDOW {
            self.seen |= 1u64 << behind;
        } else {
            // Restart of the sender: start over from this number.
            *self = ReplayWindow {
                newest: seq,
                seen: 1,
                started: true,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "std")]
    #[test]
    fn load_reads_a_key_file_and_refuses_large_ones() {
        let dir = std::env::temp_dir().join(format!("wire-psk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("psk");
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        std::fs::write(&good, hex).unwrap();
        assert_eq!(Key::load(&good).unwrap(), Key::from_hex(hex).unwrap());
        let big = dir.join("big");
        std::fs::write(&big, "a".repeat(5000)).unwrap();
        let e = Key::load(&big).unwrap_err();
        assert!(e.to_string().contains("longer than 4096 bytes"), "{e}");
        if std::path::Path::new("/dev/zero").exists() {
            let e = Key::load(std::path::Path::new("/dev/zero")).unwrap_err();
            assert!(e.to_string().contains("longer than 4096 bytes"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hex_roundtrip_and_rejects() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        let k = Key::from_hex(hex).unwrap();
        assert_eq!(k.as_bytes()[1], 0x11);
        assert_eq!(k.as_bytes()[31], 0xff);
        assert_eq!(Key::from_hex(&hex[..62]), Err(Error::Malformed));
        assert_eq!(
            Key::from_hex("zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
            Err(Error::Malformed)
        );
        assert_eq!(format!("{k:?}"), "Key(<redacted>)");
    }

    #[test]
    fn hmac_matches_reference() {
        // Reference computed independently with Python's hmac module:
        // hmac.new(b'\x0b'*32, b'SHi There', hashlib.sha256).hexdigest()[:32]
        let k = Key::new([0x0b; 32]);
        let t = k.tag(DOMAIN_SERIAL, &[b"Hi ", b"There"]);
        assert_eq!(t, hex16("2781a17ae568512af74f377f81360436"));
        assert!(k.verify(DOMAIN_SERIAL, &[b"Hi There"], &t));
        assert!(!k.verify(DOMAIN_DATAGRAM, &[b"Hi There"], &t));
        assert!(!Key::new([0x0c; 32]).verify(DOMAIN_SERIAL, &[b"Hi There"], &t));
        let mut bad = t;
        bad[15] ^= 1;
        assert!(!k.verify(DOMAIN_SERIAL, &[b"Hi There"], &bad));
        assert!(!k.verify(DOMAIN_SERIAL, &[b"Hi There"], &t[..15]));
    }

    fn hex16(s: &str) -> [u8; 16] {
        let mut o = [0u8; 16];
        for i in 0..16 {
            o[i] = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        o
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(10), ReplayVerdict::Fresh);
        w.accept(10);
        assert_eq!(w.check(10), ReplayVerdict::Duplicate);
        assert_eq!(w.check(11), ReplayVerdict::Fresh);
        assert_eq!(w.check(9), ReplayVerdict::Fresh); // reordering inside window
        w.accept(9);
        assert_eq!(w.check(9), ReplayVerdict::Duplicate);
        w.accept(100);
        assert_eq!(w.check(10), ReplayVerdict::Stale);
        assert_eq!(w.check(99), ReplayVerdict::Fresh);
        w.accept(5000);
        // far behind: sender restart
        assert_eq!(w.check(0), ReplayVerdict::Fresh);
        w.accept(0);
        assert_eq!(w.check(0), ReplayVerdict::Duplicate);
        assert_eq!(w.check(1), ReplayVerdict::Fresh);
        // wrap-around
        let mut w = ReplayWindow::new();
        w.accept(u32::MAX);
        assert_eq!(w.check(0), ReplayVerdict::Fresh);
        w.accept(0);
        assert_eq!(w.check(u32::MAX), ReplayVerdict::Duplicate);
    }
}
