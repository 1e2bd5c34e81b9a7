//! Per-key locks as lease files that expire when their holder dies.
//!
//! A lock is the file `locks/<key digest>.lock`, created exclusively (`O_EXCL`, which NFSv3+ and
//! local filesystems honour) and holding `{host, node, pid, nonce, acquired}` as JSON. While a
//! [`LockGuard`] lives, a background thread renews the lease by touching the file's mtime every
//! third of the lease; dropping the guard removes the file if it still holds the guard's nonce.
//!
//! A waiter polls every 20–50 ms. It breaks a lock that is abandoned: its holder ran on this host
//! and its pid is no longer alive, or its mtime is older than the lease (a holder that crashed on
//! another host, or whose host is gone). A pid is only ever checked for a holder that is local:
//! same host name and, where recorded, same `node` (boot id and PID namespace, see
//! [`fsutil::node_id`]), so that on a shared filesystem another node's lock, or a container's
//! with its own PID namespace, is judged by its lease alone, never by a pid that means another
//! process here. Breaking renames the lock file to a unique name in
//! `tmp/` and checks that the file moved is still the one judged abandoned (same bytes, still
//! abandoned); if not, it was re-created or renewed meanwhile and is linked back into place.
//!
//! Residual race: if a third process creates a lock in the short window between that rename and
//! the link back, the link fails and two holders run at once. Each holder's renewal then notices
//! that the file is no longer its own and logs a warning. This only duplicates work: outputs are
//! content-addressed and every write is an atomic rename, so the store stays consistent.
//!
//! Expiry compares the file's mtime with this host's clock: hosts sharing a store must have
//! clocks synchronised well within the lease.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, at, hostname, node_id, pid_alive};
use crate::{Digest, Error, Result, Store, tmp};

/// The contents of a lock file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Holder {
    host: String,
    /// Boot id and PID namespace of the holder; empty in locks written before it was recorded
    /// (then the host name alone decides whether the pid can be checked).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    node: String,
    pid: u32,
    nonce: String,
    /// Unix seconds.
    acquired: u64,
}

impl Holder {
    /// Whether the holder's pid names a process this process can see: same host and node.
    fn is_local(&self) -> bool {
        let here = node_id();
        self.host == hostname() && (self.node.is_empty() || here.is_empty() || self.node == here)
    }
}

/// A lock file as seen by a waiter.
struct Observed {
    bytes: Vec<u8>,
    /// `None` while the holder is still writing it, or if it is damaged.
    holder: Option<Holder>,
    age: Duration,
}

impl Observed {
    /// Reads the lock file at `path`; `None` if there is none.
    fn read(path: &Path) -> io::Result<Option<Observed>> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let age = fsutil::age(&file.metadata()?);
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let holder = serde_json::from_slice(&bytes).ok();
        Ok(Some(Observed { bytes, holder, age }))
    }

    /// Why the lock is abandoned, if it is.
    fn abandoned(&self, lease: Duration) -> Option<&'static str> {
        let dead = |h: &Holder| h.is_local() && !pid_alive(h.pid);
        if self.holder.as_ref().is_some_and(dead) {
            Some("its holder is dead")
        } else if self.age > lease {
            Some("its lease expired")
        } else {
            None
        }
    }

    fn describe(&self) -> String {
        match &self.holder {
            Some(h) => format!(
                "pid {} on {} (since unix time {})",
                h.pid, h.host, h.acquired
            ),
            None => "an unknown holder".to_owned(),
        }
    }
}

/// What one attempt to take a lock found.
enum Attempt {
    Acquired(LockGuard),
    Held(String),
}

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct LockGuard {
    path: PathBuf,
    nonce: String,
    /// Dropping the sender stops the renewing thread.
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<thread::JoinHandle<()>>,
}

impl LockGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn start(path: PathBuf, nonce: String, lease: Duration) -> io::Result<LockGuard> {
        let (stop, stopped) = mpsc::channel::<()>();
        let period = (lease / 3).max(Duration::from_millis(10));
        let renewer = thread::Builder::new()
            .name("store-lease".to_owned())
            .spawn({
                let (path, nonce) = (path.clone(), nonce.clone());
                move || {
                    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(period) {
                        if !renew(&path, &nonce) {
                            break;
                        }
                    }
                }
            })?;
        Ok(LockGuard {
            path,
            nonce,
            stop: Some(stop),
            renewer: Some(renewer),
        })
    }

    pub(crate) fn is_ours(&self) -> bool {
        is_ours(&self.path, &self.nonce)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        if !self.is_ours() {
            tracing::warn!(
                "lock {} was taken from us before release",
                self.path.display()
            );
        } else if let Err(e) = fsutil::remove_file(&self.path) {
            tracing::warn!("cannot release lock {}: {e}", self.path.display());
        }
    }
}

fn is_ours(path: &Path, nonce: &str) -> bool {
    matches!(Observed::read(path), Ok(Some(o)) if o.holder.as_ref().is_some_and(|h| h.nonce == nonce))
}

/// Renews the lease of the lock at `path` if it is still ours; false once it is not.
fn renew(path: &Path, nonce: &str) -> bool {
    if !is_ours(path, nonce) {
        tracing::warn!(
            "lock {} is no longer ours; another process may compute the same key",
            path.display()
        );
        return false;
    }
    let touched = File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::warn!("cannot renew lock {}: {e}", path.display());
    }
    true
}

impl Store {
    /// Takes the lock of `key`, waiting up to `timeout` for its holder to release or abandon it.
    pub fn lock(&self, key: &Digest, timeout: Duration) -> Result<LockGuard> {
        let path = self.lock_path(key);
        let deadline = Instant::now() + timeout;
        loop {
            let holder = match self.attempt(&path)? {
                Attempt::Acquired(guard) => return Ok(guard),
                Attempt::Held(holder) => holder,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::LockTimeout {
                    path,
                    holder,
                    seconds: timeout.as_secs(),
                });
            }
            let pause = Duration::from_millis(20 + fsutil::random_u64() % 30);
            thread::sleep(pause.min(deadline - now));
        }
    }

    /// Takes the lock of `key` if it is free or abandoned.
    pub fn try_lock(&self, key: &Digest) -> Result<Option<LockGuard>> {
        match self.attempt(&self.lock_path(key))? {
            Attempt::Acquired(guard) => Ok(Some(guard)),
            Attempt::Held(_) => Ok(None),
        }
    }

    pub(crate) fn lock_path(&self, key: &Digest) -> PathBuf {
        self.dir("locks").join(format!("{key}.lock"))
    }

    /// Creates the lock, or breaks it if abandoned and tries again (a few times at most).
    fn attempt(&self, path: &Path) -> Result<Attempt> {
        let mut holder = "an unknown holder".to_owned();
        for _ in 0..3 {
            if let Some(guard) = self.create_lock(path)? {
                return Ok(Attempt::Acquired(guard));
            }
            // Released meanwhile: try again.
            let Some(observed) = Observed::read(path).map_err(at(path))? else {
                continue;
            };
            holder = observed.describe();
            if !self.break_if_abandoned(path, &observed)? {
                break;
            }
        }
        Ok(Attempt::Held(holder))
    }

    fn create_lock(&self, path: &Path) -> Result<Option<LockGuard>> {
        let random = || fsutil::random_u64();
        let holder = Holder {
            host: hostname().to_owned(),
            node: node_id().to_owned(),
            pid: std::process::id(),
            nonce: format!("{:016x}{:016x}", random(), random()),
            acquired: fsutil::unix_now(),
        };
        let bytes = serde_json::to_vec(&holder).map_err(|e| Error::BadEntry {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut file = match File::create_new(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(at(path)(e)),
        };
        if let Err(e) = file.write_all(&bytes) {
            let _ = fs::remove_file(path);
            return Err(at(path)(e));
        }
        let guard = LockGuard::start(path.to_path_buf(), holder.nonce, self.lease);
        if guard.is_err() {
            let _ = fs::remove_file(path);
        }
        guard.map(Some).map_err(at(path))
    }

    /// Breaks the lock at `path` if `observed` shows it abandoned and it is still that same file;
    /// true if the lock is gone (broken or released) so that taking it may be tried again.
    fn break_if_abandoned(&self, path: &Path, observed: &Observed) -> Result<bool> {
        let Some(reason) = observed.abandoned(self.lease) else {
            return Ok(false);
        };
        let moved = self.dir("tmp").join(tmp::unique_name(".lock"));
        match fs::rename(path, &moved) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(at(path)(e)),
        }
        let still = Observed::read(&moved).map_err(at(&moved))?;
        let unchanged =
            still.is_some_and(|s| s.bytes == observed.bytes && s.abandoned(self.lease).is_some());
        if unchanged {
            tracing::info!(
                "broke lock {} of {}: {reason}",
                path.display(),
                observed.describe()
            );
        } else {
            tracing::info!(
                "lock {} was renewed or re-created while being broken; restoring it",
                path.display()
            );
            if let Err(e) = fs::hard_link(&moved, path) {
                tracing::warn!(
                    "cannot restore lock {}: {e}; two processes may compute the same key",
                    path.display()
                );
            }
        }
        fsutil::remove_file(&moved).map_err(at(&moved))?;
        Ok(unchanged)
    }

    /// Breaks every abandoned lock; returns how many.
    pub(crate) fn break_abandoned_locks(&self) -> Result<u64> {
        let dir = self.dir("locks");
        let mut broken = 0;
        for (path, _) in fsutil::files_under(&dir).map_err(at(&dir))? {
            if let Some(observed) = Observed::read(&path).map_err(at(&path))? {
                broken += u64::from(self.break_if_abandoned(&path, &observed)?);
            }
        }
        Ok(broken)
    }
}
