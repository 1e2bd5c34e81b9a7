//! The `replay` generator: published images from a folder in the paper's layout.
//!
//! The folder holds `<prompt_id>/<seed>.png` and, optionally, one `meta.json` per prompt folder (a
//! list of records: `model`, `prompt_id`, `seed`, `prompt`, `subjects[{image, name, caption,
//! idip}]`, `output_path`, `skipped`, `time`). Images are located by the folder layout alone; the
//! paths inside `meta.json` are not uniform and are ignored. `meta.json` is only cross-checked: a
//! record whose prompt text or subject names differ from the job's is logged as a warning.
//!
//! Outputs are content-addressed by the source image's digest (the pipeline hashes
//! [`Generator::job_inputs`]), so the identity does not name the folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use benchmark::expand::PromptFormat;
use serde::{Deserialize, Serialize};

use crate::{Error, Generated, GenerationJob, Generator, Identity};

/// The eight bytes every PNG file starts with.
pub const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];

/// Settings of the `replay` adapter.
///
/// ```yaml
/// adapter: replay
/// dir: ../shared/datasets/p13n-workshop/results/mosaic   # relative to the config file
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySettings {
    /// Folder in the paper's layout. The pipeline resolves it relative to its config file.
    pub dir: PathBuf,
}

/// One record of a `meta.json` as the paper's scripts wrote it. Every field is optional so that
/// one odd record does not hide the others.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaRecord {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prompt_id: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub subjects: Vec<MetaSubject>,
    /// Unreliable (see the module docs); kept for completeness, never used.
    #[serde(default)]
    pub output_path: Option<String>,
    #[serde(default)]
    pub skipped: Option<bool>,
    #[serde(default)]
    pub time: Option<serde_json::Value>,
}

/// One subject of a [`MetaRecord`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaSubject {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub caption: Option<String>,
    #[serde(default)]
    pub idip: Option<bool>,
}

/// Parsed `meta.json` of one prompt folder: `None` when absent or unreadable (already warned).
type Meta = Option<Arc<Vec<MetaRecord>>>;

/// Replays published images. See the module docs.
#[derive(Debug)]
pub struct Replay {
    dir: PathBuf,
    /// Parsed `meta.json` per prompt id, so each file is read and warned about once.
    meta: Mutex<HashMap<String, Meta>>,
}

impl Replay {
    /// Fails when `settings.dir` is not a directory.
    pub fn new(settings: ReplaySettings) -> Result<Self, Error> {
        if !settings.dir.is_dir() {
            return Err(Error::Settings {
                adapter: "replay".into(),
                message: format!("`dir` {} is not a directory", settings.dir.display()),
            });
        }
        Ok(Replay {
            dir: settings.dir,
            meta: Mutex::new(HashMap::new()),
        })
    }

    /// The folder images are replayed from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the image for `job` lives: `<dir>/<prompt_id>/<seed>.png` (whether or not it exists).
    pub fn source_path(&self, job: &GenerationJob) -> Result<PathBuf, Error> {
        check_prompt_id(&job.prompt_id)?;
        Ok(self
            .dir
            .join(&job.prompt_id)
            .join(format!("{}.png", job.seed)))
    }

    fn existing_source(&self, job: &GenerationJob) -> Result<PathBuf, Error> {
        let path = self.source_path(job)?;
        if !path.is_file() {
            return Err(Error::MissingImage {
                prompt_id: job.prompt_id.clone(),
                seed: job.seed,
                path,
            });
        }
        Ok(path)
    }

    /// The parsed `meta.json` of `prompt_id`'s folder, from the cache or read now.
    fn meta(&self, prompt_id: &str) -> Meta {
        if let Some(meta) = self
            .meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(prompt_id)
        {
            return meta.clone();
        }
        // Parsed outside the lock; two threads may parse the same file once each, which is harmless.
        let meta = read_meta(&self.dir.join(prompt_id).join("meta.json"));
        self.meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(prompt_id.to_owned())
            .or_insert(meta)
            .clone()
    }

    /// Warns when `meta.json` disagrees with the job. Never fails.
    fn cross_check(&self, job: &GenerationJob) {
        let Some(records) = self.meta(&job.prompt_id) else {
            return;
        };
        let file = self.dir.join(&job.prompt_id).join("meta.json");
        for problem in meta_mismatches(&records, job) {
            tracing::warn!(
                file = %file.display(),
                prompt_id = %job.prompt_id,
                seed = job.seed,
                "{}: {problem}",
                file.display()
            );
        }
    }
}

/// Rejects prompt ids that would leave the folder.
fn check_prompt_id(prompt_id: &str) -> Result<(), Error> {
    if prompt_id.is_empty()
        || prompt_id == "."
        || prompt_id == ".."
        || prompt_id.contains(['/', '\\'])
        || Path::new(prompt_id).is_absolute()
    {
        return Err(Error::Other(format!(
            "replay: prompt id `{prompt_id}` is not a plain folder name"
        )));
    }
    Ok(())
}

/// Reads a `meta.json`; absent → `None` silently, unreadable or malformed → `None` with a warning.
fn read_meta(path: &Path) -> Meta {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), "{}: cannot read: {e}", path.display());
            return None;
        }
    };
    match serde_json::from_slice::<Vec<MetaRecord>>(&text) {
        Ok(records) => Some(Arc::new(records)),
        Err(e) => {
            tracing::warn!(file = %path.display(), "{}: not a list of records: {e}", path.display());
            None
        }
    }
}

/// Human-readable differences between `meta.json`'s record for the job's seed and the job.
pub fn meta_mismatches(records: &[MetaRecord], job: &GenerationJob) -> Vec<String> {
    let mut problems = Vec::new();
    let mine: Vec<&MetaRecord> = records
        .iter()
        .filter(|r| r.seed == Some(job.seed))
        .collect();
    let record = match mine.as_slice() {
        [] => {
            problems.push(format!("no record for seed {}", job.seed));
            return problems;
        }
        [one] => *one,
        [first, ..] => {
            problems.push(format!(
                "{} records for seed {}; checking the first",
                mine.len(),
                job.seed
            ));
            *first
        }
    };
    if let Some(id) = record.prompt_id.as_ref().filter(|id| **id != job.prompt_id) {
        problems.push(format!(
            "record for seed {} has prompt id `{id}`, the job `{}`",
            job.seed, job.prompt_id
        ));
    }
    match &record.prompt {
        Some(text) if text.trim() != job.prompt.text.trim() => problems.push(format!(
            "record for seed {} has prompt {text:?}, the job {:?}",
            job.seed, job.prompt.text
        )),
        None => problems.push(format!("record for seed {} has no prompt", job.seed)),
        _ => {}
    }
    let names: Vec<&str> = record
        .subjects
        .iter()
        .map(|s| s.name.as_deref().unwrap_or(""))
        .collect();
    let expected: Vec<&str> = job.subjects.iter().map(String::as_str).collect();
    if names != expected {
        problems.push(format!(
            "record for seed {} has subjects {names:?}, the job {expected:?}",
            job.seed
        ));
    }
    if record.skipped == Some(true) {
        problems.push(format!(
            "record for seed {} says the image was skipped",
            job.seed
        ));
    }
    problems
}

/// Reads `path` and checks that it is a PNG.
fn read_png(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    if !bytes.starts_with(&PNG_SIGNATURE) {
        return Err(Error::BadImage {
            path: path.to_owned(),
            message: "not a PNG file (bad signature)".into(),
        });
    }
    Ok(bytes)
}

impl Generator for Replay {
    fn identity(&self) -> Identity {
        Identity {
            adapter: "replay".into(),
            version: "1".into(),
            model: Default::default(),
            // The folder is deliberately absent: outputs are addressed by the source's digest.
            settings: serde_json::json!({}),
        }
    }

    fn prompt_format(&self) -> PromptFormat {
        PromptFormat::Plain
    }

    fn job_inputs(&self, job: &GenerationJob) -> Result<Vec<PathBuf>, Error> {
        Ok(vec![self.existing_source(job)?])
    }

    fn generate(&self, job: &GenerationJob, out: &Path) -> Result<Generated, Error> {
        let source = self.existing_source(job)?;
        self.cross_check(job);
        // Read and write rather than fs::copy: the copy must not inherit the source's permissions
        // (shared data is often read-only).
        let bytes = read_png(&source)?;
        std::fs::write(out, &bytes).map_err(|source| Error::Io {
            path: out.to_owned(),
            source,
        })?;
        Ok(Generated::default())
    }
}
