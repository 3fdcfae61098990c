//! Candidate forms of the shipped point network (64x64 RGB -> 1024 points), seeded random
//! weights, for measuring tract f32 / tract int8 / onnxruntime f32 side by side
//! (bench/onnx/RESULTS.md, "Model forms"):
//! `cargo run --release -p shapecast-onnx --example make_form_models -- OUT_DIR`
//!
//! Every form: encoder -> flatten -> FC (-> LeakyReLU 0.01) -> decoder -> 0.5 tanh -> `points`
//! [1, 1, 1024, 3]. For each form F it writes F.onnx (f32), F.int8.onnx (`Form::Tract`
//! defaults), F.int8convs.onnx (convs int8, linears f32), F.int8ns.onnx (layers with a
//! reduction <= 48, i.e. the RGB stem, stay f32), F.int8enc.onnx (int8ns with the FC layers
//! f32 too) and F.input.f32; it prints each int8 form's error against its f32 parent.

use anyhow::{Context, Result};
use shapecast_onnx::quant::{calibrate, quantize, QuantOptions};
use shapecast_onnx::run::{compare, load, F32Tensor, LoadOptions};
use shapecast_onnx::testnet::{sample_image, SplitMix};
use shapecast_onnx::{Dim, GraphBuilder};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("make_form_models: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One convolution: output channels, kernel, stride, padding.
#[derive(Clone, Copy)]
struct C(usize, usize, usize, usize);

/// Decoder after the latent.
#[derive(Clone, Copy)]
enum Dec {
    /// FC hidden -> 3N (the shipped decoder).
    Linear,
    /// FoldingNet-style per-point MLP over a fixed 32x32 grid: `h1 = act(z A + G)` with
    /// `G = grid B` a constant [N, H], then `h1 W2 (+ act) ... -> 3` per point.
    Fold(usize, usize),
}

struct Form {
    name: &'static str,
    /// Separable linear stem instead of convolutions: `relu(W2 · X · W1 + b)` on the image
    /// as a `[3 * 64, 64]` matrix (`W1` [64, d1] mixes along x, `W2` [d2, 192] along
    /// channel and y): two plain matrix products, no im2col and no transpose.
    sep: Option<(usize, usize)>,
    convs: Vec<C>,
    /// Patchify convolutions (k = stride, no padding) written as space-to-depth
    /// (`Reshape` + `Transpose`) + `Gemm` on `[pixels, channels]` tokens.
    tokens: bool,
    hidden: usize,
    dec: Dec,
}

const SIDE: usize = 64;
const POINTS: usize = 1024;

fn forms() -> Vec<Form> {
    let base = vec![
        C(24, 3, 2, 1),
        C(48, 3, 2, 1),
        C(96, 3, 2, 1),
        C(96, 3, 1, 1),
        C(128, 3, 2, 1),
    ];
    vec![
        Form {
            name: "base",
            convs: base.clone(),
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        // patchify stem 4x4/4, then 2x2/2 (k = stride, no padding)
        Form {
            name: "p4-48-96-128",
            convs: vec![C(48, 4, 4, 0), C(96, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "p4-64-128-128",
            convs: vec![C(64, 4, 4, 0), C(128, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        // 2x2/2 everywhere (4 layers)
        Form {
            name: "p2-32-64-96-128",
            convs: vec![
                C(32, 2, 2, 0),
                C(64, 2, 2, 0),
                C(96, 2, 2, 0),
                C(128, 2, 2, 0),
            ],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        // patchify stem + one 3x3 stride-1 mixing layer
        Form {
            name: "p4-48-3x3-96-96-128",
            convs: vec![
                C(48, 4, 4, 0),
                C(96, 3, 1, 1),
                C(96, 2, 2, 0),
                C(128, 2, 2, 0),
            ],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        // base encoder with a patchify RGB stem (no padded RGB conv)
        Form {
            name: "p2stem-base",
            convs: vec![
                C(32, 2, 2, 0),
                C(48, 3, 2, 1),
                C(96, 3, 2, 1),
                C(96, 3, 1, 1),
                C(128, 3, 2, 1),
            ],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "t4-48-96-128",
            convs: vec![C(48, 4, 4, 0), C(96, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: true,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "t4-64-128-128",
            convs: vec![C(64, 4, 4, 0), C(128, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: true,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "t4-96-192-256",
            convs: vec![C(96, 4, 4, 0), C(192, 2, 2, 0), C(256, 2, 2, 0)],
            tokens: true,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "t2-32-64-96-128",
            convs: vec![
                C(32, 2, 2, 0),
                C(64, 2, 2, 0),
                C(96, 2, 2, 0),
                C(128, 2, 2, 0),
            ],
            tokens: true,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "t4-fold64",
            convs: vec![C(48, 4, 4, 0), C(96, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: true,
            sep: None,
            hidden: 192,
            dec: Dec::Fold(64, 2),
        },
        Form {
            name: "p8-96-128",
            convs: vec![C(96, 8, 8, 0), C(128, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "p8-64",
            convs: vec![C(64, 8, 8, 0)],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "p4-48-96",
            convs: vec![C(48, 4, 4, 0), C(96, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "p4-48-96-128-h384",
            convs: vec![C(48, 4, 4, 0), C(96, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 384,
            dec: Dec::Linear,
        },
        Form {
            name: "p4-32-64-128",
            convs: vec![C(32, 4, 4, 0), C(64, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "p4-32-64-128-h384",
            convs: vec![C(32, 4, 4, 0), C(64, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 384,
            dec: Dec::Linear,
        },
        Form {
            name: "base-h384",
            convs: base.clone(),
            tokens: false,
            sep: None,
            hidden: 384,
            dec: Dec::Linear,
        },
        Form {
            name: "p4-32-64-128-h256",
            convs: vec![C(32, 4, 4, 0), C(64, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 256,
            dec: Dec::Linear,
        },
        Form {
            name: "p8-32",
            convs: vec![C(32, 8, 8, 0)],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Linear,
        },
        Form {
            name: "p8-32-h256",
            convs: vec![C(32, 8, 8, 0)],
            tokens: false,
            sep: None,
            hidden: 256,
            dec: Dec::Linear,
        },
        Form {
            name: "p8-24-h256",
            convs: vec![C(24, 8, 8, 0)],
            tokens: false,
            sep: None,
            hidden: 256,
            dec: Dec::Linear,
        },
        Form {
            name: "p8-48-p2-96-h256",
            convs: vec![C(48, 8, 8, 0), C(96, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 256,
            dec: Dec::Linear,
        },
        Form {
            name: "p8-32-p2-64-h256",
            convs: vec![C(32, 8, 8, 0), C(64, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 256,
            dec: Dec::Linear,
        },
        Form {
            name: "p4-24-p2-48-h256",
            convs: vec![C(24, 4, 4, 0), C(48, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 256,
            dec: Dec::Linear,
        },
        Form {
            name: "sep32x64",
            convs: vec![],
            tokens: false,
            sep: Some((32, 64)),
            hidden: 192,
            dec: Dec::Linear,
        },
        // FoldingNet-style decoders (int8-friendly: 1024-row products)
        Form {
            name: "p4-fold64",
            convs: vec![C(48, 4, 4, 0), C(96, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Fold(64, 2),
        },
        Form {
            name: "p4-fold128",
            convs: vec![C(48, 4, 4, 0), C(96, 2, 2, 0), C(128, 2, 2, 0)],
            tokens: false,
            sep: None,
            hidden: 192,
            dec: Dec::Fold(128, 2),
        },
    ]
}

fn build(f: &Form, seed: u64) -> Result<shapecast_onnx::pb::ModelProto> {
    let mut rng = SplitMix(seed);
    let mut g = GraphBuilder::new(f.name);
    let mut x = g.input(
        "image",
        &[
            Dim::Fixed(1),
            Dim::Fixed(3),
            Dim::Fixed(SIDE),
            Dim::Fixed(SIDE),
        ],
    );
    let (mut c, mut s) = (3usize, SIDE);
    for (i, &C(o, k, st, p)) in f.convs.iter().enumerate() {
        let a = (6.0 / (c * k * k) as f32).sqrt();
        let w = rng.vec(o * c * k * k, a);
        let b = rng.vec(o, 0.1);
        if f.tokens {
            assert!(k == st && p == 0);
            let n = (s / k) as i64;
            let (kk, ci) = (k as i64, c as i64);
            // space-to-depth: columns ordered (c, ky, kx) like the conv weight [O, C, k, k]
            x = if i == 0 {
                let r = g.reshape(&x, &[ci, n, kk, n, kk]);
                g.transpose(&r, &[1, 3, 0, 2, 4])
            } else {
                let r = g.reshape(&x, &[n, kk, n, kk, ci]);
                g.transpose(&r, &[0, 2, 4, 1, 3])
            };
            x = g.reshape(&x, &[n * n, ci * kk * kk]);
            let kdim = c * k * k;
            let mut wt = vec![0f32; kdim * o];
            for oo in 0..o {
                for j in 0..kdim {
                    wt[j * o + oo] = w[oo * kdim + j];
                }
            }
            x = g.linear(&x, &format!("conv{i}"), &wt, Some(&b), kdim, o)?;
        } else {
            x = g.conv2d(&x, &format!("conv{i}"), &w, Some(&b), o, c, k, st, p)?;
        }
        x = g.relu(&x);
        c = o;
        s = (s + 2 * p - k) / st + 1;
    }
    let mut feat = c * s * s;
    if let Some((d1, d2)) = f.sep {
        let xr = g.reshape(&x, &[3 * SIDE as i64, SIDE as i64]);
        let w1 = rng.vec(SIDE * d1, (6.0 / SIDE as f32).sqrt());
        let w1 = g.init_f32("sep1.weight", &[SIDE, d1], &w1)?;
        let y = g.matmul(&xr, &w1);
        let w2 = rng.vec(d2 * 3 * SIDE, (6.0 / (3 * SIDE) as f32).sqrt());
        let w2 = g.init_f32("sep2.weight", &[d2, 3 * SIDE], &w2)?;
        let y = g.matmul(&w2, &y);
        let b = rng.vec(d2 * d1, 0.1);
        let b = g.init_f32("sep.bias", &[d2, d1], &b)?;
        let y = g.add(&y, &b);
        x = g.relu(&y);
        feat = d1 * d2;
    }
    x = if f.tokens || f.sep.is_some() {
        g.reshape(&x, &[1, feat as i64])
    } else {
        g.flatten(&x, 1)
    };
    let h = f.hidden;
    let mut w = rng.vec(feat * h, (6.0 / feat as f32).sqrt());
    if f.tokens {
        // token order (pixel, channel) instead of NCHW (channel, pixel): permute the rows
        let px = s * s;
        let mut wp = vec![0f32; w.len()];
        for r in 0..px {
            for ch in 0..c {
                wp[(r * c + ch) * h..(r * c + ch + 1) * h]
                    .copy_from_slice(&w[(ch * px + r) * h..(ch * px + r + 1) * h]);
            }
        }
        w = wp;
    }
    let b = rng.vec(h, 0.1);
    x = g.linear(&x, "fc", &w, Some(&b), feat, h)?;
    x = g.leaky_relu(&x, 0.01);
    match f.dec {
        Dec::Linear => {
            let w = rng.vec(h * POINTS * 3, (1.0 / h as f32).sqrt());
            let b = rng.vec(POINTS * 3, 0.1);
            x = g.linear(&x, "head", &w, Some(&b), h, POINTS * 3)?;
        }
        Dec::Fold(hd, layers) => {
            // z A : [1, hd]
            let wa = rng.vec(h * hd, (6.0 / (h + 2) as f32).sqrt());
            let za = g.linear(&x, "fold_a", &wa, None, h, hd)?;
            // G = grid B + b : [N, hd], a constant of the trained model
            let side = (POINTS as f64).sqrt() as usize;
            let wb = rng.vec(2 * hd, (6.0 / (h + 2) as f32).sqrt());
            let bb = rng.vec(hd, 0.1);
            let mut gv = vec![0f32; POINTS * hd];
            for p in 0..POINTS {
                let (u, v) = (
                    (p % side) as f32 / side as f32 - 0.5,
                    (p / side) as f32 / side as f32 - 0.5,
                );
                for j in 0..hd {
                    gv[p * hd + j] = u * wb[j] + v * wb[hd + j] + bb[j];
                }
            }
            let gt = g.init_f32("fold_grid", &[POINTS, hd], &gv)?;
            let mut y = g.add(&za, &gt); // [N, hd]
            y = g.relu(&y);
            for l in 1..layers {
                let w = rng.vec(hd * hd, (6.0 / hd as f32).sqrt());
                let b = rng.vec(hd, 0.1);
                y = g.linear(&y, &format!("fold{l}"), &w, Some(&b), hd, hd)?;
                y = g.relu(&y);
            }
            let w = rng.vec(hd * 3, (1.0 / hd as f32).sqrt());
            let b = rng.vec(3, 0.1);
            x = g.linear(&y, "fold_out", &w, Some(&b), hd, 3)?;
        }
    }
    x = g.tanh(&x);
    let half = g.init_f32("extent", &[], &[0.5])?;
    x = g.mul(&x, &half);
    x = g.reshape(&x, &[1, 1, POINTS as i64, 3]);
    g.output_with_dims(
        &x,
        "points",
        &[
            Dim::Fixed(1),
            Dim::Fixed(1),
            Dim::Fixed(POINTS),
            Dim::Fixed(3),
        ],
    )?;
    Ok(g.build())
}

fn run() -> Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/form-onnx".into()),
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let img =
        |s: u64| F32Tensor::new(vec![1, 3, SIDE, SIDE], sample_image(SIDE, s)).map(|t| vec![t]);
    let samples: Vec<Vec<F32Tensor>> = (0..16).map(img).collect::<Result<_, _>>()?;
    let held: Vec<Vec<F32Tensor>> = (500..504).map(img).collect::<Result<_, _>>()?;
    for f in forms() {
        let model = build(&f, 7).with_context(|| format!("building {}", f.name))?;
        shapecast_onnx::write(&model, dir.join(format!("{}.onnx", f.name)))?;
        let ranges = calibrate(&model, &samples).context("calibrating")?;
        let f32m = load(&model, &LoadOptions::default()).context("loading f32")?;
        // the FC layers (names of the Gemm nodes whose weight is fc.* / head.* / fold*)
        let head_nodes: Vec<String> = model
            .graph
            .as_ref()
            .map(|gr| {
                gr.node
                    .iter()
                    .filter(|n| {
                        n.input.get(1).is_some_and(|w| {
                            w.starts_with("fc.") || w.starts_with("head.") || w.starts_with("fold")
                        })
                    })
                    .map(|n| n.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        for (suffix, opts) in [
            ("int8", QuantOptions::default()),
            (
                "int8convs",
                QuantOptions {
                    linears: false,
                    ..Default::default()
                },
            ),
            // RGB stem (reduction <= 48) f32: no image quantization
            (
                "int8ns",
                QuantOptions {
                    min_reduction: 49,
                    ..Default::default()
                },
            ),
            // encoder int8 without the stem, FC layers f32
            (
                "int8enc",
                QuantOptions {
                    min_reduction: 49,
                    exclude: head_nodes.clone(),
                    ..Default::default()
                },
            ),
        ] {
            let q = quantize(&model, &ranges, &opts).context("quantizing")?;
            shapecast_onnx::write(&q, dir.join(format!("{}.{suffix}.onnx", f.name)))?;
            let qm = load(&q, &LoadOptions::default()).context("loading int8")?;
            let c = compare(&f32m, &qm, &held).context("comparing")?;
            println!(
                "{}.{suffix}: max_abs {:.4} mean_abs {:.5} (rms {:.3})",
                f.name, c.max_abs[0], c.mean_abs[0], c.ref_rms[0]
            );
        }
        let bytes: Vec<u8> = sample_image(SIDE, 1000)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        std::fs::write(dir.join(format!("{}.input.f32", f.name)), bytes)?;
    }
    Ok(())
}
