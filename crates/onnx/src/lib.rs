//! ONNX graph writing, shapecast metadata, int8 post-training quantization in the form tract
//! runs fastest, and helpers to run/compare models with tract.
//!
//! * [`GraphBuilder`] writes ONNX graphs (opset [`OPSET`]) with `metadata_props`.
//! * [`quant::calibrate`] / [`quant::quantize`] turn an f32 model into int8 (docs/int8.md).
//! * [`mlp::MlpDecoder`] writes the implicit decoder in its fast f32 form and
//!   [`mlp::quantize_decoder`] in an int8 form that stays int8 between layers.
//! * [`run::TractModel`] loads and runs a model with tract; [`run::compare`] measures the
//!   difference between two models (f32 vs int8) on sample inputs.

pub mod mlp;
pub mod quant;
pub mod run;
pub mod testnet;
pub mod writer;

pub use tract_onnx::pb;
pub use writer::{
    attribute, fix_input_symbols, from_bytes, metadata, read, read_metadata, set_metadata,
    tensor_data, tensor_proto, to_bytes, value_info, write, Attr, Dim, ElemType, GraphBuilder,
    TensorData, BATCH_DIM, IR_VERSION, OPSET,
};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Bytes are not an ONNX `ModelProto`.
    #[error("not an ONNX model: {0}")]
    Decode(String),
    /// A shape or element count does not match.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The model uses something this crate does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// tract failed to load or run the model.
    #[error("tract: {0:#}")]
    Tract(#[from] tract_onnx::prelude::TractError),
}
