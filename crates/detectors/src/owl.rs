//! OWL-ViT and OWLv2 (HF `OwlViTForObjectDetection` / `Owlv2ForObjectDetection` checkpoints such as
//! `google/owlvit-base-patch32` and `google/owlv2-base-patch16-ensemble`).
//!
//! Both share one architecture, as transformers implements it:
//!
//! * **Vision tower** (`{owlvit,owlv2}.vision_model.*`): CLIP's ViT (patch embedding without bias,
//!   class embedding, position table, `pre_layernorm`, blocks). Unlike CLIP, OWL applies
//!   `post_layernorm` to *every* token, multiplies each patch token by the class token and applies
//!   the detection head's own `layer_norm`: `feats = layer_norm(post_ln(x)[1:] ⊙ post_ln(x)[0])`.
//! * **Box head** (`box_head`): `dense2(gelu(dense1(gelu(dense0(feats)))))` (exact GELU) plus a
//!   fixed bias from the patch grid (the inverse sigmoid of each patch's bottom-right corner and of
//!   the patch size), then a sigmoid → `(cx, cy, w, h)` in `[0, 1]`.
//! * **Class head** (`class_head`): `dense0(feats)` and the query embeddings, both divided by
//!   `(‖·‖ + 1e-6)`, dot products per patch and query, then `(logit + logit_shift(feats)) ·
//!   (elu(logit_scale(feats)) + 1)`.
//! * **Text tower** (`{owlvit,owlv2}.text_model.*` + `text_projection`): CLIP's, and run by the
//!   encoders crate's [`ClipText`] (tokenizer with truncation to the position table, token and
//!   position embeddings, causal blocks, `final_layer_norm`, pooling, projection) with OWL's
//!   [`TextRules`]: batches are padded with `pad_token_id` (`!`, id 0) and each query is pooled at
//!   the argmax of its ids (the first maximum, i.e. the EOS), as transformers' OWL does whatever
//!   the `eos_token_id`. Query embeddings are its output, L2-normalised.
//! * **Objectness head** (OWLv2 only, `objectness_head`): the box-head MLP with one output. The
//!   `ensemble` checkpoints use it in transformers only to pick the query box in image-guided
//!   detection; text-queried detection does not use it. It is computed and reported.
//!
//! Only the native image size is supported (transformers' `interpolate_pos_encoding=False`).

use candle_core::{D, Device, IndexOp, Tensor};
use encoders::checkpoint::{Checkpoint, Vb};
use encoders::clip::{ClipText, ClipTextConfig, PadToken, Pooling, TextRules};
use encoders::nn::{
    Activation, Block, BlockDims, BlockNames, LayerNorm, Linear, PatchEmbed, activation, run_blocks,
};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Which of the two OWL generations a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OwlVariant {
    /// OWL-ViT (v1): images resized (stretched) to the square input; boxes relative to the image.
    OwlVit,
    /// OWLv2: images padded to a square first; boxes relative to that padded square.
    Owlv2,
}

impl OwlVariant {
    /// Tensor-name prefix of the backbone (`owlvit` / `owlv2`).
    pub fn prefix(self) -> &'static str {
        match self {
            Self::OwlVit => "owlvit",
            Self::Owlv2 => "owlv2",
        }
    }
}

/// `config.json` of an OWL detection checkpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct OwlConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "default_projection")]
    pub projection_dim: usize,
    pub text_config: OwlTextConfig,
    pub vision_config: OwlVisionConfig,
}

/// `text_config` (defaults as transformers' `OwlViTTextConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct OwlTextConfig {
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
    #[serde(default = "default_text_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

impl OwlTextConfig {
    /// The same tower as a CLIP text config (OWL's pooling and padding are [`Owl`]'s
    /// [`TextRules`], not derived from it).
    pub fn to_clip(&self) -> ClipTextConfig {
        ClipTextConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            max_position_embeddings: self.max_position_embeddings,
            hidden_act: self.hidden_act.clone(),
            layer_norm_eps: self.layer_norm_eps,
            eos_token_id: self.eos_token_id,
        }
    }

    /// OWL's text rules: pad with `pad_token_id` (default 0), pool at the argmax of the ids.
    pub fn text_rules(&self) -> TextRules {
        TextRules {
            pad: PadToken::Id(self.pad_token_id.unwrap_or(0)),
            pooling: Pooling::ArgmaxId,
        }
    }
}

/// `vision_config` (defaults as transformers' `OwlViTVisionConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct OwlVisionConfig {
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
fn default_text_positions() -> usize {
    16
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
    768
}
fn default_patch() -> usize {
    32
}

const OWL_BLOCK: BlockNames = BlockNames {
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

#[allow(clippy::too_many_arguments)]
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
    Ok((0..layers)
        .map(|i| Block::load(&vb.pp(i), &OWL_BLOCK, &dims))
        .collect::<encoders::Result<Vec<_>>>()?)
}

/// The text tower's errors as this crate's: bad input and tokenizer failures keep their kind.
fn text_error(e: encoders::Error) -> Error {
    match e {
        encoders::Error::Input(message) => Error::Input(message),
        encoders::Error::Tokenizer { path, message } => Error::Tokenizer { path, message },
        other => Error::Checkpoint(other),
    }
}

/// Applies `layer` to `x` of shape `(..., in)` (flattening the leading dimensions).
fn linear_nd(layer: &Linear, x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let Some((&last, lead)) = dims.split_last() else {
        return Err(Error::Input("scalar input to a linear layer".into()));
    };
    let rows: usize = lead.iter().product();
    let y = layer.forward(&x.reshape((rows, last))?)?;
    let mut out = lead.to_vec();
    out.push(layer.out_dim());
    Ok(y.reshape(out)?)
}

/// The three-layer MLP of the box and objectness heads.
struct BoxMlp {
    dense0: Linear,
    dense1: Linear,
    dense2: Linear,
}

impl BoxMlp {
    fn load(vb: &Vb, width: usize, out: usize) -> Result<Self> {
        Ok(Self {
            dense0: Linear::load(vb, "dense0", width, width, true)?,
            dense1: Linear::load(vb, "dense1", width, width, true)?,
            dense2: Linear::load(vb, "dense2", width, out, true)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = Activation::Gelu.forward(&linear_nd(&self.dense0, x)?)?;
        let h = Activation::Gelu.forward(&linear_nd(&self.dense1, &h)?)?;
        linear_nd(&self.dense2, &h)
    }
}

/// The per-patch box bias of transformers' `compute_box_bias`, `(rows·cols, 4)` row-major.
pub fn box_bias(rows: usize, cols: usize) -> Vec<f32> {
    let inv_sigmoid = |v: f32| (v + 1e-4).ln() - (-v + 1e-4).ln_1p();
    let size_x = inv_sigmoid(1.0 / cols as f32);
    let size_y = inv_sigmoid(1.0 / rows as f32);
    let mut out = Vec::with_capacity(rows * cols * 4);
    for r in 0..rows {
        for c in 0..cols {
            let x = ((c + 1) as f32 / cols as f32).clamp(0.0, 1.0);
            let y = ((r + 1) as f32 / rows as f32).clamp(0.0, 1.0);
            out.extend_from_slice(&[inv_sigmoid(x), inv_sigmoid(y), size_x, size_y]);
        }
    }
    out
}

/// Raw detection-head outputs for a batch of images and one set of queries.
#[derive(Debug, Clone)]
pub struct OwlOutput {
    /// `(n, patches, queries)` class logits.
    pub logits: Tensor,
    /// `(n, patches, 4)` boxes `(cx, cy, w, h)` in `[0, 1]` of the (padded) square input.
    pub pred_boxes: Tensor,
    /// `(n, patches)` objectness logits (OWLv2 only).
    pub objectness_logits: Option<Tensor>,
}

/// One image's head outputs as plain row-major vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageOutputs {
    /// `patches × queries` class logits.
    pub logits: Vec<f32>,
    /// `patches × 4` boxes `(cx, cy, w, h)` in `[0, 1]`.
    pub boxes: Vec<f32>,
    /// `patches` objectness logits (OWLv2 only).
    pub objectness: Option<Vec<f32>>,
}

/// A loaded OWL-ViT / OWLv2 detection model.
pub struct Owl {
    variant: OwlVariant,
    config: OwlConfig,
    // vision
    patch: PatchEmbed,
    class: Tensor,
    positions: Tensor,
    pre_norm: LayerNorm,
    vision_blocks: Vec<Block>,
    post_norm: LayerNorm,
    merge_norm: LayerNorm,
    text: ClipText,
    // heads
    box_head: BoxMlp,
    box_bias: Tensor,
    class_dense: Linear,
    logit_shift: Linear,
    logit_scale: Linear,
    objectness_head: Option<BoxMlp>,
}

impl Owl {
    /// Loads a detection checkpoint onto `device`; the variant comes from `model_type`
    /// (`owlvit` / `owlv2`), or from the tensor names when the config does not say.
    pub fn load(checkpoint: &Checkpoint, device: &Device) -> Result<Self> {
        let config: OwlConfig = checkpoint.config()?;
        let path = checkpoint.config_file.clone();
        let config_error = |reason: String| Error::Config {
            path: path.clone(),
            reason,
        };
        let weights = checkpoint.weights(device)?;
        let root = weights.root();
        let variant = match config.model_type.as_deref() {
            Some("owlvit") => OwlVariant::OwlVit,
            Some("owlv2") => OwlVariant::Owlv2,
            Some(other) => {
                return Err(config_error(format!(
                    "model_type `{other}` is neither `owlvit` nor `owlv2`"
                )));
            }
            None if root.contains("owlv2.logit_scale") => OwlVariant::Owlv2,
            None => OwlVariant::OwlVit,
        };
        let (tc, vc) = (&config.text_config, &config.vision_config);
        for (name, hidden, heads) in [
            ("vision", vc.hidden_size, vc.num_attention_heads),
            ("text", tc.hidden_size, tc.num_attention_heads),
        ] {
            if heads == 0 || !hidden.is_multiple_of(heads) {
                return Err(config_error(format!(
                    "{name} hidden_size is not a multiple of num_attention_heads"
                )));
            }
        }
        if vc.patch_size == 0 || !vc.image_size.is_multiple_of(vc.patch_size) {
            return Err(config_error(
                "image_size is not a multiple of patch_size".into(),
            ));
        }
        if tc.hidden_size != config.projection_dim {
            // The class head maps image features to text_config.hidden_size and compares them
            // with projected queries; transformers needs the two widths equal as well.
            return Err(config_error(format!(
                "text hidden_size {} differs from projection_dim {}",
                tc.hidden_size, config.projection_dim
            )));
        }
        let backbone = root.pp(variant.prefix());
        let vision = backbone.pp("vision_model");
        let emb = vision.pp("embeddings");
        let d = vc.hidden_size;
        let grid = vc.image_size / vc.patch_size;
        let vision_act = activation(&vc.hidden_act, &checkpoint.config_file)?;
        let t = tc.hidden_size;
        let text = ClipText::load(
            &backbone,
            &tc.to_clip(),
            config.projection_dim,
            checkpoint,
            tc.text_rules(),
        )
        .map_err(text_error)?;

        let root_heads = &root;
        let objectness_head = if variant == OwlVariant::Owlv2 {
            Some(BoxMlp::load(&root_heads.pp("objectness_head"), d, 1)?)
        } else {
            None
        };
        let bias = box_bias(grid, grid);
        let model = Self {
            variant,
            patch: PatchEmbed::load(
                &emb,
                "patch_embedding",
                vc.num_channels,
                vc.patch_size,
                d,
                false,
            )?,
            class: emb.get(&[d], "class_embedding")?,
            positions: emb
                .pp("position_embedding")
                .get(&[grid * grid + 1, d], "weight")?,
            pre_norm: LayerNorm::load(&vision, "pre_layernorm", d, vc.layer_norm_eps)?,
            vision_blocks: load_blocks(
                &vision,
                vc.num_hidden_layers,
                d,
                vc.num_attention_heads,
                vc.intermediate_size,
                vc.layer_norm_eps,
                vision_act,
            )?,
            post_norm: LayerNorm::load(&vision, "post_layernorm", d, vc.layer_norm_eps)?,
            merge_norm: LayerNorm::load(root_heads, "layer_norm", d, vc.layer_norm_eps)?,
            text,
            box_head: BoxMlp::load(&root_heads.pp("box_head"), d, 4)?,
            box_bias: Tensor::from_vec(bias, (grid * grid, 4), device)?,
            class_dense: Linear::load(&root_heads.pp("class_head"), "dense0", d, t, true)?,
            logit_shift: Linear::load(&root_heads.pp("class_head"), "logit_shift", d, 1, true)?,
            logit_scale: Linear::load(&root_heads.pp("class_head"), "logit_scale", d, 1, true)?,
            objectness_head,
            config,
        };
        tracing::info!(
            model = %checkpoint.model,
            variant = ?variant,
            image_size = model.image_size(),
            "OWL detector loaded"
        );
        Ok(model)
    }

    /// OWL-ViT or OWLv2.
    pub fn variant(&self) -> OwlVariant {
        self.variant
    }

    /// The parsed configuration.
    pub fn config(&self) -> &OwlConfig {
        &self.config
    }

    /// The square input size in pixels (`vision_config.image_size`).
    pub fn image_size(&self) -> usize {
        self.config.vision_config.image_size
    }

    /// Token ids per query (BOS … EOS), truncated to the position table keeping the EOS.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        self.text.tokenize(texts).map_err(text_error)
    }

    /// Query embeddings `(queries, projection_dim)`, L2-normalised, for texts.
    pub fn embed_queries(&self, texts: &[&str]) -> Result<Tensor> {
        self.embed_query_ids(&self.tokenize(texts)?)
    }

    /// Query embeddings `(queries, projection_dim)`, L2-normalised, for token ids (unpadded or
    /// padded after the EOS; the causal mask makes padding irrelevant).
    pub fn embed_query_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let q = self.text.embed_ids(ids).map_err(text_error)?;
        Ok(q.broadcast_div(&q.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?)
    }

    /// Per-patch image features `(n, patches, hidden)`: the class-token merge after the
    /// vision tower. `pixels`: `(n, 3, s, s)` at the native size.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let (n, _, h, w) = pixels.dims4().map_err(|_| {
            Error::Input(format!("expected N×C×H×W pixels, got {:?}", pixels.dims()))
        })?;
        let s = self.image_size();
        if h != s || w != s {
            return Err(Error::Input(format!(
                "OWL expects {s}×{s} images, got {h}×{w}"
            )));
        }
        let x = self.patch.forward(pixels)?;
        let d = x.dim(2)?;
        let class = self.class.reshape((1, 1, d))?.broadcast_as((n, 1, d))?;
        let x = Tensor::cat(&[&class, &x], 1)?.broadcast_add(&self.positions)?;
        let x = self.pre_norm.forward(&x)?;
        let x = run_blocks(&self.vision_blocks, x, false)?;
        let x = self.post_norm.forward(&x)?;
        let tokens = x.dim(1)?;
        let merged = x
            .narrow(1, 1, tokens - 1)?
            .broadcast_mul(&x.narrow(1, 0, 1)?)?;
        Ok(self.merge_norm.forward(&merged)?)
    }

    /// Boxes `(n, patches, 4)` from image features.
    pub fn boxes(&self, feats: &Tensor) -> Result<Tensor> {
        let raw = self.box_head.forward(feats)?;
        let z = raw.broadcast_add(&self.box_bias)?;
        Ok((z.neg()?.exp()? + 1.0)?.recip()?)
    }

    /// Class logits `(n, patches, queries)` from image features and normalised query embeddings.
    pub fn class_logits(&self, feats: &Tensor, queries: &Tensor) -> Result<Tensor> {
        let (n, p, _) = feats.dims3()?;
        let ce = linear_nd(&self.class_dense, feats)?;
        let ce = ce.broadcast_div(&(ce.sqr()?.sum_keepdim(D::Minus1)?.sqrt()? + 1e-6)?)?;
        let q = queries.broadcast_div(&(queries.sqr()?.sum_keepdim(D::Minus1)?.sqrt()? + 1e-6)?)?;
        let t = ce.dim(2)?;
        let logits = ce
            .reshape((n * p, t))?
            .matmul(&q.t()?.contiguous()?)?
            .reshape((n, p, q.dim(0)?))?;
        let shift = linear_nd(&self.logit_shift, feats)?;
        let scale = (linear_nd(&self.logit_scale, feats)?.elu(1.0)? + 1.0)?;
        Ok(logits.broadcast_add(&shift)?.broadcast_mul(&scale)?)
    }

    /// Objectness logits `(n, patches)` (OWLv2), `None` for OWL-ViT.
    pub fn objectness(&self, feats: &Tensor) -> Result<Option<Tensor>> {
        self.objectness_head
            .as_ref()
            .map(|head| Ok(head.forward(feats)?.squeeze(D::Minus1)?))
            .transpose()
    }

    /// The full text-queried forward: `pixels` `(n, 3, s, s)` and normalised query embeddings
    /// `(queries, projection_dim)` (the same queries for every image).
    pub fn forward(&self, pixels: &Tensor, queries: &Tensor) -> Result<OwlOutput> {
        let feats = self.image_features(pixels)?;
        Ok(OwlOutput {
            logits: self.class_logits(&feats, queries)?,
            pred_boxes: self.boxes(&feats)?,
            objectness_logits: self.objectness(&feats)?,
        })
    }

    /// Image `index` of a batch output as plain vectors.
    pub fn image_outputs(output: &OwlOutput, index: usize) -> Result<ImageOutputs> {
        let n = output.logits.dim(0)?;
        if index >= n {
            return Err(Error::Input(format!("image {index} of a batch of {n}")));
        }
        Ok(ImageOutputs {
            logits: output.logits.i(index)?.flatten_all()?.to_vec1::<f32>()?,
            boxes: output
                .pred_boxes
                .i(index)?
                .flatten_all()?
                .to_vec1::<f32>()?,
            objectness: output
                .objectness_logits
                .as_ref()
                .map(|o| o.i(index)?.to_vec1::<f32>())
                .transpose()?,
        })
    }
}
