//! Camera pixel-format conversion to RGB8 at 640x480 (criterion), per source format.
//!
//! Frames: `FRAMES=/dir` with ffmpeg's `b640.<fmt>` files (see tests/fixtures/frames/README.md),
//! otherwise a synthetic test pattern converted to each format here (MJPEG via the `image`
//! crate's JPEG encoder).
//!
//!     cargo bench --bench convert -- --warm-up-time 1 --measurement-time 2

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shapecast::source::{convert::convert, PixelFormat};

const W: usize = 640;
const H: usize = 480;

/// A smooth colour pattern with some detail (so JPEG does not collapse it).
fn pattern() -> Vec<u8> {
    let mut rgb = Vec::with_capacity(W * H * 3);
    for y in 0..H {
        for x in 0..W {
            let r = (x * 255 / W) as u8;
            let g = (y * 255 / H) as u8;
            let b = (((x / 8) ^ (y / 8)) & 1) as u8 * 160 + ((x + y) % 64) as u8;
            rgb.extend_from_slice(&[r, g, b]);
        }
    }
    rgb
}

fn yuv(p: &[u8]) -> (u8, u8, u8) {
    let (r, g, b) = (f32::from(p[0]), f32::from(p[1]), f32::from(p[2]));
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let u = 128.0 + 0.564 * (b - y);
    let v = 128.0 + 0.713 * (r - y);
    let q = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    (q(y), q(u), q(v))
}

fn synth(ext: &str, rgb: &[u8]) -> Vec<u8> {
    let px = |x: usize, y: usize| &rgb[(y * W + x) * 3..(y * W + x) * 3 + 3];
    match ext {
        "rgb24" => rgb.to_vec(),
        "bgr24" => rgb
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect(),
        "gray" => rgb.chunks_exact(3).map(|p| yuv(p).0).collect(),
        "yuyv422" | "uyvy422" => {
            let mut out = Vec::with_capacity(W * H * 2);
            for y in 0..H {
                for x in (0..W).step_by(2) {
                    let (y0, u, v) = yuv(px(x, y));
                    let (y1, _, _) = yuv(px(x + 1, y));
                    if ext == "yuyv422" {
                        out.extend_from_slice(&[y0, u, y1, v]);
                    } else {
                        out.extend_from_slice(&[u, y0, v, y1]);
                    }
                }
            }
            out
        }
        "nv12" | "yuv420p" => {
            let mut luma: Vec<u8> = rgb.chunks_exact(3).map(|p| yuv(p).0).collect();
            let (mut us, mut vs) = (Vec::new(), Vec::new());
            for y in (0..H).step_by(2) {
                for x in (0..W).step_by(2) {
                    let (_, u, v) = yuv(px(x, y));
                    us.push(u);
                    vs.push(v);
                }
            }
            if ext == "nv12" {
                luma.extend(us.iter().zip(&vs).flat_map(|(u, v)| [*u, *v]));
            } else {
                luma.extend(us);
                luma.extend(vs);
            }
            luma
        }
        "mjpeg" => {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
                .encode(rgb, W as u32, H as u32, image::ExtendedColorType::Rgb8)
                .expect("encoding the JPEG test frame");
            out
        }
        _ => unreachable!("unknown format {ext}"),
    }
}

fn bench(c: &mut Criterion) {
    let dir = std::env::var("FRAMES").ok();
    let rgb = pattern();
    let mut g = c.benchmark_group("to_rgb8_640x480");
    g.throughput(Throughput::Elements(1));
    for (f, ext) in [
        (PixelFormat::Rgb24, "rgb24"),
        (PixelFormat::Bgr24, "bgr24"),
        (PixelFormat::Grey, "gray"),
        (PixelFormat::Yuyv, "yuyv422"),
        (PixelFormat::Uyvy, "uyvy422"),
        (PixelFormat::Nv12, "nv12"),
        (PixelFormat::Yuv420, "yuv420p"),
        (PixelFormat::Mjpeg, "mjpeg"),
    ] {
        let data = match &dir {
            Some(d) => std::fs::read(format!("{d}/b640.{ext}"))
                .unwrap_or_else(|e| panic!("{d}/b640.{ext}: {e}")),
            None => synth(ext, &rgb),
        };
        let mut out = Vec::new();
        convert(f, W as u32, H as u32, &data, &mut out).expect("converting the test frame");
        assert_eq!(out.len(), W * H * 3);
        g.bench_function(f.name(), |b| {
            b.iter(|| convert(f, W as u32, H as u32, &data, &mut out).expect("convert"));
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
