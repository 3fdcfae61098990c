//! Any byte stream, fed in chunks: FrameReader never panics, every frame it
//! delivers has a valid CRC (re-encoding it gives a frame that round-trips),
//! and its counters add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shapecast_wire::serial::{encode_frame, max_encoded_len, FrameReader};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = chunk as usize % 64 + 1;
    let mut r = FrameReader::<512>::new();
    let mut events = 0u64;
    let mut delivered = Vec::new();
    for c in stream.chunks(chunk) {
        r.feed(c, |f| {
            events += 1;
            if let Ok(p) = f {
                assert!(p.len() <= 512 - 4);
                delivered.push(p.to_vec());
            }
        });
    }
    let s = r.stats();
    assert_eq!(
        events,
        s.frames_ok + s.crc_errors + s.cobs_errors + s.overflows
    );
    assert_eq!(delivered.len() as u64, s.frames_ok);
    for p in delivered {
        let mut out = vec![0u8; max_encoded_len(p.len())];
        let n = encode_frame(&p, &mut out).unwrap();
        let mut r2 = FrameReader::<512>::new();
        let mut back = None;
        r2.feed(&out[..n], |f| back = Some(f.map(|x| x.to_vec())));
        assert_eq!(back, Some(Ok(p)));
    }
});
