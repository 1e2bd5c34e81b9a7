//! PIL's antialiased bicubic resize (`Image.resize(size, Image.BICUBIC)` on an 8-bit RGB image),
//! reimplemented from the algorithm description in Pillow's `Resample.c`.
//!
//! - Separable convolution with the cubic kernel, `a = −0.5`, support 2.
//! - When shrinking, the kernel is stretched by the reduction factor `scale = in / out` (support
//!   `2·scale`), which is what makes it antialiased; when enlarging, `scale` is clamped to 1.
//! - Output pixel `i` is centred at `(i + 0.5)·scale` in input coordinates; taps run over
//!   `[trunc(centre − support + 0.5), trunc(centre + support + 0.5))` clamped to the image, weights
//!   `k((j − centre + 0.5)/filterscale)` normalised to sum 1 (in `f64`).
//! - Weights are converted to fixed point with 22 fractional bits, rounding half away from zero;
//!   accumulation starts at `2^21` (rounding), results are `>> 22` (floor) and clamped to 0..255.
//! - Horizontal pass first (only on the rows the vertical pass needs), stored as 8-bit, then the
//!   vertical pass. A pass whose size does not change is skipped; equal sizes return a copy.

use image::RgbImage;

const PRECISION_BITS: u32 = 22;
const SUPPORT: f64 = 2.0;

/// The cubic convolution kernel with `a = −0.5` (Keys), as PIL's `bicubic_filter`.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point taps of one output position: first input index and integer weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// PIL's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the box `[0, in_size)`.
fn coefficients(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // `(int)` in C truncates toward zero; negative values are clamped to 0 anyway.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let count = xmax.saturating_sub(xmin);
            let raw: Vec<f64> = (0..count)
                .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    if w < 0.0 {
                        (scaled - 0.5) as i32
                    } else {
                        (scaled + 0.5) as i32
                    }
                })
                .collect();
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const ROUNDING: i32 = 1 << (PRECISION_BITS - 1);

/// Resizes an 8-bit RGB image to `width × height` exactly as PIL's
/// `Image.resize((width, height), Image.BICUBIC)` does (bit-exact; see the module docs).
///
/// A zero target dimension or an empty input yields an empty image of the requested size.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) {
        return img.clone();
    }
    if out_w == 0 || out_h == 0 || in_w == 0 || in_h == 0 {
        return RgbImage::new(width, height);
    }
    let need_horizontal = out_w != in_w;
    let need_vertical = out_h != in_h;
    let vertical = coefficients(in_h, out_h);
    let src = img.as_raw();

    // Horizontal pass over the rows [first_row, last_row) the vertical pass will read.
    let (first_row, last_row) = if need_vertical {
        let first = vertical.first().map_or(0, |t| t.start);
        let last = vertical.last().map_or(in_h, |t| t.start + t.weights.len());
        (first, last)
    } else {
        (0, in_h)
    };
    let (temp, temp_first_row): (Vec<u8>, usize) = if need_horizontal {
        let horizontal = coefficients(in_w, out_w);
        let rows = last_row - first_row;
        let mut out = vec![0u8; rows * out_w * 3];
        for (r, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
            let in_row = &src[(first_row + r) * in_w * 3..(first_row + r + 1) * in_w * 3];
            for (taps, px) in horizontal.iter().zip(out_row.chunks_exact_mut(3)) {
                let (mut s0, mut s1, mut s2) = (ROUNDING, ROUNDING, ROUNDING);
                let window = &in_row[taps.start * 3..(taps.start + taps.weights.len()) * 3];
                for (&k, p) in taps.weights.iter().zip(window.chunks_exact(3)) {
                    s0 += i32::from(p[0]) * k;
                    s1 += i32::from(p[1]) * k;
                    s2 += i32::from(p[2]) * k;
                }
                px[0] = clip8(s0);
                px[1] = clip8(s1);
                px[2] = clip8(s2);
            }
        }
        (out, first_row)
    } else {
        (src.clone(), 0)
    };

    let out = if need_vertical {
        let line = out_w * 3;
        let mut out = vec![0u8; out_h * line];
        for (taps, out_row) in vertical.iter().zip(out.chunks_exact_mut(line)) {
            let base = taps.start - temp_first_row;
            for (x, px) in out_row.iter_mut().enumerate() {
                let mut s = ROUNDING;
                for (j, &k) in taps.weights.iter().enumerate() {
                    s += i32::from(temp[(base + j) * line + x]) * k;
                }
                *px = clip8(s);
            }
        }
        out
    } else {
        temp
    };
    // The buffer length is out_w·out_h·3 by construction.
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| RgbImage::new(width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_matches_keys_a_minus_half() {
        assert_eq!(bicubic(0.0), 1.0);
        assert_eq!(bicubic(1.0), 0.0);
        assert_eq!(bicubic(2.0), 0.0);
        assert!((bicubic(0.5) - 0.5625).abs() < 1e-15);
        assert!((bicubic(1.5) + 0.0625).abs() < 1e-15);
    }

    #[test]
    fn identity_and_constant() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 200]));
        assert_eq!(resize_bicubic(&img, 7, 5), img);
        let flat = RgbImage::from_pixel(13, 9, image::Rgb([17, 128, 250]));
        for (w, h) in [(5, 4), (31, 20), (13, 3), (2, 9), (1, 1)] {
            let out = resize_bicubic(&flat, w, h);
            assert!(out.pixels().all(|p| p.0 == [17, 128, 250]), "{w}x{h}");
        }
    }
}
