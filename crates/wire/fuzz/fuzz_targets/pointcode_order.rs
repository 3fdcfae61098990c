//! Arbitrary (unsorted) points and buffer size: encode_with must
//! accept exactly the Morton-sorted inputs (Ok or BufferTooSmall), reject the
//! others with NotCanonical (or BufferTooSmall when not even the header fits),
//! and an Ok stream must decode to the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
#[path = "points_input.rs"]
mod points_input;
use shapecast_wire::pointcode;

fuzz_target!(|data: &[u8]| {
    let Some((&b, rest)) = data.split_first() else { return };
    let Some((&cap_b, rest)) = rest.split_first() else { return };
    let (bits, method, pts) = points_input::bits_method_points(b, rest);
    let sorted = pts.windows(2).all(|w| pointcode::morton_key(w[0]) <= pointcode::morton_key(w[1]));
    let full = pointcode::max_encoded_len(pts.len(), bits);
    let cap = if cap_b >= 128 { full } else { full * cap_b as usize / 128 };
    let mut enc = vec![0u8; cap];
    match pointcode::encode_with(&pts, bits, method, &mut enc) {
        Ok(m) => {
            assert!(sorted, "accepted unsorted");
            let mut back = vec![[0u16; 3]; pts.len()];
            assert_eq!(pointcode::decode(&enc[..m], &mut back), Ok((pts.len(), bits)));
            assert_eq!(back, pts);
        }
        Err(shapecast_wire::Error::NotCanonical) => assert!(!sorted, "rejected sorted"),
        Err(shapecast_wire::Error::BufferTooSmall) => {
            assert!(cap < full);
            assert!(sorted || cap < 7, "unsorted reported as BufferTooSmall at cap {cap}");
        }
        Err(e) => panic!("{e:?}"),
    }
});
