//! Arbitrary points (and bit depth and coder): sort_canonical -> encode
//! (into a buffer of exactly `max_encoded_len` bytes) -> decode must give back
//! the sorted input, and the stream must be rejected when truncated by one
//! byte. The first byte picks the bit depth (low 6 bits) and the coder (top
//! two bits: 0 fast, format 4; 2 compact, format 3; 1 or 3 symbol, format 5).
#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "points_input.rs"]
mod points_input;
use shapecast_wire::pointcode;

fuzz_target!(|data: &[u8]| {
    let Some((&b, rest)) = data.split_first() else {
        return;
    };
    let (bits, method, mut pts) = points_input::bits_method_points(b, rest);
    pointcode::sort_canonical(&mut pts, &mut [] as &mut [u8]);
    let mut enc = vec![0u8; pointcode::max_encoded_len(pts.len(), bits)];
    let m = pointcode::encode_with(&pts, bits, method, &mut enc)
        .expect("encode within max_encoded_len");
    assert_eq!(pointcode::peek_count(&enc[..m]), Ok((pts.len(), bits)));
    let mut back = vec![[0u16; 3]; pts.len()];
    let got = pointcode::decode(&enc[..m], &mut back);
    assert_eq!(got, Ok((pts.len(), bits)));
    assert_eq!(back, pts);
    if !pts.is_empty() {
        assert!(pointcode::decode(&enc[..m - 1], &mut back).is_err());
    }
});
