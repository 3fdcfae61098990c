//! Any bytes: decode_message never panics; whatever decodes re-encodes and
//! decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shapecast_wire::message::{decode_message, encode_message};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_message(data) {
        let mut buf = vec![0u8; data.len() + 64];
        let n = encode_message(&msg, &mut buf).expect("a decoded message must re-encode");
        let again = decode_message(&buf[..n]).expect("re-encoded message must decode");
        assert_eq!(again, msg);
    }
});
