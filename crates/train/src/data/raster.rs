//! A small software rasteriser: z-buffered triangles, flat Lambert shading with a directional
//! light plus ambient, supersampled anti-aliasing, and solid / gradient / noise backgrounds.

use rand::Rng;

use super::mesh::Mesh;
use super::{dot, normalize, sub, Camera};

/// What is behind the object.
#[derive(Debug, Clone, PartialEq)]
pub enum Background {
    /// One colour.
    Solid([u8; 3]),
    /// Linear blend from `from` to `to` along direction `angle` (radians).
    Gradient {
        /// Start colour.
        from: [u8; 3],
        /// End colour.
        to: [u8; 3],
        /// Direction of the blend in the picture, radians.
        angle: f32,
    },
    /// Smooth value noise around a base colour.
    Noise {
        /// Mean colour.
        base: [u8; 3],
        /// Amplitude (0..255).
        amplitude: f32,
        /// Lattice cells across the picture.
        cells: u32,
        /// Noise seed.
        seed: u64,
    },
}

impl Background {
    /// A random background: solid 40 %, gradient 30 %, noise 30 %.
    pub fn random<R: Rng>(rng: &mut R) -> Background {
        let col = |rng: &mut R| [rng.gen::<u8>(), rng.gen::<u8>(), rng.gen::<u8>()];
        match rng.gen_range(0..10) {
            0..=3 => Background::Solid(col(rng)),
            4..=6 => Background::Gradient {
                from: col(rng),
                to: col(rng),
                angle: rng.gen_range(0.0..std::f32::consts::TAU),
            },
            _ => Background::Noise {
                base: col(rng),
                amplitude: rng.gen_range(20.0..90.0),
                cells: rng.gen_range(2..10),
                seed: rng.gen(),
            },
        }
    }

    fn fill(&self, buf: &mut [f32], size: usize) {
        match self {
            Background::Solid(c) => {
                for px in buf.chunks_exact_mut(3) {
                    for k in 0..3 {
                        px[k] = f32::from(c[k]);
                    }
                }
            }
            Background::Gradient { from, to, angle } => {
                let (s, c) = angle.sin_cos();
                for (i, px) in buf.chunks_exact_mut(3).enumerate() {
                    let (x, y) = (
                        (i % size) as f32 / size as f32 - 0.5,
                        (i / size) as f32 / size as f32 - 0.5,
                    );
                    let t =
                        ((x * c + y * s) * std::f32::consts::FRAC_1_SQRT_2 + 0.5).clamp(0.0, 1.0);
                    for k in 0..3 {
                        px[k] = f32::from(from[k]) * (1.0 - t) + f32::from(to[k]) * t;
                    }
                }
            }
            Background::Noise {
                base,
                amplitude,
                cells,
                seed,
            } => {
                let n = (*cells).max(1) as usize + 1;
                let mut lattice = vec![0.0f32; n * n * 3];
                let mut h = *seed;
                for v in &mut lattice {
                    h = super::splitmix(h);
                    *v = (h >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                }
                for (i, px) in buf.chunks_exact_mut(3).enumerate() {
                    let fx = (i % size) as f32 / size as f32 * (n - 1) as f32;
                    let fy = (i / size) as f32 / size as f32 * (n - 1) as f32;
                    let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
                    let (x1, y1) = ((x0 + 1).min(n - 1), (y0 + 1).min(n - 1));
                    let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
                    let (tx, ty) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
                    for k in 0..3 {
                        let l = |x: usize, y: usize| lattice[(y * n + x) * 3 + k];
                        let v = (l(x0, y0) * (1.0 - tx) + l(x1, y0) * tx) * (1.0 - ty)
                            + (l(x0, y1) * (1.0 - tx) + l(x1, y1) * tx) * ty;
                        px[k] = (f32::from(base[k]) + amplitude * v).clamp(0.0, 255.0);
                    }
                }
            }
        }
    }
}

/// Lighting and sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Output picture side in pixels (square).
    pub size: u32,
    /// Supersampling factor per axis (1 = none).
    pub supersample: u32,
    /// Direction *towards* the light, object frame.
    pub light_dir: [f32; 3],
    /// Ambient share of the lighting (0..1).
    pub ambient: f32,
    /// Background.
    pub background: Background,
}

/// A rendered picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// RGB8, row-major `size x size x 3`.
    pub rgb: Vec<u8>,
    /// Object coverage per pixel, 0..255.
    pub mask: Vec<u8>,
}

/// Renders `mesh` (faces coloured by `part_colors[face_part]`, linear 0..1 RGB) seen by `cam`.
pub fn render(
    mesh: &Mesh,
    part_colors: &[[f32; 3]],
    cam: &Camera,
    opts: &RenderOptions,
) -> Rendered {
    let ss = opts.supersample.max(1) as usize;
    let big = opts.size as usize * ss;
    let mut color = vec![0.0f32; big * big * 3];
    opts.background.fill(&mut color, big);
    let mut depth = vec![f32::INFINITY; big * big];
    let mut cover = vec![0u8; big * big];
    let proj: Vec<Option<[f32; 3]>> = mesh
        .vertices
        .iter()
        .map(|&v| cam.project(v, big as u32))
        .collect();
    let eye = cam.position();
    let light = normalize(opts.light_dir);
    for (fi, f) in mesh.faces.iter().enumerate() {
        let (Some(a), Some(b), Some(c)) = (
            proj[f[0] as usize],
            proj[f[1] as usize],
            proj[f[2] as usize],
        ) else {
            continue;
        };
        let [wa, wb, wc] = mesh.triangle(fi);
        let mut n = normalize(super::cross(sub(wb, wa), sub(wc, wa)));
        if dot(n, sub(eye, wa)) < 0.0 {
            n = [-n[0], -n[1], -n[2]];
        }
        let lambert = dot(n, light).max(0.0);
        let shade = opts.ambient + (1.0 - opts.ambient) * lambert;
        let part = mesh.face_parts.get(fi).copied().unwrap_or(0) as usize;
        let albedo = part_colors.get(part).copied().unwrap_or([0.7, 0.7, 0.7]);
        let rgb = [
            (albedo[0] * shade * 255.0).clamp(0.0, 255.0),
            (albedo[1] * shade * 255.0).clamp(0.0, 255.0),
            (albedo[2] * shade * 255.0).clamp(0.0, 255.0),
        ];
        let area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
        if area.abs() < 1e-12 {
            continue;
        }
        let x0 = a[0].min(b[0]).min(c[0]).floor().max(0.0) as usize;
        let x1 = (a[0].max(b[0]).max(c[0]).ceil().max(0.0) as usize).min(big);
        let y0 = a[1].min(b[1]).min(c[1]).floor().max(0.0) as usize;
        let y1 = (a[1].max(b[1]).max(c[1]).ceil().max(0.0) as usize).min(big);
        let (iza, izb, izc) = (1.0 / a[2], 1.0 / b[2], 1.0 / c[2]);
        for y in y0..y1 {
            let py = y as f32 + 0.5;
            for x in x0..x1 {
                let px = x as f32 + 0.5;
                let w0 = ((b[0] - px) * (c[1] - py) - (b[1] - py) * (c[0] - px)) / area;
                let w1 = ((c[0] - px) * (a[1] - py) - (c[1] - py) * (a[0] - px)) / area;
                let w2 = 1.0 - w0 - w1;
                if w0 < 0.0 || w1 < 0.0 || w2 < 0.0 {
                    continue;
                }
                let z = 1.0 / (w0 * iza + w1 * izb + w2 * izc);
                let i = y * big + x;
                if z < depth[i] {
                    depth[i] = z;
                    cover[i] = 1;
                    color[3 * i..3 * i + 3].copy_from_slice(&rgb);
                }
            }
        }
    }
    // Box-filter down to the output size.
    let size = opts.size as usize;
    let mut rgb = vec![0u8; size * size * 3];
    let mut mask = vec![0u8; size * size];
    let norm = 1.0 / (ss * ss) as f32;
    for y in 0..size {
        for x in 0..size {
            let mut acc = [0.0f32; 3];
            let mut cov = 0u32;
            for sy in 0..ss {
                for sx in 0..ss {
                    let i = (y * ss + sy) * big + x * ss + sx;
                    for k in 0..3 {
                        acc[k] += color[3 * i + k];
                    }
                    cov += u32::from(cover[i]);
                }
            }
            let o = y * size + x;
            for k in 0..3 {
                rgb[3 * o + k] = (acc[k] * norm).round().clamp(0.0, 255.0) as u8;
            }
            mask[o] = (cov as f32 * norm * 255.0).round() as u8;
        }
    }
    Rendered { rgb, mask }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shapes::Prim;

    fn opts(bg: Background) -> RenderOptions {
        RenderOptions {
            size: 32,
            supersample: 2,
            light_dir: [0.0, 1.0, 1.0],
            ambient: 0.3,
            background: bg,
        }
    }

    #[test]
    fn box_covers_the_centre_and_not_the_corners() {
        let m = Prim::Box { half: [0.25; 3] }.tessellate();
        let cam = Camera::default();
        let r = render(
            &m,
            &[[1.0, 0.0, 0.0]],
            &cam,
            &opts(Background::Solid([0, 0, 255])),
        );
        let c = (16 * 32 + 16) * 3;
        assert_eq!(r.mask[16 * 32 + 16], 255);
        assert!(
            r.rgb[c] > 70 && r.rgb[c + 1] == 0 && r.rgb[c + 2] == 0,
            "{:?}",
            &r.rgb[c..c + 3]
        );
        assert_eq!(r.mask[0], 0);
        assert_eq!(&r.rgb[0..3], &[0, 0, 255]);
        // The projected silhouette of a cube is a hexagon-like blob of sensible size.
        let covered = r.mask.iter().filter(|&&m| m > 127).count();
        assert!(covered > 80 && covered < 600, "{covered}");
    }

    #[test]
    fn nearer_faces_win() {
        // Two boxes: a red one in front (towards the camera at +z) hides a green one.
        let mut m = Mesh::default();
        let mut near = Prim::Box { half: [0.2; 3] }.tessellate();
        near.vertices.iter_mut().for_each(|v| v[2] += 0.3);
        let mut far = Prim::Box { half: [0.2; 3] }.tessellate();
        far.vertices.iter_mut().for_each(|v| v[2] -= 0.3);
        m.append(&far, 1);
        m.append(&near, 0);
        let cam = Camera {
            azimuth_deg: 0.0,
            elevation_deg: 0.0,
            ..Camera::default()
        };
        let r = render(
            &m,
            &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            &cam,
            &opts(Background::Solid([0; 3])),
        );
        let c = (16 * 32 + 16) * 3;
        assert!(r.rgb[c] > 0 && r.rgb[c + 1] == 0);
    }

    #[test]
    fn backgrounds_fill_everything() {
        let m = Mesh::default();
        for bg in [
            Background::Gradient {
                from: [0; 3],
                to: [255; 3],
                angle: 0.0,
            },
            Background::Noise {
                base: [128; 3],
                amplitude: 60.0,
                cells: 4,
                seed: 3,
            },
        ] {
            let r = render(&m, &[], &Camera::default(), &opts(bg));
            let lo = r.rgb.iter().min().copied().unwrap();
            let hi = r.rgb.iter().max().copied().unwrap();
            assert!(hi > lo + 20, "{lo} {hi}");
            assert!(r.mask.iter().all(|&m| m == 0));
        }
    }
}
