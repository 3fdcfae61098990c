//! `shapecast-train mesh ...`: thin command over [`shapecast_train::mesh`].

use std::path::Path;

use anyhow::{Context, Result};
use clap::Subcommand;

use shapecast_train::backend::NdArrayCpu;
use shapecast_train::mesh::{eval_mesh, export_mesh, files, load_run, train_mesh, MeshConfig};
use shapecast_train::with_autodiff_backend;

use super::quant::{quantize_gated, synth_picture_sets, FscoreGateArgs, GateScore, QuantArgs};
use super::{
    export_probes, load_eval_split, load_train_val, print_exported, print_stage, read_json,
    write_report, RunEvalArgs, RunExportArgs, TrainRunArgs,
};

/// Arguments of `shapecast-train mesh`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Train the template-deformation network; with --export, write OUT/model.onnx checked
    /// against tract.
    Train {
        /// Preset (test, cpu-small).
        #[arg(long, default_value = "cpu-small")]
        preset: String,
        #[command(flatten)]
        run: TrainRunArgs,
        /// Override the steps.
        #[arg(long)]
        steps: Option<usize>,
        /// Continue from the checkpoint in --out (its config.json; the steps may grow).
        #[arg(long)]
        resume: bool,
        /// Export OUT/model.onnx after training.
        #[arg(long)]
        export: bool,
    },
    /// Export a trained run (tract must reproduce burn within 1e-4).
    Export(RunExportArgs),
    /// Evaluate an export on a split (surface samples and vertices vs ground truth; JSON).
    Eval(RunEvalArgs),
    /// Quantize an export to int8 (shapecast-onnx, tract form), calibrated on train-split
    /// pictures; fails (no file) when on the validation split the surface F-score@1% drops
    /// by more than --max-drop points or the surface Chamfer-L2 rises by more than
    /// --max-chamfer-rise.
    Quantize {
        #[command(flatten)]
        q: QuantArgs,
        #[command(flatten)]
        gate: FscoreGateArgs,
    },
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    match args.cmd {
        Cmd::Train {
            preset,
            run,
            steps,
            resume,
            export,
        } => {
            let mut cfg: MeshConfig = run.train_config(resume, || {
                MeshConfig::preset(&preset).context("choosing the preset")
            })?;
            if let Some(s) = steps {
                cfg.steps = s;
            }
            cfg.validate().context("checking the configuration")?;
            let dev = run.device()?;
            let out = run.out;
            let (train, val) = load_train_val(&cfg.data, cfg.encoder.image)?;
            let s = with_autodiff_backend!(dev, |d: B| {
                train_mesh::<B>(&cfg, &train, &val, &out, resume, &d)
                    .context("training")?
                    .1
            });
            print_stage("mesh", "train Chamfer", "val surface", &s);
            if export {
                let path = out.join("model.onnx");
                print_exported(&path, export_run(&out, &path, None)?);
            }
            Ok(())
        }
        Cmd::Export(RunExportArgs { run, out, metrics }) => {
            print_exported(&out, export_run(&run, &out, metrics)?);
            Ok(())
        }
        Cmd::Quantize { q, gate } => {
            let cfg: MeshConfig = read_json(&q.config_path()?)?;
            cfg.validate().context("checking the configuration")?;
            let (inputs, note, vset) =
                synth_picture_sets(&cfg.data, cfg.encoder.image, cfg.mean, cfg.std, &q)?;
            let gate = gate.gate("surface F-score@1%");
            quantize_gated(
                &q.model,
                &q.out,
                &inputs,
                note,
                q.min_reduction,
                gate,
                |m| {
                    let r = eval_mesh(m, &cfg, &vset).context("evaluating")?;
                    Ok(GateScore {
                    scores: vec![("F@1%".into(), r.surface.fscore_1pct)],
                    error: Some(r.surface.chamfer_l2),
                    text: format!(
                        "val ({} pictures) surface F@1% {:.2}, Chamfer-L2 {:.5}; vertices Chamfer-L2 {:.5}; mean |offset| {:.4}",
                        vset.len(),
                        r.surface.fscore_1pct,
                        r.surface.chamfer_l2,
                        r.vertices.chamfer_l2,
                        r.mean_offset
                    ),
                    metrics: format!(
                        "val_surface_chamfer_l2={:.5},val_surface_fscore@0.01={:.2}",
                        r.surface.chamfer_l2, r.surface.fscore_1pct
                    ),
                })
                },
            )
        }
        Cmd::Eval(RunEvalArgs {
            run,
            model,
            split,
            samples,
            out,
        }) => {
            let cfg: MeshConfig = read_json(&run.join(files::CONFIG))?;
            let set = load_eval_split(&cfg.data, cfg.encoder.image, &split, samples)?;
            let rep = eval_mesh(&model, &cfg, &set).context("evaluating")?;
            println!(
                "{}: {} samples | surface: Chamfer-L2 {:.5}, Chamfer-L1 {:.5}, F@1% {:.2}, F@2% {:.2} | vertices: Chamfer-L2 {:.5}, F@1% {:.2} | undeformed template: Chamfer-L2 {:.5}, F@1% {:.2} | mean |offset| {:.4} | tract {:.2} ms p50",
                rep.model,
                rep.samples,
                rep.surface.chamfer_l2,
                rep.surface.chamfer_l1,
                rep.surface.fscore_1pct,
                rep.surface.fscore.get(5).copied().unwrap_or(0.0),
                rep.vertices.chamfer_l2,
                rep.vertices.fscore_1pct,
                rep.template.chamfer_l2,
                rep.template.fscore_1pct,
                rep.mean_offset,
                rep.infer_ms_p50
            );
            write_report(out.as_deref(), &rep)
        }
    }
}

fn export_run(run: &Path, out: &Path, metrics: Option<String>) -> Result<f32> {
    let dev = Default::default();
    let (cfg, net) = load_run::<NdArrayCpu>(run, &dev).context("loading the trained weights")?;
    let p = export_probes(&cfg.data, cfg.encoder.image, cfg.mean, cfg.std)?;
    export_mesh(&net, &cfg, out, &p, 1e-4, metrics.as_deref(), &dev).context("exporting")
}
