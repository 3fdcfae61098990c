//! A lossy UDP proxy (seeded loss, duplication, reordering, garbage),
//! shared by the UDP tests of shapecast-link and shapecast-host (included
//! with `#[path]`).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A UDP proxy that drops, duplicates, delays (reorders) datagrams and
/// injects garbage, driven by a seeded RNG.
pub struct Proxy {
    /// Where to send the datagrams to be forwarded.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

impl Proxy {
    /// Forwards to `to`: each datagram is preceded by a garbage datagram with
    /// probability `garbage`, lost with `loss`, else held back (sent later) with
    /// `reorder`, else sent (twice with `dup`).
    pub fn start(
        to: SocketAddr,
        seed: u64,
        loss: f64,
        dup: f64,
        reorder: f64,
        garbage: f64,
    ) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut held: Vec<Vec<u8>> = Vec::new();
            let mut buf = vec![0u8; 2048];
            let mut forwarded = 0u64;
            let mut idle = 0;
            while !st.load(Ordering::Relaxed) || (!held.is_empty() && idle < 3) {
                match sock.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        idle = 0;
                        let d = buf[..n].to_vec();
                        if rng.gen_bool(garbage) {
                            let g: Vec<u8> =
                                (0..rng.gen_range(1..1300)).map(|_| rng.gen()).collect();
                            sock.send_to(&g, to).unwrap();
                        }
                        if rng.gen_bool(loss) {
                            continue;
                        }
                        if rng.gen_bool(reorder) {
                            held.push(d);
                            continue;
                        }
                        sock.send_to(&d, to).unwrap();
                        forwarded += 1;
                        if rng.gen_bool(dup) {
                            sock.send_to(&d, to).unwrap();
                        }
                        // Release a held datagram now and then: it arrives late.
                        if !held.is_empty() && rng.gen_bool(0.3) {
                            let i = rng.gen_range(0..held.len());
                            sock.send_to(&held.swap_remove(i), to).unwrap();
                            forwarded += 1;
                        }
                    }
                    Err(_) => {
                        idle += 1;
                        while let Some(d) = held.pop() {
                            sock.send_to(&d, to).unwrap();
                            forwarded += 1;
                        }
                    }
                }
            }
            forwarded
        });
        Proxy {
            addr,
            stop,
            handle: Some(handle),
        }
    }

    /// Stops (after sending what it holds); the datagrams forwarded.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
