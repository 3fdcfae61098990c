//! Small PNG plots drawn with the `image` crate: loss curves and F-score curves. Axis tick
//! values are drawn with a built-in 3x5 pixel font (digits, `.`, `-`, `e`).

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::TrainError;

const W: u32 = 720;
const H: u32 = 420;
const ML: i32 = 70; // margins
const MR: i32 = 20;
const MT: i32 = 20;
const MB: i32 = 40;

/// Line colours, in series order.
pub const COLORS: [[u8; 3]; 5] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
];

/// One line of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    /// `(x, y)` points in order.
    pub points: Vec<(f64, f64)>,
}

fn glyph(c: char) -> Option<[u8; 5]> {
    // rows of 3 bits, MSB = left
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        '%' => [5, 1, 2, 4, 5],
        _ => return None,
    })
}

/// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels.
pub fn draw_text(img: &mut RgbImage, x: i32, y: i32, text: &str, scale: i32, color: [u8; 3]) {
    let mut cx = x;
    for c in text.chars() {
        if let Some(g) = glyph(c) {
            for (r, row) in g.iter().enumerate() {
                for b in 0..3 {
                    if row & (4 >> b) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                put(img, cx + b * scale + dx, y + r as i32 * scale + dy, color);
                            }
                        }
                    }
                }
            }
        }
        cx += 4 * scale;
    }
}

fn put(img: &mut RgbImage, x: i32, y: i32, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

/// Bresenham line, `thick` pixels wide (square brush).
pub fn line(
    img: &mut RgbImage,
    (x0, y0): (i32, i32),
    (x1, y1): (i32, i32),
    c: [u8; 3],
    thick: i32,
) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        for a in 0..thick {
            for b in 0..thick {
                put(img, x + a - thick / 2, y + b - thick / 2, c);
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Plots `series` (x linear; y linear or log10) into a PNG at `out`.
pub fn line_plot(series: &[Series], log_y: bool, out: &Path) -> Result<(), TrainError> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let ty = |y: f64| if log_y { y.max(1e-12).log10() } else { y };
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|p| p.0.is_finite() && p.1.is_finite() && (!log_y || p.1 > 0.0))
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in &pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(ty(y));
        y1 = y1.max(ty(y));
    }
    if pts.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let pw = W as i32 - ML - MR;
    let ph = H as i32 - MT - MB;
    let px = |x: f64| ML + ((x - x0) / (x1 - x0) * pw as f64).round() as i32;
    let py = |y: f64| MT + ph - ((ty(y) - y0) / (y1 - y0) * ph as f64).round() as i32;
    // grid and ticks
    for i in 0..=4 {
        let gy = MT + ph * i / 4;
        line(&mut img, (ML, gy), (ML + pw, gy), [225, 225, 225], 1);
        let v = y1 - (y1 - y0) * i as f64 / 4.0;
        let v = if log_y { 10f64.powf(v) } else { v };
        draw_text(&mut img, 4, gy - 5, &fmt_tick(v), 2, [60, 60, 60]);
        let gx = ML + pw * i / 4;
        line(&mut img, (gx, MT), (gx, MT + ph), [225, 225, 225], 1);
        let xv = x0 + (x1 - x0) * i as f64 / 4.0;
        draw_text(
            &mut img,
            gx - 10,
            MT + ph + 10,
            &fmt_tick(xv),
            2,
            [60, 60, 60],
        );
    }
    line(&mut img, (ML, MT + ph), (ML + pw, MT + ph), [0, 0, 0], 1);
    line(&mut img, (ML, MT), (ML, MT + ph), [0, 0, 0], 1);
    for (si, s) in series.iter().enumerate() {
        let c = COLORS[si % COLORS.len()];
        let valid: Vec<(i32, i32)> = s
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite() && (!log_y || p.1 > 0.0))
            .map(|&(x, y)| (px(x), py(y)))
            .collect();
        for w in valid.windows(2) {
            line(&mut img, w[0], w[1], c, 2);
        }
        if valid.len() == 1 {
            line(&mut img, valid[0], valid[0], c, 5);
        }
    }
    save_png(&img, out)
}

/// Saves a picture, mapping the error.
pub fn save_png(img: &RgbImage, out: &Path) -> Result<(), TrainError> {
    img.save(out).map_err(|e| TrainError::Parse {
        path: out.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Reads a run's `metrics.csv` and plots train Chamfer (blue) and validation Chamfer-L2
/// (orange) against the step, log-scale y.
pub fn loss_curve_png(metrics_csv: &Path, out: &Path) -> Result<(), TrainError> {
    let text = std::fs::read_to_string(metrics_csv).map_err(|e| TrainError::io(metrics_csv, e))?;
    let mut train = Series { points: vec![] };
    let mut val = Series { points: vec![] };
    for row in text.lines().skip(1) {
        let f: Vec<&str> = row.split(',').collect();
        if f.len() < 5 {
            continue;
        }
        let Ok(step) = f[0].parse::<f64>() else {
            continue;
        };
        if let Ok(t) = f[2].parse::<f64>() {
            train.points.push((step, t));
        }
        if let Ok(v) = f[4].parse::<f64>() {
            val.points.push((step, v));
        }
    }
    line_plot(&[train, val], true, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_writes_a_png_with_ink() {
        let dir = std::env::temp_dir().join(format!("sc-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.png");
        let s = Series {
            points: (1..50).map(|i| (i as f64, 1.0 / i as f64)).collect(),
        };
        line_plot(&[s], true, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        let blue = img.pixels().filter(|px| px.0 == COLORS[0]).count();
        assert!(blue > 100, "{blue}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
