//! Hot elementwise kernels.
//!
//! Exact (erf) GELU is the one elementwise op that shows up in profiles; this module keeps its
//! implementation in one place so it can be swapped for a faster one without touching the models.

use candle_core::Tensor;

use crate::error::Result;

/// Exact GELU, `x · Φ(x)` with the erf-based normal CDF (HF `gelu`, torch `nn.GELU()`).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu_erf()?)
}
