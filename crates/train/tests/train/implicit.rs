//! Integration tests of [`shapecast_train::implicit`]: the `test` preset of both kinds trains
//! (loss falls), exports two ONNX parts with the contract's metadata, tract reproduces burn
//! within 1e-4 for both parts (decoder at 32768 queries), and the tract evaluation runs.

use shapecast_onnx::read_metadata;
use shapecast_train::backend::NdArrayCpu;
use shapecast_train::data::Split;
use shapecast_train::implicit::eval::eval_onnx;
use shapecast_train::implicit::export::{decoder_path, export_implicit, ImplicitExportInfo};
use shapecast_train::implicit::train::{files, load_run, train_implicit};
use shapecast_train::implicit::{load_set, ImplicitConfig, Kind};

use super::Ad;

fn meta_of(path: &std::path::Path) -> impl Fn(&str) -> String {
    let meta = read_metadata(path).unwrap();
    move |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

fn pipeline(kind: Kind) {
    let cfg = ImplicitConfig::preset("test", kind).unwrap();
    let train = load_set(&cfg, Split::Train, 0).unwrap();
    let val = load_set(&cfg, Split::Val, cfg.data.val_samples).unwrap();
    assert!(train.objects.len() >= 20, "{}", train.objects.len());
    assert_eq!(train.views.len(), train.objects.len() * cfg.data.views);
    let out = super::tmp(&format!("implicit-{}", kind.name()));
    let dev = Default::default();
    // a first call stops half-way through the last stage; the second resumes from its
    // checkpoint (sdf: the auto-decoder stage is finished and only reloaded)
    let mut half = cfg.clone();
    let resumed_at = if kind == Kind::Sdf {
        half.encoder_steps = cfg.encoder_steps / 2;
        cfg.steps + half.encoder_steps
    } else {
        half.steps = cfg.steps / 2;
        half.steps
    };
    let s1 = train_implicit::<Ad>(&half, &train, &val, &out, false, &dev, true).unwrap();
    let mut wrong = cfg.clone();
    wrong.latent += 1;
    assert!(train_implicit::<Ad>(&wrong, &train, &val, &out, true, &dev, true).is_err());
    let s = train_implicit::<Ad>(&cfg, &train, &val, &out, true, &dev, true).unwrap();
    let (a, b) = (s1.stages.last().unwrap(), s.stages.last().unwrap());
    assert_eq!(b.first_loss, a.first_loss);
    assert!(b.last_loss < a.last_loss, "{a:?} -> {b:?}");

    // every stage's loss falls
    let want_stages = if kind == Kind::Sdf { 2 } else { 1 };
    assert_eq!(s.stages.len(), want_stages);
    for st in &s.stages {
        assert!(
            st.last_loss < 0.85 * st.first_loss,
            "{} loss did not fall: {} -> {}",
            st.stage,
            st.first_loss,
            st.last_loss
        );
    }
    let v = s.last_val.clone().unwrap();
    if kind == Kind::Occupancy {
        // the balanced cross-entropy: surfaces, not "outside" everywhere
        assert!(
            v.empty < v.samples,
            "no surface on any validation picture: {v:?}"
        );
        assert!(v.fscore_5pct > 0.0, "{v:?}");
    }
    assert!(out.join(files::CURVE).exists());
    let total = cfg.steps
        + if kind == Kind::Sdf {
            cfg.encoder_steps
        } else {
            0
        };
    super::lmnet::assert_continues(&out.join(files::METRICS), resumed_at, total);

    // weights reload on another backend and the export matches burn in tract
    let (cfg2, enc, dec) = load_run::<NdArrayCpu>(&out, &Default::default()).unwrap();
    assert_eq!(cfg2, cfg);
    let probes: Vec<Vec<f32>> = (0..2)
        .map(|v| val.image_chw(v, cfg.mean, cfg.std))
        .collect();
    let onnx = out.join("implicit.onnx");
    let info = ImplicitExportInfo {
        metrics: Some("test=1".into()),
        ..Default::default()
    };
    let check = export_implicit(
        &enc,
        &dec,
        &cfg,
        &info,
        &onnx,
        &probes,
        1e-4,
        &Default::default(),
    )
    .unwrap();
    assert!(
        check.encoder_diff <= 1e-4 && check.decoder_diff <= 1e-4,
        "{check:?}"
    );
    assert!(check.encoder_bytes > 0 && check.decoder_bytes > 0);

    let dpath = decoder_path(&onnx);
    let e = meta_of(&onnx);
    let d = meta_of(&dpath);
    for get in [&e, &d] {
        assert_eq!(get("shapecast.contract"), "1");
        assert_eq!(get("shapecast.head"), "implicit");
        assert_eq!(get("shapecast.implicit.kind"), kind.name());
        assert_eq!(get("shapecast.implicit.level"), "0");
        assert_eq!(get("shapecast.implicit.latent"), cfg.latent.to_string());
        assert_eq!(get("shapecast.input.width"), cfg.encoder.image.to_string());
        assert_eq!(get("shapecast.bounds"), "-0.5,-0.5,-0.5,0.5,0.5,0.5");
    }
    assert_eq!(e("shapecast.part"), "encoder");
    assert_eq!(d("shapecast.part"), "decoder");
    assert_eq!(e("shapecast.parts.decoder"), "implicit.decoder.onnx");
    assert_eq!(d("shapecast.parts.decoder"), "");

    // the decoder's first layer is two products added, never a concatenation; Q is free
    let proto = shapecast_onnx::read(&dpath).unwrap();
    let graph = proto.graph.unwrap();
    assert!(graph.node.iter().all(|n| n.op_type != "Concat"));
    assert_eq!(
        graph.node.iter().filter(|n| n.op_type == "MatMul").count(),
        cfg.decoder.layers + 3
    );
    let names: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["latent", "xyz"]);

    // tract evaluation of the export on the test split (dense lattice + marching cubes)
    let test = load_set(&cfg, Split::Test, 2).unwrap();
    let rep = eval_onnx(&onnx, &cfg, &test, "test", 16, 2).unwrap();
    assert_eq!(rep.mean.samples, 2);
    assert!(rep.mean.chamfer_l2.is_finite());
    assert_eq!(rep.gradient.is_some(), kind == Kind::Sdf);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn implicit_sdf_test_preset_trains_and_exports() {
    pipeline(Kind::Sdf);
}

#[test]
fn implicit_occupancy_test_preset_trains_and_exports() {
    pipeline(Kind::Occupancy);
}
