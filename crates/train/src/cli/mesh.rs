//! `shapecast-train mesh ...`: thin command over [`shapecast_train::mesh`].

use anyhow::{bail, Result};

/// Arguments of `shapecast-train mesh`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> Result<()> {
    bail!("`mesh` is not available in this build")
}
