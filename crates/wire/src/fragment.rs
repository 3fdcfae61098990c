//! UDP fragmentation: a frame (any payload, usually one encoded message) is
//! cut into datagrams of at most [`MAX_DATAGRAM`] bytes, each with a
//! [`HEADER_LEN`]-byte header (layout in SPEC.md) and, with a key, a 16-byte
//! tag over header and data. [`Reassembler`] puts frames back together with
//! a fixed number of slots and hands out only whole frames whose CRC-32
//! matches.

use crate::auth::{Key, ReplayVerdict, ReplayWindow, DOMAIN_DATAGRAM, TAG_LEN};
use crate::{crc32, Error};

/// Largest datagram we send (fits a 1280-byte IPv6 minimum MTU with headers).
pub const MAX_DATAGRAM: usize = 1200;
/// Bytes of the fragment header.
pub const HEADER_LEN: usize = 28;
/// First two bytes of every datagram.
pub const MAGIC: [u8; 2] = *b"SC";
/// Version of the datagram header layout.
pub const FRAGMENT_VERSION: u8 = 1;
/// Flag bit: datagram ends with a 16-byte authentication tag.
pub const FLAG_AUTH: u8 = 0x01;
/// Most fragments one frame may have.
pub const MAX_FRAGMENTS: usize = 1024;
/// Data bytes per full datagram without / with a tag.
pub const MAX_CHUNK: usize = MAX_DATAGRAM - HEADER_LEN;
/// Data bytes per full authenticated datagram.
pub const MAX_CHUNK_AUTH: usize = MAX_CHUNK - TAG_LEN;

/// Decoded fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Flag bits ([`FLAG_AUTH`]); other bits must be zero.
    pub flags: u8,
    /// Sender id.
    pub device_id: u32,
    /// Frame number of the sender (also the replay-guard counter).
    pub frame_id: u32,
    /// Index of this fragment, `< count`.
    pub index: u16,
    /// Number of fragments of the frame, `1..=MAX_FRAGMENTS`.
    pub count: u16,
    /// Length of the whole frame.
    pub total_len: u32,
    /// Byte offset of this fragment's data in the frame.
    pub offset: u32,
    /// CRC-32 of the whole frame.
    pub frame_crc: u32,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8]) -> Result<(), Error> {
        let out = out.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = FRAGMENT_VERSION;
        out[3] = self.flags;
        out[4..8].copy_from_slice(&self.device_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.frame_id.to_le_bytes());
        out[12..14].copy_from_slice(&self.index.to_le_bytes());
        out[14..16].copy_from_slice(&self.count.to_le_bytes());
        out[16..20].copy_from_slice(&self.total_len.to_le_bytes());
        out[20..24].copy_from_slice(&self.offset.to_le_bytes());
        out[24..28].copy_from_slice(&self.frame_crc.to_le_bytes());
        Ok(())
    }

    /// Parses and sanity-checks a header (magic, version, flags, index/count,
    /// offset within the frame). Does not check tags or lengths of the data.
    pub fn parse(d: &[u8]) -> Result<Header, Error> {
        let h = d.get(..HEADER_LEN).ok_or(Error::Truncated)?;
        if h[0..2] != MAGIC {
            return Err(Error::Malformed);
        }
        if h[2] != FRAGMENT_VERSION {
            return Err(Error::UnsupportedVersion);
        }
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let hdr = Header {
            flags: h[3],
            device_id: u32_at(4),
            frame_id: u32_at(8),
            index: u16_at(12),
            count: u16_at(14),
            total_len: u32_at(16),
            offset: u32_at(20),
            frame_crc: u32_at(24),
        };
        if hdr.flags & !FLAG_AUTH != 0
            || hdr.count == 0
            || hdr.count as usize > MAX_FRAGMENTS
            || hdr.index >= hdr.count
            || hdr.offset > hdr.total_len
        {
            return Err(Error::Malformed);
        }
        Ok(hdr)
    }
}

/// Cuts one frame into datagrams. No allocation.
#[derive(Debug, Clone)]
pub struct Fragmenter<'a> {
    device_id: u32,
    frame_id: u32,
    payload: &'a [u8],
    key: Option<&'a Key>,
    crc: u32,
    chunk: usize,
    count: u16,
    next: u16,
}

impl<'a> Fragmenter<'a> {
    /// Prepares the datagrams of `payload`. [`Error::FrameTooLarge`] if it
    /// would need more than [`MAX_FRAGMENTS`] datagrams.
    pub fn new(
        device_id: u32,
        frame_id: u32,
        payload: &'a [u8],
        key: Option<&'a Key>,
    ) -> Result<Self, Error> {
        let tag = if key.is_some() { TAG_LEN } else { 0 };
        let mut f = Fragmenter {
            device_id,
            frame_id,
            payload,
            key,
            crc: crc32(&[payload]),
            chunk: MAX_DATAGRAM - HEADER_LEN - tag,
            count: 0,
            next: 0,
        };
        f.count = f.count_for(f.chunk)?;
        Ok(f)
    }

    /// Uses datagrams of at most `max` bytes instead of [`MAX_DATAGRAM`]
    /// (`max` must leave at least one data byte after header and tag).
    pub fn with_max_datagram(mut self, max: usize) -> Result<Self, Error> {
        let tag = if self.key.is_some() { TAG_LEN } else { 0 };
        if max > MAX_DATAGRAM || max <= HEADER_LEN + tag {
            return Err(Error::BufferTooSmall);
        }
        self.chunk = max - HEADER_LEN - tag;
        self.count = self.count_for(self.chunk)?;
        self.next = 0;
        Ok(self)
    }

    fn count_for(&self, chunk: usize) -> Result<u16, Error> {
        let n = self.payload.len().div_ceil(chunk).max(1);
        if n > MAX_FRAGMENTS || u32::try_from(self.payload.len()).is_err() {
            return Err(Error::FrameTooLarge);
        }
        Ok(n as u16)
    }

    /// Number of datagrams this frame takes.
    pub fn fragment_count(&self) -> u16 {
        self.count
    }

    /// Writes the next datagram into `out` and returns its length, or `None`
    /// when all were produced.
    pub fn next_datagram(&mut self, out: &mut [u8; MAX_DATAGRAM]) -> Option<usize> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let start = index as usize * self.chunk;
        let end = (start + self.chunk).min(self.payload.len());
        let data = self.payload.get(start..end).unwrap_or(&[]);
        let hdr = Header {
            flags: if self.key.is_some() { FLAG_AUTH } else { 0 },
            device_id: self.device_id,
            frame_id: self.frame_id,
            index,
            count: self.count,
            total_len: self.payload.len() as u32,
            offset: start as u32,
            frame_crc: self.crc,
        };
        hdr.write(out).ok()?;
        let mut n = HEADER_LEN;
        out.get_mut(n..n + data.len())?.copy_from_slice(data);
        n += data.len();
        if let Some(key) = self.key {
            let tag = key.tag(DOMAIN_DATAGRAM, &[&out[..n]]);
            out.get_mut(n..n + TAG_LEN)?.copy_from_slice(&tag);
            n += TAG_LEN;
        }
        Some(n)
    }
}

/// A reassembled frame, borrowed from the reassembler until the next push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Sender id from the header.
    pub device_id: u32,
    /// Sender's frame number.
    pub frame_id: u32,
    /// The whole frame, CRC checked (and tag checked with a key).
    pub payload: &'a [u8],
}

/// Counters of a [`Reassembler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblerStats {
    /// Frames delivered.
    pub complete: u64,
    /// Datagrams already received (or of an already delivered frame).
    pub duplicates: u64,
    /// Incomplete frames dropped after the timeout.
    pub expired: u64,
    /// Incomplete frames dropped to make room for a new one.
    pub evicted: u64,
    /// Reassembled frames whose CRC-32 did not match (dropped).
    pub bad_crc: u64,
    /// Datagrams whose tag did not verify, or unauthenticated ones when a key is set.
    pub bad_tag: u64,
    /// Datagrams with a bad header or inconsistent with their frame.
    pub malformed: u64,
    /// Frames larger than the reassembler's `MAX_FRAME`.
    pub too_large: u64,
    /// Authenticated datagrams of frame ids behind the replay window.
    pub replayed: u64,
}

const BITMAP_WORDS: usize = MAX_FRAGMENTS / 64;
const RECENT: usize = 32;
const DEVICES: usize = 8;

#[derive(Debug, Clone)]
struct Slot<const M: usize> {
    used: bool,
    device_id: u32,
    frame_id: u32,
    count: u16,
    received: u16,
    total_len: u32,
    frame_crc: u32,
    bytes: u64,
    first_ms: u64,
    last_ms: u64,
    bitmap: [u64; BITMAP_WORDS],
    buf: [u8; M],
}

impl<const M: usize> Slot<M> {
    const EMPTY: Self = Slot {
        used: false,
        device_id: 0,
        frame_id: 0,
        count: 0,
        received: 0,
        total_len: 0,
        frame_crc: 0,
        bytes: 0,
        first_ms: 0,
        last_ms: 0,
        bitmap: [0; BITMAP_WORDS],
        buf: [0; M],
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recent {
    device_id: u32,
    frame_id: u32,
    frame_crc: u32,
}

#[derive(Debug, Clone, Copy)]
struct DeviceWindow {
    device_id: u32,
    last_ms: u64,
    window: ReplayWindow,
}

/// Fixed-size frame reassembler: `SLOTS` frames in flight, each up to
/// `MAX_FRAME` bytes. Its size is about `SLOTS * (MAX_FRAME + 200)` bytes:
/// place it in a `static` on a device or use [`Reassembler::new_boxed`] on a
/// host. Tolerates loss, duplication and reordering of datagrams; delivers
/// only complete frames with a matching CRC-32 (and tags, with a key).
#[derive(Debug, Clone)]
pub struct Reassembler<const SLOTS: usize, const MAX_FRAME: usize> {
    // `new_boxed` writes each field in place: a new field must be written there too (its
    // test compares it with `new`).
    slots: [Slot<MAX_FRAME>; SLOTS],
    key: Option<Key>,
    timeout_ms: u64,
    recent: [Option<Recent>; RECENT],
    recent_next: usize,
    windows: [Option<DeviceWindow>; DEVICES],
    stats: ReassemblerStats,
}

impl<const SLOTS: usize, const MAX_FRAME: usize> Reassembler<SLOTS, MAX_FRAME> {
    /// A reassembler that drops incomplete frames untouched for `timeout_ms`.
    /// With a key, every datagram must carry a valid tag.
    pub const fn new(key: Option<Key>, timeout_ms: u64) -> Self {
        Reassembler {
            slots: [const { Slot::EMPTY }; SLOTS],
            key,
            timeout_ms,
            recent: [None; RECENT],
            recent_next: 0,
            windows: [None; DEVICES],
            stats: ReassemblerStats {
                complete: 0,
                duplicates: 0,
                expired: 0,
                evicted: 0,
                bad_crc: 0,
                bad_tag: 0,
                malformed: 0,
                too_large: 0,
                replayed: 0,
            },
        }
    }

    /// [`new`](Self::new) on the heap, for large `SLOTS * MAX_FRAME`. Built in place:
    /// `Box::new(Self::new(..))` builds the value on the stack first unless the optimiser
    /// removes the copy, and a debug build overflowed a 2 MiB thread stack with 8 slots of
    /// 512 KiB.
    #[cfg(feature = "std")]
    #[allow(unsafe_code)]
    pub fn new_boxed(key: Option<Key>, timeout_ms: u64) -> Box<Self> {
        // Every field must be written below: this pattern stops compiling when a field is
        // added, until it is written here too (the test comparing with `new` could not see a
        // forgotten field that happens to read as zero).
        let _all_fields_written = |r: &Self| {
            let Reassembler {
                slots: _,
                key: _,
                timeout_ms: _,
                recent: _,
                recent_next: _,
                windows: _,
                stats: _,
            } = r;
        };
        let mut b = Box::<Self>::new_uninit();
        let p = b.as_mut_ptr();
        // SAFETY: every field of `*p` is written before `assume_init`, through raw field
        // pointers (no reference to uninitialised memory is made). `slots` is written as
        // zero bytes: a `Slot` holds only integers, a bool and arrays of integers, for which
        // all-zero bytes are valid and equal `Slot::EMPTY`.
        unsafe {
            core::ptr::addr_of_mut!((*p).slots).write_bytes(0, 1);
            core::ptr::addr_of_mut!((*p).key).write(key);
            core::ptr::addr_of_mut!((*p).timeout_ms).write(timeout_ms);
            core::ptr::addr_of_mut!((*p).recent).write([None; RECENT]);
            core::ptr::addr_of_mut!((*p).recent_next).write(0);
            core::ptr::addr_of_mut!((*p).windows).write([None; DEVICES]);
            core::ptr::addr_of_mut!((*p).stats).write(ReassemblerStats::default());
            b.assume_init()
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblerStats {
        self.stats
    }

    /// Number of frames currently being reassembled.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }

    /// Drops incomplete frames older than the timeout (also done by `push`).
    pub fn expire(&mut self, now_ms: u64) {
        for s in self.slots.iter_mut() {
            if s.used && now_ms.saturating_sub(s.last_ms) > self.timeout_ms {
                s.used = false;
                self.stats.expired += 1;
            }
        }
    }

    /// Takes one datagram. `Ok(Some(frame))` when it completed a frame,
    /// `Ok(None)` when it was stored (or was a harmless duplicate), `Err`
    /// when it was dropped (the reason is also counted in [`stats`](Self::stats)).
    pub fn push(&mut self, datagram: &[u8], now_ms: u64) -> Result<Option<Frame<'_>>, Error> {
        self.expire(now_ms);
        let hdr = match Header::parse(datagram) {
            Ok(h) => h,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        let mut end = datagram.len();
        match &self.key {
            Some(key) => {
                if hdr.flags & FLAG_AUTH == 0 || end < HEADER_LEN + TAG_LEN {
                    self.stats.bad_tag += 1;
                    return Err(Error::BadTag);
                }
                end -= TAG_LEN;
                if !key.verify(DOMAIN_DATAGRAM, &[&datagram[..end]], &datagram[end..]) {
                    self.stats.bad_tag += 1;
                    return Err(Error::BadTag);
                }
                match self
                    .window(hdr.device_id)
                    .map(|w| w.window.check(hdr.frame_id))
                {
                    Some(ReplayVerdict::Duplicate) => {
                        self.stats.duplicates += 1;
                        return Ok(None);
                    }
                    Some(ReplayVerdict::Stale) => {
                        self.stats.replayed += 1;
                        return Err(Error::Replay);
                    }
                    Some(ReplayVerdict::Fresh) | None => {}
                }
            }
            None => {
                if hdr.flags & FLAG_AUTH != 0 {
                    // We cannot check the tag: refuse rather than guess.
                    self.stats.bad_tag += 1;
                    return Err(Error::BadTag);
                }
            }
        }
        let data = &datagram[HEADER_LEN..end];
        if hdr.total_len as usize > MAX_FRAME {
            self.stats.too_large += 1;
            return Err(Error::FrameTooLarge);
        }
        let data_end = hdr.offset as u64 + data.len() as u64;
        if data_end > hdr.total_len as u64 || (data.is_empty() && hdr.total_len != 0) {
            self.stats.malformed += 1;
            return Err(Error::Malformed);
        }
        let recent = Recent {
            device_id: hdr.device_id,
            frame_id: hdr.frame_id,
            frame_crc: hdr.frame_crc,
        };
        if self.recent.contains(&Some(recent)) {
            self.stats.duplicates += 1;
            return Ok(None);
        }

        let idx = match self
            .slots
            .iter()
            .position(|s| s.used && s.device_id == hdr.device_id && s.frame_id == hdr.frame_id)
        {
            Some(i) => {
                let s = &self.slots[i];
                if s.count != hdr.count
                    || s.total_len != hdr.total_len
                    || s.frame_crc != hdr.frame_crc
                {
                    self.stats.malformed += 1;
                    return Err(Error::Malformed);
                }
                i
            }
            None => {
                let i = self.free_slot();
                let s = &mut self.slots[i];
                s.used = true;
                s.device_id = hdr.device_id;
                s.frame_id = hdr.frame_id;
                s.count = hdr.count;
                s.received = 0;
                s.total_len = hdr.total_len;
                s.frame_crc = hdr.frame_crc;
                s.bytes = 0;
                s.first_ms = now_ms;
                s.bitmap = [0; BITMAP_WORDS];
                i
            }
        };
        let s = &mut self.slots[idx];
        let (w, bit) = (hdr.index as usize / 64, 1u64 << (hdr.index % 64));
        if s.bitmap[w] & bit != 0 {
            self.stats.duplicates += 1;
            return Ok(None);
        }
        let off = hdr.offset as usize;
        let Some(dst) = s.buf.get_mut(off..off + data.len()) else {
            self.stats.malformed += 1;
            return Err(Error::Malformed);
        };
        dst.copy_from_slice(data);
        s.bitmap[w] |= bit;
        s.received += 1;
        s.bytes += data.len() as u64;
        s.last_ms = now_ms;
        if s.received < s.count {
            return Ok(None);
        }

        // All fragments are in: check and deliver.
        s.used = false;
        let total = s.total_len as usize;
        if s.bytes != total as u64 {
            self.stats.malformed += 1;
            return Err(Error::Malformed);
        }
        if crc32(&[&s.buf[..total]]) != s.frame_crc {
            self.stats.bad_crc += 1;
            return Err(Error::BadCrc);
        }
        self.stats.complete += 1;
        self.recent[self.recent_next] = Some(recent);
        self.recent_next = (self.recent_next + 1) % RECENT;
        if self.key.is_some() {
            self.accept_window(hdr.device_id, hdr.frame_id, now_ms);
        }
        let s = &self.slots[idx];
        Ok(Some(Frame {
            device_id: hdr.device_id,
            frame_id: hdr.frame_id,
            payload: &s.buf[..total],
        }))
    }

    /// A free slot, or the oldest incomplete one (evicted).
    fn free_slot(&mut self) -> usize {
        if let Some(i) = self.slots.iter().position(|s| !s.used) {
            return i;
        }
        let mut oldest = 0;
        for (i, s) in self.slots.iter().enumerate() {
            if s.first_ms < self.slots[oldest].first_ms {
                oldest = i;
            }
        }
        self.stats.evicted += 1;
        oldest
    }

    fn window(&self, device_id: u32) -> Option<&DeviceWindow> {
        self.windows
            .iter()
            .flatten()
            .find(|w| w.device_id == device_id)
    }

    fn accept_window(&mut self, device_id: u32, frame_id: u32, now_ms: u64) {
        let pos = self
            .windows
            .iter()
            .position(|w| matches!(w, Some(w) if w.device_id == device_id))
            .or_else(|| self.windows.iter().position(|w| w.is_none()))
            .unwrap_or_else(|| {
                // Forget the least recently heard device.
                let mut lru = 0;
                for (i, w) in self.windows.iter().enumerate() {
                    let t = w.map_or(0, |w| w.last_ms);
                    if t < self.windows[lru].map_or(0, |w| w.last_ms) {
                        lru = i;
                    }
                }
                lru
            });
        let entry = self.windows[pos]
            .filter(|w| w.device_id == device_id)
            .unwrap_or(DeviceWindow {
                device_id,
                last_ms: now_ms,
                window: ReplayWindow::new(),
            });
        let mut entry = entry;
        entry.window.accept(frame_id);
        entry.last_ms = now_ms;
        self.windows[pos] = Some(entry);
    }
}
