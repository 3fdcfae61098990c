//! `shapecast bench MODEL`: per-stage latency of the whole frame path on this machine.
//!
//! Frames are pictures from a folder (default models/samples) or a synthetic gradient,
//! held in memory; each goes through convert -> preprocess -> inference -> decode ->
//! encode -> send (a `LinkSender` whose transport discards, so the link costs nothing but
//! the hand-over). Frame-to-wire is measured from the moment the frame is taken to the
//! end of the hand-over. Prints p50/p90/p99/max per stage and the peak RSS.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::encode::{default_send, Encoder};
use crate::engine::{Engine, EngineOptions};
use crate::implicit::ImplicitOptions;
use crate::model::{LoadOptions, Model, Threads};
use crate::source::{Frame, FrameSource, PixelFormat, Repeat};
use crate::stats::{Latencies, Stage, Table};

/// Options of the bench command.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub model: PathBuf,
    pub frames: usize,
    pub warmup: usize,
    pub threads: usize,
    pub images: Option<PathBuf>,
    pub bits: u8,
    /// Camera format the pictures are delivered in (converted once, before measuring).
    pub pixel_format: PixelFormat,
    pub implicit: ImplicitOptions,
}

struct Discard;

impl shapecast_link::Transport for Discard {
    fn send(&mut self, _frame_id: u32, _payload: &[u8]) -> Result<(), shapecast_link::LinkError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "discard".into()
    }
}

/// Peak resident set size of this process, bytes (Linux: VmHWM).
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn load_frames(dir: Option<&PathBuf>) -> anyhow::Result<Vec<Frame>> {
    let dir = dir
        .cloned()
        .unwrap_or_else(|| PathBuf::from("models/samples"));
    if dir.exists() {
        let mut src = crate::source::ImageFiles::open(&dir, Repeat::Times(1))
            .with_context(|| format!("reading pictures from {}", dir.display()))?;
        let mut v = Vec::new();
        loop {
            match src.next_frame() {
                Ok(f) => v.push(f),
                Err(e) if e.is_end() => break,
                Err(e) => return Err(e).context("reading a picture"),
            }
            if v.len() >= 64 {
                break;
            }
        }
        if !v.is_empty() {
            return Ok(v);
        }
    }
    log::warn!(
        "no pictures in {}: using a synthetic 640x480 gradient",
        dir.display()
    );
    let (w, h) = (640u32, 480u32);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            data.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    Ok(vec![Frame {
        width: w,
        height: h,
        format: PixelFormat::Rgb24,
        data,
        capture_ts: Instant::now(),
        seq: 0,
    }])
}

/// `f` as a camera delivering `format` would send it.
fn as_format(f: Frame, format: PixelFormat) -> anyhow::Result<Frame> {
    if f.format == format {
        return Ok(f);
    }
    let mut rgb = Vec::new();
    f.to_rgb8(&mut rgb).context("converting a picture")?;
    let data = crate::source::convert::from_rgb8(format, f.width, f.height, &rgb)
        .with_context(|| format!("making a {format} frame"))?;
    Ok(Frame { format, data, ..f })
}

/// Runs the bench and prints the table.
pub fn bench(a: &BenchArgs) -> anyhow::Result<()> {
    let rss0 = peak_rss();
    let t = Instant::now();
    let model = Model::load_with(
        &a.model,
        LoadOptions {
            threads: Threads(a.threads.max(1)),
            ..LoadOptions::default()
        },
    )
    .with_context(|| format!("loading model {}", a.model.display()))?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_loaded = peak_rss();
    let frames = load_frames(a.images.as_ref())?
        .into_iter()
        .map(|f| as_format(f, a.pixel_format))
        .collect::<anyhow::Result<Vec<Frame>>>()?;
    let meta = model.meta.clone();
    let mut encoder = Encoder::new(1, a.bits, meta.bounds, default_send(meta.head))
        .context("setting up the encoder")?;
    let link = shapecast_link::LinkSender::new(Discard, 16 << 20).context("starting the link")?;
    let mut engine = Engine::new(
        model,
        EngineOptions {
            implicit: a.implicit,
            ..EngineOptions::default()
        },
    );
    let mut lat = Latencies::new(a.frames.max(1));
    let mut rgb = Vec::new();
    let mut bytes_total = 0usize;
    let mut queries = 0u64;
    let mut points = 0usize;
    for i in 0..a.warmup + a.frames {
        let f = &frames[i % frames.len()];
        let t0 = Instant::now();
        f.to_rgb8(&mut rgb).context("converting a frame")?;
        let conv = t0.elapsed();
        let (rec, tm) = engine
            .infer_rgb8(&rgb, f.width as usize, f.height as usize, Instant::now())
            .context("running the model")?;
        let t1 = Instant::now();
        let b = encoder.frame(&rec, i as u32, 0).context("encoding")?;
        let enc = t1.elapsed();
        let t2 = Instant::now();
        link.offer(b).context("handing over")?;
        let send = t2.elapsed();
        let total = t0.elapsed();
        link.flush(std::time::Duration::from_secs(1));
        if i >= a.warmup {
            lat.record(Stage::Convert, conv);
            lat.record(Stage::Preprocess, tm.preprocess);
            lat.record(Stage::Inference, tm.inference);
            lat.record(Stage::Decode, tm.decode);
            lat.record(Stage::Encode, enc);
            lat.record(Stage::Send, send);
            lat.record(Stage::FrameToWire, total);
            bytes_total += b.len();
            queries += rec.queries;
            points += rec.points().len();
        }
    }
    let n = a.frames.max(1);
    println!(
        "model {} ({} head, input {}x{}, {} bytes), {} frames after {} warm-up, {} thread(s), {} bits, {} {}x{} frames",
        a.model.display(),
        meta.head,
        meta.input.width,
        meta.input.height,
        engine.model.file_bytes,
        a.frames,
        a.warmup,
        a.threads,
        a.bits,
        a.pixel_format,
        frames.first().map_or(0, |f| f.width),
        frames.first().map_or(0, |f| f.height)
    );
    println!("load (parse + check + optimise): {load_ms:.1} ms");
    print!("{}", Table(&lat));
    println!(
        "mean message {} bytes, {} points in the first hypothesis",
        bytes_total / n,
        points / n
    );
    if queries > 0 {
        let f = u64::from(a.implicit.fine) + 1;
        println!(
            "implicit: {} decoder queries per frame (coarse {} -> fine {}); a dense {}^3 lattice is {} ({:.1}x more)",
            queries / n as u64,
            a.implicit.coarse,
            a.implicit.fine,
            f,
            f * f * f,
            (f * f * f) as f64 / (queries as f64 / n as f64)
        );
    }
    let mib = |b: Option<u64>| {
        b.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0))
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "peak RSS: {} at start, {} after loading, {} at the end",
        mib(rss0),
        mib(rss_loaded),
        mib(peak_rss())
    );
    let _ = link.close();
    Ok(())
}
