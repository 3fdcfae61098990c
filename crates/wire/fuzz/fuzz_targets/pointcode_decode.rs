//! Any bytes: pointcode::decode never panics, returns at most out.len()
//! points, in canonical order, and they re-encode to bytes that decode to
//! the same points (re-encoded with the coder of the input's tag).
//! Seeds of every format (0xA3, 0xA4, 0xA6 streams of the benchmark clouds
//! and the golden cloud) are in `crates/wire/fuzz/seeds/pointcode_decode`
//! (from crates/wire: `cargo +nightly fuzz run pointcode_decode
//! fuzz/corpus/pointcode_decode fuzz/seeds/pointcode_decode`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shapecast_wire::pointcode;

/// Largest output buffer the target allocates (a header may announce up to
/// 2^32 - 1 points).
const OUT_BOUND: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    // Size the output from the header like a receiver does, within a bound.
    let cap = match pointcode::peek_count(data) {
        Ok((n, _)) => n.min(OUT_BOUND),
        Err(_) => 16,
    };
    let mut out = vec![[0u16; 3]; cap];
    if let Ok((n, bits)) = pointcode::decode(data, &mut out) {
        assert!(n <= out.len());
        assert!((8..=16).contains(&bits));
        let pts = &out[..n];
        let max = (1u32 << bits) - 1;
        assert!(pts.iter().flatten().all(|&c| u32::from(c) <= max));
        let mut sorted = pts.to_vec();
        let mut none = vec![(); n];
        pointcode::sort_canonical(&mut sorted, &mut none);
        assert_eq!(&sorted[..], pts, "decode must return canonical order");
        // Re-encoded with the coder of the input's tag (format 5 or 3), else
        // the default.
        let method = match data.first() {
            Some(&pointcode::TAG_SYMBOL) => pointcode::Method::Symbol,
            Some(&pointcode::TAG_ARITH) => pointcode::Method::Compact,
            _ => pointcode::Method::default(),
        };
        let mut enc = vec![0u8; pointcode::max_encoded_len(n, bits)];
        let m = pointcode::encode_with(pts, bits, method, &mut enc)
            .expect("decoded points must re-encode");
        let mut back = vec![[0u16; 3]; n.max(1)];
        let (n2, b2) = pointcode::decode(&enc[..m], &mut back).expect("re-encoded must decode");
        assert_eq!((n2, b2), (n, bits));
        assert_eq!(&back[..n2], pts);
    }
});
