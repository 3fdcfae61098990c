//! Networks. Every model is generic over the burn backend.
//!
//! [`PointNet`] is the PSGN-style point-set generator: a small strided CNN encoder, a hidden
//! fully connected layer and a linear decoder to `K x N x 3` coordinates (K hypotheses), with
//! an optional per-point part-label head (semantic reconstruction).

use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, relu, tanh};
use serde::{Deserialize, Serialize};

use crate::conv_stack::he;

/// Shape of a [`PointNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointNetConfig {
    /// Input picture side in pixels (square RGB).
    pub image: usize,
    /// Output channels of each convolution; each layer has stride 2 when its entry in
    /// `strides` is 2.
    pub channels: Vec<usize>,
    /// Stride of each convolution.
    pub strides: Vec<usize>,
    /// Kernel side of each convolution; empty (older runs) = 3 everywhere. A layer whose
    /// kernel equals its stride is a patchify layer (non-overlapping patches, no padding:
    /// tract lowers it without a `Pad` node, see bench/onnx/RESULTS.md section 0a);
    /// any other kernel is padded by `kernel / 2` on each side.
    #[serde(default)]
    pub kernels: Vec<usize>,
    /// Width of the hidden fully connected layer.
    pub hidden: usize,
    /// Points per hypothesis `N`.
    pub points: usize,
    /// Hypotheses `K`.
    pub hypotheses: usize,
    /// Part classes `L` of the label head; 0 = no label head.
    pub classes: usize,
    /// Half-extent of the output box: coordinates are `extent * tanh(raw)`.
    pub extent: f32,
    /// Batch normalisation after every convolution (folded into the convolution at export).
    #[serde(default)]
    pub batch_norm: bool,
    /// ReLU after the hidden fully connected layer. With it, most hidden units of the
    /// shipped 2026-11 run died (98 % never active on test pictures), leaving a ~7-wide
    /// latent and near-constant predictions; `false` makes the latent linear.
    #[serde(default = "default_true")]
    pub hidden_relu: bool,
    /// Batch normalisation after the hidden fully connected layer (before its nonlinearity;
    /// folded into the layer at export). It re-centres every unit on each batch, so a unit
    /// cannot drift to "always negative" and die. Absent in configs of older runs: `false`.
    #[serde(default)]
    pub hidden_norm: bool,
    /// Negative slope of the hidden nonlinearity when `hidden_relu` is on: 0 = plain ReLU,
    /// > 0 = LeakyReLU (a unit below zero still passes gradient). Older runs: 0.
    #[serde(default)]
    pub hidden_leak: f32,
    /// Kaiming-uniform gain of the hidden fully connected layer's weights. Older runs used
    /// sqrt 2 (He); a smaller gain keeps the first steps' pre-activations small.
    #[serde(default = "default_hidden_gain")]
    pub hidden_gain: f64,
    /// Kaiming-uniform gain of the coordinate decoder's weights (burn's default 1/sqrt 3 in
    /// older runs). A small gain starts every picture near the same cloud, so that a latent
    /// whose units all vary (hidden batch norm) does not begin as picture-dependent noise.
    #[serde(default = "default_head_gain")]
    pub head_gain: f64,
}

fn default_head_gain() -> f64 {
    1.0 / 3f64.sqrt()
}

fn default_hidden_gain() -> f64 {
    std::f64::consts::SQRT_2
}

fn default_true() -> bool {
    true
}

/// Kaiming uniform with an explicit gain (for the hidden fully connected layer).
fn kaiming(gain: f64) -> Initializer {
    Initializer::KaimingUniform {
        gain,
        fan_out_only: false,
    }
}

impl PointNetConfig {
    /// Kernel side of convolution `i` (3 when `kernels` does not name it).
    pub fn kernel(&self, i: usize) -> usize {
        crate::conv_stack::kernel(&self.kernels, i)
    }

    /// Padding (each side) of convolution `i`: 0 for a patchify layer (kernel = stride),
    /// `kernel / 2` otherwise.
    pub fn padding(&self, i: usize) -> usize {
        crate::conv_stack::padding(&self.kernels, &self.strides, i)
    }

    /// Spatial side of the encoder's last feature map.
    pub fn feature_side(&self) -> usize {
        let mut s = self.image;
        for (i, &st) in self.strides.iter().enumerate() {
            let (k, p) = (self.kernel(i), self.padding(i));
            s = (s + 2 * p).saturating_sub(k) / st + 1;
        }
        s
    }

    /// Length of the flattened encoder output.
    pub fn feature_len(&self) -> usize {
        let side = self.feature_side();
        self.channels.last().copied().unwrap_or(3) * side * side
    }

    /// Builds the network with fresh weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PointNet<B> {
        let mut convs = Vec::with_capacity(self.channels.len());
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
            cin = cout;
        }
        let norms = if self.batch_norm {
            self.channels
                .iter()
                .map(|&c| BatchNormConfig::new(c).init(device))
                .collect()
        } else {
            Vec::new()
        };
        let fc = LinearConfig::new(self.feature_len(), self.hidden)
            .with_initializer(kaiming(self.hidden_gain))
            .init(device);
        let fc_norm = self
            .hidden_norm
            .then(|| BatchNormConfig::new(self.hidden).init(device));
        let k = self.hypotheses * self.points;
        let head = LinearConfig::new(self.hidden, k * 3)
            .with_initializer(kaiming(self.head_gain))
            .init(device);
        let label_head = (self.classes > 0)
            .then(|| LinearConfig::new(self.hidden, k * self.classes).init(device));
        PointNet {
            convs,
            norms,
            fc,
            fc_norm,
            head,
            label_head,
            hypotheses: self.hypotheses,
            points: self.points,
            classes: self.classes,
            extent: self.extent,
            hidden_relu: self.hidden_relu,
            hidden_leak: self.hidden_leak,
        }
    }

    /// Number of weights.
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        let mut cin = 3;
        for (i, &c) in self.channels.iter().enumerate() {
            let k = self.kernel(i);
            n += cin * c * k * k + c + if self.batch_norm { 2 * c } else { 0 };
            cin = c;
        }
        let k = self.hypotheses * self.points;
        n += self.feature_len() * self.hidden + self.hidden;
        if self.hidden_norm {
            n += 2 * self.hidden;
        }
        n += self.hidden * k * 3 + k * 3;
        if self.classes > 0 {
            n += self.hidden * k * self.classes + k * self.classes;
        }
        n
    }
}

/// Outputs of a [`PointNet`].
#[derive(Debug, Clone)]
pub struct PointOutput<B: Backend> {
    /// `[B, K, N, 3]` coordinates in the object frame.
    pub points: Tensor<B, 4>,
    /// `[B, K, N, L]` part-label logits, when the model has a label head.
    pub labels: Option<Tensor<B, 4>>,
}

/// PSGN-style point-set generator.
#[derive(Module, Debug)]
pub struct PointNet<B: Backend> {
    /// Encoder convolutions (`PointNetConfig::kernels`, ReLU after each).
    pub convs: Vec<Conv2d<B>>,
    /// Batch normalisations after the convolutions (empty: none).
    pub norms: Vec<BatchNorm<B>>,
    /// Hidden fully connected layer.
    pub fc: Linear<B>,
    /// Batch normalisation after the hidden layer (None: none).
    pub fc_norm: Option<BatchNorm<B>>,
    /// Coordinate decoder.
    pub head: Linear<B>,
    /// Optional part-label decoder.
    pub label_head: Option<Linear<B>>,
    /// `K`.
    pub hypotheses: usize,
    /// `N`.
    pub points: usize,
    /// `L` (0: no labels).
    pub classes: usize,
    /// Output half-extent.
    pub extent: f32,
    /// Nonlinearity on the hidden layer (ReLU, or LeakyReLU with `hidden_leak`).
    pub hidden_relu: bool,
    /// Negative slope of the hidden LeakyReLU (0: ReLU).
    pub hidden_leak: f32,
}

impl<B: Backend> PointNet<B> {
    /// The hidden layer's pre-activations (after its batch normalisation, before the
    /// nonlinearity) of a batch of pictures `[B, 3, H, W]`.
    pub fn hidden_pre(&self, image: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = image;
        for (i, conv) in self.convs.iter().enumerate() {
            x = conv.forward(x);
            if let Some(bn) = self.norms.get(i) {
                x = bn.forward(x);
            }
            x = relu(x);
        }
        let [b, c, h, w] = x.dims();
        let x = x.reshape([b, c * h * w]);
        let z = self.fc.forward(x);
        match &self.fc_norm {
            Some(bn) => bn.forward(z),
            None => z,
        }
    }

    /// The latent (hidden layer activations) of a batch of pictures `[B, 3, H, W]`.
    pub fn encode(&self, image: Tensor<B, 4>) -> Tensor<B, 2> {
        let z = self.hidden_pre(image);
        if !self.hidden_relu {
            z
        } else if self.hidden_leak > 0.0 {
            leaky_relu(z, f64::from(self.hidden_leak))
        } else {
            relu(z)
        }
    }

    /// Full forward pass.
    pub fn forward(&self, image: Tensor<B, 4>) -> PointOutput<B> {
        let b = image.dims()[0];
        let z = self.encode(image);
        let raw = self.head.forward(z.clone());
        let points =
            tanh(raw)
                .mul_scalar(self.extent)
                .reshape([b, self.hypotheses, self.points, 3]);
        let labels = self.label_head.as_ref().map(|h| {
            h.forward(z)
                .reshape([b, self.hypotheses, self.points, self.classes])
        });
        PointOutput { points, labels }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};

    use super::*;

    type Ad = Autodiff<NdArray<f32>>;

    fn tiny(hidden_norm: bool) -> PointNetConfig {
        PointNetConfig {
            image: 16,
            channels: vec![4, 8],
            strides: vec![2, 2],
            kernels: vec![],
            hidden: 32,
            points: 16,
            hypotheses: 1,
            classes: 0,
            extent: 0.5,
            batch_norm: true,
            hidden_relu: true,
            hidden_norm,
            hidden_leak: 0.01,
            hidden_gain: 1.0,
            head_gain: 0.1,
        }
    }

    fn pictures(b: usize, side: usize) -> Tensor<Ad, 4> {
        let v: Vec<f32> = (0..b * 3 * side * side)
            .map(|i| ((i * 7919 + i / 97) % 255) as f32 / 127.5 - 1.0)
            .collect();
        Tensor::from_data(TensorData::new(v, [b, 3, side, side]), &Default::default())
    }

    #[test]
    fn hidden_norm_keeps_every_unit_alive_in_training() {
        let cfg = tiny(true);
        let m = cfg.init::<Ad>(&Default::default());
        assert!(m.fc_norm.is_some());
        let z = m
            .hidden_pre(pictures(8, cfg.image))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        // batch statistics: every unit is centred on its beta (0), so it is positive on
        // some picture and negative on another, whatever the weights
        for u in 0..cfg.hidden {
            let col: Vec<f32> = z.chunks(cfg.hidden).map(|r| r[u]).collect();
            let mean = col.iter().sum::<f32>() / col.len() as f32;
            assert!(mean.abs() < 1e-4, "unit {u} mean {mean}");
            assert!(col.iter().any(|&v| v > 0.0) && col.iter().any(|&v| v < 0.0));
        }
        // burn's num_params also counts the batch norms' running mean and variance
        let running = 2 * (cfg.channels.iter().sum::<usize>() + cfg.hidden);
        assert_eq!(
            cfg.param_count() + running,
            m.num_params(),
            "param_count must count the hidden norm"
        );
    }

    #[test]
    fn old_configs_read_back_without_the_hidden_norm() {
        let mut v = serde_json::to_value(tiny(true)).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in [
            "hidden_norm",
            "hidden_leak",
            "hidden_gain",
            "head_gain",
            "kernels",
        ] {
            o.remove(k);
        }
        let c: PointNetConfig = serde_json::from_value(v).unwrap();
        assert!(!c.hidden_norm);
        assert_eq!(c.hidden_leak, 0.0);
        assert_eq!(c.hidden_gain, std::f64::consts::SQRT_2);
        assert_eq!(c.head_gain, 1.0 / 3f64.sqrt());
        assert!(c.kernels.is_empty());
        let m = c.init::<Ad>(&Default::default());
        assert!(m.fc_norm.is_none());
        assert_eq!(m.convs[0].kernel_size, [3, 3]);
        assert_eq!(c.feature_side(), 4);
    }

    #[test]
    fn patchify_layers_have_no_padding_and_the_declared_output_side() {
        let mut cfg = tiny(true);
        cfg.kernels = vec![4, 3];
        cfg.strides = vec![4, 1];
        // 16 -> 4 (4x4/4, no padding) -> 4 (3x3/1, padding 1)
        assert_eq!((cfg.padding(0), cfg.padding(1)), (0, 1));
        assert_eq!(cfg.feature_side(), 4);
        let m = cfg.init::<Ad>(&Default::default());
        assert_eq!(m.convs[0].kernel_size, [4, 4]);
        let z = m.hidden_pre(pictures(2, cfg.image));
        assert_eq!(z.dims(), [2, cfg.hidden]);
        let running = 2 * (cfg.channels.iter().sum::<usize>() + cfg.hidden);
        assert_eq!(cfg.param_count() + running, m.num_params());
        // 8x8/8 on 16 -> 2
        cfg.kernels = vec![8, 2];
        cfg.strides = vec![8, 2];
        assert_eq!(cfg.feature_side(), 1);
        let m = cfg.init::<Ad>(&Default::default());
        assert_eq!(m.hidden_pre(pictures(2, cfg.image)).dims(), [2, cfg.hidden]);
    }
}
