//! `shapecast demo`: the shipped model on the shipped sample pictures, streamed over
//! loopback UDP to the real host receiver (`shapecast_host::Receiver`) running in-process.
//! The host's `PlyDirSink` writes one PLY per picture (`<out>/<device>/<frame>.ply`) and a
//! `FnSink` keeps what the host decoded, from which the PNG contact sheet is drawn
//! (picture | reconstruction from two viewpoints | ground truth when the sample has one).
//! The host's `McapSink` also records the stream into `<out>/demo.mcap` (ROS 2
//! PointCloud2 and String, all CDR: open it in Foxglove or with `ros2 bag`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Context};
use shapecast_geom::ply::PlyData;
use shapecast_geom::render::Canvas;
use shapecast_host::sink::Tee;
use shapecast_host::{Event, FnSink, HostError, McapSink, PlyDirSink, Receiver, ReceiverConfig};
use shapecast_link::udp::UdpSender;
use shapecast_link::LinkSender;
use shapecast_wire::message::Message;

use super::{exit, DemoArgs, ExitCode, Failure};
use crate::encode::{default_send, Encoder};
use crate::engine::{Engine, EngineOptions};
use crate::model::{LoadOptions, Model};
use crate::pipeline::{self, Controls, PipelineOptions};
use crate::source::{FrameSource, ImageFiles, Repeat};

/// Side of one contact-sheet tile, pixels.
const TILE: u32 = 224;
/// Device id the demo's encoder uses (the host's PLY sub-folder).
pub const DEMO_DEVICE: u32 = 1;

/// A result as the host received it: the first hypothesis's geometry, as the host decoded it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub frame_id: u32,
    pub geometry: PlyData,
    pub hypotheses: usize,
    pub bytes: usize,
    pub bounds: ([f32; 3], [f32; 3]),
}

impl Received {
    /// From a host event; None for Hello/Stats.
    pub fn from_event(ev: &Event<'_>) -> Option<Self> {
        let frame_id = ev.message.frame_id()?;
        let bounds = ev.message.bounds()?;
        Some(Self {
            frame_id,
            geometry: ev.geometry.first().cloned().unwrap_or_default(),
            hypotheses: ev.geometry.len(),
            bytes: ev.payload.len(),
            bounds: (bounds.min, bounds.max),
        })
    }
}

/// What the demo's sink collected.
#[derive(Debug, Default)]
struct Collected {
    frames: BTreeMap<u32, Received>,
    hello: u64,
    stats: u64,
}

fn missing_model(path: &Path) -> anyhow::Error {
    anyhow!(
        "the demo model {} is missing. It is the trained default model the trainer ships \
         (shapecast-train exports it to models/default.onnx); pass --model PATH to use another \
         contract model, e.g. --model tests/fixtures/models/points/model.onnx",
        path.display()
    )
}

/// One contact-sheet row: the input picture, what the host received, the ground truth.
type Row = (image::RgbImage, Option<Received>, Option<PlyData>);

/// Draws `points` in a contact-sheet tile.
fn render_tile(
    points: &[[f32; 3]],
    labels: Option<&[u8]>,
    bounds: ([f32; 3], [f32; 3]),
    yaw: f32,
) -> Canvas {
    shapecast_geom::render::render_tile(points, labels, TILE, bounds, yaw)
}

/// Writes the contact sheet: one row per picture; columns: picture, received reconstruction
/// from two viewpoints, ground truth (first viewpoint) when the sample has a `.ply` beside it.
fn contact_sheet(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    let cols = 4u32;
    let mut sheet = Canvas::new(
        cols * TILE + (cols + 1) * 4,
        rows.len() as u32 * (TILE + 4) + 4,
        [60, 60, 66],
    );
    let x_of = |k: u32| 4 + i64::from(k) * (i64::from(TILE) + 4);
    for (i, (img, rec, truth)) in rows.iter().enumerate() {
        let y = 4 + i as i64 * (i64::from(TILE) + 4);
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
        bg.blit(
            &tile,
            i64::from((TILE - tw) / 2),
            i64::from((TILE - th) / 2),
        );
        sheet.blit(&bg, x_of(0), y);
        for (k, yaw) in [35.0f32, -55.0].iter().enumerate() {
            let c = match rec {
                Some(r) => render_tile(
                    &r.geometry.vertices,
                    r.geometry.labels.as_deref(),
                    r.bounds,
                    *yaw,
                ),
                // nothing arrived: a red tile
                None => Canvas::new(TILE, TILE, [90, 20, 20]),
            };
            sheet.blit(&c, x_of(k as u32 + 1), y);
        }
        let bounds = rec.as_ref().map_or(([-0.5; 3], [0.5; 3]), |r| r.bounds);
        let c = match truth {
            Some(t) => render_tile(&t.vertices, t.labels.as_deref(), bounds, 35.0),
            // no ground truth for this picture: a plain tile
            None => Canvas::new(TILE, TILE, [40, 40, 44]),
        };
        sheet.blit(&c, x_of(3), y);
    }
    let img = image::RgbImage::from_raw(sheet.width, sheet.height, sheet.rgb)
        .ok_or_else(|| anyhow!("contact sheet buffer size"))?;
    img.save(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The PLY file of frame `id` that this run wrote: the host sinks never replace a file, so
/// with an earlier demo's output in the folder it is the newest version present (versions
/// need not be contiguous: the sink takes the first free one).
fn written_ply(out: &Path, id: u32) -> PathBuf {
    (0..shapecast_host::sink::MAX_VERSIONS)
        .map(|n| PlyDirSink::versioned_path(out, DEMO_DEVICE, id, 0, n))
        .filter_map(|p| {
            let t = std::fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((t, p))
        })
        .max_by_key(|(t, _)| *t)
        .map_or_else(|| PlyDirSink::path(out, DEMO_DEVICE, id, 0), |(_, p)| p)
}

/// The ground truth of a sample picture: `NAME.ply` beside `NAME.png`, if readable.
fn ground_truth(picture: &Path) -> Option<PlyData> {
    let ply = picture.with_extension("ply");
    if !ply.is_file() {
        return None;
    }
    match shapecast_geom::ply::load(&ply) {
        Ok(d) => Some(d),
        Err(e) => {
            log::warn!("ground truth {}: {e}", ply.display());
            None
        }
    }
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
    let src_files: Vec<PathBuf> = src.files().to_vec();
    println!(
        "demo: model {} ({} head, {}), {} sample pictures from {}",
        a.model.display(),
        model.meta.head,
        model.meta.model_id,
        n_files,
        a.samples.display()
    );

    // the in-process host: the host library's receiver on loopback UDP; its PLY sink writes
    // the files, the FnSink keeps the decoded geometry for the contact sheet
    let collected = Arc::new(Mutex::new(Collected::default()));
    let ply_sink = PlyDirSink::new(&a.out)
        .with_context(|| format!("creating {}", a.out.display()))
        .code(exit::FAILURE)?;
    let mcap_path = a.out.join("demo.mcap");
    let mcap_sink = McapSink::create(&mcap_path)
        .with_context(|| format!("creating {}", mcap_path.display()))
        .code(exit::FAILURE)?;
    let keep = {
        let collected = Arc::clone(&collected);
        FnSink(move |ev: &Event<'_>| -> Result<usize, HostError> {
            let mut c = collected.lock().unwrap_or_else(|e| e.into_inner());
            match ev.message {
                Message::Hello(_) => c.hello += 1,
                Message::Stats(_) => c.stats += 1,
                _ => {
                    if let Some(r) = Received::from_event(ev) {
                        c.frames.insert(r.frame_id, r);
                    }
                }
            }
            Ok(0)
        })
    };
    let host = Receiver::start(
        ReceiverConfig {
            udp: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..ReceiverConfig::default()
        },
        Tee(Tee(ply_sink, mcap_sink), keep),
    )
    .context("starting the loopback host receiver")
    .code(exit::LINK)?;
    let addr = host
        .udp_addr()
        .ok_or_else(|| anyhow!("the host receiver has no UDP address"))
        .code(exit::LINK)?;
    let link = LinkSender::new(
        UdpSender::new(addr, DEMO_DEVICE, None)
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
    let mut encoder = Encoder::new(DEMO_DEVICE, a.bits, meta.bounds, default_send(meta.head))
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
    // let the receiver drain: every inferred frame, or give up after a while
    host.wait_frames(summary.inferred, Duration::from_secs(3));
    let hs = host.stop();
    log::info!(
        "host: {} datagrams, {} frames reassembled, {} rejected, {} undecodable, {} files",
        hs.udp_datagrams,
        hs.udp_frames,
        hs.udp_rejected,
        hs.undecodable,
        hs.devices.iter().map(|d| d.files).sum::<u64>()
    );
    if hs.sink_errors > 0 {
        eprintln!(
            "demo: warning: {} host sink errors (PLY or MCAP writes; see the log)",
            hs.sink_errors
        );
    }
    let (received, hello, stats) = {
        let mut c = collected.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut c.frames), c.hello, c.stats)
    };
    let inputs = inputs.lock().map(|m| m.clone()).unwrap_or_default();
    let files = src_files;
    let mut rows = Vec::new();
    for (id, img) in &inputs {
        let r = received.get(id).cloned();
        match &r {
            Some(r) => println!(
                "  frame {id}: {} points{} ({} hypotheses, {} bytes on the wire) -> {}",
                r.geometry.vertices.len(),
                if r.geometry.faces.is_empty() {
                    String::new()
                } else {
                    format!(", {} faces", r.geometry.faces.len())
                },
                r.hypotheses,
                r.bytes,
                written_ply(&a.out, *id).display()
            ),
            None => println!("  frame {id}: nothing received"),
        }
        let truth = files.get(*id as usize).and_then(|p| ground_truth(p));
        rows.push((img.clone(), r, truth));
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
    println!("demo: MCAP recording {}", mcap_path.display());
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
    if let Some(why) = summary.source_failure {
        return Err(Failure::new(
            exit::SOURCE,
            anyhow!("the sample pictures' source stopped: {why}"),
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
