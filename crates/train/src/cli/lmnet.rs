//! `shapecast-train lmnet ...`: thin command over [`shapecast_train::lmnet`].

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;

use shapecast_train::backend::NdArrayCpu;
use shapecast_train::eval::{point_metrics, PointMetrics};
use shapecast_train::inference::TractRunner;
use shapecast_train::lmnet::{
    self, eval_lmnet, export_lmnet, files, load_run, train_ae, train_image, LmnetConfig,
};
use shapecast_train::with_autodiff_backend;

use super::quant::{quantize_gated, synth_picture_sets, FscoreGateArgs, GateScore, QuantArgs};
use super::{
    export_probes, load_eval_split, load_train_val, print_exported, print_stage, read_json,
    write_report, RunEvalArgs, RunExportArgs, TrainRunArgs,
};

/// Arguments of `shapecast-train lmnet`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Train the point autoencoder, then the probabilistic image encoder against it
    /// (`--stage ae|image|all`); with --export, write OUT/model.onnx checked against tract.
    Train {
        /// Preset (test, cpu-small).
        #[arg(long, default_value = "cpu-small")]
        preset: String,
        #[command(flatten)]
        run: TrainRunArgs,
        /// ae, image (needs a trained autoencoder in --out) or all.
        #[arg(long, default_value = "all")]
        stage: String,
        /// Override the autoencoder steps.
        #[arg(long)]
        ae_steps: Option<usize>,
        /// Override the image-encoder steps.
        #[arg(long)]
        image_steps: Option<usize>,
        /// Continue from the checkpoints in --out (its config.json; the steps may grow).
        /// The image stage restarts when the autoencoder trained further.
        #[arg(long)]
        resume: bool,
        /// Export OUT/model.onnx after training.
        #[arg(long)]
        export: bool,
    },
    /// Export a trained run (tract must reproduce burn within 1e-4).
    Export(RunExportArgs),
    /// Evaluate an export on a split: mean hypothesis, best of K, diversity (JSON).
    Eval(RunEvalArgs),
    /// Quantize an export to int8 (shapecast-onnx, tract form), calibrated on train-split
    /// pictures; fails (no file) when on the validation split the mean hypothesis's
    /// F-score@1% drops by more than --max-drop points or its Chamfer-L2 rises by more than
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
            stage,
            ae_steps,
            image_steps,
            resume,
            export,
        } => {
            let mut cfg: LmnetConfig = run.train_config(resume, || {
                LmnetConfig::preset(&preset).context("choosing the preset")
            })?;
            if let Some(s) = ae_steps {
                cfg.ae_steps = s;
            }
            if let Some(s) = image_steps {
                cfg.image_steps = s;
            }
            cfg.validate().context("checking the configuration")?;
            let dev = run.device()?;
            let out = run.out;
            let t = Instant::now();
            let (train, val) = load_train_val(&cfg.data, cfg.encoder.image)?;
            let (do_ae, do_image) = match stage.as_str() {
                "all" => (true, true),
                "ae" => (true, false),
                "image" => (false, true),
                other => anyhow::bail!("--stage must be ae, image or all, not `{other}`"),
            };
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            with_autodiff_backend!(dev, |d: B| {
                type I = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;
                let mut ae_trained = false;
                let ae = if do_ae {
                    let (ae, s) = train_ae::<B>(&cfg, &train, &val, &out, resume, &d)
                        .context("training the autoencoder")?;
                    ae_trained = s.steps > s.resumed_from;
                    print_stage("autoencoder", "train Chamfer", "val reconstruction", &s);
                    ae
                } else {
                    use burn::module::Module;
                    lmnet::PointAe::<I>::new(&cfg, &d)
                        .load_file(
                            out.join(files::AE),
                            &burn::record::NamedMpkFileRecorder::<
                                burn::record::FullPrecisionSettings,
                            >::new(),
                            &d,
                        )
                        .context("loading the trained autoencoder (run --stage ae first)")?
                };
                let std: Vec<f32> = read_json(&out.join(files::LATENT_STD))?;
                if do_image {
                    if resume && ae_trained {
                        log::info!(
                            "the autoencoder trained further: the image stage starts afresh"
                        );
                    }
                    let (_, s) = train_image::<B>(
                        &cfg,
                        &ae,
                        &std,
                        &train,
                        &val,
                        &out,
                        resume && !ae_trained,
                        &d,
                    )
                    .context("training the image encoder")?;
                    print_stage("image encoder", "latent L1", "val mean-hypothesis", &s);
                }
            });
            println!("total {:.1} s", t.elapsed().as_secs_f64());
            if export && do_image {
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
            let cfg: LmnetConfig = read_json(&q.config_path()?)?;
            cfg.validate().context("checking the configuration")?;
            let (inputs, note, vset) =
                synth_picture_sets(&cfg.data, cfg.encoder.image, cfg.mean, cfg.std, &q)?;
            let gate = gate.gate("mean-hypothesis F-score@1%");
            quantize_gated(
                &q.model,
                &q.out,
                &inputs,
                note,
                q.min_reduction,
                gate,
                |m| {
                    let r = mean_hypothesis_metrics(m, &cfg, &vset)?;
                    Ok(GateScore {
                    scores: vec![("F@1%".into(), r.fscore_1pct)],
                    error: Some(r.chamfer_l2),
                    text: format!(
                        "val ({} pictures) mean hypothesis F@1% {:.2}, Chamfer-L2 {:.5}, Chamfer-L1 {:.5}",
                        vset.len(),
                        r.fscore_1pct,
                        r.chamfer_l2,
                        r.chamfer_l1
                    ),
                    metrics: format!(
                        "val_chamfer_l2={:.5},val_fscore@0.01={:.2}",
                        r.chamfer_l2, r.fscore_1pct
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
            let cfg: LmnetConfig = read_json(&run.join(files::CONFIG))?;
            let set = load_eval_split(&cfg.data, cfg.encoder.image, &split, samples)?;
            let rep = eval_lmnet(&model, &cfg, &set).context("evaluating")?;
            println!(
                "{}: {} samples, K={} | mean hypothesis: Chamfer-L2 {:.5}, F@1% {:.2} | best of K: Chamfer-L2 {:.5}, F@1% {:.2} | all hypotheses: Chamfer-L2 {:.5}, F@1% {:.2} | diversity (pairwise Chamfer-L2) {:.5} (ambiguous half {:.5}, clear half {:.5}) | tract {:.2} ms p50",
                rep.model,
                rep.samples,
                rep.hypotheses,
                rep.mean_hypothesis.chamfer_l2,
                rep.mean_hypothesis.fscore_1pct,
                rep.best_of_k.chamfer_l2,
                rep.best_of_k.fscore_1pct,
                rep.all_hypotheses.chamfer_l2,
                rep.all_hypotheses.fscore_1pct,
                rep.diversity_chamfer_l2,
                rep.diversity_ambiguous,
                rep.diversity_clear,
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
    export_lmnet(&net, &cfg, out, &p, 1e-4, metrics.as_deref(), &dev).context("exporting")
}

/// Figures of hypothesis 0 (the mean latent, what the runtime sends first) of an export.
fn mean_hypothesis_metrics(
    model: &Path,
    cfg: &LmnetConfig,
    set: &[shapecast_train::data::Sample],
) -> Result<PointMetrics> {
    let runner = TractRunner::load(model, cfg.encoder.image).context("loading the model")?;
    let mut all = Vec::with_capacity(set.len());
    for s in set {
        let out = runner
            .run(&s.image_chw(cfg.mean, cfg.std))
            .context("running the model")?;
        all.push(point_metrics(&out.hypothesis(0), &s.points));
    }
    Ok(PointMetrics::mean(&all))
}
