//! The crate's error type.
//!
//! Every fallible function returns [`Result`]. Variants name what went wrong in terms a user can act
//! on: which file, which tensor, which shape, and how to point at a local checkpoint instead.

use std::path::PathBuf;

/// Errors from resolving, loading or running an encoder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The checkpoint could not be found in the local Hugging Face cache (or the directory given).
    #[error(
        "model `{model}` (revision `{revision}`) is not available locally: {reason}. \
         Download it elsewhere and point at the directory holding config.json and \
         model.safetensors (a local path as the model spec), or set HF_HOME / HF_HUB_CACHE \
         to a cache that holds it"
    )]
    NotCached {
        model: String,
        revision: String,
        reason: String,
    },
    /// A file the checkpoint needs is missing.
    #[error("checkpoint file {path} is missing")]
    MissingFile { path: PathBuf },
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (config, index, tokenizer) is malformed.
    #[error("cannot parse {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The configuration is valid JSON but describes something this crate cannot run.
    #[error("unsupported configuration in {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// A tensor the model needs is absent from the weight files.
    #[error("tensor `{name}` is missing from the weights ({files})")]
    MissingTensor { name: String, files: String },
    /// A tensor has a different shape than the configuration implies.
    #[error("tensor `{name}` has shape {actual:?}, but the configuration implies {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    /// The input tensor does not fit the model (channels, size not divisible by the patch size...).
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
