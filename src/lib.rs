//! The shapecast edge runtime as a library: the binary in main.rs is a thin CLI over it.

pub mod config;
pub mod source;
