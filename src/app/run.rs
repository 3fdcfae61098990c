//! `shapecast run`: the pipeline from the configuration, until the source ends or a
//! SIGINT/SIGTERM; prints the effective configuration first and a final stats line last.

use std::io::BufRead;
use std::sync::atomic::Ordering;

use anyhow::{anyhow, Context};

use super::{exit, ExitCode, Failure, RunArgs};
use crate::config::{Config, Effective};
use crate::encode::{default_send, Encoder};
use crate::engine::{Engine, EngineOptions};
use crate::model::{LoadOptions, Model, Threads};
use crate::pipeline::{self, Controls, PipelineOptions};
use crate::source::{self, Input};

/// Loads the layered configuration.
pub fn load_config(a: &super::ConfigArgs) -> Result<Effective, Failure> {
    Config::load(&a.config_dir, a.board.as_deref(), &a.overrides())
        .with_context(|| {
            format!(
                "loading the configuration from {}{}",
                a.config_dir.display(),
                a.board
                    .as_ref()
                    .map(|b| format!(" (board {b})"))
                    .unwrap_or_default()
            )
        })
        .code(exit::CONFIG)
}

/// Loads the configured model in the form `model.precision` asks for (`auto`: its own).
pub fn load_model(c: &Config) -> Result<Model, Failure> {
    let path = &c.model.path;
    if !path.is_file() {
        return Err(Failure::new(
            exit::MODEL,
            anyhow!(
                "model file {} not found (set model.path, or pass --model PATH)",
                path.display()
            ),
        ));
    }
    // model.precision: `auto` runs the file in its own form (shapecast.precision); a pinned
    // value is checked against it; `f16` runs an f32 file through tract's f16 transform
    let stored = crate::model::read_meta(path)
        .map(|m| m.precision)
        .with_context(|| format!("reading the metadata of {}", path.display()))
        .code(exit::MODEL)?;
    let f16 = c
        .model
        .precision
        .plan(stored)
        .map_err(|e| Failure::new(exit::MODEL, anyhow!("{}: {e}", path.display())))?;
    if f16 && !crate::model::cpu_has_fp16() {
        log::warn!("model.precision = \"f16\" on a CPU without asimdhp: tract emulates f16 (slow)");
    }
    let m = Model::load_with(
        path,
        LoadOptions {
            threads: Threads(c.model.threads as usize),
            f16,
            ..LoadOptions::default()
        },
    )
    .with_context(|| format!("loading model {}", path.display()))
    .code(exit::MODEL)?;
    Ok(m)
}

/// Installs SIGINT/SIGTERM handling (the first signal asks for a clean stop) and SIGUSR1
/// (reset a fusion model's state: `systemctl kill -s USR1 shapecast`; ignored, not fatal,
/// for other models or before the model is loaded).
pub fn install_signals(controls: &Controls) -> anyhow::Result<()> {
    let stop = controls.stop.clone();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            // second signal: the user insists
            std::process::exit(130);
        }
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    #[cfg(unix)]
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, controls.reset.clone())
        .context("installing the SIGUSR1 handler")?;
    Ok(())
}

pub fn run(a: &RunArgs) -> Result<(), Failure> {
    let eff = load_config(&a.config)?;
    println!("{eff}");
    let c = &eff.config;
    let controls = Controls::default();
    install_signals(&controls).code(exit::FAILURE)?;
    if matches!(c.source.kind, crate::config::SourceKind::Replay) {
        return super::replay::replay_config(c, &c.source.path, 10.0, &controls);
    }
    let model = load_model(c)?;
    log::info!(
        "model {} ({} head, id {}, input {}x{})",
        c.model.path.display(),
        model.meta.head,
        model.meta.model_id,
        model.meta.input.width,
        model.meta.input.height
    );
    let input = source::open(c, Some(controls.stop.clone()))
        .context("opening the frame source")
        .code(exit::SOURCE)?;
    let Input::Frames(src) = input else {
        return Err(Failure::new(
            exit::CONFIG,
            anyhow!("source.kind = replay: use `shapecast replay`"),
        ));
    };
    let link = if c.output.link {
        Some(super::link::open(&c.link, a.device_id).code(exit::LINK)?)
    } else {
        None
    };
    let bits = c.wire.point_bits;
    let mut encoder = Encoder::new(
        a.device_id,
        bits,
        model.meta.bounds,
        default_send(model.meta.head),
    )
    .context("wire.point_bits")
    .code(exit::CONFIG)?;
    let mut engine = Engine::new(
        model,
        EngineOptions {
            implicit: a.implicit.options(),
            max_points: a.max_points,
            state_timeout: crate::pipeline::duration_secs(a.state_timeout),
        },
    );
    if engine.has_state() {
        // "reset" on stdin resets the fused state (a new object is in view)
        let reset = controls.reset.clone();
        let _ = std::thread::Builder::new()
            .name("shapecast-stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    match line {
                        Ok(l) if l.trim() == "reset" => reset.store(true, Ordering::SeqCst),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            });
        // SIGUSR1 does the same for a service without a terminal (`install_signals`)
        log::info!(
            "fusion model: type `reset` + Enter, or send SIGUSR1, to forget the fused state"
        );
    }
    let opts = PipelineOptions {
        max_fps: c.limits.max_fps,
        stats_interval: crate::pipeline::duration_secs(c.stats.interval_s),
        save_dir: c.output.save_dir.clone(),
        save_every: c.output.save_every,
        save_keep: c.output.save_keep as usize,
        max_frames: a.max_frames,
        max_points: u32::try_from(a.max_points).unwrap_or(u32::MAX),
        pace_to_link: !matches!(c.source.kind, crate::config::SourceKind::Camera),
        ..PipelineOptions::default()
    };
    let summary = pipeline::run(
        src,
        &mut engine,
        &mut encoder,
        link.as_ref(),
        &opts,
        &controls,
        &mut |_, _| {},
    );
    if let Some(l) = link {
        let _ = l.close();
    }
    log::info!("final stats: {}", summary.line());
    println!("final stats: {}", summary.line());
    if let Some(lat) = &summary.latencies {
        print!("{}", crate::stats::Table(lat));
    }
    // A source that stopped on an error is a failure of the run (a supervisor such as
    // systemd's Restart=on-failure must see it), not a clean end.
    if let Some(why) = summary.source_failure {
        return Err(Failure::new(
            super::exit::SOURCE,
            anyhow::anyhow!("the frame source stopped: {why}"),
        ));
    }
    Ok(())
}
