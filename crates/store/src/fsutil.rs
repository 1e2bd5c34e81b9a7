//! Small filesystem helpers: error context, directory fsync, walking, ages and process identity.

use std::fs::{self, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Error;

/// Wraps an I/O error with the path it concerns: `.map_err(at(&path))`.
pub(crate) fn at(path: &Path) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { path, source }
}

/// Makes a rename or creation in `dir` durable. Filesystems that cannot fsync a directory are
/// tolerated.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir)?.sync_all() {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Removes a file; `Ok(false)` if it was already gone.
pub(crate) fn remove_file(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Every regular file under `dir` (recursively) with its metadata; nothing if `dir` is missing.
/// Files that vanish while walking (other processes) are skipped.
pub(crate) fn files_under(dir: &Path) -> io::Result<Vec<(PathBuf, Metadata)>> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if metadata.is_dir() {
                dirs.push(entry.path());
            } else if metadata.is_file() {
                files.push((entry.path(), metadata));
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Time since the file was last modified (zero if its mtime is in the future).
pub(crate) fn age(metadata: &Metadata) -> Duration {
    let modified = metadata.modified().unwrap_or_else(|_| SystemTime::now());
    SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default()
}

/// Unix time in seconds.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// This machine's host name, restricted to `[A-Za-z0-9.]` (others become `_`) so that it can be
/// embedded in file names split on `-`.
pub(crate) fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let raw = fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| fs::read_to_string("/etc/hostname"))
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let host: String = raw
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if host.is_empty() {
            "localhost".to_owned()
        } else {
            host
        }
    })
}

/// This kernel's boot id and this process's PID namespace (`<boot id>/pid:[<inode>]`), or `""`
/// where `/proc` cannot tell. A pid means the same process only to processes that share both: a
/// second machine that happens to have the same host name has another boot id, a container with
/// its own PID namespace has another namespace.
pub(crate) fn node_id() -> &'static str {
    static NODE: OnceLock<String> = OnceLock::new();
    NODE.get_or_init(|| {
        let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let namespace = fs::read_link("/proc/self/ns/pid")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if boot.is_empty() || namespace.is_empty() {
            String::new()
        } else {
            format!("{boot}/{namespace}")
        }
    })
}

/// Whether process `pid` of this host is alive. Without `/proc` it cannot tell and says yes, so
/// that nothing of a live process is ever removed.
pub(crate) fn pid_alive(pid: u32) -> bool {
    pid == std::process::id()
        || !Path::new("/proc/self").exists()
        || Path::new(&format!("/proc/{pid}")).exists()
}

/// 64 random bits (not cryptographic), for unique names and jitter.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((
        SystemTime::now(),
        std::process::id(),
        std::thread::current().id(),
    ))
}
