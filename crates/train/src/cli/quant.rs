//! int8 quantization with an accuracy gate, shared by every head's `quantize` subcommand:
//! calibrate the f32 export on training pictures (tract, min/max per tensor), write the
//! int8 form tract runs fastest (`shapecast_onnx::quant`, `Form::Tract`), evaluate f32 and
//! int8 on the validation split and refuse the int8 file (deleted, exit code 1) when the
//! score drops by more than the gate allows.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use shapecast_onnx::quant::{calibrate, quantize as q8, Form, QuantOptions};
use shapecast_onnx::run::F32Tensor;

// Arguments shared by the `quantize` subcommands of the method pipelines. No doc comment on
// purpose: each subcommand's own doc comment stays its help text.
#[allow(missing_docs)]
#[derive(clap::Args, Debug)]
pub struct QuantArgs {
    /// f32 model.
    #[arg(long)]
    pub model: PathBuf,
    /// int8 model to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Run folder: its config.json names the data of calibration and gate (synthetic,
    /// ShapeNet or Pix3D).
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    pub run: Option<PathBuf>,
    /// The run's configuration file instead of a run folder (e.g. models/NAME.config.json
    /// of a shipped model whose run folder is gone: synthetic data are regenerated from its
    /// seed, ShapeNet / Pix3D read from the folders it names).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Calibration pictures (train split; voxels: objects, all their views).
    #[arg(long, default_value_t = 64)]
    pub calib: usize,
    /// Validation pictures (voxels: objects) for the gate (0 = the whole split).
    #[arg(long, default_value_t = 0)]
    pub val: usize,
    /// Layers with a shorter reduction (input channels x kernel, or K) stay f32.
    #[arg(long, default_value_t = 0)]
    pub min_reduction: usize,
}

impl QuantArgs {
    /// The configuration file: `--config`, or `RUN/config.json`.
    pub fn config_path(&self) -> Result<PathBuf> {
        match (&self.config, &self.run) {
            (Some(c), _) => Ok(c.clone()),
            (None, Some(r)) => Ok(r.join("config.json")),
            (None, None) => bail!("give --run or --config"),
        }
    }
}

/// What the gate compares: scores (higher is better) plus figures to print and embed.
#[derive(Debug, Clone)]
pub struct GateScore {
    /// The gated scores (higher is better), e.g. F-score@1% in percent, or the IoU after
    /// each number of fused views: int8 may lose at most the gate's `max_drop` on each.
    pub scores: Vec<(String, f32)>,
    /// A secondary figure that may not rise by more than a relative amount (lower is better,
    /// e.g. Chamfer-L2), if the head has one.
    pub error: Option<f32>,
    /// Human-readable figures.
    pub text: String,
    /// `key=value` pairs for `shapecast.metrics` (prefixed `val_` by the caller's naming).
    pub metrics: String,
}

/// The acceptance rule.
#[derive(Debug, Clone, Copy)]
pub struct Gate {
    /// Name of the gated score, for messages.
    pub name: &'static str,
    /// Largest allowed drop of the score (f32 - int8), in its own units.
    pub max_drop: f32,
    /// Largest allowed relative rise of the secondary error figure (e.g. 0.1 = 10 %).
    pub max_error_rise: f32,
}

/// The gate flags of the points-like heads (lmnet, mesh, implicit): an F-score@1% drop and a
/// relative Chamfer-L2 rise.
#[derive(Debug, clap::Args)]
pub struct FscoreGateArgs {
    /// Largest allowed F-score@1% drop, points.
    #[arg(long, default_value_t = 1.0)]
    pub max_drop: f32,
    /// Largest allowed relative Chamfer-L2 rise (0.05 = 5 %).
    #[arg(long, default_value_t = 0.05)]
    pub max_chamfer_rise: f32,
}

impl FscoreGateArgs {
    /// The gate on the score called `name`.
    pub fn gate(&self, name: &'static str) -> Gate {
        Gate {
            name,
            max_drop: self.max_drop,
            max_error_rise: self.max_chamfer_rise,
        }
    }
}

/// Bytes of a file (0 when unreadable).
pub fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Calibrates `model` on `inputs` (graph input order), writes the int8 model to `out`, then
/// scores both with `score` and applies `gate`. On failure `out` is removed and an error
/// returned; on success `shapecast.metrics` of the int8 file holds the int8 figures
/// followed by the f32 ones (`f32_` prefix).
pub fn quantize_gated(
    model: &Path,
    out: &Path,
    inputs: &[Vec<F32Tensor>],
    calibration_note: String,
    min_reduction: usize,
    gate: Gate,
    mut score: impl FnMut(&Path) -> Result<GateScore>,
) -> Result<()> {
    let proto = shapecast_onnx::read(model).context("reading the f32 model")?;
    let t = Instant::now();
    let ranges = calibrate(&proto, inputs).context("calibrating")?;
    let calibration_note = if min_reduction > 0 {
        format!("{calibration_note}; layers with a reduction < {min_reduction} kept f32")
    } else {
        calibration_note
    };
    let opts = QuantOptions {
        form: Form::Tract,
        calibration_note,
        min_reduction,
        ..QuantOptions::default()
    };
    let mut q = q8(&proto, &ranges, &opts).context("quantizing")?;
    shapecast_onnx::set_metadata(&mut q, "shapecast.precision", "int8");
    shapecast_onnx::write(&q, out).context("writing the int8 model")?;
    log::info!(
        "calibrated on {} inputs and quantized in {:.1} s",
        inputs.len(),
        t.elapsed().as_secs_f64()
    );

    let f = score(model).context("evaluating the f32 model")?;
    let i = match score(out) {
        Ok(i) => i,
        Err(e) => {
            std::fs::remove_file(out).ok();
            return Err(e.context("evaluating the int8 model"));
        }
    };
    if f.scores.len() != i.scores.len() {
        std::fs::remove_file(out).ok();
        bail!("f32 and int8 evaluations differ in their scores");
    }
    let drops: Vec<(String, f32, f32)> = f
        .scores
        .iter()
        .zip(&i.scores)
        .map(|((name, a), (_, b))| (name.clone(), a - b, *b))
        .collect();
    let drop = drops.iter().map(|d| d.1).fold(f32::NEG_INFINITY, f32::max);
    let rise = match (f.error, i.error) {
        (Some(a), Some(b)) if a > 0.0 => Some(b / a - 1.0),
        _ => None,
    };
    println!(
        "f32  ({} B): {}\nint8 ({} B): {}\n{} largest drop {drop:.4}{}",
        file_size(model),
        f.text,
        file_size(out),
        i.text,
        gate.name,
        rise.map(|r| format!(", error rise {:+.2} %", 100.0 * r))
            .unwrap_or_default()
    );
    let mut why = Vec::new();
    for (name, d, v) in &drops {
        if *d > gate.max_drop || !v.is_finite() {
            why.push(format!("{name} fell by {d:.4} (> {})", gate.max_drop));
        }
    }
    if let Some(r) = rise {
        if r > gate.max_error_rise || !r.is_finite() {
            why.push(format!(
                "the error rose by {:.2} % (> {:.2} %)",
                100.0 * r,
                100.0 * gate.max_error_rise
            ));
        }
    }
    if !why.is_empty() {
        std::fs::remove_file(out).ok();
        bail!(
            "int8 gate failed on the validation split: {}; {} removed",
            why.join(" and "),
            out.display()
        );
    }
    let f32_metrics: Vec<String> = f
        .metrics
        .split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| format!("f32_{kv}"))
        .collect();
    shapecast_onnx::set_metadata(
        &mut q,
        "shapecast.metrics",
        &format!("{},{}", i.metrics, f32_metrics.join(",")),
    );
    shapecast_onnx::write(&q, out).context("writing the int8 model")?;
    println!(
        "int8 gate passed ({} drop {drop:.4} <= {}): wrote {}",
        gate.name,
        gate.max_drop,
        out.display()
    );
    Ok(())
}

/// Calibration inputs (train split) with their description for the model's metadata, and the
/// validation pictures of the gate: what the lmnet and mesh `quantize` commands regenerate
/// from a run's data configuration.
pub fn synth_picture_sets(
    data: &shapecast_train::lmnet::SynthData,
    side: usize,
    mean: [f32; 3],
    std: [f32; 3],
    q: &QuantArgs,
) -> Result<(
    Vec<Vec<F32Tensor>>,
    String,
    Vec<shapecast_train::data::Sample>,
)> {
    use shapecast_train::data::Split;
    let cal = data
        .load(side, Split::Train, q.calib)
        .context("loading calibration pictures")?;
    let inputs = picture_inputs(
        shapecast_train::lmnet::probes(&cal, cal.len(), mean, std),
        side,
    )?;
    let note = format!(
        "{} train-split pictures, {}, min/max",
        cal.len(),
        data.describe()
    );
    let vset = data
        .load(side, Split::Val, q.val)
        .context("loading validation pictures")?;
    Ok((inputs, note, vset))
}

/// Calibration inputs of a single-picture model: `[1, 3, side, side]` each.
pub fn picture_inputs(pictures: Vec<Vec<f32>>, side: usize) -> Result<Vec<Vec<F32Tensor>>> {
    pictures
        .into_iter()
        .map(|p| F32Tensor::new(vec![1, 3, side, side], p).map(|t| vec![t]))
        .collect::<Result<_, _>>()
        .context("building calibration inputs")
}

#[cfg(test)]
mod tests {
    use super::*;
    use shapecast_train::backend::{seed_exclusive, NdArrayCpu};
    use shapecast_train::inference::TractRunner;
    use shapecast_train::mesh::{export_mesh, MeshConfig, MeshNet};

    fn pictures(n: usize, side: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|k| {
                (0..3 * side * side)
                    .map(|i| ((i * 7 + k * 31) % 23) as f32 / 11.0 - 1.0)
                    .collect()
            })
            .collect()
    }

    /// A fresh (untrained) mesh network of the `test` preset, exported to `path`.
    fn export_tiny(path: &Path) -> MeshConfig {
        let cfg = MeshConfig::preset("test").unwrap();
        let dev = Default::default();
        let _rng = seed_exclusive::<NdArrayCpu>(&dev, 3);
        let net = MeshNet::<NdArrayCpu>::new(&cfg, &dev);
        let probes = pictures(2, cfg.encoder.image);
        export_mesh(&net, &cfg, path, &probes, 1e-4, None, &dev).unwrap();
        cfg
    }

    #[test]
    fn gate_keeps_a_close_int8_model_and_removes_a_worse_one() {
        let dir = std::env::temp_dir().join(format!("shapecast-quant-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f32_path = dir.join("m.onnx");
        let cfg = export_tiny(&f32_path);
        let side = cfg.encoder.image;
        let inputs = picture_inputs(pictures(8, side), side).unwrap();
        let probe = pictures(1, side).pop().unwrap();
        let reference = TractRunner::load(&f32_path, side)
            .unwrap()
            .run(&probe)
            .unwrap()
            .points;
        // score: minus the mean |output - f32 output| (f32: 0; int8: below 0)
        let score = |m: &Path| -> Result<GateScore> {
            let out = TractRunner::load(m, side)?.run(&probe)?.points;
            let err = out
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs())
                .sum::<f32>()
                / out.len() as f32;
            Ok(GateScore {
                scores: vec![("closeness".into(), -err)],
                error: None,
                text: format!("mean |diff| {err:e}"),
                metrics: format!("diff={err:e}"),
            })
        };
        let out = dir.join("m.int8.onnx");
        let loose = Gate {
            name: "closeness",
            max_drop: 1.0,
            max_error_rise: 0.1,
        };
        quantize_gated(&f32_path, &out, &inputs, "test".into(), 0, loose, score).unwrap();
        let meta = shapecast_onnx::read_metadata(&out).unwrap();
        let get = |k: &str| {
            meta.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("shapecast.precision"), "int8");
        assert_eq!(get("shapecast.calibration"), "test");
        assert!(get("shapecast.metrics").contains(",f32_diff="), "{meta:?}");
        assert!(file_size(&out) * 2 < file_size(&f32_path));
        // the int8 output differs from f32's: a gate that allows no drop refuses it
        let strict = Gate {
            max_drop: 0.0,
            ..loose
        };
        let err =
            quantize_gated(&f32_path, &out, &inputs, "test".into(), 0, strict, score).unwrap_err();
        assert!(format!("{err:#}").contains("gate failed"), "{err:#}");
        assert!(!out.exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
