//! Networks of the implicit pipeline (generic over the burn backend) and their losses.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

use super::ImplicitConfig;
use crate::conv_stack::{self, he};

/// Image encoder: picture `[B, 3, H, W]` -> latent `[B, Z]`.
#[derive(Module, Debug)]
pub struct ImageEncoder<B: Backend> {
    /// Convolutions ([`crate::conv_stack`]), ReLU after each.
    pub convs: Vec<Conv2d<B>>,
    /// Hidden fully connected layer (ReLU).
    pub fc: Linear<B>,
    /// Linear layer to the latent.
    pub out: Linear<B>,
}

impl<B: Backend> ImageEncoder<B> {
    /// Latents of a batch of normalised pictures.
    pub fn forward(&self, image: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = image;
        for conv in &self.convs {
            x = relu(conv.forward(x));
        }
        let [b, c, h, w] = x.dims();
        let x = relu(self.fc.forward(x.reshape([b, c * h * w])));
        self.out.forward(x)
    }
}

/// Decoder MLP `f(z, xyz)`. The first layer is two matrix products added together,
/// `xyz · Wx + b + z · Wz`, so that the export never concatenates the latent with the
/// query points.
#[derive(Module, Debug)]
pub struct ImplicitDecoder<B: Backend> {
    /// `xyz` part of the first layer (3 -> H, with the bias).
    pub wx: Linear<B>,
    /// Latent part of the first layer (Z -> H, no bias).
    pub wz: Linear<B>,
    /// Hidden layers (H -> H, ReLU).
    pub hidden: Vec<Linear<B>>,
    /// Output layer (H -> 1).
    pub out: Linear<B>,
}

impl<B: Backend> ImplicitDecoder<B> {
    /// Values at `xyz` `[B, Q, 3]` for latents `[B, Z]`: `[B, Q]`.
    pub fn forward(&self, latent: Tensor<B, 2>, xyz: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, q, _] = xyz.dims();
        let hz = self.wz.forward(latent).unsqueeze_dim::<3>(1);
        let mut h = relu(self.wx.forward(xyz) + hz);
        for l in &self.hidden {
            h = relu(l.forward(h));
        }
        self.out.forward(h).reshape([b, q])
    }
}

/// DeepSDF's auto-decoder: the decoder and one latent code per training object.
#[derive(Module, Debug)]
pub struct AutoDecoder<B: Backend> {
    /// The decoder.
    pub decoder: ImplicitDecoder<B>,
    /// `[objects, Z]` codes divided by `code_scale`.
    pub codes: Param<Tensor<B, 2>>,
    /// [`ImplicitConfig::code_lr_scale`].
    pub code_scale: f32,
}

impl<B: Backend> AutoDecoder<B> {
    /// The codes of objects `idx` (`[len, Z]`).
    pub fn codes_of(&self, idx: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        self.codes.val().select(0, idx).mul_scalar(self.code_scale)
    }

    /// All codes (`[objects, Z]`).
    pub fn all_codes(&self) -> Tensor<B, 2> {
        self.codes.val().mul_scalar(self.code_scale)
    }
}

/// Occupancy network: encoder and decoder trained together.
#[derive(Module, Debug)]
pub struct OccupancyNet<B: Backend> {
    /// The image encoder.
    pub encoder: ImageEncoder<B>,
    /// The decoder.
    pub decoder: ImplicitDecoder<B>,
}

impl ImplicitConfig {
    /// A fresh image encoder.
    pub fn init_encoder<B: Backend>(&self, device: &B::Device) -> ImageEncoder<B> {
        let e = &self.encoder;
        let mut convs = Vec::with_capacity(e.channels.len());
        let mut cin = 3;
        for (i, &cout) in e.channels.iter().enumerate() {
            convs.push(conv_stack::conv(
                cin,
                cout,
                &e.kernels,
                &e.strides,
                i,
                he(),
                device,
            ));
            cin = cout;
        }
        ImageEncoder {
            convs,
            fc: LinearConfig::new(e.feature_len(), e.hidden)
                .with_initializer(he())
                .init(device),
            out: LinearConfig::new(e.hidden, self.latent).init(device),
        }
    }

    /// A fresh decoder.
    pub fn init_decoder<B: Backend>(&self, device: &B::Device) -> ImplicitDecoder<B> {
        let h = self.decoder.hidden;
        ImplicitDecoder {
            wx: LinearConfig::new(3, h).with_initializer(he()).init(device),
            wz: LinearConfig::new(self.latent, h)
                .with_bias(false)
                .with_initializer(he())
                .init(device),
            hidden: (0..self.decoder.layers)
                .map(|_| LinearConfig::new(h, h).with_initializer(he()).init(device))
                .collect(),
            out: LinearConfig::new(h, 1).init(device),
        }
    }

    /// A fresh auto-decoder with `objects` codes drawn from N(0, code_init_std^2).
    pub fn init_auto_decoder<B: Backend>(
        &self,
        objects: usize,
        device: &B::Device,
    ) -> AutoDecoder<B> {
        let codes = Tensor::<B, 2>::random(
            [objects.max(1), self.latent],
            burn::tensor::Distribution::Normal(
                0.0,
                f64::from(self.code_init_std / self.code_lr_scale),
            ),
            device,
        );
        AutoDecoder {
            decoder: self.init_decoder(device),
            codes: Param::from_tensor(codes),
            code_scale: self.code_lr_scale,
        }
    }

    /// A fresh occupancy network.
    pub fn init_occupancy<B: Backend>(&self, device: &B::Device) -> OccupancyNet<B> {
        OccupancyNet {
            encoder: self.init_encoder(device),
            decoder: self.init_decoder(device),
        }
    }

    /// Weights of the encoder plus decoder (what is exported).
    pub fn param_count(&self) -> usize {
        let e = &self.encoder;
        let mut n = 0;
        let mut cin = 3;
        for &c in &e.channels {
            n += cin * c * 9 + c;
            cin = c;
        }
        n += e.feature_len() * e.hidden + e.hidden + e.hidden * self.latent + self.latent;
        let h = self.decoder.hidden;
        n += 3 * h + h + self.latent * h;
        n += self.decoder.layers * (h * h + h);
        n + h + 1
    }
}

/// DeepSDF's clamped L1 on `[B, Q]` predictions. `near` is 1 where |target| < delta; `sign`
/// is the target's sign. Inside the band the loss is `|pred - target|`; outside it is the
/// hinge `max(0, delta - sign * pred)`, which equals `|clamp(pred) - clamp(target)|`
/// whenever the prediction is on the right side and, unlike the plain clamp, still has a
/// gradient when it is on the wrong side.
pub fn clamped_l1<B: Backend>(
    pred: Tensor<B, 2>,
    target: Tensor<B, 2>,
    near: Tensor<B, 2>,
    sign: Tensor<B, 2>,
    delta: f32,
) -> Tensor<B, 1> {
    let far = near.clone().neg().add_scalar(1.0);
    let inband = (pred.clone() - target).abs() * near;
    let hinge = relu((pred * sign).neg().add_scalar(delta)) * far;
    (inband + hinge).mean()
}

/// Binary cross-entropy with logits, mean over all elements (`target` 1 = inside).
pub fn bce_logits<B: Backend>(logits: Tensor<B, 2>, target: Tensor<B, 2>) -> Tensor<B, 1> {
    // max(x, 0) - x y + log(1 + exp(-|x|))
    let soft = logits.clone().abs().neg().exp().log1p();
    (relu(logits.clone()) - logits * target + soft).mean()
}

/// Binary cross-entropy with logits and weight `pos_weight` on the inside (`target` 1)
/// terms, mean over all elements: `w y softplus(-x) + (1 - y) softplus(x)`. With `w` = the
/// outside/inside ratio of the samples, both classes weigh the same and the decision level
/// 0 sits where an inside sample is as likely as `1 / (1 + w)`, not 1/2.
pub fn weighted_bce_logits<B: Backend>(
    logits: Tensor<B, 2>,
    target: Tensor<B, 2>,
    pos_weight: f32,
) -> Tensor<B, 1> {
    // softplus(x) = max(x, 0) + log(1 + exp(-|x|)); softplus(-x) = softplus(x) - x
    let sp = relu(logits.clone()) + logits.clone().abs().neg().exp().log1p();
    let sp_neg = sp.clone() - logits;
    let inside = target.clone().mul_scalar(pos_weight) * sp_neg;
    let outside = target.neg().add_scalar(1.0) * sp;
    (inside + outside).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NdArrayCpu;
    use crate::implicit::Kind;

    #[test]
    fn decoder_split_first_layer_equals_concatenation() {
        let cfg = ImplicitConfig::preset("test", Kind::Sdf).unwrap();
        let dev = Default::default();
        let d = cfg.init_decoder::<NdArrayCpu>(&dev);
        let z = Tensor::<NdArrayCpu, 2>::random(
            [2, cfg.latent],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let xyz = Tensor::<NdArrayCpu, 3>::random(
            [2, 5, 3],
            burn::tensor::Distribution::Uniform(-0.5, 0.5),
            &dev,
        );
        let v = d.forward(z.clone(), xyz.clone());
        // the same first layer as one product of [xyz, z] with [Wx; Wz]
        let w = Tensor::cat(vec![d.wx.weight.val(), d.wz.weight.val()], 0);
        let zz = z.unsqueeze_dim::<3>(1).repeat_dim(1, 5);
        let cat = Tensor::cat(vec![xyz, zz], 2);
        let mut h = relu(
            cat.matmul(w.unsqueeze::<3>().repeat_dim(0, 2))
                + d.wx.bias.as_ref().unwrap().val().unsqueeze::<3>(),
        );
        for l in &d.hidden {
            h = relu(l.forward(h));
        }
        let v2 = d.out.forward(h).reshape([2, 5]);
        let diff: f32 = (v - v2).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn losses_match_hand_values() {
        let dev = Default::default();
        let t = |v: Vec<f32>| Tensor::<NdArrayCpu, 2>::from_data(TensorData::new(v, [1, 4]), &dev);
        // targets: in band (0.05, -0.02), far outside (0.3 and -0.4), delta 0.1
        let target = t(vec![0.05, -0.02, 0.3, -0.4]);
        let near = t(vec![1.0, 1.0, 0.0, 0.0]);
        let sign = t(vec![1.0, -1.0, 1.0, -1.0]);
        let pred = t(vec![0.0, -0.02, 0.5, 0.2]);
        // 0.05 + 0 + max(0, 0.1 - 0.5) = 0 + max(0, 0.1 + 0.2) = 0.3 -> mean 0.0875
        let l: f32 = clamped_l1(pred, target, near, sign, 0.1).into_scalar();
        assert!((l - 0.0875).abs() < 1e-6, "{l}");
        let x = t(vec![0.0, 2.0, -3.0, 10.0]);
        let y = t(vec![1.0, 1.0, 0.0, 0.0]);
        let want = [
            (2f32).ln(),
            (1.0 + (-2f32).exp()).ln(),
            (1.0 + (-3f32).exp()).ln(),
            10.0 + (1.0 + (-10f32).exp()).ln(),
        ];
        let l: f32 = bce_logits(x.clone(), y.clone()).into_scalar();
        let w = want.iter().sum::<f32>() / 4.0;
        assert!((l - w).abs() < 1e-5, "{l} vs {w}");
        // weight 1 is the plain form; weight 3 triples the inside terms
        let l1: f32 = weighted_bce_logits(x.clone(), y.clone(), 1.0).into_scalar();
        assert!((l1 - w).abs() < 1e-5, "{l1} vs {w}");
        let l3: f32 = weighted_bce_logits(x, y, 3.0).into_scalar();
        let w3 = (3.0 * (want[0] + want[1]) + want[2] + want[3]) / 4.0;
        assert!((l3 - w3).abs() < 1e-5, "{l3} vs {w3}");
    }
}
