//! DINO v1 (HF `ViTModel` checkpoints such as `facebook/dino-vits16`).
//!
//! [`DinoConfig`] mirrors a ViT `config.json`; [`Dino::load`] builds a [`VitTrunk`] from the HF
//! names (`embeddings.*`, `encoder.layer.{i}.{layernorm_before, attention.attention.{query,key,
//! value}, attention.output.dense, layernorm_after, intermediate.dense, output.dense}`,
//! `layernorm.*`; a pooler, if present, is ignored) and [`Dino::embed`] returns
//! `last_hidden_state[:, 0]`, the CLS token after the final LayerNorm.

use candle_core::{Device, Tensor};
use serde::Deserialize;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::interpolate::Interpolation;
use crate::nn::{Block, BlockDims, BlockNames, LayerNorm, activation};
use crate::vit::{EmbeddingNames, VitTrunk};

/// The fields of a ViT `config.json` this crate reads (defaults as transformers').
#[derive(Debug, Clone, Deserialize)]
pub struct DinoConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
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
}

fn default_act() -> String {
    "gelu".into()
}
fn default_eps() -> f64 {
    1e-12
}
fn default_image_size() -> usize {
    224
}
fn default_patch() -> usize {
    16
}
fn default_channels() -> usize {
    3
}
fn default_true() -> bool {
    true
}

/// Options that change DINO's outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DinoOptions {
    /// Position-table resampling away from the native size (default: torch-hub's, as the paper's
    /// `dino_vits16`; transformers' `ViTModel` refuses other sizes unless asked to interpolate).
    pub interpolation: Interpolation,
}

/// A loaded DINO v1 image encoder.
pub struct Dino {
    trunk: VitTrunk,
    config: DinoConfig,
}

impl Dino {
    /// Loads the model from `checkpoint` onto `device`.
    pub fn load(checkpoint: &Checkpoint, options: DinoOptions, device: &Device) -> Result<Self> {
        let config: DinoConfig = checkpoint.config()?;
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
        let vb = if root.contains("embeddings.cls_token")
            || !root.contains("vit.embeddings.cls_token")
        {
            root
        } else {
            root.pp("vit")
        };
        let names = BlockNames {
            norm1: "layernorm_before",
            q: "attention.attention.query",
            k: "attention.attention.key",
            v: "attention.attention.value",
            out: "attention.output.dense",
            norm2: "layernorm_after",
            fc1: "intermediate.dense",
            fc2: "output.dense",
            layer_scale: None,
        };
        let dims = BlockDims {
            hidden: config.hidden_size,
            heads: config.num_attention_heads,
            intermediate: config.intermediate_size,
            eps: config.layer_norm_eps,
            qkv_bias: config.qkv_bias,
            act,
            swiglu: false,
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
            0,
            blocks,
            norm,
            options.interpolation,
        )?;
        tracing::info!(model = %checkpoint.model, dim = config.hidden_size, "DINO loaded");
        Ok(Self { trunk, config })
    }

    /// `pixels`: `(n, 3, h, w)` f32 → `(n, dim)`.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        self.trunk.embed(pixels)
    }

    /// Embedding width.
    pub fn dim(&self) -> usize {
        self.trunk.dim()
    }

    /// The parsed configuration.
    pub fn config(&self) -> &DinoConfig {
        &self.config
    }
}
