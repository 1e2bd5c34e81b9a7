//! The content-addressed store that makes every stage resumable and shareable.
//!
//! Two kinds of things live in a store:
//! - **blobs**: immutable files addressed by the SHA-256 [`Digest`] of their bytes;
//! - **action entries**: for one stage applied to one set of inputs, the digests of the blobs it
//!   produced. An entry is addressed by the digest of its [`ActionKey`], a serialisable struct of
//!   everything that determines the output (stage name and version, parameters, input digests,
//!   model identity).
//!
//! Beside them, per item (e.g. `mosaic/01_no_interaction/42`) and stage the store remembers the
//! last key used, so that a miss can be explained ([`MissReason`]) by diffing keys, like cargo's
//! fingerprints.
//!
//! Invariants:
//! - a blob file's bytes always hash to its name; writers write to `tmp/`, fsync and rename;
//! - an action entry is written last, after all its output blobs are durable, so an entry never
//!   points to a blob that was not completely written;
//! - every read of a blob verifies its digest (through the [`statcache`] when the file's metadata is
//!   unchanged since the last verification); a corrupt or truncated blob is logged, removed and
//!   reported as a miss, never returned.

pub mod digest;
pub mod lock;
pub mod statcache;

pub use digest::Digest;
pub use lock::LockGuard;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything that determines one stage's output for one item. Its digest addresses the entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionKey {
    pub stage: String,
    pub stage_version: u32,
    /// Parameters that affect the output (prompt text, seed, sizes, thresholds...).
    pub params: BTreeMap<String, serde_json::Value>,
    /// Digests of the input files or blobs, by role (e.g. `image`, `ref.0`).
    pub inputs: BTreeMap<String, Digest>,
    /// Model identity (name, adapter, adapter version, revision, weight digests...), if a model is involved.
    pub model: BTreeMap<String, String>,
}

impl ActionKey {
    /// Digest of the canonical JSON form (object keys sorted, no whitespace).
    pub fn digest(&self) -> Digest {
        todo!()
    }
}

/// A completed action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionEntry {
    pub key: ActionKey,
    /// Output blobs by role (e.g. `image`, `truth`).
    pub outputs: BTreeMap<String, Digest>,
    /// Small free-form metadata about the computation (timings, worker, ...).
    pub meta: serde_json::Value,
    /// Unix seconds when recorded.
    pub created: u64,
}

/// A failed attempt of an action, kept so that `status` and reports show it; retried on the next run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureEntry {
    pub key: ActionKey,
    pub item: String,
    pub message: String,
    pub created: u64,
}

/// Why an action would (re)run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum MissReason {
    /// Never computed for this item.
    New,
    StageVersion { old: u32, new: u32 },
    Param { name: String, old: Option<serde_json::Value>, new: Option<serde_json::Value> },
    Input { name: String, old: Option<Digest>, new: Option<Digest> },
    Model { field: String, old: Option<String>, new: Option<String> },
    /// The entry exists but an output blob is missing.
    OutputMissing { output: String, digest: Digest },
    /// The entry exists but an output blob failed verification (it has been removed).
    OutputCorrupt { output: String, digest: Digest },
    /// The last attempt failed; it will be retried.
    Failed { message: String },
    /// The item's previous key is unknown but this key was never computed (e.g. a different cache).
    Unknown,
}

/// The result of looking up a key.
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    Hit(ActionEntry),
    Miss(Vec<MissReason>),
}

/// Counts for `cache stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub actions: BTreeMap<String, u64>,
    pub failures: u64,
    pub locks: u64,
    pub tmp_files: u64,
}

/// Result of `cache verify`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    /// Blobs whose bytes did not match their name; removed.
    pub corrupt: Vec<Digest>,
    /// Action entries that were unreadable or referenced missing blobs; removed.
    pub broken_actions: Vec<PathBuf>,
}

/// What `cache gc` may remove besides what is unreferenced.
#[derive(Clone, Debug, Default)]
pub struct GcPolicy {
    /// Keep unreferenced entries younger than this many seconds.
    pub keep_younger_than: Option<u64>,
    /// Remove unreferenced entries, oldest first, until the store is at most this many bytes.
    pub max_bytes: Option<u64>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    pub removed_actions: u64,
    pub removed_blobs: u64,
    pub freed_bytes: u64,
    pub kept_actions: u64,
    pub kept_blobs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: unreadable entry: {message}")]
    BadEntry { path: PathBuf, message: String },
    #[error("blob {0} is not in the store or failed verification")]
    MissingBlob(Digest),
    #[error("timed out after {seconds}s waiting for lock {path} held by {holder}")]
    LockTimeout { path: PathBuf, holder: String, seconds: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A store rooted at one directory. Cheap to clone? No: share it behind an `Arc`.
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) a store at `root`; removes temporary files of dead writers.
    pub fn open(root: &Path) -> Result<Store> {
        let _ = root;
        todo!()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}
