//! Decoding files to 8-bit RGB with the semantics of PIL's `Image.open(path).convert("RGB")`.

use std::io::Cursor;
use std::path::Path;

use image::RgbImage;
use png::{BitDepth, ColorType, Transformations};

use crate::{Error, jpeg};

/// Largest decoded buffer we accept (bytes), a guard against decompression bombs. PIL warns at
/// about 89 Mpixel and refuses at twice that; 1 GiB covers 16-bit RGBA at 89 Mpixel.
const MAX_DECODED_BYTES: usize = 1 << 30;

/// The container format of an input file, detected from its first bytes (not its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// PNG: decoded exactly like PIL (bit for bit).
    Png,
    /// JPEG: decoded with libjpeg(-turbo)'s own decoder set up as PIL sets it up (bit for bit
    /// on the files measured, see the crate documentation).
    Jpeg,
}

impl Format {
    /// Detects the format from the file's magic bytes.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else {
            None
        }
    }
}

/// Reads and decodes an image file to 8-bit RGB the way PIL's
/// `Image.open(path).convert("RGB")` does (see the crate documentation for the per-mode rules).
///
/// Errors name the file.
pub fn open_rgb(path: &Path) -> Result<RgbImage, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_rgb(&bytes, path)
}

/// Decodes an in-memory PNG or JPEG file to 8-bit RGB with PIL `convert("RGB")` semantics.
/// `name` is used in error messages only.
pub fn decode_rgb(bytes: &[u8], name: &Path) -> Result<RgbImage, Error> {
    match Format::sniff(bytes) {
        Some(Format::Png) => decode_png(bytes).map_err(|reason| Error::Decode {
            path: name.to_path_buf(),
            reason,
        }),
        Some(Format::Jpeg) => decode_jpeg(bytes).map_err(|reason| Error::Decode {
            path: name.to_path_buf(),
            reason,
        }),
        None => Err(Error::UnsupportedFormat {
            path: name.to_path_buf(),
        }),
    }
}

fn build(width: u32, height: u32, rgb: Vec<u8>) -> Result<RgbImage, String> {
    RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| format!("decoded buffer does not match {width}x{height}"))
}

/// PNG, following PIL's `PngImagePlugin` modes and `Convert.c`:
/// - 8-bit RGB / RGBA / gray / gray+alpha: channels as stored, alpha dropped (not composited);
/// - palette (any bit depth, with or without `tRNS`): palette lookup, transparency ignored;
/// - 1/2/4-bit gray: scaled to 0..255 (PIL's `1`, `L;2`, `L;4` unpackers);
/// - 16-bit gray (PIL mode `I;16`): `I;16`→RGB clips, `v > 255 → 255`, else `v`;
/// - 16-bit RGB / RGBA / gray+alpha (PIL rawmodes `RGB;16B`, `RGBA;16B`, `LA;16B`): the
///   most significant byte (truncation, not rounding).
fn decode_png(bytes: &[u8]) -> Result<RgbImage, String> {
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: MAX_DECODED_BYTES,
        },
    );
    // EXPAND: palette → RGB(A) through PLTE/tRNS, low-bit gray → 8-bit (scaled), tRNS → alpha.
    // 16-bit samples stay 16-bit (big-endian) so that we can apply PIL's own reduction.
    decoder.set_transformations(Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let source_color = reader.info().color_type;
    let (color, depth) = reader.output_color_type();
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| "image too large".to_string())?;
    if size > MAX_DECODED_BYTES {
        return Err(format!("image too large ({size} decoded bytes)"));
    }
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let (width, height) = (frame.width, frame.height);
    let line = frame.line_size;
    let channels = color.samples();
    let sample_bytes = match depth {
        BitDepth::Sixteen => 2,
        BitDepth::Eight => 1,
        other => return Err(format!("unexpected bit depth {other:?} after expansion")),
    };
    let gray16 = sample_bytes == 2 && source_color == ColorType::Grayscale;
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for row in buf.chunks(line).take(height as usize) {
        for px in row
            .chunks_exact(channels * sample_bytes)
            .take(width as usize)
        {
            // The (most significant) byte of sample `c`.
            let msb = |c: usize| px[c * sample_bytes];
            match color {
                ColorType::Rgb | ColorType::Rgba => {
                    rgb.extend_from_slice(&[msb(0), msb(1), msb(2)])
                }
                ColorType::Grayscale | ColorType::GrayscaleAlpha => {
                    let v = if gray16 {
                        // PIL mode I;16 → RGB: clip to 255 (I16_RGB in Convert.c).
                        if px[0] != 0 { 255 } else { px[1] }
                    } else {
                        msb(0)
                    };
                    rgb.extend_from_slice(&[v, v, v]);
                }
                ColorType::Indexed => return Err("palette was not expanded".to_string()),
            }
        }
    }
    build(width, height, rgb)
}

/// JPEG through libjpeg ([`jpeg::decode`], set up like PIL's decoder), then PIL's
/// `convert("RGB")`: L replicated; CMYK read as rawmode `CMYK;I` (Adobe polarity: inverted),
/// then `cmyk2rgb`.
fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, String> {
    let d = jpeg::decode(bytes, MAX_DECODED_BYTES)?;
    let rgb = match d.components {
        1 => d.pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        3 => d.pixels,
        4 => d
            .pixels
            .chunks_exact(4)
            .flat_map(|p| cmyk_to_rgb([255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]]))
            .collect(),
        n => return Err(format!("unexpected {n} decoded components")),
    };
    build(d.width, d.height, rgb)
}

/// PIL's `cmyk2rgb` (Convert.c): `nk = 255 − k; out = clip8(nk − muldiv255(c, nk))` where
/// `muldiv255(a, b) = ((a·b + 128) >> 8 + a·b + 128) >> 8` (a rounded `a·b/255`).
pub fn cmyk_to_rgb(cmyk: [u8; 4]) -> [u8; 3] {
    let nk = 255 - i32::from(cmyk[3]);
    let channel = |c: u8| {
        let t = i32::from(c) * nk + 128;
        let prod = ((t >> 8) + t) >> 8;
        (nk - prod).clamp(0, 255) as u8
    };
    [channel(cmyk[0]), channel(cmyk[1]), channel(cmyk[2])]
}
