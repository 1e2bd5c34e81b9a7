//! Embedding stages: one per configured encoder (`embed-dinov2`, `embed-dino`, `embed-clip`) for
//! every image, and `embed-clip-text` for the prompt text.
//!
//! An image embedding's key holds the image's digest, the preprocessing parameters and the
//! encoder's identity (family, interpolation, implementation version, hub revision, and the digests
//! of its config, weight and tokenizer files; never a local path). Reference images are items of
//! the `@references` pseudo-model, so each is embedded once per encoder, ever; a text embedding's
//! key holds the text, so each prompt is embedded once however many models and seeds use it.
//!
//! Models load lazily, on the first embedding a run computes, so a fully cached rerun never loads
//! one. A model that fails to load stops the run ([`StageError::Fatal`]): there is no fallback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use encoders::{Checkpoint, ClipOptions, ImageEncoder, Interpolation, ModelSpec, TextEncoder};
use preprocess::Preprocessor;
use serde::Deserialize;
use serde_json::json;
use store::{ActionKey, Digest};

use crate::lazy::{FileDigests, LazyModel};
use crate::stage::{Context, Output, Stage, StageError, StageOutput, new_key};

/// Which encoder family a stage runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Dinov2,
    Dino,
    Clip,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Dinov2 => "dinov2",
            Family::Dino => "dino",
            Family::Clip => "clip",
        }
    }
}

/// One encoder as configured under `encoders:`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// A hub id (e.g. `facebook/dinov2-small`, resolved in the local hub cache) or a directory in
    /// the HF layout (relative to the config file).
    pub model: String,
    /// Hub revision (branch, tag or commit); default `main`.
    #[serde(default)]
    pub revision: Option<String>,
    /// Position-table interpolation for DINOv2 / DINO: `torch_hub` (paper-exact, default) or `hf`.
    #[serde(default)]
    pub interpolation: Interpolation,
}

/// `encoders:` in a study.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodersConfig {
    pub dinov2: Option<EncoderConfig>,
    pub dino: Option<EncoderConfig>,
    pub clip: Option<EncoderConfig>,
}

impl EncodersConfig {
    pub fn is_empty(&self) -> bool {
        self.dinov2.is_none() && self.dino.is_none() && self.clip.is_none()
    }

    /// Resolves local model directories against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for config in [&mut self.dinov2, &mut self.dino, &mut self.clip]
            .into_iter()
            .flatten()
        {
            let local = base.join(&config.model);
            if local.is_dir() {
                config.model = local.display().to_string();
            }
        }
    }
}

/// A resolved checkpoint and its lazily loaded model, shared by the image and text stages.
pub struct Encoder {
    family: Family,
    config: EncoderConfig,
    checkpoint: Checkpoint,
    device: candle_core::Device,
    /// Digests of the files that determine the outputs, computed once per run.
    files: FileDigests,
    /// The towers, loaded on first use; emptied by [`Encoder::release`].
    image: LazyModel<dyn ImageEncoder>,
    text: LazyModel<dyn TextEncoder>,
}

impl Encoder {
    pub fn family(&self) -> Family {
        self.family
    }

    /// Resolves the checkpoint now (cheap, no weights read): a missing model is an error at open.
    pub fn resolve(
        family: Family,
        config: &EncoderConfig,
        device: &candle_core::Device,
    ) -> Result<Encoder, encoders::Error> {
        let mut spec = ModelSpec::new(config.model.clone());
        if let Some(revision) = &config.revision {
            spec = spec.with_revision(revision.clone());
        }
        let checkpoint = Checkpoint::resolve(&spec)?;
        let mut files = vec![checkpoint.config_file.clone()];
        files.extend(checkpoint.weight_files.iter().cloned());
        if family == Family::Clip {
            files.extend(checkpoint.file("tokenizer.json"));
        }
        Ok(Encoder {
            family,
            config: config.clone(),
            checkpoint,
            device: device.clone(),
            files: FileDigests::new(files),
            image: LazyModel::default(),
            text: LazyModel::default(),
        })
    }

    /// The model part of a key: what identifies the weights, without local paths.
    pub(crate) fn model_key(&self, cx: &Context) -> Result<BTreeMap<String, String>, StageError> {
        let mut model = self.files.get(cx)?;
        model.insert("family".into(), self.family.name().into());
        model.insert(
            "implementation".into(),
            encoders::IMPLEMENTATION_VERSION.to_string(),
        );
        model.insert("dtype".into(), "f32".into());
        if let Some(revision) = &self.checkpoint.revision {
            model.insert("hub_id".into(), self.checkpoint.model.clone());
            model.insert("revision".into(), revision.clone());
        }
        if self.family != Family::Clip {
            model.insert(
                "interpolation".into(),
                self.config.interpolation.as_str().into(),
            );
        }
        Ok(model)
    }

    /// Frees the loaded models (the next use loads them again): `low_memory` runs call it once
    /// a stage is done with them.
    pub(crate) fn release(&self) {
        self.image.release();
        self.text.release();
    }

    pub(crate) fn image_encoder(&self) -> Result<Arc<dyn ImageEncoder>, StageError> {
        self.image.get(|| {
            let device = &self.device;
            let checkpoint = &self.checkpoint;
            tracing::info!(
                "loading {} from {}",
                self.family.name(),
                checkpoint.dir.display()
            );
            let interpolation = self.config.interpolation;
            let encoder: Result<Arc<dyn ImageEncoder>, encoders::Error> = match self.family {
                Family::Dinov2 => encoders::Encoder::dinov2(
                    checkpoint,
                    encoders::Dinov2Options { interpolation },
                    device,
                )
                .map(|e| Arc::new(e) as Arc<dyn ImageEncoder>),
                Family::Dino => encoders::Encoder::dino(
                    checkpoint,
                    encoders::DinoOptions { interpolation },
                    device,
                )
                .map(|e| Arc::new(e) as Arc<dyn ImageEncoder>),
                Family::Clip => encoders::ClipEncoder::load(
                    checkpoint,
                    ClipOptions {
                        vision: true,
                        text: false,
                    },
                    device,
                )
                .map(|e| Arc::new(e) as Arc<dyn ImageEncoder>),
            };
            encoder.map_err(|e| {
                format!(
                    "cannot load the {} encoder from {}: {e}",
                    self.family.name(),
                    checkpoint.dir.display()
                )
            })
        })
    }

    fn text_encoder(&self) -> Result<Arc<dyn TextEncoder>, StageError> {
        self.text.get(|| {
            let checkpoint = &self.checkpoint;
            tracing::info!(
                "loading the CLIP text tower from {}",
                checkpoint.dir.display()
            );
            encoders::ClipEncoder::load(
                checkpoint,
                ClipOptions {
                    vision: false,
                    text: true,
                },
                &self.device,
            )
            .map(|e| Arc::new(e) as Arc<dyn TextEncoder>)
            .map_err(|e| {
                format!(
                    "cannot load the CLIP text encoder from {}: {e}",
                    checkpoint.dir.display()
                )
            })
        })
    }
}

/// Little-endian f32 bytes: how embeddings are stored as blobs.
pub fn to_bytes(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The inverse of [`to_bytes`].
pub fn from_bytes(bytes: &[u8]) -> Result<Vec<f32>, StageError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(StageError::Failed(format!(
            "an embedding blob of {} bytes is not f32s",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Embeds the item's image (the `generate` stage's output) with one image encoder.
pub struct EmbedStage {
    name: &'static str,
    encoder: Arc<Encoder>,
    preprocess: Preprocessor,
    /// Images per forward pass.
    batch: usize,
}

impl EmbedStage {
    pub fn new(encoder: Arc<Encoder>, batch: usize) -> EmbedStage {
        let (name, preprocess) = match encoder.family {
            Family::Dinov2 => ("embed-dinov2", Preprocessor::dino_paper()),
            Family::Dino => ("embed-dino", Preprocessor::dino_paper()),
            Family::Clip => ("embed-clip", Preprocessor::clip()),
        };
        EmbedStage {
            name,
            encoder,
            preprocess,
            batch,
        }
    }
}

impl Stage for EmbedStage {
    fn name(&self) -> &'static str {
        self.name
    }

    fn release(&self) {
        self.encoder.release();
    }

    fn version(&self) -> u32 {
        1
    }

    fn key(&self, cx: &Context) -> Result<ActionKey, StageError> {
        let mut key = new_key(self);
        key.params
            .insert("preprocess".into(), json!(self.preprocess.params()));
        key.inputs
            .insert("image".into(), cx.upstream_output("generate", "image")?);
        key.model = self.encoder.model_key(cx)?;
        Ok(key)
    }

    fn run(&self, cx: &Context, key: &ActionKey) -> Result<StageOutput, StageError> {
        self.run_batch(&[(cx, key)])
            .pop()
            .unwrap_or_else(|| Err(StageError::Failed("no result".into())))
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    /// Decodes and preprocesses every image (an undecodable one fails alone), then embeds the rest
    /// in one forward pass.
    fn run_batch(&self, jobs: &[(&Context, &ActionKey)]) -> Vec<Result<StageOutput, StageError>> {
        let images = jobs
            .iter()
            .map(|(cx, key)| self.pixels(cx, key).map(|p| (p, 1)))
            .collect();
        let side = self.preprocess.crop_size() as usize;
        embed_jobs(&self.encoder, side, images)
            .into_iter()
            .map(|embedded| match embedded?.as_slice() {
                [embedding] => Ok(embedding_output(embedding)),
                other => Err(StageError::Failed(format!(
                    "{} embeddings for one image",
                    other.len()
                ))),
            })
            .collect()
    }
}

/// Embeds the images of several jobs in one forward pass. `images[j]` holds job j's preprocessed
/// square images of side `side` (CHW, concatenated) and how many there are, or why it has none;
/// the result holds job j's embeddings in order, or its error (a failed forward pass fails every
/// job, fatally when loading the model failed).
pub(crate) fn embed_jobs(
    encoder: &Encoder,
    side: usize,
    images: Vec<Result<(Vec<f32>, usize), StageError>>,
) -> Vec<Result<Vec<Vec<f32>>, StageError>> {
    let mut pixels = Vec::new();
    let mut counts = Vec::with_capacity(images.len());
    let mut results: Vec<Result<Vec<Vec<f32>>, StageError>> = Vec::with_capacity(images.len());
    for job in images {
        match job {
            Ok((p, count)) => {
                pixels.extend_from_slice(&p);
                counts.push(count);
                results.push(Ok(Vec::new()));
            }
            Err(e) => {
                counts.push(0);
                results.push(Err(e));
            }
        }
    }
    let total: usize = counts.iter().sum();
    if total == 0 {
        return results;
    }
    let embedded = encoder.image_encoder().and_then(|model| {
        let embeddings = model
            .embed_images(&pixels, total, side, side)
            .map_err(|e| StageError::Failed(format!("{}: {e}", model.name())))?;
        if embeddings.len() == total {
            Ok(embeddings)
        } else {
            Err(StageError::Failed(format!(
                "{} embeddings for {total} images",
                embeddings.len()
            )))
        }
    });
    match embedded {
        Ok(embeddings) => {
            let mut embeddings = embeddings.into_iter();
            for (result, &count) in results.iter_mut().zip(&counts) {
                if let Ok(mine) = result {
                    mine.extend(embeddings.by_ref().take(count));
                }
            }
        }
        Err(error) => {
            for result in results.iter_mut().filter(|r| r.is_ok()) {
                *result = Err(match &error {
                    StageError::Fatal(message) => StageError::Fatal(message.clone()),
                    other => StageError::Failed(other.to_string()),
                });
            }
        }
    }
    results
}

impl EmbedStage {
    /// The preprocessed pixels of the item's image (CHW).
    fn pixels(&self, cx: &Context, key: &ActionKey) -> Result<Vec<f32>, StageError> {
        let digest: Digest = key.inputs["image"];
        let bytes = cx.store.read_blob(&digest)?;
        let name = PathBuf::from(format!("{}@{}", cx.item.id(), digest.short()));
        let image =
            preprocess::decode_rgb(&bytes, &name).map_err(|e| StageError::Failed(e.to_string()))?;
        Ok(self.preprocess.process(&image))
    }
}

fn embedding_output(embedding: &[f32]) -> StageOutput {
    let mut outputs = BTreeMap::new();
    outputs.insert("embedding".to_owned(), Output::Bytes(to_bytes(embedding)));
    StageOutput {
        outputs,
        meta: json!({"dim": embedding.len()}),
    }
}

/// Embeds the item's prompt text with CLIP's text tower (the subject's name for a reference).
pub struct TextEmbedStage {
    encoder: Arc<Encoder>,
}

impl TextEmbedStage {
    pub fn new(encoder: Arc<Encoder>) -> TextEmbedStage {
        TextEmbedStage { encoder }
    }
}

impl Stage for TextEmbedStage {
    fn name(&self) -> &'static str {
        "embed-clip-text"
    }

    fn release(&self) {
        self.encoder.release();
    }

    fn version(&self) -> u32 {
        1
    }

    fn key(&self, cx: &Context) -> Result<ActionKey, StageError> {
        let mut key = new_key(self);
        key.params.insert("text".into(), json!(cx.item.prompt.text));
        key.model = self.encoder.model_key(cx)?;
        Ok(key)
    }

    fn run(&self, cx: &Context, _key: &ActionKey) -> Result<StageOutput, StageError> {
        let encoder = self.encoder.text_encoder()?;
        let mut embeddings = encoder
            .embed_texts(&[cx.item.prompt.text.as_str()])
            .map_err(|e| StageError::Failed(format!("clip text: {e}")))?;
        let embedding = embeddings
            .pop()
            .ok_or_else(|| StageError::Failed("no embedding returned".into()))?;
        let mut outputs = BTreeMap::new();
        outputs.insert("embedding".to_owned(), Output::Bytes(to_bytes(&embedding)));
        Ok(StageOutput {
            outputs,
            meta: json!({"dim": embedding.len()}),
        })
    }
}
