//! `shapecast demo`: the shipped model on the shipped sample pictures, streamed over
//! loopback UDP to an in-process receiver that decodes the wire messages and writes one PLY
//! per picture, plus a PNG contact sheet (picture | reconstruction from two viewpoints).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use shapecast_geom::render::{render_points, Canvas, View};
use shapecast_link::udp::{UdpReceiver, UdpSender};
use shapecast_link::LinkSender;
use shapecast_wire::message::{decode_message, mesh_face, mesh_vertex, voxel_occupied, Message};
use shapecast_wire::pointcode;

use super::{exit, DemoArgs, ExitCode, Failure};
use crate::encode::{default_send, Encoder};
use crate::engine::{Engine, EngineOptions};
use crate::model::{LoadOptions, Model};
use crate::pipeline::{self, Controls, PipelineOptions};
use crate::source::{FrameSource, ImageFiles, Repeat};

/// Side of one contact-sheet tile, pixels.
const TILE: u32 = 224;

/// A result as the host received it (decoded from the wire).
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub frame_id: u32,
    pub points: Vec<[f32; 3]>,
    pub labels: Option<Vec<u8>>,
    pub confidence: Option<Vec<f32>>,
    pub faces: Vec<[u32; 3]>,
    pub hypotheses: usize,
    pub bytes: usize,
    pub bounds: ([f32; 3], [f32; 3]),
}

/// Decodes one frame message into points (first hypothesis), mesh or voxel centres.
/// Hello and Stats give None.
pub fn decode_result(payload: &[u8]) -> anyhow::Result<Option<Received>> {
    let msg = decode_message(payload).map_err(|e| anyhow!("undecodable message: {e}"))?;
    let mut r = Received {
        bytes: payload.len(),
        ..Received::default()
    };
    match msg {
        Message::PointCloud(pc) => {
            r.frame_id = pc.frame_id;
            r.bounds = (pc.bounds.min, pc.bounds.max);
            r.hypotheses = pc.hypotheses.len();
            let h = pc
                .hypotheses
                .first()
                .ok_or_else(|| anyhow!("no hypothesis"))?;
            // points fit in 6 bytes each at most after decoding; bound the buffer by the
            // message size so a hostile message cannot ask for a huge one
            let cap = (h.points.len() * 8 + 1024).min(1 << 22);
            let mut q = vec![[0u16; 3]; cap];
            let (n, bits) =
                pointcode::decode(h.points, &mut q).map_err(|e| anyhow!("point code: {e}"))?;
            r.points = q[..n]
                .iter()
                .map(|p| pointcode::dequantize(*p, &pc.bounds, bits))
                .collect();
            r.labels = h.labels.filter(|l| l.len() == n).map(<[u8]>::to_vec);
            r.confidence = h
                .confidence
                .filter(|c| c.len() == n)
                .map(|c| c.iter().map(|b| *b as f32 / 255.0).collect());
        }
        Message::Mesh(m) => {
            r.frame_id = m.frame_id;
            r.bounds = (m.bounds.min, m.bounds.max);
            r.hypotheses = 1;
            let nv = m.vertices.len() / 6;
            r.points = (0..nv)
                .filter_map(|i| mesh_vertex(m.vertices, i))
                .map(|q| pointcode::dequantize(q, &m.bounds, m.bits))
                .collect();
            let nf = m.faces.len() / (3 * m.index_width.bytes());
            r.faces = (0..nf)
                .filter_map(|i| mesh_face(m.faces, m.index_width, i))
                .collect();
            r.labels = m.labels.map(<[u8]>::to_vec);
        }
        Message::Voxels(v) => {
            r.frame_id = v.frame_id;
            r.bounds = (v.bounds.min, v.bounds.max);
            r.hypotheses = 1;
            let res = v.resolution;
            let e = [
                v.bounds.max[0] - v.bounds.min[0],
                v.bounds.max[1] - v.bounds.min[1],
                v.bounds.max[2] - v.bounds.min[2],
            ];
            for z in 0..res {
                for y in 0..res {
                    for x in 0..res {
                        if voxel_occupied(v.occupancy, res, x, y, z) {
                            let c = |i: u16, a: usize| {
                                v.bounds.min[a] + (i as f32 + 0.5) / res as f32 * e[a]
                            };
                            r.points.push([c(x, 0), c(y, 1), c(z, 2)]);
                        }
                    }
                }
            }
        }
        Message::Hello(_) | Message::Stats(_) => return Ok(None),
    }
    Ok(Some(r))
}

fn missing_model(path: &Path) -> anyhow::Error {
    anyhow!(
        "the demo model {} is missing. It is the trained default model the trainer ships \
         (shapecast-train exports it to models/default.onnx); pass --model PATH to use another \
         contract model, e.g. --model tests/fixtures/models/points/model.onnx",
        path.display()
    )
}

/// Writes the contact sheet: one row per picture.
fn contact_sheet(rows: &[(image::RgbImage, Option<Received>)], path: &Path) -> anyhow::Result<()> {
    let cols = 3u32;
    let mut sheet = Canvas::new(
        cols * TILE + 4 * 4,
        rows.len() as u32 * (TILE + 4) + 4,
        [60, 60, 66],
    );
    for (i, (img, rec)) in rows.iter().enumerate() {
        let y = 4 + i as i64 * (TILE as i64 + 4);
        // the input picture, fitted into the tile
        let (w, h) = img.dimensions();
        let s = TILE as f32 / w.max(h).max(1) as f32;
        let (tw, th) = (
            ((w as f32 * s) as u32).max(1),
            ((h as f32 * s) as u32).max(1),
        );
        let small = image::imageops::resize(img, tw, th, image::imageops::FilterType::Triangle);
        let tile = Canvas {
            width: tw,
            height: th,
            rgb: small.into_raw(),
        };
        let mut bg = Canvas::new(TILE, TILE, [0, 0, 0]);
        bg.blit(&tile, ((TILE - tw) / 2) as i64, ((TILE - th) / 2) as i64);
        sheet.blit(&bg, 4, y);
        for (k, yaw) in [35.0f32, -55.0].iter().enumerate() {
            // bigger discs for sparse clouds so the shape reads
            let n = rec.as_ref().map_or(1, |r| r.points.len().max(1));
            let view = View {
                yaw_deg: *yaw,
                pitch_deg: 20.0,
                radius: (0.5 * TILE as f32 / (n as f32).sqrt()).clamp(1.2, 4.0),
                ..View::default()
            };
            let c = match rec {
                Some(r) => render_points(
                    &r.points,
                    r.labels.as_deref(),
                    TILE,
                    TILE,
                    &view,
                    Some(r.bounds),
                ),
                None => Canvas::new(TILE, TILE, [90, 20, 20]),
            };
            sheet.blit(&c, 4 + (k as i64 + 1) * (TILE as i64 + 4), y);
        }
    }
    let img = image::RgbImage::from_raw(sheet.width, sheet.height, sheet.rgb)
        .ok_or_else(|| anyhow!("contact sheet buffer size"))?;
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn demo(a: &DemoArgs) -> Result<(), Failure> {
    if !a.model.is_file() {
        return Err(Failure::new(exit::MODEL, missing_model(&a.model)));
    }
    let model = Model::load_with(&a.model, LoadOptions::default())
        .with_context(|| format!("loading model {}", a.model.display()))
        .code(exit::MODEL)?;
    if !a.samples.is_dir() {
        return Err(Failure::new(
            exit::SOURCE,
            anyhow!(
                "sample folder {} not found (the trainer writes sample pictures to models/samples; \
                 pass --samples DIR)",
                a.samples.display()
            ),
        ));
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("creating {}", a.out.display()))
        .code(exit::FAILURE)?;
    let src = ImageFiles::open(&a.samples, Repeat::Times(1))
        .with_context(|| format!("reading samples from {}", a.samples.display()))
        .code(exit::SOURCE)?;
    let n_files = src.files().len().min(a.max_samples.max(1));
    println!(
        "demo: model {} ({} head, {}), {} sample pictures from {}",
        a.model.display(),
        model.meta.head,
        model.meta.model_id,
        n_files,
        a.samples.display()
    );

    // the in-process host: a UDP receiver on loopback decoding every message
    let received: Arc<Mutex<BTreeMap<u32, Received>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let counts = Arc::new(Mutex::new((0u64, 0u64))); // (hello, stats)
    let stop = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let host = {
        let received = Arc::clone(&received);
        let counts = Arc::clone(&counts);
        let stop = Arc::clone(&stop);
        let out = a.out.clone();
        std::thread::Builder::new()
            .name("demo-host".into())
            .stack_size(32 << 20)
            .spawn(move || -> anyhow::Result<()> {
                let mut rx: UdpReceiver = UdpReceiver::bind("127.0.0.1:0", None, 2000)
                    .context("binding the loopback receiver")?;
                rx.set_timeout(Duration::from_millis(20))?;
                let _ = addr_tx.send(rx.local_addr()?);
                while !stop.load(Ordering::SeqCst) {
                    rx.poll(64, |f, _| match decode_result(f.payload) {
                        Ok(Some(r)) => {
                            let ply = out.join(format!("frame_{:03}.ply", r.frame_id));
                            let data = shapecast_geom::ply::PlyData {
                                vertices: r.points.clone(),
                                faces: r.faces.clone(),
                                labels: r.labels.clone(),
                                confidence: r.confidence.clone(),
                            };
                            if let Err(e) = shapecast_geom::ply::save_ply(&ply, &data) {
                                log::warn!("host: cannot write {}: {e}", ply.display());
                            }
                            if let Ok(mut m) = received.lock() {
                                m.insert(r.frame_id, r);
                            }
                        }
                        Ok(None) => {
                            if let Ok(mut c) = counts.lock() {
                                match decode_message(f.payload) {
                                    Ok(Message::Hello(_)) => c.0 += 1,
                                    _ => c.1 += 1,
                                }
                            }
                        }
                        Err(e) => log::warn!("host: {e:#}"),
                    })?;
                }
                let s = rx.stats();
                log::info!(
                    "host: {} datagrams, {} frames reassembled, {} rejected",
                    s.datagrams,
                    s.reassembler.complete,
                    s.rejected
                );
                Ok(())
            })
            .context("starting the receiver thread")
            .code(exit::FAILURE)?
    };
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow!("the loopback receiver did not start"))
        .code(exit::LINK)?;
    let link = LinkSender::new(
        UdpSender::new(addr, 1, None)
            .context("opening UDP")
            .code(exit::LINK)?,
        super::link::MAX_PAYLOAD,
    )
    .context("starting the link")
    .code(exit::LINK)?;
    println!(
        "demo: streaming over {} to the in-process receiver",
        link.describe()
    );

    let meta = model.meta.clone();
    let mut encoder = Encoder::new(1, a.bits, meta.bounds, default_send(meta.head))
        .context("--bits")
        .code(exit::CONFIG)?;
    let mut engine = Engine::new(
        model,
        EngineOptions {
            implicit: a.implicit.options(),
            ..EngineOptions::default()
        },
    );
    let inputs: Arc<Mutex<BTreeMap<u32, image::RgbImage>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let opts = PipelineOptions {
        stats_interval: Duration::from_secs(1),
        max_frames: Some(n_files as u64),
        pace_to_link: true,
        ..PipelineOptions::default()
    };
    let controls = Controls::default();
    let mut rgb = Vec::new();
    let summary = {
        let inputs = Arc::clone(&inputs);
        pipeline::run(
            Box::new(src) as Box<dyn FrameSource>,
            &mut engine,
            &mut encoder,
            Some(&link),
            &opts,
            &controls,
            &mut |frame, _rec| {
                if frame.to_rgb8(&mut rgb).is_ok() {
                    if let Some(img) =
                        image::RgbImage::from_raw(frame.width, frame.height, rgb.clone())
                    {
                        if let Ok(mut m) = inputs.lock() {
                            m.insert(frame.seq as u32, img);
                        }
                    }
                }
            },
        )
    };
    link.flush(Duration::from_secs(2));
    let lc = link.close();
    // let the receiver drain
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    match host.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Failure::new(exit::LINK, e.context("the receiver failed"))),
        Err(_) => {
            return Err(Failure::new(
                exit::FAILURE,
                anyhow!("the receiver thread panicked"),
            ))
        }
    }
    let received = received.lock().map(|m| m.clone()).unwrap_or_default();
    let inputs = inputs.lock().map(|m| m.clone()).unwrap_or_default();
    let (hello, stats) = counts.lock().map(|c| *c).unwrap_or_default();
    let mut rows = Vec::new();
    for (id, img) in &inputs {
        let r = received.get(id).cloned();
        match &r {
            Some(r) => println!(
                "  frame {id}: {} points{} ({} hypotheses, {} bytes on the wire) -> {}",
                r.points.len(),
                if r.faces.is_empty() {
                    String::new()
                } else {
                    format!(", {} faces", r.faces.len())
                },
                r.hypotheses,
                r.bytes,
                a.out.join(format!("frame_{id:03}.ply")).display()
            ),
            None => println!("  frame {id}: nothing received"),
        }
        rows.push((img.clone(), r));
    }
    let sheet: PathBuf = a.out.join("contact_sheet.png");
    contact_sheet(&rows, &sheet).code(exit::FAILURE)?;
    println!(
        "demo: {} frames inferred, {} results received (+{hello} hello, {stats} stats messages); link sent {} messages, dropped {}",
        summary.inferred,
        received.len(),
        lc.sent,
        lc.dropped
    );
    println!("demo: {}", summary.line());
    println!("demo: contact sheet {}", sheet.display());
    if received.len() < inputs.len() {
        return Err(Failure::new(
            exit::LINK,
            anyhow!(
                "{} of {} results did not arrive",
                inputs.len() - received.len(),
                inputs.len()
            ),
        ));
    }
    if inputs.is_empty() {
        return Err(Failure::new(
            exit::SOURCE,
            anyhow!("no sample picture could be processed"),
        ));
    }
    Ok(())
}
