//! Times one ONNX model in tract (single thread, batch 1):
//! `cargo run --release -p shapecast-onnx --example tract_bench -- MODEL [INPUT.f32] [--iters N] [--threads N] [--f16] [--no-fuse] [--sym N] [--out OUT.f32]`
//!
//! Prints one line: `tract MODEL load_ms=.. median_ms=.. mean_ms=.. min_ms=.. iters=.. min_us=.. median_us=..`
//! (the last two in microseconds, for the small models whose runs take a few tens of them).
//! INPUT.f32 is a raw little-endian f32 image for the `image` input (zeros when absent).

use std::time::Instant;

use anyhow::{bail, Context, Result};
use shapecast_onnx::run::{load, LoadOptions};
use tract_onnx::prelude::*;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tract_bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut model_path = None;
    let mut input_path = None;
    let mut out_path = None;
    let mut iters = 200usize;
    let mut f16 = false;
    let mut fuse = true;
    let mut threads = 1usize;
    let mut sym = 8192usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iters" => {
                iters = args
                    .next()
                    .context("--iters needs a value")?
                    .parse()
                    .context("--iters")?
            }
            "--f16" => f16 = true,
            "--no-fuse" => fuse = false,
            "--threads" => {
                threads = args
                    .next()
                    .context("--threads needs a value")?
                    .parse()
                    .context("--threads")?
            }
            "--sym" => {
                sym = args
                    .next()
                    .context("--sym needs a value")?
                    .parse()
                    .context("--sym")?
            }
            "--out" => out_path = Some(args.next().context("--out needs a path")?),
            _ if model_path.is_none() => model_path = Some(a),
            _ if input_path.is_none() => input_path = Some(a),
            _ => bail!("unexpected argument {a}"),
        }
    }
    let model_path =
        model_path.context("usage: tract_bench MODEL [INPUT.f32] [--iters N] [--f16] [--out F]")?;
    let t0 = Instant::now();
    let mut proto =
        shapecast_onnx::read(&model_path).with_context(|| format!("reading {model_path}"))?;
    // fix every symbolic input dimension but the batch to --sym, as the runtime fixes the
    // implicit decoder's query count to its chunk before optimising
    shapecast_onnx::fix_input_symbols(&mut proto, sym, &[shapecast_onnx::BATCH_DIM]);
    let model = load(
        &proto,
        &LoadOptions {
            f16,
            fuse,
            threads,
            ..Default::default()
        },
    )
    .context("loading into tract")?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    // TRACT_BENCH_OPS=1: the optimised plan's nodes (name and op) on stderr, e.g. to see which
    // convolution path tract picked
    if std::env::var_os("TRACT_BENCH_OPS").is_some_and(|v| v == "1") {
        for node in model.plan().model().nodes() {
            eprintln!("{} {} {:?}", node.id, node.op.name(), node.name);
        }
    }
    // input 0: INPUT.f32 or zeros; further inputs (recurrent state, query points): a fixed
    // pattern `((i * 7919) % 1000) / 1000 - 0.5`, the same as ort_bench.py; a symbolic
    // dimension (e.g. the implicit decoder's query count Q) takes --sym (default 8192)
    let n_inputs = model.plan().model().inputs.len();
    let mut inputs: TVec<TValue> = tvec!();
    for ix in 0..n_inputs {
        let fact = model
            .plan()
            .model()
            .input_fact(ix)
            .context("input fact")?
            .clone();
        let shape: Vec<usize> = fact
            .shape
            .iter()
            .map(|d| d.to_i64().map(|v| v as usize).unwrap_or(sym))
            .collect();
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match (&input_path, ix) {
            (Some(p), 0) => {
                let bytes = std::fs::read(p).with_context(|| format!("reading {p}"))?;
                if bytes.len() != n * 4 {
                    bail!(
                        "{p}: {} bytes, model input {shape:?} needs {}",
                        bytes.len(),
                        n * 4
                    );
                }
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            }
            (None, 0) => vec![0.0; n],
            _ => (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect(),
        };
        let input: TValue = Tensor::from_shape(&shape, &data)
            .context("input tensor")?
            .into_tvalue();
        let dt = fact.datum_type;
        inputs.push(if dt == f32::datum_type() {
            input
        } else {
            input
                .cast_to_dt(dt)
                .context("cast input")?
                .into_owned()
                .into_tvalue()
        });
    }
    for _ in 0..10.min(iters) {
        model.run_values(inputs.clone()).context("warm-up run")?;
    }
    let mut times = Vec::with_capacity(iters);
    let mut last = tvec!();
    for _ in 0..iters {
        let t = Instant::now();
        last = model.run_values(inputs.clone()).context("run")?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "tract {model_path} load_ms={load_ms:.1} median_ms={median:.3} mean_ms={mean:.3} min_ms={:.3} iters={iters} min_us={:.2} median_us={:.2}",
        times[0],
        times[0] * 1e3,
        median * 1e3
    );
    if let Some(p) = out_path {
        let out = last
            .first()
            .context("no output")?
            .cast_to::<f32>()
            .context("output to f32")?;
        let bytes: Vec<u8> = out
            .try_as_plain_ram()?
            .as_slice::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        std::fs::write(&p, bytes).with_context(|| format!("writing {p}"))?;
    }
    Ok(())
}
