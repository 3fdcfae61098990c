//! ONNX graph writing, shapecast metadata and int8 quantization for tract.
pub use tract_onnx::pb;
