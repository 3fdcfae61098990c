//! Camera picture (packed RGB8) -> the model's `image` tensor (NCHW f32, normalised).
//!
//! Crop per `shapecast.input.crop`, then an area-aware resize: each output pixel averages
//! `n x n` bilinear samples over its footprint in the source (n = ceil of the scale factor),
//! so large downscales do not alias. Channel order and normalisation per the metadata.

use crate::meta::{Color, Crop, InputSpec};

/// Errors of preprocessing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreprocessError {
    #[error("frame of {width}x{height} holds {got} bytes, RGB8 needs {want}")]
    Size {
        width: usize,
        height: usize,
        got: usize,
        want: usize,
    },
    #[error("empty frame ({width}x{height})")]
    Empty { width: usize, height: usize },
}

/// Source rectangle (x0, y0, w, h) in source pixels, and destination rectangle
/// (x0, y0, w, h) in model pixels, for a crop mode.
fn layout(sw: usize, sh: usize, spec: &InputSpec) -> ([f32; 4], [usize; 4]) {
    let (dw, dh) = (spec.width, spec.height);
    let (sw, sh) = (sw as f32, sh as f32);
    match spec.crop {
        Crop::Stretch => ([0.0, 0.0, sw, sh], [0, 0, dw, dh]),
        Crop::Center => {
            // the largest centred source window of the destination's aspect
            let da = dw as f32 / dh as f32;
            let (cw, ch) = if sw / sh > da {
                (sh * da, sh)
            } else {
                (sw, sw / da)
            };
            ([(sw - cw) / 2.0, (sh - ch) / 2.0, cw, ch], [0, 0, dw, dh])
        }
        Crop::Letterbox => {
            let s = (dw as f32 / sw).min(dh as f32 / sh);
            let w = ((sw * s).round() as usize).clamp(1, dw);
            let h = ((sh * s).round() as usize).clamp(1, dh);
            ([0.0, 0.0, sw, sh], [(dw - w) / 2, (dh - h) / 2, w, h])
        }
    }
}

/// One axis of a bilinear sample: the two source pixels and the weight of the second.
#[derive(Debug, Clone, Copy)]
struct Tap {
    i0: usize,
    i1: usize,
    a: f32,
}

impl Tap {
    /// The tap at source coordinate `v` on an axis of `n` pixels (pixel centres at
    /// integer + 0.5, clamped to the edge pixels).
    fn new(v: f32, n: usize) -> Tap {
        let f = (v - 0.5).clamp(0.0, (n - 1) as f32);
        let i0 = f as usize;
        Tap {
            i0,
            i1: (i0 + 1).min(n - 1),
            a: f - i0 as f32,
        }
    }
}

/// One axis of the resampling as a table: output `o` is the weighted sum of the `len`
/// source pixels `start[o]..start[o] + len`. The weights are the `per` bilinear taps of the
/// output's footprint merged per source pixel and divided by `per`, so the 2-D average of
/// `per x per` bilinear samples is one pass over each axis with `len` (about scale + 1)
/// multiply-adds per output and channel instead of `2 * per`.
#[derive(Debug, Default)]
struct Weights {
    len: usize,
    start: Vec<usize>,
    /// `len` weights per output.
    w: Vec<f32>,
}

impl Weights {
    /// Output `o` covers source `[start + o * scale, start + (o + 1) * scale)` of an axis of
    /// `n` pixels, sampled at `per` evenly spaced points.
    fn axis(start: f32, scale: f32, outputs: usize, per: usize, n: usize) -> Weights {
        let taps: Vec<Tap> = (0..outputs)
            .flat_map(|o| {
                (0..per).map(move |i| {
                    Tap::new(
                        start + (o as f32 + (i as f32 + 0.5) / per as f32) * scale,
                        n,
                    )
                })
            })
            .collect();
        let span = |t: &[Tap]| {
            let lo = t.iter().map(|t| t.i0).min().unwrap_or(0);
            let hi = t.iter().map(|t| t.i1).max().unwrap_or(0);
            (lo, hi)
        };
        let len = taps
            .chunks(per.max(1))
            .map(|t| {
                let (lo, hi) = span(t);
                hi + 1 - lo
            })
            .max()
            .unwrap_or(1)
            .min(n);
        let mut out = Weights {
            len,
            start: Vec::with_capacity(outputs),
            w: vec![0.0; outputs * len],
        };
        let inv = 1.0 / per as f32;
        for (t, w) in taps.chunks(per.max(1)).zip(out.w.chunks_exact_mut(len)) {
            // a fixed window of `len` pixels that holds every tap, inside the axis
            let first = span(t).0.min(n - len);
            out.start.push(first);
            for tap in t {
                w[tap.i0 - first] += (1.0 - tap.a) * inv;
                w[tap.i1 - first] += tap.a * inv;
            }
        }
        out
    }

    /// The source pixels of output `o` and their weights.
    fn of(&self, o: usize) -> (usize, &[f32]) {
        (self.start[o], &self.w[o * self.len..(o + 1) * self.len])
    }
}

/// Fills `out` (resized to C*H*W) with the model input made from an RGB8 picture.
///
/// Allocates its scratch on every call; a frame loop keeps a [`Preprocessor`] instead.
pub fn preprocess_rgb8(
    rgb: &[u8],
    width: usize,
    height: usize,
    spec: &InputSpec,
    out: &mut Vec<f32>,
) -> Result<(), PreprocessError> {
    Preprocessor::default().run(rgb, width, height, spec, out)
}

/// The resampling scratch of a frame loop: the tap tables of the last frame size and the
/// row sums. After the first frame of a size, [`Preprocessor::run`] allocates nothing
/// (tested), so a 640x480 stream no longer allocates ~370 KB per frame.
#[derive(Debug, Default)]
pub struct Preprocessor {
    /// (source width, source height, crop, destination rectangle) the taps were made for.
    key: Option<(usize, usize, Crop, [usize; 4])>,
    x: Weights,
    y: Weights,
    /// Per source row the output rows read, per output column, the column's weighted sum.
    hsum: Vec<[f32; 3]>,
}

impl Preprocessor {
    /// Fills `out` (resized to C*H*W) with the model input made from an RGB8 picture.
    pub fn run(
        &mut self,
        rgb: &[u8],
        width: usize,
        height: usize,
        spec: &InputSpec,
        out: &mut Vec<f32>,
    ) -> Result<(), PreprocessError> {
        if width == 0 || height == 0 {
            return Err(PreprocessError::Empty { width, height });
        }
        let want = width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(3))
            .unwrap_or(usize::MAX);
        if rgb.len() != want {
            return Err(PreprocessError::Size {
                width,
                height,
                got: rgb.len(),
                want,
            });
        }
        let (dw, dh) = (spec.width, spec.height);
        let c = spec.color.channels();
        let plane = dw * dh;
        out.clear();
        out.resize(c * plane, 0.0);
        // normalisation as a*pixel + b per channel (the contract guarantees `c` values)
        let (mut a, mut b) = ([0f32; 3], [0f32; 3]);
        for (ch, (m, s)) in spec.mean.iter().zip(&spec.std).take(c).enumerate() {
            a[ch] = 1.0 / (255.0 * s);
            b[ch] = -m / s;
        }
        // letterbox bars: grey 0.5
        for ch in 0..c {
            let v = 127.5 * a[ch] + b[ch];
            out[ch * plane..(ch + 1) * plane].fill(v);
        }
        let (s, d) = layout(width, height, spec);
        let key = (width, height, spec.crop, d);
        if self.key != Some(key) {
            let sx = s[2] / d[2] as f32;
            let sy = s[3] / d[3] as f32;
            // n x n bilinear samples per output pixel, n = ceil of the scale factor
            let nx = (sx.ceil() as usize).clamp(1, 16);
            let ny = (sy.ceil() as usize).clamp(1, 16);
            self.x = Weights::axis(s[0], sx, d[2], nx, width);
            self.y = Weights::axis(s[1], sy, d[3], ny, height);
            self.key = Some(key);
        }
        // Separable: first, for every source row the output rows read, each output column's
        // weighted sum of the row (`hsum`); then each output pixel is the weighted sum of
        // its rows' sums.
        let r_lo = self.y.start.iter().copied().min().unwrap_or(0);
        let r_hi = self.y.start.iter().copied().max().unwrap_or(0) + self.y.len;
        let cols = d[2];
        self.hsum.clear();
        self.hsum.resize((r_hi - r_lo) * cols, [0f32; 3]);
        let (xw, yw, hsum) = (&self.x, &self.y, &mut self.hsum);
        for (r, sums) in (r_lo..r_hi).zip(hsum.chunks_exact_mut(cols.max(1))) {
            let row = &rgb[r * width * 3..(r + 1) * width * 3];
            for (ox, sum) in sums.iter_mut().enumerate() {
                let (x0, w) = xw.of(ox);
                let px = &row[x0 * 3..(x0 + w.len()) * 3];
                let mut acc = [0f32; 3];
                for (p, &w) in px.chunks_exact(3).zip(w) {
                    acc[0] += p[0] as f32 * w;
                    acc[1] += p[1] as f32 * w;
                    acc[2] += p[2] as f32 * w;
                }
                *sum = acc;
            }
        }
        for oy in 0..d[3] {
            let (y0, w) = yw.of(oy);
            let rows = &hsum[(y0 - r_lo) * cols..];
            for ox in 0..d[2] {
                let mut px = [0f32; 3];
                for (k, &w) in w.iter().enumerate() {
                    let v = rows[k * cols + ox];
                    px[0] += v[0] * w;
                    px[1] += v[1] * w;
                    px[2] += v[2] * w;
                }
                let idx = (d[1] + oy) * dw + d[0] + ox;
                match spec.color {
                    Color::Rgb => {
                        for ch in 0..3 {
                            out[ch * plane + idx] = px[ch] * a[ch] + b[ch];
                        }
                    }
                    Color::Bgr => {
                        for ch in 0..3 {
                            out[ch * plane + idx] = px[2 - ch] * a[ch] + b[ch];
                        }
                    }
                    Color::Gray => {
                        let g = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
                        out[idx] = g * a[0] + b[0];
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct form: n x n 2-D bilinear samples per output pixel (what the separable
    /// code computes in another summation order). RGB, mean 0, std 1.
    fn reference(rgb: &[u8], w: usize, h: usize, spec: &InputSpec) -> Vec<f32> {
        let (dw, dh) = (spec.width, spec.height);
        let mut out = vec![127.5 / 255.0; 3 * dw * dh];
        let (s, d) = layout(w, h, spec);
        let (sx, sy) = (s[2] / d[2] as f32, s[3] / d[3] as f32);
        let nx = (sx.ceil() as usize).clamp(1, 16);
        let ny = (sy.ceil() as usize).clamp(1, 16);
        let px = |x: usize, y: usize, c: usize| rgb[(y * w + x) * 3 + c] as f32;
        for oy in 0..d[3] {
            for ox in 0..d[2] {
                let mut acc = [0f32; 3];
                for j in 0..ny {
                    let ty = Tap::new(s[1] + (oy as f32 + (j as f32 + 0.5) / ny as f32) * sy, h);
                    for i in 0..nx {
                        let x = s[0] + (ox as f32 + (i as f32 + 0.5) / nx as f32) * sx;
                        let tx = Tap::new(x, w);
                        for (c, a) in acc.iter_mut().enumerate() {
                            let top =
                                px(tx.i0, ty.i0, c) * (1.0 - tx.a) + px(tx.i1, ty.i0, c) * tx.a;
                            let bot =
                                px(tx.i0, ty.i1, c) * (1.0 - tx.a) + px(tx.i1, ty.i1, c) * tx.a;
                            *a += top * (1.0 - ty.a) + bot * ty.a;
                        }
                    }
                }
                let idx = (d[1] + oy) * dw + d[0] + ox;
                for (c, a) in acc.iter().enumerate() {
                    out[c * dw * dh + idx] = a / (nx * ny) as f32 / 255.0;
                }
            }
        }
        out
    }

    #[test]
    fn separable_resampling_matches_direct_bilinear_samples() {
        let mut seed = 0x2545_F491u32;
        for (w, h, dw, dh, crop) in [
            (640, 480, 64, 64, Crop::Center),
            (97, 61, 16, 12, Crop::Stretch),
            (50, 120, 32, 32, Crop::Letterbox),
            (13, 9, 40, 30, Crop::Stretch),
        ] {
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed >> 24) as u8
                })
                .collect();
            let sp = spec(dw, dh, Color::Rgb, crop);
            let mut out = Vec::new();
            preprocess_rgb8(&rgb, w, h, &sp, &mut out).unwrap();
            let want = reference(&rgb, w, h, &sp);
            let worst = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{w}x{h} -> {dw}x{dh} {crop:?}: {worst}");
        }
    }

    fn spec(w: usize, h: usize, color: Color, crop: Crop) -> InputSpec {
        let c = color.channels();
        InputSpec {
            width: w,
            height: h,
            color,
            mean: vec![0.0; c],
            std: vec![1.0; c],
            crop,
        }
    }

    #[test]
    fn identity_size_keeps_pixels_and_orders_channels() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = Vec::new();
        preprocess_rgb8(&rgb, 4, 3, &spec(4, 3, Color::Rgb, Crop::Stretch), &mut out).unwrap();
        for y in 0..3 {
            for x in 0..4 {
                for c in 0..3 {
                    let want = rgb[(y * 4 + x) * 3 + c] as f32 / 255.0;
                    assert!((out[c * 12 + y * 4 + x] - want).abs() < 1e-5);
                }
            }
        }
        preprocess_rgb8(&rgb, 4, 3, &spec(4, 3, Color::Bgr, Crop::Stretch), &mut out).unwrap();
        assert!((out[0] - rgb[2] as f32 / 255.0).abs() < 1e-5);
    }

    #[test]
    fn downscale_averages_and_normalises() {
        // left half black, right half white, 8x4 -> 2x1
        let mut rgb = vec![0u8; 8 * 4 * 3];
        for y in 0..4 {
            for x in 4..8 {
                for c in 0..3 {
                    rgb[(y * 8 + x) * 3 + c] = 255;
                }
            }
        }
        let mut s = spec(2, 1, Color::Gray, Crop::Stretch);
        s.mean = vec![0.5];
        s.std = vec![0.5];
        let mut out = Vec::new();
        preprocess_rgb8(&rgb, 8, 4, &s, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert!((out[0] + 1.0).abs() < 1e-4, "{out:?}");
        assert!((out[1] - 1.0).abs() < 1e-4, "{out:?}");
    }

    #[test]
    fn center_crop_and_letterbox() {
        // 6x2 picture: outer columns red, middle 2 columns blue
        let mut rgb = vec![0u8; 6 * 2 * 3];
        for y in 0..2 {
            for x in 0..6 {
                let p = (y * 6 + x) * 3;
                if (2..4).contains(&x) {
                    rgb[p + 2] = 255;
                } else {
                    rgb[p] = 255;
                }
            }
        }
        let mut out = Vec::new();
        preprocess_rgb8(&rgb, 6, 2, &spec(2, 2, Color::Rgb, Crop::Center), &mut out).unwrap();
        // only blue remains
        assert!(out[..4].iter().all(|v| *v < 1e-4), "{out:?}");
        assert!(out[8..].iter().all(|v| (*v - 1.0).abs() < 1e-4), "{out:?}");
        preprocess_rgb8(
            &rgb,
            6,
            2,
            &spec(6, 6, Color::Rgb, Crop::Letterbox),
            &mut out,
        )
        .unwrap();
        // top and bottom rows grey bars
        assert!((out[0] - 0.5).abs() < 1e-4);
        assert!((out[35] - 0.5).abs() < 1e-4);
        // middle rows: picture (red at x=0)
        assert!((out[2 * 6] - 1.0).abs() < 1e-4, "{out:?}");
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let mut out = Vec::new();
        let s = spec(2, 2, Color::Rgb, Crop::Stretch);
        assert!(preprocess_rgb8(&[0; 11], 2, 2, &s, &mut out).is_err());
        assert!(preprocess_rgb8(&[], 0, 2, &s, &mut out).is_err());
        assert!(preprocess_rgb8(&[0; 3], usize::MAX, 3, &s, &mut out).is_err());
    }
}
