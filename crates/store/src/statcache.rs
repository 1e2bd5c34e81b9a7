//! A cache of file digests keyed by file metadata, to avoid re-hashing unchanged large files.
//!
//! An entry maps an absolute path to the digest its bytes had when they were last hashed, and to
//! the file's metadata (length, mtime and ctime in nanoseconds, inode, device) at that moment. The
//! digest is trusted only while the file's current metadata is equal to the recorded one: any
//! write changes the ctime (which cannot be set from user space), a replacement changes the inode.
//!
//! Like git's index, the cache guards against "racy" entries: a file modified within the
//! filesystem's timestamp granularity after it was hashed keeps the same metadata. An entry is
//! therefore trusted only if it was hashed more than [`RACY_WINDOW_NS`] after its last change;
//! otherwise it is re-hashed once, later, and then trusted. Blobs the store wrote itself are
//! trusted at once ([`StatCache::insert_written`]): they are read-only and content-addressed.
//!
//! The whole cache lives in memory: it is loaded once when the store opens and written once by
//! [`StatCache::flush`], only if it changed. Several processes may share the file: a flush merges
//! the entries on disk with its own (its own win) and replaces the file atomically. Two
//! concurrent flushes may lose each other's new entries; that only costs a re-hash later, since
//! an entry is never trusted on anything but matching metadata. A missing or damaged cache file
//! is treated as empty (damaged lines are skipped).
//!
//! File format (text, one entry per line, after a header line):
//! `<digest> <len> <mtime_ns> <ctime_ns> <ino> <dev> <verified_ns> <path>`.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Digest;

const HEADER: &str = "scrbench-statcache 1";

/// An entry is trusted only if it was hashed at least this long after the file's last change.
pub const RACY_WINDOW_NS: i64 = 50_000_000;

/// The metadata that must be unchanged for a cached digest to be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub len: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub dev: u64,
}

impl FileMeta {
    pub fn of(metadata: &Metadata) -> FileMeta {
        let ns = |secs: i64, nanos: i64| secs.saturating_mul(1_000_000_000).saturating_add(nanos);
        FileMeta {
            len: metadata.len(),
            mtime_ns: ns(metadata.mtime(), metadata.mtime_nsec()),
            ctime_ns: ns(metadata.ctime(), metadata.ctime_nsec()),
            ino: metadata.ino(),
            dev: metadata.dev(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    digest: Digest,
    meta: FileMeta,
    /// When the digest was computed (ns since the epoch); `i64::MAX` for files the store wrote.
    verified_ns: i64,
}

impl Entry {
    fn trusted(&self) -> bool {
        let changed = self.meta.mtime_ns.max(self.meta.ctime_ns);
        self.verified_ns.saturating_sub(RACY_WINDOW_NS) > changed
    }

    fn line(&self, path: &str) -> String {
        let m = &self.meta;
        format!(
            "{} {} {} {} {} {} {} {path}\n",
            self.digest, m.len, m.mtime_ns, m.ctime_ns, m.ino, m.dev, self.verified_ns
        )
    }

    fn parse(line: &str) -> Option<(PathBuf, Entry)> {
        let mut fields = line.splitn(8, ' ');
        let mut next = || fields.next();
        let digest = next()?.parse().ok()?;
        let meta = FileMeta {
            len: next()?.parse().ok()?,
            mtime_ns: next()?.parse().ok()?,
            ctime_ns: next()?.parse().ok()?,
            ino: next()?.parse().ok()?,
            dev: next()?.parse().ok()?,
        };
        let verified_ns = next()?.parse().ok()?;
        let path = PathBuf::from(next()?);
        path.is_absolute().then_some((
            path,
            Entry {
                digest,
                meta,
                verified_ns,
            },
        ))
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<PathBuf, Entry>,
    dirty: bool,
}

/// The digests of files by absolute path, valid while their metadata is unchanged.
pub struct StatCache {
    file: PathBuf,
    state: Mutex<State>,
}

impl StatCache {
    /// Loads the cache stored in `file` (empty if it does not exist or cannot be read).
    pub fn load(file: PathBuf) -> StatCache {
        let entries = read_entries(&file);
        StatCache {
            file,
            state: Mutex::new(State {
                entries,
                dirty: false,
            }),
        }
    }

    /// The cached digest of `path` if the file's metadata is still `meta` and the entry is trusted.
    pub fn get(&self, path: &Path, meta: &FileMeta) -> Option<Digest> {
        let state = self.state();
        let entry = state.entries.get(path)?;
        (entry.meta == *meta && entry.trusted()).then_some(entry.digest)
    }

    /// Records that `path`, with metadata `meta` (taken before hashing), hashed to `digest` now.
    pub fn insert(&self, path: PathBuf, meta: FileMeta, digest: Digest) {
        self.put(
            path,
            Entry {
                digest,
                meta,
                verified_ns: now_ns(),
            },
        );
    }

    /// Records a file the store has just written itself (and made read-only): trusted at once.
    pub fn insert_written(&self, path: PathBuf, meta: FileMeta, digest: Digest) {
        self.put(
            path,
            Entry {
                digest,
                meta,
                verified_ns: i64::MAX,
            },
        );
    }

    pub fn remove(&self, path: &Path) {
        let mut state = self.state();
        if state.entries.remove(path).is_some() {
            state.dirty = true;
        }
    }

    /// Keeps only the entries whose path satisfies `keep`.
    pub fn retain(&self, mut keep: impl FnMut(&Path) -> bool) {
        let mut state = self.state();
        let before = state.entries.len();
        state.entries.retain(|path, _| keep(path));
        state.dirty |= state.entries.len() != before;
    }

    pub fn len(&self) -> usize {
        self.state().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the cache if it changed since it was loaded or last flushed: merges the entries
    /// other processes flushed meanwhile, writes `tmp`, then renames it over the cache file.
    pub fn flush(&self, tmp: &Path) -> io::Result<()> {
        let mut state = self.state();
        if !state.dirty {
            return Ok(());
        }
        for (path, entry) in read_entries(&self.file) {
            state.entries.entry(path).or_insert(entry);
        }
        let mut out = BufWriter::new(File::create(tmp)?);
        writeln!(out, "{HEADER}")?;
        for (path, entry) in &state.entries {
            // Paths that cannot be written on one line are simply not cached.
            if let Some(path) = path.to_str().filter(|p| !p.contains('\n')) {
                out.write_all(entry.line(path).as_bytes())?;
            }
        }
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(tmp, &self.file)?;
        state.dirty = false;
        Ok(())
    }

    fn put(&self, path: PathBuf, entry: Entry) {
        let mut state = self.state();
        if state.entries.get(&path) != Some(&entry) {
            state.entries.insert(path, entry);
            state.dirty = true;
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent after any panic (single inserts/removes), so poison is harmless.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn read_entries(file: &Path) -> HashMap<PathBuf, Entry> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!("ignoring unreadable stat cache {}: {e}", file.display());
            return HashMap::new();
        }
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        tracing::warn!(
            "ignoring stat cache {} with an unknown format",
            file.display()
        );
        return HashMap::new();
    }
    let entries: HashMap<_, _> = lines.filter_map(Entry::parse).collect();
    let skipped = text.lines().count() - 1 - entries.len();
    if skipped > 0 {
        tracing::debug!(
            "skipped {skipped} damaged or duplicate lines of {}",
            file.display()
        );
    }
    entries
}

fn now_ns() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(path: &Path) -> io::Result<FileMeta> {
        Ok(FileMeta::of(&fs::metadata(path)?))
    }

    #[test]
    fn entries_survive_flush_and_merge() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().canonicalize()?;
        let (a, b) = (root.join("a b"), root.join("b"));
        fs::write(&a, "a")?;
        fs::write(&b, "b")?;
        let cache_file = root.join("cache");
        let (da, db) = (Digest::of_bytes(b"a"), Digest::of_bytes(b"b"));

        let one = StatCache::load(cache_file.clone());
        let two = StatCache::load(cache_file.clone());
        one.insert_written(a.clone(), meta(&a)?, da);
        two.insert_written(b.clone(), meta(&b)?, db);
        one.flush(&root.join("tmp1"))?;
        two.flush(&root.join("tmp2"))?;

        let three = StatCache::load(cache_file);
        assert_eq!(three.len(), 2);
        assert_eq!(three.get(&a, &meta(&a)?), Some(da));
        assert_eq!(three.get(&b, &meta(&b)?), Some(db));
        Ok(())
    }

    #[test]
    fn racy_entries_are_not_trusted() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("f");
        fs::write(&path, "x")?;
        let cache = StatCache::load(dir.path().join("cache"));
        let m = meta(&path)?;
        cache.insert(path.clone(), m, Digest::of_bytes(b"x"));
        assert_eq!(
            cache.get(&path, &m),
            None,
            "hashed right after a change: racy"
        );
        std::thread::sleep(std::time::Duration::from_nanos(2 * RACY_WINDOW_NS as u64));
        cache.insert(path.clone(), m, Digest::of_bytes(b"x"));
        assert_eq!(cache.get(&path, &m), Some(Digest::of_bytes(b"x")));
        Ok(())
    }
}
