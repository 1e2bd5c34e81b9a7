//! Temporary files under `tmp/`, named after their writer so that leftovers of dead writers can be
//! removed: `<writer tag>-<pid>-<counter>-<random><suffix>`, where the tag is the host name and a
//! hash of the node id (boot id and PID namespace), so that a pid is only judged by processes that
//! share its host, boot and namespace; other writers' files are removed only once a day old.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::fsutil::{self, hostname, node_id, pid_alive};

/// Temporary files older than this are removed whoever wrote them.
pub(crate) const MAX_TMP_AGE: Duration = Duration::from_secs(24 * 3600);

/// A path under the store's `tmp/` directory for a file about to be stored.
///
/// The file is *not* created: the writer creates it at [`TempFile::path`] (the suffix given to
/// [`crate::Store::temp_file`] lets tools infer a format from the extension). Dropping a
/// `TempFile` removes the file if it exists, unless [`crate::Store::put_file`] consumed it.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    pub(crate) fn new(dir: &Path, suffix: &str) -> TempFile {
        TempFile {
            path: dir.join(unique_name(suffix)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the file from being removed on drop (it was renamed into place).
    pub(crate) fn disarm(mut self) {
        self.path = PathBuf::new();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            return;
        }
        if let Err(e) = fsutil::remove_file(&self.path) {
            tracing::warn!("cannot remove temporary file {}: {e}", self.path.display());
        }
    }
}

/// `<host name>.<8 hex digits of the node id>` (just the host name where there is no node id): the
/// writer part of temporary file names. Contains no `-`.
pub(crate) fn writer_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        if node_id().is_empty() {
            return hostname().to_owned();
        }
        // FNV-1a: stable across builds and platforms.
        let mut hash: u32 = 0x811c_9dc5;
        for byte in node_id().bytes() {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
        format!("{}.{hash:08x}", hostname())
    })
}

/// A name no other writer (thread, process or host) uses. Characters of `suffix` outside
/// `[A-Za-z0-9._]` become `_`.
pub(crate) fn unique_name(suffix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix: String = suffix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{}-{}-{counter}-{:016x}{suffix}",
        writer_tag(),
        std::process::id(),
        fsutil::random_u64()
    )
}

/// The host and pid that wrote a temporary file, from its name.
fn writer(name: &str) -> Option<(&str, u32)> {
    let mut parts = name.splitn(3, '-');
    let host = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    Some((host, pid))
}

/// Whether a temporary file is a leftover: written by a dead process of this host (same writer
/// tag), or too old.
pub(crate) fn is_stale(path: &Path, metadata: &std::fs::Metadata) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let dead = writer(name).is_some_and(|(host, pid)| host == writer_tag() && !pid_alive(pid));
    dead || fsutil::age(metadata) > MAX_TMP_AGE
}

/// Removes the stale temporary files in `dir` (see [`is_stale`]); returns how many.
pub(crate) fn clean(dir: &Path) -> io::Result<u64> {
    let mut removed = 0;
    for (path, metadata) in fsutil::files_under(dir)? {
        if is_stale(&path, &metadata) && fsutil::remove_file(&path)? {
            tracing::debug!("removed stale temporary file {}", path.display());
            removed += 1;
        }
    }
    Ok(removed)
}
