//! A small ONNX graph writer on top of the prost types that `tract-onnx` re-exports.
//!
//! ```no_run
//! use shapecast_onnx::{Dim, GraphBuilder};
//! let mut g = GraphBuilder::new("tiny");
//! let x = g.input("image", &[Dim::batch(), Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)]);
//! let w = g.init_f32("w", &[4, 3, 3, 3], &[0.0; 108]).unwrap();
//! let b = g.init_f32("b", &[4], &[0.0; 4]).unwrap();
//! let y = g.conv(&x, &w, Some(&b), [1, 1], [1, 1, 1, 1], 1);
//! let y = g.relu(&y);
//! g.output(&y, "features").unwrap();
//! g.metadata("shapecast.contract", "1");
//! g.write("tiny.onnx").unwrap();
//! ```

use std::path::Path;

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;

use crate::OnnxError;

/// ONNX operator set every graph written here imports (default domain).
///
/// 17 is the newest opset whose `ReduceMean` still takes `axes` as an attribute; it has
/// `Relu` on int8 (since 14) and per-axis `QuantizeLinear`/`DequantizeLinear` (since 13).
pub const OPSET: i64 = 17;
/// IR version matching [`OPSET`] (ONNX 1.12).
pub const IR_VERSION: i64 = 8;
/// Name of the dynamic batch dimension written by [`Dim::batch`].
pub const BATCH_DIM: &str = "batch";

/// One dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size (dynamic).
    Symbol(String),
}

impl Dim {
    /// The dynamic batch dimension (`batch`).
    pub fn batch() -> Self {
        Dim::Symbol(BATCH_DIM.to_string())
    }
}

impl From<usize> for Dim {
    fn from(v: usize) -> Self {
        Dim::Fixed(v)
    }
}

/// Element types the writer emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    I64,
    I32,
    I8,
    U8,
}

impl ElemType {
    pub(crate) fn onnx(self) -> i32 {
        (match self {
            ElemType::F32 => DataType::Float,
            ElemType::I64 => DataType::Int64,
            ElemType::I32 => DataType::Int32,
            ElemType::I8 => DataType::Int8,
            ElemType::U8 => DataType::Uint8,
        }) as i32
    }
}

/// Typed tensor contents for an initializer.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
        }
    }

    /// True when there is no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn elem_type(&self) -> ElemType {
        match self {
            TensorData::F32(_) => ElemType::F32,
            TensorData::I64(_) => ElemType::I64,
            TensorData::I32(_) => ElemType::I32,
            TensorData::I8(_) => ElemType::I8,
            TensorData::U8(_) => ElemType::U8,
        }
    }

    fn raw(&self) -> Vec<u8> {
        match self {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I8(v) => v.iter().map(|x| *x as u8).collect(),
            TensorData::U8(v) => v.clone(),
        }
    }
}

/// Builds a `TensorProto` (little-endian `raw_data`).
pub fn tensor_proto(
    name: &str,
    dims: &[usize],
    data: &TensorData,
) -> Result<pb::TensorProto, OnnxError> {
    let volume: usize = dims.iter().product();
    if volume != data.len() {
        return Err(OnnxError::Shape(format!(
            "initializer {name}: shape {dims:?} holds {volume} values, got {}",
            data.len()
        )));
    }
    Ok(pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: data.elem_type().onnx(),
        raw_data: data.raw(),
        ..Default::default()
    })
}

/// Decodes an initializer (raw_data or the typed repeated fields) into [`TensorData`].
pub fn tensor_data(t: &pb::TensorProto) -> Result<TensorData, OnnxError> {
    let n: usize = t.dims.iter().map(|d| (*d).max(0) as usize).product();
    let bad = |what: &str| OnnxError::Unsupported(format!("initializer {}: {what}", t.name));
    let dt = DataType::try_from(t.data_type).map_err(|_| bad("unknown data type"))?;
    let raw = &t.raw_data;
    let data = match dt {
        DataType::Float if !raw.is_empty() => TensorData::F32(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DataType::Float => TensorData::F32(t.float_data.clone()),
        DataType::Int64 if !raw.is_empty() => TensorData::I64(
            raw.chunks_exact(8)
                .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        DataType::Int64 => TensorData::I64(t.int64_data.clone()),
        DataType::Int32 if !raw.is_empty() => TensorData::I32(
            raw.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DataType::Int32 => TensorData::I32(t.int32_data.clone()),
        DataType::Int8 if !raw.is_empty() => TensorData::I8(raw.iter().map(|b| *b as i8).collect()),
        DataType::Int8 => TensorData::I8(t.int32_data.iter().map(|v| *v as i8).collect()),
        DataType::Uint8 if !raw.is_empty() => TensorData::U8(raw.clone()),
        DataType::Uint8 => TensorData::U8(t.int32_data.iter().map(|v| *v as u8).collect()),
        _ => return Err(bad("unsupported data type")),
    };
    if data.len() != n {
        return Err(bad("element count does not match dims"));
    }
    Ok(data)
}

/// A node attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Str(String),
}

/// Builds an `AttributeProto`.
pub fn attribute(name: &str, value: &Attr) -> pb::AttributeProto {
    let mut a = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.i = *i;
            a.r#type = AttributeType::Int as i32;
        }
        Attr::Float(f) => {
            a.f = *f;
            a.r#type = AttributeType::Float as i32;
        }
        Attr::Ints(v) => {
            a.ints = v.clone();
            a.r#type = AttributeType::Ints as i32;
        }
        Attr::Floats(v) => {
            a.floats = v.clone();
            a.r#type = AttributeType::Floats as i32;
        }
        Attr::Str(s) => {
            a.s = s.as_bytes().to_vec();
            a.r#type = AttributeType::String as i32;
        }
    }
    a
}

/// A `ValueInfoProto` for a tensor; `dims = None` leaves the shape unspecified.
pub fn value_info(name: &str, elem: ElemType, dims: Option<&[Dim]>) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let shape = dims.map(|dims| pb::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                denotation: String::new(),
                value: Some(match d {
                    Dim::Fixed(v) => Value::DimValue(*v as i64),
                    Dim::Symbol(s) => Value::DimParam(s.clone()),
                }),
            })
            .collect(),
    });
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem.onnx(),
                shape,
            })),
        }),
        ..Default::default()
    }
}

/// Incrementally builds an ONNX graph; every tensor is referred to by its name (`String`).
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
    metadata: Vec<(String, String)>,
    counter: usize,
    producer: String,
}

impl GraphBuilder {
    /// A new, empty graph.
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            name: name.to_string(),
            nodes: vec![],
            initializers: vec![],
            inputs: vec![],
            outputs: vec![],
            metadata: vec![],
            counter: 0,
            producer: format!("shapecast-onnx {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Overrides `producer_name` (default `shapecast-onnx VERSION`).
    pub fn producer(&mut self, producer: &str) -> &mut Self {
        self.producer = producer.to_string();
        self
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.counter += 1;
        format!("{hint}_{}", self.counter)
    }

    /// Declares an f32 graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.input_typed(name, ElemType::F32, dims)
    }

    /// Declares a graph input of any element type.
    pub fn input_typed(&mut self, name: &str, elem: ElemType, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, elem, Some(dims)));
        name.to_string()
    }

    /// Adds an initializer; returns its name.
    pub fn init(
        &mut self,
        name: &str,
        dims: &[usize],
        data: TensorData,
    ) -> Result<String, OnnxError> {
        if self.initializers.iter().any(|t| t.name == name) {
            return Err(OnnxError::Shape(format!(
                "initializer {name} defined twice"
            )));
        }
        self.initializers.push(tensor_proto(name, dims, &data)?);
        Ok(name.to_string())
    }

    /// Adds an f32 initializer from a slice (row-major).
    pub fn init_f32(
        &mut self,
        name: &str,
        dims: &[usize],
        data: &[f32],
    ) -> Result<String, OnnxError> {
        self.init(name, dims, TensorData::F32(data.to_vec()))
    }

    /// Adds an i64 initializer (shapes, axes).
    pub fn init_i64(
        &mut self,
        name: &str,
        dims: &[usize],
        data: &[i64],
    ) -> Result<String, OnnxError> {
        self.init(name, dims, TensorData::I64(data.to_vec()))
    }

    fn const_i64(&mut self, hint: &str, data: &[i64]) -> String {
        let name = self.fresh(hint);
        // cannot fail: dims match data length and the name is fresh
        self.initializers.push(
            tensor_proto(&name, &[data.len()], &TensorData::I64(data.to_vec()))
                .expect("shape matches"),
        );
        name
    }

    /// Adds a node with one output named automatically; returns the output name.
    pub fn node(&mut self, op_type: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        let out = self.fresh(&op_type.to_ascii_lowercase());
        self.node_named(op_type, inputs, &[&out], attrs);
        out
    }

    /// Adds a node with explicit output names (several outputs, or a contract name).
    pub fn node_named(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[(&str, Attr)],
    ) {
        let name = self.fresh(op_type);
        self.nodes.push(pb::NodeProto {
            name,
            op_type: op_type.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute: attrs.iter().map(|(n, v)| attribute(n, v)).collect(),
            ..Default::default()
        });
    }

    /// `Conv` (NCHW). `pads` = [top, left, bottom, right].
    pub fn conv(
        &mut self,
        x: &str,
        w: &str,
        b: Option<&str>,
        strides: [i64; 2],
        pads: [i64; 4],
        group: i64,
    ) -> String {
        let mut inputs = vec![x, w];
        if let Some(b) = b {
            inputs.push(b);
        }
        self.node(
            "Conv",
            &inputs,
            &[
                ("strides", Attr::Ints(strides.to_vec())),
                ("pads", Attr::Ints(pads.to_vec())),
                ("group", Attr::Int(group)),
            ],
        )
    }

    /// Convenience: a 2-D convolution from f32 weights `[out, in/group, k, k]` and bias `[out]`,
    /// square kernel, symmetric padding.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        x: &str,
        name: &str,
        weight: &[f32],
        bias: Option<&[f32]>,
        out_ch: usize,
        in_ch: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<String, OnnxError> {
        let w = self.init_f32(
            &format!("{name}.weight"),
            &[out_ch, in_ch, kernel, kernel],
            weight,
        )?;
        let b = match bias {
            Some(b) => Some(self.init_f32(&format!("{name}.bias"), &[out_ch], b)?),
            None => None,
        };
        let p = pad as i64;
        Ok(self.conv(x, &w, b.as_deref(), [stride as i64; 2], [p, p, p, p], 1))
    }

    /// `Gemm`: `y = x · W (+ b)`, `W` stored `[in, out]` when `trans_b` is false (burn's
    /// `Linear` layout) or `[out, in]` when true (PyTorch's).
    pub fn gemm(&mut self, x: &str, w: &str, b: Option<&str>, trans_b: bool) -> String {
        let mut inputs = vec![x, w];
        if let Some(b) = b {
            inputs.push(b);
        }
        self.node("Gemm", &inputs, &[("transB", Attr::Int(trans_b as i64))])
    }

    /// Convenience: a linear layer from f32 weights in burn's `[in, out]` layout.
    pub fn linear(
        &mut self,
        x: &str,
        name: &str,
        weight: &[f32],
        bias: Option<&[f32]>,
        d_in: usize,
        d_out: usize,
    ) -> Result<String, OnnxError> {
        let w = self.init_f32(&format!("{name}.weight"), &[d_in, d_out], weight)?;
        let b = match bias {
            Some(b) => Some(self.init_f32(&format!("{name}.bias"), &[d_out], b)?),
            None => None,
        };
        Ok(self.gemm(x, &w, b.as_deref(), false))
    }

    /// `MatMul` (numpy semantics).
    pub fn matmul(&mut self, a: &str, b: &str) -> String {
        self.node("MatMul", &[a, b], &[])
    }
    /// `Add` (broadcasting).
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.node("Add", &[a, b], &[])
    }
    /// `Sub` (broadcasting).
    pub fn sub(&mut self, a: &str, b: &str) -> String {
        self.node("Sub", &[a, b], &[])
    }
    /// `Mul` (broadcasting).
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.node("Mul", &[a, b], &[])
    }
    /// `Relu`.
    pub fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], &[])
    }
    /// `LeakyRelu`.
    pub fn leaky_relu(&mut self, x: &str, alpha: f32) -> String {
        self.node("LeakyRelu", &[x], &[("alpha", Attr::Float(alpha))])
    }
    /// `Sigmoid`.
    pub fn sigmoid(&mut self, x: &str) -> String {
        self.node("Sigmoid", &[x], &[])
    }
    /// `Tanh`.
    pub fn tanh(&mut self, x: &str) -> String {
        self.node("Tanh", &[x], &[])
    }
    /// `Reshape` to a constant shape (`0` copies, `-1` infers).
    pub fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.const_i64("shape", shape);
        self.node("Reshape", &[x, &s], &[])
    }
    /// `Flatten` (to 2-D at `axis`).
    pub fn flatten(&mut self, x: &str, axis: i64) -> String {
        self.node("Flatten", &[x], &[("axis", Attr::Int(axis))])
    }
    /// `Transpose`.
    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.node("Transpose", &[x], &[("perm", Attr::Ints(perm.to_vec()))])
    }
    /// `GlobalAveragePool` ([B, C, H, W] -> [B, C, 1, 1]).
    pub fn global_average_pool(&mut self, x: &str) -> String {
        self.node("GlobalAveragePool", &[x], &[])
    }
    /// `ReduceMean` over `axes` (attribute form, opset 17).
    pub fn reduce_mean(&mut self, x: &str, axes: &[i64], keepdims: bool) -> String {
        self.node(
            "ReduceMean",
            &[x],
            &[
                ("axes", Attr::Ints(axes.to_vec())),
                ("keepdims", Attr::Int(keepdims as i64)),
            ],
        )
    }
    /// `Concat` along `axis`.
    pub fn concat(&mut self, xs: &[&str], axis: i64) -> String {
        self.node("Concat", xs, &[("axis", Attr::Int(axis))])
    }
    /// `Unsqueeze` (axes as an input, opset >= 13).
    pub fn unsqueeze(&mut self, x: &str, axes: &[i64]) -> String {
        let a = self.const_i64("axes", axes);
        self.node("Unsqueeze", &[x, &a], &[])
    }
    /// `Squeeze` (axes as an input, opset >= 13).
    pub fn squeeze(&mut self, x: &str, axes: &[i64]) -> String {
        let a = self.const_i64("axes", axes);
        self.node("Squeeze", &[x, &a], &[])
    }
    /// `MaxPool` with a square kernel.
    pub fn max_pool(&mut self, x: &str, kernel: i64, stride: i64, pad: i64) -> String {
        self.node(
            "MaxPool",
            &[x],
            &[
                ("kernel_shape", Attr::Ints(vec![kernel, kernel])),
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![pad; 4])),
            ],
        )
    }
    /// `Identity`.
    pub fn identity(&mut self, x: &str) -> String {
        self.node("Identity", &[x], &[])
    }

    /// Declares `tensor` as an f32 graph output called `name` (renaming the producing node's
    /// output, or adding an `Identity` when `tensor` is a graph input or initializer).
    /// The shape is left to inference; use [`GraphBuilder::output_with_dims`] to declare it.
    pub fn output(&mut self, tensor: &str, name: &str) -> Result<String, OnnxError> {
        self.output_impl(tensor, name, None)
    }

    /// Like [`GraphBuilder::output`] with a declared shape.
    pub fn output_with_dims(
        &mut self,
        tensor: &str,
        name: &str,
        dims: &[Dim],
    ) -> Result<String, OnnxError> {
        self.output_impl(tensor, name, Some(dims))
    }

    fn output_impl(
        &mut self,
        tensor: &str,
        name: &str,
        dims: Option<&[Dim]>,
    ) -> Result<String, OnnxError> {
        if tensor != name {
            if self
                .nodes
                .iter()
                .any(|n| n.output.iter().any(|o| o == name))
            {
                return Err(OnnxError::Shape(format!("output name {name} already used")));
            }
            match self
                .nodes
                .iter()
                .position(|n| n.output.iter().any(|o| o == tensor))
            {
                Some(ix) => {
                    for o in self.nodes[ix].output.iter_mut() {
                        if o == tensor {
                            *o = name.to_string();
                        }
                    }
                    for n in self.nodes.iter_mut() {
                        for i in n.input.iter_mut() {
                            if i == tensor {
                                *i = name.to_string();
                            }
                        }
                    }
                    for o in self.outputs.iter_mut() {
                        if o.name == tensor {
                            o.name = name.to_string();
                        }
                    }
                }
                None => self.node_named("Identity", &[tensor], &[name], &[]),
            }
        }
        self.outputs.push(value_info(name, ElemType::F32, dims));
        Ok(name.to_string())
    }

    /// Adds (or replaces) a `metadata_props` entry.
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.metadata.push((key.to_string(), value.to_string())),
        }
        self
    }

    /// Adds every entry of a key/value list (e.g. the contract's `shapecast.*` keys).
    pub fn metadata_list<K: AsRef<str>, V: AsRef<str>>(&mut self, kv: &[(K, V)]) -> &mut Self {
        for (k, v) in kv {
            self.metadata(k.as_ref(), v.as_ref());
        }
        self
    }

    /// The finished `ModelProto` (opset [`OPSET`], IR [`IR_VERSION`]).
    pub fn build(&self) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: self.producer.clone(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            graph: Some(pb::GraphProto {
                name: self.name.clone(),
                node: self.nodes.clone(),
                initializer: self.initializers.clone(),
                input: self.inputs.clone(),
                output: self.outputs.clone(),
                ..Default::default()
            }),
            metadata_props: self
                .metadata
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Serialized model bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_bytes(&self.build())
    }

    /// Writes the model to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), OnnxError> {
        write(&self.build(), path)
    }
}

/// Serializes a model.
pub fn to_bytes(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Parses model bytes.
pub fn from_bytes(bytes: &[u8]) -> Result<pb::ModelProto, OnnxError> {
    pb::ModelProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))
}

/// Writes a model to `path`.
pub fn write(model: &pb::ModelProto, path: impl AsRef<Path>) -> Result<(), OnnxError> {
    let path = path.as_ref();
    std::fs::write(path, to_bytes(model)).map_err(|e| OnnxError::Io(path.display().to_string(), e))
}

/// Reads a model from `path`.
pub fn read(path: impl AsRef<Path>) -> Result<pb::ModelProto, OnnxError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| OnnxError::Io(path.display().to_string(), e))?;
    from_bytes(&bytes)
}

/// Sets every symbolic dimension of the graph's inputs to `value`, except the symbols named
/// in `keep` (the tools fix the implicit decoder's query count this way, as the runtime
/// fixes it to its chunk before optimising).
pub fn fix_input_symbols(model: &mut pb::ModelProto, value: usize, keep: &[&str]) {
    use pb::tensor_shape_proto::dimension::Value;
    for i in model.graph.iter_mut().flat_map(|g| g.input.iter_mut()) {
        let dims = i
            .r#type
            .as_mut()
            .and_then(|t| t.value.as_mut())
            .and_then(|v| {
                let pb::type_proto::Value::TensorType(t) = v;
                t.shape.as_mut()
            });
        for d in dims.into_iter().flat_map(|s| s.dim.iter_mut()) {
            if matches!(&d.value, Some(Value::DimParam(p)) if !keep.contains(&p.as_str())) {
                d.value = Some(Value::DimValue(value as i64));
            }
        }
    }
}

/// The `metadata_props` of the model at `path`, in file order.
pub fn read_metadata(path: impl AsRef<Path>) -> Result<Vec<(String, String)>, OnnxError> {
    Ok(metadata(&read(path)?))
}

/// The `metadata_props` of a model, in order.
pub fn metadata(model: &pb::ModelProto) -> Vec<(String, String)> {
    model
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

/// Sets (adds or replaces) one `metadata_props` entry of a model.
pub fn set_metadata(model: &mut pb::ModelProto, key: &str, value: &str) {
    match model.metadata_props.iter_mut().find(|e| e.key == key) {
        Some(e) => e.value = value.to_string(),
        None => model.metadata_props.push(pb::StringStringEntryProto {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}
