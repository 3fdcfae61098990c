//! Loading a contract model with tract: metadata, validation, optimised runnable plans.
//!
//! [`Model::load`] reads the file, parses its metadata ([`crate::meta`]), checks the tensors
//! against the contract (docs/model-contract.md, section 5), and builds optimised f32 plans
//! with B = 1. An implicit model loads its decoder part too. Nothing here panics on a
//! malformed file: tract's parser is also run behind `catch_unwind`, so a panic inside it
//! becomes an error naming the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::Factoid;

use crate::meta::{ContractError, Head, ModelMeta, Part};

/// True on aarch64 CPUs whose /proc/cpuinfo lists `asimdhp` (f16 arithmetic), where
/// [`LoadOptions::f16`] is worth measuring. Always false elsewhere.
pub use shapecast_onnx::run::cpu_has_fp16;

/// glibc malloc setting applied before the first model is loaded (bench/runtime/RESULTS.md,
/// "Allocator"): tract allocates and frees its per-run scratch buffers (packed im2col panels,
/// intermediate tensors) on every inference, and with glibc's defaults the freed top of the
/// heap is trimmed and re-faulted on the next frame. `M_TOP_PAD` = 64 MiB makes the heap grow
/// (and keep) 64 MiB of slack at a time, which removes those faults for no extra resident
/// memory beyond the pages tract actually touches. Same as the environment variable
/// `MALLOC_TOP_PAD_=67108864`. Measured against glibc's defaults, an mmap/trim-threshold
/// tuning and mimalloc. Set `SHAPECAST_MALLOC=default` to keep glibc's defaults. Does
/// nothing on other C libraries, nor with the `mimalloc` feature (Rust allocations do not go
/// through glibc then).
pub fn tune_malloc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var("SHAPECAST_MALLOC").is_ok_and(|v| v == "default") {
            return;
        }
        glibc::tune();
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    use std::os::raw::c_int;
    extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }
    const M_TOP_PAD: c_int = -2;

    pub(super) fn tune() {
        for (param, value, name) in [(M_TOP_PAD, 64 << 20, "M_TOP_PAD")] {
            // SAFETY: mallopt only changes allocator parameters; it takes plain integers
            // and is documented as callable at any time (it takes the arena lock).
            if unsafe { mallopt(param, value) } != 1 {
                log::warn!("mallopt({name}, {value}) refused");
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub(super) fn tune() {}
}

/// Largest model file read (a guard against reading a huge wrong file into memory).
pub const MAX_MODEL_BYTES: u64 = 1 << 30;

/// Errors of loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file breaks the contract (the item is named).
    #[error("{path}: {cause}")]
    Contract {
        path: String,
        // in the message, not a separate `source()`: `{:#}` chains name it once
        cause: ContractError,
    },
    /// tract could not parse, type or optimise the model.
    #[error("{path}: tract could not {stage}: {message}")]
    Tract {
        path: String,
        stage: &'static str,
        message: String,
    },
    /// Running the model failed.
    #[error("inference failed: {0}")]
    Run(String),
}

fn tract_err(path: &Path, stage: &'static str, e: impl std::fmt::Display) -> ModelError {
    ModelError::Tract {
        path: path.display().to_string(),
        stage,
        message: format!("{e:#}"),
    }
}

fn contract(path: &Path, source: ContractError) -> ModelError {
    ModelError::Contract {
        path: path.display().to_string(),
        cause: source,
    }
}

fn tensor_err(name: &str, problem: impl Into<String>) -> ContractError {
    ContractError::Tensor {
        name: name.to_owned(),
        problem: problem.into(),
    }
}

/// Thread settings for inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads(pub usize);

impl Default for Threads {
    fn default() -> Self {
        Threads(1)
    }
}

type Plan = Arc<TypedRunnableModel>;

/// One optimised network with named inputs and outputs.
#[derive(Debug, Clone)]
pub struct Net {
    plan: Plan,
    /// Input names in the order `run` expects them.
    pub inputs: Vec<String>,
    /// Input shapes (concrete, B = 1).
    pub input_shapes: Vec<Vec<usize>>,
    /// Output names in output order.
    pub outputs: Vec<String>,
    /// Output shapes (concrete).
    pub output_shapes: Vec<Vec<usize>>,
    /// The plan computes in f16 ([`LoadOptions::f16`]): inputs and outputs are cast.
    pub half: bool,
}

impl Net {
    /// Index of the output called `name`.
    pub fn output(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|o| o == name)
    }

    /// Runs the network on f32 inputs given in `inputs` order, each a flat slice of its
    /// declared shape. Returns the outputs as tract values (f32).
    pub fn run(&self, inputs: &[&[f32]]) -> Result<TVec<TValue>, ModelError> {
        if inputs.len() != self.inputs.len() {
            return Err(ModelError::Run(format!(
                "{} inputs given, the model takes {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        let mut tv: TVec<TValue> = TVec::new();
        for ((data, shape), name) in inputs.iter().zip(&self.input_shapes).zip(&self.inputs) {
            let t = Tensor::from_shape(shape, data).map_err(|e| {
                ModelError::Run(format!("input {name}: {e:#} (expected shape {shape:?})"))
            })?;
            tv.push(t.into());
        }
        self.run_tensors(tv)
    }

    /// Runs with owned tensors (avoids a copy for large inputs).
    pub fn run_tensors(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>, ModelError> {
        let err = |e: TractError| ModelError::Run(format!("{e:#}"));
        if !self.half {
            return self.plan.run(inputs).map_err(err);
        }
        let inputs = inputs
            .into_iter()
            .map(|v| Ok(v.cast_to_dt(DatumType::F16)?.into_owned().into_tvalue()))
            .collect::<TractResult<TVec<TValue>>>()
            .map_err(err)?;
        self.plan
            .run(inputs)
            .map_err(err)?
            .into_iter()
            .map(|v| Ok(v.cast_to_dt(DatumType::F32)?.into_owned().into_tvalue()))
            .collect::<TractResult<TVec<TValue>>>()
            .map_err(err)
    }
}

/// Reads the protobuf and its metadata (no tract graph yet).
pub fn read_proto(path: &Path) -> Result<(ModelProto, BTreeMap<String, String>), ModelError> {
    use prost::Message;
    let len = std::fs::metadata(path)
        .map_err(|e| contract(path, ContractError::File(format!("cannot read: {e}"))))?
        .len();
    if len > MAX_MODEL_BYTES {
        return Err(contract(
            path,
            ContractError::File(format!(
                "file is {len} bytes, more than the {MAX_MODEL_BYTES} a model may have"
            )),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| contract(path, ContractError::File(format!("cannot read: {e}"))))?;
    let proto = ModelProto::decode(bytes.as_slice()).map_err(|e| {
        contract(
            path,
            ContractError::File(format!("not an ONNX model (protobuf: {e})")),
        )
    })?;
    if proto.graph.is_none() {
        return Err(contract(
            path,
            ContractError::File("not an ONNX model (no graph)".into()),
        ));
    }
    let mut map = BTreeMap::new();
    for e in &proto.metadata_props {
        map.insert(e.key.clone(), e.value.clone());
    }
    Ok((proto, map))
}

/// Reads only the metadata of a model file.
pub fn read_meta(path: &Path) -> Result<ModelMeta, ModelError> {
    let (_, map) = read_proto(path)?;
    ModelMeta::parse(&map).map_err(|e| contract(path, e))
}

fn catch<T>(
    path: &Path,
    stage: &'static str,
    f: impl FnOnce() -> TractResult<T>,
) -> Result<T, ModelError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(tract_err(path, stage, e)),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "panic".into());
            Err(tract_err(path, stage, format!("tract panicked: {msg}")))
        }
    }
}

/// Declared dims of an inference fact: Some(n) for a fixed dim, None for a symbolic one.
fn declared_dims(f: &InferenceFact) -> Option<Vec<Option<usize>>> {
    if f.shape.is_open() {
        return None;
    }
    Some(
        f.shape
            .dims()
            .map(|d| {
                d.concretize()
                    .and_then(|d| d.to_i64().ok())
                    .and_then(|d| usize::try_from(d).ok())
            })
            .collect(),
    )
}

/// How an input is to be fixed: either a required shape, or the declared one with the
/// leading batch set to 1.
enum InputRule {
    Exact(Vec<usize>),
    /// Shape with `Some` = required dim, `None` = take the declared value (must be fixed).
    Pattern(Vec<Option<usize>>),
}

fn build_net(
    path: &Path,
    proto: ModelProto,
    rules: &[(&str, InputRule)],
    opts: LoadOptions,
) -> Result<Net, ModelError> {
    let dir = path.parent().and_then(|p| p.to_str()).map(str::to_owned);
    let parsed = catch(path, "parse the graph", || {
        tract_onnx::onnx().parse(&proto, dir.as_deref())
    })?;
    // the protobuf's weights are copied into the graph: free them before typing and
    // optimising (lower peak memory while loading)
    drop(proto);
    if !parsed.unresolved_inputs.is_empty() {
        return Err(tract_err(
            path,
            "parse the graph",
            format!("unresolved inputs {:?}", parsed.unresolved_inputs),
        ));
    }
    let mut model = parsed.model;
    // inputs
    let mut names = Vec::new();
    for o in model
        .input_outlets()
        .map_err(|e| tract_err(path, "list inputs", e))?
    {
        names.push(model.node(o.node).name.clone());
    }
    for (want, _) in rules {
        if !names.iter().any(|n| n == want) {
            return Err(contract(
                path,
                tensor_err(
                    want,
                    format!("missing input (the model's inputs: {names:?})"),
                ),
            ));
        }
    }
    if names.len() != rules.len() {
        let extra: Vec<&String> = names
            .iter()
            .filter(|n| !rules.iter().any(|(r, _)| r == n))
            .collect();
        return Err(contract(
            path,
            tensor_err(
                extra.first().map(|s| s.as_str()).unwrap_or("?"),
                "input the contract does not define for this head",
            ),
        ));
    }
    let mut input_shapes = Vec::new();
    for (ix, name) in names.iter().enumerate() {
        let rule = &rules
            .iter()
            .find(|(r, _)| r == name)
            .expect("checked above")
            .1;
        let fact = model
            .input_fact(ix)
            .map_err(|e| tract_err(path, "read input facts", e))?
            .clone();
        if let Some(dt) = fact.datum_type.concretize() {
            if dt != f32::datum_type() {
                return Err(contract(
                    path,
                    tensor_err(name, format!("type {dt:?}, the contract wants f32")),
                ));
            }
        }
        let declared = declared_dims(&fact);
        let shape: Vec<usize> = match rule {
            InputRule::Exact(s) => {
                if let Some(d) = &declared {
                    let ok = d.len() == s.len()
                        && d.iter().zip(s).enumerate().all(|(i, (a, b))| {
                            // batch may be dynamic or 1; the others must match when fixed
                            a.is_none() || *a == Some(*b) || (i == 0 && *a == Some(1))
                        });
                    if !ok {
                        return Err(contract(
                            path,
                            tensor_err(
                                name,
                                format!(
                                    "declared shape {} but the metadata says {s:?}",
                                    fmt_dims(d)
                                ),
                            ),
                        ));
                    }
                }
                s.clone()
            }
            InputRule::Pattern(p) => {
                let Some(d) = declared else {
                    return Err(contract(path, tensor_err(name, "shape not declared")));
                };
                if d.len() != p.len() && !p.is_empty() {
                    return Err(contract(
                        path,
                        tensor_err(
                            name,
                            format!("rank {} but the contract wants {}", d.len(), p.len()),
                        ),
                    ));
                }
                let mut out = Vec::new();
                for (i, dd) in d.iter().enumerate() {
                    let want = p.get(i).copied().flatten();
                    match (want, dd) {
                        (Some(w), Some(x)) if *x != w && !(i == 0 && *x == 1) => {
                            return Err(contract(
                                path,
                                tensor_err(name, format!("dim {i} is {x}, the contract wants {w}")),
                            ))
                        }
                        (Some(w), _) => out.push(w),
                        (None, Some(x)) => out.push(*x),
                        (None, None) if i == 0 => out.push(1),
                        (None, None) => {
                            return Err(contract(
                                path,
                                tensor_err(name, format!("dim {i} must be fixed in the model")),
                            ))
                        }
                    }
                }
                out
            }
        };
        if shape.iter().product::<usize>() > (1 << 28) {
            return Err(contract(
                path,
                tensor_err(name, format!("shape {shape:?} is too large")),
            ));
        }
        model
            .set_input_fact(ix, f32::fact(&shape).into())
            .map_err(|e| tract_err(path, "set input facts", e))?;
        input_shapes.push(shape);
    }
    let mut outputs = Vec::new();
    for o in model
        .output_outlets()
        .map_err(|e| tract_err(path, "list outputs", e))?
        .to_vec()
    {
        let label = model
            .outlet_label(o)
            .map(str::to_owned)
            .unwrap_or_else(|| model.node(o.node).name.clone());
        outputs.push(label);
    }
    let typed = catch(path, "type the graph", || model.into_typed())?;
    let mut output_shapes = Vec::new();
    for (i, name) in outputs.iter().enumerate() {
        let fact = typed
            .output_fact(i)
            .map_err(|e| tract_err(path, "read output facts", e))?;
        if fact.datum_type != f32::datum_type() {
            return Err(contract(
                path,
                tensor_err(
                    name,
                    format!("type {:?}, the contract wants f32", fact.datum_type),
                ),
            ));
        }
        let Some(s) = fact.shape.as_concrete() else {
            return Err(contract(
                path,
                tensor_err(
                    name,
                    format!("shape {:?} is not fixed once the inputs are", fact.shape),
                ),
            ));
        };
        output_shapes.push(s.to_vec());
    }
    let optimized = catch(path, "optimise the graph", || {
        let mut m = typed.into_decluttered()?;
        if opts.f16 {
            // f32 -> f16 arithmetic (aarch64 `asimdhp`: tract's f16 kernels); inputs and
            // outputs stay f32 at the boundary (`Net::run` casts)
            let t = tract_onnx::tract_core::transform::get_transform("f32_to_f16")?
                .ok_or_else(|| anyhow::anyhow!("this tract has no f32_to_f16 transform"))?;
            m.transform(&*t)?;
        }
        let mut m = m.into_optimized()?;
        // Relu/LeakyRelu after a Conv fused into the matrix product (shapecast-onnx)
        let fused = shapecast_onnx::run::fuse_activations(&mut m)?;
        log::debug!(
            "{}: {fused} activations fused into convolutions",
            path.display()
        );
        Ok(m)
    })?;
    let plan = catch(path, "make a plan", || {
        let mut ro = tract_onnx::tract_core::runtime::RunOptions::default();
        if opts.threads.0 > 1 {
            ro.executor = Some(tract_linalg::multithread::Executor::multithread(
                opts.threads.0,
            ));
        }
        optimized.into_runnable_with_options(&ro)
    })?;
    Ok(Net {
        plan,
        inputs: names,
        input_shapes,
        outputs,
        output_shapes,
        half: opts.f16,
    })
}

fn fmt_dims(d: &[Option<usize>]) -> String {
    let v: Vec<String> = d
        .iter()
        .map(|x| x.map(|n| n.to_string()).unwrap_or_else(|| "?".into()))
        .collect();
    format!("[{}]", v.join(", "))
}

/// Where each head's outputs sit in [`Net::outputs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    pub points: Option<usize>,
    pub labels: Option<usize>,
    pub confidence: Option<usize>,
    pub occupancy: Option<usize>,
    pub state_out: Option<usize>,
    pub latent: Option<usize>,
    pub offsets: Option<usize>,
}

/// The decoder part of an implicit model, fixed to a query batch.
#[derive(Debug, Clone)]
pub struct Decoder {
    pub net: Net,
    pub meta: ModelMeta,
    pub path: PathBuf,
    /// Queries per decoder run (xyz is [chunk, 3]; the last chunk is padded).
    pub chunk: usize,
    /// Index of `latent` and `xyz` in the decoder's inputs.
    pub latent_ix: usize,
    pub xyz_ix: usize,
}

/// Options of [`Model::load_with`].
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub threads: Threads,
    /// Query batch of an implicit decoder.
    pub decoder_chunk: usize,
    /// Run an f32 model in f16 arithmetic (tract's `f32_to_f16` transform): for aarch64
    /// CPUs with `asimdhp` ([`cpu_has_fp16`]); precision key `f16` of the configuration.
    pub f16: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: Threads(1),
            decoder_chunk: 8192,
            f16: false,
        }
    }
}

/// A loaded, checked, optimised contract model.
#[derive(Debug, Clone)]
pub struct Model {
    pub path: PathBuf,
    pub meta: ModelMeta,
    pub net: Net,
    pub outputs: Outputs,
    /// Index of `image` (and `state_in`) in the net's inputs.
    pub image_ix: usize,
    pub state_ix: Option<usize>,
    pub decoder: Option<Decoder>,
    /// Size of the model file(s) in bytes.
    pub file_bytes: u64,
}

fn want_shape(path: &Path, net: &Net, name: &str, want: &[usize]) -> Result<usize, ModelError> {
    let Some(i) = net.output(name) else {
        return Err(contract(
            path,
            tensor_err(
                name,
                format!("missing output (the model's outputs: {:?})", net.outputs),
            ),
        ));
    };
    let got = &net.output_shapes[i];
    if got.as_slice() != want {
        return Err(contract(
            path,
            tensor_err(
                name,
                format!("shape {got:?}, the contract and metadata want {want:?}"),
            ),
        ));
    }
    Ok(i)
}

fn labels_shape(
    path: &Path,
    net: &Net,
    meta: &ModelMeta,
    prefix: &[usize],
) -> Result<Option<usize>, ModelError> {
    match net.output("labels") {
        None => Ok(None),
        Some(i) => {
            if meta.classes.is_empty() {
                return Err(contract(
                    path,
                    ContractError::Missing("shapecast.classes".into()),
                ));
            }
            let mut want = prefix.to_vec();
            want.push(meta.classes.len());
            want_shape(path, net, "labels", &want)?;
            Ok(Some(i))
        }
    }
}

impl Model {
    /// Loads with default options (1 thread).
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        Model::load_with(path, LoadOptions::default())
    }

    /// Loads, checks and optimises a model (and its decoder part).
    pub fn load_with(path: &Path, opts: LoadOptions) -> Result<Model, ModelError> {
        tune_malloc();
        let (proto, map) = read_proto(path)?;
        let meta = ModelMeta::parse(&map).map_err(|e| contract(path, e))?;
        let mut file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let i = &meta.input;
        let image_shape = vec![1, i.color.channels(), i.height, i.width];
        let mut rules = vec![("image", InputRule::Exact(image_shape))];
        let has_state = proto
            .graph
            .as_ref()
            .is_some_and(|g| g.input.iter().any(|v| v.name == "state_in"));
        if meta.fusion_views.is_some() != has_state {
            return Err(contract(
                path,
                if has_state {
                    ContractError::Missing("shapecast.fusion.views".into())
                } else {
                    tensor_err("state_in", "missing input (shapecast.fusion.views is set)")
                },
            ));
        }
        if has_state {
            rules.push(("state_in", InputRule::Pattern(Vec::new())));
        }
        if meta
            .implicit
            .as_ref()
            .is_some_and(|m| m.part == Part::Decoder)
        {
            return Err(contract(
                path,
                ContractError::File(
                    "this is the decoder part of an implicit model: load the encoder file".into(),
                ),
            ));
        }
        let net = build_net(path, proto, &rules, opts)?;
        let image_ix = net.inputs.iter().position(|n| n == "image").unwrap_or(0);
        let state_ix = net.inputs.iter().position(|n| n == "state_in");
        let mut outs = Outputs::default();
        let mut decoder = None;
        match meta.head {
            Head::Points => {
                let (n, k) = meta.points.unwrap_or((0, 0));
                outs.points = Some(want_shape(path, &net, "points", &[1, k, n, 3])?);
                outs.labels = labels_shape(path, &net, &meta, &[1, k, n])?;
                if net.output("confidence").is_some() {
                    outs.confidence = Some(want_shape(path, &net, "confidence", &[1, k, n])?);
                }
            }
            Head::Voxels => {
                let (r, _) = meta.voxels.unwrap_or((0, 0.5));
                outs.occupancy = Some(want_shape(path, &net, "occupancy", &[1, r, r, r])?);
                if let Some(si) = state_ix {
                    let s = net.input_shapes[si].clone();
                    outs.state_out = Some(want_shape(path, &net, "state_out", &s)?);
                }
            }
            Head::Mesh => {
                let v = meta.mesh.as_ref().map(|m| m.template.len()).unwrap_or(0);
                outs.offsets = Some(want_shape(path, &net, "offsets", &[1, v, 3])?);
                outs.labels = labels_shape(path, &net, &meta, &[1, v])?;
            }
            Head::Implicit => {
                let im = meta.implicit.clone().ok_or_else(|| {
                    contract(
                        path,
                        ContractError::Missing("shapecast.implicit.kind".into()),
                    )
                })?;
                outs.latent = Some(want_shape(path, &net, "latent", &[1, im.latent])?);
                let rel = im.decoder.clone().unwrap_or_default();
                let dpath = path.parent().unwrap_or(Path::new(".")).join(&rel);
                if !dpath.is_file() {
                    return Err(contract(
                        path,
                        ContractError::File(format!(
                            "decoder part {} (shapecast.parts.decoder = \"{rel}\") does not exist",
                            dpath.display()
                        )),
                    ));
                }
                let d = load_decoder(&dpath, &meta, opts)?;
                file_bytes += std::fs::metadata(&dpath).map(|m| m.len()).unwrap_or(0);
                decoder = Some(d);
            }
        }
        Ok(Model {
            path: path.to_owned(),
            meta,
            net,
            outputs: outs,
            image_ix,
            state_ix,
            decoder,
            file_bytes,
        })
    }
}

fn load_decoder(path: &Path, enc: &ModelMeta, opts: LoadOptions) -> Result<Decoder, ModelError> {
    let (proto, map) = read_proto(path)?;
    let meta = ModelMeta::parse(&map).map_err(|e| contract(path, e))?;
    let em = enc.implicit.as_ref();
    let dm = meta.implicit.as_ref();
    if meta.head != Head::Implicit {
        return Err(contract(
            path,
            ContractError::Bad {
                key: "shapecast.head".into(),
                expected: "implicit (as the encoder)".into(),
                found: meta.head.to_string(),
            },
        ));
    }
    if dm.map(|d| d.part) != Some(Part::Decoder) {
        return Err(contract(
            path,
            ContractError::Bad {
                key: "shapecast.part".into(),
                expected: "decoder".into(),
                found: "encoder".into(),
            },
        ));
    }
    let z = em.map(|e| e.latent).unwrap_or(0);
    if dm.map(|d| d.latent) != Some(z) {
        return Err(contract(
            path,
            ContractError::Bad {
                key: "shapecast.implicit.latent".into(),
                expected: format!("{z} (as the encoder)"),
                found: dm.map(|d| d.latent.to_string()).unwrap_or_default(),
            },
        ));
    }
    let chunk = opts.decoder_chunk.clamp(1, 1 << 20);
    let rules = [
        ("latent", InputRule::Exact(vec![1, z])),
        ("xyz", InputRule::Exact(vec![chunk, 3])),
    ];
    let net = build_net(path, proto, &rules, opts)?;
    want_shape(path, &net, "value", &[chunk])?;
    let latent_ix = net.inputs.iter().position(|n| n == "latent").unwrap_or(0);
    let xyz_ix = net.inputs.iter().position(|n| n == "xyz").unwrap_or(1);
    Ok(Decoder {
        net,
        meta,
        path: path.to_owned(),
        chunk,
        latent_ix,
        xyz_ix,
    })
}

/// Flat f32 view of an output value.
pub fn as_f32(v: &TValue) -> Result<&[f32], ModelError> {
    let t: &Tensor = v;
    t.try_as_plain_ram()
        .and_then(|p| p.as_slice::<f32>())
        .map_err(|e| ModelError::Run(format!("output is not f32: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(m: &Model, image: &[f32]) -> Vec<Vec<f32>> {
        m.net
            .run(&[image])
            .unwrap()
            .iter()
            .map(|v| as_f32(v).unwrap().to_vec())
            .collect()
    }

    /// `LoadOptions::f16` (precision `f16`): the plan computes in f16, takes and gives f32,
    /// and stays close to the f32 plan (x86 emulates f16: a correctness check only).
    #[test]
    fn f16_plan_runs_f32_in_and_out_close_to_f32() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/points/model.onnx");
        let a = Model::load(&path).unwrap();
        let b = Model::load_with(
            &path,
            LoadOptions {
                f16: true,
                ..LoadOptions::default()
            },
        )
        .unwrap();
        assert!(!a.net.half && b.net.half);
        let n: usize = a.net.input_shapes[0].iter().product();
        let image: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let (x, y) = (outputs(&a, &image), outputs(&b, &image));
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(&y) {
            assert_eq!(p.len(), q.len());
            let max = p
                .iter()
                .zip(q)
                .map(|(u, v)| (u - v).abs())
                .fold(0f32, f32::max);
            let scale = p.iter().map(|u| u.abs()).fold(0f32, f32::max).max(1e-3);
            assert!(
                max <= 2e-2 * scale + 1e-3,
                "f16 max abs diff {max} (scale {scale})"
            );
        }
    }

    /// Loading the shipped model fuses its convolution ReLUs into tract's matrix products.
    #[test]
    fn shipped_model_plan_has_no_separate_conv_relu() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default.onnx");
        if !path.is_file() {
            return; // the model is a release artefact; the unit test in shapecast-onnx covers it
        }
        let m = Model::load(&path).unwrap();
        let ops: Vec<String> = m
            .net
            .plan
            .model()
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect();
        assert!(
            !ops.iter().any(|o| o.contains("MaxByScalar")),
            "conv ReLU left in the plan: {ops:?}"
        );
    }
}
