//! shapecast-train: data, networks, training, export, quantization, evaluation.
//!
//! Modules follow the burn examples: [`data`] (datasets), [`model`] (networks generic over
//! the backend), [`loss`], [`training`] (the loop: Adam, checkpoints, CSV, curves),
//! [`inference`] (burn and tract forward passes), [`export`] (ONNX with the model
//! contract's metadata), [`eval`] (Chamfer, F-score, pictures), [`backend`] (device
//! selection).

pub mod backend;
pub mod config;
pub mod conv_stack;
pub mod data;
pub mod datasets;
pub mod eval;
pub mod export;
pub mod implicit;
pub mod inference;
pub mod lmnet;
pub mod loss;
pub mod mesh;
pub mod model;
pub mod plot;
pub mod training;
pub mod voxels;

use std::path::{Path, PathBuf};

/// Errors of the trainer library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A configuration value is wrong.
    #[error("bad configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause (in the message, not a separate `source()`, so `{:#}` chains name it once).
        cause: std::io::Error,
    },
    /// A file's contents are malformed.
    #[error("{path}: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The dataset failed.
    #[error("data: {0}")]
    Data(#[from] data::DataError),
    /// burn could not save or load a record.
    #[error("checkpoint {path}: {msg}")]
    Record {
        /// The file.
        path: PathBuf,
        /// What failed.
        msg: String,
    },
    /// ONNX writing, loading or running failed.
    #[error("onnx: {0}")]
    Onnx(String),
    /// A check on results failed (e.g. the int8 accuracy gate).
    #[error("{0}")]
    Check(String),
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            cause: source,
        }
    }
}
