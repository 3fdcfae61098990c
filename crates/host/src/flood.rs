//! `flood-bench`: floods an in-process receiver on loopback with random
//! datagrams at full speed while a sender streams valid point-cloud frames,
//! then reports peak RSS (VmHWM) and valid frames sent vs received
//! (bit-exact). Not a test: a benchmark command whose figures go to
//! bench/host/RESULTS.md.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::say;
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shapecast_geom::ply::PlyData;
use shapecast_host::convert::encode_points;
use shapecast_host::{Event, FnSink, Receiver, ReceiverConfig};
use shapecast_link::udp::UdpSender;
use shapecast_wire::auth::Key;
use shapecast_wire::crc32;
use shapecast_wire::pointcode::Bounds;

#[derive(Debug, Args)]
pub struct FloodArgs {
    /// Duration of the flood, seconds.
    #[arg(long, default_value_t = 10.0, value_parser = crate::seconds)]
    seconds: f64,
    /// Valid frames per second.
    #[arg(long, default_value_t = 30.0)]
    fps: f64,
    /// Points per valid frame.
    #[arg(long, default_value_t = 4096)]
    points: usize,
    /// Quantization bits of the valid frames.
    #[arg(long, default_value_t = 12)]
    bits: u8,
    /// Flooding threads.
    #[arg(long, default_value_t = 1)]
    flooders: usize,
    /// Use a pre-shared key (valid frames authenticated; the flood is not).
    #[arg(long)]
    psk: bool,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn sphere(n: usize, rng: &mut ChaCha8Rng) -> PlyData {
    let pts = (0..n)
        .map(|_| {
            let z: f32 = rng.gen_range(-1.0..1.0);
            let t: f32 = rng.gen_range(0.0..std::f32::consts::TAU);
            let r = (1.0 - z * z).sqrt() * 0.1;
            [r * t.cos(), r * t.sin(), 0.5 + z * 0.1]
        })
        .collect();
    PlyData::points(pts)
}

pub fn run(a: &FloodArgs) -> Result<ExitCode> {
    let key = a.psk.then(|| Key::new([0x5c; 32]));
    let sent_crc: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let exact = Arc::new(AtomicU64::new(0));
    let mismatched = Arc::new(AtomicU64::new(0));
    let sink = {
        let (sent_crc, exact, mismatched) = (
            Arc::clone(&sent_crc),
            Arc::clone(&exact),
            Arc::clone(&mismatched),
        );
        FnSink(move |ev: &Event<'_>| {
            if let Some(id) = ev.message.frame_id() {
                let want = sent_crc
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&id)
                    .copied();
                if want == Some(crc32(&[ev.payload])) {
                    exact.fetch_add(1, Ordering::Relaxed);
                } else {
                    mismatched.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(0)
        })
    };
    let hwm_before = vm_hwm_kib();
    let rx = Receiver::start(
        ReceiverConfig {
            udp: Some(([127, 0, 0, 1], 0).into()),
            key: key.clone(),
            ..ReceiverConfig::default()
        },
        sink,
    )
    .context("starting the receiver")?;
    let addr = rx.udp_addr().context("receiver has no UDP address")?;
    let stop = Arc::new(AtomicBool::new(false));
    let flood_sent = Arc::new(AtomicU64::new(0));
    let flood_err = Arc::new(AtomicU64::new(0));
    let mut flooders = Vec::new();
    for t in 0..a.flooders {
        let (stop, sent, err) = (
            Arc::clone(&stop),
            Arc::clone(&flood_sent),
            Arc::clone(&flood_err),
        );
        let seed = a.seed.wrapping_add(1000 + t as u64);
        let sock = UdpSocket::bind("127.0.0.1:0").context("binding a flood socket")?;
        flooders.push(std::thread::spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            // A pool of random datagrams; a quarter start like real fragments
            // ("SC", version 1) so they get past the first check.
            let pool: Vec<Vec<u8>> = (0..1024)
                .map(|i| {
                    let n = rng.gen_range(1..=1200);
                    let mut d: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                    if i % 4 == 0 && n >= 3 {
                        d[..3].copy_from_slice(b"SC\x01");
                    }
                    d
                })
                .collect();
            let mut i = 0usize;
            let (mut ok, mut bad) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    match sock.send_to(&pool[i % pool.len()], addr) {
                        Ok(_) => ok += 1,
                        Err(_) => bad += 1,
                    }
                    i = i.wrapping_add(1);
                }
            }
            sent.fetch_add(ok, Ordering::Relaxed);
            err.fetch_add(bad, Ordering::Relaxed);
        }));
    }
    // Valid frames.
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    let mut sender = UdpSender::new(addr, 7, key).context("creating the UDP sender")?;
    let t0 = Instant::now();
    let period = Duration::from_secs_f64(1.0 / a.fps.max(0.1));
    let mut frames_sent = 0u32;
    let mut bytes_sent = 0u64;
    let bounds = Bounds {
        min: [-0.12, -0.12, 0.38],
        max: [0.12, 0.12, 0.62],
    };
    while t0.elapsed().as_secs_f64() < a.seconds {
        let cloud = sphere(a.points, &mut rng);
        let enc = encode_points(&cloud, a.bits, Some(bounds), 7, frames_sent)
            .context("coding a valid frame")?;
        sent_crc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(frames_sent, crc32(&[&enc.message]));
        sender
            .send_frame(frames_sent, &enc.message)
            .context("sending a valid frame")?;
        bytes_sent += enc.message.len() as u64;
        frames_sent += 1;
        let due = period * frames_sent;
        let el = t0.elapsed();
        if due > el {
            std::thread::sleep(due - el);
        }
    }
    let flood_secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        let _ = f.join();
    }
    let all = rx.wait_frames(u64::from(frames_sent), Duration::from_secs(3));
    let hwm = vm_hwm_kib();
    let s = rx.stop();
    let fl = flood_sent.load(Ordering::Relaxed);
    let received_exact = exact.load(Ordering::Relaxed);
    say!(
        "flood-bench: {:.1} s, {} flooder thread(s), psk {}",
        flood_secs,
        a.flooders,
        a.psk
    )?;
    say!(
        "  flood: {} random datagrams sent ({:.0}/s), {} send errors",
        fl,
        fl as f64 / flood_secs,
        flood_err.load(Ordering::Relaxed)
    )?;
    say!(
        "  host: {} datagrams read ({:.0}/s), {} refused, {} frames reassembled, queue-full {}",
        s.udp_datagrams,
        s.udp_datagrams as f64 / flood_secs,
        s.udp_rejected,
        s.udp_frames,
        s.queue_full
    )?;
    say!(
        "  valid frames: sent {} ({} points, {:.1} KiB avg), received {} bit-exact, {} mismatched, {} missing",
        frames_sent,
        a.points,
        bytes_sent as f64 / f64::from(frames_sent.max(1)) / 1024.0,
        received_exact,
        mismatched.load(Ordering::Relaxed),
        u64::from(frames_sent).saturating_sub(received_exact)
    )?;
    say!(
        "  peak RSS (VmHWM, whole process incl. flooders and sender): {} KiB (before start {} KiB)",
        hwm.map_or("?".into(), |v| v.to_string()),
        hwm_before.map_or("?".into(), |v| v.to_string())
    )?;
    if all && received_exact == u64::from(frames_sent) && mismatched.load(Ordering::Relaxed) == 0 {
        say!("  RESULT: all valid frames received")?;
        Ok(ExitCode::SUCCESS)
    } else {
        say!("  RESULT: valid frames lost")?;
        Ok(ExitCode::from(3))
    }
}
