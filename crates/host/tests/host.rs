//! The host receiver over real links: loopback UDP through a lossy proxy
//! (seeded loss, duplication, reordering, garbage) from several devices,
//! serial over socat pseudo-terminals with garbage on the line, the PSK
//! gate, the device bound, and the CLI (`encode`, `decode`, `listen`).

use std::collections::HashMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shapecast_geom::ply::{self, PlyData};
use shapecast_host::convert::message_to_ply;
use shapecast_host::receiver::SerialConfig;
use shapecast_host::sink::Tee;
use shapecast_host::{Event, FnSink, PlyDirSink, Receiver, ReceiverConfig};
use shapecast_link::serial::{open_port, SerialSender};
use shapecast_link::udp::UdpSender;
use shapecast_wire::auth::Key;
use shapecast_wire::message::{
    encode_message, occupancy_len, voxel_set, Counters, Drops, HeadKind, Hello, Hypothesis,
    IndexWidth, MeshFrame, Message, PointCloudFrame, Stats, Units, VoxelFrame,
};
use shapecast_wire::pointcode::{self, Bounds};

#[path = "../../link/tests/support/proxy.rs"]
mod proxy;
use proxy::Proxy;
#[path = "../../link/tests/support/socat.rs"]
mod socat;
use socat::socat;

const B: Bounds = Bounds {
    min: [-0.5, -0.5, 0.0],
    max: [0.5, 0.5, 1.0],
};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shapecast-host-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn enc(msg: &Message<'_>) -> Vec<u8> {
    let mut out = vec![0u8; 1 << 20];
    let n = encode_message(msg, &mut out).unwrap();
    out.truncate(n);
    out
}

fn point_code(rng: &mut ChaCha8Rng, n: usize, bits: u8) -> Vec<u8> {
    let m = (1u32 << bits) - 1;
    let mut q: Vec<[u16; 3]> = (0..n)
        .map(|_| std::array::from_fn(|_| rng.gen_range(0..=m) as u16))
        .collect();
    pointcode::sort_canonical::<()>(&mut q, &mut []);
    let mut out = vec![0u8; pointcode::max_encoded_len(n, bits)];
    let len = pointcode::encode(&q, bits, &mut out).unwrap();
    out.truncate(len);
    out
}

/// Frame `fid` of device `dev`: points (2 hypotheses, labels, confidence),
/// voxels or a mesh, by `fid % 3`.
/// Sends device 3's frames (frame ids 0, 1, ...; message ids `fid * id_step`) every 50 ms
/// until the `listen` child exits (at most 30 s); its exit status.
fn feed_until_exit(
    child: &mut std::process::Child,
    tx: &mut UdpSender,
    seed: u64,
    id_step: u32,
) -> std::process::ExitStatus {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t0 = Instant::now();
    let mut fid = 0;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "listen did not stop"
        );
        let _ = tx.send_frame(fid, &frame(3, fid * id_step, &mut rng));
        fid += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback UDP port that was free a moment ago (for a `listen` child to bind).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn frame(dev: u32, fid: u32, rng: &mut ChaCha8Rng) -> Vec<u8> {
    match fid % 3 {
        0 => {
            let bits = 10;
            let (n0, n1) = (rng.gen_range(50..1500), rng.gen_range(1..300));
            let c0 = point_code(rng, n0, bits);
            let c1 = point_code(rng, n1, bits);
            let labels: Vec<u8> = (0..n0).map(|_| rng.gen_range(0..5)).collect();
            let conf: Vec<u8> = (0..n0).map(|_| rng.gen()).collect();
            let mut hyp = heapless::Vec::new();
            hyp.push(Hypothesis {
                points: &c0,
                labels: Some(&labels),
                confidence: Some(&conf),
            })
            .unwrap();
            hyp.push(Hypothesis {
                points: &c1,
                labels: None,
                confidence: None,
            })
            .unwrap();
            let v = enc(&Message::PointCloud(PointCloudFrame {
                device_id: dev,
                frame_id: fid,
                capture_ts_us: u64::from(fid) * 33_000,
                bits,
                bounds: B,
                hypotheses: hyp,
            }));
            v
        }
        1 => {
            let r = 16u16;
            let mut occ = vec![0u8; occupancy_len(r)];
            for _ in 0..200 {
                let c: [u16; 3] = std::array::from_fn(|_| rng.gen_range(0..r));
                voxel_set(&mut occ, r, c[0], c[1], c[2]);
            }
            let v = enc(&Message::Voxels(VoxelFrame {
                device_id: dev,
                frame_id: fid,
                capture_ts_us: u64::from(fid) * 33_000,
                resolution: r,
                bounds: B,
                occupancy: &occ,
            }));
            v
        }
        _ => {
            let nv = rng.gen_range(3..400usize);
            let verts: Vec<u8> = (0..nv * 3)
                .flat_map(|_| rng.gen_range(0..1024u16).to_le_bytes())
                .collect();
            let faces: Vec<u8> = (0..nv * 2)
                .flat_map(|_| rng.gen_range(0..nv as u16).to_le_bytes())
                .collect();
            let faces = &faces[..faces.len() / 6 * 6];
            let v = enc(&Message::Mesh(MeshFrame {
                device_id: dev,
                frame_id: fid,
                capture_ts_us: u64::from(fid) * 33_000,
                bits: 10,
                bounds: B,
                index_width: IndexWidth::U16,
                vertices: &verts,
                faces,
                labels: None,
            }));
            v
        }
    }
}

fn hello(dev: u32) -> Vec<u8> {
    enc(&Message::Hello(Hello {
        device_id: dev,
        model_id: "test-model",
        head: HeadKind::Points,
        units: Units::Metres,
        bounds: B,
        point_bits: 10,
        max_points: 2048,
        voxel_resolution: 0,
        num_classes: 5,
        input_size: [128, 128],
    }))
}

fn stats_msg(dev: u32) -> Vec<u8> {
    enc(&Message::Stats(Stats {
        device_id: dev,
        uptime_ms: 1000,
        fps_x100: 3000,
        counters: Counters {
            captured: 10,
            inferred: 10,
            sent: 10,
        },
        drops: Drops::default(),
        latency: Default::default(),
    }))
}

type Seen = Arc<Mutex<Vec<(u32, Option<u32>, Vec<u8>)>>>;

/// A sink that records (device, frame id, payload) of every message.
fn recorder() -> (Seen, impl shapecast_host::Sink) {
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let sink = FnSink(move |ev: &Event<'_>| {
        s.lock().unwrap().push((
            ev.message.device_id(),
            ev.message.frame_id(),
            ev.payload.to_vec(),
        ));
        Ok(0)
    });
    (seen, sink)
}

/// Checks that exactly the received frames have PLY files, equal to the
/// geometry of the sent payload, and that no partial file is left.
fn check_files(dir: &Path, sent: &HashMap<(u32, u32), Vec<u8>>, seen: &Seen) -> usize {
    let seen = seen.lock().unwrap();
    let mut frames = 0;
    let mut got_ids = std::collections::HashSet::new();
    for (dev, fid, payload) in seen.iter() {
        let Some(fid) = fid else { continue };
        frames += 1;
        assert!(
            got_ids.insert((*dev, *fid)),
            "frame {dev}/{fid} delivered twice"
        );
        let want = sent
            .get(&(*dev, *fid))
            .expect("a frame that was never sent");
        assert_eq!(payload, want, "frame {dev}/{fid} not bit-exact");
        let msg = shapecast_wire::message::decode_message(want).unwrap();
        let geo = message_to_ply(&msg).unwrap();
        for (k, g) in geo.iter().enumerate() {
            let p = PlyDirSink::path(dir, *dev, *fid, k);
            let back = ply::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(&back, g, "{}", p.display());
        }
    }
    for (dev, fid) in sent.keys() {
        if !got_ids.contains(&(*dev, *fid)) {
            assert!(!PlyDirSink::path(dir, *dev, *fid, 0).exists());
        }
    }
    for e in walk(dir) {
        assert!(
            e.extension().is_some_and(|x| x == "ply"),
            "unexpected file {}",
            e.display()
        );
    }
    frames
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

#[test]
fn udp_many_devices_through_lossy_proxy_write_exact_ply() {
    let dir = tmpdir("udp");
    let (seen, rec) = recorder();
    let rx = Receiver::start(
        ReceiverConfig {
            udp: Some(([127, 0, 0, 1], 0).into()),
            reassembly_timeout_ms: 300,
            ..ReceiverConfig::default()
        },
        Tee(PlyDirSink::new(&dir).unwrap(), rec),
    )
    .unwrap();
    let proxy = Proxy::start(rx.udp_addr().unwrap(), 11, 0.03, 0.1, 0.1, 0.05);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut sent = HashMap::new();
    let mut senders: Vec<UdpSender> = (1..=3)
        .map(|d| UdpSender::new(proxy.addr, d, None).unwrap())
        .collect();
    let mut link_id = [0u32; 3];
    for fid in 0..45u32 {
        for (i, s) in senders.iter_mut().enumerate() {
            let dev = i as u32 + 1;
            if fid % 15 == 0 {
                s.send_frame(link_id[i], &hello(dev)).unwrap();
                link_id[i] += 1;
                s.send_frame(link_id[i], &stats_msg(dev)).unwrap();
                link_id[i] += 1;
            }
            let p = frame(dev, fid, &mut rng);
            s.send_frame(link_id[i], &p).unwrap();
            link_id[i] += 1;
            sent.insert((dev, fid), p);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(500));
    proxy.finish();
    let stats = rx.stop();
    let frames = check_files(&dir, &sent, &seen);
    assert_eq!(stats.frames as usize, frames);
    assert!(
        frames >= sent.len() / 2,
        "only {frames} of {} frames",
        sent.len()
    );
    assert!(frames < sent.len(), "3% loss injected but nothing lost");
    assert_eq!(stats.devices.len(), 3);
    for d in &stats.devices {
        assert_eq!(d.model_id.as_deref(), Some("test-model"));
        assert!(d.last_report.is_some());
        assert!(d.loss() > 0.0 && d.loss() < 0.5, "{}", d.summary());
        assert!(d.bytes_per_point() > 0.0);
    }
    assert!(stats.udp_rejected > 0, "garbage was injected");
    assert!(stats.render().contains("dev     2"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn psk_gate_and_device_bound() {
    let key = Key::new([0x42; 32]);
    let (seen, rec) = recorder();
    let rx = Receiver::start(
        ReceiverConfig {
            udp: Some(([127, 0, 0, 1], 0).into()),
            key: Some(key.clone()),
            max_devices: 2,
            ..ReceiverConfig::default()
        },
        rec,
    )
    .unwrap();
    let addr = rx.udp_addr().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut plain = UdpSender::new(addr, 9, None).unwrap();
    plain.send_frame(0, &frame(9, 0, &mut rng)).unwrap();
    for dev in 1..=3u32 {
        let mut s = UdpSender::new(addr, dev, Some(key.clone())).unwrap();
        for fid in 0..3 {
            s.send_frame(fid, &frame(dev, fid, &mut rng)).unwrap();
        }
    }
    // Device id in the datagram header differs from the message's: dropped.
    let mut liar = UdpSender::new(addr, 1, Some(key.clone())).unwrap();
    liar.send_frame(100, &frame(2, 100, &mut rng)).unwrap();
    assert!(rx.wait_frames(6, Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    let s = rx.stop();
    assert_eq!(s.frames, 6);
    assert_eq!(s.devices_refused, 3);
    assert_eq!(s.device_mismatch, 1);
    assert!(
        s.udp_rejected >= 1,
        "unauthenticated datagram must be refused"
    );
    let devs: Vec<u32> = seen.lock().unwrap().iter().map(|x| x.0).collect();
    assert!(devs.iter().all(|&d| d == 1 || d == 2), "{devs:?}");
}

#[test]
fn config_errors_are_typed() {
    let (_, rec) = recorder();
    assert!(matches!(
        Receiver::start(ReceiverConfig::default(), rec),
        Err(shapecast_host::HostError::Config(_))
    ));
    let (_, rec) = recorder();
    let r = Receiver::start(
        ReceiverConfig {
            serial: Some(SerialConfig {
                path: "/nonexistent/tty".into(),
                baud: 115_200,
            }),
            ..ReceiverConfig::default()
        },
        rec,
    );
    assert!(matches!(r, Err(shapecast_host::HostError::Link(_))));
}

#[test]
fn serial_over_socat_with_garbage_writes_exact_ply() {
    let Some(pty) = socat("serial") else { return };
    let dir = tmpdir("serial-out");
    let key = Key::new([0x33; 32]);
    let (seen, rec) = recorder();
    let rx = Receiver::start(
        ReceiverConfig {
            serial: Some(SerialConfig {
                path: pty.b.to_str().unwrap().into(),
                baud: 921_600,
            }),
            key: Some(key.clone()),
            ..ReceiverConfig::default()
        },
        Tee(PlyDirSink::new(&dir).unwrap(), rec),
    )
    .unwrap();
    let port = open_port(pty.a.to_str().unwrap(), 921_600, Duration::from_millis(50)).unwrap();
    let mut tx = SerialSender::new(port, Some(key), "pty");
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut sent = HashMap::new();
    let mut seq = 0;
    tx.send_frame(seq, &hello(4)).unwrap();
    for fid in 0..24u32 {
        seq += 1;
        let p = frame(4, fid, &mut rng);
        tx.send_frame(seq, &p).unwrap();
        sent.insert((4, fid), p);
        let g: Vec<u8> = (0..rng.gen_range(1..300)).map(|_| rng.gen()).collect();
        std::io::Write::write_all(tx.get_mut(), &g).unwrap();
    }
    std::io::Write::write_all(tx.get_mut(), &[0]).unwrap();
    assert!(
        rx.wait_frames(24, Duration::from_secs(20)),
        "{}",
        rx.stats().render()
    );
    let s = rx.stop();
    assert_eq!(check_files(&dir, &sent, &seen), 24);
    assert!(s.serial_bad > 0, "garbage was injected: {}", s.render());
    let _ = std::fs::remove_dir_all(&dir);
}

const BIN: &str = env!("CARGO_BIN_EXE_shapecast-host");

/// The command that runs the binary. Under an emulator (CI's aarch64 leg runs the tests with
/// qemu-aarch64, and the kernel cannot exec an aarch64 child without binfmt_misc)
/// `SHAPECAST_TEST_RUNNER` names the same emulator, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`.
fn bin() -> Command {
    let runner = std::env::var("SHAPECAST_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut c = Command::new(emulator);
            c.args(words).arg(BIN);
            c
        }
        None => Command::new(BIN),
    }
}

/// Runs `cmd`, which must succeed (its stderr is the failure message); its output.
fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn cli_encode_decode_roundtrip_and_errors() {
    let dir = tmpdir("cli");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let pts: Vec<[f32; 3]> = (0..3000)
        .map(|_| std::array::from_fn(|_| rng.gen_range(-1.0f32..1.0)))
        .collect();
    let labels: Vec<u8> = (0..3000).map(|_| rng.gen_range(0..4)).collect();
    let input = dir.join("in.ply");
    ply::save_ply(
        &input,
        &PlyData {
            vertices: pts.clone(),
            labels: Some(labels),
            ..PlyData::default()
        },
    )
    .unwrap();
    let code = dir.join("in.scpc");
    let out = succeed(
        bin()
            .args(["encode", "--bits", "12", "-o"])
            .arg(&code)
            .arg(&input),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("3000 points") && text.contains("B/pt"),
        "{text}"
    );
    let back = dir.join("back.ply");
    succeed(bin().arg("decode").arg(&code).arg("-o").arg(&back));
    let got = ply::load(&back).unwrap();
    assert_eq!(got.vertices.len(), 3000);
    assert!(got.labels.is_some());
    // Every input point has a decoded point within half a 12-bit step.
    let step = 2.0 / 4095.0;
    let mut dec = got.vertices.clone();
    dec.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut want = pts.clone();
    want.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for p in &pts {
        let best = got
            .vertices
            .iter()
            .map(|q| (0..3).map(|i| (p[i] - q[i]).abs()).fold(0f32, f32::max))
            .fold(f32::INFINITY, f32::min);
        assert!(best <= step * 0.5 + 1e-5, "point {p:?} off by {best}");
    }
    // XYZ output too.
    let xyz = dir.join("back.xyz");
    let out = bin()
        .arg("decode")
        .arg(&code)
        .arg("-o")
        .arg(&xyz)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(ply::load(&xyz).unwrap().vertices, got.vertices);
    // Errors: missing input, garbage input, bad bits -> exit code 1 with a chain.
    let out = bin().args(["encode", "/nonexistent.ply"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent.ply"));
    std::fs::write(dir.join("junk.scpc"), b"\x01\xff\xff\xff").unwrap();
    let out = bin()
        .arg("decode")
        .arg(dir.join("junk.scpc"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = bin()
        .args(["encode", "--bits", "20"])
        .arg(&input)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = bin().arg("listen").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_listen_stops_after_frames() {
    let dir = tmpdir("listen");
    let port = free_udp_port();
    let psk = dir.join("psk.hex");
    std::fs::write(&psk, "ab".repeat(32) + "\n").unwrap();
    let key = Key::load(&psk).unwrap();
    let mut child = bin()
        .args([
            "listen",
            "--udp",
            &format!("127.0.0.1:{port}"),
            "--frames",
            "5",
            "--seconds",
            "30",
        ])
        .arg("--psk")
        .arg(&psk)
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--mcap")
        .arg(dir.join("rec.mcap"))
        .arg("--png")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tx = UdpSender::new(("127.0.0.1", port), 3, Some(key)).unwrap();
    let status = feed_until_exit(&mut child, &mut tx, 1, 1);
    let out = child.wait_with_output().unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("final:"), "{text}");
    let files = walk(&dir.join("out"));
    assert!(files.len() >= 5, "{files:?}");
    // a picture per frame beside the PLY files: tiles of the hypotheses, not blank
    let pngs: Vec<_> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert!(pngs.len() >= 5, "{files:?}");
    for p in &pngs {
        let img = image::open(p).unwrap().to_rgb8();
        assert_eq!(img.height(), shapecast_host::sink::PNG_TILE);
        assert!(img.width() >= 2 * shapecast_host::sink::PNG_TILE);
        let lit = img
            .pixels()
            .filter(|px| px.0.iter().any(|&c| c > 60))
            .count();
        assert!(lit > 200, "{}: {lit} lit pixels", p.display());
    }
    // the recording was finished (summary written) when listen stopped
    let rec = std::fs::read(dir.join("rec.mcap")).unwrap();
    let summary = mcap::Summary::read(&rec).unwrap().expect("finished MCAP");
    assert!(summary.stats.unwrap().message_count >= 5);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Minimal CDR reader of `sensor_msgs/msg/PointCloud2` (the test's own decoding; the
/// independent check is `mcap_check.py`, run by the test below when Python has `mcap_ros2`).
struct CdrRead<'a>(&'a [u8], usize);

impl CdrRead<'_> {
    fn align(&mut self, n: usize) {
        while (self.1 - 4) % n != 0 {
            self.1 += 1;
        }
    }
    fn u8(&mut self) -> u8 {
        self.1 += 1;
        self.0[self.1 - 1]
    }
    fn u32(&mut self) -> u32 {
        self.align(4);
        self.1 += 4;
        u32::from_le_bytes(self.0[self.1 - 4..self.1].try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u32() as usize;
        self.1 += n;
        assert_eq!(self.0[self.1 - 1], 0, "string without NUL");
        String::from_utf8(self.0[self.1 - n..self.1 - 1].to_vec()).unwrap()
    }
}

/// (frame_id, field names, geometry) of a CDR PointCloud2.
fn read_pointcloud2(b: &[u8]) -> (String, Vec<String>, PlyData) {
    assert_eq!(&b[..4], &[0, 1, 0, 0], "CDR little-endian header");
    let mut r = CdrRead(b, 4);
    let (_sec, _nsec) = (r.u32(), r.u32());
    let frame = r.string();
    assert_eq!(r.u32(), 1, "height");
    let n = r.u32() as usize;
    let nf = r.u32();
    let mut fields = Vec::new();
    for _ in 0..nf {
        let name = r.string();
        let off = r.u32() as usize;
        let dt = r.u8();
        assert_eq!(r.u32(), 1, "count");
        fields.push((name, off, dt));
    }
    assert_eq!(r.u8(), 0, "little endian");
    let step = r.u32() as usize;
    assert_eq!(r.u32() as usize, step * n, "row_step");
    let len = r.u32() as usize;
    assert_eq!(len, step * n);
    let data = &b[r.1..r.1 + len];
    r.1 += len;
    assert_eq!(r.u8(), 1, "is_dense");
    assert_eq!(r.1, b.len(), "trailing bytes");
    let f32_at = |p: &[u8], o: usize| f32::from_le_bytes(p[o..o + 4].try_into().unwrap());
    let mut g = PlyData::default();
    for p in data.chunks_exact(step) {
        g.vertices.push([f32_at(p, 0), f32_at(p, 4), f32_at(p, 8)]);
    }
    for (name, off, dt) in &fields {
        match (name.as_str(), dt) {
            ("confidence", 7) => {
                g.confidence = Some(data.chunks_exact(step).map(|p| f32_at(p, *off)).collect());
            }
            ("label", 2) => g.labels = Some(data.chunks_exact(step).map(|p| p[*off]).collect()),
            ("x" | "y" | "z", 7) => {}
            other => panic!("unexpected field {other:?}"),
        }
    }
    (frame, fields.into_iter().map(|f| f.0).collect(), g)
}

#[test]
fn mcap_recording_holds_every_frame_as_ros2_pointcloud2() {
    let dir = tmpdir("mcap");
    let path = dir.join("rec.mcap");
    let (seen, rec) = recorder();
    let cfg = ReceiverConfig {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        ..ReceiverConfig::default()
    };
    let sink = shapecast_host::McapSink::create(&path).unwrap();
    let rx = Receiver::start(cfg, Tee(sink, rec)).unwrap();
    let addr = rx.udp_addr().unwrap();
    let mut tx = UdpSender::new(addr, 7, None).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    tx.send_frame(100, &hello(7)).unwrap();
    for fid in 0..6 {
        tx.send_frame(fid, &frame(7, fid, &mut rng)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    tx.send_frame(101, &stats_msg(7)).unwrap();
    assert!(rx.wait_frames(6, Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(100));
    rx.stop();

    // what the receiver decoded, in order, per topic
    let mut want: Vec<(String, PlyData)> = Vec::new();
    for (_, fid, payload) in seen.lock().unwrap().iter() {
        if fid.is_none() {
            continue;
        }
        let msg = shapecast_wire::message::decode_message(payload).unwrap();
        for (k, g) in message_to_ply(&msg).unwrap().into_iter().enumerate() {
            let topic = match (&msg, k) {
                (Message::PointCloud(_), 0) => "/shapecast/dev7/cloud".to_string(),
                (Message::PointCloud(_), k) => format!("/shapecast/dev7/cloud/h{k}"),
                (Message::Voxels(_), _) => "/shapecast/dev7/voxels".into(),
                _ => "/shapecast/dev7/mesh_vertices".into(),
            };
            want.push((topic, PlyData { faces: vec![], ..g }));
        }
    }
    assert!(want.len() >= 8, "{} geometries", want.len());
    let bytes = std::fs::read(&path).unwrap();
    let summary = mcap::Summary::read(&bytes).unwrap().expect("finished file");
    assert_eq!(
        summary.stats.as_ref().unwrap().message_count as usize,
        want.len() + 2
    );
    let mut got = Vec::new();
    let mut json = Vec::new();
    for m in mcap::MessageStream::new(&bytes).unwrap() {
        let m = m.unwrap();
        let schema = m.channel.schema.as_ref().unwrap();
        // rosbag2 needs one serialization format and valid ROS 2 names (no part that
        // starts with a digit)
        assert_eq!(m.channel.message_encoding, "cdr");
        assert_eq!(schema.encoding, "ros2msg");
        assert!(
            m.channel.topic.split('/').skip(1).all(|p| {
                p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }),
            "not a ROS 2 topic name: {}",
            m.channel.topic
        );
        if schema.name == "std_msgs/msg/String" {
            let mut r = CdrRead(&m.data, 4);
            let v: serde_json::Value = serde_json::from_str(&r.string()).unwrap();
            assert_eq!(r.1, m.data.len());
            assert_eq!(v["device_id"], 7);
            json.push(m.channel.topic.clone());
            continue;
        }
        assert_eq!(schema.name, "sensor_msgs/msg/PointCloud2");
        let (frame, fields, g) = read_pointcloud2(&m.data);
        assert_eq!(frame, "shapecast_dev7");
        assert_eq!(&fields[..3], ["x", "y", "z"]);
        assert!(
            m.log_time > 1_600_000_000_000_000_000,
            "wall-clock log time"
        );
        got.push((m.channel.topic.clone(), g));
    }
    assert_eq!(json, ["/shapecast/dev7/hello", "/shapecast/dev7/stats"]);
    assert_eq!(got.len(), want.len());
    for ((gt, g), (wt, w)) in got.iter().zip(&want) {
        assert_eq!(gt, wt);
        assert_eq!(g.vertices, w.vertices, "{gt}");
        assert_eq!(g.labels, w.labels, "{gt}");
        assert_eq!(g.confidence, w.confidence, "{gt}");
    }
    assert!(got
        .iter()
        .any(|(_, g)| g.labels.is_some() && g.confidence.is_some()));

    // Independent decoding with the MCAP project's own ROS 2 decoder, where installed
    // (.ci/run installs it).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcap_check.py");
    let out = Command::new("python3").arg(&script).arg(&path).output();
    match out {
        Ok(o) if o.status.code() == Some(3) => {
            eprintln!(
                "mcap_check.py skipped: {}",
                String::from_utf8_lossy(&o.stdout)
            )
        }
        Ok(o) => {
            assert!(
                o.status.success(),
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(
                text.contains(&format!("clouds={} points=", want.len())),
                "{text}"
            );
            assert!(text.contains("strings=2"), "{text}");
            let points: usize = want.iter().map(|(_, g)| g.vertices.len()).sum();
            assert!(text.contains(&format!("points={points}")), "{text}");
        }
        Err(e) => eprintln!("python3 not available: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file that takes `room` bytes and then fails like a full disk.
struct FullDisk {
    data: Arc<Mutex<std::io::Cursor<Vec<u8>>>>,
    room: u64,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut d = self.data.lock().unwrap();
        if d.position() + b.len() as u64 > self.room {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        d.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Seek for FullDisk {
    fn seek(&mut self, p: std::io::SeekFrom) -> std::io::Result<u64> {
        self.data.lock().unwrap().seek(p)
    }
}

/// A full disk is an error, never a crash: at creation (/dev/full) a clear error; in the
/// middle of a recording, counted sink errors while the receiver and the PLY files beside
/// it go on.
#[test]
fn mcap_on_a_full_disk_is_an_error_not_a_crash() {
    if Path::new("/dev/full").exists() {
        let e = shapecast_host::McapSink::create("/dev/full").unwrap_err();
        assert!(format!("{e}").contains("I/O"), "{e}");
    }
    let dir = tmpdir("mcapfull");
    let cfg = ReceiverConfig {
        udp: Some("127.0.0.1:0".parse().unwrap()),
        ..ReceiverConfig::default()
    };
    let data = Arc::new(Mutex::new(std::io::Cursor::new(Vec::new())));
    let disk = FullDisk {
        data: Arc::clone(&data),
        room: 64 << 10,
    };
    let mcap = shapecast_host::McapSink::from_writer(disk, "full-disk").unwrap();
    let rx = Receiver::start(cfg, Tee(PlyDirSink::new(&dir).unwrap(), mcap)).unwrap();
    let mut tx = UdpSender::new(rx.udp_addr().unwrap(), 9, None).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // 60 point frames of 50-1800 points (~1.5 MB of PointCloud2): far past the 64 KiB
    for fid in 0..60 {
        tx.send_frame(fid, &frame(9, fid * 3, &mut rng)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(rx.wait_frames(60, Duration::from_secs(10)));
    let stats = rx.stop();
    // the write error once (counted), not once per later message
    assert_eq!(stats.sink_errors, 1, "{stats:?}");
    assert_eq!(
        walk(&dir).len(),
        2 * 60,
        "both hypotheses of every frame as PLY"
    );
    // what reached the disk before it filled is readable, message by message
    let written = data.lock().unwrap().get_ref().clone();
    assert!(written.len() > 32 << 10, "{} bytes", written.len());
    let readable = mcap::MessageStream::new(&written)
        .unwrap()
        .take_while(Result::is_ok)
        .count();
    assert!(readable >= 3, "{readable} messages readable");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A point-cloud message with no coded hypotheses (sinks take the geometry beside it).
fn empty_cloud(device_id: u32, frame_id: u32, capture_ts_us: u64) -> Message<'static> {
    Message::PointCloud(PointCloudFrame {
        device_id,
        frame_id,
        capture_ts_us,
        bits: 10,
        bounds: B,
        hypotheses: heapless::Vec::new(),
    })
}

/// A sink event for `msg` with its decoded `geometry`, as the serial receiver makes it.
fn serial_event<'a>(msg: &'a Message<'_>, geometry: &'a [PlyData]) -> Event<'a> {
    Event {
        source: shapecast_host::Source::Serial,
        message: msg,
        payload: &[],
        geometry,
        rx_us: 0,
    }
}

/// Header stamps follow the device's capture clock on the host's clock, and a device restart
/// (its capture clock going back) starts a new offset instead of stamping seconds in the past.
#[test]
fn mcap_stamps_survive_a_device_restart() {
    use shapecast_host::Sink;
    let data = Arc::new(Mutex::new(std::io::Cursor::new(Vec::new())));
    let disk = FullDisk {
        data: Arc::clone(&data),
        room: u64::MAX,
    };
    let mut sink = shapecast_host::McapSink::from_writer(disk, "stamps").unwrap();
    let geometry = [PlyData::points(vec![[0.0, 0.1, 0.2]])];
    // capture times (µs since the device process started): 5 s, 6 s, then a restart at 1 s
    for (fid, capture) in [(0u32, 5_000_000u64), (1, 6_000_000), (2, 1_000_000)] {
        let msg = empty_cloud(4, fid, capture);
        sink.on_message(&serial_event(&msg, &geometry)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    sink.finish().unwrap();
    let bytes = data.lock().unwrap().get_ref().clone();
    let mut lag = Vec::new();
    for m in mcap::MessageStream::new(&bytes).unwrap() {
        let m = m.unwrap();
        let mut r = CdrRead(&m.data, 4);
        let (sec, nsec) = (r.u32(), r.u32());
        let stamp = u64::from(sec) * 1_000_000_000 + u64::from(nsec);
        lag.push(m.log_time as i128 - stamp as i128);
    }
    assert_eq!(lag.len(), 3);
    for (i, l) in lag.iter().enumerate() {
        // stamp at most the log time, and within 0.5 s of it (not 5 s behind)
        assert!(
            (0..500_000_000).contains(l),
            "message {i}: log - stamp = {l} ns"
        );
    }
}

/// A picture that cannot be written (its temporary name is taken by a folder, which the
/// writer cannot unlink: the error path a full disk takes too) is an error and no picture
/// file appears. (A symlink to /dev/full at the temporary name no longer simulates a full
/// disk: a file or link left there is unlinked before writing, never written through.)
#[cfg(unix)]
#[test]
fn png_write_error_is_an_error_and_publishes_nothing() {
    use shapecast_host::Sink;
    let dir = tmpdir("pngfull");
    let mut sink = shapecast_host::PngDirSink::new(&dir).unwrap();
    let path = shapecast_host::PngDirSink::path(&dir, 4, 0);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = shapecast_geom::atomic::thread_temp_path(&path);
    std::fs::create_dir_all(tmp.join("x")).unwrap();
    let geometry = [PlyData::points(vec![[0.0, 0.1, 0.2], [0.3, -0.2, 0.1]])];
    let msg = empty_cloud(4, 0, 0);
    let ev = serial_event(&msg, &geometry);
    assert!(sink.on_message(&ev).is_err());
    assert!(!path.exists());
    std::fs::remove_dir_all(&tmp).unwrap();
    // with room, the same message writes a complete picture
    assert_eq!(sink.on_message(&ev).unwrap(), 1);
    assert!(image::open(&path).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Adversarial input to the host's decoding and coding paths.
mod adversarial {
    use super::*;
    use proptest::prelude::*;
    use shapecast_host::convert::encode_points;
    use shapecast_wire::message::decode_message;

    fn wild() -> impl Strategy<Value = f32> {
        prop_oneof![
            6 => -2.0f32..2.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(-f32::MAX),
        ]
    }

    fn bounds() -> impl Strategy<Value = Bounds> {
        ([wild(), wild(), wild()], [wild(), wild(), wild()])
            .prop_map(|(min, max)| Bounds { min, max })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Messages with any bounds, sizes and contents that the wire layer accepts turn
        /// into geometry or a typed error; geometry always has consistent attributes and
        /// in-range faces (what `save_ply` requires).
        #[test]
        fn any_valid_message_gives_consistent_geometry(
            b in bounds(),
            bits in 0u8..20,
            res in 0u16..12,
            occ in prop::collection::vec(any::<u8>(), 0..240),
            verts in prop::collection::vec(any::<u8>(), 0..60),
            faces in prop::collection::vec(any::<u8>(), 0..40),
            wide in any::<bool>(),
            code in prop::collection::vec(any::<u8>(), 0..40),
            labels in prop::option::of(prop::collection::vec(any::<u8>(), 0..12)),
            pick in 0u8..3,
        ) {
            let msg = match pick {
                0 => Message::Voxels(VoxelFrame {
                    device_id: 1,
                    frame_id: 2,
                    capture_ts_us: 3,
                    resolution: res,
                    bounds: b,
                    occupancy: &occ[..occupancy_len(res).min(occ.len())],
                }),
                1 => Message::Mesh(MeshFrame {
                    device_id: 1,
                    frame_id: 2,
                    capture_ts_us: 3,
                    bits,
                    bounds: b,
                    index_width: if wide { IndexWidth::U32 } else { IndexWidth::U16 },
                    vertices: &verts,
                    faces: &faces,
                    labels: labels.as_deref(),
                }),
                _ => {
                    let mut hypotheses = heapless::Vec::new();
                    let _ = hypotheses.push(Hypothesis {
                        points: &code,
                        labels: labels.as_deref(),
                        confidence: None,
                    });
                    Message::PointCloud(PointCloudFrame {
                        device_id: 1,
                        frame_id: 2,
                        capture_ts_us: 3,
                        bits,
                        bounds: b,
                        hypotheses,
                    })
                }
            };
            let mut buf = vec![0u8; 4096];
            let Ok(n) = encode_message(&msg, &mut buf) else { return Ok(()) };
            let Ok(m) = decode_message(&buf[..n]) else { return Ok(()) };
            if let Ok(geo) = message_to_ply(&m) {
                for g in &geo {
                    let mut out = Vec::new();
                    prop_assert!(ply::write_ply(&mut out, g).is_ok());
                }
            }
        }

        /// Any bytes as a `.scpc` file: decoded or refused, never a panic.
        #[test]
        fn any_bytes_as_a_message(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(m) = decode_message(&bytes) {
                let _ = message_to_ply(&m);
            }
        }

        /// Point files with any coordinates (NaN, inf) and any explicit bounds: a message
        /// that decodes to the same number of points, or an error; never points silently
        /// moved to a corner because they were not numbers.
        #[test]
        fn encode_any_points(
            pts in prop::collection::vec([wild(), wild(), wild()], 0..30),
            b in prop::option::of(bounds()),
            bits in 0u8..20,
        ) {
            let data = PlyData::points(pts.clone());
            if let Ok(e) = encode_points(&data, bits, b, 1, 1) {
                prop_assert!(pts.iter().flatten().all(|v| v.is_finite()));
                let eb = e.bounds;
                prop_assert!((0..3).all(|i| (eb.max[i] - eb.min[i]).is_finite() && eb.min[i] < eb.max[i]));
                let m = decode_message(&e.message).unwrap();
                let geo = message_to_ply(&m).unwrap();
                prop_assert_eq!(geo[0].vertices.len(), pts.len());
            }
        }
    }

    #[test]
    fn non_finite_points_with_explicit_bounds_are_refused() {
        // Only the bounding-box path checked coordinates: with `--bounds`, NaN was coded as
        // the min corner without a word.
        let data = PlyData::points(vec![[0.0, 0.0, 0.0], [f32::NAN, 0.0, 0.0]]);
        let err = encode_points(&data, 10, Some(B), 1, 1).unwrap_err();
        assert!(err.to_string().contains("non-finite"), "{err}");
    }

    #[test]
    fn attributes_of_another_length_are_an_error_not_a_panic() {
        let mut data = PlyData::points(vec![[0.0; 3]; 4]);
        data.labels = Some(vec![1, 2]);
        assert!(encode_points(&data, 10, None, 1, 1).is_err());
        data.labels = None;
        data.confidence = Some(vec![0.5; 9]);
        assert!(encode_points(&data, 10, None, 1, 1).is_err());
    }
}

#[test]
fn voxel_frame_expansion_is_capped() {
    // A full 128³ grid (2 M cells, 256 KiB: fits a UDP frame) would become a
    // 25 MB PLY; more than MAX_POINTS occupied cells is refused before any expansion.
    let r = 128u16;
    let full = vec![0xFFu8; occupancy_len(r)];
    let frame = |occupancy: &[u8]| {
        message_to_ply(&Message::Voxels(VoxelFrame {
            device_id: 1,
            frame_id: 1,
            capture_ts_us: 0,
            resolution: r,
            bounds: B,
            occupancy,
        }))
    };
    let err = frame(&full).unwrap_err();
    assert!(err.to_string().contains("too many occupied cells"), "{err}");
    // Exactly MAX_POINTS occupied cells still expand.
    let mut half = vec![0u8; occupancy_len(r)];
    half[..shapecast_host::convert::MAX_POINTS / 8].fill(0xFF);
    let geo = frame(&half).unwrap();
    assert_eq!(geo[0].vertices.len(), shapecast_host::convert::MAX_POINTS);
}

/// A point code of `n` copies of one point (duplicates cost almost nothing: 1 M of them code
/// to ~17 bytes).
fn identical_points(n: usize, bits: u8) -> Vec<u8> {
    let q = vec![[5u16, 6, 7]; n];
    let mut out = vec![0u8; pointcode::max_encoded_len(n, bits)];
    let len = pointcode::encode(&q, bits, &mut out).unwrap();
    out.truncate(len);
    out
}

/// A hypothesis header announcing `n` points at 10 bits, padded to `len` bytes (the budget
/// is checked on the headers, before any decoding).
fn announced(n: u32, len: usize) -> Vec<u8> {
    let mut v = vec![pointcode::TAG_FAST, 10];
    let mut x = n;
    loop {
        let b = (x & 0x7f) as u8;
        x >>= 7;
        if x == 0 {
            v.push(b);
            break;
        }
        v.push(b | 0x80);
    }
    assert!(v.len() <= len);
    v.resize(len, 0);
    v
}

fn cloud<'a>(codes: &'a [Vec<u8>]) -> Message<'a> {
    let mut hypotheses = heapless::Vec::new();
    for c in codes {
        hypotheses
            .push(Hypothesis {
                points: c,
                labels: None,
                confidence: None,
            })
            .unwrap();
    }
    Message::PointCloud(PointCloudFrame {
        device_id: 1,
        frame_id: 1,
        capture_ts_us: 0,
        bits: 10,
        bounds: B,
        hypotheses,
    })
}

/// One small packet must not become millions of points: the point count of a whole message
/// is capped at MAX_POINTS and at what its bytes of point code can plausibly hold.
#[test]
fn point_budget_bounds_a_whole_message() {
    use shapecast_host::convert::{
        check_point_budget, FREE_POINTS, MAX_POINTS, POINTS_PER_CODE_BYTE,
    };
    use shapecast_host::HostError;
    // 8 hypotheses of 1 M identical points: a ~200-byte message that decoded to 8 M points
    let codes: Vec<Vec<u8>> = (0..8).map(|_| identical_points(MAX_POINTS, 10)).collect();
    let bytes = enc(&cloud(&codes));
    assert!(bytes.len() < 300, "{} bytes", bytes.len());
    let m = shapecast_wire::message::decode_message(&bytes).unwrap();
    let e = message_to_ply(&m).unwrap_err();
    assert!(
        matches!(e, HostError::TooManyPoints { points, .. } if points == 8 * MAX_POINTS as u64),
        "{e}"
    );
    assert!(e.to_string().contains("8388608 points"), "{e}");
    // one such hypothesis alone is implausible too (1 M points in ~17 bytes)
    let one = [codes[0].clone()];
    assert!(matches!(
        message_to_ply(&cloud(&one)),
        Err(HostError::TooManyPoints { .. })
    ));
    // a degenerate but real frame: 8 hypotheses of 8192 points collapsed onto one voxel
    let small: Vec<Vec<u8>> = (0..8).map(|_| identical_points(8192, 10)).collect();
    let geo = message_to_ply(&cloud(&small)).unwrap();
    assert_eq!(geo.len(), 8);
    assert!(geo.iter().all(|g| g.vertices.len() == 8192));
    // the plausibility bound, exactly: FREE_POINTS + POINTS_PER_CODE_BYTE per code byte,
    // over all hypotheses together
    let len = 1000;
    let limit = (FREE_POINTS + POINTS_PER_CODE_BYTE * 2 * len) as u32;
    let ok = [announced(limit / 2, len), announced(limit - limit / 2, len)];
    let Message::PointCloud(p) = cloud(&ok) else {
        unreachable!()
    };
    assert_eq!(
        check_point_budget(&p.hypotheses).unwrap(),
        vec![(limit / 2) as usize, (limit - limit / 2) as usize]
    );
    let over = [
        announced(limit / 2, len),
        announced(limit - limit / 2 + 1, len),
    ];
    let Message::PointCloud(p) = cloud(&over) else {
        unreachable!()
    };
    let e = check_point_budget(&p.hypotheses).unwrap_err();
    assert!(
        matches!(e, HostError::TooManyPoints { limit: l, code_bytes: 2000, .. } if l == u64::from(limit)),
        "{e}"
    );
    // MAX_POINTS over the whole message however many bytes: 2 x 600 K points in 2 x 20 KB
    let big = [announced(600_000, 20_000), announced(600_000, 20_000)];
    let Message::PointCloud(p) = cloud(&big) else {
        unreachable!()
    };
    let e = check_point_budget(&p.hypotheses).unwrap_err();
    assert!(
        matches!(e, HostError::TooManyPoints { limit, .. } if limit == MAX_POINTS as u64),
        "{e}"
    );
}

/// A device restart (frame ids from 0 again) or a second host run into the same folder never
/// replaces an earlier file: the next free `<frame_id>.<n>.ply` / `.png` is used.
#[test]
fn sinks_never_replace_earlier_files() {
    use shapecast_host::{PngDirSink, Sink};
    let dir = tmpdir("noclobber");
    let geo = |x: f32| {
        [
            PlyData::points(vec![[x, 0.1, 0.2], [0.3, x, 0.1]]),
            PlyData::points(vec![[x, x, x]]),
        ]
    };
    let (a, b, c, d) = (geo(0.0), geo(0.1), geo(0.2), geo(0.3));
    let mut ply = PlyDirSink::new(&dir).unwrap();
    let mut png = PngDirSink::new(&dir).unwrap();
    let put = |ply: &mut PlyDirSink, png: &mut PngDirSink, fid: u32, g: &[PlyData]| {
        let msg = empty_cloud(4, fid, 0);
        let ev = serial_event(&msg, g);
        assert_eq!(ply.on_message(&ev).unwrap(), 2);
        assert_eq!(png.on_message(&ev).unwrap(), 1);
    };
    put(&mut ply, &mut png, 0, &a); // first device run
    put(&mut ply, &mut png, 0, &b); // the device restarted: frame 0 again
    put(&mut ply, &mut png, 1, &c); // its next frame keeps the run's suffix
    let mut ply2 = PlyDirSink::new(&dir).unwrap(); // the host restarted too
    let mut png2 = PngDirSink::new(&dir).unwrap();
    put(&mut ply2, &mut png2, 0, &d);
    let read = |p: PathBuf| ply::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let at = |fid, k, n| PlyDirSink::versioned_path(&dir, 4, fid, k, n);
    assert_eq!(PlyDirSink::path(&dir, 4, 0, 1), at(0, 1, 0));
    assert!(at(0, 0, 1).ends_with("4/0.1.ply") && at(0, 1, 1).ends_with("4/0_h1.1.ply"));
    for (fid, n, g) in [(0, 0, &a), (0, 1, &b), (1, 1, &c), (0, 2, &d)] {
        for (k, gk) in g.iter().enumerate() {
            assert_eq!(&read(at(fid, k, n)), gk, "frame {fid} version {n} h{k}");
        }
        assert!(image::open(PngDirSink::versioned_path(&dir, 4, fid, n)).is_ok());
    }
    assert_eq!(walk(&dir).len(), 4 * 3, "{:?}", walk(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Spoofed device ids (no PSK) fill the device table; once they are idle longer than the
/// timeout a real device takes one's place instead of being refused for ever.
#[test]
fn idle_devices_are_evicted_from_a_full_table() {
    let (seen, rec) = recorder();
    let rx = Receiver::start(
        ReceiverConfig {
            udp: Some(([127, 0, 0, 1], 0).into()),
            max_devices: 2,
            device_idle_timeout_ms: 400,
            ..ReceiverConfig::default()
        },
        rec,
    )
    .unwrap();
    let addr = rx.udp_addr().unwrap();
    for dev in [100, 101] {
        let mut s = UdpSender::new(addr, dev, None).unwrap();
        s.send_frame(0, &stats_msg(dev)).unwrap();
    }
    let t0 = Instant::now();
    while rx.stats().devices.len() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(5), "spoofed stats lost");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut real = UdpSender::new(addr, 1, None).unwrap();
    real.send_frame(0, &frame(1, 0, &mut rng)).unwrap();
    while rx.stats().devices_refused < 1 {
        assert!(t0.elapsed() < Duration::from_secs(5), "frame never refused");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(rx.frames(), 0);
    // device 101 stays active; 100 goes idle
    let mut s101 = UdpSender::new(addr, 101, None).unwrap();
    for i in 1..8 {
        std::thread::sleep(Duration::from_millis(100));
        s101.send_frame(i, &stats_msg(101)).unwrap();
    }
    real.send_frame(1, &frame(1, 3, &mut rng)).unwrap();
    assert!(
        rx.wait_frames(1, Duration::from_secs(5)),
        "{}",
        rx.stats().render()
    );
    let s = rx.stop();
    assert_eq!(s.devices_evicted, 1);
    assert_eq!(s.devices_refused, 1);
    let mut ids: Vec<u32> = s.devices.iter().map(|d| d.device_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 101]);
    assert!(
        s.render().contains("1 refused (table full)"),
        "{}",
        s.render()
    );
    assert!(seen.lock().unwrap().iter().any(|x| x.0 == 1));
}

/// `listen` with frames it cannot write (its device folder is a file) ends with exit code 3,
/// not 0.
#[test]
fn cli_listen_exit_code_reports_sink_errors() {
    let dir = tmpdir("listen-sinkerr");
    let port = free_udp_port();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("3"), b"not a folder").unwrap();
    let mut child = bin()
        .args([
            "listen",
            "--udp",
            &format!("127.0.0.1:{port}"),
            "--frames",
            "3",
            "--seconds",
            "30",
            "--stats-every",
            "0",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut tx = UdpSender::new(("127.0.0.1", port), 3, None).unwrap();
    let status = feed_until_exit(&mut child, &mut tx, 4, 3);
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("sink errors"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("final:"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Standard output that is closed (`| head -1`) ends `encode`, `decode` and `listen` quietly
/// with their usual exit code, never a panic (rc 101).
#[cfg(unix)]
#[test]
fn cli_closed_stdout_is_not_a_panic() {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    // a socket whose other end is closed: every write is EPIPE, deterministically
    let closed = || {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        Stdio::from(OwnedFd::from(a))
    };
    let dir = tmpdir("epipe");
    let input = dir.join("in.ply");
    let pts: Vec<[f32; 3]> = (0..500).map(|i| [i as f32, 0.5, -(i as f32)]).collect();
    ply::save_ply(&input, &PlyData::points(pts)).unwrap();
    let code = dir.join("in.scpc");
    let back = dir.join("back.ply");
    let runs: [Vec<std::ffi::OsString>; 3] = [
        vec![
            "encode".into(),
            input.into(),
            "-o".into(),
            code.clone().into(),
        ],
        vec![
            "decode".into(),
            code.clone().into(),
            "-o".into(),
            back.clone().into(),
        ],
        [
            "listen",
            "--udp",
            "127.0.0.1:0",
            "--seconds",
            "20",
            "--no-write",
        ]
        .map(Into::into)
        .to_vec(),
    ];
    for args in runs {
        let t0 = Instant::now();
        let o = bin()
            .args(&args)
            .stdout(closed())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "{args:?} did not stop"
        );
    }
    assert_eq!(ply::load(&back).unwrap().vertices.len(), 500);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Command-line values that never stop or spin, and files too large to be a message.
#[test]
fn cli_refuses_unbounded_values_and_oversized_files() {
    for bad in [
        ["--seconds", "NaN"],
        ["--seconds", "inf"],
        ["--seconds=-1", "--no-write"],
        ["--stats-every", "NaN"],
        ["--device-idle-secs", "inf"],
    ] {
        let o = bin()
            .args(["listen", "--udp", "127.0.0.1:0"])
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("finite number of seconds"), "{bad:?}: {err}");
    }
    // a tiny stats period is clamped to 0.1 s: at most ~5 lines in 0.5 s, not one per 20 ms
    let o = succeed(bin().args([
        "listen",
        "--udp",
        "127.0.0.1:0",
        "--seconds",
        "0.5",
        "--stats-every",
        "1e-300",
        "--no-write",
    ]));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines = text.lines().filter(|l| l.starts_with('[')).count();
    assert!((1..=7).contains(&lines), "{lines} lines:\n{text}");
    // decode reads at most MAX_MESSAGE_FILE bytes (a sparse file, no disk used)
    let dir = tmpdir("bigfile");
    let big = dir.join("big.scpc");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(shapecast_host::convert::MAX_MESSAGE_FILE + 1)
        .unwrap();
    drop(f);
    let o = bin().arg("decode").arg(&big).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("larger than 64 MiB"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A path that duplicates datagrams (UDP without a PSK has no replay window) completes a frame
/// twice: the copy is dropped and counted, not written as `<frame>.1.ply` (which also moved
/// every later frame of the device to a new version suffix), while a restarted device's frame
/// under an old id (different contents) is still kept.
#[test]
fn duplicated_frames_are_dropped_and_counted_not_written_again() {
    let dir = tmpdir("dup-frames");
    let (seen, rec) = recorder();
    let rx = Receiver::start(
        ReceiverConfig {
            udp: Some(([127, 0, 0, 1], 0).into()),
            ..ReceiverConfig::default()
        },
        Tee(PlyDirSink::new(&dir).unwrap(), rec),
    )
    .unwrap();
    let addr = rx.udp_addr().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut s = UdpSender::new(addr, 5, None).unwrap();
    let mut link_id = 0;
    for fid in 0..6 {
        let f = frame(5, fid, &mut rng);
        for _ in 0..2 {
            s.send_frame(link_id, &f).unwrap();
            link_id += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // frame 0 again with other contents: a device restart, kept under a new version
    let restarted = frame(5, 0, &mut rng);
    s.send_frame(link_id, &restarted).unwrap();
    assert!(
        rx.wait_frames(7, Duration::from_secs(10)),
        "{}",
        rx.stats().render()
    );
    let t0 = Instant::now();
    while rx.stats().duplicates < 6 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{}",
            rx.stats().render()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = rx.stop();
    assert_eq!((st.frames, st.duplicates), (7, 6), "{}", st.render());
    assert!(st.render().contains("duplicates 6"), "{}", st.render());
    assert_eq!(st.devices[0].duplicates, 6);
    assert_eq!(seen.lock().unwrap().len(), 7);
    let mut names: Vec<String> = walk(&dir)
        .iter()
        .filter(|p| !p.to_string_lossy().contains("_h"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["0.1.ply", "0.ply", "1.ply", "2.ply", "3.ply", "4.ply", "5.ply"]
    );
}
