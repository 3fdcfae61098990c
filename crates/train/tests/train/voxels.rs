//! Integration tests of [`shapecast_train::voxels`]: the `test` preset (GRU fusion) trains
//! with a falling loss, resumes from its checkpoint, and its export runs in tract with the
//! same occupancy and state as burn along a sequence of views; the single-view export too.

use shapecast_onnx::read_metadata;
use shapecast_train::backend::{seed_exclusive, NdArrayCpu};
use shapecast_train::data::Split;
use shapecast_train::voxels::data::load_objects;
use shapecast_train::voxels::export::{export_voxels, TractVoxels, VoxelExportInfo};
use shapecast_train::voxels::train::{evaluate, load_voxel_model, train_voxels};
use shapecast_train::voxels::VoxelTrainConfig;

use super::{tmp, Ad};

fn meta_get(meta: &[(String, String)], k: &str) -> Option<String> {
    meta.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.clone())
}

#[test]
fn voxel_test_preset_trains_resumes_and_exports_fusion() {
    let cfg = VoxelTrainConfig::preset("test").unwrap();
    assert!(cfg.model.fusion);
    let (train, classes) = load_objects(&cfg, Split::Train, 0).unwrap();
    let (val, _) = load_objects(&cfg, Split::Val, cfg.data.val_objects).unwrap();
    assert!(train.len() >= 15, "{}", train.len());
    assert!(!classes.is_empty());
    let r = cfg.model.resolution;
    assert!(train.iter().all(|o| o.voxels.len() == r * r * r
        && o.views.len() == cfg.data.views
        && o.voxels.iter().any(|&v| v > 0)));
    let out = tmp("voxels");
    let dev = Default::default();

    let mut half = cfg.clone();
    half.steps = cfg.steps / 2;
    let s1 = train_voxels::<Ad>(&half, &train, &val, &out, false, &dev, true).unwrap();
    assert_eq!(s1.state.step, cfg.steps / 2);
    let s2 = train_voxels::<Ad>(&cfg, &train, &val, &out, true, &dev, true).unwrap();
    assert_eq!(s2.state.step, cfg.steps);
    assert!(
        s2.last_loss < 0.8 * s1.first_loss,
        "loss did not fall: {} -> {}",
        s1.first_loss,
        s2.last_loss
    );
    let last = super::last_csv_step(&out);
    assert_eq!(last, cfg.steps);
    assert!(out.join("loss.png").exists());
    assert_eq!(s2.state.last_val.len(), 2);
    assert!(s2
        .state
        .last_val
        .iter()
        .all(|m| m.iou.is_finite() && (0.0..=1.0).contains(&m.iou)));

    // weights loaded on another backend; export and compare with tract along sequences
    let (cfg2, model) = load_voxel_model::<NdArrayCpu>(&out, &Default::default()).unwrap();
    assert_eq!(cfg2, cfg);
    let probes: Vec<Vec<Vec<f32>>> = val.iter().take(2).map(|o| o.views.clone()).collect();
    let onnx = out.join("voxels.onnx");
    let diff = export_voxels(
        &model,
        &cfg2,
        &VoxelExportInfo::default(),
        &onnx,
        &probes,
        1e-4,
        &Default::default(),
    )
    .unwrap();
    assert!(diff <= 1e-4, "{diff}");
    let meta = read_metadata(&onnx).unwrap();
    assert_eq!(meta_get(&meta, "shapecast.head").as_deref(), Some("voxels"));
    assert_eq!(meta_get(&meta, "shapecast.contract").as_deref(), Some("1"));
    assert_eq!(
        meta_get(&meta, "shapecast.voxels.resolution").as_deref(),
        Some("32")
    );
    assert_eq!(
        meta_get(&meta, "shapecast.voxels.threshold").as_deref(),
        Some("0.5")
    );
    assert_eq!(
        meta_get(&meta, "shapecast.fusion.views"),
        Some(cfg.seq_views.to_string())
    );
    assert_eq!(
        meta_get(&meta, "shapecast.input.width"),
        Some(cfg.model.image.to_string())
    );
    let runner = TractVoxels::load(&onnx).unwrap();
    assert_eq!(runner.state_size(), cfg.model.state);
    // the state carries memory: the second view's output depends on the first view
    let z = vec![0.0f32; cfg.model.state];
    let (_, s1) = runner.step(&probes[0][0], &z).unwrap();
    let (a, _) = runner.step(&probes[0][1], &s1).unwrap();
    let (b, _) = runner.step(&probes[0][1], &z).unwrap();
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(d > 1e-3, "state has no effect ({d})");
    // burn evaluation runs on the exported weights
    let m = evaluate(&model, &val, &[1, 3], &cfg2, &Default::default()).unwrap();
    assert!(m.iter().all(|v| (0.0..=1.0).contains(&v.iou)), "{m:?}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn voxel_single_view_export_matches_burn() {
    let mut cfg = VoxelTrainConfig::preset("test").unwrap();
    cfg.model.fusion = false;
    let dev = Default::default();
    // the backend's generator is shared with the tests training beside this one
    let _rng = seed_exclusive::<NdArrayCpu>(&dev, 5);
    let model = cfg.model.init::<NdArrayCpu>(&dev);
    let side = cfg.model.image;
    let probes: Vec<Vec<Vec<f32>>> = (0..2)
        .map(|k| {
            vec![(0..3 * side * side)
                .map(|i| ((i * 7 + k * 13) % 17) as f32 / 8.0 - 1.0)
                .collect()]
        })
        .collect();
    let out = tmp("voxels-single");
    let onnx = out.join("single.onnx");
    let info = VoxelExportInfo {
        metrics: Some("iou@1view=0.5".into()),
        dataset: None,
    };
    let diff = export_voxels(&model, &cfg, &info, &onnx, &probes, 1e-4, &dev).unwrap();
    assert!(diff <= 1e-4, "{diff}");
    let meta = read_metadata(&onnx).unwrap();
    assert_eq!(meta_get(&meta, "shapecast.fusion.views"), None);
    assert_eq!(
        meta_get(&meta, "shapecast.metrics").as_deref(),
        Some("iou@1view=0.5")
    );
    let runner = TractVoxels::load(&onnx).unwrap();
    assert_eq!(runner.state_size(), 0);
    let (occ, _) = runner.step(&probes[0][0], &[]).unwrap();
    assert_eq!(occ.len(), 32 * 32 * 32);
    // a configuration that disagrees with the weights is refused
    let mut wrong = cfg.clone();
    wrong.model.fusion = true;
    assert!(export_voxels(&model, &wrong, &info, &onnx, &probes, 1e-4, &dev).is_err());
    std::fs::remove_dir_all(&out).ok();
}
