//! Transformer building blocks shared by the three encoders.
//!
//! DINOv2, DINO v1 (HF `ViTModel`) and both CLIP towers are pre-norm transformers whose layers all
//! read `x += s1 · attn(norm1(x)); x += s2 · mlp(norm2(x))`; they differ only in tensor names,
//! activation, LayerNorm eps, the optional layer scales `s1`, `s2` (DINOv2) and the causal mask
//! (CLIP text). [`Block`] implements that layer once and is loaded through a [`BlockNames`] table.
//!
//! Weights are rearranged at load time for speed: linear weights are stored transposed
//! (`in × out`, so matmuls run on the fast layout), Q, K and V are fused into one matmul, and the
//! attention scale is folded into the query projection.

use candle_core::{D, DType, Device, Tensor};

use crate::checkpoint::Vb;
use crate::cpu::{self, View};
use crate::error::{Error, Result};

/// A linear layer `y = x Wᵀ + b` with `Wᵀ` stored contiguously.
#[derive(Debug, Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{name}.weight` (`out × in`) and, if `bias`, `{name}.bias`.
    pub fn load(vb: &Vb, name: &str, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let vb = vb.pp(name);
        let weight = vb.get(&[out_dim, in_dim], "weight")?;
        let bias = if bias {
            Some(vb.get(&[out_dim], "bias")?)
        } else {
            None
        };
        Self::from_parts(&weight, bias)
    }

    /// A layer from an `out × in` weight and an optional bias.
    pub fn from_parts(weight: &Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            bias,
        })
    }

    /// Concatenates layers along their outputs (used to fuse Q, K and V).
    pub fn concat(parts: &[Linear]) -> Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight_t).collect();
        let weight_t = Tensor::cat(&weights, 1)?;
        let bias = if parts.iter().all(|p| p.bias.is_some()) {
            let biases: Vec<&Tensor> = parts.iter().filter_map(|p| p.bias.as_ref()).collect();
            Some(Tensor::cat(&biases, 0)?)
        } else if parts.iter().any(|p| p.bias.is_some()) {
            let out: Result<Vec<Tensor>> = parts
                .iter()
                .map(|p| match &p.bias {
                    Some(b) => Ok(b.clone()),
                    None => Ok(Tensor::zeros(
                        p.weight_t.dim(1)?,
                        p.weight_t.dtype(),
                        p.weight_t.device(),
                    )?),
                })
                .collect();
            Some(Tensor::cat(&out?, 0)?)
        } else {
            None
        };
        Ok(Self { weight_t, bias })
    }

    /// Multiplies weight and bias by `factor` (folds a constant scale into the layer).
    pub fn scaled(self, factor: f64) -> Result<Self> {
        Ok(Self {
            weight_t: (self.weight_t * factor)?,
            bias: self.bias.map(|b| b * factor).transpose()?,
        })
    }

    /// Multiplies each output channel by `scale` (folds a layer scale into the layer).
    pub fn scale_outputs(self, scale: &Tensor) -> Result<Self> {
        Ok(Self {
            weight_t: self.weight_t.broadcast_mul(scale)?.contiguous()?,
            bias: self.bias.map(|b| b.mul(scale)).transpose()?,
        })
    }

    /// CPU path: `x` rows (`in` wide) → output rows, plus `residual` if given.
    fn forward_cpu(&self, x: &[f32], residual: Option<&[f32]>) -> Result<Vec<f32>> {
        let (k, n) = self.weight_t.dims2()?;
        let w = view(&self.weight_t)?;
        let b = self.bias.as_ref().map(view).transpose()?;
        Ok(cpu::linear(
            x,
            w.slice(),
            b.as_ref().map(View::slice),
            residual,
            k,
            n,
        ))
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight_t.dims()[1]
    }

    /// Applies the layer to `x` of shape `(rows, in)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight_t)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// LayerNorm over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// Loads `{name}.weight` and `{name}.bias`.
    pub fn load(vb: &Vb, name: &str, dim: usize, eps: f64) -> Result<Self> {
        let vb = vb.pp(name);
        Ok(Self {
            weight: vb.get(&[dim], "weight")?,
            bias: vb.get(&[dim], "bias")?,
            eps: eps as f32,
        })
    }

    fn forward_cpu(&self, x: &[f32]) -> Result<Vec<f32>> {
        let (w, b) = (view(&self.weight)?, view(&self.bias)?);
        Ok(cpu::layer_norm(x, w.slice(), b.slice(), self.eps))
    }

    /// Normalises `x` (any shape, last dimension `dim`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        Ok(candle_nn::ops::layer_norm(
            &x,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// Activation functions named as in HF configs (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact, erf-based.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: tanh approximation.
    GeluTanh,
    /// `quick_gelu`: `x · σ(1.702 x)` (CLIP).
    QuickGelu,
    /// `silu` / `swish`.
    Silu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// Parses an HF `hidden_act` value.
    pub fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            "relu" => Self::Relu,
            _ => return None,
        })
    }

    /// Applies the activation.
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Gelu => crate::fast::gelu_erf(x)?,
            Self::GeluTanh => x.gelu()?,
            Self::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Self::Silu => candle_nn::ops::silu(x)?,
            Self::Relu => x.relu()?,
        })
    }
}

impl Activation {
    /// Applies the activation in place (CPU path).
    fn apply_cpu(self, xs: &mut [f32]) {
        match self {
            Self::Gelu => cpu::gelu_erf(xs),
            Self::QuickGelu => cpu::quick_gelu(xs),
            Self::GeluTanh => xs.iter_mut().for_each(|x| {
                let c = (2.0 / std::f32::consts::PI).sqrt();
                *x = 0.5 * *x * (1.0 + (c * (*x + 0.044715 * *x * *x * *x)).tanh());
            }),
            Self::Silu => xs.iter_mut().for_each(|x| *x /= 1.0 + (-*x).exp()),
            Self::Relu => xs.iter_mut().for_each(|x| *x = x.max(0.0)),
        }
    }
}

/// A CPU view of a weight; weights live on the input's device, so this only fails on a bug.
fn view(t: &Tensor) -> Result<View<'_>> {
    View::of(t).ok_or_else(|| {
        Error::Candle(candle_core::Error::Msg(format!(
            "internal: expected a contiguous f32 CPU tensor, got {:?} on {:?}",
            t.dtype(),
            t.device()
        )))
    })
}

/// Checks an HF `hidden_act` value, naming the config file on failure.
pub fn activation(name: &str, config: &std::path::Path) -> Result<Activation> {
    Activation::from_hf(name).ok_or_else(|| Error::Config {
        path: config.to_path_buf(),
        reason: format!("hidden_act `{name}` is not supported"),
    })
}

/// The feed-forward part of a block.
#[derive(Debug, Clone)]
pub enum Mlp {
    /// `fc2(act(fc1(x)))`.
    Plain {
        fc1: Linear,
        act: Activation,
        fc2: Linear,
    },
    /// `w_out(silu(gate) · up)` with `[gate; up] = w_in(x)` (DINOv2 giant).
    SwiGlu { w_in: Linear, w_out: Linear },
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Plain { fc1, act, fc2 } => fc2.forward(&act.forward(&fc1.forward(x)?)?),
            Self::SwiGlu { w_in, w_out } => {
                let h = w_in.forward(x)?;
                let half = h.dim(D::Minus1)? / 2;
                let gate = candle_nn::ops::silu(&h.narrow(D::Minus1, 0, half)?)?;
                let up = h.narrow(D::Minus1, half, half)?;
                w_out.forward(&(gate * up)?)
            }
        }
    }
}

/// Multi-head self-attention with fused Q/K/V.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    /// Builds the fused layer from separate projections (the scale is folded into `q`).
    pub fn new(q: Linear, k: Linear, v: Linear, out: Linear, heads: usize) -> Result<Self> {
        let head_dim = q.out_dim() / heads;
        let q = q.scaled(1.0 / (head_dim as f64).sqrt())?;
        Ok(Self {
            qkv: Linear::concat(&[q, k, v])?,
            out,
            heads,
        })
    }

    /// `x`: `(batch, seq, dim)`; `causal` masks attention to later tokens.
    fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let hd = d / self.heads;
        let qkv = self.qkv.forward(&x.reshape((b * s, d))?)?;
        let qkv = qkv
            .reshape((b, s, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        let mut scores = q.matmul(&k.t()?)?;
        if causal {
            scores = scores.broadcast_add(&causal_mask(s, x.device())?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b * s, d))?;
        Ok(self.out.forward(&ctx)?.reshape((b, s, d))?)
    }
}

/// Where a block's tensors live, relative to the block's prefix.
pub struct BlockNames {
    pub norm1: &'static str,
    pub q: &'static str,
    pub k: &'static str,
    pub v: &'static str,
    pub out: &'static str,
    pub norm2: &'static str,
    pub fc1: &'static str,
    pub fc2: &'static str,
    /// `Some((s1, s2))` for layer scales (`{s}.lambda1`).
    pub layer_scale: Option<(&'static str, &'static str)>,
}

/// Sizes of a block.
pub struct BlockDims {
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub eps: f64,
    pub qkv_bias: bool,
    pub act: Activation,
    /// SwiGLU feed-forward with fused `weights_in`/`weights_out` (names given by `fc1`/`fc2`).
    pub swiglu: bool,
}

/// One pre-norm transformer layer.
#[derive(Debug, Clone)]
pub struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    /// Loads a block from `vb` (the block's prefix).
    pub fn load(vb: &Vb, names: &BlockNames, dims: &BlockDims) -> Result<Self> {
        let d = dims.hidden;
        let lin = |name: &str, i, o, bias| Linear::load(vb, name, i, o, bias);
        // Layer scales multiply the output projections' channels; fold them in at load.
        let (scale1, scale2) = match names.layer_scale {
            Some((s1, s2)) => (
                Some(vb.pp(s1).get(&[d], "lambda1")?),
                Some(vb.pp(s2).get(&[d], "lambda1")?),
            ),
            None => (None, None),
        };
        let scaled = |layer: Linear, scale: &Option<Tensor>| match scale {
            Some(s) => layer.scale_outputs(s),
            None => Ok(layer),
        };
        let attn = Attention::new(
            lin(names.q, d, d, dims.qkv_bias)?,
            lin(names.k, d, d, dims.qkv_bias)?,
            lin(names.v, d, d, dims.qkv_bias)?,
            scaled(lin(names.out, d, d, true)?, &scale1)?,
            dims.heads,
        )?;
        let mlp = if dims.swiglu {
            Mlp::SwiGlu {
                w_in: lin(names.fc1, d, 2 * dims.intermediate, true)?,
                w_out: scaled(lin(names.fc2, dims.intermediate, d, true)?, &scale2)?,
            }
        } else {
            Mlp::Plain {
                fc1: lin(names.fc1, d, dims.intermediate, true)?,
                act: dims.act,
                fc2: scaled(lin(names.fc2, dims.intermediate, d, true)?, &scale2)?,
            }
        };
        Ok(Self {
            norm1: LayerNorm::load(vb, names.norm1, d, dims.eps)?,
            attn,
            norm2: LayerNorm::load(vb, names.norm2, d, dims.eps)?,
            mlp,
        })
    }

    /// `x`: `(batch, seq, dim)`; `causal` for the CLIP text tower.
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return self.forward_cpu(x, causal);
        }
        let (b, s, d) = x.dims3()?;
        let h = self.attn.forward(&self.norm1.forward(x)?, causal)?;
        let x = (x + h)?;
        let h = self.norm2.forward(&x)?.reshape((b * s, d))?;
        let h = self.mlp.forward(&h)?.reshape((b, s, d))?;
        Ok((x + h)?)
    }

    /// The same computation on the CPU through [`crate::cpu`]'s fused kernels.
    fn forward_cpu(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let x = x.contiguous()?;
        let x = view(&x)?;
        let x = x.slice();
        let h = self.norm1.forward_cpu(x)?;
        let qkv = self.attn.qkv.forward_cpu(&h, None)?;
        let ctx = cpu::attention(&qkv, b, s, self.attn.heads, d, causal);
        let x = self.attn.out.forward_cpu(&ctx, Some(x))?;
        let h = self.norm2.forward_cpu(&x)?;
        let out = match &self.mlp {
            Mlp::Plain { fc1, act, fc2 } => {
                let mut f = fc1.forward_cpu(&h, None)?;
                act.apply_cpu(&mut f);
                fc2.forward_cpu(&f, Some(&x))?
            }
            Mlp::SwiGlu { w_in, w_out } => {
                let f = w_in.forward_cpu(&h, None)?;
                let g = cpu::swiglu(&f, w_in.out_dim() / 2);
                w_out.forward_cpu(&g, Some(&x))?
            }
        };
        Ok(Tensor::from_vec(out, (b, s, d), &Device::Cpu)?)
    }
}

/// Patch embedding: a `p × p`, stride-`p` convolution computed as one matmul over unfolded patches.
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    proj: Linear,
    patch: usize,
    channels: usize,
}

impl PatchEmbed {
    /// Loads `{name}.weight` (`dim × channels × p × p`) and, if `bias`, `{name}.bias`.
    pub fn load(
        vb: &Vb,
        name: &str,
        channels: usize,
        patch: usize,
        dim: usize,
        bias: bool,
    ) -> Result<Self> {
        let vb = vb.pp(name);
        let weight = vb.get(&[dim, channels, patch, patch], "weight")?;
        let bias = if bias {
            Some(vb.get(&[dim], "bias")?)
        } else {
            None
        };
        let weight = weight.reshape((dim, channels * patch * patch))?;
        Ok(Self {
            proj: Linear::from_parts(&weight, bias)?,
            patch,
            channels,
        })
    }

    /// The patch grid `(rows, cols)` for an `h × w` input, or an input error.
    pub fn grid(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let p = self.patch;
        if !h.is_multiple_of(p) || !w.is_multiple_of(p) || h == 0 || w == 0 {
            return Err(Error::Input(format!(
                "image size {h}×{w} is not a positive multiple of the patch size {p}"
            )));
        }
        Ok((h / p, w / p))
    }

    /// `pixels`: `(batch, channels, h, w)` → `(batch, rows·cols, dim)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        if c != self.channels {
            return Err(Error::Input(format!(
                "expected {} channels, got {c}",
                self.channels
            )));
        }
        let (gh, gw) = self.grid(h, w)?;
        let p = self.patch;
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, c * p * p))?;
        let out = self.proj.forward(&patches)?;
        Ok(out.reshape((b, gh * gw, self.proj.out_dim()))?)
    }
}

/// An additive causal mask `(seq, seq)`: 0 on and below the diagonal, −∞ above.
pub fn causal_mask(seq: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (seq, seq), device)?)
}

/// Runs the blocks in turn.
pub fn run_blocks(blocks: &[Block], x: Tensor, causal: bool) -> Result<Tensor> {
    blocks
        .iter()
        .try_fold(x, |x, block| block.forward(&x, causal))
}
