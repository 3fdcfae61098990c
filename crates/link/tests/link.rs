//! Transports over real links: loopback UDP through a lossy proxy
//! (seeded loss, duplication, reordering, garbage), and serial over two
//! pseudo-terminals joined by socat (skipped with a message if socat is
//! missing), with garbage injected on the line.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shapecast_link::serial::{open_port, SerialReceiver, SerialSender};
use shapecast_link::udp::{UdpReceiver, UdpSender};
use shapecast_link::{LinkError, LinkSender, Transport};
use shapecast_wire::auth::Key;

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/socat.rs"]
mod socat;
use proxy::Proxy;
use socat::socat;

fn random_frames(seed: u64, n: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = if rng.gen_bool(0.2) {
                rng.gen_range(0..64)
            } else {
                rng.gen_range(0..max_len)
            };
            (0..len).map(|_| rng.gen()).collect()
        })
        .collect()
}

/// Sends `frames` through the proxy; returns what the receiver delivered.
fn udp_through_proxy(
    seed: u64,
    key: Option<Key>,
    loss: f64,
) -> (Vec<Vec<u8>>, HashMap<u32, Vec<u8>>) {
    let frames = random_frames(seed, 150, 20_000);
    let mut rx = UdpReceiver::<8, 65536>::bind("127.0.0.1:0", key.clone(), 500).unwrap();
    rx.set_timeout(Duration::from_millis(5)).unwrap();
    let proxy = Proxy::start(rx.local_addr().unwrap(), seed, loss, 0.1, 0.1, 0.05);
    let mut tx = UdpSender::new(proxy.addr, 42, key).unwrap();
    let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut on_frame = |f: &shapecast_wire::fragment::Frame<'_>, _| {
        assert_eq!(f.device_id, 42);
        assert!(
            got.insert(f.frame_id, f.payload.to_vec()).is_none(),
            "frame {} delivered twice",
            f.frame_id
        );
    };
    for (i, f) in frames.iter().enumerate() {
        tx.send_frame(i as u32, f).unwrap();
        rx.poll(64, &mut on_frame).unwrap();
    }
    let t0 = Instant::now();
    let stop_at = Duration::from_millis(600);
    let mut proxy = Some(proxy);
    while t0.elapsed() < Duration::from_secs(3) {
        rx.poll(256, &mut on_frame).unwrap();
        if t0.elapsed() > stop_at {
            if let Some(p) = proxy.take() {
                p.finish();
            }
            if rx.poll(256, &mut on_frame).unwrap() == 0 {
                break;
            }
        }
    }
    if let Some(p) = proxy.take() {
        p.finish();
    }
    let s = rx.stats();
    assert!(s.rejected > 0, "garbage must have been refused: {s:?}");
    (frames, got)
}

#[test]
fn udp_lossy_proxy_delivers_only_whole_bit_exact_frames() {
    for seed in [1u64, 2] {
        let (frames, got) = udp_through_proxy(seed, None, 0.05);
        for (id, p) in &got {
            assert_eq!(p, &frames[*id as usize], "frame {id} differs");
        }
        // With 5% datagram loss most frames (<= 18 datagrams) still arrive.
        assert!(
            got.len() >= frames.len() / 3,
            "only {} of {} frames",
            got.len(),
            frames.len()
        );
        assert!(
            got.len() < frames.len(),
            "loss was injected, yet every frame arrived"
        );
    }
}

#[test]
fn udp_lossless_proxy_with_psk_delivers_everything() {
    let key = Key::new([0x11; 32]);
    let (frames, got) = udp_through_proxy(3, Some(key), 0.0);
    assert_eq!(got.len(), frames.len());
    for (id, p) in &got {
        assert_eq!(p, &frames[*id as usize]);
    }
}

#[test]
fn udp_wrong_key_and_no_key_are_refused() {
    let mut rx = UdpReceiver::<4, 8192>::bind("127.0.0.1:0", Some(Key::new([1; 32])), 500).unwrap();
    rx.set_timeout(Duration::from_millis(20)).unwrap();
    let addr = rx.local_addr().unwrap();
    let mut bad = UdpSender::new(addr, 1, Some(Key::new([2; 32]))).unwrap();
    let mut none = UdpSender::new(addr, 1, None).unwrap();
    let mut good = UdpSender::new(addr, 1, Some(Key::new([1; 32]))).unwrap();
    bad.send_frame(0, b"evil").unwrap();
    none.send_frame(1, b"evil").unwrap();
    good.send_frame(2, b"good").unwrap();
    let mut got = Vec::new();
    for _ in 0..20 {
        rx.poll(16, |f, _| got.push(f.payload.to_vec())).unwrap();
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got, vec![b"good".to_vec()]);
    assert_eq!(rx.stats().reassembler.bad_tag, 2);
}

#[test]
fn link_sender_over_udp_never_blocks_and_counts() {
    let mut rx = UdpReceiver::<8, 65536>::bind("127.0.0.1:0", None, 500).unwrap();
    rx.set_timeout(Duration::from_millis(5)).unwrap();
    // A paced link: 200 kB/s, so 30 kB frames take 150 ms each.
    let tx = UdpSender::new(rx.local_addr().unwrap(), 5, None)
        .unwrap()
        .with_rate(Some(200_000));
    let s = LinkSender::new(tx, 60_000).unwrap();
    let frame = vec![0xAB; 30_000];
    let t0 = Instant::now();
    for _ in 0..50 {
        s.offer(&frame).unwrap();
    }
    // 50 offers of 30 kB on a 200 kB/s link (7.5 s if it blocked) return at once.
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        s.offer(&[0; 60_001]),
        Err(LinkError::TooLarge { .. })
    ));
    let mut got = Vec::new();
    let t1 = Instant::now();
    while !s.flush(Duration::from_millis(1)) && t1.elapsed() < Duration::from_secs(5) {
        rx.poll(64, |f, _| got.push((f.frame_id, f.payload.len())))
            .unwrap();
    }
    for _ in 0..10 {
        rx.poll(64, |f, _| got.push((f.frame_id, f.payload.len())))
            .unwrap();
    }
    let c = s.close();
    assert_eq!(c.offered, 51);
    assert_eq!(c.oversize, 1);
    assert_eq!(c.sent + c.dropped, 50, "{c:?}");
    assert!(c.dropped > 0, "a slow link must drop frames: {c:?}");
    assert_eq!(got.len() as u64, c.sent);
    // The newest frame always gets through.
    assert_eq!(got.last().unwrap().0, 49);
}

#[test]
fn poll_returns_while_datagrams_still_trickle_in() {
    // Regression: poll(4096) used to keep reading until 4096 datagrams or
    // one socket timeout without data, so a sender slower than the timeout
    // held the caller (and its stop flag) for as long as it kept sending.
    let mut rx = UdpReceiver::<8, 65536>::bind("127.0.0.1:0", None, 500).unwrap();
    rx.set_timeout(Duration::from_millis(200)).unwrap();
    let addr = rx.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let sender = std::thread::spawn(move || {
        let mut tx = UdpSender::new(addr, 1, None).unwrap();
        for id in 0..100 {
            tx.send_frame(id, b"tick").unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        d.store(true, Ordering::SeqCst);
    });
    let mut frames = 0;
    while frames == 0 {
        rx.poll(4096, |_, _| frames += 1).unwrap();
    }
    // The sender runs for 2 s; a poll that waited for 4096 datagrams (or a
    // quiet socket) would only come back after it finished.
    assert!(
        !done.load(Ordering::SeqCst),
        "poll waited for the sender to stop"
    );
    sender.join().unwrap();
}

fn serial_roundtrip(key: Option<Key>, tag: &str) {
    let Some(s) = socat(tag) else { return };
    let frames = random_frames(9, 60, 3000);
    let port_a = open_port(s.a.to_str().unwrap(), 115_200, Duration::from_millis(50)).unwrap();
    let port_b = open_port(s.b.to_str().unwrap(), 115_200, Duration::from_millis(50)).unwrap();
    let n = frames.len();
    let rk = key.clone();
    let reader = std::thread::spawn(move || {
        let mut rx: SerialReceiver<_, 8192> = SerialReceiver::new(port_b, rk);
        let mut got = Vec::new();
        let mut errors = 0u64;
        let t0 = Instant::now();
        while got.len() < n && t0.elapsed() < Duration::from_secs(20) {
            rx.poll(|r| match r {
                Ok(p) => got.push(p.to_vec()),
                Err(_) => errors += 1,
            })
            .unwrap();
        }
        (got, errors, rx.stats())
    });
    let mut tx = SerialSender::new(port_a, key, "pty");
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for (i, f) in frames.iter().enumerate() {
        tx.send(i as u32, f).unwrap();
        // Garbage between frames: random bytes (including zeros) and a
        // fake delimiter-free burst.
        let g: Vec<u8> = (0..rng.gen_range(1..200)).map(|_| rng.gen()).collect();
        std::io::Write::write_all(tx.get_mut(), &g).unwrap();
    }
    // A final delimiter so trailing garbage is closed off.
    std::io::Write::write_all(tx.get_mut(), &[0]).unwrap();
    let (got, errors, stats) = reader.join().unwrap();
    assert_eq!(got.len(), n, "frames lost on a lossless line: {stats:?}");
    assert_eq!(got, frames, "frames differ");
    assert!(
        errors > 0 && stats.bytes_discarded > 0,
        "garbage must be seen and dropped: {stats:?}"
    );
}

#[test]
fn serial_over_socat_ptys_survives_garbage() {
    serial_roundtrip(None, "plain");
}

#[test]
fn serial_over_socat_ptys_with_psk() {
    serial_roundtrip(Some(Key::new([0x77; 32])), "psk");
}

/// Adversarial bytes on both receive paths.
mod adversarial {
    use super::*;
    use proptest::prelude::*;
    use rand::Rng;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Serial: any garbage between frames (each burst ended by a delimiter, as a line
        /// glitch is followed by the next frame's) costs no frame and no panic, whatever
        /// the read sizes.
        #[test]
        fn serial_garbage_between_frames_loses_no_frame(
            frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..6),
            garbage in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 6),
            keyed in any::<bool>(),
            chunk in 1usize..64,
        ) {
            let key = keyed.then(|| Key::new([5; 32]));
            let mut tx = SerialSender::new(Vec::new(), key.clone(), "mem");
            for (i, f) in frames.iter().enumerate() {
                tx.get_mut().extend_from_slice(&garbage[i]);
                tx.get_mut().push(0);
                tx.send_frame(i as u32, f).unwrap();
            }
            tx.get_mut().extend_from_slice(&garbage[5]);
            let bytes = std::mem::take(tx.get_mut());
            // a reader that hands out at most `chunk` bytes per read
            struct Chunks<'a>(&'a [u8], usize);
            impl std::io::Read for Chunks<'_> {
                fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                    let n = self.1.min(b.len()).min(self.0.len());
                    b[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let mut rx: SerialReceiver<_, 1024> = SerialReceiver::new(Chunks(&bytes, chunk), key);
            let mut got = Vec::new();
            loop {
                match rx.poll(|r| {
                    if let Ok(p) = r {
                        got.push(p.to_vec());
                    }
                }) {
                    Ok(_) => {}
                    Err(LinkError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => prop_assert!(false, "{e}"),
                }
            }
            prop_assert_eq!(got, frames);
        }
    }

    /// UDP: datagrams of any bytes and sizes (empty, up to over the datagram limit) before
    /// and between the fragments of real frames are counted as rejected or oversize; every
    /// real frame still comes out whole.
    #[test]
    fn udp_garbage_datagrams_lose_no_frame() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut rx: UdpReceiver<4, 65536> = UdpReceiver::bind("127.0.0.1:0", None, 1000).unwrap();
        let addr = rx.local_addr().unwrap();
        let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut tx = UdpSender::new(addr, 7, None).unwrap();
        let frames = random_frames(3, 12, 5000);
        let mut got = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            for _ in 0..20 {
                let len = match rng.gen_range(0..4) {
                    0 => 0,
                    1 => rng.gen_range(1..32),
                    2 => rng.gen_range(32..1400),
                    _ => rng.gen_range(1400..2100),
                };
                let mut d: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                if len >= 8 && rng.gen_bool(0.5) {
                    // a plausible start: a real fragment's first bytes, then garbage
                    let mut real = Vec::new();
                    let mut f2 =
                        shapecast_wire::fragment::Fragmenter::new(9, i as u32, &[1; 3000], None)
                            .unwrap();
                    let mut dg = [0u8; shapecast_wire::fragment::MAX_DATAGRAM];
                    if let Some(n) = f2.next_datagram(&mut dg) {
                        real.extend_from_slice(&dg[..n.min(len / 2)]);
                    }
                    d[..real.len()].copy_from_slice(&real);
                }
                junk.send_to(&d, addr).unwrap();
            }
            tx.send_frame(i as u32, f).unwrap();
            // drain what has arrived so far (loopback: all of it, once the socket is idle)
            let t0 = Instant::now();
            while got.len() <= i && t0.elapsed() < Duration::from_secs(2) {
                rx.poll(256, |fr, _| got.push((fr.frame_id, fr.payload.to_vec())))
                    .unwrap();
            }
        }
        let want: Vec<(u32, Vec<u8>)> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| (i as u32, f.clone()))
            .collect();
        assert_eq!(got, want);
        let s = rx.stats();
        assert!(s.rejected + s.oversize > 0, "{s:?}");
    }
}
