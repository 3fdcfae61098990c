//! Integration tests of [`shapecast_train::mesh`]: the `test` preset trains (Chamfer falls
//! below the undeformed template's), the export loads in tract, reproduces burn within 1e-4
//! and carries the template and faces.

use shapecast_onnx::read_metadata;
use shapecast_train::backend::NdArrayCpu;
use shapecast_train::lmnet::probes;
use shapecast_train::mesh::{eval_mesh, export_mesh, load_run, train_mesh, MeshConfig};

use super::{synth_train_val, tmp, Ad};

#[test]
fn mesh_test_preset_trains_exports_and_matches_tract() {
    let cfg = MeshConfig::preset("test").unwrap();
    let side = cfg.encoder.image;
    let (train, val) = synth_train_val(&cfg.data, side);
    let out = tmp("mesh-train");
    let dev = Default::default();
    // half the steps, then resumed from the checkpoint to the end
    let mut half = cfg.clone();
    half.steps = cfg.steps / 2;
    let (_, s1) = train_mesh::<Ad>(&half, &train, &val, &out, false, &dev).unwrap();
    assert_eq!(s1.steps, cfg.steps / 2);
    let mut wrong = cfg.clone();
    wrong.subdivisions = 1;
    assert!(train_mesh::<Ad>(&wrong, &train, &val, &out, true, &dev).is_err());
    let (_, s) = train_mesh::<Ad>(&cfg, &train, &val, &out, true, &dev).unwrap();
    assert_eq!((s.steps, s.resumed_from), (cfg.steps, cfg.steps / 2));
    assert!(
        s.last_loss < 0.7 * s.first_loss && s.last_loss < s1.last_loss,
        "loss did not fall: {} -> {} -> {}",
        s.first_loss,
        s1.last_loss,
        s.last_loss
    );
    super::lmnet::assert_continues(&out.join("metrics.csv"), cfg.steps / 2, cfg.steps);
    assert!(out.join("metrics.csv").exists() && out.join("loss.png").exists());

    let (cfg2, net) = load_run::<NdArrayCpu>(&out, &Default::default()).unwrap();
    assert_eq!(cfg2, cfg);
    let onnx = out.join("model.onnx");
    let p = probes(&val, 3, cfg.mean, cfg.std);
    let diff = export_mesh(&net, &cfg, &onnx, &p, 1e-4, None, &Default::default()).unwrap();
    assert!(diff <= 1e-4, "{diff}");
    let meta = read_metadata(&onnx).unwrap();
    let get = |k: &str| {
        meta.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let t = cfg.template();
    assert_eq!(get("shapecast.head"), "mesh");
    assert_eq!(get("shapecast.contract"), "1");
    let template: Vec<f32> = get("shapecast.mesh.template")
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(template.len(), t.vertices.len() * 3);
    assert_eq!(template[..3], t.vertices[0]);
    let faces: Vec<u32> = get("shapecast.mesh.faces")
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(faces.len(), t.faces.len() * 3);
    assert!(faces.iter().all(|&i| (i as usize) < t.vertices.len()));

    // the trained deformation fits the validation shapes better than the bare sphere
    let rep = eval_mesh(&onnx, &cfg, &val).unwrap();
    assert!(rep.surface.chamfer_l2 < rep.template.chamfer_l2, "{rep:?}");
    assert!(rep.mean_offset > 0.0);
    std::fs::remove_dir_all(&out).ok();
}
