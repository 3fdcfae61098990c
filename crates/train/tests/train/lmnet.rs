//! Integration tests of [`shapecast_train::lmnet`]: the `test` preset trains both stages
//! (losses fall), the export loads in tract, reproduces burn within 1e-4 and carries the
//! contract's metadata, and the K hypotheses differ.

use shapecast_onnx::read_metadata;
use shapecast_train::backend::NdArrayCpu;
use shapecast_train::data::Split;
use shapecast_train::lmnet::{
    eval_lmnet, export_lmnet, files, load_run, probes, train_ae, train_image, LmnetConfig,
};

use super::{tmp, Ad};

#[test]
fn lmnet_test_preset_trains_exports_and_matches_tract() {
    let cfg = LmnetConfig::preset("test").unwrap();
    let side = cfg.encoder.image;
    let train = cfg.data.load(side, Split::Train, 0).unwrap();
    let val = cfg
        .data
        .load(side, Split::Val, cfg.data.val_samples)
        .unwrap();
    assert!(train.len() >= 40, "{}", train.len());
    let out = tmp("lmnet-train");
    let dev = Default::default();

    let (ae, s_ae) = train_ae::<Ad>(&cfg, &train, &val, &out, &dev).unwrap();
    assert!(
        s_ae.last_loss < 0.7 * s_ae.first_loss,
        "autoencoder loss did not fall: {} -> {}",
        s_ae.first_loss,
        s_ae.last_loss
    );
    let std: Vec<f32> =
        serde_json::from_str(&std::fs::read_to_string(out.join(files::LATENT_STD)).unwrap())
            .unwrap();
    assert_eq!(std.len(), cfg.latent);
    assert!(std.iter().any(|&s| s > 0.0));

    let (_, s_im) = train_image::<Ad>(&cfg, &ae, &std, &train, &val, &out, &dev).unwrap();
    assert!(
        s_im.last_loss < 0.8 * s_im.first_loss,
        "latent loss did not fall: {} -> {}",
        s_im.first_loss,
        s_im.last_loss
    );
    assert!(out.join(files::AE_CSV).exists() && out.join(files::IMAGE_CSV).exists());
    assert!(out.join("loss_ae.png").exists() && out.join("loss_image.png").exists());

    // reload on another backend, export, compare with tract
    let (cfg2, net) = load_run::<NdArrayCpu>(&out, &Default::default()).unwrap();
    assert_eq!(cfg2, cfg);
    let onnx = out.join("model.onnx");
    let p = probes(&val, 3, cfg.mean, cfg.std);
    let diff = export_lmnet(
        &net,
        &cfg,
        &onnx,
        &p,
        1e-4,
        Some("x=1"),
        &Default::default(),
    )
    .unwrap();
    assert!(diff <= 1e-4, "{diff}");
    let meta = read_metadata(&onnx).unwrap();
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("shapecast.contract"), "1");
    assert_eq!(get("shapecast.head"), "points");
    assert_eq!(get("shapecast.points"), cfg.points.to_string());
    assert_eq!(get("shapecast.hypotheses"), cfg.hypotheses.to_string());
    assert_eq!(get("shapecast.input.width"), side.to_string());
    assert_eq!(get("shapecast.metrics"), "x=1");

    // the export is deterministic and its hypotheses differ (sigma > 0)
    let rep = eval_lmnet(&onnx, &cfg, &val[..4]).unwrap();
    assert_eq!(rep.hypotheses, cfg.hypotheses);
    assert!(rep.diversity_chamfer_l2 > 0.0, "{rep:?}");
    assert!(rep.best_of_k.chamfer_l2 <= rep.mean_hypothesis.chamfer_l2 + 1e-7);
    let again = eval_lmnet(&onnx, &cfg, &val[..4]).unwrap();
    assert_eq!(
        again.mean_hypothesis.chamfer_l2,
        rep.mean_hypothesis.chamfer_l2
    );
    std::fs::remove_dir_all(&out).ok();
}
