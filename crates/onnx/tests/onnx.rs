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
