//! The running pipeline: capture thread -> single-slot latest-frame mailbox -> inference
//! (convert, preprocess, model, head) -> encode -> link (`shapecast_link::LinkSender`, itself
//! latest-wins). Stale frames are dropped, never queued; every drop is counted, logged and
//! sent in the `Stats` messages.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shapecast_link::LinkSender;
use shapecast_wire::message::{Counters, Drops, Stats};

use crate::encode::Encoder;
use crate::engine::Engine;
use crate::heads::Reconstruction;
use crate::mailbox::{Mailbox, Take};
use crate::source::{ErrorKind, Frame, FrameSource};
use crate::stats::{Latencies, Stage};

/// Longest wait made from a configured number of seconds (about 31 years): "never", yet
/// still addable to an [`Instant`].
pub const MAX_WAIT_S: f64 = 1e9;

/// Seconds from a configuration or command-line number as a [`Duration`], saturating:
/// negative or NaN is zero, anything beyond [`MAX_WAIT_S`] (1e300, the infinite `1/rate`
/// of a rate of 1e-310) is [`MAX_WAIT_S`]. `Duration::from_secs_f64` panics on those.
pub fn duration_secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(s.min(MAX_WAIT_S))
    }
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Frames per second processed at most; 0 = as fast as frames come.
    pub max_fps: f64,
    /// Seconds between stats lines/messages; 0 = never (a final line is always logged).
    pub stats_interval: Duration,
    /// Seconds between `Hello` messages.
    pub hello_interval: Duration,
    /// Save every n-th result as PLY here.
    pub save_dir: Option<PathBuf>,
    pub save_every: u32,
    /// Newest saved files kept (older ones deleted); 0 = all.
    pub save_keep: usize,
    /// Stop after this many inferred frames.
    pub max_frames: Option<u64>,
    /// Most points announced in `Hello`.
    pub max_points: u32,
    /// Samples kept per latency window.
    pub window: usize,
    /// Wait for the link to send each frame before taking the next (files: no drops on a
    /// fast link; cameras: leave false).
    pub pace_to_link: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            max_fps: 0.0,
            stats_interval: Duration::from_secs(5),
            hello_interval: Duration::from_secs(5),
            save_dir: None,
            save_every: 1,
            save_keep: 1000,
            max_frames: None,
            max_points: 8192,
            window: 1024,
            pace_to_link: false,
        }
    }
}

/// Flags another thread (signal handler, stdin reader) can set.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// Stop after the current frame.
    pub stop: Arc<AtomicBool>,
    /// Reset the fusion state before the next frame.
    pub reset: Arc<AtomicBool>,
}

/// Counts at the end of a run (and in every stats line).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub captured: u64,
    pub inferred: u64,
    pub sent: u64,
    /// Frames replaced in the mailbox before inference took them.
    pub stale_frames: u64,
    /// Results replaced in the link's mailbox before being sent.
    pub link_busy: u64,
    pub send_errors: u64,
    pub camera_errors: u64,
    /// Frames whose conversion, preprocessing, inference or encoding failed.
    pub frame_errors: u64,
    pub elapsed: Duration,
    pub latencies: Option<Latencies>,
    pub fusion_resets: u64,
    /// Results that could not be saved (`save_dir`: full disk, permissions).
    pub save_errors: u64,
    /// Why the frame source stopped, when it stopped on an error it cannot recover from
    /// (not at the end of a file source or on a stop request).
    pub source_failure: Option<String>,
}

impl Summary {
    /// One log line.
    pub fn line(&self) -> String {
        let fps = if self.elapsed.as_secs_f64() > 0.0 {
            self.inferred as f64 / self.elapsed.as_secs_f64()
        } else {
            0.0
        };
        let mut s = format!(
            "captured {} inferred {} sent {} ({:.1} fps) | drops: stale {} link-busy {} send-errors {} camera-errors {} frame-errors {}",
            self.captured,
            self.inferred,
            self.sent,
            fps,
            self.stale_frames,
            self.link_busy,
            self.send_errors,
            self.camera_errors,
            self.frame_errors
        );
        if self.fusion_resets > 0 {
            s.push_str(&format!(" | fusion resets {}", self.fusion_resets));
        }
        if self.save_errors > 0 {
            s.push_str(&format!(" | save errors {}", self.save_errors));
        }
        if let Some(l) = &self.latencies {
            let p = l.window(Stage::FrameToWire).percentiles();
            let i = l.window(Stage::Inference).percentiles();
            s.push_str(&format!(
                " | frame-to-wire p50 {:.2} p99 {:.2} max {:.2} ms, inference p50 {:.2} p99 {:.2} ms",
                p.p50_us as f64 / 1e3,
                p.p99_us as f64 / 1e3,
                p.max_us as f64 / 1e3,
                i.p50_us as f64 / 1e3,
                i.p99_us as f64 / 1e3
            ));
        }
        s
    }
}

struct Captured {
    frame: Frame,
    handed: Instant,
}

/// What to do with each result besides sending it (the demo collects them).
pub type Sink<'a> = dyn FnMut(&Frame, &Reconstruction) + 'a;

/// Runs until the source ends, `max_frames` is reached or `controls.stop` is set.
pub fn run(
    source: Box<dyn FrameSource>,
    engine: &mut Engine,
    encoder: &mut Encoder,
    link: Option<&LinkSender>,
    opts: &PipelineOptions,
    controls: &Controls,
    sink: &mut Sink<'_>,
) -> Summary {
    let start = Instant::now();
    let mailbox: Arc<Mailbox<Captured>> = Arc::new(Mailbox::new());
    let captured = Arc::new(AtomicU64::new(0));
    let camera_errors = Arc::new(AtomicU64::new(0));
    let capture_lat = Arc::new(std::sync::Mutex::new(crate::stats::Window::new(
        opts.window,
    )));
    let capture = {
        let mailbox = Arc::clone(&mailbox);
        let captured = Arc::clone(&captured);
        let camera_errors = Arc::clone(&camera_errors);
        let capture_lat = Arc::clone(&capture_lat);
        let stop = Arc::clone(&controls.stop);
        let pace = opts.pace_to_link;
        std::thread::Builder::new()
            .name("shapecast-capture".into())
            .spawn(move || {
                let failure = capture_loop(
                    source,
                    &mailbox,
                    &captured,
                    &camera_errors,
                    &capture_lat,
                    &stop,
                    pace,
                );
                mailbox.close();
                failure
            })
    };
    let capture = match capture {
        Ok(h) => Some(h),
        Err(e) => {
            log::error!("cannot start the capture thread: {e}");
            None
        }
    };

    let mut lat = Latencies::new(opts.window);
    let mut sum = Summary::default();
    // files of earlier runs count towards `save_keep` too (oldest first)
    let mut saved = match (&opts.save_dir, opts.save_keep) {
        (Some(dir), keep) if keep > 0 => earlier_saves(dir),
        _ => std::collections::VecDeque::new(),
    };
    let mut rgb = Vec::new();
    let mut last_stats = Instant::now();
    let mut last_hello: Option<Instant> = None;
    let min_gap = if opts.max_fps > 0.0 {
        duration_secs(1.0 / opts.max_fps)
    } else {
        Duration::ZERO
    };
    let mut last_frame_at: Option<Instant> = None;
    let update = |sum: &mut Summary, engine: &Engine| {
        sum.captured = captured.load(Ordering::Relaxed);
        sum.stale_frames = mailbox.replaced();
        sum.camera_errors = camera_errors.load(Ordering::Relaxed);
        sum.fusion_resets = engine.resets;
        if let Some(l) = link {
            let c = l.counters();
            sum.sent = c.sent;
            sum.link_busy = c.dropped;
            sum.send_errors = c.errors + c.oversize;
        }
    };
    loop {
        if controls.stop.load(Ordering::SeqCst) || capture.is_none() {
            break;
        }
        if opts.max_frames.is_some_and(|m| sum.inferred >= m) {
            break;
        }
        // hello
        if let Some(l) = link {
            if last_hello.is_none_or(|t| t.elapsed() >= opts.hello_interval) {
                last_hello = Some(Instant::now());
                match encoder.hello(&engine.model.meta, opts.max_points) {
                    Ok(b) => {
                        l.flush(Duration::from_millis(50));
                        if let Err(e) = l.offer(b) {
                            log::warn!("hello not sent: {e}");
                        }
                        l.flush(Duration::from_millis(50));
                    }
                    Err(e) => log::warn!("hello not encoded: {e}"),
                }
            }
        }
        // stats
        if !opts.stats_interval.is_zero() && last_stats.elapsed() >= opts.stats_interval {
            last_stats = Instant::now();
            update(&mut sum, engine);
            sum.elapsed = start.elapsed();
            log::info!("stats: {}", sum.line());
            if let Some(l) = link {
                let s = stats_message(encoder.device_id, start, &sum, &lat, &capture_lat);
                if let Ok(b) = encoder.stats(&s) {
                    l.flush(Duration::from_millis(50));
                    let _ = l.offer(b);
                    l.flush(Duration::from_millis(50));
                }
            }
        }
        // rate limit: wait, then take the latest frame
        if let Some(t) = last_frame_at {
            let since = t.elapsed();
            if since < min_gap {
                std::thread::sleep((min_gap - since).min(Duration::from_millis(100)));
                continue;
            }
        }
        if controls.reset.swap(false, Ordering::SeqCst) {
            if engine.has_state() {
                log::info!("fusion state reset on command");
                engine.reset_state();
            } else {
                log::info!("reset ignored: the model has no fusion state");
            }
        }
        let c = match mailbox.take(Duration::from_millis(100)) {
            Take::Value(c) => c,
            Take::Timeout => continue,
            Take::Closed => break,
        };
        last_frame_at = Some(Instant::now());
        let frame = c.frame;
        // convert
        let t = Instant::now();
        if let Err(e) = frame.to_rgb8(&mut rgb) {
            log::warn!("frame {}: conversion failed: {e}", frame.seq);
            sum.frame_errors += 1;
            continue;
        }
        lat.record(Stage::Convert, t.elapsed());
        let (rec, tm) =
            match engine.infer_rgb8(&rgb, frame.width as usize, frame.height as usize, c.handed) {
                Ok(x) => x,
                Err(e) => {
                    log::warn!("frame {}: {e}", frame.seq);
                    sum.frame_errors += 1;
                    continue;
                }
            };
        sum.inferred += 1;
        lat.record(Stage::Preprocess, tm.preprocess);
        lat.record(Stage::Inference, tm.inference);
        lat.record(Stage::Decode, tm.decode);
        let ts_us = frame
            .capture_ts
            .saturating_duration_since(start)
            .as_micros()
            .min(u64::MAX as u128) as u64;
        let t = Instant::now();
        let bytes = encoder.frame(&rec, frame.seq as u32, ts_us);
        lat.record(Stage::Encode, t.elapsed());
        match bytes {
            Ok(b) => {
                if let Some(l) = link {
                    let t = Instant::now();
                    if let Err(e) = l.offer(b) {
                        log::warn!("frame {}: not sent: {e}", frame.seq);
                    }
                    lat.record(Stage::Send, t.elapsed());
                    if opts.pace_to_link {
                        l.flush(Duration::from_secs(2));
                    }
                }
            }
            Err(e) => {
                log::warn!("frame {}: not encoded: {e}", frame.seq);
                sum.frame_errors += 1;
            }
        }
        lat.record(
            Stage::FrameToWire,
            Instant::now().saturating_duration_since(frame.capture_ts),
        );
        if let Some(dir) = &opts.save_dir {
            if sum.inferred % u64::from(opts.save_every.max(1)) == 0 {
                match save_ply(dir, frame.seq, &rec) {
                    Ok(path) if opts.save_keep > 0 => {
                        // a name reused (a new run counts from 0 again) is one file
                        saved.retain(|p| *p != path);
                        saved.push_back(path);
                        while opts.save_keep > 0 && saved.len() > opts.save_keep {
                            if let Some(old) = saved.pop_front() {
                                if let Err(e) = std::fs::remove_file(&old) {
                                    log::warn!("cannot delete {}: {e}", old.display());
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // the first failure and then every 100th, so a full disk is
                        // visible without flooding the log; all are counted
                        if sum.save_errors % 100 == 0 {
                            log::warn!("frame {}: not saved: {e:#}", frame.seq);
                        }
                        sum.save_errors += 1;
                    }
                }
            }
        }
        sink(&frame, &rec);
    }
    controls.stop.store(true, Ordering::SeqCst);
    mailbox.close();
    // drain so the capture thread is not blocked on anything and exits
    while let Take::Value(_) = mailbox.take(Duration::ZERO) {}
    if let Some(h) = capture {
        sum.source_failure = match h.join() {
            Ok(failure) => failure,
            Err(_) => Some("the capture thread panicked".into()),
        };
    } else {
        sum.source_failure = Some("the capture thread could not start".into());
    }
    if let Some(l) = link {
        l.flush(Duration::from_secs(1));
    }
    update(&mut sum, engine);
    sum.elapsed = start.elapsed();
    sum.latencies = Some(merge_capture(lat, &capture_lat));
    sum
}

fn merge_capture(mut lat: Latencies, cap: &std::sync::Mutex<crate::stats::Window>) -> Latencies {
    if let Ok(w) = cap.lock() {
        lat.set_window(Stage::Capture, w.clone());
    }
    lat
}

fn stats_message(
    device_id: u32,
    start: Instant,
    sum: &Summary,
    lat: &Latencies,
    cap: &std::sync::Mutex<crate::stats::Window>,
) -> Stats {
    let mut sl = lat.stage_latency();
    if let Ok(w) = cap.lock() {
        sl.capture = w.percentiles();
    }
    let el = start.elapsed().as_secs_f64();
    let c32 = |x: u64| x.min(u32::MAX as u64) as u32;
    Stats {
        device_id,
        uptime_ms: start.elapsed().as_millis().min(u64::MAX as u128) as u64,
        fps_x100: if el > 0.0 {
            (sum.inferred as f64 / el * 100.0).min(u32::MAX as f64) as u32
        } else {
            0
        },
        counters: Counters {
            captured: c32(sum.captured),
            inferred: c32(sum.inferred),
            sent: c32(sum.sent),
        },
        drops: Drops {
            stale_frames: c32(sum.stale_frames),
            link_busy: c32(sum.link_busy),
            send_errors: c32(sum.send_errors),
            camera_errors: c32(sum.camera_errors),
        },
        latency: sl,
    }
}

fn capture_loop(
    mut source: Box<dyn FrameSource>,
    mailbox: &Mailbox<Captured>,
    captured: &AtomicU64,
    camera_errors: &AtomicU64,
    lat: &std::sync::Mutex<crate::stats::Window>,
    stop: &AtomicBool,
    pace: bool,
) -> Option<String> {
    log::info!("capture: {}", source.describe());
    let mut consecutive_errors = 0u32;
    while !stop.load(Ordering::SeqCst) {
        if pace {
            // file sources: hand over the next frame only once the previous one was taken
            while mailbox.is_full() && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        match source.next_frame() {
            Ok(frame) => {
                consecutive_errors = 0;
                captured.fetch_add(1, Ordering::Relaxed);
                let handed = Instant::now();
                if let Ok(mut w) = lat.lock() {
                    w.record(handed.saturating_duration_since(frame.capture_ts));
                }
                if let Some(old) = mailbox.put(Captured { frame, handed }) {
                    log::debug!("stale frame {} dropped", old.frame.seq);
                }
            }
            Err(e) => match e.kind() {
                ErrorKind::EndOfStream => {
                    log::info!("capture: {e}");
                    break;
                }
                ErrorKind::BadFrame | ErrorKind::Transient => {
                    camera_errors.fetch_add(1, Ordering::Relaxed);
                    consecutive_errors += 1;
                    log::warn!("capture: {e}");
                    std::thread::sleep(Duration::from_millis(
                        (10u64 << consecutive_errors.min(6)).min(500),
                    ));
                }
                ErrorKind::Fatal => {
                    camera_errors.fetch_add(1, Ordering::Relaxed);
                    log::error!("capture stopped: {e}");
                    return Some(e.to_string());
                }
            },
        }
    }
    None
}

/// The `frame_*.ply` files an earlier run left in `dir`, oldest first (modification time,
/// then name); removes the temporary files of interrupted saves.
fn earlier_saves(dir: &std::path::Path) -> std::collections::VecDeque<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Default::default();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("frame_") {
            continue;
        }
        if name.ends_with(".ply.tmp") {
            let _ = std::fs::remove_file(e.path());
        } else if name.ends_with(".ply") {
            let t = e.metadata().and_then(|m| m.modified()).ok();
            found.push((t, e.path()));
        }
    }
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// Writes `rec` as `<dir>/frame_<seq>.ply` through a temporary name (a full disk leaves no
/// partial file) and returns the path.
fn save_ply(dir: &std::path::Path, seq: u64, rec: &Reconstruction) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("frame_{seq:06}.ply"));
    let data = match &rec.mesh {
        Some(m) if !m.faces.is_empty() => shapecast_geom::ply::PlyData {
            vertices: m.vertices.clone(),
            faces: m.faces.clone(),
            labels: m.labels.clone(),
            confidence: None,
        },
        _ => {
            let c = rec.clouds.first().cloned().unwrap_or_default();
            shapecast_geom::ply::PlyData {
                vertices: c.points,
                faces: Vec::new(),
                labels: c.labels,
                confidence: c.confidence,
            }
        }
    };
    shapecast_geom::atomic::write_via_temp(&path, |tmp| {
        shapecast_geom::ply::save_ply(tmp, &data)
            .with_context(|| format!("writing {}", tmp.display()))
    })
    .with_context(|| format!("saving {}", path.display()))?;
    Ok(path)
}
