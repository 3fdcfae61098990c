//! `shapecast-train`: makes the models the runtime runs.
//!
//! Subcommands: `train` (a preset, on `--device cpu|cpu-ndarray|cuda`), `export` (ONNX with
//! the model contract's metadata, checked against tract), `quantize` (int8 through
//! shapecast-onnx with an accuracy gate), `eval` (Chamfer, F-score curve, contact sheet),
//! `bench` (training step time), `gen-samples` (pictures + ground truth for the runtime demo).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use clap::{Parser, Subcommand};

use shapecast_train::backend::DeviceKind;
use shapecast_train::config::TrainConfig;
use shapecast_train::data::{Sample, Split};
use shapecast_train::eval::{
    contact_sheet_in, eval_onnx, fscore_plot, picture_dependence, write_reports, EvalReport,
};
use shapecast_train::export::{export_points, ExportInfo};
use shapecast_train::inference::TractRunner;
use shapecast_train::training::{load_model, train_points};
use shapecast_train::{datasets, with_autodiff_backend};

mod cli;
use cli::TrainRunArgs;

#[derive(Parser, Debug)]
#[command(
    name = "shapecast-train",
    version,
    about = "Train, export, quantize and evaluate shapecast models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Train a point model from a preset (test, cpu-small, gpu) or a saved config.json.
    Train {
        /// Preset name.
        #[arg(long, default_value = "cpu-small")]
        preset: String,
        #[command(flatten)]
        run: TrainRunArgs,
        /// Override the number of steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Override the batch size.
        #[arg(long)]
        batch: Option<usize>,
        /// Continue from the checkpoint in --out.
        #[arg(long)]
        resume: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// After training, export OUT/model.onnx (checked against tract).
        #[arg(long)]
        export: bool,
    },
    /// Export a trained run to ONNX (contract metadata; tract must reproduce burn within 1e-4).
    Export {
        /// Run folder written by `train`.
        #[arg(long)]
        run: PathBuf,
        /// ONNX file to write.
        #[arg(long)]
        out: PathBuf,
        /// `shapecast.metrics` value to embed (e.g. from `eval`).
        #[arg(long)]
        metrics: Option<String>,
        /// Model id override.
        #[arg(long)]
        model_id: Option<String>,
    },
    /// Quantize an f32 export to int8; fails when F-score@1% on the validation split drops
    /// by more than --max-drop points.
    Quantize {
        /// f32 model.
        #[arg(long)]
        model: PathBuf,
        /// int8 model to write.
        #[arg(long)]
        out: PathBuf,
        /// Run folder (for the dataset configuration).
        #[arg(long)]
        run: PathBuf,
        /// Calibration pictures (train split).
        #[arg(long, default_value_t = 64)]
        calib: usize,
        /// Validation pictures for the gate.
        #[arg(long, default_value_t = 128)]
        val: usize,
        /// Largest allowed F-score@1% drop, points.
        #[arg(long, default_value_t = 1.0)]
        max_drop: f32,
    },
    /// Evaluate ONNX models on a split: JSON report, F-score curve PNG, contact sheet PNG.
    Eval {
        /// Models to compare (same input size).
        #[arg(long, required = true, num_args = 1..)]
        model: Vec<PathBuf>,
        /// Run folder (for the dataset configuration).
        #[arg(long)]
        run: PathBuf,
        /// train, val or test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Samples to evaluate (0 = the whole split).
        #[arg(long, default_value_t = 256)]
        samples: usize,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Also measure how much the predictions depend on the picture on this many
        /// pictures (best fixed cloud, prediction spread, per class): dependenceN.json.
        #[arg(long, default_value_t = 0)]
        dependence: usize,
    },
    /// Render test-split pictures and their ground truth (PNG + PLY + samples.json) for the
    /// runtime demo.
    GenSamples {
        /// Output folder.
        #[arg(long, default_value = "models/samples")]
        out: PathBuf,
        /// Number of pictures.
        #[arg(long, default_value_t = 10)]
        n: usize,
        /// Picture side in pixels.
        #[arg(long, default_value_t = 64)]
        size: u32,
        /// Dataset seed (default: the run's, or 2026 as the shipped default model).
        #[arg(long)]
        seed: Option<u64>,
        /// Run folder whose dataset (classes, objects, views, seed) the samples come from
        /// (test split); without it, the `cpu-small` preset's dataset (the default model's).
        #[arg(long)]
        run: Option<PathBuf>,
    },
    /// Measure training step time (images/s) on the devices given.
    Bench {
        /// Preset whose network and batch are measured.
        #[arg(long, default_value = "cpu-small")]
        preset: String,
        /// Devices to compare.
        #[arg(long, num_args = 1.., default_values_t = vec!["cpu".to_string(), "cpu-ndarray".to_string()])]
        device: Vec<String>,
        /// Timed steps per device (after 2 warm-up steps).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// A config.json to measure instead of the preset.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Voxel models (3D-R2N2): 32^3 occupancy, single view or recurrent multi-view fusion.
    Voxels(cli::voxels::Args),
    /// Implicit surfaces: DeepSDF (clamped L1) or occupancy network, encoder + decoder.
    Implicit(cli::implicit::Args),
    /// 3D-LMNet: point autoencoder, latent matching, several hypotheses.
    Lmnet(cli::lmnet::Args),
    /// Mesh: template sphere deformation with a Laplacian smoothness loss.
    Mesh(cli::mesh::Args),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shapecast-train: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Voxels(a) => cli::voxels::run(a),
        Cmd::Implicit(a) => cli::implicit::run(a),
        Cmd::Lmnet(a) => cli::lmnet::run(a),
        Cmd::Mesh(a) => cli::mesh::run(a),
        Cmd::Train {
            preset,
            run,
            steps,
            batch,
            resume,
            quiet,
            export,
        } => {
            let mut cfg: TrainConfig = run.train_config(resume, || {
                TrainConfig::preset(&preset).context("choosing the preset")
            })?;
            if let Some(s) = steps {
                cfg.steps = s;
            }
            if let Some(b) = batch {
                cfg.batch = b;
            }
            cfg.validate().context("checking the configuration")?;
            let dev = run.device()?;
            let out = run.out;
            let t = Instant::now();
            let (train, _) = load_points(&cfg, Split::Train, cfg.data.train_samples)
                .context("loading the training split")?;
            let (val, _) = load_points(&cfg, Split::Val, cfg.data.val_samples)
                .context("loading the validation split")?;
            log::info!(
                "data: {} train / {} val samples in {:.1} s",
                train.len(),
                val.len(),
                t.elapsed().as_secs_f64()
            );
            let summary = with_autodiff_backend!(dev, |d: B| {
                train_points::<B>(&cfg, &train, &val, &out, resume, &d, quiet)
                    .context("training")?
            });
            println!(
                "trained {} steps in {:.1} s: train Chamfer {:.5} -> {:.5}, {:.1} images/s{}",
                summary.state.step,
                summary.state.elapsed_s,
                summary.first_loss,
                summary.last_loss,
                summary.images_per_s,
                summary
                    .state
                    .last_val
                    .as_ref()
                    .map(|m| format!(
                        ", val Chamfer-L2 {:.5}, F@1% {:.2}",
                        m.chamfer_l2, m.fscore_1pct
                    ))
                    .unwrap_or_default()
            );
            if export {
                let path = out.join("model.onnx");
                cli::print_exported(&path, export_run(&out, &path, None, None)?);
            }
            Ok(())
        }
        Cmd::Export {
            run,
            out,
            metrics,
            model_id,
        } => {
            cli::print_exported(&out, export_run(&run, &out, metrics, model_id)?);
            Ok(())
        }
        Cmd::Quantize {
            model,
            out,
            run,
            calib,
            val,
            max_drop,
        } => quantize(&model, &out, &run, calib, val, max_drop),
        Cmd::Eval {
            model,
            run,
            split,
            samples,
            out,
            dependence,
        } => {
            let cfg =
                TrainConfig::load(&run.join("config.json")).context("reading the run's config")?;
            let split: Split = split.parse().context("--split")?;
            // ground truth in the object frame; each model is scored in the frame its
            // metadata names (`shapecast.frame`), so object- and camera-frame models compare
            let (object_set, _) =
                datasets::load_split(&cfg, split, samples).context("loading the split")?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let mut reports: Vec<EvalReport> = Vec::new();
            for (i, m) in model.iter().enumerate() {
                let runner = TractRunner::load(m, cfg.model.image).context("loading the model")?;
                let frame = model_frame(m)?;
                let set: Vec<Sample> = if frame == "camera" {
                    object_set
                        .iter()
                        .cloned()
                        .map(Sample::into_camera_frame)
                        .collect()
                } else {
                    object_set.clone()
                };
                println!("{}: frame {frame}", m.display());
                let (rep, kept) = eval_onnx(
                    &runner,
                    &m.display().to_string(),
                    &set,
                    cfg.mean,
                    cfg.std,
                    8,
                )
                .context("evaluating")?;
                println!(
                    "{}: {} samples, Chamfer-L2 {:.5}, Chamfer-L1 {:.5}, F@1% {:.2}, F@2% {:.2}, F@5% {:.2}, tract {:.3} ms p50 / {:.3} ms p99",
                    m.display(),
                    rep.samples,
                    rep.mean.chamfer_l2,
                    rep.mean.chamfer_l1,
                    rep.mean.fscore_1pct,
                    rep.mean.fscore[5],
                    rep.mean.fscore[7],
                    rep.infer_ms_p50,
                    rep.infer_ms_p99
                );
                if let Some(a) = &rep.label_accuracy {
                    println!(
                        "{}: part labels ({} samples): {:.1} % of predicted points and {:.1} % of true points labelled as the nearest point of the other cloud, part mIoU {:.3}",
                        m.display(),
                        a.samples,
                        100.0 * a.predicted,
                        100.0 * a.truth,
                        a.part_miou
                    );
                    let names: Vec<String> = shapecast_onnx::read_metadata(m)
                        .ok()
                        .and_then(|kv| {
                            kv.into_iter()
                                .find(|(k, _)| k == "shapecast.classes")
                                .map(|(_, v)| v.split(',').map(str::to_string).collect())
                        })
                        .unwrap_or_default();
                    let per: Vec<String> = a
                        .part_ious()
                        .iter()
                        .map(|(p, iou, n)| {
                            let name = names.get(usize::from(*p)).cloned().unwrap_or(p.to_string());
                            format!("{name} {iou:.2} ({n})")
                        })
                        .collect();
                    println!(
                        "{}: part IoU over the split (union points): {}",
                        m.display(),
                        per.join(", ")
                    );
                }
                contact_sheet_in(
                    &set[..kept.len()],
                    &kept,
                    128,
                    &out.join(format!("sheet{i}.png")),
                    frame == "camera",
                )
                .context("drawing the contact sheet")?;
                if dependence > 0 {
                    let d = picture_dependence(&runner, &set, cfg.mean, cfg.std, dependence, 32)
                        .context("measuring picture dependence")?;
                    println!(
                        "{}: picture dependence on {} pictures: model Chamfer-L2 {:.5}, best fixed cloud {:.5}, prediction spread {:.5} (ground truth {:.5}), per class {:?}",
                        m.display(),
                        d.pictures,
                        d.model_chamfer_l2,
                        d.best_fixed_chamfer_l2,
                        d.prediction_spread_l2,
                        d.truth_spread_l2,
                        d.per_class
                    );
                    let path = out.join(format!("dependence{i}.json"));
                    let text = serde_json::to_string_pretty(&d).context("dependence json")?;
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                }
                reports.push(rep);
            }
            fscore_plot(&reports, &out.join("fscore.png")).context("plotting")?;
            write_reports(&reports, &out.join("eval.json")).context("writing eval.json")?;
            println!("wrote {}/eval.json, fscore.png, sheet*.png", out.display());
            Ok(())
        }
        Cmd::GenSamples {
            out,
            n,
            size,
            seed,
            run,
        } => {
            let cfg = match &run {
                Some(r) => TrainConfig::load(&r.join("config.json"))
                    .with_context(|| format!("reading {}/config.json", r.display()))?,
                None => TrainConfig::preset("cpu-small").context("cpu-small preset")?,
            };
            if cfg.data.kind != datasets::SYNTHETIC {
                anyhow::bail!(
                    "gen-samples renders synthetic data only; the run's data.kind is `{}`",
                    cfg.data.kind
                );
            }
            let mut sc = datasets::synth_config(&cfg);
            sc.image_size = size;
            sc.n_points = 2048;
            if let Some(s) = seed {
                sc.seed = s;
            }
            let files = shapecast_train::data::write_samples_with(&out, n, sc)
                .context("writing samples")?;
            println!("wrote {} samples into {}", files.len(), out.display());
            Ok(())
        }
        Cmd::Bench {
            preset,
            device,
            steps,
            config,
        } => bench(&preset, config.as_deref(), &device, steps),
    }
}

/// Loads up to `limit` samples of `split` (see [`datasets::load_split`]) with the ground
/// truth in the run's frame (`data.frame`: `object`, or viewer-centred `camera`).
fn load_points(
    cfg: &TrainConfig,
    split: Split,
    limit: usize,
) -> Result<(Vec<Sample>, Vec<String>)> {
    let (set, parts) = datasets::load_split(cfg, split, limit)?;
    let set = if cfg.data.frame == "camera" {
        set.into_iter().map(Sample::into_camera_frame).collect()
    } else {
        set
    };
    Ok((set, parts))
}

/// The `shapecast.frame` an ONNX model declares (`object` when absent).
fn model_frame(model: &Path) -> Result<String> {
    let kv = shapecast_onnx::read_metadata(model)
        .with_context(|| format!("reading the metadata of {}", model.display()))?;
    Ok(kv
        .into_iter()
        .find(|(k, _)| k == "shapecast.frame")
        .map_or_else(|| "object".to_string(), |(_, v)| v))
}

/// Exports a run folder's weights; returns the tract-vs-burn difference.
fn export_run(
    run: &Path,
    out: &Path,
    metrics: Option<String>,
    model_id: Option<String>,
) -> Result<f32> {
    type B = shapecast_train::backend::NdArrayCpu;
    let dev = Default::default();
    let (mut cfg, model) = load_model::<B>(run, &dev).context("loading the trained weights")?;
    if let Some(id) = model_id {
        cfg.model_id = id;
    }
    cfg.validate().context("checking the configuration")?;
    let (probe, parts) = load_points(&cfg, Split::Val, 4).context("loading probe pictures")?;
    let probes: Vec<Vec<f32>> = probe
        .iter()
        .map(|s| s.image_chw(cfg.mean, cfg.std))
        .collect();
    let info = ExportInfo {
        metrics,
        dataset: None,
        classes: parts,
    };
    let n = model.num_params();
    log::info!("exporting {n} parameters");
    export_points(&model, &cfg, &info, out, &probes, 1e-4, &dev).context("exporting")
}

fn quantize(
    model: &Path,
    out: &Path,
    run: &Path,
    calib: usize,
    val: usize,
    max_drop: f32,
) -> Result<()> {
    let cfg = TrainConfig::load(&run.join("config.json")).context("reading the run's config")?;
    let side = cfg.model.image;
    let (cal, _) =
        load_points(&cfg, Split::Train, calib).context("loading calibration pictures")?;
    let inputs = cli::quant::picture_inputs(
        cal.iter().map(|s| s.image_chw(cfg.mean, cfg.std)).collect(),
        side,
    )?;
    let note = format!(
        "{} train-split pictures, {}, min/max",
        cal.len(),
        datasets::point_spec(&cfg, false).describe()
    );
    let (vset, _) = load_points(&cfg, Split::Val, val).context("loading validation pictures")?;
    let gate = cli::quant::Gate {
        name: "F-score@1% (points)",
        max_drop,
        max_error_rise: f32::INFINITY,
    };
    cli::quant::quantize_gated(model, out, &inputs, note, 0, gate, |m| {
        let runner = TractRunner::load(m, side).context("loading the model")?;
        let (r, _) =
            eval_onnx(&runner, "model", &vset, cfg.mean, cfg.std, 0).context("evaluating")?;
        Ok(cli::quant::GateScore {
            scores: vec![("F@1%".into(), r.mean.fscore_1pct)],
            error: None,
            text: format!(
                "val ({} pictures) F@1% {:.2}, Chamfer-L2 {:.5}",
                vset.len(),
                r.mean.fscore_1pct,
                r.mean.chamfer_l2
            ),
            metrics: format!(
                "val_chamfer_l2={:.5},val_fscore@0.01={:.2}",
                r.mean.chamfer_l2, r.mean.fscore_1pct
            ),
        })
    })
}

fn bench(preset: &str, config: Option<&Path>, devices: &[String], steps: usize) -> Result<()> {
    let cfg = match config {
        Some(c) => TrainConfig::load(c).context("reading --config")?,
        None => TrainConfig::preset(preset).context("choosing the preset")?,
    };
    let (train, _) = load_points(&cfg, Split::Train, cfg.batch * 2).context("loading data")?;
    println!(
        "preset {preset}: batch {}, {} parameters",
        cfg.batch,
        cfg.model.param_count()
    );
    for d in devices {
        let dev: DeviceKind = d.parse().context("--device")?;
        dev.available().context("--device")?;
        let ips = with_autodiff_backend!(dev, |device: B| {
            shapecast_train::training::bench_steps::<B>(&cfg, &train, steps, &device)
                .context("bench")?
        });
        println!(
            "{d}: {:.3} s/step, {:.1} images/s",
            cfg.batch as f64 / ips,
            ips
        );
    }
    Ok(())
}
