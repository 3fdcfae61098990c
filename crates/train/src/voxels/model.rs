//! The 3D-R2N2-style voxel network, generic over the burn backend.
//!
//! * Encoder: strided convolutions (batch norm, ReLU; a layer whose kernel equals its stride
//!   is a patchify layer without padding, others are padded by `kernel / 2`) and a linear
//!   layer to a latent `z`.
//! * Fusion, two forms:
//!   - **grid** (`grid > 0`, 3D-R2N2's 3D convolutional GRU): the state is a `G^3` grid of
//!     `C`-channel cells (`[N, C, G, G, G]`). Each gate gets a per-cell input from the
//!     picture (`LeakyReLU(z)` through a linear layer to `C G^3` values) plus a 3x3x3
//!     convolution over the neighbouring hidden cells: `r = σ(Wr z + Ur * h)`,
//!     `u = σ(Wu z + Uu * h)`, `n = tanh(Wn z + Un * (r ⊙ h))`, `h' = n + u ⊙ (h - n)`.
//!     The 3x3x3 convolutions are computed as unfold + matrix product ([`conv3x3x3`]): burn's
//!     candle backend has no 3D convolution. They are exported as standard 3D `Conv` nodes.
//!   - **flat** (`grid = 0`): a GRU cell over the latent, `h' = GRU(z, h)`, written as plain
//!     linear layers; state `[N, S]`.
//!
//!   The state is the contract's `state_in` / `state_out` (all zeros = no memory).
//! * Decoder (LeakyReLU, see [`LEAKY_SLOPE`]; output offset [`PRIOR_LOGIT`]):
//!   - grid: transposed 3D convolutions with kernel = stride = 2 (each written as a per-cell
//!     linear layer to `8 C'` values and a 3D pixel shuffle, Reshape / Transpose), `G -> 2G
//!     -> ... -> R`, the last one to one occupancy logit per voxel; optionally 3x3x3
//!     convolutions after the first upsampling (`refine`) so that neighbouring blocks agree.
//!   - flat: a linear layer to a coarse `G^3` grid of `C`-channel cell codes, then one small
//!     MLP shared by all cells that turns a cell code into the `(R/G)^3` occupancy logits of
//!     the cell's block, put in place by a reshape / transpose (a 3D "pixel shuffle").

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, Conv3d, Conv3dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d, PaddingConfig3d,
};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, relu, sigmoid, tanh};
use serde::{Deserialize, Serialize};

use crate::conv_stack::he;
use crate::TrainError;

/// Negative slope of the decoder's LeakyReLUs. With plain ReLUs the first `cpu` run died:
/// Adam pushed every coarse-cell unit below zero within ~150 steps (the cheapest way to
/// predict "empty" everywhere), the decoder output became one constant block and the
/// validation IoU stayed at 0.
pub const LEAKY_SLOPE: f32 = 0.1;

/// Logit added to every output cell (the occupancy prior, about 10 % occupied): the network
/// starts near the empty-heavy optimum instead of learning it by shutting units down.
pub const PRIOR_LOGIT: f32 = -2.0;

/// Shape of a [`VoxelNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoxelNetConfig {
    /// Input picture side in pixels (square RGB).
    pub image: usize,
    /// Output channels of each convolution.
    pub channels: Vec<usize>,
    /// Stride of each convolution.
    pub strides: Vec<usize>,
    /// Kernel side of each convolution; empty (older runs) = 3 everywhere. A layer whose
    /// kernel equals its stride is a patchify layer (no padding); any other kernel is padded
    /// by `kernel / 2` on each side.
    #[serde(default)]
    pub kernels: Vec<usize>,
    /// Latent size `Z` (encoder output).
    pub latent: usize,
    /// Recurrent fusion with a `state_in` / `state_out` pair.
    pub fusion: bool,
    /// Flat GRU state size `S` (fusion with `grid = 0` only).
    pub state: usize,
    /// Voxel resolution `R`.
    pub resolution: usize,
    /// Flat decoder: coarse grid side `G` (`R` must be a multiple of it).
    pub coarse: usize,
    /// Flat decoder: channels `C` of a coarse cell's code.
    pub cell_channels: usize,
    /// Flat decoder: hidden width of the per-cell MLP.
    pub cell_hidden: usize,
    /// Side `G` of the 3D convolutional GRU's state grid (0 = flat GRU / flat decoder).
    /// `R / G` must be a power of two.
    #[serde(default)]
    pub grid: usize,
    /// Channels `C` of a state cell (grid only).
    #[serde(default)]
    pub grid_channels: usize,
    /// Grid decoder: output channels of the upsampling layers before the last one
    /// (`log2(R / G) - 1` entries; the last layer has one channel, the logit).
    #[serde(default)]
    pub up_channels: Vec<usize>,
    /// Grid decoder: 3x3x3 convolutions after the first upsampling.
    #[serde(default)]
    pub refine: usize,
    /// Batch normalisation of the latent (grid models, before its LeakyReLU; folded into
    /// the encoder's linear layer at export). Without it the latent's spread is small, the
    /// gates hardly depend on the picture and training stalls at the mean shape.
    #[serde(default)]
    pub latent_norm: bool,
}

impl VoxelNetConfig {
    /// Kernel side of convolution `i` (3 when `kernels` does not name it).
    pub fn kernel(&self, i: usize) -> usize {
        crate::conv_stack::kernel(&self.kernels, i)
    }

    /// Padding of convolution `i`: 0 for a patchify layer (kernel = stride), else `k / 2`.
    pub fn padding(&self, i: usize) -> usize {
        crate::conv_stack::padding(&self.kernels, &self.strides, i)
    }

    /// Number of 2x upsamplings of the grid decoder (`log2(R / G)`).
    pub fn ups(&self) -> usize {
        if self.grid == 0 {
            return 0;
        }
        (self.resolution / self.grid).trailing_zeros() as usize
    }

    /// Checks the shape.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |s: &str| Err(TrainError::Config(format!("voxel model: {s}")));
        if self.channels.is_empty() || self.channels.len() != self.strides.len() {
            return bad("channels and strides must have the same, non-zero length");
        }
        if !self.kernels.is_empty() && self.kernels.len() != self.channels.len() {
            return bad("kernels must be empty or as long as channels");
        }
        if self.strides.iter().any(|&s| s == 0 || s > 8) || self.kernels.contains(&0) {
            return bad("strides must be 1..=8 and kernels > 0");
        }
        if self.image < 8 || self.latent == 0 || self.feature_side() == 0 {
            return bad("image >= 8, latent > 0 and a non-empty feature map needed");
        }
        if let Some(ratio) = self.resolution.checked_div(self.grid) {
            if !self.fusion || self.grid_channels == 0 {
                return bad("a grid model fuses (fusion = true) and has grid_channels > 0");
            }
            if self.resolution % self.grid != 0 || !ratio.is_power_of_two() || ratio < 2 {
                return bad("resolution / grid must be a power of two >= 2");
            }
            if self.up_channels.len() + 1 != self.ups() || self.up_channels.contains(&0) {
                return bad("up_channels needs log2(resolution / grid) - 1 non-zero entries");
            }
            if self.refine > 0 && self.up_channels.is_empty() {
                return bad("refine needs at least two upsamplings");
            }
            return Ok(());
        }
        if self.fusion && self.state == 0 {
            return bad("a flat fusion model needs state > 0");
        }
        if self.coarse == 0 || self.resolution == 0 || self.resolution % self.coarse != 0 {
            return bad("resolution must be a positive multiple of coarse");
        }
        if self.cell_channels == 0 || self.cell_hidden == 0 {
            return bad("cell_channels and cell_hidden must be > 0");
        }
        Ok(())
    }

    /// Spatial side of the encoder's last feature map.
    pub fn feature_side(&self) -> usize {
        let mut s = self.image;
        for (i, &st) in self.strides.iter().enumerate() {
            let (k, p) = (self.kernel(i), self.padding(i));
            if s + 2 * p < k || st == 0 {
                return 0;
            }
            s = (s + 2 * p - k) / st + 1;
        }
        s
    }

    /// Length of the flattened encoder output.
    pub fn feature_len(&self) -> usize {
        let s = self.feature_side();
        self.channels.last().copied().unwrap_or(3) * s * s
    }

    /// Side of a coarse cell's block in voxels (`R / G`, flat decoder).
    pub fn block(&self) -> usize {
        self.resolution / self.coarse.max(1)
    }

    /// Size of the vector the flat decoder reads (`S` with fusion, else `Z`).
    pub fn decoder_in(&self) -> usize {
        if self.fusion {
            self.state
        } else {
            self.latent
        }
    }

    /// Shape of the fusion state of one sequence without the batch dimension: `[C, G, G,
    /// G]` (grid), `[S]` (flat), empty without fusion.
    pub fn state_dims(&self) -> Vec<usize> {
        if !self.fusion {
            Vec::new()
        } else if self.grid > 0 {
            vec![self.grid_channels, self.grid, self.grid, self.grid]
        } else {
            vec![self.state]
        }
    }

    /// Builds the network with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VoxelNet<B> {
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut cin = 3;
        for (i, (&cout, &st)) in self.channels.iter().zip(&self.strides).enumerate() {
            let (k, p) = (self.kernel(i), self.padding(i));
            convs.push(
                Conv2dConfig::new([cin, cout], [k, k])
                    .with_stride([st, st])
                    .with_padding(PaddingConfig2d::Explicit(p, p))
                    .with_initializer(he())
                    .init(device),
            );
            norms.push(BatchNormConfig::new(cout).init(device));
            cin = cout;
        }
        let fc = LinearConfig::new(self.feature_len(), self.latent).init(device);
        let fc_norm = (self.grid > 0 && self.latent_norm)
            .then(|| BatchNormConfig::new(self.latent).init(device));
        let flat_gru = self.fusion && self.grid == 0;
        let gru = flat_gru.then(|| {
            let x = || LinearConfig::new(self.latent, self.state).init(device);
            let h = || LinearConfig::new(self.state, self.state).init(device);
            GruCell {
                xr: x(),
                xz: x(),
                xn: x(),
                hr: h(),
                hz: h(),
                hn: h(),
            }
        });
        let (mut coarse, mut cell1, mut cell2) = (None, None, None);
        let mut cgru = None;
        let mut ups = Vec::new();
        let mut refine = Vec::new();
        if self.grid == 0 {
            let g3 = self.coarse.pow(3);
            coarse = Some(
                LinearConfig::new(self.decoder_in(), g3 * self.cell_channels)
                    .with_initializer(he())
                    .init(device),
            );
            cell1 = Some(
                LinearConfig::new(self.cell_channels, self.cell_hidden)
                    .with_initializer(he())
                    .init(device),
            );
            cell2 = Some(LinearConfig::new(self.cell_hidden, self.block().pow(3)).init(device));
        } else {
            let (c, g3) = (self.grid_channels, self.grid.pow(3));
            let x = || LinearConfig::new(self.latent, c * g3).init(device);
            let h = || conv3_config(c, c).init(device);
            cgru = Some(ConvGru {
                xr: x(),
                xu: x(),
                xn: x(),
                hr: h(),
                hu: h(),
                hn: h(),
            });
            let mut cin = c;
            let outs: Vec<usize> = self.up_channels.iter().copied().chain([1]).collect();
            for (i, &cout) in outs.iter().enumerate() {
                let last = i + 1 == outs.len();
                let cfg = LinearConfig::new(cin, 8 * cout);
                let cfg = if last {
                    cfg
                } else {
                    cfg.with_initializer(he())
                };
                ups.push(cfg.init(device));
                cin = cout;
            }
            let c1 = self.up_channels.first().copied().unwrap_or(1);
            for _ in 0..self.refine {
                refine.push(conv3_config(c1, c1).with_initializer(he()).init(device));
            }
        }
        VoxelNet {
            convs,
            norms,
            fc,
            fc_norm,
            gru,
            cgru,
            coarse,
            cell1,
            cell2,
            ups,
            refine,
            resolution: self.resolution,
            coarse_side: self.coarse,
            cell_channels: self.cell_channels,
            grid: self.grid,
            grid_channels: self.grid_channels,
        }
    }

    /// Number of weights (batch-norm statistics excluded).
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        let mut cin = 3;
        for (i, &c) in self.channels.iter().enumerate() {
            let k = self.kernel(i);
            n += cin * c * k * k + c + 2 * c;
            cin = c;
        }
        n += self.feature_len() * self.latent + self.latent;
        if self.grid > 0 && self.latent_norm {
            n += 2 * self.latent;
        }
        if self.grid > 0 {
            let (c, g3) = (self.grid_channels, self.grid.pow(3));
            n += 3 * (self.latent * c * g3 + c * g3) + 3 * (c * c * 27 + c);
            let mut cin = c;
            for cout in self.up_channels.iter().copied().chain([1]) {
                n += cin * 8 * cout + 8 * cout;
                cin = cout;
            }
            let c1 = self.up_channels.first().copied().unwrap_or(1);
            n += self.refine * (c1 * c1 * 27 + c1);
            return n;
        }
        if self.fusion {
            n += 3 * (self.latent * self.state + self.state)
                + 3 * (self.state * self.state + self.state);
        }
        let g3 = self.coarse.pow(3);
        n += self.decoder_in() * g3 * self.cell_channels + g3 * self.cell_channels;
        n += self.cell_channels * self.cell_hidden + self.cell_hidden;
        n += self.cell_hidden * self.block().pow(3) + self.block().pow(3);
        n
    }
}

/// A 3x3x3 convolution with padding 1 (same size), `cin -> cout` channels.
fn conv3_config(cin: usize, cout: usize) -> Conv3dConfig {
    Conv3dConfig::new([cin, cout], [3, 3, 3]).with_padding(PaddingConfig3d::Explicit(1, 1, 1))
}

/// A 3x3x3, stride 1, padding 1 convolution of `x` `[N, C, D, H, W]` with `conv`'s weights,
/// written as unfold (27 shifted slices of the zero-padded grid) and one matrix product, so
/// that it runs on every backend (burn's candle backend has no 3D convolution). Same result
/// as `conv.forward(x)`.
pub fn conv3x3x3<B: Backend>(conv: &Conv3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    let [n, c, d, h, w] = x.dims();
    let [cout, _, _, _, _] = conv.weight.dims();
    // zero padding: the last two dimensions with `pad`, then the depth through a reshape
    let p = x
        .reshape([n * c * d, h, w])
        .pad((1, 1, 1, 1), burn::tensor::ops::PadMode::Constant(0.0));
    let plane = (h + 2) * (w + 2);
    let p: Tensor<B, 3> = p.reshape([n * c, d, plane]);
    let p = p.pad((0, 0, 1, 1), burn::tensor::ops::PadMode::Constant(0.0));
    let p: Tensor<B, 5> = p.reshape([n, c, d + 2, h + 2, w + 2]);
    let cells = d * h * w;
    let mut taps = Vec::with_capacity(27);
    for kd in 0..3 {
        for kh in 0..3 {
            for kw in 0..3 {
                let s = p
                    .clone()
                    .slice([0..n, 0..c, kd..kd + d, kh..kh + h, kw..kw + w]);
                taps.push(s.reshape([n, c, 1, cells]));
            }
        }
    }
    // [N, C, 27, cells] -> [N, C 27, cells]: the order of the weight's [C, 3, 3, 3]
    let cols: Tensor<B, 4> = Tensor::cat(taps, 2);
    let cols: Tensor<B, 3> = cols.reshape([n, c * 27, cells]).swap_dims(1, 2);
    let wm: Tensor<B, 2> = conv.weight.val().reshape([cout, c * 27]).transpose();
    let mut y = cols.reshape([n * cells, c * 27]).matmul(wm);
    if let Some(b) = &conv.bias {
        y = y + b.val().unsqueeze::<2>();
    }
    y.reshape([n, cells, cout])
        .swap_dims(1, 2)
        .reshape([n, cout, d, h, w])
}

/// 3D pixel shuffle of cubic grids: `[N d^3, 8 C']` (cells in `(x, y, z)` order, each with
/// its 2x2x2 children's `C'` channels in `(a, b, c, C')` order) -> `[N (2d)^3, C']` (child
/// `(2x + a, 2y + b, 2z + c)`). The export writes the same Reshape / Transpose sequence.
pub fn shuffle_up<B: Backend>(x: Tensor<B, 2>, n: usize, d: usize) -> Tensor<B, 2> {
    let c = x.dims()[1] / 8;
    let x: Tensor<B, 5> = x.reshape([n * d, d, d, 2, 4 * c]);
    let x = x
        .permute(SHUFFLE_PERM_1)
        .reshape([n * 2 * d, d, d, 2, 2 * c]);
    x.permute(SHUFFLE_PERM_2).reshape([n * 8 * d * d * d, c])
}

/// First transpose of [`shuffle_up`] (moves the x child next to x).
pub const SHUFFLE_PERM_1: [isize; 5] = [0, 3, 1, 2, 4];
/// Second transpose of [`shuffle_up`] (moves the y child next to y).
pub const SHUFFLE_PERM_2: [isize; 5] = [0, 1, 3, 2, 4];

/// A GRU cell (PyTorch gate layout): `r = σ(x Wxr + h Whr)`, `u = σ(x Wxz + h Whz)`,
/// `n = tanh(x Wxn + r ⊙ (h Whn))`, `h' = n + u ⊙ (h - n)` (each product with its bias).
#[derive(Module, Debug)]
pub struct GruCell<B: Backend> {
    /// Input to reset gate.
    pub xr: Linear<B>,
    /// Input to update gate.
    pub xz: Linear<B>,
    /// Input to candidate.
    pub xn: Linear<B>,
    /// State to reset gate.
    pub hr: Linear<B>,
    /// State to update gate.
    pub hz: Linear<B>,
    /// State to candidate.
    pub hn: Linear<B>,
}

impl<B: Backend> GruCell<B> {
    /// One update: `x` `[N, Z]`, `h` `[N, S]` -> `[N, S]`.
    pub fn forward(&self, x: Tensor<B, 2>, h: Tensor<B, 2>) -> Tensor<B, 2> {
        let r = sigmoid(self.xr.forward(x.clone()) + self.hr.forward(h.clone()));
        let u = sigmoid(self.xz.forward(x.clone()) + self.hz.forward(h.clone()));
        let n = tanh(self.xn.forward(x) + r * self.hn.forward(h.clone()));
        n.clone() + u * (h - n)
    }
}

/// 3D-R2N2's 3D convolutional GRU over a `[N, C, G, G, G]` state (see the module
/// documentation): per-cell inputs from the latent (linear layers to `C G^3`), 3x3x3
/// convolutions over the hidden grid.
#[derive(Module, Debug)]
pub struct ConvGru<B: Backend> {
    /// Latent to reset gate input (`C G^3`, in `[C, G, G, G]` order).
    pub xr: Linear<B>,
    /// Latent to update gate input.
    pub xu: Linear<B>,
    /// Latent to candidate input.
    pub xn: Linear<B>,
    /// Hidden grid to reset gate (3x3x3).
    pub hr: Conv3d<B>,
    /// Hidden grid to update gate.
    pub hu: Conv3d<B>,
    /// Reset hidden grid to candidate.
    pub hn: Conv3d<B>,
}

impl<B: Backend> ConvGru<B> {
    /// One update: latent `x` `[N, Z]` (already activated), `h` `[N, C, G, G, G]`.
    pub fn forward(&self, x: Tensor<B, 2>, h: Tensor<B, 5>) -> Tensor<B, 5> {
        let dims = h.dims();
        let grid = |l: &Linear<B>| -> Tensor<B, 5> { l.forward(x.clone()).reshape(dims) };
        let r = sigmoid(grid(&self.xr) + conv3x3x3(&self.hr, h.clone()));
        let u = sigmoid(grid(&self.xu) + conv3x3x3(&self.hu, h.clone()));
        let n = tanh(grid(&self.xn) + conv3x3x3(&self.hn, r * h.clone()));
        n.clone() + u * (h - n)
    }
}

/// 3D-R2N2-style voxel network (see the module documentation).
#[derive(Module, Debug)]
pub struct VoxelNet<B: Backend> {
    /// Encoder convolutions.
    pub convs: Vec<Conv2d<B>>,
    /// Batch norms after the convolutions (folded into them at export).
    pub norms: Vec<BatchNorm<B>>,
    /// Features to latent.
    pub fc: Linear<B>,
    /// Batch normalisation of the latent (grid models with `latent_norm`).
    pub fc_norm: Option<BatchNorm<B>>,
    /// Flat recurrent fusion (None: grid fusion or single view).
    pub gru: Option<GruCell<B>>,
    /// 3D convolutional GRU (grid models).
    pub cgru: Option<ConvGru<B>>,
    /// Flat decoder: input to coarse cell codes.
    pub coarse: Option<Linear<B>>,
    /// Flat decoder: per-cell MLP, hidden layer.
    pub cell1: Option<Linear<B>>,
    /// Flat decoder: per-cell MLP, block logits.
    pub cell2: Option<Linear<B>>,
    /// Grid decoder: per-cell linear layers of the 2x upsamplings (`C -> 8 C'`).
    pub ups: Vec<Linear<B>>,
    /// Grid decoder: 3x3x3 convolutions after the first upsampling.
    pub refine: Vec<Conv3d<B>>,
    /// `R`.
    pub resolution: usize,
    /// Flat decoder `G`.
    pub coarse_side: usize,
    /// Flat decoder `C`.
    pub cell_channels: usize,
    /// Grid side (0 = flat model).
    pub grid: usize,
    /// Grid cell channels.
    pub grid_channels: usize,
}

impl<B: Backend> VoxelNet<B> {
    /// Latents of a batch of pictures `[N, 3, H, W]` -> `[N, Z]` (grid models: after the
    /// LeakyReLU that feeds the gates).
    pub fn encode(&self, image: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = image;
        for (conv, bn) in self.convs.iter().zip(&self.norms) {
            x = relu(bn.forward(conv.forward(x)));
        }
        let [n, c, h, w] = x.dims();
        let mut z = self.fc.forward(x.reshape([n, c * h * w]));
        if let Some(bn) = &self.fc_norm {
            z = bn.forward(z);
        }
        if self.cgru.is_some() {
            leaky_relu(z, f64::from(LEAKY_SLOPE))
        } else {
            z
        }
    }

    /// Flat state size (`C G^3` for grid models), 0 without fusion.
    pub fn state_size(&self) -> usize {
        if self.cgru.is_some() {
            return self.grid_channels * self.grid.pow(3);
        }
        self.gru
            .as_ref()
            .map(|g| g.hr.weight.dims()[0])
            .unwrap_or(0)
    }

    /// Whether the model fuses views in a state.
    pub fn fuses(&self) -> bool {
        self.gru.is_some() || self.cgru.is_some()
    }

    /// Occupancy logits `[N, R, R, R]` from flat decoder inputs `[N, D]`.
    fn decode_flat(&self, d: Tensor<B, 2>) -> Tensor<B, 4> {
        let n = d.dims()[0];
        let (g, r) = (self.coarse_side, self.resolution);
        let b = r / g;
        let slope = f64::from(LEAKY_SLOPE);
        let (Some(coarse), Some(cell1), Some(cell2)) = (&self.coarse, &self.cell1, &self.cell2)
        else {
            return Tensor::zeros([n, r, r, r], &d.device());
        };
        let cells =
            leaky_relu(coarse.forward(d), slope).reshape([n, g * g * g, self.cell_channels]);
        let blocks = cell2
            .forward(leaky_relu(cell1.forward(cells), slope))
            .add_scalar(PRIOR_LOGIT);
        // [n G, G, G, b, b, b] (ndarray has at most 6 dimensions) -> x = cx b + sx, ...
        let blocks: Tensor<B, 6> = blocks.reshape([n * g, g, g, b, b, b]);
        blocks.permute([0, 3, 1, 4, 2, 5]).reshape([n, r, r, r])
    }

    /// Occupancy logits `[N, R, R, R]` from state grids `[N, C, G, G, G]`.
    pub fn decode_grid(&self, h: Tensor<B, 5>) -> Tensor<B, 4> {
        let [n, c, g, _, _] = h.dims();
        let slope = f64::from(LEAKY_SLOPE);
        // channels last: [N G^3, C]
        let mut x: Tensor<B, 2> = h
            .reshape([n, c, g * g * g])
            .swap_dims(1, 2)
            .reshape([n * g * g * g, c]);
        let mut side = g;
        let last = self.ups.len().saturating_sub(1);
        for (i, up) in self.ups.iter().enumerate() {
            x = shuffle_up(up.forward(x), n, side);
            side *= 2;
            if i == last {
                break;
            }
            x = leaky_relu(x, slope);
            if i == 0 {
                for conv in &self.refine {
                    let ch = x.dims()[1];
                    let cells = side * side * side;
                    let grid: Tensor<B, 5> = x
                        .reshape([n, cells, ch])
                        .swap_dims(1, 2)
                        .reshape([n, ch, side, side, side]);
                    let y = leaky_relu(conv3x3x3(conv, grid), slope);
                    let co = y.dims()[1];
                    x = y
                        .reshape([n, co, cells])
                        .swap_dims(1, 2)
                        .reshape([n * cells, co]);
                }
            }
        }
        let r = self.resolution;
        x.add_scalar(PRIOR_LOGIT).reshape([n, r, r, r])
    }

    /// One fusion step from latents `[N, Z]` and flat states `[N, S]` -> (logits, new
    /// states).
    fn fuse(&self, z: Tensor<B, 2>, state: Tensor<B, 2>) -> (Tensor<B, 4>, Tensor<B, 2>) {
        if let Some(cg) = &self.cgru {
            let n = z.dims()[0];
            let g = self.grid;
            let h: Tensor<B, 5> = state.reshape([n, self.grid_channels, g, g, g]);
            let h = cg.forward(z, h);
            let flat = h.clone().reshape([n, self.state_size()]);
            return (self.decode_grid(h), flat);
        }
        match &self.gru {
            Some(gru) => {
                let h = gru.forward(z, state);
                (self.decode_flat(h.clone()), h)
            }
            None => (self.decode_flat(z), state),
        }
    }

    /// One fusion step: pictures `[N, 3, H, W]` and flat states `[N, S]` (grid models: the
    /// `[C, G, G, G]` grid flattened) -> (logits, new states). Without fusion the state is
    /// returned unchanged and ignored.
    pub fn step(&self, image: Tensor<B, 4>, state: Tensor<B, 2>) -> (Tensor<B, 4>, Tensor<B, 2>) {
        let z = self.encode(image);
        self.fuse(z, state)
    }

    /// Zero state for `n` sequences (`[n, max(S, 1)]`).
    pub fn zero_state(&self, n: usize, device: &B::Device) -> Tensor<B, 2> {
        Tensor::zeros([n, self.state_size().max(1)], device)
    }

    /// Single-view prediction (fusion models start from the zero state).
    pub fn forward(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        let n = image.dims()[0];
        let s = self.zero_state(n, &image.device());
        self.step(image, s).0
    }

    /// Sequences of views `[N, T, 3, H, W]` -> logits after each view (`T` tensors
    /// `[N, R, R, R]`). The encoder runs once on all `N T` pictures. Without fusion each
    /// view is predicted on its own.
    pub fn forward_sequence(&self, images: Tensor<B, 5>) -> Vec<Tensor<B, 4>> {
        let [n, t, c, h, w] = images.dims();
        let z = self.encode(images.reshape([n * t, c, h, w]));
        let zdim = z.dims()[1];
        let z: Tensor<B, 3> = z.reshape([n, t, zdim]);
        let mut out = Vec::with_capacity(t);
        let mut state = self.zero_state(n, &z.device());
        for k in 0..t {
            let zk: Tensor<B, 2> = z
                .clone()
                .slice([0..n, k..k + 1, 0..zdim])
                .reshape([n, zdim]);
            let (o, s) = self.fuse(zk, state);
            state = s;
            out.push(o);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NdArrayCpu;

    fn cfg(fusion: bool) -> VoxelNetConfig {
        VoxelNetConfig {
            image: 16,
            channels: vec![4, 8],
            strides: vec![2, 2],
            kernels: vec![],
            latent: 8,
            fusion,
            state: 6,
            resolution: 8,
            coarse: 2,
            cell_channels: 3,
            cell_hidden: 5,
            grid: 0,
            grid_channels: 0,
            up_channels: vec![],
            refine: 0,
            latent_norm: false,
        }
    }

    fn grid_cfg() -> VoxelNetConfig {
        VoxelNetConfig {
            kernels: vec![2, 2],
            grid: 2,
            grid_channels: 3,
            up_channels: vec![4],
            refine: 1,
            latent_norm: true,
            ..cfg(true)
        }
    }

    #[test]
    fn shapes_and_param_count() {
        for c in [cfg(false), cfg(true), grid_cfg()] {
            c.validate().unwrap();
            let dev = Default::default();
            let m = c.init::<NdArrayCpu>(&dev);
            let n: usize = m.num_params();
            let bn_stats = 2 * (4 + 8) + if c.latent_norm { 2 * 8 } else { 0 };
            // burn counts the batch norms' running statistics too
            assert_eq!(n, c.param_count() + bn_stats, "{c:?}");
            let x = Tensor::<NdArrayCpu, 5>::ones([2, 3, 3, 16, 16], &dev);
            let outs = m.forward_sequence(x);
            assert_eq!(outs.len(), 3);
            assert_eq!(outs[2].dims(), [2, 8, 8, 8]);
            let dims = c.state_dims();
            let want = if dims.is_empty() {
                0
            } else {
                dims.iter().product()
            };
            assert_eq!(m.state_size(), want);
        }
        assert_eq!(grid_cfg().state_dims(), vec![3, 2, 2, 2]);
        let mut bad = cfg(true);
        bad.coarse = 3;
        assert!(bad.validate().is_err());
        let mut bad = grid_cfg();
        bad.up_channels = vec![4, 2];
        assert!(bad.validate().is_err());
        bad = grid_cfg();
        bad.fusion = false;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn unfolded_conv3d_matches_burn() {
        let dev = Default::default();
        let conv = conv3_config(3, 5).init::<NdArrayCpu>(&dev);
        let vals: Vec<f32> = (0..2 * 3 * 4 * 3 * 5)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let x =
            Tensor::<NdArrayCpu, 1>::from_floats(vals.as_slice(), &dev).reshape([2, 3, 4, 3, 5]);
        let want: Vec<f32> = conv.forward(x.clone()).into_data().to_vec().unwrap();
        let got: Vec<f32> = conv3x3x3(&conv, x).into_data().to_vec().unwrap();
        assert_eq!(want.len(), got.len());
        let d = want
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn shuffle_up_places_children() {
        // child (a, b, c) channel k of cell (x, y, z) lands at (2x + a, 2y + b, 2z + c)
        let dev = Default::default();
        let (n, d, c) = (2usize, 3usize, 2usize);
        let vals: Vec<f32> = (0..n * d * d * d * 8 * c).map(|i| i as f32).collect();
        let x = Tensor::<NdArrayCpu, 1>::from_floats(vals.as_slice(), &dev)
            .reshape([n * d * d * d, 8 * c]);
        let y: Vec<f32> = shuffle_up(x, n, d).into_data().to_vec().unwrap();
        let s = 2 * d;
        for b in 0..n {
            for (xx, yy, zz) in
                (0..s).flat_map(|x| (0..s).flat_map(move |y| (0..s).map(move |z| (x, y, z))))
            {
                for k in 0..c {
                    let cell = ((b * d + xx / 2) * d + yy / 2) * d + zz / 2;
                    let child = ((xx % 2) * 2 + yy % 2) * 2 + zz % 2;
                    let want = (cell * 8 * c + child * c + k) as f32;
                    let at = (((b * s + xx) * s + yy) * s + zz) * c + k;
                    assert_eq!(y[at], want);
                }
            }
        }
    }

    #[test]
    fn block_shuffle_places_cells() {
        // cell2 outputs the block index pattern: check that voxel (x, y, z) comes from cell
        // (x / b, y / b, z / b) and sub-voxel (x % b, y % b, z % b).
        let dev = Default::default();
        let (g, b, r) = (2usize, 4usize, 8usize);
        let vals: Vec<f32> = (0..g * g * g * b * b * b).map(|i| i as f32).collect();
        let blocks =
            Tensor::<NdArrayCpu, 1>::from_floats(vals.as_slice(), &dev).reshape([g, g, g, b, b, b]);
        let grid: Vec<f32> = blocks
            .permute([0, 3, 1, 4, 2, 5])
            .reshape([1, r, r, r])
            .into_data()
            .to_vec()
            .unwrap();
        for x in 0..r {
            for y in 0..r {
                for z in 0..r {
                    let cell = ((x / b) * g + y / b) * g + z / b;
                    let sub = ((x % b) * b + y % b) * b + z % b;
                    assert_eq!(grid[(x * r + y) * r + z], (cell * b * b * b + sub) as f32);
                }
            }
        }
    }
}
