//! JPEG stream helpers: splitting a stream of concatenated JPEGs (an MJPEG dump) into frames.
//!
//! Decoding (in `convert`, zune-jpeg through `image`) differs from ffmpeg's at colour edges,
//! by design of the two decoders rather than by error: camera MJPEG is 4:2:2, and zune-jpeg
//! upsamples chroma smoothly (libjpeg's "fancy" triangle filter) where ffmpeg's swscale
//! repeats each chroma sample. Bound, on the ffmpeg `testsrc` fixture (8-pixel colour bars,
//! tests/fixtures/frames): within 12 levels (mean <= 1.5) away from colour edges, whole-frame
//! mean < 10 (`convert::tests::mjpeg_matches_ffmpeg_decoder`); on the edge pixels themselves up
//! to ~114 levels (libjpeg via Pillow vs ffmpeg, same file: max 114, 660 of 3072 pixels over
//! 12, all within one chroma sample of a bar edge). The smooth form is the better estimate of
//! a real scene's colour, and the network sees the frame area-resized to 64x64 (an edge
//! pixel is averaged with ~50 others), so it is kept; matching ffmpeg would need a decoder
//! that hands out YCbCr planes (a second JPEG decoder in the binary).

use std::io::{self, BufRead};

/// Reads one byte, None at end of input.
fn byte<R: BufRead>(r: &mut R) -> io::Result<Option<u8>> {
    let b = match r.fill_buf()?.first() {
        Some(&b) => b,
        None => return Ok(None),
    };
    r.consume(1);
    Ok(Some(b))
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "JPEG cut short by the end of the stream",
    )
}

/// The error inside [`read_jpeg`]'s `InvalidData` when `max_len` bytes held no start marker:
/// no picture was seen (a caller counting pictures must not count it).
#[derive(Debug)]
pub(crate) struct NoStartMarker(pub usize);

impl std::fmt::Display for NoStartMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no JPEG start marker in {} bytes", self.0)
    }
}

impl std::error::Error for NoStartMarker {}

/// Whether `e` is [`read_jpeg`]'s "no start marker" error.
#[cfg(test)]
pub(crate) fn is_no_start_marker(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|x| x.is::<NoStartMarker>())
}

/// Reads the next JPEG picture (SOI .. EOI) of a stream of concatenated pictures, skipping any
/// bytes before an SOI marker. Segments are walked by their lengths (so thumbnails inside APP
/// segments do not end the picture early) and entropy-coded data is scanned for the next
/// marker. Ok(None) at a clean end of input; an error for a picture cut short or longer than
/// `max_len`.
pub(crate) fn read_jpeg<R: BufRead>(r: &mut R, max_len: usize) -> io::Result<Option<Vec<u8>>> {
    let too_long = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("JPEG picture longer than {max_len} bytes"),
        )
    };
    // Find SOI, giving up after `max_len` bytes without one (an endless stream of garbage,
    // e.g. a FIFO or /dev/zero, must return to the caller's stop check). Never between an
    // 0xFF and what follows it, so the next call cannot miss a marker cut in two.
    let mut prev = 0u8;
    let mut skipped = 0usize;
    loop {
        match byte(r)? {
            None => return Ok(None),
            Some(0xD8) if prev == 0xFF => break,
            Some(b) => prev = b,
        }
        skipped += 1;
        if skipped > max_len {
            if prev == 0xFF {
                // Look at the byte after the 0xFF without taking it: an SOI cut in two
                // by this return would be missed by the next call.
                match r.fill_buf()?.first() {
                    Some(0xD8) => {
                        r.consume(1);
                        break;
                    }
                    None => return Ok(None),
                    Some(_) => {}
                }
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                NoStartMarker(skipped),
            ));
        }
    }
    // 0xFF fill bytes before a marker are not kept, but count against `max_len` too (an
    // endless run of them must not keep the caller from its stop check).
    let mut fill = 0usize;
    let mut count_fill = || -> io::Result<()> {
        fill += 1;
        if fill > max_len {
            return Err(too_long());
        }
        Ok(())
    };
    let mut out = vec![0xFF, 0xD8];
    let push = |out: &mut Vec<u8>, b: &[u8]| -> io::Result<()> {
        if out.len() + b.len() > max_len {
            return Err(too_long());
        }
        out.extend_from_slice(b);
        Ok(())
    };
    // `pending`: a marker already read inside entropy-coded data.
    let mut pending: Option<u8> = None;
    loop {
        let marker = match pending.take() {
            Some(m) => m,
            None => {
                let ff = byte(r)?.ok_or_else(eof)?;
                if ff != 0xFF {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("JPEG: expected a marker, found byte {ff:#04x}"),
                    ));
                }
                let mut m = byte(r)?.ok_or_else(eof)?;
                while m == 0xFF {
                    count_fill()?;
                    m = byte(r)?.ok_or_else(eof)?;
                }
                m
            }
        };
        push(&mut out, &[0xFF, marker])?;
        match marker {
            0xD9 => return Ok(Some(out)),
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let hi = byte(r)?.ok_or_else(eof)?;
        let lo = byte(r)?.ok_or_else(eof)?;
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "JPEG: segment length below 2",
            ));
        }
        push(&mut out, &[hi, lo])?;
        if out.len() + len - 2 > max_len {
            return Err(too_long());
        }
        let start = out.len();
        out.resize(start + len - 2, 0);
        r.read_exact(&mut out[start..])?;
        if marker == 0xDA {
            // Entropy-coded data until a marker other than RSTn / stuffed zero.
            loop {
                let b = byte(r)?.ok_or_else(eof)?;
                if b != 0xFF {
                    push(&mut out, &[b])?;
                    continue;
                }
                let mut n = byte(r)?.ok_or_else(eof)?;
                while n == 0xFF {
                    count_fill()?;
                    n = byte(r)?.ok_or_else(eof)?;
                }
                if n == 0x00 || (0xD0..=0xD7).contains(&n) {
                    push(&mut out, &[0xFF, n])?;
                } else {
                    pending = Some(n);
                    break;
                }
            }
        }
    }
}

/// The standard Huffman tables of ITU T.81 Annex K.3 (DC/AC, luma/chroma) as one DHT segment,
/// taken from a JPEG written by `ffmpeg -huffman default` and checked against Annex K counts.
const STANDARD_DHT: [u8; 420] = [
    0xff, 0xc4, 0x01, 0xa2, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
    0x0b, 0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x10, 0x00,
    0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7d, 0x01,
    0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22,
    0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24,
    0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
    0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a,
    0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a,
    0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
    0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6,
    0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3,
    0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9,
    0xfa, 0x11, 0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01,
    0x02, 0x77, 0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07,
    0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33,
    0x52, 0xf0, 0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19,
    0x1a, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46,
    0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85,
    0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3,
    0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
    0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8,
    0xd9, 0xda, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6,
    0xf7, 0xf8, 0xf9, 0xfa,
];

/// Walks the marker segments before the first SOS: Some((offset of SOS, DHT seen)).
fn scan_header(data: &[u8]) -> Option<(usize, bool)> {
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut i = 2;
    let mut dht = false;
    loop {
        if *data.get(i)? != 0xFF {
            return None;
        }
        let mut m = *data.get(i + 1)?;
        while m == 0xFF {
            i += 1;
            m = *data.get(i + 1)?;
        }
        match m {
            0xDA => return Some((i, dht)),
            0xD9 => return None,
            0xD0..=0xD7 | 0x01 => {
                i += 2;
                continue;
            }
            0xC4 => dht = true,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([*data.get(i + 2)?, *data.get(i + 3)?]));
        i += 2 + len;
    }
}

/// Whether the picture defines Huffman tables before its first scan. Pictures that cannot be
/// walked count as having them (the decoder then reports what is wrong).
pub(crate) fn has_huffman_tables(data: &[u8]) -> bool {
    scan_header(data).is_none_or(|(_, dht)| dht)
}

/// The picture with the standard Huffman tables inserted before its first SOS, as a decoder
/// must do for the "AVI1" MJPEG of many UVC cameras; None if no SOS is found.
pub(crate) fn insert_standard_huffman_tables(data: &[u8]) -> Option<Vec<u8>> {
    let (sos, _) = scan_header(data)?;
    let mut out = Vec::with_capacity(data.len() + STANDARD_DHT.len());
    out.extend_from_slice(&data[..sos]);
    out.extend_from_slice(&STANDARD_DHT);
    out.extend_from_slice(&data[sos..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::fixtures;

    #[test]
    fn splits_ffmpeg_mjpeg_stream() {
        let data = std::fs::read(fixtures().join("dump3.mjpeg")).unwrap();
        let mut r = io::BufReader::new(&data[..]);
        let mut frames = Vec::new();
        while let Some(j) = read_jpeg(&mut r, 1 << 20).unwrap() {
            frames.push(j);
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames.iter().map(Vec::len).sum::<usize>(),
            data.len(),
            "every byte belongs to a frame"
        );
        for f in &frames {
            assert_eq!(&f[..2], [0xFF, 0xD8]);
            assert_eq!(&f[f.len() - 2..], [0xFF, 0xD9]);
            image::load_from_memory_with_format(f, image::ImageFormat::Jpeg).unwrap();
        }
    }

    #[test]
    fn thumbnail_in_app_segment_does_not_end_the_picture() {
        let pic = std::fs::read(fixtures().join("testsrc.mjpeg")).unwrap();
        // An APP1 segment holding a whole small "JPEG" (SOI..EOI), as EXIF thumbnails do.
        let thumb = [0xFF, 0xD8, 0xFF, 0xD9];
        let mut with = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, (2 + thumb.len()) as u8];
        with.extend_from_slice(&thumb);
        with.extend_from_slice(&pic[2..]);
        let mut stream = b"junk before".to_vec();
        stream.extend_from_slice(&with);
        stream.extend_from_slice(&pic);
        let mut r = io::BufReader::new(&stream[..]);
        assert_eq!(read_jpeg(&mut r, 1 << 20).unwrap().unwrap(), with);
        assert_eq!(read_jpeg(&mut r, 1 << 20).unwrap().unwrap(), pic);
        assert_eq!(read_jpeg(&mut r, 1 << 20).unwrap(), None);
    }

    #[test]
    fn garbage_without_a_start_marker_returns_and_the_next_picture_survives() {
        let pic = std::fs::read(fixtures().join("testsrc.mjpeg")).unwrap();
        let max = pic.len() + 100;
        // 3.5 x max bytes of garbage whose last byte before the picture is 0xFF, so one
        // early return could fall between that 0xFF and the picture's own SOI.
        let mut stream = vec![0u8; max * 7 / 2];
        let n = stream.len();
        stream[n - 1] = 0xFF;
        stream.extend_from_slice(&pic);
        let mut r = io::BufReader::new(&stream[..]);
        let mut early = 0;
        let got = loop {
            match read_jpeg(&mut r, max) {
                Err(e) if e.kind() == io::ErrorKind::InvalidData => early += 1,
                other => break other.unwrap().unwrap(),
            }
        };
        assert_eq!(early, 3);
        // the stray 0xFF before the SOI is not part of the picture
        assert_eq!(got, pic);
        assert_eq!(read_jpeg(&mut r, max).unwrap(), None);
    }

    #[test]
    fn endless_fill_bytes_return_to_the_caller() {
        let max = 1000;
        // nothing but 0xFF: the marker search gives up although the last byte is 0xFF
        let ff = vec![0xFFu8; 5 * max];
        let mut r = io::BufReader::new(&ff[..]);
        let e = read_jpeg(&mut r, max).unwrap_err();
        assert!(is_no_start_marker(&e), "{e}");
        // a start marker, then fill bytes before a marker that never comes
        let mut soi = vec![0xFF, 0xD8];
        soi.extend(std::iter::repeat_n(0xFF, 5 * max));
        let mut r = io::BufReader::new(&soi[..]);
        let e = read_jpeg(&mut r, max).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        // the same inside entropy-coded data (after SOS)
        let pic = std::fs::read(fixtures().join("testsrc.mjpeg")).unwrap();
        let sos = (0..pic.len() - 1)
            .find(|&i| pic[i] == 0xFF && pic[i + 1] == 0xDA)
            .unwrap();
        let len = usize::from(u16::from_be_bytes([pic[sos + 2], pic[sos + 3]]));
        let mut cut = pic[..sos + 2 + len].to_vec();
        cut.extend_from_slice(&[0x12, 0x34]);
        cut.extend(std::iter::repeat_n(0xFF, pic.len() + 2 * max));
        let mut r = io::BufReader::new(&cut[..]);
        let e = read_jpeg(&mut r, pic.len() + max).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[test]
    fn cut_and_oversized_pictures_are_errors() {
        let pic = std::fs::read(fixtures().join("testsrc.mjpeg")).unwrap();
        for cut in [3, 10, pic.len() / 2, pic.len() - 1] {
            let mut r = io::BufReader::new(&pic[..cut]);
            assert!(read_jpeg(&mut r, 1 << 20).is_err(), "cut at {cut}");
        }
        let mut r = io::BufReader::new(&pic[..]);
        assert!(read_jpeg(&mut r, 100).is_err());
        let mut r = io::BufReader::new(&b"no picture here"[..]);
        assert_eq!(read_jpeg(&mut r, 100).unwrap(), None);
    }

    #[test]
    fn standard_tables_match_annex_k_counts() {
        // DHT body: per table, class/id byte, 16 counts, then that many symbols.
        let body = &STANDARD_DHT[4..];
        assert_eq!(
            usize::from(u16::from_be_bytes([STANDARD_DHT[2], STANDARD_DHT[3]])),
            STANDARD_DHT.len() - 2
        );
        let mut i = 0;
        let mut tables = Vec::new();
        while i < body.len() {
            let n: usize = body[i + 1..i + 17].iter().map(|&c| usize::from(c)).sum();
            tables.push((body[i], n));
            i += 17 + n;
        }
        assert_eq!(tables, [(0x00, 12), (0x01, 12), (0x10, 162), (0x11, 162)]);
    }

    #[test]
    fn picture_without_tables_decodes_like_the_original() {
        // The fixture uses the standard tables (ffmpeg -huffman default), as UVC cameras do.
        let pic = std::fs::read(fixtures().join("testsrc.mjpeg")).unwrap();
        assert!(has_huffman_tables(&pic));
        // Strip every DHT segment, as an "AVI1" camera frame comes.
        let (sos, _) = scan_header(&pic).unwrap();
        let mut stripped = vec![0xFF, 0xD8];
        let mut i = 2;
        while i < sos {
            let len = usize::from(u16::from_be_bytes([pic[i + 2], pic[i + 3]]));
            if pic[i + 1] != 0xC4 {
                stripped.extend_from_slice(&pic[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        stripped.extend_from_slice(&pic[sos..]);
        assert!(stripped.len() < pic.len());
        assert!(!has_huffman_tables(&stripped));
        let mut a = Vec::new();
        let mut b = Vec::new();
        crate::source::convert::convert(crate::source::PixelFormat::Mjpeg, 64, 48, &pic, &mut a)
            .unwrap();
        crate::source::convert::convert(
            crate::source::PixelFormat::Mjpeg,
            64,
            48,
            &stripped,
            &mut b,
        )
        .unwrap();
        assert_eq!(a, b);
        assert!(insert_standard_huffman_tables(b"\xff\xd8\xff\xd9").is_none());
        assert!(has_huffman_tables(b"garbage"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Any stream (marker bytes made common): every call ends, a picture is SOI..EOI
        /// within the limit, and each call consumes input (no spin on the same bytes).
        #[test]
        fn any_stream_splits_or_errors(
            data in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u8>(),
                    proptest::prelude::Just(0xFFu8),
                    proptest::prelude::Just(0xD8u8),
                    proptest::prelude::Just(0xD9u8),
                    proptest::prelude::Just(0xDAu8),
                    proptest::prelude::Just(0x00u8),
                ],
                0..400,
            ),
            max in 2usize..300,
        ) {
            let mut r = io::BufReader::with_capacity(16, &data[..]);
            for _ in 0..=data.len() {
                let before = r.get_ref().len() + r.buffer().len();
                match read_jpeg(&mut r, max) {
                    Ok(None) => break,
                    Ok(Some(j)) => {
                        proptest::prop_assert!(j.len() <= max);
                        proptest::prop_assert_eq!(&j[..2], &[0xFF, 0xD8]);
                        proptest::prop_assert_eq!(&j[j.len() - 2..], &[0xFF, 0xD9]);
                    }
                    Err(_) => {}
                }
                let after = r.get_ref().len() + r.buffer().len();
                proptest::prop_assert!(after < before || after == 0, "no progress");
                if after == 0 {
                    break;
                }
            }
            let _ = has_huffman_tables(&data);
            let _ = insert_standard_huffman_tables(&data);
        }
    }
}
