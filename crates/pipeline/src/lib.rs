//! Study configuration, stages, the resumable runner, status, explain and reports.
//!
//! A [`Pipeline`] is a study opened for work: its [`config::StudyConfig`], the loaded
//! [`benchmark::Benchmark`], the [`store::Store`] and the list of [`stage::Stage`]s. The runner
//! ([`runner`]) pushes [`items::Item`]s through the stages; [`Pipeline::status`],
//! [`Pipeline::explain`] and [`report`] read the same store without computing anything, through
//! one function that evaluates an item's stages against the store.

pub mod config;
pub mod detect;
pub mod detector;
pub mod embed;
pub mod explain;
pub mod items;
mod lazy;
pub mod local;
pub mod report;
pub mod runner;
pub mod score;
pub mod stage;
mod workers;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use benchmark::Benchmark;
use generate::Generator;
use generate::compose::Compose;
use generate::reference::{REFERENCES, Reference};
use generate::replay::Replay;
use generate::sleep::Sleep;
use generate::worker::WorkerGenerator;
use serde::Serialize;
use store::{Digest, Store};
use tokio_util::sync::CancellationToken;

use crate::config::{ModelConfig, StudyConfig};
use crate::items::{Item, ItemId, Selection};
use crate::runner::{RunOptions, RunSummary, StageState};
use crate::stage::{GenerateStage, InspectStage, Stage};

pub use explain::Explanation;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    // Causes are `source`s: the binary prints the chain (`{:#}`), so messages do not repeat them.
    #[error("benchmark {path}")]
    Benchmark {
        path: PathBuf,
        source: Box<benchmark::Error>,
    },
    #[error("model `{model}`")]
    Model {
        model: String,
        source: generate::Error,
    },
    #[error("encoder `{encoder}`")]
    Encoder {
        encoder: &'static str,
        source: encoders::Error,
    },
    #[error("detector")]
    Detector { source: detector::DetectorError },
    #[error("cache {path}")]
    Store { path: PathBuf, source: store::Error },
    #[error(transparent)]
    Selection(#[from] items::SelectionError),
    #[error("no item `{0}` in this study")]
    UnknownItem(String),
    #[error("{path}: cannot write report")]
    Report {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// A study opened for work.
pub struct Pipeline {
    pub config: StudyConfig,
    pub bench: Arc<Benchmark>,
    pub store: Store,
    stages: Vec<Arc<dyn Stage>>,
    /// The reference subjects' embeddings, as the score stage reads them.
    references: score::ReferenceEmbeddings,
}

impl Pipeline {
    /// Loads the benchmark, opens the store and builds every model's generator.
    pub fn open(config: StudyConfig) -> Result<Pipeline, PipelineError> {
        let bench =
            Benchmark::load(&config.benchmark).map_err(|source| PipelineError::Benchmark {
                path: config.benchmark.clone(),
                source: Box::new(source),
            })?;
        let bench = Arc::new(bench);
        let store = Store::open(&config.cache).map_err(|source| PipelineError::Store {
            path: config.cache.clone(),
            source,
        })?;
        let mut generators: BTreeMap<String, Arc<dyn Generator>> = BTreeMap::new();
        for (name, model) in &config.models {
            let model_error = |source| PipelineError::Model {
                model: name.clone(),
                source,
            };
            let generator: Arc<dyn Generator> = match model {
                ModelConfig::Replay(settings) => {
                    Arc::new(Replay::new(settings.clone()).map_err(model_error)?)
                }
                ModelConfig::Compose(settings) => {
                    Arc::new(Compose::new(settings.clone()).map_err(model_error)?)
                }
                ModelConfig::Sleep(settings) => {
                    Arc::new(Sleep::new(settings.clone()).map_err(model_error)?)
                }
                ModelConfig::Worker(settings) => Arc::new(
                    WorkerGenerator::new(name, settings.clone(), &config.cache)
                        .map_err(model_error)?,
                ),
            };
            generators.insert(name.clone(), generator);
        }
        generators.insert(REFERENCES.to_owned(), Arc::new(Reference));
        let mut stages: Vec<Arc<dyn Stage>> = vec![
            Arc::new(GenerateStage {
                bench: bench.clone(),
                generators,
            }),
            Arc::new(InspectStage { thumbnail: 128 }),
        ];
        let (embedders, dinov2) = embedding_stages(&config)?;
        stages.extend(embedders);
        let references = score::ReferenceEmbeddings::default();
        let encoders: Vec<&'static str> = stages
            .iter()
            .map(|s| s.name())
            .filter(|name| name.starts_with("embed-") && *name != "embed-clip-text")
            .collect();
        if !encoders.is_empty() {
            stages.push(Arc::new(score::ScoreStage {
                encoders,
                thresholds: config.thresholds.clone(),
                references: references.clone(),
            }));
        }
        // Detection stages come after `score`, so an image whose detection fails is still scored.
        if let (Some(detection), Some(dinov2)) = (&config.detection, dinov2) {
            let device = || device(&config);
            let model = detector::DetectorModel::open(detection, device, &config.cache)
                .map_err(|source| PipelineError::Detector { source })?;
            stages.push(Arc::new(detect::DetectStage { model }));
            stages.push(Arc::new(detect::CropStage {
                config: detection.clone(),
            }));
            stages.push(Arc::new(local::EmbedCropsStage::new(
                dinov2,
                config.concurrency.batch,
            )));
            stages.push(Arc::new(local::LocalScoreStage {
                thresholds: config.thresholds.clone(),
                matching: detection.matching,
                references: references.clone(),
            }));
        }
        Ok(Pipeline {
            config,
            bench,
            store,
            stages,
            references,
        })
    }

    /// Whether reference images go through the stages too (they do once embeddings are computed).
    pub fn uses_references(&self) -> bool {
        !self.config.encoders.is_empty()
    }

    /// Reads the reference subjects' embedding digests from the store for the score stage.
    /// Blocking.
    fn refresh_references(&self) {
        let subjects: Vec<Item> = self
            .bench
            .subjects
            .iter()
            .filter_map(|s| Item::reference(&self.bench, &s.name))
            .collect();
        let mut table = BTreeMap::new();
        for item in subjects {
            let mut digests = BTreeMap::new();
            for (stage, state) in runner::evaluate(self, &item) {
                if let (true, StageState::Done(entry)) = (stage.starts_with("embed-"), state)
                    && let Some(digest) = entry.outputs.get("embedding")
                {
                    digests.insert(stage.to_owned(), *digest);
                }
            }
            table.insert(item.prompt.id.clone(), digests);
        }
        if let Ok(mut references) = self.references.write() {
            *references = table;
        }
    }

    /// Stage names in order.
    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    pub(crate) fn concurrency(&self, stage: &str) -> usize {
        match stage {
            "generate" => self.config.concurrency.generate,
            "inspect" => self.config.concurrency.inspect,
            _ => self.config.concurrency.embed,
        }
    }

    /// The selected items in canonical order.
    pub fn items(&self, selection: &Selection) -> Result<Vec<Item>, PipelineError> {
        let models: Vec<String> = self.config.models.keys().cloned().collect();
        Ok(items::select(
            &self.bench,
            &models,
            &self.config.seeds,
            selection,
        )?)
    }

    /// Runs the selected items; writes the report afterwards unless this is a dry run or a shard.
    pub async fn run(
        self: Arc<Self>,
        selection: &Selection,
        options: &RunOptions,
        cancel: CancellationToken,
    ) -> Result<RunSummary, PipelineError> {
        let items = self.items(selection)?;
        let references = if self.uses_references() {
            items::references(&self.bench, &items)
        } else {
            Vec::new()
        };
        // Normally one pass through every stage. With `low_memory`, one pass per stage, each
        // stage's models released once every item is past it, so one model is loaded at a time.
        let last = self.stages.len() - 1;
        let passes: Vec<usize> = if self.config.low_memory && !options.dry_run {
            (0..=last).collect()
        } else {
            vec![last]
        };
        let mut summary = RunSummary::default();
        for upto in passes {
            let mut pass = RunSummary::default();
            if !references.is_empty() {
                // References first: every image's scores need them.
                pass = runner::run(
                    self.clone(),
                    references.clone(),
                    options,
                    cancel.clone(),
                    upto,
                )
                .await?;
                let pipeline = self.clone();
                tokio::task::spawn_blocking(move || pipeline.refresh_references())
                    .await
                    .map_err(|e| PipelineError::Internal(e.to_string()))?;
            }
            if pass.fatal.is_none() && !pass.interrupted {
                let run = runner::run(self.clone(), items.clone(), options, cancel.clone(), upto);
                pass.merge(run.await?);
            }
            if self.config.low_memory && !options.dry_run {
                // Earlier stages were counted by earlier passes.
                let stage = self.stages[upto].name();
                pass.stages.retain(|name, _| name == stage);
                pass.failures.retain(|f| f.stage == stage);
                self.stages[upto].release();
            }
            let stop = pass.fatal.is_some() || pass.interrupted;
            summary.merge(pass);
            summary.items = references.len() + items.len();
            if stop {
                break;
            }
        }
        let pipeline = self.clone();
        let dry_run = options.dry_run;
        let sharded = selection.shard.is_some();
        tokio::task::spawn_blocking(move || {
            pipeline.flush()?;
            if !dry_run && !sharded {
                pipeline.write_report()?;
            }
            Ok::<_, PipelineError>(())
        })
        .await
        .map_err(|e| PipelineError::Internal(e.to_string()))??;
        Ok(summary)
    }

    /// Persists what the store keeps in memory (its stat cache).
    pub fn flush(&self) -> Result<(), PipelineError> {
        self.store.flush().map_err(|source| PipelineError::Store {
            path: self.config.cache.clone(),
            source,
        })
    }

    /// Evaluates every selected item against the store. Blocking.
    pub fn evaluate(
        &self,
        selection: &Selection,
    ) -> Result<Vec<(Item, ItemStates)>, PipelineError> {
        let mut items = self.items(selection)?;
        if self.uses_references() {
            self.refresh_references();
            let mut all = items::references(&self.bench, &items);
            all.append(&mut items);
            items = all;
        }
        Ok(items
            .into_iter()
            .map(|item| {
                let states = runner::evaluate(self, &item);
                (item, states)
            })
            .collect())
    }

    /// Done / missing / failed counts per model × stage.
    pub fn status(&self, selection: &Selection) -> Result<Status, PipelineError> {
        Ok(Status::of(&self.evaluate(selection)?))
    }

    /// Why `id` would or would not run, stage by stage.
    pub fn explain(&self, id: &ItemId) -> Result<Explanation, PipelineError> {
        if self.uses_references() {
            self.refresh_references();
        }
        let selection = Selection {
            models: vec![id.model.clone()],
            prompts: vec![id.prompt_id.clone()],
            seeds: vec![id.seed],
            ..Selection::default()
        };
        if id.model == REFERENCES {
            let item = Item::reference(&self.bench, &id.prompt_id)
                .filter(|_| id.seed == 0)
                .ok_or_else(|| {
                    PipelineError::UnknownItem(format!("{REFERENCES}/{}/{}", id.prompt_id, id.seed))
                })?;
            return Ok(Explanation::new(&item, runner::evaluate(self, &item)));
        }
        let item = self
            .items(&selection)
            .map_err(|_| {
                PipelineError::UnknownItem(format!("{}/{}/{}", id.model, id.prompt_id, id.seed))
            })?
            .into_iter()
            .next()
            .ok_or_else(|| {
                PipelineError::UnknownItem(format!("{}/{}/{}", id.model, id.prompt_id, id.seed))
            })?;
        Ok(Explanation::new(&item, runner::evaluate(self, &item)))
    }

    /// The action keys the whole study references now (what `cache gc` keeps).
    pub fn referenced_keys(&self) -> Result<BTreeSet<Digest>, PipelineError> {
        let mut keep = BTreeSet::new();
        for (_, states) in self.evaluate(&Selection::default())? {
            keep.extend(
                states
                    .iter()
                    .filter_map(|(_, s)| runner::current_key(s))
                    .map(|k| k.digest()),
            );
        }
        Ok(keep)
    }

    /// Rebuilds `reports/<study>/` from the store alone. Blocking.
    pub fn write_report(&self) -> Result<PathBuf, PipelineError> {
        let dir = self.config.reports.join(&self.config.study);
        let evaluated = self.evaluate(&Selection::default())?;
        report::write(&dir, self, &evaluated).map_err(|source| PipelineError::Report {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }
}

/// The embedding stages of the configured encoders, in a fixed order, and the DINOv2 encoder (for
/// the crops) if configured.
fn embedding_stages(config: &StudyConfig) -> Result<EmbeddingStages, PipelineError> {
    use embed::{EmbedStage, Encoder, Family, TextEmbedStage};
    let encoders = &config.encoders;
    if encoders.is_empty() {
        return Ok((Vec::new(), None));
    }
    let device = device(config).map_err(|source| PipelineError::Encoder {
        encoder: "device",
        source,
    })?;
    tracing::info!("encoders run on {device:?}");
    let mut stages: Vec<Arc<dyn Stage>> = Vec::new();
    let mut dinov2 = None;
    for (family, name, configured) in [
        (Family::Dinov2, "dinov2", &encoders.dinov2),
        (Family::Dino, "dino", &encoders.dino),
        (Family::Clip, "clip", &encoders.clip),
    ] {
        let Some(configured) = configured else {
            continue;
        };
        let encoder = Encoder::resolve(family, configured, &device).map_err(|source| {
            PipelineError::Encoder {
                encoder: name,
                source,
            }
        })?;
        let encoder = Arc::new(encoder);
        if family == Family::Dinov2 {
            dinov2 = Some(encoder.clone());
        }
        stages.push(Arc::new(EmbedStage::new(
            encoder.clone(),
            config.concurrency.batch,
        )));
        if family == Family::Clip {
            stages.push(Arc::new(TextEmbedStage::new(encoder)));
        }
    }
    Ok((stages, dinov2))
}

/// The device the configured models run on.
fn device(config: &StudyConfig) -> Result<candle_core::Device, encoders::Error> {
    match config.device {
        config::DeviceChoice::Cpu => Ok(candle_core::Device::Cpu),
        config::DeviceChoice::Cuda => Ok(candle_core::Device::new_cuda(0)?),
    }
}

type EmbeddingStages = (Vec<Arc<dyn Stage>>, Option<Arc<embed::Encoder>>);

/// Counts for one model × stage.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatusRow {
    pub model: String,
    pub stage: String,
    pub done: usize,
    pub missing: usize,
    pub failed: usize,
}

/// What `status` shows.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub rows: Vec<StatusRow>,
    pub failures: Vec<runner::Failure>,
}

/// The state of each stage of one item, in stage order.
pub type ItemStates = Vec<(&'static str, StageState)>;

/// Items with the state of each of their stages, in canonical order.
pub type Evaluated = [(Item, ItemStates)];

impl Status {
    /// Counts the evaluated items; rows follow the items' model order and the stage order.
    pub fn of(evaluated: &Evaluated) -> Status {
        let mut status = Status::default();
        for (item, states) in evaluated {
            for (stage, state) in states {
                let position = status
                    .rows
                    .iter()
                    .position(|r| r.model == item.model && r.stage == *stage);
                let row = match position {
                    Some(i) => &mut status.rows[i],
                    None => {
                        status.rows.push(StatusRow {
                            model: item.model.clone(),
                            stage: (*stage).to_owned(),
                            ..StatusRow::default()
                        });
                        let last = status.rows.len() - 1;
                        &mut status.rows[last]
                    }
                };
                match (state, state.failed()) {
                    (StageState::Done(_), _) => row.done += 1,
                    (_, Some(message)) => {
                        row.failed += 1;
                        status.failures.push(runner::Failure {
                            item: item.id(),
                            stage: (*stage).to_owned(),
                            message: message.to_owned(),
                        });
                    }
                    _ => row.missing += 1,
                }
            }
        }
        status
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<20} {:<15} {:>6} {:>8} {:>7}",
            "model", "stage", "done", "missing", "failed"
        )?;
        for row in &self.rows {
            writeln!(
                f,
                "{:<20} {:<15} {:>6} {:>8} {:>7}",
                row.model, row.stage, row.done, row.missing, row.failed
            )?;
        }
        if !self.failures.is_empty() {
            writeln!(f, "\nfailed items:")?;
            for failure in &self.failures {
                writeln!(
                    f,
                    "  {} [{}]: {}",
                    failure.item, failure.stage, failure.message
                )?;
            }
        }
        Ok(())
    }
}
