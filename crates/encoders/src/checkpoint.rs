//! Finding a checkpoint on disk and reading its tensors.
//!
//! A [`ModelSpec`] names a model the way a user writes it: a local directory, or a Hugging Face hub
//! id with an optional revision. [`Checkpoint::resolve`] turns it into files on disk: the directory,
//! the resolved revision (the snapshot's commit sha when it came from the hub cache), `config.json`
//! and the weight files (one `model.safetensors`, or the shards listed in
//! `model.safetensors.index.json`). Models are then built from a [`Weights`] view of those files,
//! which checks every tensor's name and shape and reports mismatches by name.
//!
//! Hub ids are resolved offline, through the cache layout `huggingface_hub` and the `hf-hub` crate
//! share: `$HF_HUB_CACHE` (default `$HF_HOME/hub`, default `~/.cache/huggingface/hub`) holds
//! `models--{org}--{name}/refs/{revision}` (a file holding the commit sha) and
//! `models--{org}--{name}/snapshots/{sha}/` (the files). This crate never downloads and never
//! substitutes another model: a model that is not cached is an [`Error::NotCached`] that says how to
//! point at a local directory instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use crate::error::{Error, Result};

/// What the user asked for: a local directory or a hub id, plus an optional revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// A local directory holding `config.json`, or a hub id such as `facebook/dinov2-small`.
    pub model: String,
    /// Hub revision (branch, tag or commit sha); `None` means `main`. Ignored for directories.
    pub revision: Option<String>,
}

impl ModelSpec {
    /// A spec for `model` at the default revision.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            revision: None,
        }
    }

    /// The same spec pinned to `revision`.
    pub fn with_revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = Some(revision.into());
        self
    }
}

/// A checkpoint's files on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// What the checkpoint was resolved from: the hub id, or the directory as given.
    pub model: String,
    /// Directory holding the files.
    pub dir: PathBuf,
    /// The snapshot's commit sha when resolved from the hub cache; `None` for a plain directory.
    pub revision: Option<String>,
    /// `config.json`.
    pub config_file: PathBuf,
    /// The safetensors files holding the weights, sorted. Hash these for cache keys.
    pub weight_files: Vec<PathBuf>,
}

impl Checkpoint {
    /// Resolves `spec` to files on disk, without any network access.
    pub fn resolve(spec: &ModelSpec) -> Result<Self> {
        Self::resolve_in(spec, &hub_cache_dir())
    }

    /// [`Checkpoint::resolve`] against the hub cache directory `cache`.
    pub fn resolve_in(spec: &ModelSpec, cache: &Path) -> Result<Self> {
        let path = Path::new(&spec.model);
        if path.is_dir() {
            return Self::from_dir(path);
        }
        let revision = spec.revision.as_deref().unwrap_or("main");
        let dir = resolve_cached(&spec.model, revision, cache)?;
        let mut checkpoint = Self::from_dir(&dir)?;
        checkpoint.model = spec.model.clone();
        checkpoint.revision = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        Ok(checkpoint)
    }

    /// A checkpoint in a plain directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config_file = dir.join("config.json");
        if !config_file.is_file() {
            return Err(Error::MissingFile { path: config_file });
        }
        let weight_files = weight_files(dir)?;
        tracing::debug!(dir = %dir.display(), files = weight_files.len(), "checkpoint resolved");
        Ok(Self {
            model: dir.display().to_string(),
            dir: dir.to_path_buf(),
            revision: None,
            config_file,
            weight_files,
        })
    }

    /// Parses `config.json` into `T`.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        read_json(&self.config_file)
    }

    /// A file beside the config (for example `tokenizer.json`), if present.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        let path = self.dir.join(name);
        path.is_file().then_some(path)
    }

    /// Opens the weight files.
    pub fn weights(&self, device: &Device) -> Result<Weights> {
        Weights::open(&self.weight_files, device)
    }
}

/// The hub cache directory, following `HF_HUB_CACHE`, then `HF_HOME`, then `~/.cache/huggingface`.
pub fn hub_cache_dir() -> PathBuf {
    hub_cache_dir_from(|key| std::env::var_os(key))
}

/// [`hub_cache_dir`] with the environment supplied by `var` (for tests and embedding).
pub fn hub_cache_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let set = |key: &str| var(key).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = set("HF_HOME") {
        return home.join("hub");
    }
    let home = set("HOME").unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// Finds the snapshot directory of `model` at `revision` in the hub cache at `cache`.
pub fn resolve_cached(model: &str, revision: &str, cache: &Path) -> Result<PathBuf> {
    let not_cached = |reason: String| Error::NotCached {
        model: model.to_string(),
        revision: revision.to_string(),
        reason,
    };
    if model.split('/').count() != 2 || model.split('/').any(str::is_empty) {
        return Err(not_cached(format!(
            "it is neither a local directory nor a hub id of the form `org/name` (cache {})",
            cache.display()
        )));
    }
    let repo = cache.join(format!("models--{}", model.replace('/', "--")));
    if !repo.is_dir() {
        return Err(not_cached(format!("{} does not exist", repo.display())));
    }
    let is_sha = revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit());
    let sha = if is_sha {
        revision.to_string()
    } else {
        let refs = repo.join("refs").join(revision);
        let text = std::fs::read_to_string(&refs)
            .map_err(|e| not_cached(format!("cannot read {}: {e}", refs.display())))?;
        text.trim().to_string()
    };
    let snapshot = repo.join("snapshots").join(&sha);
    if !snapshot.join("config.json").is_file() {
        return Err(not_cached(format!(
            "snapshot {} has no config.json",
            snapshot.display()
        )));
    }
    if offline() {
        tracing::debug!("HF_HUB_OFFLINE set; using the cache only");
    }
    tracing::info!(model, revision, sha = %sha, "resolved from the hub cache");
    Ok(snapshot)
}

/// Whether `HF_HUB_OFFLINE` asks for cache-only operation (this crate never downloads anyway).
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

#[derive(Deserialize)]
struct SafetensorsIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_file = dir.join("model.safetensors.index.json");
    if !index_file.is_file() {
        return Err(Error::MissingFile { path: single });
    }
    let index: SafetensorsIndex = read_json(&index_file)?;
    let names: BTreeSet<&String> = index.weight_map.values().collect();
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(Error::MissingFile { path });
        }
        files.push(path);
    }
    Ok(files)
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Where one tensor lives in a safetensors file.
#[derive(Debug, Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Weight files, read tensor by tensor; hands out f32 tensors checked by name and shape.
///
/// Tensors are read with plain file reads rather than a memory map, so loading costs the f32
/// weights plus one tensor in flight, not the whole file resident on top of them.
pub struct Weights {
    /// Tensor name → (file index, data start in the file, entry).
    index: std::collections::HashMap<String, (usize, u64, TensorEntry)>,
    paths: Vec<PathBuf>,
    files: String,
    device: Device,
}

impl Weights {
    /// Reads the headers of `files`.
    pub fn open(files: &[PathBuf], device: &Device) -> Result<Self> {
        use std::io::Read;
        let mut index = std::collections::HashMap::new();
        for (i, path) in files.iter().enumerate() {
            let io = |source| Error::Io {
                path: path.clone(),
                source,
            };
            if !path.is_file() {
                return Err(Error::MissingFile { path: path.clone() });
            }
            let mut file = std::fs::File::open(path).map_err(io)?;
            let mut len = [0u8; 8];
            file.read_exact(&mut len).map_err(io)?;
            let len = u64::from_le_bytes(len);
            let file_len = file.metadata().map_err(io)?.len();
            if len > file_len.saturating_sub(8) {
                return Err(Error::Config {
                    path: path.clone(),
                    reason: "not a safetensors file (header length past the end)".into(),
                });
            }
            let mut header = vec![0u8; len as usize];
            file.read_exact(&mut header).map_err(io)?;
            let header: std::collections::HashMap<String, serde_json::Value> =
                serde_json::from_slice(&header).map_err(|source| Error::Json {
                    path: path.clone(),
                    source,
                })?;
            for (name, value) in header {
                if name == "__metadata__" {
                    continue;
                }
                let entry: TensorEntry =
                    serde_json::from_value(value).map_err(|source| Error::Json {
                        path: path.clone(),
                        source,
                    })?;
                index.insert(name, (i, 8 + len, entry));
            }
        }
        let names = files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self {
            index,
            paths: files.to_vec(),
            files: names,
            device: device.clone(),
        })
    }

    /// A view at the root of the name space.
    pub fn root(&self) -> Vb<'_> {
        Vb {
            weights: self,
            prefix: String::new(),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        use std::io::{Read, Seek, SeekFrom};
        let (file, base, entry) = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            files: self.files.clone(),
        })?;
        if entry.shape != shape {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: entry.shape.clone(),
            });
        }
        let path = &self.paths[*file];
        let bad = |reason: String| Error::Config {
            path: path.clone(),
            reason: format!("tensor `{name}`: {reason}"),
        };
        let dtype = match entry.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            other => return Err(bad(format!("unsupported dtype {other}"))),
        };
        let (start, end) = entry.data_offsets;
        let expected = shape.iter().product::<usize>() * dtype.size_in_bytes();
        if end < start || (end - start) as usize != expected {
            return Err(bad(format!(
                "{} bytes stored for {expected} expected",
                end.saturating_sub(start)
            )));
        }
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let offset = base
            .checked_add(start)
            .ok_or_else(|| bad("data offset overflows".into()))?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut bytes = vec![0u8; expected];
        f.read_exact(&mut bytes).map_err(io)?;
        let tensor = Tensor::from_raw_buffer(&bytes, dtype, shape, &Device::Cpu)?;
        Ok(tensor.to_dtype(DType::F32)?.to_device(&self.device)?)
    }
}

/// A prefixed view of [`Weights`], the way HF module paths nest (`encoder.layer.0.norm1.weight`).
#[derive(Clone)]
pub struct Vb<'a> {
    weights: &'a Weights,
    prefix: String,
}

impl<'a> Vb<'a> {
    /// The view for the sub-module `name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Vb<'a> {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Vb {
            weights: self.weights,
            prefix,
        }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The tensor `name` under this prefix, which must have `shape`; converted to f32.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.weights.get(&self.path(name), shape)
    }

    /// Whether the tensor `name` exists under this prefix.
    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains(&self.path(name))
    }

    /// The device tensors are loaded to.
    pub fn device(&self) -> &Device {
        &self.weights.device
    }
}
