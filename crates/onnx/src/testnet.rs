//! Representative shapecast networks with seeded random weights, for tests, fixtures and
//! benchmarks: an RGB conv encoder (3x3, stride 2, ReLU) + global average pool + MLP head
//! to `points` [B, 1, N, 3] (contract head `points`).

use crate::writer::{Dim, GraphBuilder};
use crate::OnnxError;

/// Shape of a representative network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSpec {
    /// Input side (square RGB image).
    pub size: usize,
    /// Output channels of each 3x3 stride-2 convolution.
    pub convs: Vec<usize>,
    /// Hidden widths of the MLP head.
    pub hidden: Vec<usize>,
    /// Points produced (`points` output is [B, 1, points, 3]).
    pub points: usize,
    /// Model id written to `shapecast.model_id`.
    pub model_id: String,
}

impl NetSpec {
    /// 128x128 encoder (16-32-64-128-256) + MLP 512-1024 -> 2048 points.
    pub fn large() -> Self {
        NetSpec {
            size: 128,
            convs: vec![16, 32, 64, 128, 256],
            hidden: vec![512, 1024],
            points: 2048,
            model_id: "bench-128".into(),
        }
    }
    /// 64x64 encoder (16-32-64-128) + MLP 256-512 -> 2048 points.
    pub fn small() -> Self {
        NetSpec {
            size: 64,
            convs: vec![16, 32, 64, 128],
            hidden: vec![256, 512],
            points: 2048,
            model_id: "bench-64".into(),
        }
    }
    /// A tiny net for unit tests (16x16, 4-8 channels, 16 hidden, 32 points).
    pub fn tiny() -> Self {
        NetSpec {
            size: 16,
            convs: vec![4, 8],
            hidden: vec![16],
            points: 32,
            model_id: "tiny".into(),
        }
    }
}

/// SplitMix64: deterministic weights without a dependency.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// `n` values uniform in [-a, a).
    pub fn vec(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * a).collect()
    }
}

/// Weights of one layer: conv `[out, in, 3, 3]` or linear `[in, out]` (burn layout), bias `[out]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub d_in: usize,
    pub d_out: usize,
}

/// All weights of a [`NetSpec`] network.
#[derive(Debug, Clone, PartialEq)]
pub struct NetWeights {
    pub convs: Vec<Layer>,
    pub linears: Vec<Layer>,
}

/// Random (He-uniform) weights for `spec`.
pub fn weights(spec: &NetSpec, seed: u64) -> NetWeights {
    let mut rng = SplitMix(seed);
    let mut convs = vec![];
    let mut c = 3;
    for &o in &spec.convs {
        let fan_in = (c * 9) as f32;
        let a = (6.0 / fan_in).sqrt();
        convs.push(Layer {
            weight: rng.vec(o * c * 9, a),
            bias: rng.vec(o, 0.1),
            d_in: c,
            d_out: o,
        });
        c = o;
    }
    let mut linears = vec![];
    let mut widths = spec.hidden.clone();
    widths.push(spec.points * 3);
    for (i, &o) in widths.iter().enumerate() {
        let last = i + 1 == widths.len();
        let a = if last {
            (1.0 / c as f32).sqrt()
        } else {
            (6.0 / c as f32).sqrt()
        };
        linears.push(Layer {
            weight: rng.vec(c * o, a),
            bias: rng.vec(o, 0.1),
            d_in: c,
            d_out: o,
        });
        c = o;
    }
    NetWeights { convs, linears }
}

/// Contract metadata for a `points` model made from `spec`.
pub fn contract_metadata(spec: &NetSpec) -> Vec<(String, String)> {
    let kv = [
        ("shapecast.contract", "1".to_string()),
        ("shapecast.head", "points".to_string()),
        ("shapecast.model_id", spec.model_id.clone()),
        ("shapecast.input.width", spec.size.to_string()),
        ("shapecast.input.height", spec.size.to_string()),
        ("shapecast.input.color", "rgb".to_string()),
        ("shapecast.input.mean", "0.485,0.456,0.406".to_string()),
        ("shapecast.input.std", "0.229,0.224,0.225".to_string()),
        ("shapecast.input.crop", "center".to_string()),
        ("shapecast.frame", "object".to_string()),
        ("shapecast.units", "normalized".to_string()),
        ("shapecast.bounds", "-1,-1,-1,1,1,1".to_string()),
        ("shapecast.precision", "f32".to_string()),
        ("shapecast.points", spec.points.to_string()),
        ("shapecast.hypotheses", "1".to_string()),
        (
            "shapecast.trained_by",
            "shapecast-onnx testnet (random weights)".to_string(),
        ),
    ];
    kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Writes the network graph: `image` [B, 3, S, S] -> `points` [B, 1, N, 3] (tanh-bounded).
pub fn build(spec: &NetSpec, w: &NetWeights) -> Result<GraphBuilder, OnnxError> {
    let mut g = GraphBuilder::new(&spec.model_id);
    let s = spec.size;
    let mut x = g.input(
        "image",
        &[Dim::batch(), Dim::Fixed(3), Dim::Fixed(s), Dim::Fixed(s)],
    );
    for (i, l) in w.convs.iter().enumerate() {
        x = g.conv2d(
            &x,
            &format!("enc{i}"),
            &l.weight,
            Some(&l.bias),
            l.d_out,
            l.d_in,
            3,
            2,
            1,
        )?;
        x = g.relu(&x);
    }
    x = g.global_average_pool(&x);
    x = g.flatten(&x, 1);
    let n = w.linears.len();
    for (i, l) in w.linears.iter().enumerate() {
        x = g.linear(
            &x,
            &format!("head{i}"),
            &l.weight,
            Some(&l.bias),
            l.d_in,
            l.d_out,
        )?;
        if i + 1 < n {
            x = g.relu(&x);
        }
    }
    x = g.tanh(&x);
    x = g.reshape(&x, &[-1, 1, spec.points as i64, 3]);
    g.output_with_dims(
        &x,
        "points",
        &[
            Dim::batch(),
            Dim::Fixed(1),
            Dim::Fixed(spec.points),
            Dim::Fixed(3),
        ],
    )?;
    g.metadata_list(&contract_metadata(spec));
    Ok(g)
}

/// Plain-Rust forward pass of the same network (batch 1, NCHW), for checking runtimes.
pub fn reference_forward(spec: &NetSpec, w: &NetWeights, image: &[f32]) -> Vec<f32> {
    let mut c = 3;
    let mut h = spec.size;
    let mut x = image.to_vec();
    for l in &w.convs {
        let ho = (h + 2 - 3) / 2 + 1;
        let mut y = vec![0f32; l.d_out * ho * ho];
        for o in 0..l.d_out {
            for oy in 0..ho {
                for ox in 0..ho {
                    let mut acc = l.bias[o];
                    for i in 0..c {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (oy * 2 + ky) as isize - 1;
                                let ix = (ox * 2 + kx) as isize - 1;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= h as isize {
                                    continue;
                                }
                                acc += l.weight[((o * c + i) * 3 + ky) * 3 + kx]
                                    * x[(i * h + iy as usize) * h + ix as usize];
                            }
                        }
                    }
                    y[(o * ho + oy) * ho + ox] = acc.max(0.0);
                }
            }
        }
        x = y;
        c = l.d_out;
        h = ho;
    }
    let mut v: Vec<f32> = (0..c)
        .map(|i| x[i * h * h..(i + 1) * h * h].iter().sum::<f32>() / (h * h) as f32)
        .collect();
    let n = w.linears.len();
    for (li, l) in w.linears.iter().enumerate() {
        let mut y = l.bias.clone();
        for (i, xi) in v.iter().enumerate() {
            for (j, yj) in y.iter_mut().enumerate() {
                *yj += xi * l.weight[i * l.d_out + j];
            }
        }
        if li + 1 < n {
            y.iter_mut().for_each(|t| *t = t.max(0.0));
        }
        v = y;
    }
    v.iter().map(|t| t.tanh()).collect()
}

/// A deterministic pseudo-image (smooth gradients + noise), normalised like the contract input.
pub fn sample_image(size: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix(seed);
    let (fx, fy, ph) = (
        rng.uniform() * 6.0,
        rng.uniform() * 6.0,
        rng.uniform() * 3.0,
    );
    let mut out = vec![0f32; 3 * size * size];
    for c in 0..3 {
        for y in 0..size {
            for x in 0..size {
                let u = x as f32 / size as f32;
                let v = y as f32 / size as f32;
                let p = 0.5 + 0.4 * (fx * u + fy * v + ph + c as f32).sin() + 0.1 * rng.uniform();
                out[(c * size + y) * size + x] = (p.clamp(0.0, 1.0) - 0.45) / 0.225;
            }
        }
    }
    out
}
