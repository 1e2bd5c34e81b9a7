//! What every model-backed stage (encoders, detectors) shares: the model loads on the first
//! computation a run needs, so a fully cached rerun never loads one; a load failure is remembered
//! and stops the run ([`StageError::Fatal`], never a fallback); `low_memory` runs release it; and
//! the digests of the checkpoint files that go into keys are computed once per run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::stage::{Context, StageError};

/// A model loaded on first use.
pub(crate) struct LazyModel<T: ?Sized> {
    slot: Mutex<Option<Result<Arc<T>, String>>>,
}

impl<T: ?Sized> Default for LazyModel<T> {
    fn default() -> Self {
        LazyModel {
            slot: Mutex::new(None),
        }
    }
}

impl<T: ?Sized> LazyModel<T> {
    /// The model, loaded by `load` if this is the first use since start or [`Self::release`]. A
    /// failed load is fatal, now and for every later call.
    pub(crate) fn get(
        &self,
        load: impl FnOnce() -> Result<Arc<T>, String>,
    ) -> Result<Arc<T>, StageError> {
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| StageError::Fatal("model lock poisoned".into()))?;
        slot.get_or_insert_with(load)
            .as_ref()
            .map(Arc::clone)
            .map_err(|message| StageError::Fatal(message.clone()))
    }

    /// Frees the model; the next [`Self::get`] loads it again.
    pub(crate) fn release(&self) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = None;
        }
    }
}

/// Digests of the files that determine a model's outputs, as key entries `file.<name>`.
pub(crate) struct FileDigests {
    files: Vec<PathBuf>,
    digests: OnceLock<Result<BTreeMap<String, String>, String>>,
}

impl FileDigests {
    pub(crate) fn new(files: Vec<PathBuf>) -> FileDigests {
        FileDigests {
            files,
            digests: OnceLock::new(),
        }
    }

    /// The digests, computed (through the store's stat cache) on the first call of a run.
    pub(crate) fn get(&self, cx: &Context) -> Result<BTreeMap<String, String>, StageError> {
        self.digests
            .get_or_init(|| {
                self.files
                    .iter()
                    .map(|file| {
                        let name = file
                            .file_name()
                            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                        cx.store
                            .file_digest(file)
                            .map(|d| (format!("file.{name}"), d.to_string()))
                            .map_err(|e| e.to_string())
                    })
                    .collect()
            })
            .clone()
            .map_err(StageError::Failed)
    }
}
