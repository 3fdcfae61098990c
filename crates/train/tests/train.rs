//! Integration tests of shapecast-train: the `test` preset trains (loss falls), exports load
//! in tract and reproduce burn's output within 1e-4, checkpoints resume.

use std::path::PathBuf;

use burn::module::Module;
use shapecast_onnx::read_metadata;
use shapecast_train::backend::{seed_exclusive, CandleCpu, NdArrayCpu};
use shapecast_train::config::TrainConfig;
use shapecast_train::data::fixtures::write_r2n2;
use shapecast_train::data::Split;
use shapecast_train::datasets::{load_split, ShapeNetSource, SHAPENET_R2N2};
use shapecast_train::export::{export_points, ExportInfo};
use shapecast_train::model::PointNet;
use shapecast_train::training::{load_model, train_points};

#[path = "train/datasets.rs"]
mod datasets;
#[path = "train/implicit.rs"]
mod implicit;
#[path = "train/lmnet.rs"]
mod lmnet;
#[path = "train/mesh.rs"]
mod mesh;
#[path = "train/voxels.rs"]
mod voxels;

type Ad = burn::backend::Autodiff<CandleCpu>;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shapecast-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two deterministic probe pictures `[3, side, side]` in [-1, 1): pixel `i` of picture `k`
/// is `((i * a + k * b) % m) / d - 1`.
fn probe_pictures(side: usize, [a, b, m]: [usize; 3], d: f32) -> Vec<Vec<f32>> {
    (0..2)
        .map(|k| {
            (0..3 * side * side)
                .map(|i| ((i * a + k * b) % m) as f32 / d - 1.0)
                .collect()
        })
        .collect()
}

/// Exports `model` to `onnx`; tract must reproduce burn on `probes` within 1e-4.
fn export_checked(
    model: &PointNet<NdArrayCpu>,
    cfg: &TrainConfig,
    info: &ExportInfo,
    onnx: &std::path::Path,
    probes: &[Vec<f32>],
) {
    let diff = export_points(model, cfg, info, onnx, probes, 1e-4, &Default::default()).unwrap();
    assert!(diff <= 1e-4, "{diff}");
}

/// The training split (all of it) and the validation samples of a run-folder pipeline's
/// data, with pictures of `side` pixels.
fn synth_train_val(
    data: &shapecast_train::lmnet::SynthData,
    side: usize,
) -> (
    Vec<shapecast_train::data::Sample>,
    Vec<shapecast_train::data::Sample>,
) {
    let train = data.load(side, Split::Train, 0).unwrap();
    let val = data.load(side, Split::Val, data.val_samples).unwrap();
    (train, val)
}

/// The step of the last row of `out/metrics.csv`.
fn last_csv_step(out: &std::path::Path) -> usize {
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    csv.lines()
        .last()
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn test_preset_trains_exports_and_resumes() {
    let cfg = TrainConfig::preset("test").unwrap();
    let (train, _) = load_split(&cfg, Split::Train, 0).unwrap();
    let (val, parts) = load_split(&cfg, Split::Val, cfg.data.val_samples).unwrap();
    assert!(train.len() >= 40, "{}", train.len());
    let out = tmp("preset");
    let dev = Default::default();

    // first half, then resume to the end
    let mut half = cfg.clone();
    half.steps = cfg.steps / 2;
    let s1 = train_points::<Ad>(&half, &train, &val, &out, false, &dev, true).unwrap();
    assert_eq!(s1.state.step, cfg.steps / 2);
    let s2 = train_points::<Ad>(&cfg, &train, &val, &out, true, &dev, true).unwrap();
    assert_eq!(s2.state.step, cfg.steps);
    assert!(
        s2.last_loss < 0.7 * s1.first_loss,
        "loss did not fall: {} -> {}",
        s1.first_loss,
        s2.last_loss
    );
    let last_step = last_csv_step(&out);
    assert_eq!(last_step, cfg.steps);
    assert!(out.join("loss.png").exists());

    // export the trained weights (loaded on another backend) and compare with tract
    let (cfg2, model) = load_model::<NdArrayCpu>(&out, &Default::default()).unwrap();
    assert_eq!(cfg2.steps, cfg.steps);
    let probes: Vec<Vec<f32>> = val
        .iter()
        .take(3)
        .map(|s| s.image_chw(cfg.mean, cfg.std))
        .collect();
    let info = ExportInfo {
        classes: parts,
        ..Default::default()
    };
    let onnx = out.join("model.onnx");
    export_checked(&model, &cfg2, &info, &onnx, &probes);
    let meta = read_metadata(&onnx).unwrap();
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("shapecast.contract"), "1");
    assert_eq!(get("shapecast.head"), "points");
    assert_eq!(get("shapecast.points"), cfg.model.points.to_string());
    assert_eq!(get("shapecast.input.width"), cfg.model.image.to_string());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn balanced_label_fine_tune_resumes_with_its_own_schedule() {
    use shapecast_train::loss::{class_weights, LabelBalance};
    use shapecast_train::training::LabelWeights;
    let mut cfg = TrainConfig::preset("test").unwrap();
    cfg.model.classes = 15;
    cfg.steps = 20;
    cfg.eval_every = 10;
    cfg.checkpoint_every = 10;
    let (train, _) = load_split(&cfg, Split::Train, 0).unwrap();
    let (val, _) = load_split(&cfg, Split::Val, 4).unwrap();
    let out = tmp("balanced");
    let dev = Default::default();
    train_points::<Ad>(&cfg, &train, &val, &out, false, &dev, true).unwrap();
    // plain loss: the weights file holds the counts and weights of 1
    let path = out.join("label_weights.json");
    let plain: LabelWeights =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(plain.balance, LabelBalance::None);
    let points: usize = train.iter().map(|s| s.point_labels.len()).sum();
    assert_eq!(plain.counts.iter().sum::<u64>(), points as u64);
    assert!(plain.weights.iter().all(|&w| w == 1.0));
    assert!(plain.counts.iter().filter(|&&c| c > 0).count() >= 3);

    // the fine-tune: balanced, symmetric, its schedule restarting at step 20
    let mut ft = cfg.clone();
    ft.steps = 40;
    ft.lr_restart = 20;
    ft.lr = 5e-4;
    ft.label_balance = LabelBalance::InvSqrt;
    ft.label_symmetric = true;
    let s = train_points::<Ad>(&ft, &train, &val, &out, true, &dev, true).unwrap();
    assert_eq!(s.state.step, 40);
    let saved = TrainConfig::load(&out.join("config.json")).unwrap();
    assert_eq!(saved, ft);
    let lw: LabelWeights = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(lw.counts, plain.counts);
    assert_eq!(lw.weights, class_weights(&lw.counts, LabelBalance::InvSqrt));
    // rarer parts weigh more
    let present = || (0..15).filter(|&i| lw.counts[i] > 0);
    let lo = present().min_by_key(|&i| lw.counts[i]).unwrap();
    let hi = present().max_by_key(|&i| lw.counts[i]).unwrap();
    assert!(lw.weights[lo] > lw.weights[hi], "{lw:?}");
    // the CSV rows of the fine-tune: its learning rate (warm-up from the restart) and a
    // finite label loss
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let rows: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    let lr_of = |step: f64| rows.iter().find(|r| r[0] == step).map(|r| r[1]);
    // the base run's rows survive the resume, with the base schedule
    for step in [10usize, 20] {
        let lr = lr_of(step as f64).expect("base row kept");
        assert!((lr - cfg.lr_at(step - 1)).abs() < 1e-6 * lr, "{step}: {lr}");
    }
    // step 29 is step 9 of a 20-step schedule from 5e-4 (hand computation, not lr_at)
    let rel = 9.0f64;
    let w = ft.warmup as f64;
    let want = if rel < w {
        5e-4 * (rel + 1.0) / w
    } else {
        let t = ((rel - w) / (20.0 - w).max(1.0)).min(1.0);
        let lo = 5e-4 * ft.lr_final_ratio;
        lo + 0.5 * (5e-4 - lo) * (1.0 + (std::f64::consts::PI * t).cos())
    };
    let row = rows.iter().find(|r| r[0] == 30.0).expect("row of step 30");
    assert!((row[1] - want).abs() < 1e-5 * want, "{row:?} vs {want}");
    let mut no_restart = ft.clone();
    no_restart.lr_restart = 0;
    assert!(
        (row[1] - no_restart.lr_at(29)).abs() > 1e-3 * want,
        "restart had no effect"
    );
    assert!(row[3].is_finite() && row[3] > 0.0, "{row:?}");
    // a fine-tune that does not start from a checkpoint at its restart step is refused
    let fresh = tmp("balanced-fresh");
    let e = train_points::<Ad>(&ft, &train, &val, &fresh, false, &dev, true).unwrap_err();
    assert!(e.to_string().contains("lr_restart = 20"), "{e}");
    // a labelled model on unlabelled samples is refused
    let mut bare = train.clone();
    bare.iter_mut().for_each(|s| s.point_labels.clear());
    let e = train_points::<Ad>(&cfg, &bare, &val, &fresh, false, &dev, true).unwrap_err();
    assert!(e.to_string().contains("part labels"), "{e}");
    std::fs::remove_dir_all(&fresh).ok();
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn patchify_encoder_export_matches_burn() {
    // the cpu-small preset's encoder form (kernel = stride, no padding), on a small picture,
    // mixed with a padded 3x3 layer
    let mut cfg = TrainConfig::preset("cpu-small").unwrap();
    assert_eq!(
        cfg.model.kernels, cfg.model.strides,
        "cpu-small is a patchify encoder"
    );
    cfg.model.image = 32;
    cfg.model.channels = vec![8, 12, 16];
    cfg.model.strides = vec![4, 1, 2];
    cfg.model.kernels = vec![4, 3, 2];
    cfg.model.hidden = 32;
    cfg.model.points = 64;
    assert_eq!(cfg.model.feature_side(), 4);
    let dev = Default::default();
    let _rng = seed_exclusive::<NdArrayCpu>(&dev, 9);
    let model = cfg.model.init::<NdArrayCpu>(&dev);
    let probes = probe_pictures(cfg.model.image, [11, 5, 23], 11.0);
    let out = tmp("patchify");
    let onnx = out.join("m.onnx");
    export_checked(&model, &cfg, &ExportInfo::default(), &onnx, &probes);
    // no explicit padding on the patchify layers
    let proto = shapecast_onnx::read(&onnx).unwrap();
    let pads: Vec<Vec<i64>> = proto
        .graph
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .map(|n| {
            n.attribute
                .iter()
                .find(|a| a.name == "pads")
                .map(|a| a.ints.clone())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(pads, vec![vec![0; 4], vec![1; 4], vec![0; 4]]);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn camera_frame_export_declares_its_frame() {
    let mut cfg = TrainConfig::preset("test").unwrap();
    cfg.model.points = 64;
    cfg.data.frame = "camera".into();
    cfg.validate().unwrap();
    let dev = Default::default();
    let _rng = seed_exclusive::<NdArrayCpu>(&dev, 5);
    let model = cfg.model.init::<NdArrayCpu>(&dev);
    // weights counted by param_count (+ the running mean and variance of every batch norm)
    let running = 2 * (cfg.model.channels.iter().sum::<usize>() + cfg.model.hidden);
    assert_eq!(cfg.model.param_count() + running, model.num_params());
    let probes = probe_pictures(cfg.model.image, [13, 7, 29], 14.0);
    let out = tmp("camera-frame");
    let onnx = out.join("m.onnx");
    export_checked(&model, &cfg, &ExportInfo::default(), &onnx, &probes);
    let kv = read_metadata(&onnx).unwrap();
    let frame = kv.iter().find(|(k, _)| k == "shapecast.frame").unwrap();
    assert_eq!(frame.1, "camera");
    cfg.data.frame = "world".into();
    assert!(cfg.validate().is_err());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn label_head_and_hypotheses_export_matches_burn() {
    let mut cfg = TrainConfig::preset("test").unwrap();
    cfg.model.hypotheses = 2;
    cfg.model.classes = 3;
    cfg.model.points = 64;
    let dev = Default::default();
    // the backend's generator is shared with the tests training beside this one
    let _rng = seed_exclusive::<NdArrayCpu>(&dev, 5);
    let model = cfg.model.init::<NdArrayCpu>(&dev);
    let probes = probe_pictures(cfg.model.image, [7, 13, 17], 8.0);
    let info = ExportInfo {
        classes: vec!["a".into(), "b".into(), "c".into()],
        ..Default::default()
    };
    let out = tmp("labels");
    let onnx = out.join("m.onnx");
    export_checked(&model, &cfg, &info, &onnx, &probes);
    let meta = read_metadata(&onnx).unwrap();
    assert!(meta
        .iter()
        .any(|(k, v)| k == "shapecast.classes" && v == "a,b,c"));
    assert!(meta
        .iter()
        .any(|(k, v)| k == "shapecast.hypotheses" && v == "2"));
    // the evaluation's runner finds the `labels` output by its tensor name
    let runner = shapecast_train::inference::TractRunner::load(&onnx, cfg.model.image).unwrap();
    let ran = runner.run(&probes[0]).unwrap();
    let labels = ran.argmax_labels(1).expect("labels output read");
    assert_eq!(labels.len(), 64);
    assert!(labels.iter().all(|&l| l < 3));
    // `eval` scores the labels against a dataset with part labels, and reports none on one
    // without (ShapeNet: empty `point_labels`, never "all part 0")
    let (synth, _) = load_split(&cfg, Split::Val, 2).unwrap();
    let (rep, _) =
        shapecast_train::eval::eval_onnx(&runner, "m", &synth, cfg.mean, cfg.std, 0).unwrap();
    assert_eq!(rep.label_accuracy.map(|a| a.samples), Some(2));
    write_r2n2(&out.join("r2n2")).unwrap();
    let mut sn = cfg.clone();
    sn.model.classes = 0; // the data spec of eval: geometry only
    sn.data.kind = SHAPENET_R2N2.into();
    sn.data.shapenet = Some(ShapeNetSource {
        rendering_dir: out.join("r2n2/ShapeNetRendering"),
        points_dir: Some(out.join("r2n2/points")),
        voxels_dir: None,
        split_dir: Some(out.join("r2n2/splits")),
        synsets: vec![],
        background: [255; 3],
        points_units: Default::default(),
    });
    let (shapenet, parts) = load_split(&sn, Split::Val, 2).unwrap();
    assert!(parts.is_empty() && shapenet.iter().all(|s| s.point_labels.is_empty()));
    let (rep, _) =
        shapecast_train::eval::eval_onnx(&runner, "m", &shapenet, cfg.mean, cfg.std, 0).unwrap();
    assert_eq!(rep.samples, 2);
    assert!(rep.label_accuracy.is_none());
    // wrong number of class names is refused
    let bad = ExportInfo::default();
    assert!(export_points(&model, &cfg, &bad, &onnx, &probes, 1e-4, &dev).is_err());
    std::fs::remove_dir_all(&out).ok();
}
