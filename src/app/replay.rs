//! `shapecast replay REC`: re-sends a recorded serial stream on the configured link.
//! Each recorded COBS frame is checked (CRC) and decoded to its message, which is offered
//! to the link as is; broken frames are counted and skipped.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use shapecast_wire::message::{decode_message, Message};
use shapecast_wire::serial::FrameReader;

use super::{exit, ExitCode, Failure, ReplayArgs};
use crate::config::Config;
use crate::pipeline::Controls;
use crate::source::{Repeat, WireReplay};

/// Largest decoded frame accepted from a recording: what the serial link sends.
const MAX_BODY: usize = shapecast_link::serial::DEFAULT_MAX_FRAME + 64;

/// Whether the `n`-th problem of a kind is logged: the first few, then one in 1000, so a
/// recording of garbage cannot flood the log.
fn worth_logging(n: u64) -> bool {
    n <= 3 || n % 1000 == 0
}

pub fn replay(a: &ReplayArgs) -> Result<(), Failure> {
    let eff = super::run::load_config(&a.config)?;
    println!("{eff}");
    let controls = Controls::default();
    super::run::install_signals(&controls).code(exit::FAILURE)?;
    replay_config(&eff.config, &a.recording, a.rate, &controls)
}

/// Counts of a replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayCounts {
    pub frames: u64,
    pub messages: u64,
    pub bad_frames: u64,
    pub undecodable: u64,
}

/// Decodes the recorded frames and hands each message to `send`.
pub fn replay_frames(
    src: &mut WireReplay,
    rate: f64,
    stop: &std::sync::atomic::AtomicBool,
    mut send: impl FnMut(&[u8], &Message<'_>),
) -> Result<ReplayCounts, crate::source::SourceError> {
    let mut reader: Box<FrameReader<MAX_BODY>> = Box::default();
    let mut n = ReplayCounts::default();
    let gap = if rate > 0.0 {
        crate::pipeline::duration_secs(1.0 / rate)
    } else {
        Duration::ZERO
    };
    let mut next = Instant::now();
    // Messages at the start of the current play: a play that re-sends none means the next
    // ones would not either (a recording of garbage, looped forever).
    let (mut pass, mut messages_at_pass) = (src.pass(), 0);
    while !stop.load(Ordering::SeqCst) {
        let packet = src.next_packet();
        if src.pass() != pass {
            // A new play is starting (not the end of the last one).
            let replaying = !matches!(&packet, Err(e) if e.is_end());
            if replaying && n.messages == messages_at_pass {
                return Err(crate::source::SourceError::Invalid(format!(
                    "recording {}: a whole play gave no decodable message \
                     ({} frames: {} broken, {} not messages)",
                    src.path().display(),
                    n.frames,
                    n.bad_frames,
                    n.undecodable
                )));
            }
            (pass, messages_at_pass) = (src.pass(), n.messages);
        }
        let mut packet = match packet {
            Ok(p) => p,
            Err(e) if e.is_end() => break,
            // A long run of bytes without a frame: go round to the stop check.
            Err(e) if e.kind() == crate::source::ErrorKind::BadFrame => continue,
            Err(e) => return Err(e),
        };
        n.frames += 1;
        packet.push(0);
        reader.feed(&packet, |r| match r {
            Ok(payload) => match decode_message(payload) {
                Ok(m) => {
                    n.messages += 1;
                    send(payload, &m);
                }
                Err(e) => {
                    n.undecodable += 1;
                    if worth_logging(n.undecodable) {
                        log::warn!(
                            "recorded frame {}: not a message: {e} ({} so far)",
                            n.frames,
                            n.undecodable
                        );
                    }
                }
            },
            Err(e) => {
                n.bad_frames += 1;
                if worth_logging(n.bad_frames) {
                    log::warn!("recorded frame {}: {e} ({} so far)", n.frames, n.bad_frames);
                }
            }
        });
        if !gap.is_zero() {
            next += gap;
            let now = Instant::now();
            if next > now {
                // in steps, so that a stop request ends even a very long pause
                while !stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if now >= next {
                        break;
                    }
                    std::thread::sleep((next - now).min(Duration::from_millis(100)));
                }
            } else {
                next = now;
            }
        }
    }
    Ok(n)
}

pub fn replay_config(
    c: &Config,
    path: &Path,
    rate: f64,
    controls: &Controls,
) -> Result<(), Failure> {
    let mut src = WireReplay::open(path, Repeat::from_loops(c.source.loops), 2 * MAX_BODY)
        .with_context(|| format!("opening recording {}", path.display()))
        .code(exit::SOURCE)?;
    let link = super::link::open(&c.link, 1).code(exit::LINK)?;
    log::info!("replaying {} on {}", src.describe(), link.describe());
    let counts = replay_frames(&mut src, rate, &controls.stop, |payload, m| {
        log::debug!(
            "message {:?} frame {:?}",
            std::mem::discriminant(m),
            m.frame_id()
        );
        if let Err(e) = link.offer(payload) {
            log::warn!("not sent: {e}");
        }
        if rate <= 0.0 {
            link.flush(Duration::from_secs(2));
        }
    })
    .context("reading the recording")
    .code(exit::SOURCE)?;
    link.flush(Duration::from_secs(2));
    let lc = link.close();
    println!(
        "replayed {} recorded frames: {} messages re-sent ({} sent by the link, {} dropped), {} broken frames, {} not messages, {} skipped by the reader",
        counts.frames,
        counts.messages,
        lc.sent,
        lc.dropped,
        counts.bad_frames,
        counts.undecodable,
        src.dropped()
    );
    Ok(())
}
