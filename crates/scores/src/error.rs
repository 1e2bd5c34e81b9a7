//! Errors: [`MetricError`] for inconsistent embeddings given to the metric functions, [`Error`] for
//! everything that touches files (each names the file, and for records the record).

use std::path::PathBuf;

/// Embeddings that cannot be scored; the image is reported as failed with this reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("no reference subjects to compare with")]
    NoReferences,
    #[error("{encoder}: vectors of different lengths ({left} and {right})")]
    Dimension {
        encoder: &'static str,
        left: usize,
        right: usize,
    },
    #[error("{encoder}: {what} is zero or not finite")]
    Degenerate { encoder: &'static str, what: String },
    #[error(
        "{encoder}: the generated image has an embedding but reference {index} ({name}) has none"
    )]
    MissingReference {
        encoder: &'static str,
        index: usize,
        name: String,
    },
    #[error(
        "{encoder}: reference {index} ({name}) has an embedding but the generated image has none"
    )]
    MissingGenerated {
        encoder: &'static str,
        index: usize,
        name: String,
    },
    #[error("threshold {0} is not a finite number")]
    Threshold(f64),
}

/// Failure to read, import or write scores and reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a results file: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: record {index}{}: {reason}", path.display(), prompt_id.as_ref().map(|id| format!(" ({id})")).unwrap_or_default())]
    Record {
        path: PathBuf,
        index: usize,
        prompt_id: Option<String>,
        reason: String,
    },
    #[error("model {model}, prompt {prompt_id}, seed {seed}: listed twice")]
    Duplicate {
        model: String,
        prompt_id: String,
        seed: u64,
    },
    #[error("figure {figure}: {message}")]
    Figure {
        figure: &'static str,
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
