//! A small point splatter with depth shading, for contact sheets and previews.
//!
//! Orthographic view of points rotated by a yaw (about +y) then a pitch (about +x), with
//! y up on screen. Each point is a filled disc; a z-buffer keeps the nearest; brightness
//! falls with depth so the shape reads without lighting. Output is a packed RGB8 canvas
//! (no image-library dependency here; callers encode PNGs).

/// A packed RGB8 picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes, row-major.
    pub rgb: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with one colour. Sizes are clamped to 1..=8192.
    pub fn new(width: u32, height: u32, fill: [u8; 3]) -> Self {
        let width = width.clamp(1, 8192);
        let height = height.clamp(1, 8192);
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        for _ in 0..width * height {
            rgb.extend_from_slice(&fill);
        }
        Canvas { width, height, rgb }
    }

    /// Sets a pixel (ignored outside).
    pub fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x < 0 || y < 0 || x >= self.width as i64 || y >= self.height as i64 {
            return;
        }
        let i = ((y as usize) * self.width as usize + x as usize) * 3;
        self.rgb[i..i + 3].copy_from_slice(&c);
    }

    /// Reads a pixel (None outside).
    pub fn get(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = ((y as usize) * self.width as usize + x as usize) * 3;
        Some([self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]])
    }

    /// Copies `src` with its top-left corner at (x, y), clipped.
    pub fn blit(&mut self, src: &Canvas, x: i64, y: i64) {
        for sy in 0..src.height {
            for sx in 0..src.width {
                if let Some(c) = src.get(sx, sy) {
                    self.put(x + sx as i64, y + sy as i64, c);
                }
            }
        }
    }
}

/// How to look at the points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Rotation about the vertical axis, degrees.
    pub yaw_deg: f32,
    /// Rotation about the horizontal axis after the yaw, degrees (positive looks down).
    pub pitch_deg: f32,
    /// Disc radius in pixels.
    pub radius: f32,
    pub background: [u8; 3],
    /// Colour of the nearest points (labels override it with the palette).
    pub color: [u8; 3],
    /// Flip y before viewing (camera-frame data: y down).
    pub y_down: bool,
}

impl Default for View {
    fn default() -> Self {
        View {
            yaw_deg: 30.0,
            pitch_deg: 20.0,
            radius: 1.6,
            background: [24, 26, 32],
            color: [120, 200, 255],
            y_down: false,
        }
    }
}

/// Distinct colours for labels.
pub const PALETTE: [[u8; 3]; 8] = [
    [120, 200, 255],
    [255, 160, 80],
    [140, 230, 120],
    [240, 100, 140],
    [200, 160, 255],
    [250, 230, 100],
    [100, 230, 220],
    [230, 230, 230],
];

/// Renders points into a `width` x `height` canvas. The view is fitted to `fit` (a box
/// min/max) when given, else to the points' own bounding box; non-finite points are
/// skipped.
pub fn render_points(
    points: &[[f32; 3]],
    labels: Option<&[u8]>,
    width: u32,
    height: u32,
    view: &View,
    fit: Option<([f32; 3], [f32; 3])>,
) -> Canvas {
    let mut canvas = Canvas::new(width, height, view.background);
    let pts: Vec<(usize, [f32; 3])> = points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.iter().all(|c| c.is_finite()))
        .map(|(i, p)| (i, if view.y_down { [p[0], -p[1], p[2]] } else { *p }))
        .collect();
    if pts.is_empty() {
        return canvas;
    }
    let (lo, hi) = match fit {
        Some((a, b)) if a.iter().chain(b.iter()).all(|c| c.is_finite()) => {
            if view.y_down {
                ([a[0], -b[1], a[2]], [b[0], -a[1], b[2]])
            } else {
                (a, b)
            }
        }
        _ => {
            let mut lo = [f32::MAX; 3];
            let mut hi = [f32::MIN; 3];
            for (_, p) in &pts {
                for k in 0..3 {
                    lo[k] = lo[k].min(p[k]);
                    hi[k] = hi[k].max(p[k]);
                }
            }
            (lo, hi)
        }
    };
    let centre = [
        (lo[0] + hi[0]) / 2.0,
        (lo[1] + hi[1]) / 2.0,
        (lo[2] + hi[2]) / 2.0,
    ];
    let diag = ((hi[0] - lo[0]).powi(2) + (hi[1] - lo[1]).powi(2) + (hi[2] - lo[2]).powi(2))
        .sqrt()
        .max(1e-9);
    let scale = 0.92 * width.min(height) as f32 / diag;
    let (sy, cy) = view.yaw_deg.to_radians().sin_cos();
    let (sp, cp) = view.pitch_deg.to_radians().sin_cos();
    // project: yaw about y, then pitch about x; camera looks along -z
    let proj: Vec<(usize, f32, f32, f32)> = pts
        .iter()
        .map(|(i, p)| {
            let x = p[0] - centre[0];
            let y = p[1] - centre[1];
            let z = p[2] - centre[2];
            let x1 = cy * x + sy * z;
            let z1 = -sy * x + cy * z;
            let y2 = cp * y - sp * z1;
            let z2 = sp * y + cp * z1;
            (*i, x1, y2, z2)
        })
        .collect();
    let (mut zmin, mut zmax) = (f32::MAX, f32::MIN);
    for p in &proj {
        zmin = zmin.min(p.3);
        zmax = zmax.max(p.3);
    }
    let zr = (zmax - zmin).max(1e-9);
    let w = width as usize;
    let mut zbuf = vec![f32::MIN; w * canvas.height as usize];
    let r = view.radius.max(0.5);
    let ri = r.ceil() as i64;
    for (i, x, y, z) in proj {
        // nearer = larger z (towards the viewer)
        let near = (z - zmin) / zr;
        let shade = 0.30 + 0.70 * near;
        let base = labels
            .and_then(|l| l.get(i))
            .map(|l| PALETTE[*l as usize % PALETTE.len()])
            .unwrap_or(view.color);
        let c = [
            (base[0] as f32 * shade) as u8,
            (base[1] as f32 * shade) as u8,
            (base[2] as f32 * shade) as u8,
        ];
        let px = width as f32 / 2.0 + x * scale;
        let py = canvas.height as f32 / 2.0 - y * scale;
        let (cx, cyy) = (px.round() as i64, py.round() as i64);
        for dy in -ri..=ri {
            for dx in -ri..=ri {
                if (dx * dx + dy * dy) as f32 > r * r {
                    continue;
                }
                let (qx, qy) = (cx + dx, cyy + dy);
                if qx < 0 || qy < 0 || qx >= width as i64 || qy >= canvas.height as i64 {
                    continue;
                }
                let k = qy as usize * w + qx as usize;
                if z > zbuf[k] {
                    zbuf[k] = z;
                    canvas.put(qx, qy, c);
                }
            }
        }
    }
    canvas
}

/// A square `side` x `side` preview of a reconstruction seen from `yaw_deg` (20 degrees
/// down), fitted to `bounds`, with bigger discs for sparse clouds so the shape reads. Used
/// by the demo's contact sheet and the host's PNG pictures.
pub fn render_tile(
    points: &[[f32; 3]],
    labels: Option<&[u8]>,
    side: u32,
    bounds: ([f32; 3], [f32; 3]),
    yaw_deg: f32,
) -> Canvas {
    let n = points.len().max(1);
    let view = View {
        yaw_deg,
        pitch_deg: 20.0,
        radius: (0.5 * side as f32 / (n as f32).sqrt()).clamp(1.2, 4.0),
        ..View::default()
    };
    render_points(points, labels, side, side, &view, Some(bounds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_points_hide_back_points_and_are_brighter() {
        // two points on the view axis: yaw 0 pitch 0 looks along -z, so z = +1 is nearer
        let v = View {
            yaw_deg: 0.0,
            pitch_deg: 0.0,
            radius: 2.0,
            ..View::default()
        };
        let pts = [
            [0.0, 0.0, 1.0],
            [0.0, 0.0, -1.0],
            [1.0, 1.0, 0.0],
            [-1.0, -1.0, 0.0],
        ];
        let c = render_points(&pts, Some(&[1, 0, 0, 0]), 64, 64, &v, None);
        let mid = c.get(32, 32).unwrap();
        // nearest point has label 1 (orange) at full brightness
        assert_eq!(mid, PALETTE[1]);
        // the y = +1 point is drawn above the centre
        let above = (0..32).any(|y| c.get(49, y) != Some(v.background));
        assert!(above);
    }

    #[test]
    fn empty_and_non_finite_input_give_background() {
        let v = View::default();
        let c = render_points(&[[f32::NAN, 0.0, 0.0]], None, 8, 8, &v, None);
        assert!(c.rgb.chunks(3).all(|p| p == v.background));
        let c = render_points(&[], None, 0, 0, &v, None);
        assert_eq!((c.width, c.height), (1, 1));
        // a single point does not divide by zero
        let c = render_points(&[[1.0, 2.0, 3.0]], None, 9, 9, &v, None);
        assert_ne!(c.get(4, 4), Some(v.background));
    }

    #[test]
    fn blit_clips() {
        let mut a = Canvas::new(4, 4, [0; 3]);
        let b = Canvas::new(3, 3, [9; 3]);
        a.blit(&b, 2, -1);
        assert_eq!(a.get(3, 0), Some([9; 3]));
        assert_eq!(a.get(1, 0), Some([0; 3]));
        assert_eq!(a.get(2, 2), Some([0; 3]));
    }
}
