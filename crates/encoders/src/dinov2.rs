//! DINOv2 (HF `Dinov2Model` / `Dinov2WithRegistersModel` checkpoints, e.g. `facebook/dinov2-small`).
//!
//! [`Dinov2Config`] mirrors `config.json`; [`Dinov2::load`] builds a [`VitTrunk`] from the HF
//! tensor names (`embeddings.*`, `encoder.layer.{i}.{norm1, attention.attention.{query,key,value},
//! attention.output.dense, layer_scale1, norm2, mlp.{fc1,fc2 | weights_in,weights_out},
//! layer_scale2}`, `layernorm.*`) and [`Dinov2::embed`] returns the CLS token after the final
//! LayerNorm. Position tables are resampled per [`Interpolation`]; the default, `TorchHub`, is what
//! the paper's torch-hub `dinov2_vits14` computes.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::interpolate::Interpolation;
use crate::nn::{Block, BlockDims, BlockNames, LayerNorm, activation};
use crate::vit::{EmbeddingNames, VitTrunk};

/// The fields of a DINOv2 `config.json` this crate reads (defaults as transformers').
#[derive(Debug, Clone, Deserialize)]
pub struct Dinov2Config {
    #[serde(default)]
    pub model_type: String,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    #[serde(default)]
    pub num_register_tokens: usize,
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_image_size() -> usize {
    224
}
fn default_patch() -> usize {
    14
}
fn default_channels() -> usize {
    3
}
fn default_true() -> bool {
    true
}

impl Dinov2Config {
    /// The feed-forward width (SwiGLU keeps two thirds, rounded up to a multiple of 8).
    pub fn intermediate_size(&self) -> usize {
        let hidden = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        if self.use_swiglu_ffn {
            (hidden * 2 / 3).div_ceil(8) * 8
        } else {
            hidden
        }
    }
}

/// Options that change DINOv2's outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dinov2Options {
    /// Position-table resampling at non-native sizes (default: paper-exact `TorchHub`).
    pub interpolation: Interpolation,
}

/// A loaded DINOv2 image encoder.
pub struct Dinov2 {
    trunk: VitTrunk,
    config: Dinov2Config,
}

impl Dinov2 {
    /// Loads the model from `checkpoint` onto `device`.
    pub fn load(checkpoint: &Checkpoint, options: Dinov2Options, device: &Device) -> Result<Self> {
        let config: Dinov2Config = checkpoint.config()?;
        let act = activation(&config.hidden_act, &checkpoint.config_file)?;
        if config.patch_size == 0 || config.image_size < config.patch_size {
            return Err(Error::Config {
                path: checkpoint.config_file.clone(),
                reason: "patch_size must be positive and at most image_size".into(),
            });
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(Error::Config {
                path: checkpoint.config_file.clone(),
                reason: "hidden_size is not a multiple of num_attention_heads".into(),
            });
        }
        let weights = checkpoint.weights(device)?;
        let root = weights.root();
        // Checkpoints saved from a task model (e.g. Dinov2ForImageClassification) nest the trunk.
        let vb = if root.contains("embeddings.cls_token")
            || !root.contains("dinov2.embeddings.cls_token")
        {
            root
        } else {
            root.pp("dinov2")
        };
        let swiglu = config.use_swiglu_ffn;
        let names = BlockNames {
            norm1: "norm1",
            q: "attention.attention.query",
            k: "attention.attention.key",
            v: "attention.attention.value",
            out: "attention.output.dense",
            norm2: "norm2",
            fc1: if swiglu { "mlp.weights_in" } else { "mlp.fc1" },
            fc2: if swiglu { "mlp.weights_out" } else { "mlp.fc2" },
            layer_scale: Some(("layer_scale1", "layer_scale2")),
        };
        let dims = BlockDims {
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            intermediate: config.intermediate_size(),
            eps: config.layer_norm_eps,
            qkv_bias: config.qkv_bias,
            act,
            swiglu,
        };
        let layers = vb.pp("encoder.layer");
        let blocks = (0..config.num_hidden_layers)
            .map(|i| Block::load(&layers.pp(i), &names, &dims))
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::load(&vb, "layernorm", config.hidden_size, config.layer_norm_eps)?;
        let trunk = VitTrunk::load(
            &vb.pp("embeddings"),
            &EmbeddingNames {
                cls: "cls_token",
                positions: "position_embeddings",
                patch: "patch_embeddings.projection",
                registers: "register_tokens",
            },
            config.hidden_size,
            config.num_channels,
            config.patch_size,
            config.image_size,
            config.num_register_tokens,
            blocks,
            norm,
            options.interpolation,
        )?;
        tracing::info!(
            model = %checkpoint.model,
            layers = config.num_hidden_layers,
            dim = config.hidden_size,
            interpolation = options.interpolation.as_str(),
            "DINOv2 loaded"
        );
        Ok(Self { trunk, config })
    }

    /// `pixels`: `(n, 3, h, w)` f32, h and w multiples of the patch size → `(n, dim)`.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        self.trunk.embed(pixels)
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.trunk.dim()
    }

    /// The parsed configuration.
    pub fn config(&self) -> &Dinov2Config {
        &self.config
    }
}
