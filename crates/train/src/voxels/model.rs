//! The 3D-R2N2-style voxel network, generic over the burn backend.
//!
//! * Encoder: strided 3x3 convolutions (batch norm, ReLU) and a linear layer to a latent `z`.
//! * Fusion (optional): a GRU cell over the latent, `h' = GRU(z, h)`, written as plain linear
//!   layers (exported as Gemm / Sigmoid / Tanh / Mul / Add / Sub). Its hidden state `h` is the
//!   contract's `state_in` / `state_out` (`[1, S]`, all zeros = no memory). 3D-R2N2 fuses in a
//!   3D convolutional GRU over a 4^3 grid; a GRU over the latent keeps the exported graph to
//!   ops every runtime has and costs `6 S^2` weights.
//! * Decoder (LeakyReLU, see [`LEAKY_SLOPE`]; output offset [`PRIOR_LOGIT`]): a linear
//!   layer to a coarse `G^3` grid of `C`-channel cell codes, then one small
//!   MLP shared by all cells that turns a cell code into the `(R/G)^3` occupancy logits of the
//!   cell's block; the blocks are put in place by a reshape / transpose (a 3D "pixel
//!   shuffle"). No 3D convolution: burn's candle backend has none and tract's 3D
//!   `ConvTranspose` support is not needed.

use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, relu, sigmoid, tanh};
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Negative slope of the decoder's LeakyReLUs. With plain ReLUs the first `cpu` run died:
/// Adam pushed every coarse-cell unit below zero within ~150 steps (the cheapest way to
/// predict "empty" everywhere), the decoder output became one constant block and the
/// validation IoU stayed at 0.
pub const LEAKY_SLOPE: f32 = 0.1;

/// Logit added to every output cell (the occupancy prior, about 10 % occupied): the network
/// starts near the empty-heavy optimum instead of learning it by shutting units down.
pub const PRIOR_LOGIT: f32 = -2.0;

fn he() -> Initializer {
    Initializer::KaimingUniform {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: false,
    }
}

/// Shape of a [`VoxelNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoxelNetConfig {
    /// Input picture side in pixels (square RGB).
    pub image: usize,
    /// Output channels of each 3x3 convolution.
    pub channels: Vec<usize>,
    /// Stride of each convolution (1 or 2).
    pub strides: Vec<usize>,
    /// Latent size `Z` (encoder output).
    pub latent: usize,
    /// Recurrent fusion (GRU over the latent) with a `state_in` / `state_out` pair.
    pub fusion: bool,
    /// GRU state size `S` (fusion only).
    pub state: usize,
    /// Voxel resolution `R`.
    pub resolution: usize,
    /// Coarse grid side `G` (`R` must be a multiple of it).
    pub coarse: usize,
    /// Channels `C` of a coarse cell's code.
    pub cell_channels: usize,
    /// Hidden width of the per-cell MLP.
    pub cell_hidden: usize,
}

impl VoxelNetConfig {
    /// Checks the shape.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |s: &str| Err(TrainError::Config(format!("voxel model: {s}")));
        if self.channels.is_empty() || self.channels.len() != self.strides.len() {
            return bad("channels and strides must have the same, non-zero length");
        }
        if self.strides.iter().any(|&s| s != 1 && s != 2) {
            return bad("strides must be 1 or 2");
        }
        if self.image < 8 || self.latent == 0 || (self.fusion && self.state == 0) {
            return bad("image >= 8, latent > 0 and (fusion) state > 0 needed");
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
        self.strides
            .iter()
            .fold(self.image, |s, &st| (s - 1) / st + 1)
    }

    /// Length of the flattened encoder output.
    pub fn feature_len(&self) -> usize {
        let s = self.feature_side();
        self.channels.last().copied().unwrap_or(3) * s * s
    }

    /// Side of a coarse cell's block in voxels (`R / G`).
    pub fn block(&self) -> usize {
        self.resolution / self.coarse.max(1)
    }

    /// Size of the vector the decoder reads (`S` with fusion, else `Z`).
    pub fn decoder_in(&self) -> usize {
        if self.fusion {
            self.state
        } else {
            self.latent
        }
    }

    /// Builds the network with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> VoxelNet<B> {
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut cin = 3;
        for (&cout, &st) in self.channels.iter().zip(&self.strides) {
            convs.push(
                Conv2dConfig::new([cin, cout], [3, 3])
                    .with_stride([st, st])
                    .with_padding(PaddingConfig2d::Explicit(1, 1))
                    .with_initializer(he())
                    .init(device),
            );
            norms.push(BatchNormConfig::new(cout).init(device));
            cin = cout;
        }
        let fc = LinearConfig::new(self.feature_len(), self.latent).init(device);
        let gru = self.fusion.then(|| {
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
        let g3 = self.coarse.pow(3);
        let coarse = LinearConfig::new(self.decoder_in(), g3 * self.cell_channels)
            .with_initializer(he())
            .init(device);
        let cell1 = LinearConfig::new(self.cell_channels, self.cell_hidden)
            .with_initializer(he())
            .init(device);
        let cell2 = LinearConfig::new(self.cell_hidden, self.block().pow(3)).init(device);
        VoxelNet {
            convs,
            norms,
            fc,
            gru,
            coarse,
            cell1,
            cell2,
            resolution: self.resolution,
            coarse_side: self.coarse,
            cell_channels: self.cell_channels,
        }
    }

    /// Number of weights (batch-norm statistics excluded).
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        let mut cin = 3;
        for &c in &self.channels {
            n += cin * c * 9 + c + 2 * c;
            cin = c;
        }
        n += self.feature_len() * self.latent + self.latent;
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

/// 3D-R2N2-style voxel network (see the module documentation).
#[derive(Module, Debug)]
pub struct VoxelNet<B: Backend> {
    /// Encoder convolutions.
    pub convs: Vec<Conv2d<B>>,
    /// Batch norms after the convolutions (folded into them at export).
    pub norms: Vec<BatchNorm<B>>,
    /// Features to latent.
    pub fc: Linear<B>,
    /// Recurrent fusion (None: single view).
    pub gru: Option<GruCell<B>>,
    /// Decoder input to coarse cell codes.
    pub coarse: Linear<B>,
    /// Per-cell MLP, hidden layer.
    pub cell1: Linear<B>,
    /// Per-cell MLP, block logits.
    pub cell2: Linear<B>,
    /// `R`.
    pub resolution: usize,
    /// `G`.
    pub coarse_side: usize,
    /// `C`.
    pub cell_channels: usize,
}

impl<B: Backend> VoxelNet<B> {
    /// Latents of a batch of pictures `[N, 3, H, W]` -> `[N, Z]`.
    pub fn encode(&self, image: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = image;
        for (conv, bn) in self.convs.iter().zip(&self.norms) {
            x = relu(bn.forward(conv.forward(x)));
        }
        let [n, c, h, w] = x.dims();
        self.fc.forward(x.reshape([n, c * h * w]))
    }

    /// GRU state size, 0 without fusion.
    pub fn state_size(&self) -> usize {
        self.gru
            .as_ref()
            .map(|g| g.hr.weight.dims()[0])
            .unwrap_or(0)
    }

    /// Occupancy logits `[N, R, R, R]` from decoder inputs `[N, D]`.
    pub fn decode(&self, d: Tensor<B, 2>) -> Tensor<B, 4> {
        let n = d.dims()[0];
        let (g, r) = (self.coarse_side, self.resolution);
        let b = r / g;
        let slope = f64::from(LEAKY_SLOPE);
        let cells =
            leaky_relu(self.coarse.forward(d), slope).reshape([n, g * g * g, self.cell_channels]);
        let blocks = self
            .cell2
            .forward(leaky_relu(self.cell1.forward(cells), slope))
            .add_scalar(PRIOR_LOGIT);
        // [n G, G, G, b, b, b] (ndarray has at most 6 dimensions) -> x = cx b + sx, ...
        let blocks: Tensor<B, 6> = blocks.reshape([n * g, g, g, b, b, b]);
        blocks.permute([0, 3, 1, 4, 2, 5]).reshape([n, r, r, r])
    }

    /// One fusion step: pictures `[N, 3, H, W]` and states `[N, S]` -> (logits, new states).
    /// Without fusion the state is returned unchanged and ignored.
    pub fn step(&self, image: Tensor<B, 4>, state: Tensor<B, 2>) -> (Tensor<B, 4>, Tensor<B, 2>) {
        let z = self.encode(image);
        match &self.gru {
            Some(gru) => {
                let h = gru.forward(z, state);
                (self.decode(h.clone()), h)
            }
            None => (self.decode(z), state),
        }
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
            match &self.gru {
                Some(gru) => {
                    state = gru.forward(zk, state);
                    out.push(self.decode(state.clone()));
                }
                None => out.push(self.decode(zk)),
            }
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
            latent: 8,
            fusion,
            state: 6,
            resolution: 8,
            coarse: 2,
            cell_channels: 3,
            cell_hidden: 5,
        }
    }

    #[test]
    fn shapes_and_param_count() {
        for fusion in [false, true] {
            let c = cfg(fusion);
            c.validate().unwrap();
            let dev = Default::default();
            let m = c.init::<NdArrayCpu>(&dev);
            let n: usize = m.num_params();
            let bn_stats = 2 * (4 + 8);
            // burn counts the batch norms' running statistics too
            assert_eq!(n, c.param_count() + bn_stats, "fusion {fusion}");
            let x = Tensor::<NdArrayCpu, 5>::ones([2, 3, 3, 16, 16], &dev);
            let outs = m.forward_sequence(x);
            assert_eq!(outs.len(), 3);
            assert_eq!(outs[2].dims(), [2, 8, 8, 8]);
            assert_eq!(m.state_size(), if fusion { 6 } else { 0 });
        }
        let mut bad = cfg(true);
        bad.coarse = 3;
        assert!(bad.validate().is_err());
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
