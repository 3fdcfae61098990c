//! Subcommands of the per-method pipelines (one file each; the point pipeline's commands
//! live in main.rs).

pub mod implicit;
pub mod lmnet;
pub mod mesh;
pub mod quant;
pub mod voxels;

use std::path::PathBuf;

// Arguments shared by the `export` subcommands of the run-folder pipelines (lmnet, mesh).
// No doc comment on purpose: each subcommand's own doc comment stays its help text.
#[allow(missing_docs)]
#[derive(clap::Args, Debug)]
pub struct RunExportArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// ONNX file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// `shapecast.metrics` to embed.
    #[arg(long)]
    pub metrics: Option<String>,
}

// Arguments shared by the `eval` subcommands of the run-folder pipelines (lmnet, mesh).
#[allow(missing_docs)]
#[derive(clap::Args, Debug)]
pub struct RunEvalArgs {
    /// Run folder (configuration).
    #[arg(long)]
    pub run: PathBuf,
    /// ONNX model.
    #[arg(long)]
    pub model: PathBuf,
    /// train, val or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Samples (0 = the configuration's `test_samples`, whole split when that is 0).
    #[arg(long, default_value_t = 0)]
    pub samples: usize,
    /// JSON report to write.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Reads a JSON file (a run's config.json, latent_std.json, ...).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Loads the training and validation splits of a run-folder pipeline (lmnet, mesh) and
/// prints how many samples it got and how long that took.
pub fn load_train_val(
    data: &shapecast_train::lmnet::SynthData,
    side: usize,
) -> anyhow::Result<(
    Vec<shapecast_train::data::Sample>,
    Vec<shapecast_train::data::Sample>,
)> {
    use anyhow::Context;
    use shapecast_train::data::Split;
    let t = std::time::Instant::now();
    let train = data
        .load(side, Split::Train, data.train_samples)
        .context("loading the training split")?;
    let val = data
        .load(side, Split::Val, data.val_samples)
        .context("loading the validation split")?;
    println!(
        "data: {} train / {} val samples in {:.1} s",
        train.len(),
        val.len(),
        t.elapsed().as_secs_f64()
    );
    Ok((train, val))
}

/// Loads the split an `eval` subcommand of a run-folder pipeline asks for (`samples` 0 = the
/// configuration's `test_samples`).
pub fn load_eval_split(
    data: &shapecast_train::lmnet::SynthData,
    side: usize,
    split: &str,
    samples: usize,
) -> anyhow::Result<Vec<shapecast_train::data::Sample>> {
    use anyhow::Context;
    let split: shapecast_train::data::Split = split.parse().context("--split")?;
    let n = if samples == 0 {
        data.test_samples
    } else {
        samples
    };
    data.load(side, split, n).context("loading the split")
}

/// Writes an `eval` report as pretty JSON when `out` is given.
pub fn write_report<T: serde::Serialize>(
    out: Option<&std::path::Path>,
    rep: &T,
) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(o) = out {
        let text = serde_json::to_string_pretty(rep).context("encoding the report")?;
        std::fs::write(o, text).with_context(|| format!("writing {}", o.display()))?;
        println!("wrote {}", o.display());
    }
    Ok(())
}

/// Prints the line of a checked export.
pub fn print_exported(path: &std::path::Path, diff: f32) {
    println!(
        "exported {} (tract vs burn max |diff| {diff:e})",
        path.display()
    );
}

/// Four normalised validation pictures to check an export of a run-folder pipeline with.
pub fn export_probes(
    data: &shapecast_train::lmnet::SynthData,
    side: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> anyhow::Result<Vec<Vec<f32>>> {
    use anyhow::Context;
    let val = data
        .load(side, shapecast_train::data::Split::Val, 4)
        .context("loading probe pictures")?;
    Ok(shapecast_train::lmnet::probes(&val, 4, mean, std))
}

/// Prints the figures of a finished stage of a run-folder pipeline (lmnet, mesh): `what`
/// names the stage, `loss` its training loss and `val` its validation figures.
pub fn print_stage(what: &str, loss: &str, val: &str, s: &shapecast_train::lmnet::StageSummary) {
    println!(
        "{what}: {} steps ({} this call) in {:.1} s, {loss} {:.5} -> {:.5}{}",
        s.steps,
        s.steps - s.resumed_from,
        s.seconds,
        s.first_loss,
        s.last_loss,
        s.val
            .as_ref()
            .map(|m| format!(
                ", {val} Chamfer-L2 {:.5}, F@1% {:.2}",
                m.chamfer_l2, m.fscore_1pct
            ))
            .unwrap_or_default()
    );
}

// Arguments shared by the `train` subcommands of every method.
#[allow(missing_docs)]
#[derive(clap::Args, Debug)]
pub struct TrainRunArgs {
    /// A config.json to use instead of the preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run folder (config.json, metrics CSV, loss curve, checkpoints, weights).
    #[arg(long)]
    pub out: PathBuf,
    /// cpu (burn candle), cpu-ndarray, cuda, cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl TrainRunArgs {
    /// The configuration to train: with `resume`, the run's own `config.json` when it
    /// exists; else `--config`; else the `preset`.
    pub fn train_config<C: serde::de::DeserializeOwned>(
        &self,
        resume: bool,
        preset: impl FnOnce() -> anyhow::Result<C>,
    ) -> anyhow::Result<C> {
        let saved = self.out.join("config.json");
        match &self.config {
            _ if resume && saved.exists() => read_json(&saved),
            Some(c) => read_json(c),
            None => preset(),
        }
    }

    /// `--device`, checked to be built in and present.
    pub fn device(&self) -> anyhow::Result<shapecast_train::backend::DeviceKind> {
        use anyhow::Context;
        let dev: shapecast_train::backend::DeviceKind = self.device.parse().context("--device")?;
        dev.available().context("--device")?;
        Ok(dev)
    }
}
