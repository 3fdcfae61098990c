//! Integration tests of the edge runtime with the fixture models of
//! tests/fixtures/models (made by make_fixtures.py; expected outputs from onnxruntime).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shapecast::engine::{Engine, EngineOptions};
use shapecast::heads::Reconstruction;
use shapecast::implicit::{self, DecoderField, ImplicitOptions};
use shapecast::meta::{ContractError, Head, ImplicitKind};
use shapecast::model::{as_f32, LoadOptions, Model, ModelError};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(case)
}

/// Reads the text tensor format of make_fixtures.py: `shape d0 d1 ...` then values.
fn tensor(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let shape: Vec<usize> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let vals: Vec<f32> = lines
        .flat_map(|l| l.split_whitespace())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(
        vals.len(),
        shape.iter().product::<usize>(),
        "{}",
        path.display()
    );
    (shape, vals)
}

fn occupied_bits(path: &Path) -> Vec<bool> {
    let hex = std::fs::read_to_string(path).unwrap();
    let hex = hex.trim();
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    // numpy packbits: big-endian bit order within a byte
    bytes
        .iter()
        .flat_map(|b| (0..8).map(move |k| b & (0x80 >> k) != 0))
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{what}[{i}]: tract {a} vs onnxruntime {b}"
        );
    }
}

fn run_raw(model: &Model, input: &[f32]) -> Vec<Vec<f32>> {
    let mut inputs: Vec<&[f32]> = vec![&[]; model.net.inputs.len()];
    inputs[model.image_ix] = input;
    let zeros;
    if let Some(si) = model.state_ix {
        zeros = vec![0f32; model.net.input_shapes[si].iter().product()];
        inputs[si] = &zeros;
    }
    model
        .net
        .run(&inputs)
        .unwrap()
        .iter()
        .map(|v| as_f32(v).unwrap().to_vec())
        .collect()
}

// ------------------------------------------------------------------ loading

#[test]
fn points_fixture_loads_and_matches_onnxruntime() {
    let m = Model::load(&fixture("points/model.onnx")).unwrap();
    assert_eq!(m.meta.head, Head::Points);
    assert_eq!(m.meta.points, Some((32, 2)));
    assert_eq!(m.meta.classes, vec!["table", "chair", "mug"]);
    let (_, x) = tensor(&fixture("points/input.txt"));
    let outs = run_raw(&m, &x);
    for name in ["points", "labels", "confidence"] {
        let (_, want) = tensor(&fixture(&format!("points/expected_{name}.txt")));
        let i = m.net.output(name).unwrap();
        assert_close(&outs[i], &want, 1e-4, name);
    }
}

// ------------------------------------------------------------------ the shipped model

/// The shipped default model on a shipped sample picture, through the runtime's real
/// preprocessing, against outputs recorded on x86 (tests/fixtures/default-model). CI runs this
/// under qemu-aarch64 too, so it checks aarch64 == x86 within 1e-4 (max abs).
/// `SHAPECAST_BLESS=1` re-records the fixture (after retraining models/default.onnx).
#[test]
fn default_model_matches_the_x86_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("tests/fixtures/default-model");
    let model = Model::load(&root.join("models/default.onnx")).unwrap();
    let img = image::open(root.join("models/samples/00_chair.png"))
        .unwrap()
        .to_rgb8();
    let (w, h) = img.dimensions();
    let mut input = Vec::new();
    shapecast::preprocess::preprocess_rgb8(
        img.as_raw(),
        w as usize,
        h as usize,
        &model.meta.input,
        &mut input,
    )
    .unwrap();
    let outs = run_raw(&model, &input);
    let mut files: Vec<(String, &[f32])> = vec![("input".to_string(), &input)];
    for (name, v) in model.net.outputs.iter().zip(&outs) {
        files.push((format!("output_{name}"), v));
    }
    let bless = std::env::var_os("SHAPECAST_BLESS").is_some_and(|v| v == "1");
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, got) in files {
        let path = dir.join(format!("{name}.f32le.bin"));
        if bless {
            let bytes: Vec<u8> = got.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(&path, bytes).unwrap();
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (record it with SHAPECAST_BLESS=1, see the README there)",
                path.display()
            )
        });
        let want: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}: length");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-4 && got.iter().all(|v| v.is_finite()),
            "{name}: max abs difference {worst} to the x86 reference (> 1e-4)"
        );
    }
}

#[test]
fn contract_violations_are_refused_naming_the_item() {
    let e = Model::load(&fixture("bad_mean/model.onnx")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("bad_mean/model.onnx"), "{msg}");
    assert!(
        msg.contains(
            "metadata key \"shapecast.input.mean\" must hold 3 numbers, found \"0.5,0.5\""
        ),
        "{msg}"
    );
    let e = Model::load(&fixture("bad_missing_bounds/model.onnx")).unwrap_err();
    assert!(
        matches!(&e, ModelError::Contract { cause: ContractError::Missing(k), .. } if k == "shapecast.bounds"),
        "{e}"
    );
    let e = Model::load(&fixture("bad_points_count/model.onnx")).unwrap_err();
    assert!(
        matches!(&e, ModelError::Contract { cause: ContractError::Tensor { name, .. }, .. } if name == "points"),
        "{e}"
    );
    assert!(e.to_string().contains("[1, 1, 32, 3]"), "{e}");
}

#[test]
fn garbage_files_are_errors_not_panics() {
    let dir = std::env::temp_dir().join(format!("shapecast-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(fixture("points/model.onnx")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.onnx", Vec::new()),
        ("text.onnx", b"this is not a protobuf at all".to_vec()),
        ("truncated.onnx", good[..good.len() / 2].to_vec()),
        ("flipped.onnx", {
            let mut g = good.clone();
            for i in (0..g.len()).step_by(97) {
                g[i] ^= 0x5a;
            }
            g
        }),
    ];
    for (name, bytes) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        assert!(Model::load(&p).is_err(), "{name} accepted");
    }
    assert!(Model::load(&dir.join("missing.onnx")).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wrong_input_sizes_are_errors() {
    let m = Model::load(&fixture("points/model.onnx")).unwrap();
    assert!(m.net.run(&[&[0.0; 5]]).is_err());
    assert!(m.net.run(&[]).is_err());
    let mut e = Engine::new(m, EngineOptions::default());
    assert!(e.infer_rgb8(&[0; 10], 4, 4, Instant::now()).is_err());
    // any picture size is fine (it is resized)
    let (rec, _) = e
        .infer_rgb8(&vec![128; 33 * 17 * 3], 33, 17, Instant::now())
        .unwrap();
    assert_eq!(rec.clouds.len(), 2);
}

// ------------------------------------------------------------------ heads

#[test]
fn points_head_gives_hypotheses_with_labels() {
    let m = Model::load(&fixture("points/model.onnx")).unwrap();
    let (_, x) = tensor(&fixture("points/input.txt"));
    let mut e = Engine::new(m, EngineOptions::default());
    let (rec, _) = e.infer_tensor(&x, Instant::now()).unwrap();
    assert_eq!(rec.clouds.len(), 2);
    let (_, want) = tensor(&fixture("points/expected_points.txt"));
    let (_, lab) = tensor(&fixture("points/expected_labels.txt"));
    for (k, c) in rec.clouds.iter().enumerate() {
        assert_eq!(c.points.len(), 32);
        for (i, p) in c.points.iter().enumerate() {
            let j = (k * 32 + i) * 3;
            assert_close(p, &want[j..j + 3], 1e-4, "point");
            let l = &lab[(k * 32 + i) * 3..(k * 32 + i) * 3 + 3];
            let best = (0..3).max_by(|a, b| l[*a].total_cmp(&l[*b])).unwrap();
            assert_eq!(c.labels.as_ref().unwrap()[i] as usize, best);
        }
        assert!(c
            .confidence
            .as_ref()
            .unwrap()
            .iter()
            .all(|c| (0.0..=1.0).contains(c)));
    }
}

fn iou(a: &[bool], b: &[bool]) -> f32 {
    let inter = a.iter().zip(b).filter(|(x, y)| **x && **y).count();
    let union = a.iter().zip(b).filter(|(x, y)| **x || **y).count();
    if union == 0 {
        1.0
    } else {
        inter as f32 / union as f32
    }
}

/// Reference occupancy (model order [i][j][k]) -> wire order x + r*(y + r*z).
fn to_wire_order(bits: &[bool], r: usize) -> Vec<bool> {
    let mut out = vec![false; r * r * r];
    for i in 0..r {
        for j in 0..r {
            for k in 0..r {
                out[i + r * (j + r * k)] = bits[(i * r + j) * r + k];
            }
        }
    }
    out
}

#[test]
fn voxels_head_matches_reference_iou() {
    let m = Model::load(&fixture("voxels/model.onnx")).unwrap();
    let (_, x) = tensor(&fixture("voxels/input.txt"));
    let raw = run_raw(&m, &x);
    let (_, every64) = tensor(&fixture("voxels/expected_occupancy_every64.txt"));
    let got64: Vec<f32> = raw[0].iter().step_by(64).copied().collect();
    assert_close(&got64, &every64, 1e-3, "occupancy");
    let mut e = Engine::new(
        m,
        EngineOptions {
            max_points: 0,
            ..EngineOptions::default()
        },
    );
    let (rec, _) = e.infer_tensor(&x, Instant::now()).unwrap();
    let grid = rec.voxels.as_ref().unwrap();
    let want = to_wire_order(&occupied_bits(&fixture("voxels/expected_occupied.hex")), 32);
    let n = want.iter().filter(|b| **b).count();
    assert!(n > 100 && n < 32 * 32 * 32 / 2, "fixture occupancy {n}");
    let i = iou(&grid.occupied, &want);
    assert!(i >= 0.99, "IoU {i}");
    // surface points lie on occupied cells, fewer than all occupied
    assert!(!rec.points().is_empty() && rec.points().len() < n);
}

#[test]
fn fusion_state_is_carried_and_reset() {
    let m = Model::load(&fixture("fusion/model.onnx")).unwrap();
    assert_eq!(m.meta.fusion_views, Some(3));
    let mut e = Engine::new(m, EngineOptions::default());
    assert!(e.has_state());
    let t0 = Instant::now();
    let mut grids = Vec::new();
    for f in 0..3 {
        let (_, x) = tensor(&fixture(&format!("fusion/input{f}.txt")));
        let (rec, _) = e
            .infer_tensor(&x, t0 + Duration::from_millis(100 * f as u64))
            .unwrap();
        let want = to_wire_order(
            &occupied_bits(&fixture(&format!("fusion/expected_occupied{f}.hex"))),
            32,
        );
        let i = iou(&rec.voxels.as_ref().unwrap().occupied, &want);
        assert!(i >= 0.99, "frame {f}: IoU {i}");
        grids.push(rec.voxels.unwrap().occupied);
    }
    assert_eq!(e.fused, 3);
    // frame 2 alone (zero state) differs from frame 2 after fusion
    e.reset_state();
    let (_, x2) = tensor(&fixture("fusion/input2.txt"));
    let (alone, _) = e
        .infer_tensor(&x2, t0 + Duration::from_millis(300))
        .unwrap();
    assert!(iou(&alone.voxels.unwrap().occupied, &grids[2]) < 0.99);
    // timeout resets too: frame 0 after a long pause equals frame 0 from zeros
    let (_, x0) = tensor(&fixture("fusion/input0.txt"));
    let resets = e.resets;
    let (late, _) = e.infer_tensor(&x0, t0 + Duration::from_secs(60)).unwrap();
    assert_eq!(e.resets, resets + 1);
    assert_eq!(late.voxels.unwrap().occupied, grids[0]);
}

#[test]
fn mesh_head_template_plus_offsets_with_labels() {
    let m = Model::load(&fixture("mesh/model.onnx")).unwrap();
    let (_, x) = tensor(&fixture("mesh/input.txt"));
    let mm = m.meta.mesh.clone().unwrap();
    let mut e = Engine::new(m, EngineOptions::default());
    let (rec, _) = e.infer_tensor(&x, Instant::now()).unwrap();
    let mesh = rec.mesh.as_ref().unwrap();
    let (_, off) = tensor(&fixture("mesh/expected_offsets.txt"));
    assert_eq!(mesh.vertices.len(), 12);
    assert_eq!(mesh.faces.len(), 20);
    for (i, v) in mesh.vertices.iter().enumerate() {
        let want: Vec<f32> = (0..3).map(|a| mm.template[i][a] + off[3 * i + a]).collect();
        assert_close(v, &want, 1e-4, "vertex");
    }
    assert_eq!(mesh.labels.as_ref().unwrap().len(), 12);
}

/// The implicit fixture loaded with decoder chunks of `chunk` queries, and its encoder's
/// raw outputs on the fixture's input.
fn implicit_fixture(chunk: usize) -> (Model, Vec<Vec<f32>>) {
    let m = Model::load_with(
        &fixture("implicit/model.onnx"),
        LoadOptions {
            decoder_chunk: chunk,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let (_, x) = tensor(&fixture("implicit/input.txt"));
    let raw = run_raw(&m, &x);
    (m, raw)
}

#[test]
fn implicit_encoder_and_decoder_match_onnxruntime_at_32768_points() {
    // regression: the split first layer (xyz.Wp + latent.Wz) optimises at 32768 queries
    let (m, raw) = implicit_fixture(32768);
    let (_, lat) = tensor(&fixture("implicit/expected_latent.txt"));
    assert_close(&raw[0], &lat, 1e-4, "latent");
    let dec = m.decoder.as_ref().unwrap();
    assert_eq!(dec.chunk, 32768);
    let n = 32;
    let c = |i: usize| (i as f32 + 0.5) / n as f32 - 0.5;
    let mut xyz = Vec::with_capacity(n * n * n);
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                xyz.push([c(i), c(j), c(k)]);
            }
        }
    }
    let mut field = DecoderField::new(dec, raw[0].clone());
    let mut out = Vec::new();
    implicit::Field::eval(&mut field, &xyz, &mut out).unwrap();
    let (_, want) = tensor(&fixture("implicit/expected_value_every64.txt"));
    let got: Vec<f32> = out.iter().step_by(64).copied().collect();
    assert_close(&got, &want, 1e-4, "value");
}

fn chamfer(a: &[[f32; 3]], b: &[[f32; 3]]) -> f32 {
    shapecast_geom::metrics::chamfer(a, b)
        .map(|c| c.l2)
        .unwrap_or(f32::INFINITY)
}

#[test]
fn implicit_coarse_to_fine_needs_10x_fewer_queries_than_dense_128() {
    let (m, raw) = implicit_fixture(8192);
    let dec = m.decoder.as_ref().unwrap();
    let im = m.meta.implicit.as_ref().unwrap();
    assert_eq!(im.kind, ImplicitKind::Sdf);
    let mut field = DecoderField::new(dec, raw[0].clone());
    let dense = implicit::dense(&mut field, &m.meta.bounds, im.kind, im.level, 128).unwrap();
    for margin in [1.0f32, 0.5, 0.25, 0.0] {
        let opts = ImplicitOptions {
            coarse: 16,
            fine: 128,
            margin,
            ..ImplicitOptions::default()
        };
        let mut field = DecoderField::new(dec, raw[0].clone());
        let c2f =
            implicit::coarse_to_fine(&mut field, &m.meta.bounds, im.kind, im.level, &opts).unwrap();
        let cd = chamfer(&c2f.mesh.vertices, &dense.mesh.vertices);
        eprintln!(
            "margin {margin}: {} queries ({:.1}x fewer), {} faces, chamfer {cd:e}",
            c2f.queries,
            dense.queries as f64 / c2f.queries as f64,
            c2f.mesh.faces.len()
        );
    }
    let opts = ImplicitOptions {
        coarse: 16,
        fine: 128,
        ..ImplicitOptions::default()
    };
    let mut field = DecoderField::new(dec, raw[0].clone());
    let c2f =
        implicit::coarse_to_fine(&mut field, &m.meta.bounds, im.kind, im.level, &opts).unwrap();
    assert_eq!(dense.queries, 129 * 129 * 129);
    assert!(!dense.mesh.faces.is_empty());
    let ratio = dense.queries as f64 / c2f.queries as f64;
    let cd = chamfer(&c2f.mesh.vertices, &dense.mesh.vertices);
    eprintln!(
        "implicit fixture: dense 129^3 = {} queries, coarse-to-fine {} ({ratio:.1}x fewer), \
         {} vs {} faces, chamfer-L2(c2f, dense) = {cd:e}",
        dense.queries,
        c2f.queries,
        c2f.mesh.faces.len(),
        dense.mesh.faces.len()
    );
    assert!(ratio >= 10.0, "only {ratio:.1}x fewer queries");
    assert!(cd < 1e-6, "chamfer {cd}");
}

#[test]
fn implicit_engine_runs_end_to_end() {
    let m = Model::load(&fixture("implicit/model.onnx")).unwrap();
    let mut e = Engine::new(
        m,
        EngineOptions {
            max_points: 500,
            ..EngineOptions::default()
        },
    );
    let (rec, _): (Reconstruction, _) = e
        .infer_rgb8(&vec![90; 20 * 20 * 3], 20, 20, Instant::now())
        .unwrap();
    assert_eq!(rec.points().len(), 500);
    assert!(rec.queries > 0);
    assert!(!rec.mesh.unwrap().faces.is_empty());
}

#[path = "runtime/shipped.rs"]
mod shipped;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

/// A frame loop's preprocessing allocates nothing after the first frame of a size, and a
/// reused `Preprocessor` gives the same tensor as a fresh one whatever sizes and crops
/// came before (its cached taps are keyed by them).
#[test]
fn preprocessor_reuses_its_scratch_and_matches_a_fresh_one() {
    use shapecast::meta::{Color, Crop, InputSpec};
    use shapecast::preprocess::{preprocess_rgb8, Preprocessor};
    counting_alloc::assert_counting();
    let spec = |w, h, color: Color, crop| InputSpec {
        width: w,
        height: h,
        color,
        mean: vec![0.45; color.channels()],
        std: vec![0.25; color.channels()],
        crop,
    };
    let frame =
        |w: usize, h: usize| -> Vec<u8> { (0..w * h * 3).map(|i| (i * 31 % 251) as u8).collect() };
    let mut pre = Preprocessor::default();
    let (mut out, mut fresh) = (Vec::new(), Vec::new());
    let cases = [
        (640, 480, spec(64, 64, Color::Rgb, Crop::Center)),
        (640, 480, spec(64, 64, Color::Rgb, Crop::Letterbox)),
        (320, 240, spec(64, 64, Color::Bgr, Crop::Center)),
        (97, 61, spec(16, 12, Color::Gray, Crop::Stretch)),
        (640, 480, spec(64, 64, Color::Rgb, Crop::Center)),
    ];
    for (w, h, sp) in &cases {
        let rgb = frame(*w, *h);
        pre.run(&rgb, *w, *h, sp, &mut out).unwrap();
        preprocess_rgb8(&rgb, *w, *h, sp, &mut fresh).unwrap();
        assert_eq!(out, fresh, "{w}x{h} {sp:?}");
        // the same size again: not one heap allocation
        let before = counting_alloc::thread_allocs();
        pre.run(&rgb, *w, *h, sp, &mut out).unwrap();
        assert_eq!(
            counting_alloc::thread_allocs() - before,
            0,
            "{w}x{h} {sp:?}"
        );
        assert_eq!(out, fresh);
    }
    // bad input is refused and leaves the scratch usable
    assert!(pre.run(&[0u8; 5], 2, 2, &cases[0].2, &mut out).is_err());
    let rgb = frame(640, 480);
    pre.run(&rgb, 640, 480, &cases[0].2, &mut out).unwrap();
    preprocess_rgb8(&rgb, 640, 480, &cases[0].2, &mut fresh).unwrap();
    assert_eq!(out, fresh);
}

// ------------------------------------------------------------------ pipeline and wire

mod pipeline_tests {
    use super::*;
    use shapecast::encode::{default_send, Encoder};
    use shapecast::pipeline::{self, Controls, PipelineOptions};
    use shapecast::source::{Frame, FrameSource, PixelFormat, SourceError};
    use shapecast_link::{LinkError, LinkSender, Transport};
    use std::sync::{Arc, Mutex};

    /// Transport that keeps every payload, optionally slowly.
    struct Keep(Arc<Mutex<Vec<Vec<u8>>>>, Duration);

    impl Transport for Keep {
        fn send(&mut self, _id: u32, payload: &[u8]) -> Result<(), LinkError> {
            std::thread::sleep(self.1);
            self.0.lock().unwrap().push(payload.to_vec());
            Ok(())
        }
        fn describe(&self) -> String {
            "keep".into()
        }
    }

    /// A camera-like source: frames as fast as asked, `n` of them, then the end.
    struct Burst {
        n: u64,
        seq: u64,
        period: Duration,
    }

    impl FrameSource for Burst {
        fn next_frame(&mut self) -> Result<Frame, SourceError> {
            if self.seq >= self.n {
                return Err(SourceError::EndOfStream);
            }
            std::thread::sleep(self.period);
            let (w, h) = (40u32, 30u32);
            let v = (self.seq * 37 % 256) as u8;
            let f = Frame {
                width: w,
                height: h,
                format: PixelFormat::Rgb24,
                data: vec![v; (w * h * 3) as usize],
                capture_ts: Instant::now(),
                seq: self.seq,
            };
            self.seq += 1;
            Ok(f)
        }
        fn describe(&self) -> String {
            "burst".into()
        }
    }

    /// The engine of the points fixture and an encoder (device 7) for its head.
    fn points_engine() -> (Engine, Encoder) {
        let model = Model::load(&fixture("points/model.onnx")).unwrap();
        let meta = model.meta.clone();
        let engine = Engine::new(model, EngineOptions::default());
        let enc = Encoder::new(7, 10, meta.bounds, default_send(meta.head)).unwrap();
        (engine, enc)
    }

    /// A link whose every write takes `write_time` and lands in the returned list.
    #[allow(clippy::type_complexity)]
    fn keeping_link(write_time: Duration) -> (Arc<Mutex<Vec<Vec<u8>>>>, LinkSender) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let link = LinkSender::new(Keep(Arc::clone(&got), write_time), 1 << 20).unwrap();
        (got, link)
    }

    fn decode_all(got: &[Vec<u8>]) -> (usize, usize, usize) {
        use shapecast_wire::message::{decode_message, Message};
        let (mut hello, mut clouds, mut stats) = (0, 0, 0);
        for p in got {
            match decode_message(p).expect("every sent payload decodes") {
                Message::Hello(h) => {
                    assert_eq!(h.model_id, "fixture-points");
                    hello += 1
                }
                Message::PointCloud(pc) => {
                    assert_eq!(pc.hypotheses.len(), 2);
                    let h = &pc.hypotheses[0];
                    let mut q = vec![[0u16; 3]; 64];
                    let (n, bits) = shapecast_wire::pointcode::decode(h.points, &mut q).unwrap();
                    assert_eq!(bits, 10);
                    assert!(n > 0 && n <= 32);
                    assert_eq!(h.labels.unwrap().len(), n);
                    clouds += 1
                }
                Message::Stats(_) => stats += 1,
                _ => panic!("unexpected message"),
            }
        }
        (hello, clouds, stats)
    }

    #[test]
    fn slow_inference_drops_stale_frames_and_counts_them() {
        let (mut engine, mut enc) = points_engine();
        let (got, link) = keeping_link(Duration::ZERO);
        // 60 frames at ~1 ms; inference paced to 100 fps -> most frames are stale
        let src = Burst {
            n: 60,
            seq: 0,
            period: Duration::from_millis(1),
        };
        let opts = PipelineOptions {
            max_fps: 100.0,
            stats_interval: Duration::from_millis(20),
            ..PipelineOptions::default()
        };
        let mut seen = Vec::new();
        let s = pipeline::run(
            Box::new(src),
            &mut engine,
            &mut enc,
            Some(&link),
            &opts,
            &Controls::default(),
            &mut |f, _| seen.push(f.seq),
        );
        let lc = link.close();
        assert_eq!(s.captured, 60);
        assert!(s.inferred >= 1 && s.inferred < 60, "{}", s.line());
        // every captured frame is either inferred or counted stale (the last may be both lost
        // at the end of the stream when the source ends while one waits: it is still taken)
        assert_eq!(s.inferred + s.stale_frames, 60, "{}", s.line());
        // frames were taken newest-first: strictly increasing sequence numbers
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        let (hello, clouds, _stats) = decode_all(&got.lock().unwrap());
        assert!(hello >= 1);
        assert_eq!(clouds as u64 + s.link_busy, s.inferred, "{}", s.line());
        assert_eq!(lc.errors, 0);
        let lat = s.latencies.as_ref().unwrap();
        assert_eq!(
            lat.window(shapecast::stats::Stage::Inference).total,
            s.inferred
        );
    }

    #[test]
    fn paced_file_run_sends_every_frame_and_stats() {
        let (mut engine, mut enc) = points_engine();
        let (got, link) = keeping_link(Duration::from_millis(2));
        let src = Burst {
            n: 12,
            seq: 0,
            period: Duration::ZERO,
        };
        let opts = PipelineOptions {
            stats_interval: Duration::from_millis(1),
            pace_to_link: true,
            ..PipelineOptions::default()
        };
        let s = pipeline::run(
            Box::new(src),
            &mut engine,
            &mut enc,
            Some(&link),
            &opts,
            &Controls::default(),
            &mut |_, _| {},
        );
        let _ = link.close();
        assert_eq!(
            (s.captured, s.inferred, s.stale_frames),
            (12, 12, 0),
            "{}",
            s.line()
        );
        let (hello, clouds, stats) = decode_all(&got.lock().unwrap());
        assert_eq!(clouds, 12);
        assert!(hello >= 1 && stats >= 1);
    }

    #[test]
    fn stop_flag_ends_a_never_ending_source() {
        let (mut engine, mut enc) = points_engine();
        let controls = Controls::default();
        let stop = controls.stop.clone();
        let src = Burst {
            n: u64::MAX,
            seq: 0,
            period: Duration::from_millis(1),
        };
        let s = pipeline::run(
            Box::new(src),
            &mut engine,
            &mut enc,
            None,
            &PipelineOptions::default(),
            &controls,
            &mut |_, r| {
                assert_eq!(r.clouds.len(), 2);
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            },
        );
        assert!(s.inferred >= 1);
    }

    /// Saving on the device keeps only the newest `save_keep` files, each complete; a folder
    /// that cannot be written is counted in the summary, never fatal.
    #[test]
    fn device_saving_is_bounded_and_failures_are_counted() {
        let dir = std::env::temp_dir().join(format!("shapecast-save-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let run = |save_dir: PathBuf| {
            let (mut engine, mut enc) = points_engine();
            let src = Burst {
                n: 7,
                seq: 0,
                period: Duration::ZERO,
            };
            let opts = PipelineOptions {
                save_dir: Some(save_dir),
                save_every: 1,
                save_keep: 3,
                pace_to_link: true,
                ..PipelineOptions::default()
            };
            let (_got, link) = keeping_link(Duration::ZERO);
            pipeline::run(
                Box::new(src),
                &mut engine,
                &mut enc,
                Some(&link),
                &opts,
                &Controls::default(),
                &mut |_, _| {},
            )
        };
        let s = run(dir.clone());
        assert_eq!((s.inferred, s.save_errors), (7, 0));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["frame_000004.ply", "frame_000005.ply", "frame_000006.ply"]
        );
        for n in &names {
            let d = shapecast_geom::ply::load(dir.join(n)).unwrap();
            assert!(!d.vertices.is_empty());
        }
        // a second run into the same folder: the earlier files count (the run reuses their
        // names), and an interrupted save's temporary file is cleaned away
        std::fs::write(dir.join("frame_000009.ply.tmp"), b"partial").unwrap();
        std::fs::write(dir.join("frame_000001.ply"), b"old").unwrap();
        let s = run(dir.clone());
        assert_eq!((s.inferred, s.save_errors), (7, 0));
        let mut again: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        again.sort();
        assert_eq!(again, names);
        // a path under a regular file cannot be a folder: every save fails, the run goes on
        let s = run(dir.join("frame_000006.ply").join("sub"));
        assert_eq!((s.inferred, s.save_errors), (7, 7));
        assert!(s.line().contains("save errors 7"), "{}", s.line());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_head_encodes_to_a_valid_message() {
        use shapecast_host::convert::message_to_ply;
        use shapecast_wire::message::decode_message;
        struct R {
            frame_id: u32,
            points: Vec<[f32; 3]>,
        }
        // decoded by the host library, as the receiver does
        let decode_result = |b: &[u8]| -> Result<Option<R>, String> {
            let m = decode_message(b).map_err(|e| e.to_string())?;
            let g = message_to_ply(&m).map_err(|e| e.to_string())?;
            Ok(m.frame_id().map(|frame_id| R {
                frame_id,
                points: g[0].vertices.clone(),
            }))
        };
        for (case, send_points) in [("voxels", 100), ("mesh", 12), ("points", 32)] {
            let model = Model::load(&fixture(&format!("{case}/model.onnx"))).unwrap();
            let meta = model.meta.clone();
            let mut engine = Engine::new(model, EngineOptions::default());
            let (_, x) = tensor(&fixture(&format!("{case}/input.txt")));
            let (rec, _) = engine.infer_tensor(&x, Instant::now()).unwrap();
            let mut enc = Encoder::new(3, 12, meta.bounds, default_send(meta.head)).unwrap();
            let bytes = enc.frame(&rec, 5, 99).unwrap().to_vec();
            let r = decode_result(&bytes).unwrap().unwrap();
            assert_eq!(r.frame_id, 5);
            assert!(
                r.points.len() >= send_points.min(rec.points().len()),
                "{case}"
            );
            // quantization error at 12 bits in a 1-unit box: < 1/4095 per axis
            if case != "voxels" {
                for p in &r.points {
                    let near = rec
                        .points()
                        .iter()
                        .any(|q| (0..3).all(|a| (p[a] - q[a]).abs() <= 1.0 / 4095.0 + 1e-6));
                    assert!(near, "{case}: {p:?} has no source point");
                }
            }
            let hello = enc.hello(&meta, 1000).unwrap().to_vec();
            assert!(decode_result(&hello).unwrap().is_none());
        }
        assert!(decode_result(&[1, 2, 3]).is_err());
        assert!(decode_result(&[]).is_err());
    }
}

#[test]
fn demo_runs_end_to_end_on_fixture_model_and_pictures() {
    let out = std::env::temp_dir().join(format!("shapecast-demo-{}", std::process::id()));
    let args = shapecast::app::DemoArgs {
        model: fixture("points/model.onnx"),
        samples: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/frames/images"),
        out: out.clone(),
        bits: 12,
        max_samples: 16,
        implicit: shapecast::app::ImplicitArgs {
            coarse: 16,
            fine: 64,
        },
    };
    shapecast::app::demo::demo(&args)
        .map_err(|f| format!("{:#}", f.error))
        .unwrap();
    let sheet = image::open(out.join("contact_sheet.png")).unwrap();
    assert_eq!(sheet.height(), 3 * (224 + 4) + 4);
    for i in 0..3 {
        // written by the host library's PlyDirSink
        let ply = shapecast_host::PlyDirSink::path(&out, shapecast::app::demo::DEMO_DEVICE, i, 0);
        let d = shapecast_geom::ply::load(ply).unwrap();
        assert!(!d.vertices.is_empty() && d.labels.is_some());
    }
    // the MCAP recording (host's McapSink) is finished: magic at both ends
    let rec = std::fs::read(out.join("demo.mcap")).unwrap();
    assert!(rec.len() > 2000, "{} bytes", rec.len());
    assert!(rec.starts_with(b"\x89MCAP0\r\n") && rec.ends_with(b"\x89MCAP0\r\n"));
    // a missing model is a clear error with the model exit code
    let f = shapecast::app::demo::demo(&shapecast::app::DemoArgs {
        model: out.join("nope.onnx"),
        ..args
    })
    .unwrap_err();
    assert_eq!(f.code, shapecast::app::exit::MODEL);
    assert!(format!("{:#}", f.error).contains("--model"));
    std::fs::remove_dir_all(&out).unwrap();
}

// ------------------------------------------------------------------ the binary

/// The command that runs a workspace binary. Under an emulator (CI's aarch64 leg runs the
/// tests with qemu-aarch64, and the kernel cannot exec an aarch64 child without binfmt_misc)
/// `SHAPECAST_TEST_RUNNER` names the same emulator, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`.
fn bin_command(bin: &str) -> std::process::Command {
    let runner = std::env::var("SHAPECAST_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut c = std::process::Command::new(emulator);
            c.args(words).arg(bin);
            c
        }
        None => std::process::Command::new(bin),
    }
}

fn shapecast(args: &[&str]) -> (i32, String, String) {
    let out = bin_command(env!("CARGO_BIN_EXE_shapecast"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_info_prints_the_contract_or_refuses_with_exit_code_3() {
    let good = fixture("implicit/model.onnx");
    let (code, out, _) = shapecast(&["info", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("implicit")
            && out.contains("decoder net")
            && out.contains("ok: the model follows contract 1"),
        "{out}"
    );
    let bad = fixture("bad_mean/model.onnx");
    let (code, _, err) = shapecast(&["info", bad.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("shapecast.input.mean") && err.starts_with("error: refusing model"),
        "{err}"
    );
    let (code, _, err) = shapecast(&["bench"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn cli_run_from_config_over_udp_with_a_final_stats_line() {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = rx.local_addr().unwrap().to_string();
    let model = fixture("points/model.onnx");
    let (code, out, err) = shapecast(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--source",
        "images",
        "--path",
        "tests/fixtures/frames/images",
        "--loops",
        "2",
        "--address",
        &addr,
        "--max-fps",
        "0",
        "--threads",
        "1",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("# effective configuration"), "{out}");
    assert!(out.contains("final stats: captured 6 inferred 6"), "{out}");
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = rx.recv_from(&mut buf).unwrap();
    assert!(n > 28, "a fragment datagram arrived");
    // a missing model: exit code 3, naming the file
    let (code, _, err) = shapecast(&[
        "run",
        "--model",
        "nope.onnx",
        "--source",
        "images",
        "--path",
        "tests/fixtures/frames/images",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("nope.onnx"), "{err}");
}

#[test]
fn cli_run_whose_source_fails_exits_with_the_source_code() {
    // A folder whose only picture never decodes: the source stops on its first play. The
    // run prints its final stats and exits 4 (frame source), not 0, so that a supervisor
    // (systemd Restart=on-failure) restarts it.
    let dir = std::env::temp_dir().join(format!("shapecast-badsrc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.png"), b"not a png").unwrap();
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = rx.local_addr().unwrap().to_string();
    let model = fixture("points/model.onnx");
    let (code, out, err) = shapecast(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--source",
        "images",
        "--path",
        dir.to_str().unwrap(),
        "--loops",
        "0",
        "--address",
        &addr,
        "--threads",
        "1",
    ]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 4, "{out}\n{err}");
    assert!(out.contains("final stats: captured 0"), "{out}");
    assert!(
        err.contains("the frame source stopped") && err.contains("none of the 1 picture file(s)"),
        "{err}"
    );
}

/// Runs `shapecast run` on `model` over the fixture pictures forever (20 fps, logging at
/// info, sending to `addr`), waits for a log line holding `ready`, sends SIGUSR1, then
/// SIGTERM; returns (exit success, stdout, the whole log).
#[cfg(unix)]
fn run_with_sigusr1(model: &Path, addr: &str, ready: &str) -> (bool, String, String) {
    use std::io::{BufRead, BufReader};
    let mut child = bin_command(env!("CARGO_BIN_EXE_shapecast"))
        .args(["run", "--model", model.to_str().unwrap()])
        .args([
            "--source",
            "images",
            "--path",
            "tests/fixtures/frames/images",
        ])
        .args(["--loops", "0", "--max-fps", "20", "--threads", "1"])
        // no timeout reset on a stalled machine: only the signal may reset
        .args(["--address", addr, "--log", "info", "--state-timeout", "600"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in err.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains(ready) {
            break;
        }
    }
    assert!(log.contains(ready), "{log}");
    // a few frames in, signal; a few more, stop
    std::thread::sleep(Duration::from_millis(600));
    signal(&pid, "-USR1");
    std::thread::sleep(Duration::from_millis(600));
    signal(&pid, "-TERM");
    let rest: Vec<String> = err.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), stdout, log + &rest.join("\n"))
}

/// Sends `sig` (e.g. `-USR1`) to process `pid` with kill(1).
#[cfg(unix)]
fn signal(pid: &str, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// A fusion model's state is reset by SIGUSR1 (a service has no terminal for `reset`), and
/// SIGTERM ends the run cleanly with the count in the final stats line; for a model without
/// fusion state the signal is logged and ignored, never fatal.
#[cfg(unix)]
#[test]
fn cli_run_resets_fusion_state_on_sigusr1() {
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = rx.local_addr().unwrap().to_string();
    let (ok, stdout, log) = run_with_sigusr1(&fixture("fusion/model.onnx"), &addr, "send SIGUSR1");
    assert!(ok, "{stdout}\n{log}");
    assert!(log.contains("fusion state reset on command"), "{log}");
    assert!(stdout.contains("| fusion resets 1"), "{stdout}");

    let (ok, stdout, log) = run_with_sigusr1(&fixture("points/model.onnx"), &addr, "head, id");
    assert!(ok, "{stdout}\n{log}");
    assert!(
        log.contains("reset ignored: the model has no fusion state"),
        "{log}"
    );
}

#[test]
fn replay_decodes_a_recorded_serial_stream_and_skips_damage() {
    use shapecast::encode::{default_send, Encoder};
    use shapecast_wire::serial::{encode_frame, max_encoded_len};
    let model = Model::load(&fixture("points/model.onnx")).unwrap();
    let meta = model.meta.clone();
    let mut engine = Engine::new(model, EngineOptions::default());
    let (_, x) = tensor(&fixture("points/input.txt"));
    let (rec, _) = engine.infer_tensor(&x, Instant::now()).unwrap();
    let mut enc = Encoder::new(9, 10, meta.bounds, default_send(meta.head)).unwrap();
    let mut stream = Vec::new();
    for i in 0..4u32 {
        let payload = enc.frame(&rec, i, u64::from(i)).unwrap().to_vec();
        let mut out = vec![0u8; max_encoded_len(payload.len())];
        let n = encode_frame(&payload, &mut out).unwrap();
        let mut f = out[..n].to_vec();
        if i == 2 {
            let mid = f.len() / 2;
            f[mid] ^= 0x40; // damaged on the line
        }
        stream.extend_from_slice(&f);
        if f.last() != Some(&0) {
            stream.push(0);
        }
    }
    let path = std::env::temp_dir().join(format!("shapecast-rec-{}.bin", std::process::id()));
    std::fs::write(&path, &stream).unwrap();
    let mut src =
        shapecast::source::WireReplay::open(&path, shapecast::source::Repeat::Times(1), 1 << 20)
            .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut ids = Vec::new();
    let n = shapecast::app::replay::replay_frames(&mut src, 0.0, &stop, |_, m| {
        ids.push(m.frame_id().unwrap())
    })
    .unwrap();
    assert_eq!(ids, vec![0, 1, 3]);
    assert_eq!((n.frames, n.messages, n.bad_frames), (4, 3, 1));
    std::fs::remove_file(&path).unwrap();
}

/// Adversarial input: every input-facing function of the runtime over arbitrary bytes,
/// sizes and values. Each property gives an error or a consistent result, never a panic, a
/// hang or an allocation sized by the input (the device standard: "bad input gets a clear
/// error and loses nothing").
mod adversarial {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use proptest::prelude::*;
    use shapecast::config::{load_layers, parse_set, Overrides, BASE_TOML};
    use shapecast::encode::{Encoder, Send};
    use shapecast::heads::{self, Cloud, Mesh, Reconstruction, VoxelGrid};
    use shapecast::meta::{Color, ContractError, Crop, InputSpec, ModelMeta};
    use shapecast::preprocess::Preprocessor;
    use shapecast::source::convert::{convert, unpad};
    use shapecast::source::{FrameSource, PixelFormat, RawFrames, Repeat};
    use shapecast_wire::message::{decode_message, Message};

    fn frames_fixture(name: &str) -> PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/frames")
            .join(name)
    }

    fn tmp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("shapecast-adv-{}-{name}", std::process::id()))
    }

    fn format() -> impl Strategy<Value = PixelFormat> {
        prop::sample::select(PixelFormat::ALL.to_vec())
    }

    fn metadata(head: &str) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = [
            ("shapecast.contract", "1"),
            ("shapecast.head", head),
            ("shapecast.model_id", "adv"),
            ("shapecast.input.width", "16"),
            ("shapecast.input.height", "12"),
            ("shapecast.input.color", "rgb"),
            ("shapecast.input.mean", "0.5,0.5,0.5"),
            ("shapecast.input.std", "0.25,0.25,0.25"),
            ("shapecast.input.crop", "center"),
            ("shapecast.frame", "object"),
            ("shapecast.units", "normalized"),
            ("shapecast.bounds", "-1,-1,-1,1,1,1"),
            ("shapecast.precision", "f32"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let extra: &[(&str, &str)] = match head {
            "points" => &[
                ("shapecast.points", "5"),
                ("shapecast.hypotheses", "2"),
                ("shapecast.classes", "a,b,c"),
            ],
            "voxels" => &[("shapecast.voxels.resolution", "3")],
            "mesh" => &[
                ("shapecast.mesh.template", "0,0,0,1,0,0,0,1,0"),
                ("shapecast.mesh.faces", "0,1,2"),
                ("shapecast.classes", "a,b"),
            ],
            _ => &[
                ("shapecast.part", "encoder"),
                ("shapecast.parts.decoder", "d.onnx"),
                ("shapecast.implicit.kind", "sdf"),
                ("shapecast.implicit.level", "0"),
                ("shapecast.implicit.latent", "8"),
            ],
        };
        for (k, v) in extra {
            m.insert((*k).to_owned(), (*v).to_owned());
        }
        m
    }

    fn head() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["points", "voxels", "mesh", "implicit"])
    }

    /// Floats with NaN, infinities and extremes mixed in.
    fn wild_f32() -> impl Strategy<Value = f32> {
        prop_oneof![
            6 => -2.0f32..2.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(f32::MAX),
            1 => Just(-f32::MAX),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Raw pixel buffers of any size: converted iff the length is the format's, else a
        /// size error; MJPEG garbage is a decode error.
        #[test]
        fn convert_any_buffer(
            f in format(),
            w in 0u32..10,
            h in 0u32..10,
            delta in -3i64..3,
            fill in any::<u8>(),
            garbage in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let want = f.frame_len(w, h);
            let len = want.map_or(garbage.len(), |n| (n as i64 + delta).max(0) as usize);
            let data = if f == PixelFormat::Mjpeg { garbage } else { vec![fill; len] };
            let mut out = vec![7u8; 5];
            let r = convert(f, w, h, &data, &mut out);
            if w == 0 || h == 0 {
                prop_assert!(r.is_err());
            } else if f != PixelFormat::Mjpeg {
                prop_assert_eq!(r.is_ok(), Some(data.len()) == want);
            }
            if r.is_ok() {
                prop_assert_eq!(out.len(), (w * h * 3) as usize);
            }
        }

        /// Driver buffers with any stride and any length: a tight frame of the format's
        /// length or a `Short` error.
        #[test]
        fn unpad_any_stride(
            f in format(),
            w in 0u32..12,
            h in 0u32..12,
            stride in prop_oneof![0u32..40, Just(u32::MAX), Just(u32::MAX / 2)],
            len in 0usize..1200,
        ) {
            let data = vec![9u8; len];
            if let Ok(v) = unpad(f, w, h, stride, &data) {
                if let Some(n) = f.frame_len(w, h) {
                    prop_assert_eq!(v.len(), n);
                }
            }
        }

        /// A real MJPEG picture, damaged or cut anywhere: an error or a frame of the
        /// declared size.
        #[test]
        fn damaged_mjpeg_picture(
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in any::<prop::sample::Index>(),
            cut_it in any::<bool>(),
        ) {
            let mut data = std::fs::read(frames_fixture("testsrc.mjpeg")).unwrap();
            for (i, b) in flips {
                let i = i.index(data.len());
                data[i] = b;
            }
            if cut_it {
                data.truncate(cut.index(data.len()));
            }
            let mut out = Vec::new();
            if convert(PixelFormat::Mjpeg, 64, 48, &data, &mut out).is_ok() {
                prop_assert_eq!(out.len(), 64 * 48 * 3);
            }
        }

        /// Any picture size into any model input size, crop and colour: the tensor has the
        /// model's shape and only finite values.
        #[test]
        fn preprocess_any_size(
            w in 1usize..40,
            h in 1usize..40,
            dw in 1usize..20,
            dh in 1usize..20,
            crop in prop::sample::select(vec![Crop::Center, Crop::Stretch, Crop::Letterbox]),
            color in prop::sample::select(vec![Color::Rgb, Color::Bgr, Color::Gray]),
            seed in any::<u8>(),
        ) {
            let c = color.channels();
            let spec = InputSpec {
                width: dw,
                height: dh,
                color,
                mean: vec![0.5; c],
                std: vec![0.25; c],
                crop,
            };
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i as u8).wrapping_mul(seed)).collect();
            let mut out = Vec::new();
            let mut p = Preprocessor::default();
            p.run(&rgb, w, h, &spec, &mut out).unwrap();
            prop_assert_eq!(out.len(), c * dw * dh);
            prop_assert!(out.iter().all(|v| v.is_finite()));
            // a wrong buffer length is an error, not a panic
            prop_assert!(p.run(&rgb[1..], w, h, &spec, &mut out).is_err());
        }

        /// Any value for any metadata key: parsed or refused naming that key.
        #[test]
        fn metadata_any_value(
            head in head(),
            key_pick in any::<prop::sample::Index>(),
            value in prop_oneof![
                ".{0,40}",
                "[-0-9.,e ]{0,40}",
                Just("NaN,0,0,1,1,1".to_owned()),
                Just("1e39".to_owned()),
                Just("-5".to_owned()),
                Just("18446744073709551616".to_owned()),
            ],
        ) {
            let mut m = metadata(head);
            let keys: Vec<String> = m.keys().cloned().collect();
            let key = keys[key_pick.index(keys.len())].clone();
            m.insert(key.clone(), value);
            match ModelMeta::parse(&m) {
                Ok(meta) => {
                    prop_assert!(meta.bounds.extent().iter().all(|e| e.is_finite() && *e > 0.0));
                    prop_assert!(meta.input.std.iter().all(|s| (1.0 / (255.0 * s)).is_finite()));
                }
                Err(ContractError::Bad { key: k, .. }) | Err(ContractError::Missing(k)) => {
                    prop_assert!(k.starts_with("shapecast."), "{k}");
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        /// Network outputs of any length and any values: decoded (non-finite points
        /// dropped and counted) or a length error.
        #[test]
        fn heads_any_outputs(
            len in 0usize..80,
            labels_len in prop::option::of(0usize..80),
            vals in prop::collection::vec(wild_f32(), 80),
        ) {
            let m = ModelMeta::parse(&metadata("points")).unwrap();
            let lab = labels_len.map(|n| &vals[..n]);
            if let Ok(r) = heads::decode_points(&m, &vals[..len], lab, Some(&vals[..10.min(len)])) {
                prop_assert_eq!(r.clouds.len(), 2);
                let kept: usize = r.clouds.iter().map(|c| c.points.len()).sum();
                prop_assert_eq!(kept + r.dropped_nonfinite, 10);
                prop_assert!(r.clouds.iter().flat_map(|c| &c.points).flatten().all(|v| v.is_finite()));
            }
            let m = ModelMeta::parse(&metadata("voxels")).unwrap();
            if let Ok(r) = heads::decode_voxels(&m, &vals[..len]) {
                prop_assert_eq!(r.voxels.unwrap().occupied.len(), 27);
            }
            let m = ModelMeta::parse(&metadata("mesh")).unwrap();
            if let Ok(r) = heads::decode_mesh(&m, &vals[..len], lab) {
                let mesh = r.mesh.unwrap();
                prop_assert!(mesh.vertices.iter().flatten().all(|v| v.is_finite()));
            }
        }

        /// Any reconstruction (non-finite points, attribute lists of the wrong length,
        /// grids and meshes that do not match their own sizes): a decodable message or an
        /// error.
        #[test]
        fn encoder_any_reconstruction(
            pts in prop::collection::vec([wild_f32(), wild_f32(), wild_f32()], 0..40),
            nlab in 0usize..45,
            nconf in 0usize..45,
            res in 0usize..5,
            occ_len in 0usize..130,
            faces in prop::collection::vec([0u32..50, 0u32..50, 0u32..50], 0..10),
            send in prop::sample::select(vec![Send::Points, Send::Voxels, Send::Mesh]),
            bits in 8u8..=16,
        ) {
            let b = ModelMeta::parse(&metadata("points")).unwrap().bounds;
            let rec = Reconstruction {
                clouds: vec![Cloud {
                    points: pts.clone(),
                    labels: Some(vec![1; nlab]),
                    confidence: Some(vec![f32::NAN; nconf]),
                }],
                mesh: Some(Mesh { vertices: pts.clone(), faces, labels: Some(vec![0; nlab]) }),
                voxels: Some(VoxelGrid { resolution: res, occupied: vec![true; occ_len] }),
                ..Reconstruction::default()
            };
            let mut enc = Encoder::new(3, bits, b, send).unwrap();
            if let Ok(bytes) = enc.frame(&rec, 1, 2) {
                let msg = decode_message(bytes);
                prop_assert!(msg.is_ok(), "{:?}", msg.err());
                if let Ok(Message::PointCloud(p)) = msg {
                    prop_assert_eq!(p.hypotheses.len(), 1);
                }
            }
        }

        /// `--set` items and overlays of any text: a configuration or a typed error.
        #[test]
        fn config_any_override(
            item in prop_oneof![
                ".{0,30}",
                "[a-z_.]{1,20}=[-0-9a-z.e\"\\[\\]{} ]{0,20}",
                Just("limits.max_fps=nan".to_owned()),
                Just("stats.interval_s=1e300".to_owned()),
                Just("source.kind.x=1".to_owned()),
                Just("source=3".to_owned()),
            ],
            overlay in "[\\[\\]a-z_.=\"0-9\n ]{0,60}",
        ) {
            let o = Overrides { set: vec![item.clone()], ..Overrides::default() };
            let _ = parse_set(&item);
            let layers = [
                ("base".to_owned(), BASE_TOML.to_owned()),
                ("overlay".to_owned(), overlay),
            ];
            if let Ok(eff) = load_layers(&layers, &o) {
                prop_assert!(eff.config.validate().is_empty());
            }
        }

        /// An MJPEG dump of any bytes, played forever: every call returns (a picture, a
        /// bad frame or a fatal error), never spins.
        #[test]
        fn mjpeg_dump_of_any_bytes(
            data in prop::collection::vec(prop_oneof![any::<u8>(), Just(0xFF), Just(0xD8), Just(0xD9)], 0..300),
        ) {
            let p = tmp(&format!("mjpeg-{}", data.len()));
            std::fs::write(&p, &data).unwrap();
            let mut s = RawFrames::open(&p, 64, 48, PixelFormat::Mjpeg, Repeat::Forever).unwrap();
            for _ in 0..6 {
                if let Err(e) = s.next_frame() {
                    if e.kind() == shapecast::source::ErrorKind::Fatal {
                        break;
                    }
                }
            }
            std::fs::remove_file(&p).unwrap();
        }
    }

    #[test]
    fn an_mjpeg_picture_larger_than_its_frame_is_refused_before_decoding() {
        // A 4000x4000 picture in a 64x48 MJPEG stream: refused from its header, so the
        // 48 MB RGB buffer is never allocated.
        let img = image::GrayImage::new(4000, 4000);
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut jpeg)
            .encode_image(&img)
            .unwrap();
        let mut out = Vec::new();
        super::counting_alloc::take_largest_alloc();
        let e = convert(PixelFormat::Mjpeg, 64, 48, &jpeg, &mut out).unwrap_err();
        let largest = super::counting_alloc::take_largest_alloc();
        assert!(e.to_string().contains("4000x4000"), "{e}");
        assert!(
            largest < 4 << 20,
            "allocated {largest} bytes for a refused picture"
        );
    }

    #[test]
    fn bounds_whose_extent_overflows_are_refused() {
        // Finite numbers, min < max, but max - min is infinite: every point would quantize
        // to the min corner and the host would dequantize to inf/NaN.
        let mut m = metadata("voxels");
        m.insert("shapecast.bounds".into(), "-3e38,-1,-1,3e38,1,1".into());
        let e = ModelMeta::parse(&m).unwrap_err();
        assert!(e.to_string().contains("shapecast.bounds"), "{e}");
    }

    #[test]
    fn std_so_small_that_normalising_overflows_is_refused() {
        let mut m = metadata("points");
        m.insert("shapecast.input.std".into(), "1e-40,0.25,0.25".into());
        let e = ModelMeta::parse(&m).unwrap_err();
        assert!(e.to_string().contains("shapecast.input.std"), "{e}");
    }

    #[test]
    fn replay_rate_that_overflows_a_duration_is_not_a_panic() {
        // `--rate 1e-310`: 1/rate is infinite; Duration::from_secs_f64 used to panic.
        let p = tmp("rate.rec");
        std::fs::write(&p, b"\x02x\x00").unwrap();
        let mut src = shapecast::source::WireReplay::open(&p, Repeat::Times(1), 100).unwrap();
        // The pause between messages is (nearly) forever; a stop request still ends it.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let t0 = std::time::Instant::now();
        let n = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(100));
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            shapecast::app::replay::replay_frames(&mut src, 1e-310, &stop, |_, _| {}).unwrap()
        });
        assert_eq!((n.frames, n.bad_frames), (1, 1));
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn replaying_garbage_forever_stops_with_an_error() {
        // Non-empty COBS frames that never decode (a binary, not a recording), looped
        // forever at full speed: used to re-read the file forever, one warning per frame.
        let mut data = Vec::new();
        for i in 1..=50u8 {
            data.extend_from_slice(&[i, 0x7f, i, 0x33, 0]);
        }
        let p = tmp("garbage.rec");
        std::fs::write(&p, &data).unwrap();
        let mut src = shapecast::source::WireReplay::open(&p, Repeat::Forever, 100).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let e = shapecast::app::replay::replay_frames(&mut src, 0.0, &stop, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("no decodable message"), "{e}");
        assert!(e.to_string().contains("50 frames: 50 broken"), "{e}");
        assert_eq!(
            src.frames(),
            51,
            "one play, and the first frame of the next"
        );
        // One play of the same file ends normally, with its counts.
        let mut src = shapecast::source::WireReplay::open(&p, Repeat::Times(1), 100).unwrap();
        let n = shapecast::app::replay::replay_frames(&mut src, 0.0, &stop, |_, _| {}).unwrap();
        assert_eq!((n.frames, n.messages, n.bad_frames), (50, 0, 50));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn durations_from_config_numbers_saturate() {
        use shapecast::pipeline::duration_secs;
        use std::time::Duration;
        assert_eq!(duration_secs(0.5), Duration::from_millis(500));
        assert_eq!(duration_secs(-1.0), Duration::ZERO);
        assert_eq!(duration_secs(f64::NAN), Duration::ZERO);
        let max = duration_secs(f64::INFINITY);
        assert_eq!(duration_secs(1e300), max);
        assert_eq!(duration_secs(1.0 / 1e-310), max);
        // still addable to an Instant
        let _ = std::time::Instant::now() + max;
    }
}

/// Files whose size has nothing to do with what they should hold (a sparse 4 GiB file given
/// as the key or the configuration) are refused after a bounded read, not read whole.
#[test]
fn oversized_key_and_config_files_are_refused_without_reading_them() {
    let p = std::env::temp_dir().join(format!("shapecast-huge-{}.txt", std::process::id()));
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(4 << 30).unwrap(); // sparse: no disk used
    drop(f);
    let t0 = Instant::now();
    let e = shapecast::app::link::read_key(&p).unwrap_err();
    assert!(format!("{e:#}").contains("longer than 4096 bytes"), "{e:#}");
    let e = shapecast::config::Config::load_files(&p, None, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("longer than"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn doctor_reads_the_pre_shared_key_like_run_does() {
    let dir = std::env::temp_dir().join(format!("shapecast-doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.hex");
    let bad = dir.join("bad.hex");
    std::fs::write(&good, format!("{}\n", "0b".repeat(32))).unwrap();
    // exists, but is not 64 hex digits: `run` refuses it, so doctor must too
    std::fs::write(&bad, "not a key\n").unwrap();
    let doctor = |key: &Path| {
        shapecast(&[
            "doctor",
            "--source",
            "images",
            "--path",
            "models/samples",
            "--psk-file",
            key.to_str().unwrap(),
            "--log",
            "error",
        ])
    };
    let (code, out, err) = doctor(&good);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("[ ok ] link     pre-shared key file"), "{out}");
    let (code, out, err) = doctor(&bad);
    assert_eq!(code, 6, "{out}{err}");
    assert!(
        out.contains("[FAIL] link") && out.contains("reading the pre-shared key file"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
