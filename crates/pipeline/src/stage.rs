//! Stages: per-item steps whose outputs live in the store.
//!
//! A [`Stage`] says what determines its output ([`Stage::key`]) and computes it ([`Stage::run`])
//! from the outputs of the stages before it. The runner looks the key up first and runs the stage
//! only on a miss; it then stores the outputs and records the action entry. Stages never write to
//! the store's index themselves, so the write-outputs-then-entry order is kept in one place.
//!
//! Stages today: [`GenerateStage`] (through a [`generate::Generator`]) and [`InspectStage`]
//! (decodes the image, checks it, records its size and a thumbnail for reports).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use benchmark::Benchmark;
use benchmark::expand::{self, ModelPrompt};
use generate::{GenerationJob, Generator};
use serde_json::{Value, json};
use store::{ActionEntry, ActionKey, Digest, Store, TempFile};

use crate::items::Item;

/// What a stage sees of one item.
pub struct Context<'a> {
    pub item: &'a Item,
    /// Entries of the earlier stages of this item, by stage name.
    pub upstream: &'a BTreeMap<&'static str, ActionEntry>,
    pub store: &'a Store,
}

impl Context<'_> {
    /// The output `output` of stage `stage`; the runner guarantees earlier stages are done.
    pub fn upstream_output(&self, stage: &str, output: &str) -> Result<Digest, StageError> {
        self.upstream
            .get(stage)
            .and_then(|entry| entry.outputs.get(output))
            .copied()
            .ok_or_else(|| StageError::Failed(format!("stage `{stage}` has no output `{output}`")))
    }
}

/// One output of a stage run, before it is stored.
pub enum Output {
    File(TempFile),
    Bytes(Vec<u8>),
}

/// What a stage run produced.
pub struct StageOutput {
    pub outputs: BTreeMap<String, Output>,
    /// Small metadata kept in the action entry (sizes, timings, ...).
    pub meta: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Generate(#[from] generate::Error),
    #[error(transparent)]
    Expand(#[from] expand::ExpandError),
    #[error("{0}")]
    Failed(String),
    /// Nothing of this stage can work (e.g. its model does not load): the run stops.
    #[error("{0}")]
    Fatal(String),
}

/// A per-item pipeline step.
pub trait Stage: Send + Sync {
    fn name(&self) -> &'static str;

    /// Bump when the stage's output changes for the same key.
    fn version(&self) -> u32;

    /// Everything that determines this stage's output for the item.
    fn key(&self, cx: &Context) -> Result<ActionKey, StageError>;

    /// Computes the outputs. Blocking; may run on several threads at once.
    fn run(&self, cx: &Context, key: &ActionKey) -> Result<StageOutput, StageError>;

    /// Whether this stage runs for `item` at all (scoring does not apply to reference images).
    fn applies_to(&self, item: &Item) -> bool {
        let _ = item;
        true
    }

    /// Frees what the stage holds between runs (loaded models); called by `low_memory` runs once
    /// every item is past this stage. The next use loads them again.
    fn release(&self) {}

    /// How many items one [`Stage::run_batch`] call may take (1: no batching).
    fn batch_size(&self) -> usize {
        1
    }

    /// Computes several items at once; one result per input, in order. The default runs them one
    /// by one; stages whose work batches well (encoders) override it.
    fn run_batch(&self, jobs: &[(&Context, &ActionKey)]) -> Vec<Result<StageOutput, StageError>> {
        jobs.iter().map(|(cx, key)| self.run(cx, key)).collect()
    }
}

pub(crate) fn new_key(stage: &dyn Stage) -> ActionKey {
    ActionKey {
        stage: stage.name().to_owned(),
        stage_version: stage.version(),
        params: BTreeMap::new(),
        inputs: BTreeMap::new(),
        model: BTreeMap::new(),
    }
}

/// Generates the item's image with its model's generator.
pub struct GenerateStage {
    pub bench: Arc<Benchmark>,
    pub generators: BTreeMap<String, Arc<dyn Generator>>,
}

impl GenerateStage {
    fn generator(&self, item: &Item) -> Result<&Arc<dyn Generator>, StageError> {
        self.generators
            .get(&item.model)
            .ok_or_else(|| StageError::Failed(format!("no generator for model `{}`", item.model)))
    }

    /// The job for `item`: its prompt expanded into the generator's format.
    pub fn job(&self, item: &Item) -> Result<GenerationJob, StageError> {
        let generator = self.generator(item)?;
        let prompt: ModelPrompt =
            expand::expand(&self.bench, &item.prompt, generator.prompt_format())?;
        Ok(GenerationJob {
            model: item.model.clone(),
            prompt_id: item.prompt.id.clone(),
            seed: item.seed,
            scene: item.prompt.scene,
            subjects: item.prompt.subjects.clone(),
            prompt,
        })
    }
}

impl Stage for GenerateStage {
    fn name(&self) -> &'static str {
        "generate"
    }

    fn version(&self) -> u32 {
        1
    }

    fn key(&self, cx: &Context) -> Result<ActionKey, StageError> {
        let generator = self.generator(cx.item)?;
        let job = self.job(cx.item)?;
        let identity = generator.identity();
        let mut key = new_key(self);
        let references: Vec<Value> = job
            .prompt
            .references
            .iter()
            .map(|r| json!({"name": r.name, "caption": r.caption, "idip": r.idip}))
            .collect();
        key.params.insert(
            "format".into(),
            serde_json::to_value(job.prompt.format).unwrap_or(Value::Null),
        );
        key.params.insert("text".into(), json!(job.prompt.text));
        key.params
            .insert("references".into(), Value::Array(references));
        key.params.insert("seed".into(), json!(job.seed));
        key.params.insert("scene".into(), json!(job.scene));
        key.params.insert("settings".into(), identity.settings);
        for (i, reference) in job.prompt.references.iter().enumerate() {
            key.inputs
                .insert(format!("ref.{i}"), cx.store.file_digest(&reference.image)?);
        }
        // A missing input is not an error here: the key records it, and `run` fails with the
        // generator's own message, so the item shows as failed and is retried next time.
        match generator.job_inputs(&job) {
            Ok(files) => {
                for (i, file) in files.iter().enumerate() {
                    key.inputs
                        .insert(format!("source.{i}"), cx.store.file_digest(file)?);
                }
            }
            Err(e) => {
                key.params
                    .insert("missing_input".into(), json!(e.to_string()));
            }
        }
        key.model.insert("adapter".into(), identity.adapter);
        key.model.insert("adapter_version".into(), identity.version);
        key.model.extend(identity.model);
        Ok(key)
    }

    fn run(&self, cx: &Context, _key: &ActionKey) -> Result<StageOutput, StageError> {
        let generator = self.generator(cx.item)?;
        let job = self.job(cx.item)?;
        let file = cx.store.temp_file(".png")?;
        let started = std::time::Instant::now();
        let generated = generator.generate(&job, file.path())?;
        let seconds = started.elapsed().as_secs_f64();
        let (width, height) = image_dimensions(file.path())?;
        let mut outputs = BTreeMap::new();
        outputs.insert("image".to_owned(), Output::File(file));
        for (name, value) in generated.extra {
            let bytes = serde_json::to_vec_pretty(&value).map_err(|e| {
                StageError::Failed(format!("cannot serialise output `{name}`: {e}"))
            })?;
            outputs.insert(name, Output::Bytes(bytes));
        }
        Ok(StageOutput {
            outputs,
            meta: json!({"width": width, "height": height, "seconds": seconds}),
        })
    }
}

/// Reads an image file's header; a file that is missing or not an image is an error.
fn image_dimensions(path: &Path) -> Result<(u32, u32), StageError> {
    let not_image = |e: &dyn std::fmt::Display| {
        StageError::Failed(format!(
            "generator output {} is not a decodable image: {e}",
            path.display()
        ))
    };
    image::ImageReader::open(path)
        .map_err(|e| not_image(&e))?
        .with_guessed_format()
        .map_err(|e| not_image(&e))?
        .into_dimensions()
        .map_err(|e| not_image(&e))
}

/// A PNG of `image` scaled to fit a `side`×`side` square (aspect kept), for reports.
pub(crate) fn thumbnail_png(image: image::RgbImage, side: u32) -> Result<Vec<u8>, StageError> {
    let thumb = image::DynamicImage::ImageRgb8(image).thumbnail(side, side);
    let mut png = Vec::new();
    thumb
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| StageError::Failed(format!("cannot encode a thumbnail: {e}")))?;
    Ok(png)
}

/// Decodes the generated image, checks it, and stores a thumbnail and its basic statistics.
pub struct InspectStage {
    /// Longest side of the thumbnail in pixels.
    pub thumbnail: u32,
}

impl Stage for InspectStage {
    fn name(&self) -> &'static str {
        "inspect"
    }

    fn version(&self) -> u32 {
        1
    }

    fn key(&self, cx: &Context) -> Result<ActionKey, StageError> {
        let mut key = new_key(self);
        key.params.insert("thumbnail".into(), json!(self.thumbnail));
        key.inputs
            .insert("image".into(), cx.upstream_output("generate", "image")?);
        Ok(key)
    }

    fn run(&self, cx: &Context, key: &ActionKey) -> Result<StageOutput, StageError> {
        let digest = key.inputs["image"];
        let bytes = cx.store.read_blob(&digest)?;
        let image = image::load_from_memory(&bytes)
            .map_err(|e| StageError::Failed(format!("image {digest} does not decode: {e}")))?
            .to_rgb8();
        let (width, height) = image.dimensions();
        let pixels = f64::from(width) * f64::from(height);
        let mut sums = [0f64; 3];
        for pixel in image.pixels() {
            for (sum, &channel) in sums.iter_mut().zip(&pixel.0) {
                *sum += f64::from(channel);
            }
        }
        let mean: Vec<f64> = sums
            .iter()
            .map(|s| (s / pixels * 1000.0).round() / 1000.0)
            .collect();
        let png = thumbnail_png(image, self.thumbnail)?;
        let mut outputs = BTreeMap::new();
        outputs.insert("thumbnail".to_owned(), Output::Bytes(png));
        Ok(StageOutput {
            outputs,
            meta: json!({"width": width, "height": height, "mean_rgb": mean}),
        })
    }
}
