//! `shapecast-train lmnet ...`: thin command over [`shapecast_train::lmnet`].

use anyhow::{bail, Result};

/// Arguments of `shapecast-train lmnet`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> Result<()> {
    bail!("`lmnet` is not available in this build")
}
