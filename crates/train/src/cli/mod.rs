//! Subcommands of the per-method pipelines (one file each; the point pipeline's commands
//! live in main.rs).

pub mod implicit;
pub mod lmnet;
pub mod mesh;
pub mod voxels;
