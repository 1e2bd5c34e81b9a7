//! CLIP (HF `CLIPModel` checkpoints such as `openai/clip-vit-large-patch14`).
//!
//! [`ClipConfig`] mirrors `config.json` (`text_config`, `vision_config`, `projection_dim`).
//! [`Clip::load`] builds the towers asked for in [`ClipOptions`]:
//!
//! * [`ClipVision`] — `vision_model.*` + `visual_projection`: patch embedding (no bias), class
//!   embedding, positions, `pre_layrnorm` (sic), blocks, then `post_layernorm` on the CLS token and
//!   the projection — transformers' `get_image_features`;
//! * [`ClipText`] — `text_model.*` + `text_projection`, with the checkpoint's own `tokenizer.json`:
//!   texts are truncated to the position table (77) as `padding=True, truncation=True` does, run
//!   through causally masked blocks and `final_layer_norm`, and the hidden state at the EOS position
//!   is projected — `get_text_features`. The EOS position is taken from each text's own tokens, so
//!   with the causal mask the result does not depend on how a batch is padded. How a batch is
//!   padded and which position is pooled are the tower's [`TextRules`]: CLIP's
//!   ([`TextRules::clip`]) pad with `<|endoftext|>` and pool at the argmax of the ids for legacy
//!   configs with `eos_token_id == 2`, else at the first `eos_token_id`. [`ClipText::load`] is
//!   public so that models built around the same text tower under another prefix and with other
//!   rules reuse it (the OWL-ViT / OWLv2 detectors in `crates/detectors`: pad with `!`, pool at
//!   the argmax of the ids).
//!
//! Neither tower L2-normalises; callers normalise before cosine similarities.

use std::path::PathBuf;

use candle_core::{Device, IndexOp, Tensor};
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::checkpoint::{Checkpoint, Vb};
use crate::error::{Error, Result};
use crate::nn::{
    Activation, Block, BlockDims, BlockNames, LayerNorm, Linear, PatchEmbed, activation, run_blocks,
};

/// `config.json` of a `CLIPModel`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipConfig {
    #[serde(default = "default_projection")]
    pub projection_dim: usize,
    pub text_config: ClipTextConfig,
    pub vision_config: ClipVisionConfig,
}

/// `text_config` (defaults as transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_text_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_text_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

/// `vision_config` (defaults as transformers' `CLIPVisionConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct ClipVisionConfig {
    #[serde(default = "default_vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_vision_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_projection() -> usize {
    512
}
fn default_vocab() -> usize {
    49408
}
fn default_text_hidden() -> usize {
    512
}
fn default_text_intermediate() -> usize {
    2048
}
fn default_layers() -> usize {
    12
}
fn default_text_heads() -> usize {
    8
}
fn default_max_positions() -> usize {
    77
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_eos() -> u32 {
    49407
}
fn default_vision_hidden() -> usize {
    768
}
fn default_vision_intermediate() -> usize {
    3072
}
fn default_vision_heads() -> usize {
    12
}
fn default_channels() -> usize {
    3
}
fn default_image_size() -> usize {
    224
}
fn default_patch() -> usize {
    32
}

/// Which towers to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipOptions {
    pub vision: bool,
    pub text: bool,
}

impl Default for ClipOptions {
    fn default() -> Self {
        Self {
            vision: true,
            text: true,
        }
    }
}

const CLIP_BLOCK: BlockNames = BlockNames {
    norm1: "layer_norm1",
    q: "self_attn.q_proj",
    k: "self_attn.k_proj",
    v: "self_attn.v_proj",
    out: "self_attn.out_proj",
    norm2: "layer_norm2",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
    layer_scale: None,
};

fn load_blocks(
    vb: &Vb,
    layers: usize,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    eps: f64,
    act: Activation,
) -> Result<Vec<Block>> {
    let dims = BlockDims {
        hidden,
        heads,
        intermediate,
        eps,
        qkv_bias: true,
        act,
        swiglu: false,
    };
    let vb = vb.pp("encoder.layers");
    (0..layers)
        .map(|i| Block::load(&vb.pp(i), &CLIP_BLOCK, &dims))
        .collect()
}

/// CLIP's image tower with its projection.
pub struct ClipVision {
    patch: PatchEmbed,
    class: Tensor,
    positions: Tensor,
    pre_norm: LayerNorm,
    blocks: Vec<Block>,
    post_norm: LayerNorm,
    projection: Linear,
    image_size: usize,
}

impl ClipVision {
    fn load(
        vb: &Vb,
        cfg: &ClipVisionConfig,
        projection_dim: usize,
        config: &std::path::Path,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        let act = activation(&cfg.hidden_act, config)?;
        let tower = vb.pp("vision_model");
        let emb = tower.pp("embeddings");
        let grid = cfg.image_size / cfg.patch_size;
        Ok(Self {
            patch: PatchEmbed::load(
                &emb,
                "patch_embedding",
                cfg.num_channels,
                cfg.patch_size,
                d,
                false,
            )?,
            class: emb.get(&[d], "class_embedding")?,
            positions: emb
                .pp("position_embedding")
                .get(&[grid * grid + 1, d], "weight")?,
            pre_norm: LayerNorm::load(&tower, "pre_layrnorm", d, cfg.layer_norm_eps)?,
            blocks: load_blocks(
                &tower,
                cfg.num_hidden_layers,
                d,
                cfg.num_attention_heads,
                cfg.intermediate_size,
                cfg.layer_norm_eps,
                act,
            )?,
            post_norm: LayerNorm::load(&tower, "post_layernorm", d, cfg.layer_norm_eps)?,
            projection: Linear::load(vb, "visual_projection", d, projection_dim, false)?,
            image_size: cfg.image_size,
        })
    }

    /// `pixels`: `(n, 3, s, s)` at the native size `s` → `(n, projection_dim)`.
    pub fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let (n, _, h, w) = pixels.dims4().map_err(|_| {
            Error::Input(format!("expected N×C×H×W pixels, got {:?}", pixels.dims()))
        })?;
        if h != self.image_size || w != self.image_size {
            return Err(Error::Input(format!(
                "CLIP expects {0}×{0} images, got {h}×{w}",
                self.image_size
            )));
        }
        let x = self.patch.forward(pixels)?;
        let d = x.dim(2)?;
        let class = self.class.reshape((1, 1, d))?.broadcast_as((n, 1, d))?;
        let x = Tensor::cat(&[&class, &x], 1)?.broadcast_add(&self.positions)?;
        let x = self.pre_norm.forward(&x)?;
        let x = run_blocks(&self.blocks, x, false)?;
        let pooled = self.post_norm.forward(&x.i((.., 0))?)?;
        self.projection.forward(&pooled)
    }
}

/// The token that fills a batch's shorter texts after their EOS (never attended to, through the
/// causal mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadToken {
    /// The tokenizer's `<|endoftext|>`, else the config's `eos_token_id` (CLIP's tokenizers).
    EndOfText,
    /// This id (OWL's tokenizers pad with `!`, id 0).
    Id(u32),
}

/// The position of each text whose hidden state a text tower pools, found in the text's own
/// (unpadded) ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first maximum of the ids (torch's `argmax`): the EOS where it is the highest id.
    ArgmaxId,
    /// The first occurrence of this id.
    FirstId(u32),
}

/// How a [`ClipText`] pads a batch and which position it pools: what differs between models
/// that share CLIP's text tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRules {
    pub pad: PadToken,
    pub pooling: Pooling,
}

impl TextRules {
    /// CLIP's, as transformers' `CLIPTextTransformer`: pad with `<|endoftext|>`; pool at the
    /// argmax of the ids for legacy configs with `eos_token_id == 2`, else at the first
    /// `eos_token_id`.
    pub fn clip(cfg: &ClipTextConfig) -> Self {
        Self {
            pad: PadToken::EndOfText,
            pooling: if cfg.eos_token_id == 2 {
                Pooling::ArgmaxId
            } else {
                Pooling::FirstId(cfg.eos_token_id)
            },
        }
    }
}

/// CLIP's text tower with its projection and tokenizer.
pub struct ClipText {
    tokenizer: Tokenizer,
    tokenizer_file: PathBuf,
    token_embedding: Tensor,
    positions: Tensor,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    projection: Linear,
    max_len: usize,
    pooling: Pooling,
    pad_id: u32,
}

impl ClipText {
    /// Loads the tower from `vb`, the prefix that holds `text_model.*` and `text_projection`
    /// (the root for CLIP), with the tokenizer from `checkpoint`'s `tokenizer.json`.
    pub fn load(
        vb: &Vb,
        cfg: &ClipTextConfig,
        projection_dim: usize,
        checkpoint: &Checkpoint,
        rules: TextRules,
    ) -> Result<Self> {
        let d = cfg.hidden_size;
        if cfg.num_attention_heads == 0 || !d.is_multiple_of(cfg.num_attention_heads) {
            return Err(Error::Config {
                path: checkpoint.config_file.clone(),
                reason: "text hidden_size is not a multiple of num_attention_heads".into(),
            });
        }
        let act = activation(&cfg.hidden_act, &checkpoint.config_file)?;
        let tokenizer_file =
            checkpoint
                .file("tokenizer.json")
                .ok_or_else(|| Error::MissingFile {
                    path: checkpoint.dir.join("tokenizer.json"),
                })?;
        let tokenizer = Tokenizer::from_file(&tokenizer_file).map_err(|e| Error::Tokenizer {
            path: tokenizer_file.clone(),
            message: e.to_string(),
        })?;
        let pad_id = match rules.pad {
            PadToken::EndOfText => tokenizer
                .token_to_id("<|endoftext|>")
                .unwrap_or(cfg.eos_token_id),
            PadToken::Id(id) => id,
        };
        let tower = vb.pp("text_model");
        let emb = tower.pp("embeddings");
        Ok(Self {
            token_embedding: emb
                .pp("token_embedding")
                .get(&[cfg.vocab_size, d], "weight")?,
            positions: emb
                .pp("position_embedding")
                .get(&[cfg.max_position_embeddings, d], "weight")?,
            blocks: load_blocks(
                &tower,
                cfg.num_hidden_layers,
                d,
                cfg.num_attention_heads,
                cfg.intermediate_size,
                cfg.layer_norm_eps,
                act,
            )?,
            final_norm: LayerNorm::load(&tower, "final_layer_norm", d, cfg.layer_norm_eps)?,
            projection: Linear::load(vb, "text_projection", d, projection_dim, false)?,
            max_len: cfg.max_position_embeddings,
            pooling: rules.pooling,
            tokenizer,
            tokenizer_file,
            pad_id,
        })
    }

    /// Token ids per text, with BOS/EOS, truncated to the position table (77 for CLIP) keeping
    /// the EOS.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let mut tokenizer = self.tokenizer.clone();
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: self.max_len,
                ..Default::default()
            }))
            .map_err(|e| self.tokenizer_error(e))?;
        tokenizer.with_padding(None);
        texts
            .iter()
            .map(|t| {
                let enc = tokenizer
                    .encode(*t, true)
                    .map_err(|e| self.tokenizer_error(e))?;
                Ok(enc.get_ids().to_vec())
            })
            .collect()
    }

    fn tokenizer_error(&self, e: tokenizers::Error) -> Error {
        Error::Tokenizer {
            path: self.tokenizer_file.clone(),
            message: e.to_string(),
        }
    }

    /// The pooled (EOS) position of one unpadded sequence, as transformers picks it.
    fn eos_position(&self, ids: &[u32]) -> usize {
        let target = match self.pooling {
            // torch's argmax takes the first maximum.
            Pooling::ArgmaxId => ids.iter().copied().max().unwrap_or(0),
            Pooling::FirstId(id) => id,
        };
        ids.iter().position(|&i| i == target).unwrap_or(0)
    }

    /// Texts → `(n, projection_dim)` (`get_text_features`).
    pub fn embed(&self, texts: &[&str]) -> Result<Tensor> {
        let ids = self.tokenize(texts)?;
        self.embed_ids(&ids)
    }

    /// Token ids (as from [`ClipText::tokenize`]) → `(n, projection_dim)`.
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let device = self.positions.device();
        let n = ids.len();
        let len = ids.iter().map(Vec::len).max().unwrap_or(0);
        if n == 0 || len == 0 {
            return Err(Error::Input("no text to embed".into()));
        }
        if len > self.max_len {
            return Err(Error::Input(format!(
                "{len} tokens exceed the {} positions",
                self.max_len
            )));
        }
        let vocab = self.token_embedding.dim(0)?;
        let mut flat = Vec::with_capacity(n * len);
        for seq in ids {
            if let Some(bad) = seq.iter().find(|&&i| i as usize >= vocab) {
                return Err(Error::Input(format!(
                    "token id {bad} outside the vocabulary of {vocab}"
                )));
            }
            flat.extend_from_slice(seq);
            flat.extend(std::iter::repeat_n(
                self.pad_id.min(vocab as u32 - 1),
                len - seq.len(),
            ));
        }
        let flat = Tensor::from_vec(flat, n * len, device)?;
        let d = self.token_embedding.dim(1)?;
        let x = self
            .token_embedding
            .index_select(&flat, 0)?
            .reshape((n, len, d))?
            .broadcast_add(&self.positions.narrow(0, 0, len)?)?;
        let x = run_blocks(&self.blocks, x, true)?;
        let rows: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(b, seq)| (b * len + self.eos_position(seq)) as u32)
            .collect();
        let rows = Tensor::from_vec(rows, n, device)?;
        let pooled = x.reshape((n * len, d))?.index_select(&rows, 0)?;
        let pooled = self.final_norm.forward(&pooled)?;
        self.projection.forward(&pooled)
    }
}

/// A loaded CLIP model (either or both towers).
pub struct Clip {
    vision: Option<ClipVision>,
    text: Option<ClipText>,
    config: ClipConfig,
}

impl Clip {
    /// Loads the towers selected in `options` from `checkpoint` onto `device`.
    pub fn load(checkpoint: &Checkpoint, options: ClipOptions, device: &Device) -> Result<Self> {
        let config: ClipConfig = checkpoint.config()?;
        for (name, hidden, heads) in [
            (
                "vision",
                config.vision_config.hidden_size,
                config.vision_config.num_attention_heads,
            ),
            (
                "text",
                config.text_config.hidden_size,
                config.text_config.num_attention_heads,
            ),
        ] {
            if heads == 0 || !hidden.is_multiple_of(heads) {
                return Err(Error::Config {
                    path: checkpoint.config_file.clone(),
                    reason: format!("{name} hidden_size is not a multiple of num_attention_heads"),
                });
            }
        }
        let vision_cfg = &config.vision_config;
        if vision_cfg.patch_size == 0 || vision_cfg.image_size < vision_cfg.patch_size {
            return Err(Error::Config {
                path: checkpoint.config_file.clone(),
                reason: "vision patch_size must be positive and at most image_size".into(),
            });
        }
        let weights = checkpoint.weights(device)?;
        let vb = weights.root();
        let vision = options
            .vision
            .then(|| {
                ClipVision::load(
                    &vb,
                    &config.vision_config,
                    config.projection_dim,
                    &checkpoint.config_file,
                )
            })
            .transpose()?;
        let text = options
            .text
            .then(|| {
                let cfg = &config.text_config;
                ClipText::load(
                    &vb,
                    cfg,
                    config.projection_dim,
                    checkpoint,
                    TextRules::clip(cfg),
                )
            })
            .transpose()?;
        tracing::info!(
            model = %checkpoint.model,
            vision = options.vision,
            text = options.text,
            dim = config.projection_dim,
            "CLIP loaded"
        );
        Ok(Self {
            vision,
            text,
            config,
        })
    }

    /// The image tower, if loaded.
    pub fn vision(&self) -> Option<&ClipVision> {
        self.vision.as_ref()
    }

    /// The text tower, if loaded.
    pub fn text(&self) -> Option<&ClipText> {
        self.text.as_ref()
    }

    /// `pixels`: `(n, 3, s, s)` → `(n, projection_dim)` (`get_image_features`).
    pub fn embed_images(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision
            .as_ref()
            .ok_or_else(|| Error::Input("CLIP was loaded without its vision tower".into()))?
            .embed(pixels)
    }

    /// Texts → `(n, projection_dim)` (`get_text_features`).
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor> {
        self.text
            .as_ref()
            .ok_or_else(|| Error::Input("CLIP was loaded without its text tower".into()))?
            .embed(texts)
    }

    /// Embedding width (`projection_dim`).
    pub fn dim(&self) -> usize {
        self.config.projection_dim
    }

    /// The parsed configuration.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }
}
