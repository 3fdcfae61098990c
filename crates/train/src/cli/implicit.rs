//! `shapecast-train implicit ...`: thin command over [`shapecast_train::implicit`].

use anyhow::{bail, Result};

/// Arguments of `shapecast-train implicit`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> Result<()> {
    bail!("`implicit` is not available in this build")
}
