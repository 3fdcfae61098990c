//! Integration tests: writer -> tract vs plain-Rust reference, metadata, int8 forms.

use shapecast_onnx::quant::{calibrate, quantize, Form, QuantOptions};
use shapecast_onnx::run::{compare, load, F32Tensor, LoadOptions};
use shapecast_onnx::testnet::{self, NetSpec};
use shapecast_onnx::{pb, Dim, GraphBuilder, OnnxError};

fn image_tensor(spec: &NetSpec, seed: u64) -> F32Tensor {
    F32Tensor::new(
        vec![1, 3, spec.size, spec.size],
        testnet::sample_image(spec.size, seed),
    )
    .unwrap()
}

fn tiny() -> (NetSpec, testnet::NetWeights, pb::ModelProto) {
    let spec = NetSpec::tiny();
    let w = testnet::weights(&spec, 7);
    let model = testnet::build(&spec, &w).unwrap().build();
    (spec, w, model)
}

fn op_types(model: &pb::ModelProto) -> Vec<String> {
    model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.clone())
        .collect()
}

#[test]
fn tract_matches_plain_rust_reference() {
    let (spec, w, model) = tiny();
    let m = load(&model, &LoadOptions::default()).unwrap();
    assert_eq!(m.outputs, vec!["points".to_string()]);
    for seed in 0..3 {
        let img = image_tensor(&spec, seed);
        let expected = testnet::reference_forward(&spec, &w, &img.data);
        let out = m.run(&[img]).unwrap();
        assert_eq!(out[0].shape, vec![1, 1, spec.points, 3]);
        let max = out[0]
            .data
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-5, "max abs diff {max}");
    }
}

#[test]
fn dynamic_batch_runs_two_images() {
    let (spec, w, model) = tiny();
    let m = load(
        &model,
        &LoadOptions {
            batch: Some(2),
            ..Default::default()
        },
    )
    .unwrap();
    let a = testnet::sample_image(spec.size, 1);
    let b = testnet::sample_image(spec.size, 2);
    let both = F32Tensor::new(
        vec![2, 3, spec.size, spec.size],
        [a.clone(), b.clone()].concat(),
    )
    .unwrap();
    let out = m.run(&[both]).unwrap();
    assert_eq!(out[0].shape, vec![2, 1, spec.points, 3]);
    let n = spec.points * 3;
    for (k, img) in [a, b].iter().enumerate() {
        let expected = testnet::reference_forward(&spec, &w, img);
        let max = out[0].data[k * n..(k + 1) * n]
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-5, "image {k}: max abs diff {max}");
    }
}

#[test]
fn metadata_round_trips_through_a_file() {
    let (spec, w, _) = tiny();
    let mut g = testnet::build(&spec, &w).unwrap();
    g.metadata("shapecast.metrics", "chamfer_l2=0.0012,fscore@0.01=71.3");
    g.metadata("shapecast.model_id", "replaced");
    let dir = std::env::temp_dir().join(format!("shapecast-onnx-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.onnx");
    g.write(&path).unwrap();
    let md = shapecast_onnx::read_metadata(&path).unwrap();
    let get = |k: &str| md.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    assert_eq!(get("shapecast.contract").as_deref(), Some("1"));
    assert_eq!(get("shapecast.model_id").as_deref(), Some("replaced"));
    assert_eq!(
        get("shapecast.metrics").as_deref(),
        Some("chamfer_l2=0.0012,fscore@0.01=71.3")
    );
    assert_eq!(
        md.iter().filter(|(k, _)| k == "shapecast.model_id").count(),
        1
    );
    // tract sees the same keys
    let inference = {
        use tract_onnx::prelude::*;
        tract_onnx::onnx().model_for_path(&path).unwrap()
    };
    assert!(inference
        .properties
        .contains_key("onnx.metadata_props.shapecast.head"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    assert!(matches!(
        shapecast_onnx::from_bytes(b"\xff\xff\xff\xffnot onnx"),
        Err(OnnxError::Decode(_))
    ));
    let mut g = GraphBuilder::new("bad");
    assert!(matches!(
        g.init_f32("w", &[2, 3], &[0.0; 5]),
        Err(OnnxError::Shape(_))
    ));
    g.init_f32("w", &[1], &[0.0]).unwrap();
    assert!(
        g.init_f32("w", &[1], &[0.0]).is_err(),
        "duplicate initializer"
    );
    assert!(shapecast_onnx::read("/nonexistent/model.onnx").is_err());
}

/// An MLP written with PyTorch-layout Gemm (transB=1) and a MatMul + Add, to cover both paths.
fn mlp_variants() -> (pb::ModelProto, Vec<Vec<F32Tensor>>) {
    let mut rng = testnet::SplitMix(3);
    let (d0, d1, d2) = (24, 32, 12);
    let mut g = GraphBuilder::new("mlp");
    let x = g.input("x", &[Dim::batch(), Dim::Fixed(d0)]);
    let w1 = g.init_f32("w1", &[d1, d0], &rng.vec(d0 * d1, 0.4)).unwrap(); // [out, in]
    let b1 = g.init_f32("b1", &[d1], &rng.vec(d1, 0.1)).unwrap();
    let h = g.gemm(&x, &w1, Some(&b1), true);
    let h = g.leaky_relu(&h, 0.1);
    let w2 = g.init_f32("w2", &[d1, d2], &rng.vec(d1 * d2, 0.3)).unwrap();
    let b2 = g.init_f32("b2", &[d2], &rng.vec(d2, 0.1)).unwrap();
    let y = g.matmul(&h, &w2);
    let y = g.add(&y, &b2);
    let y = g.sigmoid(&y);
    g.output(&y, "y").unwrap();
    let samples = (0..8)
        .map(|s| {
            let mut r = testnet::SplitMix(100 + s);
            vec![F32Tensor::new(vec![1, d0], r.vec(d0, 2.0)).unwrap()]
        })
        .collect();
    (g.build(), samples)
}

#[test]
fn int8_forms_stay_close_to_f32_on_conv_net() {
    let (spec, _, model) = tiny();
    let samples: Vec<Vec<F32Tensor>> = (0..8).map(|s| vec![image_tensor(&spec, s)]).collect();
    let ranges = calibrate(&model, &samples).unwrap();
    assert!(ranges.get("image").is_some());
    let f32m = load(&model, &LoadOptions::default()).unwrap();
    let held_out: Vec<Vec<F32Tensor>> = (100..104).map(|s| vec![image_tensor(&spec, s)]).collect();
    for form in [Form::Tract, Form::QLinearMatMul, Form::Qdq] {
        let q = quantize(
            &model,
            &ranges,
            &QuantOptions {
                form,
                ..Default::default()
            },
        )
        .unwrap();
        let ops = op_types(&q);
        match form {
            Form::Tract => {
                assert!(
                    ops.iter().any(|o| o == "QLinearConv")
                        && ops.iter().any(|o| o == "MatMulInteger"),
                    "{ops:?}"
                );
                assert!(!ops.iter().any(|o| o == "Conv" || o == "Gemm"), "{ops:?}");
            }
            Form::QLinearMatMul => assert!(ops.iter().any(|o| o == "QLinearMatMul"), "{ops:?}"),
            Form::Qdq => assert!(
                ops.iter().any(|o| o == "DequantizeLinear") && ops.iter().any(|o| o == "Conv")
            ),
        }
        let md = shapecast_onnx::metadata(&q);
        assert!(md.contains(&("shapecast.precision".into(), "int8".into())));
        let qm = load(&q, &LoadOptions::default()).unwrap();
        assert_eq!(qm.outputs, f32m.outputs);
        let cmp = compare(&f32m, &qm, &held_out).unwrap();
        // outputs are tanh in [-1, 1]; int8 noise must stay well below the signal
        assert!(
            cmp.max_abs[0] < 0.1 && cmp.mean_abs[0] < 0.02,
            "{form:?}: {cmp:?}"
        );
        assert!(
            cmp.max_abs[0] > 0.0,
            "{form:?}: int8 identical to f32 is suspicious"
        );
    }
}

#[test]
fn int8_linear_layers_in_both_layouts() {
    let (model, samples) = mlp_variants();
    let ranges = calibrate(&model, &samples).unwrap();
    let f32m = load(&model, &LoadOptions::default()).unwrap();
    for form in [Form::Tract, Form::QLinearMatMul, Form::Qdq] {
        let q = quantize(
            &model,
            &ranges,
            &QuantOptions {
                form,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(!op_types(&q)
            .iter()
            .any(|o| o == "Gemm" && form != Form::Qdq));
        let qm = load(&q, &LoadOptions::default()).unwrap();
        let cmp = compare(&f32m, &qm, &samples).unwrap();
        assert!(cmp.max_abs[0] < 0.03, "{form:?}: {cmp:?}");
    }
}

#[test]
fn min_reduction_keeps_the_rgb_convolution_in_f32() {
    let (spec, _, model) = tiny();
    let samples: Vec<Vec<F32Tensor>> = (0..4).map(|s| vec![image_tensor(&spec, s)]).collect();
    let ranges = calibrate(&model, &samples).unwrap();
    let q = quantize(
        &model,
        &ranges,
        &QuantOptions {
            min_reduction: 28,
            ..Default::default()
        },
    )
    .unwrap();
    let ops = op_types(&q);
    assert_eq!(ops.iter().filter(|o| *o == "Conv").count(), 1, "{ops:?}");
    assert_eq!(
        ops.iter().filter(|o| *o == "QLinearConv").count(),
        1,
        "{ops:?}"
    );
    let qm = load(&q, &LoadOptions::default()).unwrap();
    let f32m = load(&model, &LoadOptions::default()).unwrap();
    let cmp = compare(&f32m, &qm, &samples).unwrap();
    assert!(cmp.max_abs[0] < 0.1, "{cmp:?}");
}

#[test]
fn f16_transform_runs_close_to_f32() {
    let (spec, w, model) = tiny();
    let m = load(
        &model,
        &LoadOptions {
            f16: true,
            ..Default::default()
        },
    )
    .unwrap();
    let img = image_tensor(&spec, 5);
    let expected = testnet::reference_forward(&spec, &w, &img.data);
    let out = m.run(&[img]).unwrap();
    let max = out[0]
        .data
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max < 2e-2, "f16 max abs diff {max}");
}

/// The finding behind `Form::Tract` (docs/int8.md): with a weight over 1 Mi elements, standard
/// `QLinearMatMul` makes tract sum the weight on every run (a `Reduce` left in the optimized
/// plan); the `MatMulInteger` form with folded zero points leaves none.
#[test]
fn large_linear_layer_has_no_per_run_weight_reduction_in_tract_form() {
    let (k, n) = (1024, 1100); // 1.1 Mi weights: the i32 cast of the sum exceeds 4 MiB
    let mut rng = testnet::SplitMix(9);
    let mut g = GraphBuilder::new("big");
    let x = g.input("x", &[Dim::batch(), Dim::Fixed(k)]);
    let y = g
        .linear(
            &x,
            "fc",
            &rng.vec(k * n, 0.05),
            Some(&rng.vec(n, 0.1)),
            k,
            n,
        )
        .unwrap();
    let y = g.relu(&y);
    g.output(&y, "y").unwrap();
    let model = g.build();
    let samples: Vec<Vec<F32Tensor>> = (0..4)
        .map(|s| vec![F32Tensor::new(vec![1, k], testnet::SplitMix(s).vec(k, 1.0)).unwrap()])
        .collect();
    let ranges = calibrate(&model, &samples).unwrap();
    let reductions = |form| {
        let q = quantize(
            &model,
            &ranges,
            &QuantOptions {
                form,
                ..Default::default()
            },
        )
        .unwrap();
        let m = load(&q, &LoadOptions::default()).unwrap();
        let plan = m.plan().model();
        let count = plan
            .nodes()
            .iter()
            .filter(|n| n.op.name().starts_with("Reduce"))
            .count();
        (count, m, q)
    };
    let (slow, _, _) = reductions(Form::QLinearMatMul);
    assert!(
        slow > 0,
        "expected tract to keep a per-run weight sum for QLinearMatMul"
    );
    let (fast, qm, _) = reductions(Form::Tract);
    assert_eq!(
        fast, 0,
        "Form::Tract must leave no reduction in the optimized plan"
    );
    let f32m = load(&model, &LoadOptions::default()).unwrap();
    let cmp = compare(&f32m, &qm, &samples).unwrap();
    assert!(
        cmp.max_abs[0] < 0.05 * cmp.ref_rms[0].max(1e-3) + 0.02,
        "{cmp:?}"
    );
}

/// Scalar weight zero points: no per-run activation sums (`QSumB`); per-tensor conv scales:
/// requantization fused into the matmul (no standalone `Scale` node). docs/int8.md items 3-4.
#[test]
fn conv_form_leaves_no_activation_sums_and_fuses_requantization() {
    let (spec, _, model) = tiny();
    let samples: Vec<Vec<F32Tensor>> = (0..4).map(|s| vec![image_tensor(&spec, s)]).collect();
    let ranges = calibrate(&model, &samples).unwrap();
    let ops = |options: QuantOptions| {
        let q = quantize(&model, &ranges, &options).unwrap();
        let m = load(&q, &LoadOptions::default()).unwrap();
        m.plan()
            .model()
            .nodes()
            .iter()
            .map(|n| n.op.name().to_string())
            .collect::<Vec<_>>()
    };
    let default = ops(QuantOptions::default());
    assert!(
        !default.iter().any(|o| o == "QSumB" || o == "Scale"),
        "{default:?}"
    );
    let per_channel = ops(QuantOptions {
        conv_per_channel: true,
        ..Default::default()
    });
    assert!(per_channel.iter().any(|o| o == "Scale"), "{per_channel:?}");
}

/// Names of the ops in the plan tract runs for `model`.
fn plan_ops(model: &pb::ModelProto, fuse: bool) -> Vec<String> {
    let m = load(
        model,
        &LoadOptions {
            fuse,
            ..Default::default()
        },
    )
    .unwrap();
    m.op_names()
}

/// `run::fuse_activations`: a ReLU or LeakyReLU after a convolution becomes part of tract's
/// matrix product (no separate element-wise pass left in the plan), with the same outputs.
#[test]
fn conv_activations_fuse_into_the_matrix_product() {
    let (spec, _, model) = tiny();
    let unfused = plan_ops(&model, false);
    assert!(
        unfused.iter().any(|o| o.contains("MaxByScalar")),
        "tract alone keeps the conv ReLU separate: {unfused:?}"
    );
    let fused = plan_ops(&model, true);
    assert!(
        !fused.iter().any(|o| o.contains("MaxByScalar")),
        "ReLU left after fusing: {fused:?}"
    );
    let a = load(
        &model,
        &LoadOptions {
            fuse: false,
            ..Default::default()
        },
    )
    .unwrap();
    let b = load(&model, &LoadOptions::default()).unwrap();
    let samples: Vec<Vec<F32Tensor>> = (0..3).map(|s| vec![image_tensor(&spec, s)]).collect();
    let d = compare(&a, &b, &samples).unwrap();
    assert!(d.max_abs[0] < 1e-6, "{d:?}");

    // LeakyReLU (conv -> LeakyRelu -> conv), outputs against the unfused plan
    let mut g = GraphBuilder::new("leaky");
    let x = g.input(
        "image",
        &[Dim::Fixed(1), Dim::Fixed(3), Dim::Fixed(8), Dim::Fixed(8)],
    );
    let mut rng = testnet::SplitMix(3);
    let w0 = rng.vec(6 * 3 * 9, 0.5);
    let w1 = rng.vec(4 * 6 * 9, 0.5);
    let y = g.conv2d(&x, "c0", &w0, None, 6, 3, 3, 1, 1).unwrap();
    let y = g.leaky_relu(&y, 0.1);
    let y = g.conv2d(&y, "c1", &w1, None, 4, 6, 3, 1, 1).unwrap();
    let y = g.leaky_relu(&y, 0.2);
    g.output(&y, "out").unwrap();
    let model = g.build();
    // fused into the product where the kernel supports it (`can_fuse`), else left as is
    let count = |ops: &[String]| ops.iter().filter(|o| o.contains("LeakyRelu")).count();
    let (fused, unfused) = (plan_ops(&model, true), plan_ops(&model, false));
    assert!(count(&fused) <= count(&unfused), "{fused:?} vs {unfused:?}");
    let a = load(
        &model,
        &LoadOptions {
            fuse: false,
            ..Default::default()
        },
    )
    .unwrap();
    let b = load(&model, &LoadOptions::default()).unwrap();
    let img = F32Tensor::new(vec![1, 3, 8, 8], rng.vec(3 * 64, 1.0)).unwrap();
    let d = compare(&a, &b, &[vec![img]]).unwrap();
    assert!(d.max_abs[0] < 1e-5, "{d:?}");
}

// ---- implicit decoder (shapecast_onnx::mlp) ----

use shapecast_onnx::mlp::{quantize_decoder, DecoderSample, MlpDecoder};

/// A seeded random decoder (latent 8, hidden 32, two hidden layers).
fn random_decoder(seed: u64) -> MlpDecoder {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (z, h) = (8, 32);
    let mut u = |n: usize, a: f32| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-a..a)).collect() };
    let wx = u(3 * h, 2.0);
    let wz = u(z * h, 0.5);
    let bx = u(h, 0.2);
    let layers = (0..2).map(|_| (u(h * h, 0.3), u(h, 0.1))).collect();
    let wo = u(h, 0.3);
    MlpDecoder {
        latent: z,
        hidden: h,
        wx,
        wz,
        bx,
        layers,
        wo,
        bo: 0.05,
    }
}

/// Fixes the symbolic query dimension of a decoder to `q`.
fn fix_queries(model: &pb::ModelProto, q: usize) -> pb::ModelProto {
    let mut m = model.clone();
    shapecast_onnx::fix_input_symbols(&mut m, q, &[]);
    m
}

fn queries(n: usize, seed: u64) -> Vec<[f32; 3]> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| std::array::from_fn(|_| rng.gen_range(-0.5f32..0.5)))
        .collect()
}

fn run_decoder(model: &pb::ModelProto, latent: &[f32], xyz: &[[f32; 3]]) -> Vec<f32> {
    let m = load(&fix_queries(model, xyz.len()), &LoadOptions::default()).unwrap();
    let out = m
        .run(&[
            F32Tensor::new(vec![1, latent.len()], latent.to_vec()).unwrap(),
            F32Tensor::new(vec![xyz.len(), 3], xyz.iter().flatten().copied().collect()).unwrap(),
        ])
        .unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].shape, vec![xyz.len()]);
    out[0].data.clone()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// The f32 form (activations [H, Q], padded output layer) computes the plain-Rust reference,
/// keeps the contract's names, and `from_model` reads back exactly the weights it was given,
/// from this form and from the earlier [Q, H] MatMul form.
#[test]
fn mlp_decoder_f32_form_matches_reference_and_reads_back() {
    let d = random_decoder(3);
    let model = d.f32_graph("dec", "Q").unwrap().build();
    let lat: Vec<f32> = (0..d.latent).map(|i| (i as f32 * 0.37).sin()).collect();
    // 500 queries: not a multiple of any kernel tile
    let xyz = queries(500, 1);
    let got = run_decoder(&model, &lat, &xyz);
    let (want, _) = d.eval(&lat, &xyz);
    let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
    assert!(scale > 0.1, "degenerate test decoder (max |value| {scale})");
    assert!(
        max_abs_diff(&got, &want) <= 1e-5 * scale.max(1.0),
        "tract vs reference"
    );
    let m = load(&fix_queries(&model, 64), &LoadOptions::default()).unwrap();
    assert_eq!(m.inputs, vec!["latent".to_string(), "xyz".to_string()]);
    assert_eq!(m.outputs, vec!["value".to_string()]);
    assert_eq!(MlpDecoder::from_model(&model).unwrap(), d);

    // the earlier form: MatMul(xyz, Wx) + MatMul(latent, Wz) + b, [Q, H], out weight [H, 1]
    let (z, h) = (d.latent, d.hidden);
    let mut g = GraphBuilder::new("old");
    let latent = g.input("latent", &[Dim::Fixed(1), z.into()]);
    let xyz_in = g.input("xyz", &[Dim::Symbol("Q".into()), 3.into()]);
    let wx = g.init_f32("dec.wx.weight", &[3, h], &d.wx).unwrap();
    let bx = g.init_f32("dec.wx.bias", &[h], &d.bx).unwrap();
    let wz = g.init_f32("dec.wz.weight", &[z, h], &d.wz).unwrap();
    let hp = g.matmul(&xyz_in, &wx);
    let hz = g.matmul(&latent, &wz);
    let s = g.add(&hp, &hz);
    let s = g.add(&s, &bx);
    let mut x = g.relu(&s);
    for (i, (w, b)) in d.layers.iter().enumerate() {
        let w = g
            .init_f32(&format!("dec.hidden{i}.weight"), &[h, h], w)
            .unwrap();
        let b = g.init_f32(&format!("dec.hidden{i}.bias"), &[h], b).unwrap();
        let y = g.matmul(&x, &w);
        let y = g.add(&y, &b);
        x = g.relu(&y);
    }
    let wo = g.init_f32("dec.out.weight", &[h, 1], &d.wo).unwrap();
    let bo = g.init_f32("dec.out.bias", &[1], &[d.bo]).unwrap();
    let v = g.matmul(&x, &wo);
    let v = g.add(&v, &bo);
    let v = g.reshape(&v, &[-1]);
    g.output_with_dims(&v, "value", &[Dim::Symbol("Q".into())])
        .unwrap();
    let old = g.build();
    assert_eq!(MlpDecoder::from_model(&old).unwrap(), d);
    assert!(max_abs_diff(&run_decoder(&old, &lat, &xyz), &got) <= 1e-5 * scale.max(1.0));

    // a file without the decoder's initializers is an error, not a panic
    let (_, _, points) = tiny();
    assert!(MlpDecoder::from_model(&points).is_err());
}

/// Cross-layer equalization changes the weights but not the function.
#[test]
fn mlp_decoder_equalization_keeps_the_function() {
    let d = random_decoder(5);
    let mut e = d.clone();
    e.equalize(10);
    assert_ne!(e, d);
    let lat = vec![0.3; d.latent];
    let xyz = queries(300, 2);
    let (a, _) = d.eval(&lat, &xyz);
    let (b, _) = e.eval(&lat, &xyz);
    assert!(max_abs_diff(&a, &b) < 1e-4, "{}", max_abs_diff(&a, &b));
}

/// The int8 decoder keeps the contract, stays close to f32, and tract runs it as int8 matrix
/// products with everything fused: one quantization (of `xyz`), no separate requantization,
/// clamp or activation-sum pass.
#[test]
fn quantized_decoder_is_close_and_fully_fused_in_tract() {
    let d = random_decoder(11);
    let model = d.f32_graph("dec", "Q").unwrap().build();
    let latents: Vec<Vec<f32>> = (0..4)
        .map(|s| {
            (0..d.latent)
                .map(|i| ((i + 3 * s) as f32 * 0.61).cos())
                .collect()
        })
        .collect();
    let samples: Vec<DecoderSample> = latents
        .iter()
        .enumerate()
        .map(|(s, l)| DecoderSample {
            latent: l.clone(),
            xyz: queries(2000, 100 + s as u64),
        })
        .collect();
    let q = quantize_decoder(&model, &samples, "test").unwrap();
    let meta = shapecast_onnx::metadata(&q);
    assert!(meta.contains(&("shapecast.precision".into(), "int8".into())));
    assert!(meta.contains(&("shapecast.calibration".into(), "test".into())));
    let types = op_types(&q);
    assert_eq!(types.iter().filter(|t| *t == "QLinearConv").count(), 3);
    assert!(types.iter().any(|t| t == "MatMulInteger"));

    let xyz = queries(777, 7);
    for lat in &latents {
        let (want, _) = d.eval(lat, &xyz);
        let got = run_decoder(&q, lat, &xyz);
        let range = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let mean = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / want.len() as f32;
        assert!(
            max_abs_diff(&got, &want) < 0.08 * range && mean < 0.02 * range,
            "int8 max {} mean {mean} (range {range})",
            max_abs_diff(&got, &want)
        );
    }
    let m = load(&fix_queries(&q, 1024), &LoadOptions::default()).unwrap();
    let ops = m.op_names();
    let count = |p: &str| ops.iter().filter(|o| o.contains(p)).count();
    assert_eq!(count("QuantizeLinear"), 1, "{ops:?}");
    for unfused in [
        "Scale",
        "QSum",
        "MaxByScalar",
        "MinByScalar",
        "DequantizeLinear",
    ] {
        assert_eq!(count(unfused), 0, "{unfused} left in {ops:?}");
    }
    // 3 QLinearConv + the output MatMulInteger on int8 kernels, + the latent product
    assert!(count("OptMatMul") >= 5, "{ops:?}");

    assert!(quantize_decoder(&model, &[], "").is_err());
    let wrong = [DecoderSample {
        latent: vec![0.0; d.latent + 1],
        xyz: queries(4, 1),
    }];
    assert!(quantize_decoder(&model, &wrong, "").is_err());
}

/// The shipped implicit decoders (models/): the f32 file reads back into `MlpDecoder` and
/// tract computes its reference; the int8 file stays close to it and keeps the contract.
#[test]
fn shipped_implicit_decoders_agree() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let f32m = shapecast_onnx::read(dir.join("implicit.decoder.onnx")).unwrap();
    let int8 = shapecast_onnx::read(dir.join("implicit.int8.decoder.onnx")).unwrap();
    let d = MlpDecoder::from_model(&f32m).unwrap();
    assert_eq!((d.latent, d.hidden, d.layers.len()), (32, 64, 3));
    let meta = shapecast_onnx::metadata(&int8);
    assert!(meta.contains(&("shapecast.precision".into(), "int8".into())));
    assert!(meta.contains(&("shapecast.part".into(), "decoder".into())));
    let xyz = queries(2048, 9);
    let mut sum = 0f32;
    for s in 0..3 {
        let lat: Vec<f32> = (0..32)
            .map(|i| ((i * 7 + s * 13) as f32 * 0.29).sin() * 0.8)
            .collect();
        let (want, _) = d.eval(&lat, &xyz);
        let a = run_decoder(&f32m, &lat, &xyz);
        let b = run_decoder(&int8, &lat, &xyz);
        assert!(
            max_abs_diff(&a, &want) < 1e-4,
            "{}",
            max_abs_diff(&a, &want)
        );
        assert!(max_abs_diff(&a, &b) < 0.05, "{}", max_abs_diff(&a, &b));
        sum += a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    }
    assert!(sum / 3.0 < 0.01, "mean |int8 - f32| {}", sum / 3.0);
}

/// `fix_input_symbols` sets the named-symbol input dimensions, keeping the listed ones.
#[test]
fn fix_input_symbols_keeps_the_listed_symbols() {
    use shapecast_onnx::pb::tensor_shape_proto::dimension::Value;
    let mut g = GraphBuilder::new("syms");
    let a = g.input(
        "a",
        &[Dim::Symbol(shapecast_onnx::BATCH_DIM.into()), 3.into()],
    );
    let b = g.input("b", &[Dim::Symbol("Q".into()), 3.into()]);
    let s = g.add(&a, &b);
    g.output(&s, "s").unwrap();
    let dims = |m: &shapecast_onnx::pb::ModelProto| -> Vec<Vec<Option<Value>>> {
        m.graph
            .as_ref()
            .unwrap()
            .input
            .iter()
            .map(|i| {
                let shapecast_onnx::pb::type_proto::Value::TensorType(t) =
                    i.r#type.as_ref().unwrap().value.as_ref().unwrap();
                t.shape
                    .as_ref()
                    .unwrap()
                    .dim
                    .iter()
                    .map(|d| d.value.clone())
                    .collect()
            })
            .collect()
    };
    let mut m = g.build();
    shapecast_onnx::fix_input_symbols(&mut m, 8, &[shapecast_onnx::BATCH_DIM]);
    let d = dims(&m);
    assert_eq!(
        d[0][0],
        Some(Value::DimParam(shapecast_onnx::BATCH_DIM.into()))
    );
    assert_eq!(d[1][0], Some(Value::DimValue(8)));
    assert_eq!(d[1][1], Some(Value::DimValue(3)));
    shapecast_onnx::fix_input_symbols(&mut m, 2, &[]);
    assert_eq!(dims(&m)[0][0], Some(Value::DimValue(2)));
}
