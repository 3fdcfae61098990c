//! `shapecast-train voxels ...`: thin command over [`shapecast_train::voxels`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use shapecast_train::backend::{CandleCpu, NdArrayCpu};
use shapecast_train::data::Split;
use shapecast_train::voxels::data::{load_objects, VoxelObject};
use shapecast_train::voxels::export::{
    evaluate_tract, export_voxels, TractVoxels, VoxelExportInfo,
};
use shapecast_train::voxels::train::{
    class_mean_iou, evaluate, files, load_voxel_model, mean_shape_iou, train_voxels, view_counts,
    ViewIou,
};
use shapecast_train::voxels::VoxelTrainConfig;
use shapecast_train::with_autodiff_backend;

use super::quant::{quantize_gated, Gate, GateScore, QuantArgs};
use super::TrainRunArgs;
use shapecast_onnx::run::F32Tensor;

/// Arguments of `shapecast-train voxels`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Trains a voxel model (writes config.json, metrics.csv, loss.png, checkpoints).
    Train {
        /// Preset: cpu (3D convolutional GRU fusion), cpu-flat (flat GRU over the latent),
        /// cpu-single (no fusion), test / test-flat (CI sizes).
        #[arg(long, default_value = "cpu")]
        preset: String,
        #[command(flatten)]
        run: TrainRunArgs,
        /// Override the number of steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Override the objects per step.
        #[arg(long)]
        batch: Option<usize>,
        /// Continue from the run folder's checkpoint (its config.json).
        #[arg(long)]
        resume: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Export OUT/voxels.onnx at the end.
        #[arg(long)]
        export: bool,
    },
    /// Exports a run to ONNX (contract metadata), checks tract against burn, and records
    /// the test IoU per number of views in `shapecast.metrics`.
    Export {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// ONNX file to write.
        #[arg(long)]
        out: PathBuf,
        /// Test objects for the metrics (0 = none).
        #[arg(long, default_value_t = 64)]
        objects: usize,
        /// Largest tolerated |tract - burn|.
        #[arg(long, default_value_t = 1e-4)]
        tol: f32,
        /// Override `shapecast.model_id`.
        #[arg(long)]
        model_id: Option<String>,
    },
    /// Mean IoU per number of fused views, with burn (the run) or tract (--onnx).
    Eval {
        /// Run folder (its config names the data).
        #[arg(long)]
        run: PathBuf,
        /// Evaluate this export with tract instead of the burn weights.
        #[arg(long)]
        onnx: Option<PathBuf>,
        /// Split: train, val, test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Objects (0 = all of the split).
        #[arg(long, default_value_t = 0)]
        objects: usize,
        /// Also print the mean-shape baseline (train cells occupied in > 30/50 % of objects).
        #[arg(long)]
        baseline: bool,
    },
    /// Quantize an export to int8 (shapecast-onnx, tract form), calibrated on the views of
    /// train-split objects (fusion: with the states the f32 model carries along them);
    /// fails (no file) when the validation IoU after any number of fused views drops by
    /// more than --max-drop.
    Quantize {
        #[command(flatten)]
        q: QuantArgs,
        /// Largest allowed IoU drop (absolute, 0.01 = one IoU point).
        #[arg(long, default_value_t = 0.01)]
        max_drop: f32,
    },
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Train {
            preset,
            run,
            steps,
            batch,
            resume,
            quiet,
            export,
        } => {
            let mut cfg: VoxelTrainConfig = run.train_config(resume, || {
                VoxelTrainConfig::preset(&preset).context("choosing the preset")
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
            let (train, _) = load_objects(&cfg, Split::Train, cfg.data.train_objects)
                .context("loading the training split")?;
            let (val, _) = load_objects(&cfg, Split::Val, cfg.data.val_objects)
                .context("loading the validation split")?;
            log::info!(
                "data: {} train / {} val objects ({} views each) in {:.1} s",
                train.len(),
                val.len(),
                cfg.data.views,
                t.elapsed().as_secs_f64()
            );
            let summary = with_autodiff_backend!(dev, |d: B| {
                train_voxels::<B>(&cfg, &train, &val, &out, resume, &d, quiet)
                    .context("training")?
            });
            println!(
                "trained {} steps in {:.1} s: train BCE {:.5} -> {:.5}, {:.1} images/s, val IoU {}",
                summary.state.step,
                summary.state.elapsed_s,
                summary.first_loss,
                summary.last_loss,
                summary.images_per_s,
                fmt_ious(&summary.state.last_val)
            );
            if export {
                let path = out.join("voxels.onnx");
                export_run(&out, &path, 64, 1e-4, None)?;
            }
            Ok(())
        }
        Cmd::Export {
            run,
            out,
            objects,
            tol,
            model_id,
        } => export_run(&run, &out, objects, tol, model_id),
        Cmd::Quantize { q, max_drop } => quantize(q, max_drop),
        Cmd::Eval {
            run,
            onnx,
            split,
            objects,
            baseline,
        } => {
            let split: Split = split.parse().context("--split")?;
            let cfg = VoxelTrainConfig::load(&run.join(files::CONFIG))
                .context("reading the run's config")?;
            let (objs, _) =
                load_objects(&cfg, split, objects).context("loading the evaluation objects")?;
            let counts = view_counts(&cfg);
            let t = Instant::now();
            let ious = match &onnx {
                Some(p) => {
                    let runner = TractVoxels::load(p).context("loading the export in tract")?;
                    evaluate_tract(&runner, &objs, &counts, cfg.threshold)
                        .context("evaluating with tract")?
                }
                None => {
                    let dev = Default::default();
                    let (cfg, model) = load_voxel_model::<CandleCpu>(&run, &dev)
                        .context("loading the run's weights")?;
                    evaluate(&model, &objs, &counts, &cfg, &dev).context("evaluating")?
                }
            };
            println!(
                "{} {} objects, {}: IoU@{} {} ({:.1} s)",
                split.name(),
                objs.len(),
                if onnx.is_some() { "tract" } else { "burn" },
                cfg.threshold,
                fmt_ious(&ious),
                t.elapsed().as_secs_f64()
            );
            if baseline {
                let (train, _) = load_objects(&cfg, Split::Train, cfg.data.train_objects)
                    .context("loading the training split")?;
                println!(
                    "mean-shape baseline ({} train objects): IoU {:.4} (cells > 30 %), {:.4} (> 50 %)",
                    train.len(),
                    mean_shape_iou(&train, &objs, 0.3),
                    mean_shape_iou(&train, &objs, 0.5)
                );
                println!(
                    "class-mean oracle (knows the class): IoU {:.4} (cells > 30 %), {:.4} (> 50 %)",
                    class_mean_iou(&train, &objs, 0.3),
                    class_mean_iou(&train, &objs, 0.5)
                );
            }
            Ok(())
        }
    }
}

fn quantize(q: QuantArgs, max_drop: f32) -> Result<()> {
    let cfg = VoxelTrainConfig::load(&q.config_path()?).context("reading the configuration")?;
    cfg.validate().context("checking the configuration")?;
    let (cal, _) =
        load_objects(&cfg, Split::Train, q.calib).context("loading calibration objects")?;
    // inputs in graph order; a fusion model sees the states it carries along the views
    let proto = shapecast_onnx::read(&q.model).context("reading the f32 model")?;
    let names: Vec<String> = proto
        .graph
        .as_ref()
        .map(|g| g.input.iter().map(|i| i.name.clone()).collect())
        .unwrap_or_default();
    let f32_runner = TractVoxels::load(&q.model).context("loading the f32 model")?;
    let side = cfg.model.image;
    let s = f32_runner.state_size();
    let sshape = f32_runner.state_shape().to_vec();
    let mut inputs = Vec::new();
    for o in &cal {
        let mut state = vec![0.0f32; s];
        for v in &o.views {
            let mut row = Vec::with_capacity(names.len());
            for n in &names {
                row.push(
                    match n.as_str() {
                        "image" => F32Tensor::new(vec![1, 3, side, side], v.clone()),
                        "state_in" => F32Tensor::new(sshape.clone(), state.clone()),
                        other => anyhow::bail!("unexpected model input `{other}`"),
                    }
                    .context("building calibration inputs")?,
                );
            }
            inputs.push(row);
            if s > 0 {
                state = f32_runner
                    .step(v, &state)
                    .context("running the f32 model")?
                    .1;
            }
        }
    }
    let note = format!(
        "{} views of {} train-split objects (states carried in view order), {}, min/max",
        inputs.len(),
        cal.len(),
        shapecast_train::voxels::data::describe(&cfg)
    );
    let (val, _) = load_objects(&cfg, Split::Val, q.val).context("loading validation objects")?;
    let counts = view_counts(&cfg);
    let gate = Gate {
        name: "IoU",
        max_drop,
        max_error_rise: f32::INFINITY,
    };
    quantize_gated(
        &q.model,
        &q.out,
        &inputs,
        note,
        q.min_reduction,
        gate,
        |m| {
            let runner = TractVoxels::load(m).context("loading the model")?;
            let ious =
                evaluate_tract(&runner, &val, &counts, cfg.threshold).context("evaluating")?;
            Ok(GateScore {
                scores: ious
                    .iter()
                    .map(|v| (format!("IoU after {} views", v.views), v.iou))
                    .collect(),
                error: None,
                text: format!("val ({} objects) IoU {}", val.len(), fmt_ious(&ious)),
                metrics: ious
                    .iter()
                    .map(|m| format!("val_iou@{}view={:.4}", m.views, m.iou))
                    .collect::<Vec<_>>()
                    .join(","),
            })
        },
    )
}

fn fmt_ious(v: &[ViewIou]) -> String {
    v.iter()
        .map(|m| format!("{}v={:.4}", m.views, m.iou))
        .collect::<Vec<_>>()
        .join(" ")
}

fn export_run(
    run: &Path,
    out: &Path,
    objects: usize,
    tol: f32,
    model_id: Option<String>,
) -> Result<()> {
    let dev = Default::default();
    let (mut cfg, model) =
        load_voxel_model::<NdArrayCpu>(run, &dev).context("loading the run's weights")?;
    if let Some(id) = model_id {
        cfg.model_id = id;
    }
    cfg.validate().context("checking the configuration")?;
    let (test, _) = load_objects(&cfg, Split::Test, objects.max(2))
        .context("loading test objects for the check")?;
    let probes: Vec<Vec<Vec<f32>>> = test
        .iter()
        .take(2)
        .map(|o: &VoxelObject| o.views.iter().take(cfg.seq_views.max(2)).cloned().collect())
        .collect();
    let diff = export_voxels(
        &model,
        &cfg,
        &VoxelExportInfo::default(),
        out,
        &probes,
        tol,
        &dev,
    )
    .context("exporting")?;
    println!(
        "exported {} (tract vs burn max |diff| {diff:e} over {} sequences)",
        out.display(),
        probes.len()
    );
    if objects > 0 {
        let runner = TractVoxels::load(out).context("loading the export in tract")?;
        let ious = evaluate_tract(&runner, &test, &view_counts(&cfg), cfg.threshold)
            .context("evaluating the export")?;
        let metrics = ious
            .iter()
            .map(|m| format!("iou@{}view={:.4}", m.views, m.iou))
            .collect::<Vec<_>>()
            .join(",");
        let mut proto = shapecast_onnx::read(out).context("re-reading the export")?;
        shapecast_onnx::set_metadata(&mut proto, "shapecast.metrics", &metrics);
        shapecast_onnx::write(&proto, out).context("writing the metrics")?;
        println!(
            "test {} objects (tract f32): IoU {}",
            test.len(),
            fmt_ious(&ious)
        );
    }
    Ok(())
}
