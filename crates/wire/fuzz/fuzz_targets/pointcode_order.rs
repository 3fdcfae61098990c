//! Arbitrary (unsorted) points and buffer size: encode_with must
//! accept exactly the Morton-sorted inputs (Ok or BufferTooSmall), reject the
//! others with NotCanonical (or BufferTooSmall when not even the header fits),
//! and an Ok stream must decode to the input.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shapecast_wire::pointcode;

fuzz_target!(|data: &[u8]| {
    let Some((&b, rest)) = data.split_first() else { return };
    let Some((&cap_b, rest)) = rest.split_first() else { return };
    let bits = pointcode::MIN_BITS + (b & 0x3F) % (pointcode::MAX_BITS - pointcode::MIN_BITS + 1);
    let method = match b >> 6 {
        2 => pointcode::Method::Compact,
        1 | 3 => pointcode::Method::Symbol,
        _ => pointcode::Method::Fast,
    };
    let mask = ((1u32 << bits) - 1) as u16;
    let pts: Vec<[u16; 3]> = rest
        .chunks_exact(6)
        .map(|c| {
            let v = |i: usize| u16::from_le_bytes([c[i], c[i + 1]]) & mask;
            [v(0), v(2), v(4)]
        })
        .collect();
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
