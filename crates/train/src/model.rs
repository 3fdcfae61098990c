//! Networks. Every model is generic over the burn backend.
//!
//! [`PointNet`] is the PSGN-style point-set generator: a small strided CNN encoder, a hidden
//! fully connected layer and a linear decoder to `K x N x 3` coordinates (K hypotheses), with
//! an optional per-point part-label head (semantic reconstruction).

use burn::module::{Initializer, Module};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{relu, tanh};
use serde::{Deserialize, Serialize};

/// He (Kaiming) uniform initialisation for ReLU layers (gain sqrt 2). burn's default gain
/// (1/sqrt 3) shrinks the activation variance 6x per layer; without normalisation layers
/// the encoder's output then hardly depends on the picture and training stalls at the mean
/// shape.
fn he() -> Initializer {
    Initializer::KaimingUniform {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: false,
    }
}

/// Shape of a [`PointNet`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointNetConfig {
    /// Input picture side in pixels (square RGB).
    pub image: usize,
    /// Output channels of each 3x3 convolution; each layer has stride 2 when its entry in
    /// `strides` is 2.
    pub channels: Vec<usize>,
    /// Stride of each convolution (1 or 2).
    pub strides: Vec<usize>,
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
}

fn default_true() -> bool {
    true
}

impl PointNetConfig {
    /// Spatial side of the encoder's last feature map.
    pub fn feature_side(&self) -> usize {
        let mut s = self.image;
        for &st in &self.strides {
            // 3x3, padding 1: out = floor((s + 2 - 3) / st) + 1
            s = (s - 1) / st + 1;
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
        for (&cout, &st) in self.channels.iter().zip(&self.strides) {
            convs.push(
                Conv2dConfig::new([cin, cout], [3, 3])
                    .with_stride([st, st])
                    .with_padding(PaddingConfig2d::Explicit(1, 1))
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
            .with_initializer(he())
            .init(device);
        let k = self.hypotheses * self.points;
        let head = LinearConfig::new(self.hidden, k * 3).init(device);
        let label_head = (self.classes > 0)
            .then(|| LinearConfig::new(self.hidden, k * self.classes).init(device));
        PointNet {
            convs,
            norms,
            fc,
            head,
            label_head,
            hypotheses: self.hypotheses,
            points: self.points,
            classes: self.classes,
            extent: self.extent,
            hidden_relu: self.hidden_relu,
        }
    }

    /// Number of weights.
    pub fn param_count(&self) -> usize {
        let mut n = 0;
        let mut cin = 3;
        for &c in &self.channels {
            n += cin * c * 9 + c + if self.batch_norm { 2 * c } else { 0 };
            cin = c;
        }
        let k = self.hypotheses * self.points;
        n += self.feature_len() * self.hidden + self.hidden;
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
    /// Encoder convolutions (3x3, padding 1, ReLU after each).
    pub convs: Vec<Conv2d<B>>,
    /// Batch normalisations after the convolutions (empty: none).
    pub norms: Vec<BatchNorm<B>>,
    /// Hidden fully connected layer (ReLU).
    pub fc: Linear<B>,
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
    /// ReLU on the hidden layer.
    pub hidden_relu: bool,
}

impl<B: Backend> PointNet<B> {
    /// The latent (hidden layer activations) of a batch of pictures `[B, 3, H, W]`.
    pub fn encode(&self, image: Tensor<B, 4>) -> Tensor<B, 2> {
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
        if self.hidden_relu {
            relu(z)
        } else {
            z
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
