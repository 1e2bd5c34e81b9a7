//! The study configuration (`pipeline.yaml`): benchmark, seeds, models, cache and concurrency.
//!
//! Relative paths are resolved against the directory of the configuration file, so a study file
//! means the same thing from any working directory. Unknown keys are errors with their location.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use generate::compose::ComposeSettings;
use generate::replay::ReplaySettings;
use generate::sleep::SleepSettings;
use generate::worker::WorkerSettings;

use crate::detect::DetectionConfig;
use crate::embed::EncodersConfig;
use serde::Deserialize;

/// A study as written in YAML.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Study name; reports go to `<reports>/<study>/`.
    pub study: String,
    /// A dataset folder (with `val_dataset/prompts_50.txt`), a `prompts_50.txt` file or a YAML
    /// benchmark.
    pub benchmark: PathBuf,
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// The content-addressed store (default `cache`).
    #[serde(default = "default_cache")]
    pub cache: PathBuf,
    /// Where reports are written (default `reports`).
    #[serde(default = "default_reports")]
    pub reports: PathBuf,
    #[serde(default)]
    pub concurrency: Concurrency,
    /// Image and text encoders for the embedding stages; none configured = no embedding stages.
    #[serde(default)]
    pub encoders: EncodersConfig,
    /// Where the encoders run: `cpu` (default) or `cuda` (a build with `--features cuda`).
    #[serde(default)]
    pub device: DeviceChoice,
    /// SCR thresholds τ (a subject counts as collapsed when its DINOv2 cosine is below τ).
    #[serde(default = "default_thresholds")]
    pub thresholds: Vec<f64>,
    /// Subject detection for the per-subject (local) SCR; absent = no detection stages.
    #[serde(default)]
    pub detection: Option<DetectionConfig>,
    /// Run stage by stage and free each stage's models when it is done, so that only one encoder
    /// is loaded at a time (lower peak memory, same results).
    #[serde(default)]
    pub low_memory: bool,
    /// Models by name.
    pub models: BTreeMap<String, ModelConfig>,
    /// Defaults for `scrbench run --executor slurm` (its flags override them); absent = none.
    #[serde(default)]
    pub slurm: Option<SlurmConfig>,
}

/// The `slurm:` section: defaults for the Slurm executor's flags and extra `#SBATCH` options.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// Array tasks (shards), like `--array N`.
    pub array: Option<usize>,
    /// GPUs per array task, like `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    pub partition: Option<String>,
    /// Time limit per task in any form `sbatch --time` takes, e.g. `4:00:00`.
    pub time: Option<String>,
    pub account: Option<String>,
    /// More `sbatch` options, one per `#SBATCH` line of both scripts, e.g. `--mem=32G`.
    #[serde(default)]
    pub extra: Vec<String>,
}

/// How many items each stage works on at once.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Concurrency {
    /// Generation requests in flight (default 2). A worker adapter serves its requests one at a
    /// time; a second one waits in the worker, so its GPU never waits for scrbench.
    pub generate: usize,
    /// Images inspected at once (CPU).
    pub inspect: usize,
    /// Embeddings computed at once per encoder (a model already uses every core).
    pub embed: usize,
    /// Images per encoder forward pass.
    pub batch: usize,
}

/// The device the encoders run on; chosen explicitly, never silently changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda,
}

impl Default for Concurrency {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Concurrency {
            generate: 2,
            inspect: cpus,
            embed: 1,
            batch: 16,
        }
    }
}

/// One model: which adapter generates its images, and the adapter's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "adapter", rename_all = "lowercase")]
pub enum ModelConfig {
    /// Published images from a folder in the paper's layout.
    Replay(ReplaySettings),
    /// Synthetic scenes with controlled collapse and ground truth.
    Compose(ComposeSettings),
    /// A stand-in for a slow model: sleeps, then writes a tiny PNG (benchmarks, cluster tests).
    Sleep(SleepSettings),
    /// An out-of-process adapter (MOSAIC, XVerse, FLUX…) speaking the worker protocol; see
    /// `generate::worker` for its manifest and settings.
    Worker(WorkerSettings),
}

fn default_seeds() -> Vec<u64> {
    vec![42, 43, 44]
}

fn default_thresholds() -> Vec<f64> {
    vec![0.4, 0.5, 0.6]
}

fn default_cache() -> PathBuf {
    PathBuf::from("cache")
}

fn default_reports() -> PathBuf {
    PathBuf::from("reports")
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl StudyConfig {
    /// Reads and validates `path`, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<StudyConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut config: StudyConfig =
            serde_saphyr::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if config.models.is_empty() {
            return Err(invalid("no models are defined under `models:`".into()));
        }
        if config.seeds.is_empty() {
            return Err(invalid("`seeds:` is empty".into()));
        }
        let c = &config.concurrency;
        if c.generate == 0 || c.inspect == 0 || c.embed == 0 || c.batch == 0 {
            return Err(invalid("concurrency values must be at least 1".into()));
        }
        for name in config.models.keys() {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with(['.', '@']) {
                return Err(invalid(format!(
                    "model name `{name}` must be non-empty, not start with `.` or `@` (reserved), \
                     and contain no `/`"
                )));
            }
        }
        if config.detection.is_some() && config.encoders.dinov2.is_none() {
            return Err(invalid(
                "`detection:` needs a DINOv2 encoder under `encoders: dinov2:` (crops are \
                 matched to references by DINOv2 cosine)"
                    .into(),
            ));
        }
        if let Some(detection) = &config.detection {
            detection.validate().map_err(invalid)?;
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        config.benchmark = base.join(&config.benchmark);
        config.cache = base.join(&config.cache);
        config.reports = base.join(&config.reports);
        config.encoders.resolve_paths(&base);
        if let Some(detection) = &mut config.detection {
            detection.resolve_paths(&base);
        }
        for model in config.models.values_mut() {
            match model {
                ModelConfig::Replay(settings) => settings.dir = base.join(&settings.dir),
                ModelConfig::Worker(settings) => {
                    settings.dir = base.join(&settings.dir);
                    // A bare name (`python3`) is looked up on PATH; a relative path is the config's.
                    if let Some(python) = &mut settings.python
                        && python.is_relative()
                        && python.components().count() > 1
                    {
                        *python = base.join(&*python);
                    }
                }
                ModelConfig::Compose(_) | ModelConfig::Sleep(_) => {}
            }
        }
        Ok(config)
    }

    /// Finds `pipeline.yaml` in `start` or the nearest ancestor directory.
    pub fn find_default(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .map(|dir| dir.join("pipeline.yaml"))
            .find(|p| p.is_file())
    }
}
