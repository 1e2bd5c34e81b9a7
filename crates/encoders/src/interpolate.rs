//! Bicubic resampling of position-embedding tables.
//!
//! ViTs store one position embedding per patch of their training resolution (DINOv2: 37×37 at
//! 518 px). At another resolution the table is resampled with PyTorch's bicubic `interpolate`
//! (cubic convolution, a = −0.75, `align_corners=False`, indices clamped to the edge). The two
//! implementations this crate reproduces differ only in the coordinate scale:
//!
//! * [`Interpolation::TorchHub`]: the original DINO/DINOv2 code (`torch.hub`, what the paper ran)
//!   passes `scale_factor = (n + 0.1) / M`, so a destination index maps to the source coordinate
//!   `(dst + 0.5) · M / (n + 0.1) − 0.5`;
//! * [`Interpolation::Hf`]: transformers passes `size = n`, so the scale is `M / n`.
//!
//! The arithmetic follows PyTorch's CPU kernel (f32, scale computed in f64 then rounded to f32) so
//! results agree to rounding.

use serde::{Deserialize, Serialize};

/// How position tables are resampled to a new grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// torch-hub DINO/DINOv2: `scale_factor = (n + 0.1) / M` (paper-exact; the default).
    #[default]
    TorchHub,
    /// transformers: `size = (n, n)`.
    Hf,
}

impl Interpolation {
    /// A short stable name (for identities and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TorchHub => "torch_hub",
            Self::Hf => "hf",
        }
    }

    /// The source-per-destination scale for `src → dst` samples (PyTorch's `compute_scales_value`).
    fn scale(self, src: usize, dst: usize) -> f32 {
        match self {
            Self::TorchHub => {
                let scale_factor = (dst as f64 + 0.1) / src as f64;
                (1.0 / scale_factor) as f32
            }
            Self::Hf => src as f32 / dst as f32,
        }
    }
}

const A: f32 = -0.75;

fn cubic_weights(t: f32) -> [f32; 4] {
    // PyTorch's get_cubic_upsample_coefficients.
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Per destination index: four clamped source indices and their weights.
fn taps(mode: Interpolation, src: usize, dst: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = mode.scale(src, dst);
    (0..dst)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let base = real.floor();
            let t = real - base;
            let base = base as i64;
            let idx =
                std::array::from_fn(|k| (base - 1 + k as i64).clamp(0, src as i64 - 1) as usize);
            (idx, cubic_weights(t))
        })
        .collect()
}

/// Resamples a row-major `src × src × dim` table to `rows × cols × dim`.
pub fn resize_table(
    table: &[f32],
    src: usize,
    dim: usize,
    rows: usize,
    cols: usize,
    mode: Interpolation,
) -> Vec<f32> {
    debug_assert_eq!(table.len(), src * src * dim);
    let ty = taps(mode, src, rows);
    let tx = taps(mode, src, cols);
    let mut out = vec![0f32; rows * cols * dim];
    let mut row_mix = vec![[0f32; 4]; dim];
    for (y, (iy, wy)) in ty.iter().enumerate() {
        for (x, (ix, wx)) in tx.iter().enumerate() {
            // As PyTorch: interpolate along x within each of the four rows, then along y.
            for (r, &sy) in iy.iter().enumerate() {
                let line = &table[sy * src * dim..(sy + 1) * src * dim];
                for (c, mix) in row_mix.iter_mut().enumerate() {
                    let p = |k: usize| line[ix[k] * dim + c];
                    mix[r] = p(0) * wx[0] + p(1) * wx[1] + p(2) * wx[2] + p(3) * wx[3];
                }
            }
            let dst = &mut out[(y * cols + x) * dim..(y * cols + x + 1) * dim];
            for (o, m) in dst.iter_mut().zip(&row_mix) {
                *o = m[0] * wy[0] + m[1] * wy[1] + m[2] * wy[2] + m[3] * wy[3];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_in_hf_mode_is_exact() {
        let table: Vec<f32> = (0..5 * 5 * 2).map(|i| i as f32 * 0.37 - 3.0).collect();
        let out = resize_table(&table, 5, 2, 5, 5, Interpolation::Hf);
        for (a, b) in table.iter().zip(&out) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn weights_sum_to_one() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let s: f32 = cubic_weights(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
    }
}
