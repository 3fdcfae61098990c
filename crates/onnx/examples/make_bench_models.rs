//! Writes the representative benchmark models and their inputs:
//! `cargo run --release -p shapecast-onnx --example make_bench_models -- OUT_DIR`
//!
//! For each of bench-128 and bench-64: NAME.onnx (f32), NAME.int8.onnx (tract form),
//! NAME.qlmm.onnx (standard QLinearMatMul linear layers), NAME.qdq.onnx (QDQ),
//! NAME.input.f32 (one normalised image, raw little-endian f32, [1, 3, S, S]).

use anyhow::{Context, Result};
use shapecast_onnx::quant::{calibrate, quantize, Form, QuantOptions};
use shapecast_onnx::run::{compare, load, F32Tensor, LoadOptions};
use shapecast_onnx::testnet::{self, NetSpec};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("make_bench_models: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/bench-onnx".into()),
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for spec in [NetSpec::large(), NetSpec::small()] {
        let name = spec.model_id.clone();
        let w = testnet::weights(&spec, 42);
        let model = testnet::build(&spec, &w).context("building graph")?.build();
        shapecast_onnx::write(&model, dir.join(format!("{name}.onnx")))
            .context("writing f32 model")?;
        let samples: Vec<Vec<F32Tensor>> = (0..16)
            .map(|s| {
                F32Tensor::new(
                    vec![1, 3, spec.size, spec.size],
                    testnet::sample_image(spec.size, s),
                )
                .map(|t| vec![t])
            })
            .collect::<Result<_, _>>()
            .context("sample tensors")?;
        let ranges = calibrate(&model, &samples).context("calibrating")?;
        let base = QuantOptions {
            calibration_note: "16 synthetic testnet images".into(),
            ..Default::default()
        };
        let variants = [
            ("int8", QuantOptions { ..base.clone() }),
            (
                "qlmm",
                QuantOptions {
                    form: Form::QLinearMatMul,
                    ..base.clone()
                },
            ),
            (
                "qdq",
                QuantOptions {
                    form: Form::Qdq,
                    ..base.clone()
                },
            ),
            // experiments recorded in docs/int8.md
            (
                "int8pc",
                QuantOptions {
                    conv_per_channel: true,
                    ..base.clone()
                },
            ),
            (
                "int8convs",
                QuantOptions {
                    linears: false,
                    ..base.clone()
                },
            ),
            (
                "int8head",
                QuantOptions {
                    convs: false,
                    ..base.clone()
                },
            ),
            (
                "int8k28",
                QuantOptions {
                    min_reduction: 28,
                    ..base.clone()
                },
            ),
        ];
        let f32m = load(&model, &LoadOptions::default()).context("loading f32 model")?;
        let held_out: Vec<Vec<F32Tensor>> = (500..508)
            .map(|s| {
                F32Tensor::new(
                    vec![1, 3, spec.size, spec.size],
                    testnet::sample_image(spec.size, s),
                )
                .map(|t| vec![t])
            })
            .collect::<Result<_, _>>()
            .context("held-out tensors")?;
        for (suffix, options) in variants {
            let q = quantize(&model, &ranges, &options)
                .with_context(|| format!("quantizing {suffix}"))?;
            shapecast_onnx::write(&q, dir.join(format!("{name}.{suffix}.onnx")))
                .context("writing int8 model")?;
            let qm =
                load(&q, &LoadOptions::default()).with_context(|| format!("loading {suffix}"))?;
            let c = compare(&f32m, &qm, &held_out).context("comparing")?;
            println!(
                "{name}.{suffix}: vs f32 on 8 held-out images: max_abs={:.4} mean_abs={:.5} (f32 output rms {:.3})",
                c.max_abs[0], c.mean_abs[0], c.ref_rms[0]
            );
        }
        let input = testnet::sample_image(spec.size, 1000);
        let bytes: Vec<u8> = input.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.join(format!("{name}.input.f32")), bytes).context("writing input")?;
        println!("wrote {name} models to {}", dir.display());
    }
    Ok(())
}
