//! Generators: what turns one [`GenerationJob`] into one image.
//!
//! Every generator, native or a GPU worker process, implements [`Generator`]. The pipeline asks it
//! for its [`Identity`] and the extra input files a job depends on (both go into the cache key),
//! then calls [`Generator::generate`] with a path to write a PNG to.
//!
//! Native generators:
//! - [`replay::Replay`] copies published images from a folder in the paper's layout
//!   (`<dir>/<prompt_id>/<seed>.png`);
//! - [`reference::Reference`] passes a subject's reference image through, so references are
//!   inspected and embedded by the same stages as generated images;
//! - [`sleep::Sleep`] only sleeps and writes a tiny PNG: a stand-in for a slow model in benchmarks;
//! - [`compose::Compose`] pastes the reference subjects onto a canvas with controlled collapse and
//!   records the ground truth, so metrics can be checked where the truth is known.
//! - [`worker::WorkerGenerator`] drives an out-of-process adapter (MOSAIC, XVerse, FLUX…) through
//!   the worker protocol; its manifest schema is in [`worker`].

pub mod compose;
pub mod reference;
pub mod replay;
pub mod sleep;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use benchmark::Scene;
use benchmark::expand::{ModelPrompt, PromptFormat};
use serde::{Deserialize, Serialize};

/// One image to generate: prompt × model × seed, with the prompt already in the model's format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationJob {
    /// Model name as configured, e.g. `mosaic-paper`.
    pub model: String,
    pub prompt_id: String,
    pub seed: u64,
    pub scene: Scene,
    /// Subject names in benchmark order (also for text-only formats).
    pub subjects: Vec<String>,
    pub prompt: ModelPrompt,
}

/// Everything about a generator that determines its outputs besides the job itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    /// Adapter name, e.g. `replay`, `compose`, `mosaic`.
    pub adapter: String,
    /// Adapter version; bump it when the adapter's output changes for the same settings.
    pub version: String,
    /// Model id and revision where there is one (e.g. `black-forest-labs/FLUX.1-dev@<sha>`).
    pub model: BTreeMap<String, String>,
    /// Settings that affect the output (size, steps, guidance, collapse...).
    pub settings: serde_json::Value,
}

/// What a generator reports besides the image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    /// Extra outputs stored beside the image as JSON blobs, e.g. `truth` for compose.
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no image for {prompt_id}/{seed}: {path} does not exist")]
    MissingImage {
        prompt_id: String,
        seed: u64,
        path: PathBuf,
    },
    #[error("{path}: {message}")]
    BadImage { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid settings for adapter `{adapter}`: {message}")]
    Settings { adapter: String, message: String },
    #[error("{0}")]
    Other(String),
}

/// The interface every generation adapter implements. Calls may block (they run on a blocking
/// thread); `generate` may be called from several threads at once up to the configured concurrency.
pub trait Generator: Send + Sync {
    fn identity(&self) -> Identity;

    /// The prompt format this generator takes.
    fn prompt_format(&self) -> PromptFormat;

    /// Files besides the references whose content determines the job's output (replay: the source
    /// image). A missing file is an error naming it.
    fn job_inputs(&self, job: &GenerationJob) -> Result<Vec<PathBuf>, Error> {
        let _ = job;
        Ok(Vec::new())
    }

    /// Generates the image for `job` and writes it as a PNG to `out`.
    fn generate(&self, job: &GenerationJob, out: &Path) -> Result<Generated, Error>;
}
