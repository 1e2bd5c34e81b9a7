//! Whole-store maintenance: counts, verification and garbage collection.
//!
//! These walk the whole store. `gc` must not run while a pipeline writes to the same store unless
//! `keep_younger_than` protects what is being written (a blob stored but not yet recorded is
//! unreferenced).

use std::collections::{BTreeSet, HashMap};
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::fsutil::{self, at};
use crate::statcache::FileMeta;
use crate::{
    ActionEntry, BlobState, Digest, GcPolicy, GcReport, Result, Stats, Store, VerifyReport,
    parse_json, tmp,
};

/// Something `gc` may remove, once nothing kept refers to it.
enum Candidate {
    /// An action entry not referenced by the study, with the digests it refers to.
    Entry {
        path: PathBuf,
        len: u64,
        refs: BTreeSet<Digest>,
    },
    /// A blob no entry refers to.
    Blob(Digest),
}

struct Blob {
    path: PathBuf,
    len: u64,
    young: bool,
    removed: bool,
}

impl Store {
    /// Counts blobs, entries per stage, failures, locks and temporary files.
    pub fn stats(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        for (_, metadata) in self.files("blobs")? {
            stats.blobs += 1;
            stats.blob_bytes += metadata.len();
        }
        let actions = self.dir("actions");
        for (path, _) in self.files("actions")? {
            *stats.actions.entry(stage_of(&actions, &path)).or_default() += 1;
        }
        stats.failures = self.files("failures")?.len() as u64;
        stats.locks = self.files("locks")?.len() as u64;
        stats.tmp_files = self.files("tmp")?.len() as u64;
        Ok(stats)
    }

    /// Re-hashes every blob (ignoring the stat cache) and removes the corrupt ones, then removes
    /// the action entries that do not parse or whose outputs are gone.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for (path, metadata) in self.files("blobs")? {
            let Some(digest) = digest_named(&path, "") else {
                tracing::warn!("unexpected file in the blob directory: {}", path.display());
                continue;
            };
            report.blobs_checked += 1;
            match self.hash_file(&path) {
                Ok(actual) if actual == digest => {
                    self.stat.insert(path, FileMeta::of(&metadata), digest)
                }
                Ok(actual) => {
                    self.discard_corrupt(&path, &format!("its bytes hash to {actual}"));
                    report.corrupt.push(digest);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(at(&path)(e)),
            }
        }
        for (path, _) in self.files("actions")? {
            let problem = match parse_json::<ActionEntry>(&path)? {
                None => continue,
                Some(Err(message)) => message,
                Some(Ok(entry)) => match self.entry_problem(&path, &entry)? {
                    Some(problem) => problem,
                    None => continue,
                },
            };
            tracing::warn!("removing broken entry {}: {problem}", path.display());
            fsutil::remove_file(&path).map_err(at(&path))?;
            report.broken_actions.push(path);
        }
        Ok(report)
    }

    /// Removes the action entries not in `keep` (digests of action keys) and the blobs no remaining
    /// entry refers to (as output or input), within `policy`. Also removes stale temporary files,
    /// abandoned locks and the failures of keys not in `keep`; item records stay.
    pub fn gc(&self, keep: &BTreeSet<Digest>, policy: &GcPolicy) -> Result<GcReport> {
        let young = |metadata: &Metadata| {
            policy
                .keep_younger_than
                .is_some_and(|secs| fsutil::age(metadata) < Duration::from_secs(secs))
        };
        let mtime = |metadata: &Metadata| metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = GcReport::default();
        let mut total = 0;
        let mut candidates = Vec::new();
        let mut refcount: HashMap<Digest, u64> = HashMap::new();

        let entries = self.files("actions")?;
        for (path, metadata) in &entries {
            total += metadata.len();
            let refs: BTreeSet<Digest> = match parse_json::<ActionEntry>(path)? {
                Some(Ok(entry)) => entry
                    .outputs
                    .into_values()
                    .chain(entry.key.inputs.into_values())
                    .collect(),
                _ => BTreeSet::new(),
            };
            for digest in &refs {
                *refcount.entry(*digest).or_default() += 1;
            }
            let kept =
                digest_named(path, ".json").is_some_and(|d| keep.contains(&d)) || young(metadata);
            if !kept {
                let entry = Candidate::Entry {
                    path: path.clone(),
                    len: metadata.len(),
                    refs,
                };
                candidates.push((mtime(metadata), entry));
            }
        }

        let mut blobs = HashMap::new();
        for (path, metadata) in self.files("blobs")? {
            let Some(digest) = digest_named(&path, "") else {
                continue;
            };
            total += metadata.len();
            if !refcount.contains_key(&digest) && !young(&metadata) {
                candidates.push((mtime(&metadata), Candidate::Blob(digest)));
            }
            blobs.insert(
                digest,
                Blob {
                    path,
                    len: metadata.len(),
                    young: young(&metadata),
                    removed: false,
                },
            );
        }

        candidates.sort_by_key(|(mtime, _)| *mtime);
        let limit = policy.max_bytes.unwrap_or(0);
        for (_, candidate) in candidates {
            if total <= limit {
                break;
            }
            let orphans = match candidate {
                Candidate::Blob(digest) => vec![digest],
                Candidate::Entry { path, len, refs } => {
                    self.remove(&path, policy.dry_run)?;
                    report.removed_actions += 1;
                    report.freed_bytes += len;
                    total -= len;
                    let mut orphans = Vec::new();
                    for digest in refs {
                        let count = refcount.entry(digest).or_default();
                        *count = count.saturating_sub(1);
                        if *count == 0 {
                            orphans.push(digest);
                        }
                    }
                    orphans
                }
            };
            for digest in orphans {
                if let Some(blob) = blobs.get_mut(&digest).filter(|b| !b.young && !b.removed) {
                    self.remove(&blob.path, policy.dry_run)?;
                    self.stat.remove(&blob.path);
                    blob.removed = true;
                    report.removed_blobs += 1;
                    report.freed_bytes += blob.len;
                    total -= blob.len;
                }
            }
        }
        report.kept_actions = entries.len() as u64 - report.removed_actions;
        report.kept_blobs = blobs.len() as u64 - report.removed_blobs;

        if !policy.dry_run {
            for (path, metadata) in self.files("failures")? {
                if !digest_named(&path, ".json").is_some_and(|d| keep.contains(&d))
                    && !young(&metadata)
                {
                    self.remove(&path, false)?;
                }
            }
            let tmp_dir = self.dir("tmp");
            tmp::clean(&tmp_dir).map_err(at(&tmp_dir))?;
            self.break_abandoned_locks()?;
            self.stat.retain(Path::exists);
        }
        tracing::info!(
            "gc{}: removed {} entries and {} blobs ({} bytes), kept {} entries and {} blobs",
            if policy.dry_run { " (dry run)" } else { "" },
            report.removed_actions,
            report.removed_blobs,
            report.freed_bytes,
            report.kept_actions,
            report.kept_blobs
        );
        Ok(report)
    }

    fn remove(&self, path: &Path, dry_run: bool) -> Result<()> {
        if !dry_run {
            fsutil::remove_file(path).map_err(at(path))?;
        }
        Ok(())
    }

    /// Why a parsed action entry is broken, if it is.
    fn entry_problem(&self, path: &Path, entry: &ActionEntry) -> Result<Option<String>> {
        if digest_named(path, ".json") != Some(entry.key.digest()) {
            return Ok(Some("its name is not the digest of its key".to_owned()));
        }
        for (output, digest) in &entry.outputs {
            let state = self.check_blob(digest)?;
            if state != BlobState::Ok {
                return Ok(Some(format!("output `{output}` ({digest}) is {state:?}")));
            }
        }
        Ok(None)
    }

    fn files(&self, dir: &str) -> Result<Vec<(PathBuf, Metadata)>> {
        let dir = self.dir(dir);
        fsutil::files_under(&dir).map_err(at(&dir))
    }
}

/// The digest a file is named after (`<digest><extension>`), if it is.
fn digest_named(path: &Path, extension: &str) -> Option<Digest> {
    path.file_name()?
        .to_str()?
        .strip_suffix(extension)?
        .parse()
        .ok()
}

/// The stage directory of a file under `base` (`<base>/<stage>/...`).
fn stage_of(base: &Path, path: &Path) -> String {
    let stage = path
        .strip_prefix(base)
        .ok()
        .and_then(|rel| rel.components().next());
    stage
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default()
}
