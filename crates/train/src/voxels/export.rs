//! ONNX export of voxel models with the model contract's metadata, a tract runner for the
//! export, and the check that tract reproduces burn along sequences of views.
//!
//! Graph (batch 1): `image` `[1, 3, H, W]` -> Conv (batch norm folded) / Relu ... -> Flatten
//! -> Gemm (latent, batch norm folded) then
//! * grid models: LeakyRelu -> 3D convolutional GRU with `state_in` `[1, C, G, G, G]`
//!   (per gate a Gemm reshaped to the grid plus a 3x3x3 `Conv` on the hidden grid; Sigmoid /
//!   Tanh / Mul / Add / Sub), its output is `state_out` -> Reshape / Transpose to cells ->
//!   per upsampling a Gemm `[cells, C] -> [cells, 8 C']` and a 3D pixel shuffle (Reshape /
//!   Transpose / Reshape / Transpose / Reshape), LeakyRelu, after the first one optional 3x3x3
//!   `Conv` refinements -> `occupancy` `[1, R, R, R]` (logits);
//! * flat models: [GRU cell with `state_in` `[1, S]`, its output is `state_out`] -> Gemm /
//!   LeakyRelu -> Reshape `[G^3, C]` -> Gemm / LeakyRelu / Gemm -> Reshape `[G, G, G, b, b,
//!   b]` -> Transpose -> Reshape -> `occupancy`.
//!
//! Ops: Conv (2D and 3D), Relu, LeakyRelu, Flatten, Gemm, Sigmoid, Tanh, Mul, Add, Sub,
//! Reshape, Transpose.

use std::path::Path;

use burn::prelude::*;
use shapecast_onnx::run::{F32Tensor, LoadOptions, TractModel};
use shapecast_onnx::{Dim, GraphBuilder};

use burn::nn::conv::Conv3d;
use burn::nn::Linear;
use shapecast_onnx::Attr;

use super::model::{
    ConvGru, GruCell, VoxelNet, VoxelNetConfig, LEAKY_SLOPE, PRIOR_LOGIT, SHUFFLE_PERM_1,
    SHUFFLE_PERM_2,
};
use super::train::{usable_objects, ViewIou, ViewIouSums};
use super::VoxelTrainConfig;
use crate::export::{
    conv_relu_stack, floats, input_metadata, linear, linear_folded, max_abs_diff, onnx_err,
    trained_by, within_tolerance, write_graph,
};
use crate::TrainError;

/// Extra metadata of an export.
#[derive(Debug, Clone, Default)]
pub struct VoxelExportInfo {
    /// `shapecast.metrics` (`name=value,...`), when known.
    pub metrics: Option<String>,
    /// `shapecast.dataset` (default: a description of the configured data).
    pub dataset: Option<String>,
}

/// The contract metadata of a voxel model (f32).
pub fn voxel_metadata(cfg: &VoxelTrainConfig, info: &VoxelExportInfo) -> Vec<(String, String)> {
    let m = &cfg.model;
    let mut kv = input_metadata("voxels", &cfg.model_id, m.image, &cfg.mean, &cfg.std);
    kv.extend([
        (
            "shapecast.voxels.resolution".into(),
            m.resolution.to_string(),
        ),
        (
            "shapecast.voxels.threshold".into(),
            format!("{}", cfg.threshold),
        ),
        trained_by(" voxels"),
    ]);
    if m.fusion {
        kv.push(("shapecast.fusion.views".into(), cfg.seq_views.to_string()));
    }
    let dataset = info
        .dataset
        .clone()
        .unwrap_or_else(|| super::data::describe(cfg));
    kv.push(("shapecast.dataset".into(), dataset));
    if let Some(mt) = &info.metrics {
        kv.push(("shapecast.metrics".into(), mt.clone()));
    }
    kv
}

/// Writes `conv` (3x3x3, stride 1, padding 1) as a standard 3D `Conv` node on `x`
/// (`[1, C, D, H, W]`).
fn conv3d_node<B: Backend>(
    g: &mut GraphBuilder,
    x: &str,
    name: &str,
    conv: &Conv3d<B>,
) -> Result<String, TrainError> {
    let dims = conv.weight.dims();
    let w = g
        .init_f32(
            &format!("{name}.weight"),
            &dims,
            &floats(conv.weight.val())?,
        )
        .map_err(onnx_err)?;
    let mut inputs = vec![x.to_string(), w];
    if let Some(b) = &conv.bias {
        let b = g
            .init_f32(&format!("{name}.bias"), &[dims[0]], &floats(b.val())?)
            .map_err(onnx_err)?;
        inputs.push(b);
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(g.node(
        "Conv",
        &refs,
        &[
            ("kernel_shape", Attr::Ints(vec![3, 3, 3])),
            ("pads", Attr::Ints(vec![1; 6])),
            ("strides", Attr::Ints(vec![1; 3])),
        ],
    ))
}

/// The flat GRU cell on latent `z` and state `h` `[1, S]`; returns the new state.
fn flat_gru<B: Backend>(
    g: &mut GraphBuilder,
    gru: &GruCell<B>,
    z: &str,
    h: &str,
) -> Result<String, TrainError> {
    let xr = linear(g, z, "gru.xr", &gru.xr)?;
    let hr = linear(g, h, "gru.hr", &gru.hr)?;
    let a = g.add(&xr, &hr);
    let r = g.sigmoid(&a);
    let xz = linear(g, z, "gru.xz", &gru.xz)?;
    let hz = linear(g, h, "gru.hz", &gru.hz)?;
    let a = g.add(&xz, &hz);
    let u = g.sigmoid(&a);
    let xn = linear(g, z, "gru.xn", &gru.xn)?;
    let hn = linear(g, h, "gru.hn", &gru.hn)?;
    let rh = g.mul(&r, &hn);
    let a = g.add(&xn, &rh);
    let n = g.tanh(&a);
    let diff = g.sub(h, &n);
    let ud = g.mul(&u, &diff);
    Ok(g.add(&n, &ud))
}

/// The 3D convolutional GRU on latent `z` `[1, Z]` and state grid `h` `[1, C, G, G, G]`;
/// returns the new grid.
fn conv_gru<B: Backend>(
    g: &mut GraphBuilder,
    cg: &ConvGru<B>,
    z: &str,
    h: &str,
    grid: &[i64],
) -> Result<String, TrainError> {
    let gate_in = |g: &mut GraphBuilder, name: &str, l: &Linear<B>| {
        linear(g, z, name, l).map(|y| g.reshape(&y, grid))
    };
    let xr = gate_in(g, "cgru.xr", &cg.xr)?;
    let xu = gate_in(g, "cgru.xu", &cg.xu)?;
    let xn = gate_in(g, "cgru.xn", &cg.xn)?;
    let hr = conv3d_node(g, h, "cgru.hr", &cg.hr)?;
    let a = g.add(&xr, &hr);
    let r = g.sigmoid(&a);
    let hu = conv3d_node(g, h, "cgru.hu", &cg.hu)?;
    let a = g.add(&xu, &hu);
    let u = g.sigmoid(&a);
    let rh = g.mul(&r, h);
    let hn = conv3d_node(g, &rh, "cgru.hn", &cg.hn)?;
    let a = g.add(&xn, &hn);
    let n = g.tanh(&a);
    let diff = g.sub(h, &n);
    let ud = g.mul(&u, &diff);
    Ok(g.add(&n, &ud))
}

/// [`shuffle_up`] on `[d^3, 8 C']` (batch 1) -> `[(2d)^3, C']`.
fn shuffle_node(g: &mut GraphBuilder, x: &str, d: i64, c: i64) -> String {
    let x = g.reshape(x, &[d, d, d, 2, 4 * c]);
    let p1: Vec<i64> = SHUFFLE_PERM_1.iter().map(|&v| v as i64).collect();
    let x = g.transpose(&x, &p1);
    let x = g.reshape(&x, &[2 * d, d, d, 2, 2 * c]);
    let p2: Vec<i64> = SHUFFLE_PERM_2.iter().map(|&v| v as i64).collect();
    let x = g.transpose(&x, &p2);
    g.reshape(&x, &[8 * d * d * d, c])
}

/// The grid decoder on the state grid `h` `[1, C, G, G, G]` -> logits `[1, R, R, R]`.
fn grid_decoder<B: Backend>(
    g: &mut GraphBuilder,
    model: &VoxelNet<B>,
    h: &str,
) -> Result<String, TrainError> {
    let (c, gs) = (model.grid_channels as i64, model.grid as i64);
    let x = g.reshape(h, &[1, c, gs * gs * gs]);
    let x = g.transpose(&x, &[0, 2, 1]);
    let mut x = g.reshape(&x, &[gs * gs * gs, c]);
    let mut side = gs;
    let last = model.ups.len().saturating_sub(1);
    for (i, up) in model.ups.iter().enumerate() {
        let y = linear(g, &x, &format!("up{i}"), up)?;
        let co = (up.weight.dims()[1] / 8) as i64;
        x = shuffle_node(g, &y, side, co);
        side *= 2;
        if i == last {
            break;
        }
        x = g.leaky_relu(&x, LEAKY_SLOPE);
        if i == 0 {
            for (k, conv) in model.refine.iter().enumerate() {
                let cells = side * side * side;
                let y = g.reshape(&x, &[1, cells, co]);
                let y = g.transpose(&y, &[0, 2, 1]);
                let y = g.reshape(&y, &[1, co, side, side, side]);
                let y = conv3d_node(g, &y, &format!("refine{k}"), conv)?;
                let y = g.leaky_relu(&y, LEAKY_SLOPE);
                let y = g.reshape(&y, &[1, co, cells]);
                let y = g.transpose(&y, &[0, 2, 1]);
                x = g.reshape(&y, &[cells, co]);
            }
        }
    }
    let prior = g
        .init_f32("prior_logit", &[], &[PRIOR_LOGIT])
        .map_err(onnx_err)?;
    let x = g.add(&x, &prior);
    let r = model.resolution as i64;
    Ok(g.reshape(&x, &[1, r, r, r]))
}

/// The flat decoder on `d` `[1, D]` -> logits `[1, R, R, R]`.
fn flat_decoder<B: Backend>(
    g: &mut GraphBuilder,
    model: &VoxelNet<B>,
    m: &VoxelNetConfig,
    d: &str,
) -> Result<String, TrainError> {
    let (Some(coarse), Some(cell1), Some(cell2)) = (&model.coarse, &model.cell1, &model.cell2)
    else {
        return Err(TrainError::Config("flat decoder weights missing".into()));
    };
    let (gs, r, c) = (m.coarse as i64, m.resolution as i64, m.cell_channels as i64);
    let b = r / gs;
    let cells = linear(g, d, "coarse", coarse)?;
    let cells = g.leaky_relu(&cells, LEAKY_SLOPE);
    let cells = g.reshape(&cells, &[gs * gs * gs, c]);
    let h1 = linear(g, &cells, "cell1", cell1)?;
    let h1 = g.leaky_relu(&h1, LEAKY_SLOPE);
    let blocks = linear(g, &h1, "cell2", cell2)?;
    let prior = g
        .init_f32("prior_logit", &[], &[PRIOR_LOGIT])
        .map_err(onnx_err)?;
    let blocks = g.add(&blocks, &prior);
    let blocks = g.reshape(&blocks, &[gs, gs, gs, b, b, b]);
    let grid = g.transpose(&blocks, &[0, 3, 1, 4, 2, 5]);
    Ok(g.reshape(&grid, &[1, r, r, r]))
}

/// Builds the ONNX graph of a voxel model (see the module documentation).
pub fn voxel_graph<B: Backend>(
    model: &VoxelNet<B>,
    cfg: &VoxelTrainConfig,
    info: &VoxelExportInfo,
) -> Result<GraphBuilder, TrainError> {
    let m = &cfg.model;
    m.validate()?;
    if m.fusion != model.fuses() || (m.grid > 0) != model.cgru.is_some() {
        return Err(TrainError::Config(
            "configuration and weights disagree on fusion".into(),
        ));
    }
    let mut g = GraphBuilder::new(&cfg.model_id);
    let x = g.input(
        "image",
        &[Dim::Fixed(1), 3.into(), m.image.into(), m.image.into()],
    );
    let sdims: Vec<Dim> = std::iter::once(Dim::Fixed(1))
        .chain(m.state_dims().into_iter().map(Dim::from))
        .collect();
    let state_in = m.fusion.then(|| g.input("state_in", &sdims));
    let x = conv_relu_stack(
        &mut g,
        &x,
        model.convs.iter().zip(model.norms.iter().map(Some)),
    )?;
    let flat = g.flatten(&x, 1);
    let z = linear_folded(&mut g, &flat, "fc", &model.fc, model.fc_norm.as_ref())?;
    let (grid, state) = match (&model.cgru, &model.gru, &state_in) {
        (Some(cg), _, Some(h)) => {
            let z = g.leaky_relu(&z, LEAKY_SLOPE);
            let shape: Vec<i64> = std::iter::once(1)
                .chain(m.state_dims().iter().map(|&v| v as i64))
                .collect();
            let h2 = conv_gru(&mut g, cg, &z, h, &shape)?;
            (grid_decoder(&mut g, model, &h2)?, Some(h2))
        }
        (None, Some(gru), Some(h)) => {
            let h2 = flat_gru(&mut g, gru, &z, h)?;
            (flat_decoder(&mut g, model, m, &h2)?, Some(h2))
        }
        _ => (flat_decoder(&mut g, model, m, &z)?, None),
    };
    let ru = m.resolution;
    g.output_with_dims(
        &grid,
        "occupancy",
        &[1.into(), ru.into(), ru.into(), ru.into()],
    )
    .map_err(onnx_err)?;
    if let Some(s) = state {
        g.output_with_dims(&s, "state_out", &sdims)
            .map_err(onnx_err)?;
    }
    g.metadata_list(&voxel_metadata(cfg, info));
    Ok(g)
}

/// A voxel export loaded and optimised by tract.
#[derive(Debug)]
pub struct TractVoxels {
    model: TractModel,
    side: usize,
    state: usize,
    state_shape: Vec<usize>,
    image_ix: usize,
    state_ix: Option<usize>,
    occ_ix: usize,
    state_out_ix: Option<usize>,
}

impl TractVoxels {
    /// Loads an export (batch 1).
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let proto = shapecast_onnx::read(path).map_err(onnx_err)?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| TrainError::Onnx(format!("{}: no graph", path.display())))?;
        let dims = |name: &str| -> Option<Vec<usize>> {
            graph.input.iter().find(|v| v.name == name).map(|v| {
                use shapecast_onnx::pb::tensor_shape_proto::dimension::Value;
                use shapecast_onnx::pb::type_proto::Value as TV;
                match &v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                    Some(TV::TensorType(t)) => t
                        .shape
                        .as_ref()
                        .map(|s| {
                            s.dim
                                .iter()
                                .map(|d| match d.value {
                                    Some(Value::DimValue(x)) => x.max(0) as usize,
                                    _ => 1,
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    _ => Vec::new(),
                }
            })
        };
        let side = dims("image").and_then(|d| d.get(3).copied()).unwrap_or(0);
        let state_shape = dims("state_in").unwrap_or_default();
        let state = state_shape.iter().skip(1).product::<usize>();
        let model = shapecast_onnx::run::load(&proto, &LoadOptions::default())
            .map_err(|e| TrainError::Onnx(format!("{}: {e:#}", path.display())))?;
        let find = |v: &[String], n: &str| v.iter().position(|x| x == n);
        let image_ix = find(&model.inputs, "image").unwrap_or(0);
        let state_ix = find(&model.inputs, "state_in");
        let occ_ix = find(&model.outputs, "occupancy").ok_or_else(|| {
            TrainError::Onnx(format!("{}: no `occupancy` output", path.display()))
        })?;
        let state_out_ix = find(&model.outputs, "state_out");
        if state_ix.is_some() != state_out_ix.is_some() {
            return Err(TrainError::Onnx(format!(
                "{}: state_in and state_out must come together",
                path.display()
            )));
        }
        Ok(Self {
            model,
            side,
            state,
            state_shape,
            image_ix,
            state_ix,
            occ_ix,
            state_out_ix,
        })
    }

    /// State size `S` (0: no fusion).
    pub fn state_size(&self) -> usize {
        if self.state_ix.is_some() {
            self.state
        } else {
            0
        }
    }

    /// Shape of `state_in` (`[1, S]` or `[1, C, G, G, G]`; empty without fusion).
    pub fn state_shape(&self) -> &[usize] {
        if self.state_ix.is_some() {
            &self.state_shape
        } else {
            &[]
        }
    }

    /// One frame: a normalised `[1, 3, H, W]` picture and the state (ignored without
    /// fusion) -> (occupancy logits `R^3`, new state).
    pub fn step(&self, image: &[f32], state: &[f32]) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
        let s = self.side;
        let mut inputs =
            vec![F32Tensor::new(vec![0], vec![]).map_err(onnx_err)?; self.model.inputs.len()];
        inputs[self.image_ix] =
            F32Tensor::new(vec![1, 3, s, s], image.to_vec()).map_err(onnx_err)?;
        if let Some(si) = self.state_ix {
            inputs[si] =
                F32Tensor::new(self.state_shape.clone(), state.to_vec()).map_err(onnx_err)?;
        }
        let mut outs = self.model.run(&inputs).map_err(onnx_err)?;
        let new_state = match self.state_out_ix {
            Some(i) => std::mem::take(&mut outs[i].data),
            None => state.to_vec(),
        };
        let occ = std::mem::take(
            &mut outs
                .get_mut(self.occ_ix)
                .ok_or_else(|| TrainError::Onnx("occupancy output missing".into()))?
                .data,
        );
        Ok((occ, new_state))
    }
}

/// Writes the export to `path`, loads it with tract and checks that it reproduces burn
/// along each probe sequence (pictures `[1, 3, H, W]`, fed in order with the state carried
/// over; single-view models run each picture alone): occupancy logits and state after
/// every picture within `tol`. Returns the largest absolute difference.
pub fn export_voxels<B: Backend>(
    model: &VoxelNet<B>,
    cfg: &VoxelTrainConfig,
    info: &VoxelExportInfo,
    path: &Path,
    probes: &[Vec<Vec<f32>>],
    tol: f32,
    device: &B::Device,
) -> Result<f32, TrainError> {
    let g = voxel_graph(model, cfg, info)?;
    write_graph(&g, path)?;
    let runner = TractVoxels::load(path)?;
    let side = cfg.model.image;
    let mut worst = 0.0f32;
    for seq in probes {
        let mut bstate = model.zero_state(1, device);
        let mut tstate = vec![0.0f32; runner.state_size()];
        for pic in seq {
            let t =
                Tensor::<B, 4>::from_data(TensorData::new(pic.clone(), [1, 3, side, side]), device);
            let (occ, ns) = model.step(t, bstate);
            bstate = ns;
            let (tocc, ts) = runner.step(pic, &tstate)?;
            worst = worst.max(max_abs_diff(&floats(occ)?, &tocc)?);
            if cfg.model.fusion {
                worst = worst.max(max_abs_diff(&floats(bstate.clone())?, &ts)?);
            }
            tstate = ts;
        }
    }
    within_tolerance(path, worst, tol)
}

/// Mean IoU of an export run by tract, fusing 1..=T views per object for each `T` in
/// `counts` (fusion models carry the state; single-view models average probabilities).
pub fn evaluate_tract(
    runner: &TractVoxels,
    objects: &[super::data::VoxelObject],
    counts: &[usize],
    threshold: f32,
) -> Result<Vec<ViewIou>, TrainError> {
    let (usable, tmax) = usable_objects(objects, counts)?;
    let mut sums = ViewIouSums::new(counts, threshold, runner.state_size() > 0);
    for o in &usable {
        let mut state = vec![0.0f32; runner.state_size()];
        let mut outs = Vec::with_capacity(tmax);
        for pic in o.views.iter().take(tmax) {
            let (occ, s) = runner.step(pic, &state)?;
            state = s;
            outs.push(occ);
        }
        let cells = outs.first().map_or(0, Vec::len);
        sums.add(&o.voxels, cells, |t, c| outs[t][c]);
    }
    Ok(sums.means())
}
