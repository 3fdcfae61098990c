//! `shapecast-train implicit ...`: thin command over [`shapecast_train::implicit`].
//!
//! * `train --kind sdf|occupancy --preset test|cpu --out RUN [--export]`
//! * `export --run RUN --out models/implicit.onnx` (writes `implicit.decoder.onnx` beside)
//! * `eval --run RUN --model models/implicit.onnx [--split test] [--res 64]`
//! * `quantize --model models/implicit.onnx --out models/implicit.int8.onnx --run RUN
//!   [--decoder]` (with --decoder also `implicit.int8.decoder.onnx`)

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;

use shapecast_onnx::mlp::{quantize_decoder, DecoderSample};
use shapecast_train::backend::NdArrayCpu;
use shapecast_train::data::Split;
use shapecast_train::data::BOUNDS;
use shapecast_train::implicit::eval::eval_onnx;
use shapecast_train::implicit::export::{
    decoder_path, export_implicit, ImplicitExportInfo, TractImplicit,
};
use shapecast_train::implicit::train::{load_run, train_implicit, ImplicitSummary};
use shapecast_train::implicit::{load_set, ImplicitConfig, Kind};
use shapecast_train::with_autodiff_backend;

use super::quant::{picture_inputs, quantize_gated, FscoreGateArgs, GateScore, QuantArgs};
use super::TrainRunArgs;

/// Arguments of `shapecast-train implicit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Train a DeepSDF (auto-decoder + image encoder) or occupancy network.
    Train {
        /// sdf (DeepSDF, clamped L1) or occupancy (BCE).
        #[arg(long, default_value = "sdf")]
        kind: String,
        /// Preset: test or cpu.
        #[arg(long, default_value = "cpu")]
        preset: String,
        #[command(flatten)]
        run: TrainRunArgs,
        /// Override stage 1 steps (auto-decoder or occupancy).
        #[arg(long)]
        steps: Option<usize>,
        /// Override stage 2 steps (sdf image encoder).
        #[arg(long)]
        encoder_steps: Option<usize>,
        /// Override the training pictures held in memory (0 = all).
        #[arg(long)]
        train_samples: Option<usize>,
        /// Continue from the checkpoint in --out (its config.json; the steps may grow).
        #[arg(long)]
        resume: bool,
        /// Less logging.
        #[arg(long)]
        quiet: bool,
        /// After training, export RUN/implicit.onnx + RUN/implicit.decoder.onnx.
        #[arg(long)]
        export: bool,
    },
    /// Export a run to NAME.onnx (encoder) + NAME.decoder.onnx, checked against tract.
    Export {
        /// Run folder written by `train`.
        #[arg(long)]
        run: PathBuf,
        /// Encoder file to write; the decoder goes beside it as NAME.decoder.onnx.
        #[arg(long)]
        out: PathBuf,
        /// `shapecast.metrics` value to embed (e.g. from `eval`).
        #[arg(long)]
        metrics: Option<String>,
        /// Model id override.
        #[arg(long)]
        model_id: Option<String>,
        /// Multiply the decoder output by this factor (scale a too-steep SDF below 1).
        #[arg(long)]
        value_scale: Option<f32>,
    },
    /// Quantize the image encoder to int8 (shapecast-onnx, tract form; the decoder stays
    /// f32 and is shared through `shapecast.parts.decoder`, unless --decoder), calibrated on
    /// train-split pictures; fails (no file) when on the validation split the surface
    /// F-score@1% drops by more than --max-drop points or Chamfer-L2 rises by more than
    /// --max-chamfer-rise.
    Quantize {
        #[command(flatten)]
        q: QuantArgs,
        #[command(flatten)]
        gate: FscoreGateArgs,
        /// Lattice cells per axis of the gate's surfaces (0 = the configuration's val_res).
        #[arg(long, default_value_t = 0)]
        res: usize,
        /// Also quantize the decoder (`shapecast_onnx::mlp::quantize_decoder`: int8 between
        /// layers, calibrated on the f32 encoder's latents of the calibration pictures with a
        /// 16^3 lattice over the bounds), written beside --out as NAME.decoder.onnx and named
        /// by its `shapecast.parts.decoder`; the gate scores the int8 pair against the f32
        /// pair.
        #[arg(long)]
        decoder: bool,
    },
    /// Evaluate an export with tract: dense lattice, marching cubes, Chamfer / F-score.
    Eval {
        /// Run folder (dataset configuration).
        #[arg(long)]
        run: PathBuf,
        /// Encoder file (its decoder beside it).
        #[arg(long)]
        model: PathBuf,
        /// train, val or test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Pictures (0 = the whole split).
        #[arg(long, default_value_t = 64)]
        samples: usize,
        /// Lattice cells per axis.
        #[arg(long, default_value_t = 64)]
        res: usize,
        /// Write the report here (JSON).
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Train {
            kind,
            preset,
            run,
            steps,
            encoder_steps,
            train_samples,
            resume,
            quiet,
            export,
        } => {
            let kind: Kind = kind.parse().context("--kind")?;
            let out = run.out.clone();
            let mut cfg: ImplicitConfig = run.train_config(resume, || {
                ImplicitConfig::preset(&preset, kind).context("choosing the preset")
            })?;
            if let Some(s) = steps {
                cfg.steps = s;
            }
            if let Some(s) = encoder_steps {
                cfg.encoder_steps = s;
            }
            if let Some(s) = train_samples {
                cfg.data.train_samples = s;
            }
            cfg.validate().context("checking the configuration")?;
            let dev = run.device()?;
            let t = Instant::now();
            let train = load_set(&cfg, Split::Train, cfg.data.train_samples)
                .context("loading the training split")?;
            let val = load_set(&cfg, Split::Val, cfg.data.val_samples)
                .context("loading the validation split")?;
            log::info!(
                "data: {} train objects / {} pictures, {} val pictures in {:.1} s; {} parameters",
                train.objects.len(),
                train.views.len(),
                val.views.len(),
                t.elapsed().as_secs_f64(),
                cfg.param_count()
            );
            let data_s = t.elapsed().as_secs_f64();
            let summary: ImplicitSummary = with_autodiff_backend!(dev, |d: B| {
                train_implicit::<B>(&cfg, &train, &val, &out, resume, &d, quiet)
                    .context("training")?
            });
            for s in &summary.stages {
                println!(
                    "{}: {} steps in {:.1} s, loss {:.5} -> {:.5}, {:.0} queries/s",
                    s.stage, s.steps, s.seconds, s.first_loss, s.last_loss, s.queries_per_s
                );
            }
            if let Some(m) = &summary.last_val {
                println!(
                    "val ({} pictures, {}^3 lattice): Chamfer-L2 {:.5}, F@1% {:.2}, F@2% {:.2}, empty {}",
                    m.samples, cfg.val_res, m.chamfer_l2, m.fscore_1pct, m.fscore_2pct, m.empty
                );
            }
            println!(
                "total {:.1} s (+ data {data_s:.1} s); run folder {}",
                summary.elapsed_s,
                out.display()
            );
            if export {
                export_run(&out, &out.join("implicit.onnx"), None, None, None)?;
            }
            Ok(())
        }
        Cmd::Export {
            run,
            out,
            metrics,
            model_id,
            value_scale,
        } => export_run(&run, &out, metrics, model_id, value_scale),
        Cmd::Quantize {
            q,
            gate,
            res,
            decoder,
        } => quantize(q, &gate, res, decoder),
        Cmd::Eval {
            run,
            model,
            split,
            samples,
            res,
            json,
        } => {
            let cfg = ImplicitConfig::load(&run.join("config.json"))
                .context("reading the run's config")?;
            let sp: Split = split.parse().context("--split")?;
            let set = load_set(&cfg, sp, samples).context("loading the split")?;
            let t = Instant::now();
            let rep =
                eval_onnx(&model, &cfg, &set, sp.name(), res, samples).context("evaluating")?;
            let m = &rep.mean;
            println!(
                "{} ({} {}, {} pictures of {} objects, {res}^3 lattice): Chamfer-L2 {:.5}, Chamfer-L1 {:.5}, F@1% {:.2}, F@2% {:.2}, F@5% {:.2}, empty {}, {:.0} faces/mesh; tract encoder {:.2} ms, dense decode {:.1} ms p50 ({:.1} s total)",
                model.display(),
                cfg.kind.name(),
                sp.name(),
                m.samples,
                set.objects.len(),
                m.chamfer_l2,
                m.chamfer_l1,
                m.fscore_1pct,
                m.fscore_2pct,
                m.fscore_5pct,
                m.empty,
                rep.mean_faces,
                rep.encoder_ms_p50,
                rep.decode_ms_p50,
                t.elapsed().as_secs_f64()
            );
            if let Some(g) = &rep.gradient {
                println!(
                    "SDF |grad| near the surface (finite differences, {} corners): p50 {:.3}, p99 {:.3}, max {:.3}",
                    g.n, g.p50, g.p99, g.max
                );
            }
            if let Some(j) = json {
                let text = serde_json::to_string_pretty(&rep).context("serialising the report")?;
                std::fs::write(&j, text).with_context(|| format!("writing {}", j.display()))?;
            }
            Ok(())
        }
    }
}

/// Writes the int8 decoder of `encoder`'s f32 decoder to `out`, calibrated on the latents of
/// `pictures` (f32 encoder, tract) with a 16^3 lattice over the bounds.
fn quantize_decoder_file(
    cfg: &ImplicitConfig,
    encoder: &Path,
    pictures: &[Vec<f32>],
    out: &Path,
) -> Result<()> {
    let tr = TractImplicit::load(encoder, cfg.encoder.image, cfg.latent, 4096)
        .context("loading the f32 model")?;
    let n = 16;
    let at = |axis: usize, i: usize| {
        BOUNDS[axis] + (BOUNDS[axis + 3] - BOUNDS[axis]) * i as f32 / (n - 1) as f32
    };
    let lattice: Vec<[f32; 3]> = (0..n * n * n)
        .map(|i| [at(0, i / (n * n)), at(1, i / n % n), at(2, i % n)])
        .collect();
    let mut samples = Vec::with_capacity(pictures.len());
    for p in pictures {
        samples.push(DecoderSample {
            latent: tr.latent(p).context("encoding a calibration picture")?,
            xyz: lattice.clone(),
        });
    }
    let f32_dec = decoder_path(encoder);
    let proto =
        shapecast_onnx::read(&f32_dec).with_context(|| format!("reading {}", f32_dec.display()))?;
    let note = format!(
        "{} train-split latents x {n}^3 lattice, max; {}; cross-layer equalized",
        samples.len(),
        cfg.dataset_note()
    );
    let q = quantize_decoder(&proto, &samples, &note).context("quantizing the decoder")?;
    shapecast_onnx::write(&q, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn quantize(q: QuantArgs, gate: &FscoreGateArgs, res: usize, with_decoder: bool) -> Result<()> {
    let cfg = ImplicitConfig::load(&q.config_path()?).context("reading the configuration")?;
    cfg.validate().context("checking the configuration")?;
    let side = cfg.encoder.image;
    let cal = load_set(&cfg, Split::Train, q.calib).context("loading calibration pictures")?;
    let pictures: Vec<Vec<f32>> = (0..cal.views.len())
        .map(|v| cal.image_chw(v, cfg.mean, cfg.std))
        .collect();
    let int8_decoder = decoder_path(&q.out);
    if with_decoder {
        quantize_decoder_file(&cfg, &q.model, &pictures, &int8_decoder)?;
    }
    let inputs = picture_inputs(pictures, side)?;
    let note = format!(
        "{} train-split pictures, {}, min/max; decoder {}",
        cal.views.len(),
        cfg.dataset_note(),
        if with_decoder { "int8" } else { "f32" }
    );
    let val = load_set(&cfg, Split::Val, q.val).context("loading validation pictures")?;
    let res = if res == 0 { cfg.val_res } else { res };
    let decoder = decoder_path(&q.model);
    // the evaluation loads NAME.decoder.onnx beside the encoder: score copies in a folder
    let scratch = std::env::temp_dir().join(format!("shapecast-quant-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let enc_copy = scratch.join("implicit.onnx");
    let gate = gate.gate("surface F-score@1%");
    let r = quantize_gated(
        &q.model,
        &q.out,
        &inputs,
        note,
        q.min_reduction,
        gate,
        |m| {
            std::fs::copy(m, &enc_copy).with_context(|| format!("copying {}", m.display()))?;
            // the f32 model with its f32 decoder, the int8 encoder with the int8 decoder
            let dec = if with_decoder && m != q.model.as_path() {
                &int8_decoder
            } else {
                &decoder
            };
            std::fs::copy(dec, decoder_path(&enc_copy))
                .with_context(|| format!("copying {}", dec.display()))?;
            let rep = eval_onnx(&enc_copy, &cfg, &val, "val", res, 0).context("evaluating")?;
            let m = &rep.mean;
            Ok(GateScore {
            scores: vec![("F@1%".into(), m.fscore_1pct)],
            error: Some(m.chamfer_l2),
            text: format!(
                "val ({} pictures, {res}^3 lattice) Chamfer-L2 {:.5}, F@1% {:.2}, F@2% {:.2}, empty {}; encoder {:.3} ms p50",
                m.samples, m.chamfer_l2, m.fscore_1pct, m.fscore_2pct, m.empty, rep.encoder_ms_p50
            ),
            metrics: format!(
                "val_chamfer_l2={:.5},val_fscore@0.01={:.2}",
                m.chamfer_l2, m.fscore_1pct
            ),
        })
        },
    );
    std::fs::remove_dir_all(&scratch).ok();
    if with_decoder {
        if r.is_err() {
            std::fs::remove_file(&int8_decoder).ok();
            return r;
        }
        // the int8 encoder names its int8 decoder
        let name = int8_decoder
            .file_name()
            .and_then(|n| n.to_str())
            .context("decoder file name")?
            .to_string();
        let mut enc = shapecast_onnx::read(&q.out).context("reading the int8 encoder")?;
        shapecast_onnx::set_metadata(&mut enc, "shapecast.parts.decoder", &name);
        shapecast_onnx::write(&enc, &q.out).context("writing the int8 encoder")?;
        println!(
            "int8 decoder {} ({} B), named by {}",
            int8_decoder.display(),
            super::quant::file_size(&int8_decoder),
            q.out.display()
        );
    }
    r
}

fn export_run(
    run: &Path,
    out: &Path,
    metrics: Option<String>,
    model_id: Option<String>,
    value_scale: Option<f32>,
) -> Result<()> {
    let dev = Default::default();
    let (mut cfg, enc, dec) =
        load_run::<NdArrayCpu>(run, &dev).context("loading the trained weights")?;
    if let Some(id) = model_id {
        cfg.model_id = id;
    }
    cfg.validate().context("checking the configuration")?;
    let probe = load_set(&cfg, Split::Val, 3).context("loading probe pictures")?;
    let probes: Vec<Vec<f32>> = (0..probe.views.len())
        .map(|v| probe.image_chw(v, cfg.mean, cfg.std))
        .collect();
    log::info!(
        "exporting {} + {} parameters",
        enc.num_params(),
        dec.num_params()
    );
    let info = ImplicitExportInfo {
        metrics,
        value_scale,
    };
    let c =
        export_implicit(&enc, &dec, &cfg, &info, out, &probes, 1e-4, &dev).context("exporting")?;
    println!(
        "exported {} ({} B) + {} ({} B); tract vs burn max |diff|: latent {:e}, value {:e} (32768 queries)",
        out.display(),
        c.encoder_bytes,
        decoder_path(out).display(),
        c.decoder_bytes,
        c.encoder_diff,
        c.decoder_diff
    );
    Ok(())
}
