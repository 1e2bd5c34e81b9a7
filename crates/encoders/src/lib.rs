//! Image and text encoders for scoring: DINOv2, DINO v1 and CLIP on candle, loading Hugging Face
//! checkpoints and matching transformers (and, for DINOv2, the paper's torch-hub model) to ~1e-5.
//!
//! How the pieces fit:
//!
//! * [`checkpoint`]: a [`ModelSpec`] (local directory or hub id + revision) resolves to a
//!   [`Checkpoint`] (directory, snapshot sha, `config.json`, weight files) through the local hub
//!   cache; [`checkpoint::Weights`] hands out tensors checked by name and shape.
//! * [`dinov2`], [`dino`], [`clip`]: per model a `Config` mirroring `config.json`, a `load`
//!   function and tensor-level forwards (`embed`, `embed_images`, `embed_texts`), built from the
//!   shared layers in [`nn`] and the ViT trunk in [`vit`]; [`interpolate`] resamples position tables
//!   (torch-hub or HF semantics).
//! * [`Encoder`] wraps any of them behind the object-safe [`ImageEncoder`] / [`TextEncoder`] traits
//!   the pipeline holds, with an [`Identity`] that names everything that affects outputs (for
//!   cache keys).
//!
//! Inputs are already-preprocessed `N×3×H×W` f32 pixels; outputs are raw (not L2-normalised)
//! embeddings.

pub mod checkpoint;
pub mod clip;
mod cpu;
pub mod dino;
pub mod dinov2;
pub mod error;
mod fast;
pub mod interpolate;
pub mod nn;
pub mod vit;

use candle_core::{Device, Tensor};
use serde::Serialize;

pub use checkpoint::{Checkpoint, ModelSpec};
pub use clip::{Clip, ClipOptions};
pub use dino::{Dino, DinoOptions};
pub use dinov2::{Dinov2, Dinov2Options};
pub use error::{Error, Result};
pub use interpolate::Interpolation;

/// Everything about an encoder that affects its outputs; serialise it into cache keys together
/// with the digests of [`Checkpoint::weight_files`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Encoder family: `dinov2`, `dino`, `clip_image` or `clip_text`.
    pub family: String,
    /// Hub id or directory the checkpoint was resolved from.
    pub model: String,
    /// Snapshot sha for hub checkpoints; `None` for plain directories (hash the files).
    pub revision: Option<String>,
    /// Compute dtype.
    pub dtype: String,
    /// Position-table interpolation (`torch_hub` / `hf`), where it applies.
    pub interpolation: Option<Interpolation>,
    /// Version of this crate's numerics; bumped whenever outputs may change.
    pub implementation: u32,
}

/// Bump when a change may alter any output beyond rounding.
pub const IMPLEMENTATION_VERSION: u32 = 1;

impl Identity {
    fn new(family: &str, checkpoint: &Checkpoint, interpolation: Option<Interpolation>) -> Self {
        Self {
            family: family.to_string(),
            model: checkpoint.model.clone(),
            revision: checkpoint.revision.clone(),
            dtype: "f32".into(),
            interpolation,
            implementation: IMPLEMENTATION_VERSION,
        }
    }
}

/// An image encoder the pipeline can hold as `Box<dyn ImageEncoder>`.
pub trait ImageEncoder: Send + Sync {
    /// Short name for logs (`dinov2`, `dino`, `clip`).
    fn name(&self) -> &str;
    /// Embedding width.
    fn dim(&self) -> usize;
    /// What determines the outputs (for cache keys).
    fn identity(&self) -> &Identity;
    /// `nchw`: `n × 3 × h × w` f32 pixels, row-major → one embedding per image.
    fn embed_images(&self, nchw: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<Vec<f32>>>;
}

/// A text encoder the pipeline can hold as `Box<dyn TextEncoder>`.
pub trait TextEncoder: Send + Sync {
    /// Short name for logs.
    fn name(&self) -> &str;
    /// Embedding width.
    fn dim(&self) -> usize;
    /// What determines the outputs (for cache keys).
    fn identity(&self) -> &Identity;
    /// One embedding per text.
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}

/// Picks the compute device: CUDA device 0 when `gpu` is asked for, the CPU otherwise. Asking for
/// a GPU in a build without the `cuda` feature is an error, never a silent switch to the CPU. The
/// choice is logged.
pub fn select_device(gpu: bool) -> Result<Device> {
    let device = if gpu {
        if !candle_core::utils::cuda_is_available() {
            return Err(Error::Input(
                "a GPU was requested but this build has no CUDA support: rebuild with `--features cuda`"
                    .into(),
            ));
        }
        Device::new_cuda(0)?
    } else {
        Device::Cpu
    };
    tracing::info!(device = ?device, "encoder device");
    Ok(device)
}

/// A loaded model behind the [`ImageEncoder`] / [`TextEncoder`] traits.
pub struct Encoder<M> {
    model: M,
    identity: Identity,
    device: Device,
}

impl<M> Encoder<M> {
    /// The wrapped model.
    pub fn model(&self) -> &M {
        &self.model
    }
}

impl Encoder<Dinov2> {
    /// Loads DINOv2 for the traits.
    pub fn dinov2(
        checkpoint: &Checkpoint,
        options: Dinov2Options,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            model: Dinov2::load(checkpoint, options, device)?,
            identity: Identity::new("dinov2", checkpoint, Some(options.interpolation)),
            device: device.clone(),
        })
    }
}

impl Encoder<Dino> {
    /// Loads DINO v1 for the traits.
    pub fn dino(checkpoint: &Checkpoint, options: DinoOptions, device: &Device) -> Result<Self> {
        Ok(Self {
            model: Dino::load(checkpoint, options, device)?,
            identity: Identity::new("dino", checkpoint, Some(options.interpolation)),
            device: device.clone(),
        })
    }
}

/// CLIP behind the traits; the image and text sides share one loaded model.
pub struct ClipEncoder {
    model: Clip,
    image_identity: Identity,
    text_identity: Identity,
    device: Device,
}

impl ClipEncoder {
    /// Loads the towers selected in `options`.
    pub fn load(checkpoint: &Checkpoint, options: ClipOptions, device: &Device) -> Result<Self> {
        Ok(Self {
            model: Clip::load(checkpoint, options, device)?,
            image_identity: Identity::new("clip_image", checkpoint, None),
            text_identity: Identity::new("clip_text", checkpoint, None),
            device: device.clone(),
        })
    }

    /// The wrapped model.
    pub fn model(&self) -> &Clip {
        &self.model
    }
}

fn pixels(nchw: &[f32], n: usize, h: usize, w: usize, device: &Device) -> Result<Tensor> {
    if nchw.len() != n * 3 * h * w {
        return Err(Error::Input(format!(
            "{} values do not make {n}×3×{h}×{w} pixels",
            nchw.len()
        )));
    }
    Ok(Tensor::from_slice(nchw, (n, 3, h, w), device)?)
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
}

impl ImageEncoder for Encoder<Dinov2> {
    fn name(&self) -> &str {
        "dinov2"
    }
    fn dim(&self) -> usize {
        self.model.dim()
    }
    fn identity(&self) -> &Identity {
        &self.identity
    }
    fn embed_images(&self, nchw: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<Vec<f32>>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        rows(&self.model.embed(&pixels(nchw, n, h, w, &self.device)?)?)
    }
}

impl ImageEncoder for Encoder<Dino> {
    fn name(&self) -> &str {
        "dino"
    }
    fn dim(&self) -> usize {
        self.model.dim()
    }
    fn identity(&self) -> &Identity {
        &self.identity
    }
    fn embed_images(&self, nchw: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<Vec<f32>>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        rows(&self.model.embed(&pixels(nchw, n, h, w, &self.device)?)?)
    }
}

impl ImageEncoder for ClipEncoder {
    fn name(&self) -> &str {
        "clip"
    }
    fn dim(&self) -> usize {
        self.model.dim()
    }
    fn identity(&self) -> &Identity {
        &self.image_identity
    }
    fn embed_images(&self, nchw: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<Vec<f32>>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        rows(
            &self
                .model
                .embed_images(&pixels(nchw, n, h, w, &self.device)?)?,
        )
    }
}

impl TextEncoder for ClipEncoder {
    fn name(&self) -> &str {
        "clip"
    }
    fn dim(&self) -> usize {
        self.model.dim()
    }
    fn identity(&self) -> &Identity {
        &self.text_identity
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        rows(&self.model.embed_texts(texts)?)
    }
}
