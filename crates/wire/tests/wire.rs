//! Integration tests of shapecast-wire: golden bytes of every message,
//! round trips (proptest), serial stream corruption, UDP loss/dup/reorder.
// The point coder's no-allocation test installs a counting global allocator
// (tests/support/counting_alloc.rs at the workspace root).

use proptest::prelude::*;
use shapecast_wire::auth::Key;
use shapecast_wire::fragment::{Fragmenter, Reassembler, HEADER_LEN, MAX_DATAGRAM};
use shapecast_wire::message::*;
use shapecast_wire::pointcode::{self, Bounds};
use shapecast_wire::serial::{
    encode_frame, encode_frame_auth, max_encoded_len, max_encoded_len_auth, FrameReader,
};
use shapecast_wire::Error;

// ---------------------------------------------------------------- helpers

/// xorshift64*: deterministic test randomness without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `BOUNDS` as postcard: six f32 LE (-1, -0.5, 0, 1, 0.5, 2).
const BOUNDS_HEX: &str = "000080bf 000000bf 00000000 0000803f 0000003f 00000040";

const BOUNDS: Bounds = Bounds {
    min: [-1.0, -0.5, 0.0],
    max: [1.0, 0.5, 2.0],
};

fn encode(msg: &Message<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = encode_message(msg, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Encodes `msg`, compares with `golden` hex, and decodes the golden bytes
/// back to `msg`.
fn check_golden(msg: &Message<'_>, golden: &str) {
    let bytes = encode(msg);
    assert_eq!(hex(&bytes), hex(&unhex(golden)), "golden bytes changed");
    let gold = unhex(golden);
    assert_eq!(&decode_message(&gold).unwrap(), msg);
    // Every strict prefix is rejected, never accepted or panicking.
    for n in 0..gold.len() {
        assert!(decode_message(&gold[..n]).is_err(), "prefix {n} accepted");
    }
    // Trailing garbage is rejected.
    let mut long = gold.clone();
    long.push(0);
    assert_eq!(decode_message(&long), Err(Error::Malformed));
}

fn hello() -> Message<'static> {
    Message::Hello(Hello {
        device_id: 0x0102_0304,
        model_id: "pts-r18-int8",
        head: HeadKind::Points,
        units: Units::Metres,
        bounds: BOUNDS,
        point_bits: 10,
        max_points: 2048,
        voxel_resolution: 0,
        num_classes: 4,
        input_size: [224, 224],
    })
}

fn stats() -> Message<'static> {
    let p = |b: u32| Percentiles {
        p50_us: b,
        p90_us: b + 1,
        p99_us: b + 2,
        max_us: b + 300,
    };
    Message::Stats(Stats {
        device_id: 7,
        uptime_ms: 123_456,
        fps_x100: 1510,
        counters: Counters {
            captured: 1000,
            inferred: 990,
            sent: 985,
        },
        drops: Drops {
            stale_frames: 10,
            link_busy: 5,
            send_errors: 0,
            camera_errors: 1,
        },
        latency: StageLatency {
            capture: p(100),
            convert: p(200),
            preprocess: p(300),
            inference: p(40_000),
            decode: p(500),
            encode: p(600),
            send: p(700),
        },
    })
}

// ------------------------------------------------------------ golden bytes
//
// Layout notes (SPEC.md section 2): version byte, variant index, then the
// fields in order; u16/u32/u64 are LEB128 varints (300 = ac02), f32 are
// 4 bytes LE, byte strings are varint length + bytes, Option is 00 / 01 + T.
//
// These hex strings freeze the protocol (PROTOCOL_VERSION = 1). If one of
// these tests fails because you changed a message on purpose, the bytes on
// the wire changed: bump PROTOCOL_VERSION, update SPEC.md, then the hex.

#[test]
fn golden_hello() {
    check_golden(
        &hello(),
        &format!(
            "01 00 84868808 0c 7074732d7231382d696e7438 00 00 {BOUNDS_HEX} 0a 8010 00 04 e001 e001"
        ),
    );
}

#[test]
fn golden_point_cloud() {
    let mut hyps = heapless::Vec::new();
    hyps.push(Hypothesis {
        points: &[0xAA, 0xBB, 0xCC],
        labels: Some(&[1, 2]),
        confidence: None,
    })
    .unwrap();
    hyps.push(Hypothesis {
        points: &[0x01],
        labels: None,
        confidence: Some(&[255]),
    })
    .unwrap();
    let msg = Message::PointCloud(PointCloudFrame {
        device_id: 0x0102_0304,
        frame_id: 300,
        capture_ts_us: 1_000_000,
        bits: 10,
        bounds: BOUNDS,
        hypotheses: hyps,
    });
    check_golden(
        &msg,
        &format!(
            "01 01 84868808 ac02 c0843d 0a {BOUNDS_HEX} 02 03aabbcc 01 020102 00 01 01 00 01 01ff"
        ),
    );
}

#[test]
fn golden_voxels() {
    let mut occ = [0u8; 1];
    voxel_set(&mut occ, 2, 0, 0, 0);
    voxel_set(&mut occ, 2, 1, 1, 1);
    assert_eq!(occ, [0b1000_0001]);
    let msg = Message::Voxels(VoxelFrame {
        device_id: 9,
        frame_id: 1,
        capture_ts_us: 5,
        resolution: 2,
        bounds: BOUNDS,
        occupancy: &occ,
    });
    check_golden(&msg, &format!("01 02 09 01 05 02 {BOUNDS_HEX} 01 81"));
}

#[test]
fn golden_mesh() {
    // Three vertices (u16 LE xyz), one triangle of u16 indices, labels.
    let vertices = [
        0, 0, 0, 0, 0, 0, 0xFF, 0x03, 0, 0, 0, 0, 0, 0, 0xFF, 0x03, 0, 0,
    ];
    let faces = [0, 0, 1, 0, 2, 0];
    let msg = Message::Mesh(MeshFrame {
        device_id: 9,
        frame_id: 2,
        capture_ts_us: 6,
        bits: 10,
        bounds: BOUNDS,
        index_width: IndexWidth::U16,
        vertices: &vertices,
        faces: &faces,
        labels: Some(&[0, 1, 1]),
    });
    check_golden(&msg, &format!("01 03 09 02 06 0a {BOUNDS_HEX} 00 12 000000000000 ff0300000000 0000ff030000 06 000001000200 01 03 000101"));
    assert_eq!(mesh_vertex(&vertices, 1), Some([1023, 0, 0]));
    assert_eq!(mesh_face(&faces, IndexWidth::U16, 0), Some([0, 1, 2]));
    assert_eq!(mesh_face(&faces, IndexWidth::U16, 1), None);
}

#[test]
fn golden_stats() {
    check_golden(
        &stats(),
        "01 04 07 c0c407 e60b e807 de07 d907 0a 05 00 01 \
         64 65 66 9003 c801 c901 ca01 f403 ac02 ad02 ae02 d804 \
         c0b802 c1b802 c2b802 ecba02 f403 f503 f603 a006 \
         d804 d904 da04 8407 bc05 bd05 be05 e807",
    );
}

// ------------------------------------------------------ message validation

#[test]
fn version_and_validation_errors() {
    let mut bytes = encode(&hello());
    bytes[0] = 2;
    assert_eq!(decode_message(&bytes), Err(Error::UnsupportedVersion));
    assert_eq!(decode_message(&[]), Err(Error::Truncated));

    let mut buf = [0u8; 8];
    assert_eq!(
        encode_message(&hello(), &mut buf),
        Err(Error::BufferTooSmall)
    );
    assert_eq!(
        encode_message(&hello(), &mut []),
        Err(Error::BufferTooSmall)
    );

    let mut big = [0u8; 256];
    let Message::Hello(mut h) = hello() else {
        unreachable!()
    };
    h.point_bits = 17;
    assert_eq!(
        encode_message(&Message::Hello(h.clone()), &mut big),
        Err(Error::BitsOutOfRange)
    );
    h.point_bits = 10;
    h.model_id = "a-model-name-that-is-longer-than-32-bytes";
    assert_eq!(
        encode_message(&Message::Hello(h.clone()), &mut big),
        Err(Error::Malformed)
    );
    h.model_id = "ok";
    // finite ends whose extent is not: every point would dequantize to inf/NaN
    h.bounds.min[0] = -3e38;
    h.bounds.max[0] = 3e38;
    assert_eq!(
        encode_message(&Message::Hello(h.clone()), &mut big),
        Err(Error::Malformed)
    );
    h.bounds.max[0] = 1.0;
    h.bounds.min[0] = f32::NAN;
    assert_eq!(
        encode_message(&Message::Hello(h), &mut big),
        Err(Error::Malformed)
    );

    let occ = [0u8; 2];
    let v = Message::Voxels(VoxelFrame {
        device_id: 1,
        frame_id: 1,
        capture_ts_us: 0,
        resolution: 2,
        bounds: BOUNDS,
        occupancy: &occ, // 2 bytes for a 2^3 grid: wrong
    });
    assert_eq!(encode_message(&v, &mut big), Err(Error::Malformed));

    let vertices = [0u8; 12];
    let faces = [0, 0, 1, 0, 2, 0]; // index 2 of 2 vertices
    let m = Message::Mesh(MeshFrame {
        device_id: 1,
        frame_id: 1,
        capture_ts_us: 0,
        bits: 10,
        bounds: BOUNDS,
        index_width: IndexWidth::U16,
        vertices: &vertices,
        faces: &faces,
        labels: None,
    });
    assert_eq!(encode_message(&m, &mut big), Err(Error::Malformed));

    let empty = Message::PointCloud(PointCloudFrame {
        device_id: 1,
        frame_id: 1,
        capture_ts_us: 0,
        bits: 10,
        bounds: BOUNDS,
        hypotheses: heapless::Vec::new(),
    });
    assert_eq!(encode_message(&empty, &mut big), Err(Error::Malformed));
}

#[test]
fn decoded_slices_borrow_input() {
    let bytes = encode(&hello());
    let Ok(Message::Hello(h)) = decode_message(&bytes) else {
        panic!()
    };
    let range = bytes.as_ptr_range();
    assert!(range.contains(&h.model_id.as_ptr()), "model_id was copied");
}

fn arb_bounds() -> impl Strategy<Value = Bounds> {
    (
        prop::array::uniform3(-100.0f32..100.0),
        prop::array::uniform3(0.0f32..50.0),
    )
        .prop_map(|(min, ext)| Bounds {
            min,
            max: [min[0] + ext[0], min[1] + ext[1], min[2] + ext[2]],
        })
}

type HypData = (Vec<u8>, Option<Vec<u8>>, bool);

/// CI found this: a Stats message whose `fps_x100` is the overlong varint `80 00` (0 in two
/// bytes). It decodes (postcard accepts overlong varints) and re-encodes one byte shorter.
#[test]
fn overlong_varint_decodes_and_reencodes_shortest() {
    let mut b = vec![0u8; 41];
    b[0] = PROTOCOL_VERSION;
    b[1] = 4;
    b[18] = 0x80;
    let m = decode_message(&b).expect("overlong varints are accepted");
    let again = encode(&m);
    assert_eq!(again.len(), 40);
    assert_eq!(decode_message(&again).unwrap(), m);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn point_cloud_roundtrip(
        device_id in any::<u32>(), frame_id in any::<u32>(), ts in any::<u64>(),
        bits in 8u8..=16, bounds in arb_bounds(),
        hyps in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..300),
             prop::option::of(prop::collection::vec(any::<u8>(), 0..100)),
             any::<bool>()), 1..=MAX_HYPOTHESES),
    ) {
        let hyps: Vec<HypData> = hyps;
        let mut v = heapless::Vec::new();
        for (p, l, conf) in &hyps {
            let c = if *conf { l.as_deref() } else { None };
            v.push(Hypothesis { points: p, labels: l.as_deref(), confidence: c }).unwrap();
        }
        let msg = Message::PointCloud(PointCloudFrame {
            device_id, frame_id, capture_ts_us: ts, bits, bounds, hypotheses: v,
        });
        let bytes = encode(&msg);
        prop_assert_eq!(decode_message(&bytes).unwrap(), msg);
    }

    #[test]
    fn stats_roundtrip(vals in prop::collection::vec(any::<u32>(), 38), up in any::<u64>()) {
        let p = |i: usize| Percentiles {
            p50_us: vals[i], p90_us: vals[i + 1], p99_us: vals[i + 2], max_us: vals[i + 3],
        };
        let msg = Message::Stats(Stats {
            device_id: vals[0], uptime_ms: up, fps_x100: vals[1],
            counters: Counters { captured: vals[2], inferred: vals[3], sent: vals[4] },
            drops: Drops { stale_frames: vals[5], link_busy: vals[6], send_errors: vals[7],
                           camera_errors: vals[8] },
            latency: StageLatency { capture: p(9), convert: p(13), preprocess: p(17),
                inference: p(21), decode: p(25), encode: p(29), send: p(33) },
        });
        let bytes = encode(&msg);
        prop_assert_eq!(decode_message(&bytes).unwrap(), msg);
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut b = bytes;
        if let Some(x) = b.first_mut() { *x = PROTOCOL_VERSION; }
        if let Ok(m) = decode_message(&b) {
            // Whatever decodes re-encodes to bytes that decode to the same message, and never
            // to more bytes: the encoder writes the shortest varints, while a decoder accepts
            // overlong ones (SPEC section 2), so the bytes themselves may shrink.
            let again = encode(&m);
            prop_assert!(again.len() <= b.len());
            prop_assert_eq!(decode_message(&again).unwrap(), m);
        };
    }

    #[test]
    fn serial_roundtrip_any_chunking(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..600), 1..10),
        chunk in 1usize..300,
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            let mut out = vec![0u8; max_encoded_len(p.len())];
            let n = encode_frame(p, &mut out).unwrap();
            stream.extend_from_slice(&out[..n]);
        }
        let mut r = FrameReader::<700>::new();
        let mut got = Vec::new();
        for c in stream.chunks(chunk) {
            r.feed(c, |f| got.push(f.unwrap().to_vec()));
        }
        prop_assert_eq!(got, payloads);
    }

    #[test]
    fn reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut r = FrameReader::<256>::new();
        let mut n = 0;
        r.feed(&bytes, |_| n += 1);
        let s = r.stats();
        prop_assert_eq!(n as u64, s.frames_ok + s.crc_errors + s.cobs_errors + s.overflows);
    }
}

// ----------------------------------------------------------- serial stream

fn frame_stream(rng: &mut Rng, count: usize, key: Option<&Key>) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut payloads = Vec::new();
    let mut stream = Vec::new();
    for i in 0..count {
        let len = 1 + rng.below(400);
        // Mix of zero-heavy and random payloads.
        let p: Vec<u8> = (0..len)
            .map(|_| {
                if i % 3 == 0 {
                    (rng.next() % 3) as u8
                } else {
                    rng.next() as u8
                }
            })
            .collect();
        let mut out = vec![0u8; max_encoded_len_auth(len)];
        let n = match key {
            Some(k) => encode_frame_auth(&p, k, i as u32, &mut out).unwrap(),
            None => encode_frame(&p, &mut out).unwrap(),
        };
        stream.extend_from_slice(&out[..n]);
        payloads.push(p);
    }
    (payloads, stream)
}

/// Feeds `stream` and checks that the delivered frames are the originals in
/// order with at most `max_lost` missing.
fn check_delivery<const N: usize>(
    r: &mut FrameReader<N>,
    stream: &[u8],
    payloads: &[Vec<u8>],
    max_lost: usize,
) {
    let mut got: Vec<Vec<u8>> = Vec::new();
    for c in stream.chunks(97) {
        r.feed(c, |f| {
            if let Ok(p) = f {
                got.push(p.to_vec());
            }
        });
    }
    // `got` must be a subsequence of `payloads`.
    let mut it = payloads.iter();
    for g in &got {
        assert!(
            it.any(|p| p == g),
            "delivered a frame that was never sent (or out of order)"
        );
    }
    assert!(
        got.len() + max_lost >= payloads.len(),
        "lost {} frames, allowed {max_lost}",
        payloads.len() - got.len()
    );
}

#[test]
fn serial_single_corruptions_lose_at_most_one_frame() {
    let mut rng = Rng(0x5eed);
    let (payloads, stream) = frame_stream(&mut rng, 60, None);
    for trial in 0..600 {
        let mut s = stream.clone();
        let pos = rng.below(s.len());
        match trial % 3 {
            0 => s[pos] ^= 1 << rng.below(8),
            1 => {
                s.remove(pos);
            }
            _ => s.insert(pos, rng.next() as u8),
        }
        let mut r = FrameReader::<512>::new();
        check_delivery(&mut r, &s, &payloads, 1);
    }
    // Hitting delimiters specifically (the worst case for COBS).
    for (pos, _) in stream.iter().enumerate().filter(|(_, &b)| b == 0) {
        for flip in [0x01u8, 0x80] {
            let mut s = stream.clone();
            s[pos] ^= flip;
            let mut r = FrameReader::<512>::new();
            check_delivery(&mut r, &s, &payloads, 1);
        }
        let mut s = stream.clone();
        s.remove(pos);
        let mut r = FrameReader::<512>::new();
        check_delivery(&mut r, &s, &payloads, 1);
    }
}

#[test]
fn serial_many_spaced_corruptions_and_garbage() {
    let mut rng = Rng(42);
    let (payloads, stream) = frame_stream(&mut rng, 300, None);
    let mut s = Vec::new();
    s.extend((0..500).map(|_| rng.next() as u8)); // line noise before the first frame
    let mut hits = 0;
    let mut i = 0;
    while i < stream.len() {
        if i % 2000 == 1000 {
            hits += 1;
            match hits % 3 {
                0 => s.push(stream[i] ^ 0x10),
                1 => {} // dropped
                _ => {
                    s.push(rng.next() as u8);
                    s.push(stream[i]);
                }
            }
        } else {
            s.push(stream[i]);
        }
        i += 1;
    }
    let mut r = FrameReader::<512>::new();
    check_delivery(&mut r, &s, &payloads, hits);
    let st = r.stats();
    assert!(st.frames_ok as usize >= payloads.len() - hits);
    assert!(st.crc_errors + st.cobs_errors + st.overflows >= 1);
    assert!(st.bytes_discarded > 0);
}

#[test]
fn serial_auth_stream_with_corruption() {
    let key = Key::new([0x42; 32]);
    let mut rng = Rng(7);
    let (payloads, stream) = frame_stream(&mut rng, 50, Some(&key));
    for _ in 0..100 {
        let mut s = stream.clone();
        let pos = rng.below(s.len());
        s[pos] ^= 0x04;
        let mut r = FrameReader::<512>::with_key(key.clone());
        check_delivery(&mut r, &s, &payloads, 1);
    }
    // Replaying the whole stream delivers nothing new.
    let mut r = FrameReader::<512>::with_key(key.clone());
    check_delivery(&mut r, &stream, &payloads, 0);
    let mut again = 0;
    r.feed(&stream, |f| {
        if f.is_ok() {
            again += 1
        }
    });
    assert_eq!(again, 0);
    assert_eq!(r.stats().replays, 50);
    // A reader with another key accepts nothing.
    let mut r = FrameReader::<512>::with_key(Key::new([0x43; 32]));
    let mut ok = 0;
    r.feed(&stream, |f| ok += f.is_ok() as usize);
    assert_eq!((ok, r.stats().bad_tags), (0, 50));
}

// -------------------------------------------------------------- fragments

fn datagrams(device: u32, frame: u32, payload: &[u8], key: Option<&Key>) -> Vec<Vec<u8>> {
    let mut f = Fragmenter::new(device, frame, payload, key).unwrap();
    let mut out = [0u8; MAX_DATAGRAM];
    let mut v = Vec::new();
    while let Some(n) = f.next_datagram(&mut out) {
        assert!(n <= MAX_DATAGRAM);
        v.push(out[..n].to_vec());
    }
    assert_eq!(v.len(), f.fragment_count() as usize);
    v
}

fn payload(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8).collect()
}

#[test]
fn fragments_roundtrip_sizes() {
    let mut rng = Rng(1);
    let mut r = Reassembler::<4, 20_000>::new(None, 1000);
    for (i, len) in [0usize, 1, 1171, 1172, 1173, 2344, 5000, 20_000]
        .into_iter()
        .enumerate()
    {
        let p = payload(&mut rng, len);
        let d = datagrams(3, i as u32, &p, None);
        assert_eq!(d.len(), len.div_ceil(1172).max(1));
        let mut done = None;
        for x in &d {
            if let Some(f) = r.push(x, 0).unwrap() {
                done = Some((f.device_id, f.frame_id, f.payload.to_vec()));
            }
        }
        assert_eq!(done, Some((3, i as u32, p)));
    }
    assert_eq!(r.stats().complete, 8);
    assert_eq!(r.in_flight(), 0);
    // Too large for this reassembler.
    let p = payload(&mut rng, 20_001);
    let d = datagrams(3, 99, &p, None);
    assert_eq!(r.push(&d[0], 0), Err(Error::FrameTooLarge));
}

#[test]
fn fragments_loss_dup_reorder_interleave() {
    let mut rng = Rng(99);
    let mut r = Reassembler::<8, 10_000>::new(None, 500);
    let frames: Vec<(u32, u32, Vec<u8>)> = (0..200)
        .map(|i| {
            let len = rng.below(10_000);
            (i % 3, i / 3, payload(&mut rng, len))
        })
        .collect();
    // Interleave frames in groups of 4, shuffle, duplicate and drop datagrams.
    let mut delivered = Vec::new();
    let mut lost_frames = std::collections::HashSet::new();
    // Lost frames of which at least one datagram arrived (they take a slot).
    let mut partial_frames = std::collections::HashSet::new();
    let mut now = 0;
    for group in frames.chunks(4) {
        let mut ds = Vec::new();
        for (dev, id, p) in group {
            for d in datagrams(*dev, *id, p, None) {
                if rng.below(30) == 0 {
                    lost_frames.insert((*dev, *id));
                    continue; // lost
                }
                partial_frames.insert((*dev, *id));
                if rng.below(10) == 0 {
                    ds.push(d.clone()); // duplicated
                }
                ds.push(d);
            }
        }
        for i in (1..ds.len()).rev() {
            ds.swap(i, rng.below(i + 1));
        }
        for d in &ds {
            now += 1;
            if let Some(f) = r.push(d, now).unwrap() {
                delivered.push((f.device_id, f.frame_id, f.payload.to_vec()));
            }
        }
    }
    for (dev, id, p) in &delivered {
        let orig = frames.iter().find(|f| f.0 == *dev && f.1 == *id).unwrap();
        assert_eq!(&orig.2, p, "frame {dev}/{id} corrupted");
    }
    let ids: std::collections::HashSet<_> = delivered.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(ids.len(), delivered.len(), "a frame was delivered twice");
    for (dev, id, _) in &frames {
        assert_eq!(
            ids.contains(&(*dev, *id)),
            !lost_frames.contains(&(*dev, *id))
        );
    }
    let s = r.stats();
    assert_eq!(s.complete as usize, delivered.len());
    assert!(s.duplicates > 0);
    // Incomplete frames leave by eviction or timeout; none are still pending
    // after the timeout passes.
    r.expire(now + 1000);
    assert_eq!(r.in_flight(), 0);
    let s = r.stats();
    let partial = lost_frames.intersection(&partial_frames).count();
    assert!(partial > 0);
    // A late duplicate of a lost frame's datagram may take a slot again.
    assert!((s.expired + s.evicted) as usize >= partial);
}

#[test]
fn fragments_never_deliver_corrupt_frames() {
    let mut rng = Rng(5);
    let p = payload(&mut rng, 5000);
    let d = datagrams(1, 1, &p, None);
    // Flip one data byte in one fragment: the whole-frame CRC catches it.
    for trial in 0..50u32 {
        let mut r = Reassembler::<2, 8000>::new(None, 1000);
        let mut d2 = d.clone();
        let k = rng.below(d2.len());
        let pos = HEADER_LEN + rng.below(d2[k].len() - HEADER_LEN);
        d2[k][pos] ^= 1 << (trial % 8);
        let mut results = Vec::new();
        for x in &d2 {
            results.push(r.push(x, 0).map(|f| f.is_some()));
        }
        assert!(!results.contains(&Ok(true)));
        assert_eq!(r.stats().bad_crc, 1);
    }
    // Header corruption: bad magic, version, index >= count, truncated.
    let mut r = Reassembler::<2, 8000>::new(None, 1000);
    let mut x = d[0].clone();
    x[0] = b'X';
    assert_eq!(r.push(&x, 0), Err(Error::Malformed));
    let mut x = d[0].clone();
    x[2] = 9;
    assert_eq!(r.push(&x, 0), Err(Error::UnsupportedVersion));
    let mut x = d[0].clone();
    x[12] = 200;
    assert_eq!(r.push(&x, 0), Err(Error::Malformed));
    assert_eq!(r.push(&d[0][..10], 0), Err(Error::Truncated));
    // Inconsistent with the frame in its slot.
    r.push(&d[0], 0).unwrap();
    let mut x = d[1].clone();
    x[16] ^= 1; // total_len differs
    assert_eq!(r.push(&x, 0), Err(Error::Malformed));
    assert_eq!(r.stats().malformed, 5);
}

#[test]
fn fragments_eviction_and_timeout() {
    let mut rng = Rng(8);
    let mut r = Reassembler::<2, 4000>::new(None, 100);
    let a = datagrams(1, 1, &payload(&mut rng, 3000), None);
    let b = datagrams(1, 2, &payload(&mut rng, 3000), None);
    let c = datagrams(1, 3, &payload(&mut rng, 3000), None);
    r.push(&a[0], 0).unwrap();
    r.push(&b[0], 1).unwrap();
    r.push(&c[0], 2).unwrap(); // evicts frame 1 (oldest)
    assert_eq!(r.stats().evicted, 1);
    // Frame 1 restarts in a slot but can never complete from a[1], a[2] alone.
    r.push(&a[1], 3).unwrap();
    assert_eq!(r.push(&a[2], 4).unwrap(), None);
    // Timeout: everything idle > 100 ms goes.
    r.expire(300);
    assert_eq!(r.in_flight(), 0);
    assert_eq!(r.stats().expired, 2);
    // Late fragments of an expired frame never give a partial frame.
    assert_eq!(r.push(&c[1], 301).unwrap(), None);
    assert_eq!(r.push(&c[2], 302).unwrap(), None);
}

#[test]
fn fragments_auth() {
    let key = Key::new([9; 32]);
    let mut rng = Rng(3);
    let p = payload(&mut rng, 3000);
    let d = datagrams(5, 10, &p, Some(&key));
    assert!(d.iter().all(|x| x.len() <= MAX_DATAGRAM));
    let mut r = Reassembler::<2, 4000>::new(Some(key.clone()), 1000);
    let mut out = None;
    for x in &d {
        if let Some(f) = r.push(x, 0).unwrap() {
            out = Some(f.payload.to_vec());
        }
    }
    assert_eq!(out.as_deref(), Some(&p[..]));
    // Replay of the same frame: duplicates, nothing delivered.
    for x in &d {
        assert_eq!(r.push(x, 1), Ok(None));
    }
    // Tampering with header or data: bad tag.
    let mut x = d[0].clone();
    x[8] ^= 1;
    assert_eq!(r.push(&x, 2), Err(Error::BadTag));
    let mut x = d[1].clone();
    x[100] ^= 1;
    assert_eq!(r.push(&x, 2), Err(Error::BadTag));
    // Unauthenticated datagrams are refused, and vice versa.
    let plain = datagrams(5, 11, &p, None);
    assert_eq!(r.push(&plain[0], 2), Err(Error::BadTag));
    let mut r2 = Reassembler::<2, 4000>::new(None, 1000);
    assert_eq!(r2.push(&d[0], 0), Err(Error::BadTag));
    // Old frame ids behind the window are refused as replays.
    for id in 11..100 {
        for x in datagrams(5, id, b"x", Some(&key)) {
            r.push(&x, 3).unwrap();
        }
    }
    let old = datagrams(5, 20, b"x", Some(&key));
    assert_eq!(r.push(&old[0], 4), Err(Error::Replay));
    let s = r.stats();
    assert_eq!((s.bad_tag, s.replayed, s.complete), (3, 1, 90));
}

#[test]
fn reassembler_boxed_host_size() {
    // 8 slots x 512 KiB: built on the heap, not on the test thread's stack.
    let mut r = Reassembler::<8, { 512 * 1024 }>::new_boxed(None, 1000);
    let mut rng = Rng(11);
    let p = payload(&mut rng, 400_000);
    let mut got = false;
    for x in datagrams(1, 1, &p, None) {
        if let Some(f) = r.push(&x, 0).unwrap() {
            assert_eq!(f.payload, &p[..]);
            got = true;
        }
    }
    assert!(got);
}

#[test]
fn reassembler_boxed_equals_new() {
    // `new_boxed` builds in place field by field; every field must come out as `new`'s.
    let key = Some(Key::new([7; 32]));
    let boxed = Reassembler::<3, 96>::new_boxed(key.clone(), 250);
    let direct = Reassembler::<3, 96>::new(key, 250);
    assert_eq!(format!("{boxed:?}"), format!("{direct:?}"));
}

#[test]
fn fragmenter_limits() {
    let big = vec![0u8; 1172 * 1024 + 1];
    assert_eq!(
        Fragmenter::new(1, 1, &big, None).err(),
        Some(Error::FrameTooLarge)
    );
    let f = Fragmenter::new(1, 1, &big[..3000], None).unwrap();
    let mut f = f.with_max_datagram(500).unwrap();
    let mut out = [0u8; MAX_DATAGRAM];
    let mut n = 0;
    while let Some(len) = f.next_datagram(&mut out) {
        assert!(len <= 500);
        n += 1;
    }
    assert_eq!(n, 3000usize.div_ceil(500 - HEADER_LEN));
    assert!(Fragmenter::new(1, 1, b"x", None)
        .unwrap()
        .with_max_datagram(HEADER_LEN)
        .is_err());
}

// ----------------------------------------------------------- end to end

#[test]
fn end_to_end_points_over_serial_and_udp() {
    let mut rng = Rng(77);
    let mut pts: Vec<[u16; 3]> = (0..500)
        .map(|_| {
            [
                rng.below(1024) as u16,
                rng.below(1024) as u16,
                rng.below(1024) as u16,
            ]
        })
        .collect();
    let mut labels: Vec<u8> = (0..500).map(|i| (i % 5) as u8).collect();
    pointcode::sort_canonical(&mut pts, &mut labels);
    let mut code = vec![0u8; 8192];
    let n = pointcode::encode(&pts, 10, &mut code).expect("pointcode::encode");
    let mut hyps = heapless::Vec::new();
    hyps.push(Hypothesis {
        points: &code[..n],
        labels: Some(&labels),
        confidence: None,
    })
    .unwrap();
    let msg = Message::PointCloud(PointCloudFrame {
        device_id: 1,
        frame_id: 1,
        capture_ts_us: 0,
        bits: 10,
        bounds: BOUNDS,
        hypotheses: hyps,
    });
    let bytes = encode(&msg);

    let check = |payload: &[u8]| {
        let Ok(Message::PointCloud(f)) = decode_message(payload) else {
            panic!("decode")
        };
        let mut back = vec![[0u16; 3]; 600];
        let (count, bits) = pointcode::decode(f.hypotheses[0].points, &mut back).unwrap();
        assert_eq!((count, bits), (500, 10));
        assert_eq!(&back[..count], &pts[..]);
        assert_eq!(f.hypotheses[0].labels, Some(&labels[..]));
    };

    let mut framed = vec![0u8; max_encoded_len(bytes.len())];
    let fl = encode_frame(&bytes, &mut framed).unwrap();
    let mut r = FrameReader::<8192>::new();
    let mut seen = 0;
    r.feed(&framed[..fl], |f| {
        check(f.unwrap());
        seen += 1;
    });
    assert_eq!(seen, 1);

    let mut ra = Reassembler::<2, 8192>::new(None, 100);
    let mut seen = 0;
    for d in datagrams(1, 1, &bytes, None) {
        if let Some(f) = ra.push(&d, 0).unwrap() {
            check(f.payload);
            seen += 1;
        }
    }
    assert_eq!(seen, 1);
}

// ------------------------------------------------- link-layer golden bytes

#[test]
fn crc_is_iso_hdlc() {
    assert_eq!(shapecast_wire::crc32(&[b"1234", b"56789"]), 0xCBF4_3926);
}

#[test]
fn golden_serial_frame_and_datagram() {
    // Serial: 0x00 | COBS(payload | CRC LE) | 0x00. CRC-32(01 00 02) = 0x108dd209 (zlib).
    let payload = [0x01, 0x00, 0x02];
    let crc = shapecast_wire::crc32(&[&payload]).to_le_bytes();
    assert_eq!(hex(&crc), "09d28d10");
    let mut out = [0u8; 16];
    let n = encode_frame(&payload, &mut out).unwrap();
    assert_eq!(hex(&out[..n]), "00 0201 06 0209d28d10 00".replace(' ', ""));

    // Datagram: header (28 bytes) | data.
    let mut f = Fragmenter::new(0x0102_0304, 300, &payload, None).unwrap();
    let mut dg = [0u8; MAX_DATAGRAM];
    let n = f.next_datagram(&mut dg).unwrap();
    assert_eq!(
        hex(&dg[..n]),
        "5343 01 00 04030201 2c010000 0000 0100 03000000 00000000 09d28d10 010002".replace(' ', "")
    );
    assert_eq!(f.next_datagram(&mut dg), None);
}

/// Found by `.ci/fuzz.sh` (target pointcode_decode, 2026-11-21): two points
/// at 15 bits encoded to 3 bytes (`a1 0f 02`: the all-zero arithmetic body
/// was trimmed as trailing zeros) that decode refused (`Truncated`). Fixed by
/// never trimming the range coder's output (exact-length streams).
#[test]
fn pointcode_fuzz_regression_two_points_15_bits() {
    let pts = [[0u16, 0, 0], [16384, 0, 0]];
    let mut enc = vec![0u8; pointcode::max_encoded_len(2, 15)];
    let m = pointcode::encode(&pts, 15, &mut enc).unwrap();
    let mut back = [[0u16; 3]; 4];
    assert_eq!(pointcode::decode(&enc[..m], &mut back), Ok((2, 15)));
    assert_eq!(&back[..2], &pts);
}

/// Format 5 (tag 0xA6, `Method::Symbol`) frozen from the public API: 40
/// points on a tilted plane patch at 10 bits (isolated points with planes,
/// pairs, one duplicate) and 16 points on a line at 12 bits. Any change
/// of the format changes these bytes (and must change its tag and
/// SPEC.md section 5.9).
#[test]
fn golden_pointcode_format5() {
    let mut pts: Vec<[u16; 3]> = (0..40u16)
        .map(|i| {
            let (u, v) = (i % 8, i / 8);
            [
                100 + 37 * u + (i * 7) % 5,
                200 + 41 * v,
                300 + 9 * u + 5 * v + (i % 3),
            ]
        })
        .collect();
    pts.push(pts[5]);
    pointcode::sort_canonical(&mut pts, &mut [] as &mut [u8]);
    // 16 points along a line at 12 bits, two of them identical.
    let mut line: Vec<[u16; 3]> = (0..15u16)
        .map(|i| [1000 + 3 * i, 2000 + (i & 1), 50 + i])
        .collect();
    line.push(line[7]);
    pointcode::sort_canonical(&mut line, &mut [] as &mut [u8]);
    for (cloud, bits, want) in [
        (&pts[..], 10u8, GOLDEN_FORMAT5_PLANE),
        (&line[..], 12, GOLDEN_FORMAT5_LINE),
    ] {
        let mut enc = vec![0u8; pointcode::max_encoded_len(cloud.len(), bits)];
        let m = pointcode::encode_with(cloud, bits, pointcode::Method::Symbol, &mut enc).unwrap();
        assert_eq!(enc[0], pointcode::TAG_SYMBOL);
        assert_eq!(hex(&enc[..m]), want, "format 5 bitstream changed");
        let mut back = vec![[0u16; 3]; cloud.len()];
        assert_eq!(
            pointcode::decode(&enc[..m], &mut back),
            Ok((cloud.len(), bits))
        );
        assert_eq!(&back[..], cloud);
        // The same bytes under the retired tag 0xA5 (format 5's session-7 draft, and its
        // final bytes as written by session-8 builds): refused as an unsupported version,
        // never decoded (the two cannot be told apart; SPEC 5).
        let mut retired = enc[..m].to_vec();
        retired[0] = 0xA5;
        assert_eq!(
            pointcode::decode(&retired, &mut back),
            Err(Error::UnsupportedVersion)
        );
    }
}

const GOLDEN_FORMAT5_PLANE: &str = "a60a292b0006a59a2e05022e95a5ecb17baf6b3219b76b3bce66762216fb1cb15056bb9c9e981432a6c34aae52c0c869096ec6602c2e918b14ad71231ed3d4ce01cad6823e4d1a8ac131b256c39a3b4c461e3463813eac8f0429f14227fa348321b05a2bd2883198342806";
const GOLDEN_FORMAT5_LINE: &str =
    "a60c101800037036c69ea5b628eb10c5205e3b90ced4cde896d8702e0728620a70c184454c8200";

// ------------------------------------------------ point coder: no allocation

// The counting global allocator shared with the runtime's tests.
#[path = "../../../tests/support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::thread_allocs;

/// `sort_canonical` + `encode` + `decode` of a 2048-point surface cloud (with
/// labels as attributes) make zero heap allocations, at every bench depth.
#[test]
fn pointcode_makes_no_allocation() {
    // Sanity: the counter sees an allocation on this thread.
    counting_alloc::assert_counting();

    for bits in [8u8, 10, 12, 16] {
        let max = f64::from((1u32 << bits) - 1);
        // Points on a wavy sphere-like surface (deterministic).
        let pts: Vec<[u16; 3]> = (0..2048u32)
            .map(|i| {
                let t = f64::from(i) * 0.618_033_988_75;
                let z = 1.0 - 2.0 * (f64::from(i) + 0.5) / 2048.0;
                let r = (1.0 - z * z).sqrt() * (1.0 + 0.1 * (5.0 * t).sin());
                let a = t * std::f64::consts::TAU;
                let c = |v: f64| ((v * 0.45 + 0.5) * max).round() as u16;
                [c(r * a.cos()), c(r * a.sin()), c(z)]
            })
            .collect();
        let mut work = pts.clone();
        let mut labels: Vec<u8> = (0..2048u32).map(|i| (i % 7) as u8).collect();
        let mut enc = vec![0u8; pointcode::max_encoded_len(work.len(), bits)];
        let mut back = vec![[0u16; 3]; work.len()];

        let before = thread_allocs();
        pointcode::sort_canonical(&mut work, &mut labels);
        let m = pointcode::encode(&work, bits, &mut enc);
        let d = pointcode::decode(
            enc.get(..*m.as_ref().unwrap_or(&0)).unwrap_or(&[]),
            &mut back,
        );
        let allocs = thread_allocs() - before;

        let m = m.expect("encode");
        assert_eq!(d, Ok((2048, bits)));
        assert_eq!(back, work);
        assert_eq!(allocs, 0, "{allocs} heap allocations at {bits} bits");
        // Format 5 (the symbol coder) and format 3 (the compact coder).
        for method in [pointcode::Method::Symbol, pointcode::Method::Compact] {
            let before = thread_allocs();
            let m5 = pointcode::encode_with(&work, bits, method, &mut enc);
            let d5 = pointcode::decode(
                enc.get(..*m5.as_ref().unwrap_or(&0)).unwrap_or(&[]),
                &mut back,
            );
            let allocs = thread_allocs() - before;
            assert!(m5.is_ok(), "{method:?} encode");
            assert_eq!(d5, Ok((2048, bits)));
            assert_eq!(back, work);
            assert_eq!(
                allocs, 0,
                "{allocs} heap allocations, {method:?} at {bits} bits"
            );
        }
        // Also without attributes.
        let mut work2 = pts.clone();
        let before = thread_allocs();
        pointcode::sort_canonical(&mut work2, &mut [] as &mut [u8]);
        let m2 = pointcode::encode(&work2, bits, &mut enc);
        let allocs = thread_allocs() - before;
        assert_eq!(m2, Ok(m));
        assert_eq!(
            allocs, 0,
            "{allocs} heap allocations (no attrs) at {bits} bits"
        );
    }
}

/// `sort_canonical` of sizes outside 65..=2048 must not pay for the LSD sort's
/// 22 KiB stack frame: when `lsd` was inlined into it, sorting 10 points took
/// 20.5 KiB of stack (session 10; found by stack painting) and a thread with a
/// 16 KiB stack (an RTOS task, a small worker) overflowed. Such a thread now
/// sorts 10 and 3000 points (the in-place sort: under 3 KiB). A guard of release
/// builds only (CI's): unoptimised builds inline nothing, so there the test
/// passes with or without `#[inline(never)]` on `lsd`.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "release builds only: debug builds inline nothing"
)]
fn sort_canonical_small_or_large_fits_a_16k_stack() {
    let t = std::thread::Builder::new()
        .stack_size(16 * 1024)
        .spawn(|| {
            for n in [10usize, 3000] {
                let mut s = 0x9E37_79B9u32;
                let mut pts: Vec<[u16; 3]> = (0..n)
                    .map(|_| {
                        [0; 3].map(|_: u16| {
                            s ^= s << 13;
                            s ^= s >> 17;
                            s ^= s << 5;
                            (s & 0x3FF) as u16
                        })
                    })
                    .collect();
                let mut labels: Vec<u8> = (0..n).map(|i| i as u8).collect();
                pointcode::sort_canonical(&mut pts, &mut labels);
                assert!(pts
                    .windows(2)
                    .all(|w| pointcode::morton_key(w[0]) <= pointcode::morton_key(w[1])));
            }
        })
        .unwrap();
    t.join().unwrap();
}
