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
