//! `shapecast-train voxels ...`: thin command over [`shapecast_train::voxels`].

use anyhow::{bail, Result};

/// Arguments of `shapecast-train voxels`.
#[derive(clap::Args, Debug)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> Result<()> {
    bail!("`voxels` is not available in this build")
}
