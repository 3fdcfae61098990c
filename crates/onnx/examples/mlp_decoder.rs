//! Rewrites an implicit decoder file into the f32 form of `MlpDecoder::f32_graph` and the int8
//! form of `quantize_decoder` (for benchmarks, bench/onnx/RESULTS.md):
//! `cargo run --release -p shapecast-onnx --example mlp_decoder -- DECODER.onnx OUTDIR [LATENTS.f32]`
//!
//! Writes OUTDIR/decoder.f32.onnx and OUTDIR/decoder.int8.onnx (metadata kept), prints the
//! largest difference of each from the input file (tract, 8192 random queries per latent).
//! Calibration: each latent of LATENTS.f32 (raw little-endian f32, Z values per latent; zeros
//! when absent) with a 24^3 lattice over [-0.5, 0.5]^3.

use anyhow::{bail, Context, Result};
use shapecast_onnx::mlp::{quantize_decoder, DecoderSample, MlpDecoder};
use shapecast_onnx::run::{load, F32Tensor, LoadOptions};

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mlp_decoder: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 3 {
        bail!("usage: mlp_decoder DECODER.onnx OUTDIR [LATENTS.f32]");
    }
    let src = shapecast_onnx::read(&args[0]).with_context(|| format!("reading {}", args[0]))?;
    let out = std::path::Path::new(&args[1]);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let d = MlpDecoder::from_model(&src).context("reading the decoder weights")?;
    let latents: Vec<Vec<f32>> = match args.get(2) {
        Some(p) => std::fs::read(p)
            .with_context(|| format!("reading {p}"))?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect::<Vec<_>>()
            .chunks_exact(d.latent)
            .map(|c| c.to_vec())
            .collect(),
        None => vec![vec![0.0; d.latent]],
    };
    let n = 24;
    let t = |i: usize| -0.5 + i as f32 / (n - 1) as f32;
    let lattice: Vec<[f32; 3]> = (0..n * n * n)
        .map(|i| [t(i / (n * n)), t(i / n % n), t(i % n)])
        .collect();
    let samples: Vec<DecoderSample> = latents
        .iter()
        .map(|z| DecoderSample {
            latent: z.clone(),
            xyz: lattice.clone(),
        })
        .collect();
    let mut f32m = d
        .f32_graph("implicit_decoder", "Q")
        .context("f32 graph")?
        .build();
    f32m.metadata_props = src.metadata_props.clone();
    let int8 = quantize_decoder(
        &src,
        &samples,
        &format!("{} latents x 24^3 lattice, max", latents.len()),
    )
    .context("quantizing")?;
    shapecast_onnx::write(&f32m, out.join("decoder.f32.onnx"))?;
    shapecast_onnx::write(&int8, out.join("decoder.int8.onnx"))?;
    // differences from the source, tract, 8192 pseudo-random queries per latent
    let q = 8192;
    let load_q = |m: &shapecast_onnx::pb::ModelProto| {
        let mut m = m.clone();
        shapecast_onnx::fix_input_symbols(&mut m, q, &[]);
        load(&m, &LoadOptions::default())
    };
    let (a, b, c) = (load_q(&src)?, load_q(&f32m)?, load_q(&int8)?);
    let mut state = 0x2545_f491u32;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as f32 / u32::MAX as f32 - 0.5
    };
    let (mut e_f32, mut e_i8, mut sum_i8, mut cnt) = (0f32, 0f32, 0f64, 0usize);
    for z in &latents {
        let xyz: Vec<f32> = (0..q * 3).map(|_| rnd()).collect();
        let inputs = [
            F32Tensor::new(vec![1, d.latent], z.clone())?,
            F32Tensor::new(vec![q, 3], xyz)?,
        ];
        let ra = &a.run(&inputs)?[0].data;
        let rb = &b.run(&inputs)?[0].data;
        let rc = &c.run(&inputs)?[0].data;
        for ((x, y), w) in ra.iter().zip(rb).zip(rc) {
            e_f32 = e_f32.max((x - y).abs());
            e_i8 = e_i8.max((x - w).abs());
            sum_i8 += f64::from((x - w).abs());
            cnt += 1;
        }
    }
    println!(
        "{}: f32 form max |diff| {e_f32:.2e}; int8 max |diff| {e_i8:.4} mean {:.5} ({} latents x {q} queries)",
        args[0],
        sum_i8 / cnt as f64,
        latents.len()
    );
    Ok(())
}
