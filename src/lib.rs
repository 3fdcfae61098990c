//! The shapecast edge runtime as a library: the binary in main.rs is a thin CLI over it.

pub mod config;
pub mod source;

pub mod app;
pub mod encode;
pub mod engine;
pub mod heads;
pub mod implicit;
pub mod mailbox;
pub mod meta;
pub mod model;
pub mod pipeline;
pub mod preprocess;
pub mod stats;
