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

/// `cfg` with the keys of the JSON object `over` replacing those of its `data` section.
pub fn with_data<C: serde::de::DeserializeOwned + serde::Serialize>(
    cfg: C,
    over: serde_json::Value,
) -> anyhow::Result<C> {
    use anyhow::Context;
    let serde_json::Value::Object(over) = over else {
        anyhow::bail!("the data file must hold a JSON object (keys of the `data` section)");
    };
    let mut v = serde_json::to_value(cfg).context("encoding the configuration")?;
    let data = v
        .get_mut("data")
        .and_then(serde_json::Value::as_object_mut)
        .context("the configuration has no `data` section")?;
    // Keys differ between trainers (`train_samples` here, `train_objects` there): a key this
    // trainer does not have would be dropped silently, so it is refused, naming the valid ones.
    let mut known: Vec<String> = data.keys().cloned().collect();
    for k in ["shapenet", "pix3d"] {
        if !known.iter().any(|x| x == k) {
            known.push(k.to_string());
        }
    }
    if let Some(bad) = over.keys().find(|k| !known.contains(k)) {
        known.sort();
        anyhow::bail!(
            "the data file's key `{bad}` is not a key of this trainer's `data` section ({})",
            known.join(", ")
        );
    }
    data.extend(over);
    serde_json::from_value(v).context("the data section with the file's keys")
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
    /// A JSON file whose keys replace those of the configuration's `data` section, e.g.
    /// `{"kind": "shapenet-r2n2", "shapenet": {"rendering_dir": "..."}}` to train a preset on
    /// ShapeNet or Pix3D (docs/datasets.md). Keys the trainer's `data` section lacks are
    /// refused (sample limits differ: `train_samples`, voxels `train_objects`). New runs only.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl TrainRunArgs {
    /// The configuration to train: with `resume`, the run's own `config.json` when it
    /// exists; else `--config`; else the `preset`.
    /// `--data`, when given, then replaces keys of the `data` section (not on a resume, which
    /// keeps the run's own configuration).
    pub fn train_config<C: serde::de::DeserializeOwned + serde::Serialize>(
        &self,
        resume: bool,
        preset: impl FnOnce() -> anyhow::Result<C>,
    ) -> anyhow::Result<C> {
        use anyhow::Context;
        let saved = self.out.join("config.json");
        if resume && saved.exists() {
            if let Some(d) = &self.data {
                anyhow::bail!(
                    "--data {} applies to a new run: a resumed run keeps its config.json",
                    d.display()
                );
            }
            return read_json(&saved);
        }
        let cfg = match &self.config {
            Some(c) => read_json(c)?,
            None => preset()?,
        };
        match &self.data {
            Some(d) => {
                let over: serde_json::Value = read_json(d)?;
                with_data(cfg, over).with_context(|| format!("applying --data {}", d.display()))
            }
            None => Ok(cfg),
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

#[cfg(test)]
mod tests {
    use super::*;
    use shapecast_train::config::TrainConfig;

    #[test]
    fn data_file_replaces_keys_of_the_data_section() {
        let base = TrainConfig::preset("cpu-small").unwrap();
        let over = serde_json::json!({
            "kind": "pix3d",
            "pix3d": {"root": "/data/pix3d", "categories": ["chair"]},
            "train_samples": 500,
        });
        let c: TrainConfig = with_data(base.clone(), over).unwrap();
        assert_eq!(c.data.kind, "pix3d");
        assert_eq!(c.data.train_samples, 500);
        let p = c.data.pix3d.as_ref().unwrap();
        assert_eq!(p.categories, vec!["chair".to_string()]);
        assert!(p.use_mask);
        // the rest is the preset's
        assert_eq!(c.data.gt_points, base.data.gt_points);
        assert_eq!((c.model, c.steps), (base.model.clone(), base.steps));
        // a key of another trainer is refused by name, not dropped
        let e = with_data(base.clone(), serde_json::json!({"train_objects": 5})).unwrap_err();
        assert!(
            e.to_string().contains("`train_objects`") && e.to_string().contains("train_samples"),
            "{e}"
        );
        // wrong types and non-objects are errors
        let bad = serde_json::json!({"train_samples": "many"});
        assert!(with_data(base.clone(), bad).is_err());
        assert!(with_data(base, serde_json::json!([1])).is_err());
    }
}
