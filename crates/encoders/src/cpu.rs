//! CPU fast path for the transformer blocks in [`crate::nn`].
//!
//! candle runs a block as a dozen separate ops, each a full pass over memory through its thread
//! pool. On the CPU this module runs the same maths directly on the tensors' f32 buffers:
//!
//! * linear layers call `gemm` with the bias (and, for the projections that close a residual
//!   branch, the residual itself) preloaded into the output, so adds cost no extra pass;
//! * attention reads Q, K and V in place from the fused QKV output through strides, one
//!   `(image, head)` pair per task, with a row softmax between the two matmuls and the context
//!   written straight into its final `(tokens, dim)` layout: no permute or transpose copies;
//! * LayerNorm, exact (erf) GELU, quick GELU, SiLU and softmax are vectorisable loops (AVX2+FMA
//!   when the CPU has it) over rows in parallel.
//!
//! [`View`] borrows a CPU f32 tensor's buffer; callers fall back to candle ops when it is `None`
//! (other devices or dtypes).

use candle_core::{CpuStorage, Storage, StorageRef, Tensor};
use rayon::prelude::*;

/// A borrowed, contiguous f32 CPU tensor buffer.
pub struct View<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> View<'a> {
    /// The buffer of `t` if it is a contiguous f32 CPU tensor.
    pub fn of(t: &'a Tensor) -> Option<Self> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout.contiguous_offsets()?;
        matches!(&*guard, Storage::Cpu(CpuStorage::F32(_))).then_some(Self { guard, start, end })
    }

    /// The elements.
    pub fn slice(&self) -> &[f32] {
        match &*self.guard {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => &[],
        }
    }
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// Rows per parallel task for row-wise kernels over `cols`-wide rows.
fn rows_per_task(rows: usize, cols: usize) -> usize {
    let per_thread = rows.div_ceil(threads() * 4).max(1);
    per_thread.max(4096 / cols.max(1)).max(1)
}

/// `dst (m×n) = [dst +] a (m×k) · b (k×n)`, all row-major.
pub fn matmul(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    let parallelism = if threads() > 1 {
        gemm::Parallelism::Rayon(threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every access inside the three slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `x (rows×k) · w_t (k×n) + bias [+ residual]`.
pub fn linear(
    x: &[f32],
    w_t: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let rows = x.len() / k;
    let mut out = match residual {
        Some(r) => r.to_vec(),
        None => vec![0f32; rows * n],
    };
    if let Some(b) = bias {
        let chunk = rows_per_task(rows, n) * n;
        out.par_chunks_mut(chunk).for_each(|rows| {
            for row in rows.chunks_exact_mut(n) {
                for (o, b) in row.iter_mut().zip(b) {
                    *o += b;
                }
            }
        });
    }
    let accumulate = bias.is_some() || residual.is_some();
    matmul(&mut out, x, w_t, rows, k, n, accumulate);
    out
}

/// Row-wise LayerNorm.
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> Vec<f32> {
    let d = weight.len();
    let mut out = vec![0f32; x.len()];
    let chunk = rows_per_task(x.len() / d, d) * d;
    out.par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk))
        .for_each(|(out, x)| {
            for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                let mean = sum(x) / d as f32;
                for (o, x) in o.iter_mut().zip(x) {
                    *o = x - mean;
                }
                let var = sum_squares(o) / d as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                for ((o, w), b) in o.iter_mut().zip(weight).zip(bias) {
                    *o = *o * rstd * w + b;
                }
            }
        });
    out
}

/// Runs `f` over `xs` in parallel chunks, with AVX2+FMA code generation where available.
macro_rules! elementwise {
    ($name:ident, $impl:ident) => {
        pub fn $name(xs: &mut [f32]) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn fast(xs: &mut [f32]) {
                $impl(xs)
            }
            #[cfg(target_arch = "x86_64")]
            let simd =
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            #[cfg(not(target_arch = "x86_64"))]
            let simd = false;
            xs.par_chunks_mut(16 * 1024).for_each(|c| {
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: the CPU supports AVX2 and FMA (checked above).
                    return unsafe { fast(c) };
                }
                let _ = simd;
                $impl(c)
            });
        }
    };
}

/// `e^x` for `x` in about [−87, 88], within 2 ulp (Cephes polynomial), branch-free so loops vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // max/min (not clamp) map NaN to a bound, so the conversion below is always in range.
    #[allow(clippy::manual_clamp)] // clamp keeps NaN, which would make the cast below UB
    let x = x.max(-87.0).min(88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // SAFETY: n is an integer in [-126, 127] because x was bounded above.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    e * f32::from_bits(((n + 127) as u32) << 23)
}

/// erf(x), absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn gelu_erf_impl(xs: &mut [f32]) {
    for x in xs {
        *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

#[inline(always)]
fn quick_gelu_impl(xs: &mut [f32]) {
    for x in xs {
        *x /= 1.0 + exp(-1.702 * *x);
    }
}

elementwise!(gelu_erf, gelu_erf_impl);
elementwise!(quick_gelu, quick_gelu_impl);

/// `silu(gate) · up` for rows laid out as `[gate | up]` (width `2·h`) → rows of width `h`.
pub fn swiglu(x: &[f32], h: usize) -> Vec<f32> {
    let rows = x.len() / (2 * h);
    let mut out = vec![0f32; rows * h];
    out.par_chunks_mut(h)
        .zip(x.par_chunks(2 * h))
        .for_each(|(o, x)| {
            let (gate, up) = x.split_at(h);
            for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + exp(-g)) * u;
            }
        });
    out
}

/// Lanes for reductions: independent accumulators let the compiler vectorise them.
const LANES: usize = 16;

#[inline(always)]
fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_squares(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
    for c in chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x * x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn softmax_impl(row: &mut [f32]) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (m, x) in lanes.iter_mut().zip(c) {
            *m = if *x > *m { *x } else { *m };
        }
    }
    let max = lanes.iter().copied().fold(tail, f32::max);
    for x in row.iter_mut() {
        *x = exp(*x - max);
    }
    let inv = 1.0 / sum(row);
    for x in row.iter_mut() {
        *x *= inv;
    }
}

fn softmax_row(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn fast(row: &mut [f32]) {
            softmax_impl(row)
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA.
            return unsafe { fast(row) };
        }
    }
    softmax_impl(row)
}

/// Bytes of attention scores one task keeps at a time (a block of query rows × every key).
const ATTENTION_BLOCK_BYTES: usize = 1 << 21;

/// Multi-head attention over fused QKV rows.
///
/// `qkv`: `(batch·seq) × 3·dim` with Q (already scaled), K, V side by side; returns the context,
/// `(batch·seq) × dim`. With `causal`, token `i` attends to tokens `0..=i` only.
pub fn attention(
    qkv: &[f32],
    batch: usize,
    seq: usize,
    heads: usize,
    dim: usize,
    causal: bool,
) -> Vec<f32> {
    // Query rows are taken in blocks whose scores (rows × seq) stay in cache, instead of one
    // seq × seq matrix: rows are independent (each softmax sees every key), so the result is the
    // same, and a long sequence (OWLv2: 3601 tokens, a 52 MB matrix per head) no longer streams
    // through memory. Short sequences (ViT at 224 px: 257 tokens) fit in one block.
    let rows = (ATTENTION_BLOCK_BYTES / (4 * seq.max(1))).max(16);
    attention_in_blocks(qkv, batch, seq, heads, dim, causal, rows)
}

/// [`attention`] with the scores of at most `rows` query rows at a time.
fn attention_in_blocks(
    qkv: &[f32],
    batch: usize,
    seq: usize,
    heads: usize,
    dim: usize,
    causal: bool,
    rows: usize,
) -> Vec<f32> {
    let hd = dim / heads;
    assert_eq!(qkv.len(), batch * seq * 3 * dim);
    let mut ctx = vec![0f32; batch * seq * dim];
    let ctx_ptr = ctx.as_mut_ptr() as usize;
    let qkv_row = (3 * dim) as isize;
    let rows = rows.clamp(1, seq.max(1));
    (0..batch * heads).into_par_iter().for_each_init(
        || vec![0f32; rows * seq],
        |scores, task| {
            let (b, h) = (task / heads, task % heads);
            let base = b * seq * 3 * dim + h * hd;
            let (q, k, v) = (&qkv[base..], &qkv[base + dim..], &qkv[base + 2 * dim..]);
            for start in (0..seq).step_by(rows) {
                let m = rows.min(seq - start);
                let block = &mut scores[..m * seq];
                let q = &q[start * 3 * dim..];
                // SAFETY: q/k/v index rows 0..seq with stride 3·dim and columns 0..hd inside
                // this image's block of `qkv` (q from row `start`, m rows); `block` is m×seq;
                // each task writes only rows b·seq+start..b·seq+start+m, columns h·hd..(h+1)·hd
                // of `ctx`, so tasks never overlap.
                unsafe {
                    gemm::gemm(
                        m,
                        seq,
                        hd,
                        block.as_mut_ptr(),
                        1,
                        seq as isize,
                        false,
                        q.as_ptr(),
                        1,
                        qkv_row,
                        k.as_ptr(),
                        qkv_row,
                        1,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
                for (r, row) in block.chunks_exact_mut(seq).enumerate() {
                    let i = start + r;
                    if causal {
                        softmax_row(&mut row[..=i]);
                        row[i + 1..].fill(0.0);
                    } else {
                        softmax_row(row);
                    }
                }
                let out = (ctx_ptr as *mut f32).wrapping_add((b * seq + start) * dim + h * hd);
                // SAFETY: see above.
                unsafe {
                    gemm::gemm(
                        m,
                        hd,
                        seq,
                        out,
                        1,
                        dim as isize,
                        false,
                        block.as_ptr(),
                        1,
                        seq as isize,
                        v.as_ptr(),
                        1,
                        qkv_row,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
        },
    );
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention in f64, one query row at a time: the definition.
    fn reference(qkv: &[f32], seq: usize, heads: usize, dim: usize, causal: bool) -> Vec<f64> {
        let hd = dim / heads;
        let at = |t: usize, part: usize, h: usize, c: usize| {
            f64::from(qkv[t * 3 * dim + part * dim + h * hd + c])
        };
        let mut out = vec![0f64; seq * dim];
        for h in 0..heads {
            for i in 0..seq {
                let keys = if causal { i + 1 } else { seq };
                let scores: Vec<f64> = (0..keys)
                    .map(|j| (0..hd).map(|c| at(i, 0, h, c) * at(j, 1, h, c)).sum())
                    .collect();
                let max = scores.iter().copied().fold(f64::MIN, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for c in 0..hd {
                    out[i * dim + h * hd + c] =
                        (0..keys).map(|j| weights[j] * at(j, 2, h, c)).sum::<f64>() / total;
                }
            }
        }
        out
    }

    #[test]
    fn attention_in_row_blocks_is_attention() {
        let (seq, heads, dim) = (203, 2, 32);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let qkv: Vec<f32> = (0..seq * 3 * dim)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        for causal in [false, true] {
            let expected = reference(&qkv, seq, heads, dim, causal);
            let whole = attention_in_blocks(&qkv, 1, seq, heads, dim, causal, seq);
            for rows in [1, 16, 64, 200, 203, 500] {
                let blocked = attention_in_blocks(&qkv, 1, seq, heads, dim, causal, rows);
                for (i, (b, w)) in blocked.iter().zip(&whole).enumerate() {
                    assert!((b - w).abs() <= 1e-6, "rows {rows} causal {causal} at {i}");
                    assert!((f64::from(*b) - expected[i]).abs() < 1e-5, "at {i}");
                }
            }
        }
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -8000..=2000 {
            let x = i as f32 * 0.01;
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            assert!(rel < 3e-7, "exp({x}): rel {rel:e}");
        }
        let mut worst = 0f64;
        for i in -600..=600 {
            let x = i as f32 * 0.01;
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            worst = worst.max((erf(x) as f64 - want).abs());
        }
        assert!(worst < 5e-7, "erf: max abs error {worst:e}");
    }
}
