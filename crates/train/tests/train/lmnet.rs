//! Integration tests of [`shapecast_train::lmnet`]: the `test` preset trains both stages
//! (losses fall), the export loads in tract, reproduces burn within 1e-4 and carries the
//! contract's metadata, and the K hypotheses differ.

use shapecast_onnx::read_metadata;
use shapecast_train::backend::NdArrayCpu;
use shapecast_train::lmnet::{
    eval_lmnet, export_lmnet, files, load_run, probes, train_ae, train_image, LmnetConfig,
};

use super::{synth_train_val, tmp, Ad};

/// The steps of a metrics CSV rise strictly through `resumed_at` (the resumed call's rows
/// follow the first call's, none repeated) and end at `total`.
pub(crate) fn assert_continues(csv: &std::path::Path, resumed_at: usize, total: usize) {
    let text = std::fs::read_to_string(csv).unwrap();
    let steps: Vec<usize> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert!(steps.contains(&resumed_at), "{steps:?}");
    assert!(steps.iter().any(|&s| s > resumed_at), "{steps:?}");
    assert_eq!(steps.last().copied(), Some(total), "{steps:?}");
}

#[test]
fn lmnet_test_preset_trains_exports_and_matches_tract() {
    let cfg = LmnetConfig::preset("test").unwrap();
    let side = cfg.encoder.image;
    let (train, val) = synth_train_val(&cfg.data, side);
    assert!(train.len() >= 40, "{}", train.len());
    let out = tmp("lmnet-train");
    let dev = Default::default();

    // each stage: half of its steps (checkpoints every 20 steps), then resumed to the end
    let mut half = cfg.clone();
    half.ae_steps = cfg.ae_steps / 2;
    half.image_steps = cfg.image_steps / 2;
    half.checkpoint_every = 20;
    let (_, s_half) = train_ae::<Ad>(&half, &train, &val, &out, false, &dev).unwrap();
    assert_eq!((s_half.steps, s_half.resumed_from), (cfg.ae_steps / 2, 0));
    // a resume into other networks is refused
    let mut wrong = cfg.clone();
    wrong.latent = 16;
    assert!(train_ae::<Ad>(&wrong, &train, &val, &out, true, &dev).is_err());
    let (ae, s_ae) = train_ae::<Ad>(&cfg, &train, &val, &out, true, &dev).unwrap();
    assert_eq!(
        (s_ae.steps, s_ae.resumed_from),
        (cfg.ae_steps, cfg.ae_steps / 2)
    );
    assert_eq!(s_ae.first_loss, s_half.first_loss);
    assert!(
        s_ae.last_loss < 0.7 * s_ae.first_loss && s_ae.last_loss < s_half.last_loss,
        "autoencoder loss did not fall: {} -> {} -> {}",
        s_ae.first_loss,
        s_half.last_loss,
        s_ae.last_loss
    );
    assert_continues(&out.join(files::AE_CSV), cfg.ae_steps / 2, cfg.ae_steps);
    let std: Vec<f32> =
        serde_json::from_str(&std::fs::read_to_string(out.join(files::LATENT_STD)).unwrap())
            .unwrap();
    assert_eq!(std.len(), cfg.latent);
    assert!(std.iter().any(|&s| s > 0.0));

    let (_, s_ih) = train_image::<Ad>(&half, &ae, &std, &train, &val, &out, false, &dev).unwrap();
    assert_eq!(s_ih.steps, cfg.image_steps / 2);
    // the image stage writes the configuration it ran into the run's config.json
    let saved = || -> LmnetConfig {
        serde_json::from_str(&std::fs::read_to_string(out.join(files::CONFIG)).unwrap()).unwrap()
    };
    assert_eq!(saved().image_steps, half.image_steps);
    let (_, s_im) = train_image::<Ad>(&cfg, &ae, &std, &train, &val, &out, true, &dev).unwrap();
    assert_eq!(saved().image_steps, cfg.image_steps);
    assert_eq!(
        (s_im.steps, s_im.resumed_from),
        (cfg.image_steps, cfg.image_steps / 2)
    );
    assert!(
        s_im.last_loss < 0.8 * s_im.first_loss && s_im.last_loss < s_ih.last_loss,
        "latent loss did not fall: {} -> {} -> {}",
        s_im.first_loss,
        s_ih.last_loss,
        s_im.last_loss
    );
    assert_continues(
        &out.join(files::IMAGE_CSV),
        cfg.image_steps / 2,
        cfg.image_steps,
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
