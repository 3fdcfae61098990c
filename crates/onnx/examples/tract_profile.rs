//! Per-node time profile of one ONNX model in tract (batch 1, single thread):
//! `cargo run --release -p shapecast-onnx --example tract_profile -- MODEL [INPUT.f32] [--iters N] [--f16] [--sym N]`
//!
//! Prints the optimized nodes sorted by total time, with their share of the run. Inputs as
//! `tract_bench`: input 0 from INPUT.f32 (zeros when absent), further inputs the fixed pattern
//! `((i * 7919) % 1000) / 1000 - 0.5`; symbolic input dimensions but the batch take `--sym`
//! (default 8192, the runtime's implicit decoder chunk).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use shapecast_onnx::run::{load, LoadOptions};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tract_profile: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut model_path, mut input_path, mut iters, mut f16, mut verbose, mut dump) =
        (None, None, 50usize, false, false, false);
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
            "--sym" => {
                sym = args
                    .next()
                    .context("--sym needs a value")?
                    .parse()
                    .context("--sym")?
            }
            "-v" => verbose = true,
            "--dump" => dump = true,
            _ if model_path.is_none() => model_path = Some(a),
            _ if input_path.is_none() => input_path = Some(a),
            _ => bail!("unexpected argument {a}"),
        }
    }
    let model_path =
        model_path.context("usage: tract_profile MODEL [INPUT.f32] [--iters N] [--f16]")?;
    let mut proto =
        shapecast_onnx::read(&model_path).with_context(|| format!("reading {model_path}"))?;
    shapecast_onnx::fix_input_symbols(&mut proto, sym, &[shapecast_onnx::BATCH_DIM]);
    let model = load(
        &proto,
        &LoadOptions {
            f16,
            ..Default::default()
        },
    )
    .context("loading into tract")?;
    let plan = model.plan();
    if dump {
        for node in plan.model().nodes() {
            println!(
                "#{:<3} {:<22} {:<28} <- {:?}  {}",
                node.id,
                node.op.name(),
                node.name,
                node.inputs.iter().map(|i| i.node).collect::<Vec<_>>(),
                node.outputs
                    .first()
                    .map(|o| format!("{:?}", o.fact))
                    .unwrap_or_default()
            );
        }
    }
    let mut inputs: TVec<TValue> = tvec!();
    for ix in 0..plan.model().inputs.len() {
        let fact = plan.model().input_fact(ix).context("input fact")?.clone();
        let shape: Vec<usize> = fact
            .shape
            .as_concrete()
            .context("input shape not concrete")?
            .to_vec();
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match (&input_path, ix) {
            (Some(p), 0) => std::fs::read(p)
                .with_context(|| format!("reading {p}"))?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            (None, 0) => vec![0.0; n],
            _ => (0..n)
                .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                .collect(),
        };
        inputs.push(
            Tensor::from_shape(&shape, &data)
                .context("input tensor")?
                .into_tvalue(),
        );
    }
    let mut state = SimpleState::new(plan).context("state")?;
    let mut per_node: HashMap<usize, f64> = HashMap::new();
    let mut total = 0f64;
    for it in 0..iters + 5 {
        let t0 = Instant::now();
        let mut local: Vec<(usize, f64)> = vec![];
        state
            .run_plan_with_eval(inputs.clone(), |session, op_state, node, inputs| {
                let t = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(session, op_state, node, inputs);
                local.push((node.id, t.elapsed().as_secs_f64()));
                r
            })
            .context("run")?;
        if it >= 5 {
            total += t0.elapsed().as_secs_f64();
            for (id, t) in local {
                *per_node.entry(id).or_default() += t;
            }
        }
    }
    let mut rows: Vec<(usize, f64)> = per_node.into_iter().collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "{model_path}: {:.3} ms per run ({} nodes)",
        total / iters as f64 * 1e3,
        rows.len()
    );
    for (id, t) in rows.iter().take(25) {
        let node = plan.model().node(*id);
        println!(
            "{:8.3} ms {:5.1}%  {:<20} {}  {}",
            t / iters as f64 * 1e3,
            t / total * 100.0,
            node.op.name(),
            node.name,
            node.outputs
                .first()
                .map(|o| format!("{:?}", o.fact))
                .unwrap_or_default()
        );
        if verbose {
            for line in node.op.info().unwrap_or_default() {
                println!("                 {line}");
            }
        }
    }
    Ok(())
}
