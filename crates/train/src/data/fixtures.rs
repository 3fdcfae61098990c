//! Small on-disk datasets in the ShapeNet (3D-R2N2) and Pix3D layouts, for the loader unit
//! tests and the trainer integration tests (seconds to build, a few hundred KB). Not part
//! of the stable API.

use std::path::Path;

use super::{npy, DataError};

fn io(path: &Path, e: std::io::Error) -> DataError {
    DataError::io(path, e)
}

fn save(img: &image::DynamicImage, path: &Path) -> Result<(), DataError> {
    img.save(path).map_err(|e| DataError::Image {
        path: path.into(),
        cause: e,
    })
}

/// Writes a binvox file of a `d^3` grid given in our layout (`x*d*d + y*d + z`) whose
/// header places it in model units: corner `translate`, side `scale` (binvox writes the
/// model's bounding-box minimum and longest side there).
pub fn write_binvox(
    path: &Path,
    grid: &[u8],
    d: usize,
    translate: [f32; 3],
    scale: f32,
) -> Result<(), DataError> {
    let mut raw = vec![0u8; d * d * d];
    for x in 0..d {
        for y in 0..d {
            for z in 0..d {
                raw[x * d * d + z * d + y] = grid[(x * d + y) * d + z];
            }
        }
    }
    let [tx, ty, tz] = translate;
    let mut b =
        format!("#binvox 1\ndim {d} {d} {d}\ntranslate {tx} {ty} {tz}\nscale {scale}\ndata\n")
            .into_bytes();
    let mut i = 0;
    while i < raw.len() {
        let v = raw[i];
        let mut n = 0;
        while i < raw.len() && raw[i] == v && n < 255 {
            i += 1;
            n += 1;
        }
        b.push(v);
        b.push(n as u8);
    }
    std::fs::write(path, b).map_err(|e| io(path, e))
}

/// ShapeNet in the 3D-R2N2 layout under `root`: `ShapeNetRendering/` (chairs `03001627`: 6
/// models, airplanes `02691156`: 4 models; 3 views of 137x137 RGBA each), `points/`
/// (`<synset>/<model>.npy`, 300 points in "model units", off-centre and larger than the
/// object frame), `ShapeNetVox32/` (8^3 binvox of the same points, laid out as binvox lays
/// out a model: header `translate` = the cloud's box minimum, `scale` = its longest side)
/// and `splits/{train,val,test}.txt` (6 / 1 / 3 models).
pub fn write_r2n2(root: &Path) -> Result<(), DataError> {
    let rend = root.join("ShapeNetRendering");
    let pts = root.join("points");
    let vox = root.join("ShapeNetVox32");
    for (synset, models) in [("03001627", 6), ("02691156", 4)] {
        for k in 0..models {
            let id = format!("{synset}model{k:02}");
            let rdir = rend.join(synset).join(&id).join("rendering");
            std::fs::create_dir_all(&rdir).map_err(|e| io(&rdir, e))?;
            let mut meta = String::new();
            let mut list = String::new();
            for v in 0..3 {
                let name = format!("{v:02}.png");
                let mut img = image::RgbaImage::new(137, 137);
                for (x, y, p) in img.enumerate_pixels_mut() {
                    let inside = (x as i32 - 68).abs() < 30 && (y as i32 - 68).abs() < 30;
                    *p = if inside {
                        image::Rgba([200, (k * 30) as u8, v as u8 * 50, 255])
                    } else {
                        image::Rgba([0, 0, 0, 0])
                    };
                }
                save(&img.into(), &rdir.join(&name))?;
                meta.push_str(&format!("{} 25.5 0 0.8 25\n", 30.0 * v as f32));
                list.push_str(&name);
                list.push('\n');
            }
            let mp = rdir.join("rendering_metadata.txt");
            std::fs::write(&mp, meta).map_err(|e| io(&mp, e))?;
            let lp = rdir.join("renderings.txt");
            std::fs::write(&lp, list).map_err(|e| io(&lp, e))?;
            let pdir = pts.join(synset);
            std::fs::create_dir_all(&pdir).map_err(|e| io(&pdir, e))?;
            // a different cloud per model (its extent along x grows with k)
            let cloud: Vec<f32> = (0..300)
                .flat_map(|i| {
                    [
                        i as f32 * 0.01 * (1.0 + k as f32),
                        2.0 * (i % 7) as f32,
                        -((i % 5) as f32),
                    ]
                })
                .collect();
            npy::write_npy_f32(&pdir.join(format!("{id}.npy")), 300, 3, &cloud)?;
            let vdir = vox.join(synset).join(&id);
            std::fs::create_dir_all(&vdir).map_err(|e| io(&vdir, e))?;
            // the cells holding a point, in the grid binvox would make of this model
            let (mut lo, mut hi) = ([f32::INFINITY; 3], [f32::NEG_INFINITY; 3]);
            for p in cloud.chunks_exact(3) {
                for k in 0..3 {
                    lo[k] = lo[k].min(p[k]);
                    hi[k] = hi[k].max(p[k]);
                }
            }
            let side = (0..3).map(|k| hi[k] - lo[k]).fold(0.0f32, f32::max);
            let mut grid = vec![0u8; 8 * 8 * 8];
            for p in cloud.chunks_exact(3) {
                let c = [0, 1, 2].map(|k| (((p[k] - lo[k]) / side * 8.0) as usize).min(7));
                grid[(c[0] * 8 + c[1]) * 8 + c[2]] = 1;
            }
            write_binvox(&vdir.join("model.binvox"), &grid, 8, lo, side)?;
        }
    }
    let sdir = root.join("splits");
    std::fs::create_dir_all(&sdir).map_err(|e| io(&sdir, e))?;
    let ids = |s: &str, r: std::ops::Range<usize>| -> String {
        r.map(|k| format!("{s}/{s}model{k:02}\n")).collect()
    };
    for (name, text) in [
        ("train.txt", ids("03001627", 0..4) + &ids("02691156", 0..2)),
        ("val.txt", ids("03001627", 4..5)),
        ("test.txt", ids("03001627", 5..6) + &ids("02691156", 2..4)),
    ] {
        let p = sdir.join(name);
        std::fs::write(&p, text).map_err(|e| io(&p, e))?;
    }
    Ok(())
}

/// A 2 x 2 x 2 box (y from 0 to 2) as OBJ quads.
pub const BOX_OBJ: &str =
    "v -1 0 -1\nv 1 0 -1\nv 1 2 -1\nv -1 2 -1\nv -1 0 1\nv 1 0 1\nv 1 2 1\nv -1 2 1\n\
f 1 4 3 2\nf 5 6 7 8\nf 1 2 6 5\nf 2 3 7 6\nf 3 4 8 7\nf 4 1 5 8\n";

/// Pix3D under `root`: `n_models` box models alternating `chair` / `table`, two 80x60
/// photos with masks each (the second photo of model 0 marked occluded) and `pix3d.json`.
pub fn write_pix3d(root: &Path, n_models: usize) -> Result<(), DataError> {
    let mut list = Vec::new();
    for m in 0..n_models {
        let cat = if m % 2 == 0 { "chair" } else { "table" };
        let model = format!("model/{cat}/IKEA_{m}/model.obj");
        let mp = root.join(&model);
        if let Some(d) = mp.parent() {
            std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
        }
        std::fs::write(&mp, BOX_OBJ).map_err(|e| io(&mp, e))?;
        for k in 0..2 {
            let img = format!("img/{cat}/{m:04}_{k}.png");
            let mask = format!("mask/{cat}/{m:04}_{k}.png");
            for f in [&img, &mask] {
                if let Some(d) = root.join(f).parent() {
                    std::fs::create_dir_all(d).map_err(|e| io(d, e))?;
                }
            }
            let mut im = image::RgbImage::from_pixel(80, 60, image::Rgb([0, 0, 255]));
            let mut mk = image::GrayImage::new(80, 60);
            for y in 20..40 {
                for x in 30..50 {
                    im.put_pixel(x, y, image::Rgb([255, 0, 0]));
                    mk.put_pixel(x, y, image::Luma([255]));
                }
            }
            save(&im.into(), &root.join(&img))?;
            save(&mk.into(), &root.join(&mask))?;
            list.push(serde_json::json!({
                "img": img, "mask": mask, "model": model, "category": cat,
                "img_size": [80, 60], "bbox": [30, 20, 50, 40],
                "rot_mat": [[1,0,0],[0,1,0],[0,0,1]], "trans_mat": [0, 0, 2],
                "focal_length": 35.0, "cam_position": [0.0, 2.5, 3.0],
                "inplane_rotation": 0.1, "truncated": false, "occluded": k == 1 && m == 0,
            }));
        }
    }
    let jp = root.join("pix3d.json");
    let text = serde_json::to_string(&list).map_err(|e| DataError::parse(&jp, e.to_string()))?;
    std::fs::write(&jp, text).map_err(|e| io(&jp, e))
}
