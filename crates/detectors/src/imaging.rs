//! Image preprocessing as transformers' default (torchvision-backed) `OwlViTImageProcessor` and
//! `Owlv2ImageProcessor` do it.
//!
//! * OWL-ViT: resize the 8-bit image to `s × s` with antialiased bicubic as torchvision does it on
//!   `uint8` tensors ([`resize_bicubic_u8_torch`]: PIL's filter and support, but int16 weights
//!   with a precision chosen per axis, so up to one level away from PIL's result; the aspect ratio is not kept), then `(v/255 − mean) / std`
//!   with OpenAI CLIP's mean and std.
//! * OWLv2: `v · (1/255)` in f32, pad bottom and right to a square with `pad_value` (transformers
//!   5 pads with 0.0 after rescaling, i.e. black; the original OWLv2 code pads with gray 0.5),
//!   Gaussian blur with σ = (factor − 1)/2 (kernel `2⌈3σ⌉ + 1`, reflect borders) when
//!   downscaling by `factor`, bilinear resize without antialiasing (half-pixel centres), then
//!   `(v − mean) / std`.

use image::RgbImage;

use crate::error::{Error, Result};
use crate::owl::OwlVariant;

/// OpenAI CLIP's per-channel mean.
#[allow(clippy::excessive_precision)] // the literals of transformers' OPENAI_CLIP_MEAN
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel standard deviation.
#[allow(clippy::excessive_precision)] // the literals of transformers' OPENAI_CLIP_STD
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// `3 × size × size` f32 pixels (channel-major) for `variant`.
pub fn preprocess(
    image: &RgbImage,
    variant: OwlVariant,
    size: usize,
    pad_value: f32,
) -> Result<Vec<f32>> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return Err(Error::Input("empty image".into()));
    }
    if size == 0 {
        return Err(Error::Input("zero target size".into()));
    }
    Ok(match variant {
        OwlVariant::OwlVit => owlvit(image, size),
        OwlVariant::Owlv2 => owlv2(image, size, pad_value),
    })
}

fn owlvit(image: &RgbImage, size: usize) -> Vec<f32> {
    let resized = resize_bicubic_u8_torch(image, size, size);
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in resized.pixels().enumerate() {
        for c in 0..3 {
            // transformers fuses rescale and normalise: (v − 255·mean) / (255·std).
            let m = CLIP_MEAN[c] * 255.0;
            let s = CLIP_STD[c] * 255.0;
            out[c * plane + i] = (px.0[c] as f32 - m) / s;
        }
    }
    out
}

fn owlv2(image: &RgbImage, size: usize, pad_value: f32) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let side = w.max(h);
    let scale = (1.0f64 / 255.0) as f32;
    let mut planes = vec![vec![pad_value; side * side]; 3];
    for (x, y, px) in image.enumerate_pixels() {
        for (c, plane) in planes.iter_mut().enumerate() {
            plane[y as usize * side + x as usize] = px.0[c] as f32 * scale;
        }
    }
    let factor = side as f32 / size as f32;
    let sigma = ((factor - 1.0) / 2.0).max(0.0);
    let mut out = Vec::with_capacity(3 * size * size);
    for (c, plane) in planes.iter().enumerate() {
        let blurred = if sigma > 0.0 {
            gaussian_blur(plane, side, sigma)
        } else {
            plane.clone()
        };
        let resized = bilinear(&blurred, side, size);
        out.extend(
            resized
                .into_iter()
                .map(|v| (v - CLIP_MEAN[c]) / CLIP_STD[c]),
        );
    }
    out
}

/// Bicubic (`a = −0.5`) filter of PIL / torch's antialiased resize.
fn bicubic_filter(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Per output index: first input index and int16-style fixed-point weights, plus the precision,
/// as torch's `_compute_index_ranges_int16_weights` (antialiased bicubic).
fn aa_int_weights(input: usize, output: usize) -> (u32, Vec<(usize, Vec<i32>)>) {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let mut float_weights = Vec::with_capacity(output);
    let mut w_max = 0f64;
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        let xmin = ((center - support + 0.5) as isize).max(0) as usize;
        let xmax = ((center + support + 0.5) as isize)
            .min(input as isize)
            .max(0) as usize;
        let mut w: Vec<f64> = (xmin..xmax)
            .map(|x| bicubic_filter((x as f64 - center + 0.5) / filterscale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        w_max = w.iter().copied().fold(w_max, f64::max);
        float_weights.push((xmin, w));
    }
    let mut precision = 0u32;
    while precision < 22 {
        let next = (0.5 + w_max * f64::from(1u32 << (precision + 1))) as i64;
        if next >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let one = f64::from(1u32 << precision);
    let ints = float_weights
        .into_iter()
        .map(|(xmin, w)| {
            let w = w
                .into_iter()
                .map(|v| {
                    let v = v * one;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            (xmin, w)
        })
        .collect();
    (precision, ints)
}

/// Horizontal pass: `rows` rows of `input` RGB pixels → rows of `output` pixels.
fn aa_horizontal(src: &[u8], rows: usize, input: usize, output: usize) -> Vec<u8> {
    let (precision, weights) = aa_int_weights(input, output);
    let round = if precision > 0 {
        1i64 << (precision - 1)
    } else {
        0
    };
    let mut out = vec![0u8; rows * output * 3];
    for y in 0..rows {
        for (x, (xmin, w)) in weights.iter().enumerate() {
            for c in 0..3 {
                let acc = w.iter().enumerate().fold(round, |acc, (k, &wk)| {
                    acc + i64::from(wk) * i64::from(src[(y * input + xmin + k) * 3 + c])
                });
                out[(y * output + x) * 3 + c] = (acc >> precision).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// Vertical pass: `input` rows of `width` RGB pixels → `output` rows.
fn aa_vertical(src: &[u8], width: usize, input: usize, output: usize) -> Vec<u8> {
    let (precision, weights) = aa_int_weights(input, output);
    let round = if precision > 0 {
        1i64 << (precision - 1)
    } else {
        0
    };
    let mut out = vec![0u8; output * width * 3];
    for (y, (ymin, w)) in weights.iter().enumerate() {
        for x in 0..width {
            for c in 0..3 {
                let acc = w.iter().enumerate().fold(round, |acc, (k, &wk)| {
                    acc + i64::from(wk) * i64::from(src[((ymin + k) * width + x) * 3 + c])
                });
                out[(y * width + x) * 3 + c] = (acc >> precision).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// Antialiased bicubic resize of an 8-bit image as torch / torchvision compute it on `uint8`
/// tensors (horizontal pass, then vertical, each rounded to 8 bits).
pub fn resize_bicubic_u8_torch(image: &RgbImage, width: usize, height: usize) -> RgbImage {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut data = image.as_raw().clone();
    let mut cur_w = w;
    if width != w {
        data = aa_horizontal(&data, h, w, width);
        cur_w = width;
    }
    if height != h {
        data = aa_vertical(&data, cur_w, h, height);
    }
    RgbImage::from_raw(width as u32, height as u32, data)
        .unwrap_or_else(|| RgbImage::new(width as u32, height as u32))
}

/// torchvision's Gaussian kernel: `softmax(−(x/σ)²)` over `linspace(−lim, lim, k)`,
/// `lim = (k − 1) / (2√2)`, `k = 2⌈3σ⌉ + 1`.
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let k = 2 * (3.0 * sigma).ceil() as usize + 1;
    let lim = (k as f32 - 1.0) / (2.0 * std::f32::consts::SQRT_2);
    let xs: Vec<f32> = (0..k)
        .map(|i| {
            if k == 1 {
                -lim
            } else {
                -lim + (2.0 * lim) * i as f32 / (k - 1) as f32
            }
        })
        .collect();
    let e: Vec<f32> = xs.iter().map(|x| -(x / sigma).powi(2)).collect();
    let max = e.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let ex: Vec<f32> = e.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = ex.iter().sum();
    ex.into_iter().map(|v| v / sum).collect()
}

/// Index `i` (possibly outside `0..n`) reflected as torch's `reflect` padding does.
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let mut i = i.rem_euclid(period);
    if i >= n {
        i = period - i;
    }
    i as usize
}

/// Separable Gaussian blur of a `side × side` plane with reflect borders.
fn gaussian_blur(plane: &[f32], side: usize, sigma: f32) -> Vec<f32> {
    let kernel = gaussian_kernel(sigma);
    let r = (kernel.len() / 2) as isize;
    let mut tmp = vec![0f32; side * side];
    for y in 0..side {
        for x in 0..side {
            let mut acc = 0f32;
            for (j, k) in kernel.iter().enumerate() {
                let xx = reflect(x as isize + j as isize - r, side);
                acc += k * plane[y * side + xx];
            }
            tmp[y * side + x] = acc;
        }
    }
    let mut out = vec![0f32; side * side];
    for y in 0..side {
        for x in 0..side {
            let mut acc = 0f32;
            for (j, k) in kernel.iter().enumerate() {
                let yy = reflect(y as isize + j as isize - r, side);
                acc += k * tmp[yy * side + x];
            }
            out[y * side + x] = acc;
        }
    }
    out
}

/// Source index and weight of torch's bilinear `align_corners=False` sampling.
fn bilinear_taps(out: usize, input: usize) -> Vec<(usize, usize, f32)> {
    let scale = input as f32 / out as f32;
    (0..out)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = (i0 + 1).min(input - 1);
            (i0, i1, src - i0 as f32)
        })
        .collect()
}

/// Bilinear resize of a `side × side` plane to `size × size` (no antialiasing).
fn bilinear(plane: &[f32], side: usize, size: usize) -> Vec<f32> {
    let taps = bilinear_taps(size, side);
    let mut out = Vec::with_capacity(size * size);
    for &(y0, y1, ly) in &taps {
        for &(x0, x1, lx) in &taps {
            let top = plane[y0 * side + x0] * (1.0 - lx) + plane[y0 * side + x1] * lx;
            let bottom = plane[y1 * side + x0] * (1.0 - lx) + plane[y1 * side + x1] * lx;
            out.push(top * (1.0 - ly) + bottom * ly);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_matches_torch() {
        let n = 5;
        let got: Vec<usize> = (-3..8).map(|i| reflect(i, n)).collect();
        assert_eq!(got, vec![3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]);
    }

    #[test]
    fn kernel_sums_to_one() {
        let k = gaussian_kernel(0.8);
        assert_eq!(k.len(), 2 * 3 + 1);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
