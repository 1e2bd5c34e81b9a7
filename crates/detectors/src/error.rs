//! The crate's error type.

use std::path::PathBuf;

/// Errors from loading or running a detector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Resolving or loading the checkpoint failed (missing file, tensor, shape mismatch...).
    #[error(transparent)]
    Checkpoint(#[from] encoders::Error),
    /// The configuration is valid JSON but describes something this crate cannot run.
    #[error("unsupported configuration in {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// The input does not fit the model (empty image, no queries, wrong pixel size...).
    #[error("invalid input: {0}")]
    Input(String),
    /// Tokenisation failed.
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// An error from candle while computing.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
