//! shapecast-train: data, networks, training, export, quantization, evaluation.

pub mod data;
