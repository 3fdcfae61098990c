//! Conversion of every [`PixelFormat`] to packed RGB8.
//!
//! YUV formats use BT.601 limited range ("TV range": Y 16..235, UV 16..240), which is what
//! V4L2 UVC cameras send and what ffmpeg's swscale assumes by default, in 8.8 fixed point:
//!
//! ```text
//! R = (298 (Y-16)             + 409 (V-128) + 128) >> 8
//! G = (298 (Y-16) - 100 (U-128) - 208 (V-128) + 128) >> 8
//! B = (298 (Y-16) + 516 (U-128)             + 128) >> 8      (each clamped to 0..=255)
//! ```
//!
//! Chroma is repeated over the pixels that share it (nearest, no interpolation), as swscale's
//! default yuv->rgb paths do. Tolerances against ffmpeg 5.1 (`make_frames.sh`, tested below):
//! YUYV/UYVY/NV12/YUV420 at most 3 levels per channel, mean below 1.5 (swscale rounds with
//! its own coefficients), RGB24/BGR24/GREY exact. MJPEG is decoded by the `image` crate
//! (zune-jpeg: full-range JFIF YCbCr, smooth "fancy" chroma upsampling). ffmpeg repeats
//! chroma instead, so the two agree within 12 levels (mean 0.6 measured) away from colour
//! edges, and differ by up to ~100 levels in the 2 pixels beside a sharp vertical colour edge
//! (whole-frame mean 7.5 on testsrc's 8-pixel colour bars, the worst case). UVC MJPEG without
//! Huffman tables gets the standard ones inserted before decoding.

use super::{Frame, PixelFormat};

/// Why a frame could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{format} frame {width}x{height} needs {expected} bytes, got {got}")]
    Size {
        format: PixelFormat,
        width: u32,
        height: u32,
        expected: usize,
        got: usize,
    },
    #[error("{format} frame {width}x{height} with rows {stride} bytes apart does not fit in {got} bytes")]
    Short {
        format: PixelFormat,
        width: u32,
        height: u32,
        stride: u32,
        got: usize,
    },
    #[error("frame size {width}x{height} is not within 1..=16384")]
    TooLarge { width: u32, height: u32 },
    #[error("JPEG decode failed: {0}")]
    Jpeg(String),
    #[error("JPEG is {got_w}x{got_h}, frame says {width}x{height}")]
    JpegSize {
        width: u32,
        height: u32,
        got_w: u32,
        got_h: u32,
    },
}

/// Largest side converted (bounds the output buffer).
pub const MAX_SIDE: u32 = 16384;

/// Converts `frame` to packed RGB8 into `out` (resized to width*height*3; its allocation is
/// reused between calls). Never panics on bad input: a wrong length or an undecodable JPEG is
/// an error.
pub fn to_rgb8(frame: &Frame, out: &mut Vec<u8>) -> Result<(), ConvertError> {
    convert(frame.format, frame.width, frame.height, &frame.data, out)
}

/// [`to_rgb8`] returning an [`image::RgbImage`].
pub fn to_rgb_image(frame: &Frame) -> Result<image::RgbImage, ConvertError> {
    let mut out = Vec::new();
    to_rgb8(frame, &mut out)?;
    image::RgbImage::from_raw(frame.width, frame.height, out).ok_or(ConvertError::TooLarge {
        width: frame.width,
        height: frame.height,
    })
}

/// Converts raw bytes of `format` to packed RGB8 (see [`to_rgb8`]).
pub fn convert(
    format: PixelFormat,
    width: u32,
    height: u32,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ConvertError> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(ConvertError::TooLarge { width, height });
    }
    let (w, h) = (width as usize, height as usize);
    if format == PixelFormat::Mjpeg {
        return decode_jpeg(width, height, data, out);
    }
    let expected = format
        .frame_len(width, height)
        .ok_or(ConvertError::TooLarge { width, height })?;
    if data.len() != expected {
        return Err(ConvertError::Size {
            format,
            width,
            height,
            expected,
            got: data.len(),
        });
    }
    out.clear();
    out.resize(w * h * 3, 0);
    let cw = w.div_ceil(2);
    match format {
        PixelFormat::Rgb24 => out.copy_from_slice(data),
        PixelFormat::Bgr24 => {
            for (o, i) in out.chunks_exact_mut(3).zip(data.chunks_exact(3)) {
                o[0] = i[2];
                o[1] = i[1];
                o[2] = i[0];
            }
        }
        PixelFormat::Grey => {
            for (o, &g) in out.chunks_exact_mut(3).zip(data) {
                o.fill(g);
            }
        }
        PixelFormat::Yuyv | PixelFormat::Uyvy => {
            // Byte offsets of Y0, U, Y1, V inside a 4-byte group.
            let (y0, u, y1, v) = if format == PixelFormat::Yuyv {
                (0, 1, 2, 3)
            } else {
                (1, 0, 3, 2)
            };
            let pairs = w / 2;
            for (orow, irow) in out.chunks_exact_mut(w * 3).zip(data.chunks_exact(cw * 4)) {
                let (opairs, otail) = orow.split_at_mut(pairs * 6);
                for (o, g) in opairs.chunks_exact_mut(6).zip(irow.chunks_exact(4)) {
                    let c = Chroma::new(g[u], g[v]);
                    c.put(&mut o[..3], g[y0]);
                    c.put(&mut o[3..], g[y1]);
                }
                if let Some(g) = irow.get(pairs * 4..pairs * 4 + 4) {
                    if otail.len() == 3 {
                        Chroma::new(g[u], g[v]).put(otail, g[y0]);
                    }
                }
            }
        }
        PixelFormat::Nv12 | PixelFormat::Yuv420 => {
            let (luma, chroma) = data.split_at(w * h);
            let plane = cw * h.div_ceil(2);
            let pairs = w / 2;
            for (row, (orow, yrow)) in out
                .chunks_exact_mut(w * 3)
                .zip(luma.chunks_exact(w))
                .enumerate()
            {
                let c0 = (row / 2) * cw;
                // (U, V) of each chroma sample in this row.
                let (us, vs, step) = if format == PixelFormat::Nv12 {
                    (
                        &chroma[2 * c0..2 * (c0 + cw)],
                        &chroma[2 * c0 + 1..2 * (c0 + cw)],
                        2,
                    )
                } else {
                    (
                        &chroma[c0..c0 + cw],
                        &chroma[plane + c0..plane + c0 + cw],
                        1,
                    )
                };
                let uv = us.iter().step_by(step).zip(vs.iter().step_by(step));
                let (opairs, otail) = orow.split_at_mut(pairs * 6);
                let mut uv = uv.map(|(&u, &v)| Chroma::new(u, v));
                for ((o, ys), c) in opairs
                    .chunks_exact_mut(6)
                    .zip(yrow.chunks_exact(2))
                    .zip(&mut uv)
                {
                    c.put(&mut o[..3], ys[0]);
                    c.put(&mut o[3..], ys[1]);
                }
                if let (Some(c), Some(&y)) = (uv.next(), yrow.get(pairs * 2)) {
                    if otail.len() == 3 {
                        c.put(otail, y);
                    }
                }
            }
        }
        // Decoded above.
        PixelFormat::Mjpeg => {}
    }
    Ok(())
}

/// BT.601 limited-range RGB to YUV, 8.8 fixed point (the inverse of [`yuv`] up to rounding).
#[inline]
pub fn rgb_to_yuv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    [
        clamp8(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16),
        clamp8(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128),
        clamp8(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128),
    ]
}

/// Packed RGB8 (`w * h * 3` bytes) as a frame of `format`: what a camera sending that format
/// would deliver for the picture (chroma of the top-left pixel of each block; MJPEG at
/// quality 90). For benchmarks of the conversion stage and round-trip tests.
pub fn from_rgb8(
    format: PixelFormat,
    width: u32,
    height: u32,
    rgb: &[u8],
) -> Result<Vec<u8>, ConvertError> {
    let (w, h) = (width as usize, height as usize);
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(ConvertError::TooLarge { width, height });
    }
    if rgb.len() != w * h * 3 {
        return Err(ConvertError::Size {
            format: PixelFormat::Rgb24,
            width,
            height,
            expected: w * h * 3,
            got: rgb.len(),
        });
    }
    let px = |x: usize, y: usize| -> [u8; 3] {
        let i = (y * w + x) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    };
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let out = match format {
        PixelFormat::Rgb24 => rgb.to_vec(),
        PixelFormat::Bgr24 => rgb
            .chunks_exact(3)
            .flat_map(|p| [p[2], p[1], p[0]])
            .collect(),
        // V4L2 GREY is full range (what `convert` reads): BT.601 luma weights, 0..=255
        PixelFormat::Grey => rgb
            .chunks_exact(3)
            .map(|p| {
                let (r, g, b) = (u32::from(p[0]), u32::from(p[1]), u32::from(p[2]));
                ((77 * r + 150 * g + 29 * b + 128) >> 8) as u8
            })
            .collect(),
        PixelFormat::Yuyv | PixelFormat::Uyvy => {
            let mut out = Vec::with_capacity(cw * 4 * h);
            for y in 0..h {
                for cx in 0..cw {
                    let a = rgb_to_yuv(px(2 * cx, y));
                    let b = rgb_to_yuv(px((2 * cx + 1).min(w - 1), y));
                    out.extend_from_slice(&if format == PixelFormat::Yuyv {
                        [a[0], a[1], b[0], a[2]]
                    } else {
                        [a[1], a[0], a[2], b[0]]
                    });
                }
            }
            out
        }
        PixelFormat::Nv12 | PixelFormat::Yuv420 => {
            let mut out: Vec<u8> = rgb
                .chunks_exact(3)
                .map(|p| rgb_to_yuv([p[0], p[1], p[2]])[0])
                .collect();
            let chroma: Vec<[u8; 3]> = (0..ch)
                .flat_map(|cy| (0..cw).map(move |cx| (cx, cy)))
                .map(|(cx, cy)| rgb_to_yuv(px(2 * cx, 2 * cy)))
                .collect();
            if format == PixelFormat::Nv12 {
                out.extend(chroma.iter().flat_map(|c| [c[1], c[2]]));
            } else {
                out.extend(chroma.iter().map(|c| c[1]));
                out.extend(chroma.iter().map(|c| c[2]));
            }
            out
        }
        PixelFormat::Mjpeg => {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
                .encode(rgb, width, height, image::ExtendedColorType::Rgb8)
                .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
            out
        }
    };
    Ok(out)
}

/// Copies a driver buffer whose rows lie `stride` bytes apart (V4L2 `bytesperline`) into a
/// tightly packed frame. Planar formats: chroma planes follow the luma plane with the same
/// stride (half of it for YUV420's U and V planes). MJPEG is copied as is.
pub fn unpad(
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
    data: &[u8],
) -> Result<Vec<u8>, ConvertError> {
    if format == PixelFormat::Mjpeg {
        return Ok(data.to_vec());
    }
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(ConvertError::TooLarge { width, height });
    }
    let want = format
        .frame_len(width, height)
        .ok_or(ConvertError::TooLarge { width, height })?;
    let short = || ConvertError::Short {
        format,
        width,
        height,
        stride,
        got: data.len(),
    };
    let w = width as usize;
    let h = height as usize;
    let row = match format {
        PixelFormat::Yuyv | PixelFormat::Uyvy => w.div_ceil(2) * 4,
        PixelFormat::Rgb24 | PixelFormat::Bgr24 => w * 3,
        _ => w,
    };
    let stride_b = (stride as usize).max(row);
    if stride_b == row {
        if data.len() < want {
            return Err(short());
        }
        return Ok(data[..want].to_vec());
    }
    // Rows are padded: copy the meaningful bytes of each row. Planar formats: the chroma
    // plane(s) follow the luma plane with the same stride (half of it for I420's U and V).
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut planes: Vec<(usize, usize, usize, usize)> = vec![(0, stride_b, row, h)]; // (offset, stride, row bytes, rows)
    match format {
        PixelFormat::Nv12 => planes.push((stride_b * h, stride_b, cw * 2, ch)),
        PixelFormat::Yuv420 => {
            let cs = stride_b / 2;
            planes.push((stride_b * h, cs, cw, ch));
            planes.push((stride_b * h + cs * ch, cs, cw, ch));
        }
        _ => {}
    }
    let mut out = Vec::with_capacity(want);
    for (offset, pstride, bytes, rows) in planes {
        for r in 0..rows {
            let start = offset + r * pstride;
            let src = data.get(start..start + bytes).ok_or_else(short)?;
            out.extend_from_slice(src);
        }
    }
    debug_assert_eq!(out.len(), want);
    Ok(out)
}

#[inline]
fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// The chroma terms of [`yuv`], computed once per chroma sample.
#[derive(Clone, Copy)]
struct Chroma {
    r: i32,
    g: i32,
    b: i32,
}

impl Chroma {
    #[inline]
    fn new(u: u8, v: u8) -> Chroma {
        let d = i32::from(u) - 128;
        let e = i32::from(v) - 128;
        Chroma {
            r: 409 * e,
            g: -100 * d - 208 * e,
            b: 516 * d,
        }
    }

    /// Writes the RGB of luma `y` with these chroma terms into `o[..3]`.
    #[inline]
    fn put(self, o: &mut [u8], y: u8) {
        let c = 298 * (i32::from(y) - 16) + 128;
        o[0] = clamp8((c + self.r) >> 8);
        o[1] = clamp8((c + self.g) >> 8);
        o[2] = clamp8((c + self.b) >> 8);
    }
}

/// BT.601 limited-range YUV to RGB, 8.8 fixed point.
#[inline]
pub fn yuv(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16) + 128;
    let d = i32::from(u) - 128;
    let e = i32::from(v) - 128;
    [
        clamp8((c + 409 * e) >> 8),
        clamp8((c - 100 * d - 208 * e) >> 8),
        clamp8((c + 516 * d) >> 8),
    ]
}

fn decode_jpeg(
    width: u32,
    height: u32,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ConvertError> {
    let with_tables;
    let data = if super::jpeg::has_huffman_tables(data) {
        data
    } else {
        // UVC cameras often leave out the (standard) Huffman tables.
        with_tables = super::jpeg::insert_standard_huffman_tables(data)
            .ok_or_else(|| ConvertError::Jpeg("no SOS marker".into()))?;
        &with_tables
    };
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(data), image::ImageFormat::Jpeg);
    // Never decode more than the frame announces: a 16000x16000 picture in a 64x48 stream
    // must not cost 800 MB before the size check.
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(1024 * 1024 * 1024);
    reader.limits(limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
    let (got_w, got_h) = image::ImageDecoder::dimensions(&decoder);
    if got_w != width || got_h != height {
        return Err(ConvertError::JpegSize {
            width,
            height,
            got_w,
            got_h,
        });
    }
    let img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
    let rgb = img.into_rgb8();
    out.clear();
    out.extend_from_slice(rgb.as_raw());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::fixtures;

    const W: u32 = 64;
    const H: u32 = 48;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// (max abs difference, mean abs difference) over all channels.
    fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
        assert_eq!(a.len(), b.len());
        let mut max = 0;
        let mut sum = 0u64;
        for (&x, &y) in a.iter().zip(b) {
            let d = x.abs_diff(y);
            max = max.max(d);
            sum += u64::from(d);
        }
        (max, sum as f64 / a.len() as f64)
    }

    fn check(format: PixelFormat, file: &str, reference: &str, max_tol: u8, mean_tol: f64) {
        let data = fixture(file);
        let mut out = vec![1, 2, 3]; // stale content must be replaced
        convert(format, W, H, &data, &mut out).unwrap();
        assert_eq!(out.len(), (W * H * 3) as usize);
        let (max, mean) = diff(&out, &fixture(reference));
        assert!(
            max <= max_tol && mean <= mean_tol,
            "{format}: max {max} (tolerance {max_tol}), mean {mean:.3} (tolerance {mean_tol})"
        );
    }

    #[test]
    fn yuyv_matches_ffmpeg() {
        check(
            PixelFormat::Yuyv,
            "testsrc.yuyv422",
            "ref/yuyv422.rgb24",
            3,
            1.5,
        );
    }

    #[test]
    fn uyvy_matches_ffmpeg() {
        check(
            PixelFormat::Uyvy,
            "testsrc.uyvy422",
            "ref/uyvy422.rgb24",
            3,
            1.5,
        );
    }

    #[test]
    fn nv12_matches_ffmpeg() {
        check(PixelFormat::Nv12, "testsrc.nv12", "ref/nv12.rgb24", 3, 1.5);
    }

    #[test]
    fn yuv420_matches_ffmpeg() {
        check(
            PixelFormat::Yuv420,
            "testsrc.yuv420p",
            "ref/yuv420p.rgb24",
            3,
            1.5,
        );
    }

    #[test]
    fn packed_rgb_and_grey_are_exact() {
        check(PixelFormat::Rgb24, "testsrc.rgb24", "testsrc.rgb24", 0, 0.0);
        check(
            PixelFormat::Bgr24,
            "testsrc.bgr24",
            "ref/bgr24.rgb24",
            0,
            0.0,
        );
        check(PixelFormat::Grey, "testsrc.gray", "ref/gray.rgb24", 0, 0.0);
    }

    /// Pixels of the lossless source with no change above 8 levels within 2 pixels (x or y).
    fn flat_mask(src: &[u8]) -> Vec<bool> {
        let (w, h) = (W as i64, H as i64);
        let px = |x: i64, y: i64| &src[((y * w + x) * 3) as usize..((y * w + x) * 3 + 3) as usize];
        let mut mask = Vec::with_capacity(src.len() / 3);
        for y in 0..h {
            for x in 0..w {
                let here = px(x, y);
                let mut flat = true;
                for d in [-2i64, -1, 1, 2] {
                    for (nx, ny) in [(x + d, y), (x, y + d)] {
                        if (0..w).contains(&nx) && (0..h).contains(&ny) {
                            flat &= here
                                .iter()
                                .zip(px(nx, ny))
                                .all(|(a, b)| a.abs_diff(*b) <= 8);
                        }
                    }
                }
                mask.push(flat);
            }
        }
        mask
    }

    #[test]
    fn mjpeg_matches_ffmpeg_decoder() {
        let data = fixture("testsrc.mjpeg");
        let mut out = Vec::new();
        convert(PixelFormat::Mjpeg, W, H, &data, &mut out).unwrap();
        let reference = fixture("ref/mjpeg.rgb24");
        let mask = flat_mask(&fixture("testsrc.rgb24"));
        let pick = |v: &[u8]| -> Vec<u8> {
            v.chunks_exact(3)
                .zip(&mask)
                .filter(|(_, &m)| m)
                .flat_map(|(p, _)| p.to_vec())
                .collect()
        };
        let flat_px = mask.iter().filter(|&&m| m).count();
        assert!(flat_px > 500, "{flat_px} flat pixels");
        // Away from colour edges both decoders agree closely...
        let (max, mean) = diff(&pick(&out), &pick(&reference));
        assert!(
            max <= 12 && mean <= 1.5,
            "flat areas: max {max}, mean {mean:.3}"
        );
        // ...on testsrc's 8-pixel colour bars they upsample chroma differently (smooth vs
        // repeated), which dominates the whole-frame figure.
        let (_, mean_all) = diff(&out, &reference);
        assert!(mean_all < 10.0, "whole frame mean {mean_all:.3}");
    }

    /// Every format made from an RGB picture by `from_rgb8` converts back to it: exact for
    /// the packed RGB forms, within a few levels for YUV away from chroma edges (a smooth
    /// gradient), within JPEG's loss for MJPEG; odd sizes included.
    #[test]
    fn from_rgb8_round_trips_through_every_format() {
        for (w, h) in [(64u32, 48u32), (33, 17)] {
            let rgb: Vec<u8> = (0..h)
                .flat_map(|y| {
                    (0..w).flat_map(move |x| {
                        [(40 + x * 3) as u8, (30 + y * 4) as u8, (200 - x - y) as u8]
                    })
                })
                .collect();
            for format in [
                PixelFormat::Rgb24,
                PixelFormat::Bgr24,
                PixelFormat::Yuyv,
                PixelFormat::Uyvy,
                PixelFormat::Nv12,
                PixelFormat::Yuv420,
                PixelFormat::Mjpeg,
            ] {
                let data = from_rgb8(format, w, h, &rgb).unwrap();
                if let Some(n) = format.frame_len(w, h) {
                    assert_eq!(data.len(), n, "{format}");
                }
                let mut back = Vec::new();
                convert(format, w, h, &data, &mut back).unwrap();
                let (max, mean) = diff(&back, &rgb);
                let (max_tol, mean_tol) = match format {
                    PixelFormat::Rgb24 | PixelFormat::Bgr24 => (0, 0.0),
                    PixelFormat::Mjpeg => (24, 3.0),
                    _ => (12, 4.0),
                };
                assert!(
                    max <= max_tol && mean <= mean_tol,
                    "{format} {w}x{h}: max {max} mean {mean}"
                );
            }
            // GREY: full range both ways; back as R = G = B = the luma of the pixel
            let grey = from_rgb8(PixelFormat::Grey, w, h, &rgb).unwrap();
            assert_eq!(grey.len(), (w * h) as usize);
            let mut back = Vec::new();
            convert(PixelFormat::Grey, w, h, &grey, &mut back).unwrap();
            for (o, p) in back.chunks_exact(3).zip(rgb.chunks_exact(3)) {
                let y = 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
                assert!(o[0] == o[1] && o[1] == o[2] && (f32::from(o[0]) - y).abs() <= 1.0);
            }
        }
        let white = from_rgb8(PixelFormat::Grey, 2, 1, &[255; 6]).unwrap();
        let black = from_rgb8(PixelFormat::Grey, 2, 1, &[0; 6]).unwrap();
        assert_eq!((white, black), (vec![255, 255], vec![0, 0]));
        assert!(from_rgb8(PixelFormat::Yuyv, 4, 4, &[0; 5]).is_err());
        assert!(from_rgb8(PixelFormat::Yuyv, 0, 4, &[]).is_err());
    }

    #[test]
    fn yuv_converges_to_source_picture() {
        // Sanity beyond ffmpeg agreement: the 4:2:2 picture is near the RGB original away from
        // chroma edges (mean over the frame).
        let mut out = Vec::new();
        convert(
            PixelFormat::Yuyv,
            W,
            H,
            &fixture("testsrc.yuyv422"),
            &mut out,
        )
        .unwrap();
        let (_, mean) = diff(&out, &fixture("testsrc.rgb24"));
        assert!(mean < 4.0, "{mean}");
    }

    #[test]
    fn known_colours() {
        assert_eq!(yuv(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv(235, 128, 128), [255, 255, 255]);
        // BT.601 limited-range red, green, blue (rounded) come back within 2 levels.
        for (yuv_px, rgb) in [
            ((81, 90, 240), [255, 0, 0]),
            ((145, 54, 34), [0, 255, 0]),
            ((41, 240, 110), [0, 0, 255]),
        ] {
            let got = yuv(yuv_px.0, yuv_px.1, yuv_px.2);
            for c in 0..3 {
                assert!(
                    got[c].abs_diff(rgb[c]) <= 2,
                    "{yuv_px:?} -> {got:?}, want {rgb:?}"
                );
            }
        }
        // Out-of-range inputs clamp instead of wrapping.
        assert_eq!(yuv(255, 255, 255), [255, 125, 255]);
        assert_eq!(yuv(16, 255, 255), [203, 0, 255]);
        assert_eq!(yuv(0, 128, 128), [0, 0, 0]);
    }

    #[test]
    fn odd_sizes_convert() {
        // 3x3 NV12: 9 luma + 2x2 chroma pairs; 3x1 YUYV: two 4-byte groups.
        let mut out = Vec::new();
        let mut nv12 = vec![128u8; 9];
        nv12.extend_from_slice(&[128; 8]);
        convert(PixelFormat::Nv12, 3, 3, &nv12, &mut out).unwrap();
        assert_eq!(out.len(), 27);
        assert!(out.iter().all(|&v| v == out[0]));
        convert(
            PixelFormat::Yuyv,
            3,
            1,
            &[16, 128, 235, 128, 16, 128, 99, 128],
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0, 0, 0, 255, 255, 255, 0, 0, 0]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        for f in PixelFormat::ALL {
            for len in [0usize, 1, 100, 6143, 6145] {
                let r = convert(f, W, H, &vec![0x55; len], &mut out);
                assert!(r.is_err(), "{f} with {len} bytes");
            }
        }
        assert!(matches!(
            convert(PixelFormat::Rgb24, 0, 5, &[], &mut out),
            Err(ConvertError::TooLarge { .. })
        ));
        assert!(convert(PixelFormat::Rgb24, 100_000, 1, &[], &mut out).is_err());
        let jpeg = fixture("testsrc.mjpeg");
        assert!(matches!(
            convert(PixelFormat::Mjpeg, 32, 24, &jpeg, &mut out),
            Err(ConvertError::JpegSize { .. })
        ));
        for cut in [2, 20] {
            assert!(
                convert(PixelFormat::Mjpeg, W, H, &jpeg[..cut], &mut out).is_err(),
                "cut {cut}"
            );
        }
        // A picture cut inside its entropy-coded data may decode (zune-jpeg fills the rest) or
        // fail, but must not panic.
        for cut in (100..jpeg.len()).step_by(97) {
            let _ = convert(PixelFormat::Mjpeg, W, H, &jpeg[..cut], &mut out);
        }
    }

    #[test]
    fn unpad_removes_row_padding() {
        // 3x2 YUYV (2 groups = 8 bytes per row) in rows of 12 bytes.
        let rows = [
            [1u8, 2, 3, 4, 5, 6, 7, 8, 0xEE, 0xEE, 0xEE, 0xEE],
            [9, 10, 11, 12, 13, 14, 15, 16, 0xEE, 0xEE, 0xEE, 0xEE],
        ];
        let padded: Vec<u8> = rows.concat();
        let got = unpad(PixelFormat::Yuyv, 3, 2, 12, &padded).unwrap();
        assert_eq!(got, (1..=16).collect::<Vec<u8>>());
        // Unpadded (stride 0 = tightly packed, or equal to the row) passes through, extra
        // bytes beyond the frame dropped.
        assert_eq!(
            unpad(PixelFormat::Grey, 4, 2, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap(),
            [1, 2, 3, 4, 5, 6, 7, 8]
        );
        // NV12 4x2 with stride 6: Y rows, then one UV row.
        let nv12 = [1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0, 9, 10, 11, 12, 0, 0];
        assert_eq!(
            unpad(PixelFormat::Nv12, 4, 2, 6, &nv12).unwrap(),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        // YUV420 4x2 with stride 8: U and V rows at stride 4.
        let i420 = [
            1, 2, 3, 4, 0, 0, 0, 0, 5, 6, 7, 8, 0, 0, 0, 0, 9, 10, 0, 0, 11, 12, 0, 0,
        ];
        assert_eq!(
            unpad(PixelFormat::Yuv420, 4, 2, 8, &i420).unwrap(),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
        // Short buffers are errors.
        assert!(matches!(
            unpad(PixelFormat::Yuyv, 3, 2, 12, &padded[..19]),
            Err(ConvertError::Short { .. })
        ));
        assert!(unpad(PixelFormat::Nv12, 4, 2, 6, &nv12[..15]).is_err());
        assert!(unpad(PixelFormat::Rgb24, 0, 2, 6, &[]).is_err());
        assert_eq!(unpad(PixelFormat::Mjpeg, 4, 2, 0, &[1, 2]).unwrap(), [1, 2]);
    }

    #[test]
    fn frame_helpers() {
        let f = Frame {
            width: W,
            height: H,
            format: PixelFormat::Bgr24,
            data: fixture("testsrc.bgr24"),
            capture_ts: std::time::Instant::now(),
            seq: 0,
        };
        let img = to_rgb_image(&f).unwrap();
        assert_eq!(img.as_raw(), &fixture("testsrc.rgb24"));
    }

    /// Per-pixel reference straight from the format definitions.
    fn naive(format: PixelFormat, w: usize, h: usize, d: &[u8]) -> Vec<u8> {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut out = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let (l, u, v) = match format {
                    PixelFormat::Yuyv => {
                        let g = (y * cw + x / 2) * 4;
                        (d[g + if x % 2 == 0 { 0 } else { 2 }], d[g + 1], d[g + 3])
                    }
                    PixelFormat::Uyvy => {
                        let g = (y * cw + x / 2) * 4;
                        (d[g + if x % 2 == 0 { 1 } else { 3 }], d[g], d[g + 2])
                    }
                    PixelFormat::Nv12 => {
                        let c = w * h + 2 * ((y / 2) * cw + x / 2);
                        (d[y * w + x], d[c], d[c + 1])
                    }
                    _ => {
                        let c = (y / 2) * cw + x / 2;
                        (d[y * w + x], d[w * h + c], d[w * h + cw * ch + c])
                    }
                };
                out.extend_from_slice(&yuv(l, u, v));
            }
        }
        out
    }

    #[test]
    fn fast_paths_equal_the_per_pixel_definition() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        let mut out = Vec::new();
        for f in [
            PixelFormat::Yuyv,
            PixelFormat::Uyvy,
            PixelFormat::Nv12,
            PixelFormat::Yuv420,
        ] {
            for w in 1..8u32 {
                for h in 1..6u32 {
                    let len = f.frame_len(w, h).unwrap();
                    let data: Vec<u8> = (0..len).map(|_| next()).collect();
                    convert(f, w, h, &data, &mut out).unwrap();
                    assert_eq!(out, naive(f, w as usize, h as usize, &data), "{f} {w}x{h}");
                }
            }
        }
    }
}
