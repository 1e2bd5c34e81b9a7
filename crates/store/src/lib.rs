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
//!
//! Layout under the root (`<2 hex>` is the first byte of the file's digest, in hex):
//! - `blobs/<2 hex>/<digest>`: blobs, read-only;
//! - `actions/<stage>/<2 hex>/<key digest>.json`: [`ActionEntry`];
//! - `failures/<stage>/<2 hex>/<key digest>.json`: the last [`FailureEntry`] of a key, removed when
//!   the key succeeds;
//! - `items/<stage>/<2 hex>/<digest of the item>.json`: the item's last key (success or failure);
//! - `locks/<key digest>.lock`: leases ([`lock`]);
//! - `tmp/<host>-<pid>-<counter>-<random><suffix>`: files being written ([`TempFile`]);
//! - `statcache/entries`: the [`statcache`].
//!
//! Computing a key from several threads or processes without doing it twice:
//! [`Store::lookup`]; on a miss [`Store::try_lock`] (or [`Store::lock`]); [`Store::lookup`] again,
//! since the previous holder may just have finished; compute into [`Store::temp_file`]s; store
//! them with [`Store::put_file`] / [`Store::put_bytes`]; [`Store::record`] (or
//! [`Store::record_failure`]); drop the guard. Call [`Store::flush`] at the end of a run (it is
//! also attempted when the store is dropped).

pub mod digest;
mod fsutil;
pub mod lock;
mod maintenance;
pub mod statcache;
#[cfg(test)]
mod tests;
mod tmp;

pub use digest::{Digest, ParseDigestError};
pub use lock::LockGuard;
pub use tmp::TempFile;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fsutil::at;
use crate::statcache::{FileMeta, StatCache};

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
        // Cannot fail: every map has string keys and every value is plain data.
        let value = serde_json::to_value(self).expect("an ActionKey always serialises to JSON");
        let mut canonical = String::new();
        write_canonical(&value, &mut canonical);
        Digest::of_bytes(canonical.as_bytes())
    }

    /// Why `self` differs from the `old` key of the same item: stage version, then parameters,
    /// inputs and model fields, each by name. Empty if they are equal.
    pub fn diff(&self, old: &ActionKey) -> Vec<MissReason> {
        let mut reasons = Vec::new();
        if old.stage_version != self.stage_version {
            reasons.push(MissReason::StageVersion {
                old: old.stage_version,
                new: self.stage_version,
            });
        }
        reasons.extend(
            diff_maps(&old.params, &self.params).map(|(name, old, new)| MissReason::Param {
                name,
                old,
                new,
            }),
        );
        reasons.extend(
            diff_maps(&old.inputs, &self.inputs).map(|(name, old, new)| MissReason::Input {
                name,
                old,
                new,
            }),
        );
        reasons.extend(
            diff_maps(&old.model, &self.model).map(|(field, old, new)| MissReason::Model {
                field,
                old,
                new,
            }),
        );
        reasons
    }
}

/// Compact JSON with the keys of every object sorted, whatever the map type behind `Value`.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, value)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(name.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The names whose values differ between two maps, sorted, with the old and new values.
fn diff_maps<'a, V: Clone + PartialEq>(
    old: &'a BTreeMap<String, V>,
    new: &'a BTreeMap<String, V>,
) -> impl Iterator<Item = (String, Option<V>, Option<V>)> + 'a {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names.into_iter().filter_map(|name| {
        let (old, new) = (old.get(name), new.get(name));
        (old != new).then(|| (name.clone(), old.cloned(), new.cloned()))
    })
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
    StageVersion {
        old: u32,
        new: u32,
    },
    Param {
        name: String,
        old: Option<serde_json::Value>,
        new: Option<serde_json::Value>,
    },
    Input {
        name: String,
        old: Option<Digest>,
        new: Option<Digest>,
    },
    Model {
        field: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// The entry exists but an output blob is missing.
    OutputMissing {
        output: String,
        digest: Digest,
    },
    /// The entry exists but an output blob failed verification (it has been removed).
    OutputCorrupt {
        output: String,
        digest: Digest,
    },
    /// The last attempt failed; it will be retried.
    Failed {
        message: String,
    },
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
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unreadable entry: {message}")]
    BadEntry { path: PathBuf, message: String },
    #[error("blob {0} is not in the store or failed verification")]
    MissingBlob(Digest),
    #[error("timed out after {seconds}s waiting for lock {path} held by {holder}")]
    LockTimeout {
        path: PathBuf,
        holder: String,
        seconds: u64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What [`Store::check_blob`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobState {
    Ok,
    Missing,
    /// The file did not hash to its name; it has been removed.
    Corrupt,
}

/// The last key recorded for an item at a stage, to explain misses.
#[derive(Serialize, Deserialize)]
struct ItemRecord {
    item: String,
    key: ActionKey,
    digest: Digest,
}

/// The directories under a store's root.
const DIRS: [&str; 7] = [
    "blobs",
    "actions",
    "failures",
    "items",
    "locks",
    "tmp",
    "statcache",
];

/// How long a lock holder's lease lasts without refresh, unless set with [`Store::with_lease`].
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// A store rooted at one directory, shared by threads (behind an `Arc`) and by processes, possibly
/// on several hosts. See the crate documentation for the layout and invariants.
///
/// The stat cache is loaded at [`Store::open`] and written by [`Store::flush`] (also attempted on
/// drop).
pub struct Store {
    root: PathBuf,
    lease: Duration,
    stat: StatCache,
    hashes: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) a store at `root`; removes temporary files of dead writers on
    /// this host and any older than 24 hours.
    pub fn open(root: &Path) -> Result<Store> {
        for dir in DIRS {
            let dir = root.join(dir);
            fs::create_dir_all(&dir).map_err(at(&dir))?;
        }
        let root = root.canonicalize().map_err(at(root))?;
        let tmp = root.join("tmp");
        let removed = tmp::clean(&tmp).map_err(at(&tmp))?;
        if removed > 0 {
            tracing::info!(
                "removed {removed} stale temporary files from {}",
                tmp.display()
            );
        }
        let stat = StatCache::load(root.join("statcache").join("entries"));
        Ok(Store {
            root,
            lease: DEFAULT_LEASE,
            stat,
            hashes: AtomicU64::new(0),
        })
    }

    /// Sets the lease of the locks this store takes and the age after which others' locks are
    /// considered abandoned; all processes sharing a store should use the same lease.
    pub fn with_lease(mut self, lease: Duration) -> Store {
        self.lease = lease;
        self
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many times this handle hashed the bytes of a file (blob or input), for diagnostics:
    /// the stat cache keeps this near zero on a rerun.
    pub fn hash_count(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// A fresh path under `tmp/` ending with `suffix` (e.g. `.png`). The file is not created:
    /// write it, then give it to [`Store::put_file`]; dropped unconsumed, it is removed.
    pub fn temp_file(&self, suffix: &str) -> Result<TempFile> {
        Ok(TempFile::new(&self.dir("tmp"), suffix))
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir("blobs")
            .join(digest.fan_out())
            .join(digest.to_string())
    }

    /// Stores a written temporary file as a blob (read-only) and returns its digest. If the blob
    /// is already stored, the temporary file is just removed.
    pub fn put_file(&self, tmp: TempFile) -> Result<Digest> {
        let path = tmp.path();
        let file = File::open(path).map_err(at(path))?;
        self.hashes.fetch_add(1, Ordering::Relaxed);
        let digest = Digest::of_reader(&file).map_err(at(path))?;
        if self.check_blob(&digest)? == BlobState::Ok {
            return Ok(digest);
        }
        file.sync_all().map_err(at(path))?;
        drop(file);
        self.install(tmp, &digest)?;
        Ok(digest)
    }

    /// Stores `bytes` as a blob and returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if self.check_blob(&digest)? == BlobState::Ok {
            return Ok(digest);
        }
        let tmp = self.temp_file("")?;
        let path = tmp.path();
        let mut file = File::create_new(path).map_err(at(path))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(at(path))?;
        drop(file);
        self.install(tmp, &digest)?;
        Ok(digest)
    }

    /// Moves a durable temporary file whose bytes hash to `digest` to its blob path.
    fn install(&self, tmp: TempFile, digest: &Digest) -> Result<()> {
        let dest = self.blob_path(digest);
        let dir = self.dir("blobs").join(digest.fan_out());
        fs::set_permissions(tmp.path(), Permissions::from_mode(0o444)).map_err(at(tmp.path()))?;
        fs::create_dir_all(&dir).map_err(at(&dir))?;
        fs::rename(tmp.path(), &dest).map_err(at(&dest))?;
        tmp.disarm();
        fsutil::sync_dir(&dir).map_err(at(&dir))?;
        let metadata = fs::metadata(&dest).map_err(at(&dest))?;
        self.stat
            .insert_written(dest, FileMeta::of(&metadata), *digest);
        Ok(())
    }

    /// Whether the blob is stored intact. Re-hashes it unless the stat cache vouches for it; a
    /// corrupt blob is logged and removed.
    pub fn check_blob(&self, digest: &Digest) -> Result<BlobState> {
        let path = self.blob_path(digest);
        let metadata = match fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BlobState::Missing),
            Err(e) => return Err(at(&path)(e)),
        };
        let meta = FileMeta::of(&metadata);
        if self.stat.get(&path, &meta) == Some(*digest) {
            return Ok(BlobState::Ok);
        }
        match self.hash_file(&path) {
            Ok(actual) if actual == *digest => {
                self.stat.insert(path, meta, actual);
                Ok(BlobState::Ok)
            }
            Ok(actual) => {
                self.discard_corrupt(&path, &format!("its bytes hash to {actual}"));
                Ok(BlobState::Corrupt)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BlobState::Missing),
            Err(e) => Err(at(&path)(e)),
        }
    }

    /// Reads a blob, verifying the bytes read. A missing or corrupt blob (then removed) is
    /// [`Error::MissingBlob`].
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingBlob(*digest));
            }
            Err(e) => return Err(at(&path)(e)),
        };
        self.hashes.fetch_add(1, Ordering::Relaxed);
        let actual = Digest::of_bytes(&bytes);
        if actual != *digest {
            self.discard_corrupt(&path, &format!("its bytes hash to {actual}"));
            return Err(Error::MissingBlob(*digest));
        }
        Ok(bytes)
    }

    /// The digest of any file (reference images, replay sources), through the stat cache.
    pub fn file_digest(&self, path: &Path) -> Result<Digest> {
        let path = path.canonicalize().map_err(at(path))?;
        let metadata = fs::metadata(&path).map_err(at(&path))?;
        let meta = FileMeta::of(&metadata);
        if let Some(digest) = self.stat.get(&path, &meta) {
            return Ok(digest);
        }
        let digest = self.hash_file(&path).map_err(at(&path))?;
        self.stat.insert(path, meta, digest);
        Ok(digest)
    }

    /// The recorded entry for `key`, without checking its outputs (see [`Store::lookup`]).
    pub fn entry(&self, key: &ActionKey) -> Result<Option<ActionEntry>> {
        let digest = key.digest();
        let entry =
            self.read_json::<ActionEntry>(&self.keyed_path("actions", &key.stage, &digest))?;
        Ok(entry.filter(|entry| entry.key.digest() == digest))
    }

    /// Whether `key` was computed with all its outputs intact, or why it must be computed for
    /// `item`. An entry whose outputs are missing or corrupt is removed.
    pub fn lookup(&self, item: &str, key: &ActionKey) -> Result<Lookup> {
        if let Some(entry) = self.entry(key)? {
            let mut reasons = Vec::new();
            for (output, digest) in &entry.outputs {
                let (output, digest) = (output.clone(), *digest);
                match self.check_blob(&digest)? {
                    BlobState::Ok => {}
                    BlobState::Missing => {
                        reasons.push(MissReason::OutputMissing { output, digest })
                    }
                    BlobState::Corrupt => {
                        reasons.push(MissReason::OutputCorrupt { output, digest })
                    }
                }
            }
            if reasons.is_empty() {
                return Ok(Lookup::Hit(entry));
            }
            let path = self.keyed_path("actions", &key.stage, &key.digest());
            tracing::info!("removing entry {} of {item}: {reasons:?}", path.display());
            fsutil::remove_file(&path).map_err(at(&path))?;
            return Ok(Lookup::Miss(reasons));
        }
        if let Some(failure) = self.failure(key)? {
            return Ok(Lookup::Miss(vec![MissReason::Failed {
                message: failure.message,
            }]));
        }
        let reasons = match self.last_key(&key.stage, item)? {
            None => vec![MissReason::New],
            Some(old) => key.diff(&old),
        };
        Ok(Lookup::Miss(if reasons.is_empty() {
            vec![MissReason::Unknown]
        } else {
            reasons
        }))
    }

    /// Records that `key` produced `outputs` (already stored) for `item`. The entry is written
    /// after checking every output and before the item record; a failure entry is removed.
    pub fn record(
        &self,
        item: &str,
        key: &ActionKey,
        outputs: BTreeMap<String, Digest>,
        meta: Value,
    ) -> Result<ActionEntry> {
        for digest in outputs.values() {
            if self.check_blob(digest)? != BlobState::Ok {
                return Err(Error::MissingBlob(*digest));
            }
        }
        let digest = key.digest();
        let entry = ActionEntry {
            key: key.clone(),
            outputs,
            meta,
            created: fsutil::unix_now(),
        };
        self.write_json(&self.keyed_path("actions", &key.stage, &digest), &entry)?;
        self.write_item_record(item, key, digest)?;
        let failure = self.keyed_path("failures", &key.stage, &digest);
        fsutil::remove_file(&failure).map_err(at(&failure))?;
        Ok(entry)
    }

    /// Records a failed attempt of `key` for `item`; it will be retried on the next run.
    pub fn record_failure(&self, item: &str, key: &ActionKey, message: &str) -> Result<()> {
        let digest = key.digest();
        let failure = FailureEntry {
            key: key.clone(),
            item: item.to_owned(),
            message: message.to_owned(),
            created: fsutil::unix_now(),
        };
        self.write_json(&self.keyed_path("failures", &key.stage, &digest), &failure)?;
        self.write_item_record(item, key, digest)
    }

    /// The last failure of `key`, if it has not succeeded since.
    pub fn failure(&self, key: &ActionKey) -> Result<Option<FailureEntry>> {
        let digest = key.digest();
        let failure =
            self.read_json::<FailureEntry>(&self.keyed_path("failures", &key.stage, &digest))?;
        Ok(failure.filter(|failure| failure.key.digest() == digest))
    }

    /// The last key recorded (success or failure) for `item` at `stage`.
    pub fn last_key(&self, stage: &str, item: &str) -> Result<Option<ActionKey>> {
        let record = self.read_json::<ItemRecord>(&self.item_path(stage, item))?;
        Ok(record.map(|record| record.key))
    }

    /// Persists the stat cache if it changed.
    pub fn flush(&self) -> Result<()> {
        let tmp = self.temp_file(".statcache")?;
        self.stat
            .flush(tmp.path())
            .map_err(at(&self.dir("statcache")))?;
        tmp.disarm();
        Ok(())
    }

    fn write_item_record(&self, item: &str, key: &ActionKey, digest: Digest) -> Result<()> {
        let record = ItemRecord {
            item: item.to_owned(),
            key: key.clone(),
            digest,
        };
        self.write_json(&self.item_path(&key.stage, item), &record)
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `<kind>/<stage>/<2 hex>/<digest>.json`.
    fn keyed_path(&self, kind: &str, stage: &str, digest: &Digest) -> PathBuf {
        let stage: String = stage
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let stage = if stage.is_empty() || stage.starts_with('.') {
            format!("_{stage}")
        } else {
            stage
        };
        self.dir(kind)
            .join(stage)
            .join(digest.fan_out())
            .join(format!("{digest}.json"))
    }

    fn item_path(&self, stage: &str, item: &str) -> PathBuf {
        self.keyed_path("items", stage, &Digest::of_bytes(item.as_bytes()))
    }

    fn hash_file(&self, path: &Path) -> io::Result<Digest> {
        self.hashes.fetch_add(1, Ordering::Relaxed);
        Digest::of_file(path)
    }

    fn discard_corrupt(&self, path: &Path, why: &str) {
        tracing::warn!("removing corrupt blob {}: {why}", path.display());
        self.stat.remove(path);
        if let Err(e) = fsutil::remove_file(path) {
            tracing::warn!("cannot remove corrupt blob {}: {e}", path.display());
        }
    }

    /// Reads a JSON file; a missing one is `None`, an unreadable one is logged, removed and `None`.
    fn read_json<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        match parse_json(path)? {
            Some(Err(message)) => {
                tracing::warn!("removing unreadable {}: {message}", path.display());
                fsutil::remove_file(path).map_err(at(path))?;
                Ok(None)
            }
            parsed => Ok(parsed.and_then(Result::ok)),
        }
    }

    /// Writes a JSON file atomically and durably: temporary file, fsync, rename, directory fsync.
    fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::BadEntry {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let tmp = self.temp_file(".json")?;
        let mut file = File::create_new(tmp.path()).map_err(at(tmp.path()))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(at(tmp.path()))?;
        drop(file);
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(at(dir))?;
        fs::rename(tmp.path(), path).map_err(at(path))?;
        tmp.disarm();
        fsutil::sync_dir(dir).map_err(at(dir))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("cannot save the stat cache: {e}");
        }
    }
}

/// Reads a JSON file: `None` if it does not exist, `Some(Err(message))` if it does not parse.
fn parse_json<T: DeserializeOwned>(path: &Path) -> Result<Option<Result<T, String>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(at(path)(e)),
    }
}
