//! Training on the users' datasets: the point and voxel trainers run a few steps of the
//! `test` presets on small ShapeNet (3D-R2N2 layout) and Pix3D fixtures, the CLI trains,
//! exports and evaluates from a config file, and trainers whose ground truth a dataset lacks
//! (part labels, SDF samples, points or voxels without their folder) are refused with a
//! message naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

use shapecast_train::config::TrainConfig;
use shapecast_train::data::fixtures::{write_pix3d, write_r2n2};
use shapecast_train::data::shapenet::{PointsUnits, R2n2Options, ShapeNetR2n2};
use shapecast_train::data::{Dataset, Sample, Split};
use shapecast_train::datasets::{
    load_samples, load_split, Pix3dSource, ShapeNetSource, PIX3D, SHAPENET_R2N2,
};
use shapecast_train::implicit::{load_set, ImplicitConfig, Kind};
use shapecast_train::training::train_points;
use shapecast_train::voxels::data::load_objects;
use shapecast_train::voxels::train::train_voxels;
use shapecast_train::voxels::VoxelTrainConfig;

use super::{tmp, Ad};

fn shapenet(root: &Path) -> ShapeNetSource {
    ShapeNetSource {
        rendering_dir: root.join("ShapeNetRendering"),
        points_dir: Some(root.join("points")),
        voxels_dir: Some(root.join("ShapeNetVox32")),
        split_dir: Some(root.join("splits")),
        synsets: vec![],
        background: [255; 3],
        points_units: Default::default(),
    }
}

fn pix3d(root: &Path) -> Pix3dSource {
    Pix3dSource {
        root: root.to_path_buf(),
        categories: vec![],
        use_mask: true,
        skip_occluded: true,
        background: [255; 3],
    }
}

/// The point model's `test` preset on ShapeNet or Pix3D data at `root`, `steps` steps.
fn point_config(kind: &str, root: &Path, steps: usize) -> TrainConfig {
    let mut c = TrainConfig::preset("test").unwrap();
    c.data.kind = kind.into();
    if kind == SHAPENET_R2N2 {
        c.data.shapenet = Some(shapenet(root));
    } else {
        c.data.pix3d = Some(pix3d(root));
    }
    c.data.val_samples = 4;
    c.steps = steps;
    c.eval_every = steps;
    c.checkpoint_every = steps;
    c.warmup = 1;
    c
}

fn no_labels(samples: &[Sample]) {
    assert!(samples
        .iter()
        .all(|s| s.point_labels.is_empty() && s.points.len() == 256));
}

/// Runs the trainer binary; returns (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_shapecast-train"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_trains_exports_and_evaluates_on_shapenet() {
    let dir = tmp("ds-shapenet-cli");
    write_r2n2(&dir.join("data")).unwrap();
    let cfg = point_config(SHAPENET_R2N2, &dir.join("data"), 4);
    let cfg_path = dir.join("shapenet.config.json");
    cfg.save(&cfg_path).unwrap();
    let run = dir.join("run");
    let (ok, out) = cli(&[
        "train",
        "--config",
        s(&cfg_path),
        "--out",
        s(&run),
        "--quiet",
        "--export",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("trained 4 steps"), "{out}");
    let meta = shapecast_onnx::read_metadata(run.join("model.onnx")).unwrap();
    let ds = meta.iter().find(|(k, _)| k == "shapecast.dataset").unwrap();
    assert!(ds.1.starts_with("shapenet-r2n2 "), "{ds:?}");
    let ev = dir.join("eval");
    let (ok, out) = cli(&[
        "eval",
        "--model",
        s(&run.join("model.onnx")),
        "--run",
        s(&run),
        "--out",
        s(&ev),
        "--samples",
        "0",
    ]);
    assert!(ok, "{out}");
    // the test split: 3 models x 3 views; no part labels, so no label figures
    assert!(out.contains(": 9 samples, Chamfer-L2"), "{out}");
    assert!(!out.contains("part labels"), "{out}");
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ev.join("eval.json")).unwrap()).unwrap();
    let text = rep.to_string();
    assert!(text.contains("chamfer_l2"), "{text}");
    assert!(!text.contains("\"label_accuracy\":{"), "{text}");
    // a preset with the data section replaced by `--data` (here the voxel trainer)
    let data_path = dir.join("data.json");
    let sn = serde_json::json!({
        "kind": "shapenet-r2n2",
        "shapenet": {
            "rendering_dir": dir.join("data/ShapeNetRendering"),
            "voxels_dir": dir.join("data/ShapeNetVox32"),
            "split_dir": dir.join("data/splits"),
        },
    });
    std::fs::write(&data_path, sn.to_string()).unwrap();
    let vrun = dir.join("voxels");
    let (ok, out) = cli(&[
        "voxels",
        "train",
        "--preset",
        "test",
        "--data",
        s(&data_path),
        "--steps",
        "2",
        "--out",
        s(&vrun),
        "--quiet",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("trained 2 steps"), "{out}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vrun.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["data"]["kind"], "shapenet-r2n2");
    // the point trainer with the same file lacks the points folder: named
    let (ok, out) = cli(&[
        "train",
        "--preset",
        "test",
        "--data",
        s(&data_path),
        "--out",
        s(&dir.join("p")),
    ]);
    assert!(!ok && out.contains("data.shapenet.points_dir"), "{out}");
    // a labelled (semantic) configuration on ShapeNet is refused, naming the missing labels
    let mut sem = cfg.clone();
    sem.model.classes = 4;
    let sem_path = dir.join("semantic.config.json");
    sem.save(&sem_path).unwrap();
    let (ok, out) = cli(&[
        "train",
        "--config",
        s(&sem_path),
        "--out",
        s(&dir.join("sem")),
        "--quiet",
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("`shapenet-r2n2` has no part labels") && out.contains("model.classes"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn shapenet_ground_truth_is_read_once_per_model_on_all_cores() {
    let dir = tmp("ds-gt-cache");
    write_r2n2(&dir).unwrap();
    let opts = R2n2Options {
        rendering_dir: dir.join("ShapeNetRendering"),
        points_dir: Some(dir.join("points")),
        voxels_dir: Some(dir.join("ShapeNetVox32")),
        split_dir: Some(dir.join("splits")),
        image_size: 16,
        n_points: 64,
        voxel_res: 8,
        ..R2n2Options::default()
    };
    // the trainers' parallel loader over the train split: 6 models x 3 views, each model
    // with a point cloud and a binvox grid
    let ds = ShapeNetR2n2::open(opts.clone(), Split::Train).unwrap();
    let all = load_samples(&ds, Split::Train, 0).unwrap();
    assert_eq!(all.len(), 18);
    assert_eq!(ds.gt_reads(), 6 * 2);
    // the same samples as reading every view's files
    let plain = ShapeNetR2n2::open(opts, Split::Train)
        .unwrap()
        .with_gt_cache(0);
    assert_eq!(load_samples(&plain, Split::Train, 0).unwrap(), all);
    assert_eq!(plain.gt_reads(), 18 * 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn point_model_trains_on_pix3d_and_empty_labels_are_refused() {
    let dir = tmp("ds-pix3d-points");
    let root = dir.join("pix3d");
    write_pix3d(&root, 20).unwrap();
    let cfg = point_config(PIX3D, &root, 3);
    let (train, parts) = load_split(&cfg, Split::Train, 0).unwrap();
    let (val, _) = load_split(&cfg, Split::Val, cfg.data.val_samples).unwrap();
    assert!(parts.is_empty());
    assert!(train.len() >= 20, "{}", train.len());
    no_labels(&train);
    assert_eq!(train[0].width, 32);
    let out = dir.join("run");
    let dev = Default::default();
    let sum = train_points::<Ad>(&cfg, &train, &val, &out, false, &dev, true).unwrap();
    assert_eq!(sum.state.step, 3);
    assert!(sum.last_loss.is_finite() && sum.state.last_val.is_some());
    // a labelled model handed these samples directly is refused by the trainer too: empty
    // labels are "unknown", never part 0
    let mut sem = TrainConfig::preset("test").unwrap();
    sem.model.classes = 4;
    sem.steps = 3;
    let e = train_points::<Ad>(&sem, &train, &val, &dir.join("sem"), false, &dev, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no training sample carries part labels"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The voxel `test` preset on `kind` data at `root` with `views` views per sequence.
fn voxel_config(kind: &str, root: &Path, views: usize) -> VoxelTrainConfig {
    let mut c = VoxelTrainConfig::preset("test").unwrap();
    c.data.kind = kind.into();
    if kind == SHAPENET_R2N2 {
        c.data.shapenet = Some(shapenet(root));
    } else {
        c.data.pix3d = Some(pix3d(root));
    }
    c.data.views = views;
    c.seq_views = views;
    c.steps = 3;
    c.eval_every = 3;
    c.checkpoint_every = 3;
    c.warmup = 1;
    c
}

fn train_voxels_few_steps(cfg: &VoxelTrainConfig, out: PathBuf) {
    let (train, classes) = load_objects(cfg, Split::Train, 0).unwrap();
    let (val, _) = load_objects(cfg, Split::Val, 0).unwrap();
    assert_eq!(classes.len(), 2);
    let r = cfg.model.resolution;
    assert!(train
        .iter()
        .all(|o| o.voxels.len() == r * r * r && o.voxels.iter().any(|&v| v > 0)));
    let sum =
        train_voxels::<Ad>(cfg, &train, &val, &out, false, &Default::default(), true).unwrap();
    assert_eq!(sum.state.step, 3);
    assert!(sum.last_loss.is_finite());
    assert_eq!(sum.state.last_val.len(), 2);
}

#[test]
fn voxel_model_trains_on_shapenet_and_pix3d() {
    let dir = tmp("ds-voxels");
    write_r2n2(&dir.join("r2n2")).unwrap();
    let cfg = voxel_config(SHAPENET_R2N2, &dir.join("r2n2"), 3);
    train_voxels_few_steps(&cfg, dir.join("run-shapenet"));
    // without voxels_dir the dataset cannot provide them: the error names the key
    let mut bad = cfg.clone();
    bad.data.shapenet.as_mut().unwrap().voxels_dir = None;
    let e = bad.validate().unwrap_err().to_string();
    assert!(
        e.contains("`shapenet-r2n2` has no voxels") && e.contains("data.shapenet.voxels_dir"),
        "{e}"
    );
    write_pix3d(&dir.join("pix3d"), 20).unwrap();
    let cfg = voxel_config(PIX3D, &dir.join("pix3d"), 2);
    train_voxels_few_steps(&cfg, dir.join("run-pix3d"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_ground_truth_is_named() {
    let dir = tmp("ds-refusals");
    write_r2n2(&dir.join("r2n2")).unwrap();
    // implicit surfaces need SDF samples: ShapeNet renderings have none
    let mut c = ImplicitConfig::preset("test", Kind::Occupancy).unwrap();
    c.data.kind = SHAPENET_R2N2.into();
    c.data.shapenet = Some(shapenet(&dir.join("r2n2")));
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("`shapenet-r2n2` has no SDF samples"), "{e}");
    // named first: no folder could add them (the missing points folder comes after)
    c.data.shapenet.as_mut().unwrap().points_dir = None;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("no SDF samples"), "{e}");
    let e = load_set(&c, Split::Train, 0).unwrap_err().to_string();
    assert!(e.contains("no SDF samples"), "{e}");
    // Pix3D has them (computed from its models)
    write_pix3d(&dir.join("pix3d"), 6).unwrap();
    c.data.kind = PIX3D.into();
    c.data.pix3d = Some(pix3d(&dir.join("pix3d")));
    c.validate().unwrap();
    let set = load_set(&c, Split::Train, 0).unwrap();
    assert!(!set.objects.is_empty());
    assert!(set
        .objects
        .iter()
        .all(|o| o.sdf.len() == c.data.sdf_samples));
    // photos of one Pix3D model are one object
    assert!(set.objects.len() < set.views.len(), "{}", set.objects.len());
    // point trainers without a points folder
    let mut p = point_config(SHAPENET_R2N2, &dir.join("r2n2"), 2);
    p.data.shapenet.as_mut().unwrap().points_dir = None;
    let e = p.validate().unwrap_err().to_string();
    assert!(e.contains("data.shapenet.points_dir"), "{e}");
    let e = load_split(&p, Split::Train, 0).unwrap_err().to_string();
    assert!(e.contains("no surface points"), "{e}");
    // lmnet / mesh data: the same check
    let mut l = shapecast_train::lmnet::LmnetConfig::preset("test").unwrap();
    l.data.kind = SHAPENET_R2N2.into();
    l.data.shapenet = p.data.shapenet.clone();
    let e = l.validate().unwrap_err().to_string();
    assert!(e.contains("data.shapenet.points_dir"), "{e}");
    l.data.shapenet = Some(shapenet(&dir.join("r2n2")));
    l.validate().unwrap();
    let got = l.data.load(l.encoder.image, Split::Val, 0).unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|s| s.points.len() == l.data.gt_points));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn implicit_trains_on_pix3d_and_mesh_on_shapenet() {
    let dir = tmp("ds-implicit-mesh");
    write_pix3d(&dir.join("pix3d"), 20).unwrap();
    let mut c = ImplicitConfig::preset("test", Kind::Occupancy).unwrap();
    c.data.kind = PIX3D.into();
    c.data.pix3d = Some(pix3d(&dir.join("pix3d")));
    c.steps = 3;
    c.eval_every = 3;
    c.warmup = 1;
    let train = load_set(&c, Split::Train, 0).unwrap();
    let val = load_set(&c, Split::Val, c.data.val_samples).unwrap();
    let dev = Default::default();
    let s = shapecast_train::implicit::train::train_implicit::<Ad>(
        &c,
        &train,
        &val,
        &dir.join("implicit"),
        false,
        &dev,
        true,
    )
    .unwrap();
    assert_eq!(s.stages.last().unwrap().steps, 3);
    assert!(s.stages.iter().all(|st| st.last_loss.is_finite()));
    assert!(s.last_val.is_some());

    write_r2n2(&dir.join("r2n2")).unwrap();
    let mut m = shapecast_train::mesh::MeshConfig::preset("test").unwrap();
    m.data.kind = SHAPENET_R2N2.into();
    m.data.shapenet = Some(shapenet(&dir.join("r2n2")));
    m.steps = 3;
    m.eval_every = 3;
    m.warmup = 1;
    let side = m.encoder.image;
    let train = m.data.load(side, Split::Train, 0).unwrap();
    let val = m.data.load(side, Split::Val, 0).unwrap();
    assert_eq!((train.len(), val.len()), (18, 3));
    let (_, s) =
        shapecast_train::mesh::train_mesh::<Ad>(&m, &train, &val, &dir.join("mesh"), false, &dev)
            .unwrap();
    assert_eq!(s.steps, 3);
    assert!(s.last_loss.is_finite());
    std::fs::remove_dir_all(&dir).ok();
}

/// The fixture `tests/fixtures/shapenet/r2n2_offcentre` (made by its `gen.py`) in the R2N2
/// layout under a fresh folder, its points from `points_file`, loaded with `units`: for every
/// view and point, the largest pixel distance between `Camera::project` of the sample's
/// object-frame point and where the renderer drew it (DISN's `getBlenderProj`, computed
/// independently of shapecast). Also checks that the points are the fixture's object-frame
/// points.
fn offcentre_worst_pixel(name: &str, points_file: &str, units: PointsUnits) -> f32 {
    let fx =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shapenet/r2n2_offcentre");
    let dir = tmp(name);
    let (synset, model) = ("03001627", "offcentre");
    let rdir = dir
        .join("ShapeNetRendering")
        .join(synset)
        .join(model)
        .join("rendering");
    let pdir = dir.join("points").join(synset);
    let vdir = dir.join("ShapeNetVox32").join(synset).join(model);
    for d in [&rdir, &pdir, &vdir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let meta = std::fs::read_to_string(fx.join("rendering_metadata.txt")).unwrap();
    std::fs::write(rdir.join("rendering_metadata.txt"), &meta).unwrap();
    let n_views = meta.lines().count();
    for v in 0..n_views {
        image::RgbaImage::new(137, 137)
            .save(rdir.join(format!("{v:02}.png")))
            .unwrap();
    }
    std::fs::copy(fx.join(points_file), pdir.join(format!("{model}.npy"))).unwrap();
    std::fs::copy(fx.join("model.binvox"), vdir.join("model.binvox")).unwrap();
    // (view, object-frame point, pixel)
    let expected: Vec<(usize, [f32; 3], [f32; 2])> =
        std::fs::read_to_string(fx.join("expected.txt"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let v: Vec<f32> = l.split_whitespace().map(|s| s.parse().unwrap()).collect();
                (v[0] as usize, [v[1], v[2], v[3]], [v[4], v[5]])
            })
            .collect();
    let n_points = expected.iter().filter(|e| e.0 == 0).count();
    assert_eq!((n_views, n_points), (6, 32));
    // hashed split with seed 1 puts the one model in train; every point kept (a permutation)
    let ds = ShapeNetR2n2::open(
        R2n2Options {
            rendering_dir: dir.join("ShapeNetRendering"),
            points_dir: Some(dir.join("points")),
            voxels_dir: Some(dir.join("ShapeNetVox32")),
            image_size: 137,
            n_points,
            voxel_res: 0,
            points_units: units,
            ..R2n2Options::default()
        },
        Split::of_key(1, &format!("{synset}/{model}")),
    )
    .unwrap();
    assert_eq!(ds.len(), n_views);
    let mut worst = 0.0f32;
    for v in 0..n_views {
        let s = ds.get(v).unwrap();
        assert_eq!(s.points.len(), n_points);
        let rows: Vec<_> = expected.iter().filter(|e| e.0 == v).collect();
        for p in &s.points {
            // the row of this point: the loader's object frame is the fixture's
            let (d, row) = rows
                .iter()
                .map(|r| ((0..3).map(|k| (r.1[k] - p[k]).abs()).fold(0.0, f32::max), r))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .unwrap();
            assert!(
                d < 1e-5,
                "view {v}: point {p:?} is not in the fixture's frame"
            );
            let uv = s.camera.project(*p, 137).map_or(f32::INFINITY, |uv| {
                (uv[0] - row.2[0]).abs().max((uv[1] - row.2[1]).abs())
            });
            worst = worst.max(uv);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    worst
}

#[test]
fn shapenet_cameras_project_object_frame_points_onto_the_renderer_pixels() {
    // model-unit points (off-centre, longest side 0.48): every point within 0.5 px
    let worst = offcentre_worst_pixel("ds-r2n2-offcentre", "points.npy", PointsUnits::Model);
    println!("model units: worst pixel error {worst:.5} px (6 views x 32 points)");
    assert!(worst < 0.5, "{worst} px");
    // the same points shipped normalised by another project: the object-frame points are
    // the same, and with `normalized` the binvox header restores the cameras' model units
    let worst = offcentre_worst_pixel(
        "ds-r2n2-normalized",
        "points_normalized.npy",
        PointsUnits::Normalized,
    );
    println!("normalized + binvox header: worst pixel error {worst:.5} px");
    assert!(worst < 0.5, "{worst} px");
    // read as model units they would not be: the option is needed
    let worst = offcentre_worst_pixel(
        "ds-r2n2-as-model",
        "points_normalized.npy",
        PointsUnits::Model,
    );
    println!("normalized read as model units: worst pixel error {worst:.1} px");
    assert!(worst > 5.0, "{worst} px");
}
