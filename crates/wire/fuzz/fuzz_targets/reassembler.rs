//! A sequence of datagrams (u16 LE length prefix each) and clock steps:
//! the Reassembler never panics and only delivers frames whose CRC-32
//! matches the header, within MAX_FRAME.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shapecast_wire::fragment::{Reassembler, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let mut r = Box::new(Reassembler::<4, 8192>::new(None, 50));
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 3 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        now += u64::from(rest[2] % 16);
        rest = &rest[3..];
        let take = len.min(rest.len());
        let (d, tail) = rest.split_at(take);
        rest = tail;
        let crc = d
            .get(24..HEADER_LEN)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        if let Ok(Some(f)) = r.push(d, now) {
            assert!(f.payload.len() <= 8192);
            assert_eq!(Some(shapecast_wire::crc32(&[f.payload])), crc);
        }
    }
    let s = r.stats();
    assert!(r.in_flight() <= 4);
    let _ = s;
});
