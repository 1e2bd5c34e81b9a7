//! The benchmark: reference subjects, prompts, subject counts and scene types.
//!
//! A [`Benchmark`] is loaded either from the paper's `prompts_50.txt` format ([`paper`]) or from
//! scrbench's own YAML format ([`yaml`]); both produce the same validated model, whose every
//! [`Prompt`] names its [`Subject`]s in order. [`expand`] turns a prompt into what one model's
//! adapter takes ([`expand::ModelPrompt`]), in that model's [`expand::PromptFormat`].
//!
//! Invariant: a `Benchmark` value is always valid. Every prompt's subjects exist, the bracket count
//! equals the subject list, ids are unique, and every subject image exists and decodes.

pub mod expand;
pub mod paper;
mod validate;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use yaml::to_yaml;

/// What a reference subject is; XVerse's default idip flag depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectKind {
    Person,
    Animal,
    Object,
}

/// One reference subject and its image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    /// Display name as prompts use it, e.g. `black woman`.
    pub name: String,
    pub kind: SubjectKind,
    /// Absolute path of the reference image.
    pub image: PathBuf,
}

/// Scene type of a prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scene {
    /// Subjects side by side ("No interaction" in the paper, id suffix `no_interaction`).
    #[serde(alias = "no_interaction")]
    Neutral,
    Occlusion,
    Interaction,
}

impl Scene {
    pub const ALL: [Scene; 3] = [Scene::Neutral, Scene::Occlusion, Scene::Interaction];

    /// The suffix the paper's prompt ids use: `no_interaction`, `occlusion`, `interaction`.
    pub fn id_suffix(self) -> &'static str {
        match self {
            Scene::Neutral => "no_interaction",
            Scene::Occlusion => "occlusion",
            Scene::Interaction => "interaction",
        }
    }
}

impl fmt::Display for Scene {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scene::Neutral => "neutral",
            Scene::Occlusion => "occlusion",
            Scene::Interaction => "interaction",
        })
    }
}

/// Where something was defined, for error messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One benchmark prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    /// Stable id, e.g. `01_no_interaction`; also the output folder name.
    pub id: String,
    pub scene: Scene,
    /// The prompt text as written.
    pub text: String,
    /// Subject names, in the order the benchmark lists them (references are passed in this order).
    pub subjects: Vec<String>,
    pub location: Location,
}

impl Prompt {
    /// Number of subjects N.
    pub fn subject_count(&self) -> usize {
        self.subjects.len()
    }
}

/// A loaded, validated benchmark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Benchmark {
    pub name: String,
    pub subjects: Vec<Subject>,
    pub prompts: Vec<Prompt>,
}

impl Benchmark {
    /// Loads a benchmark from a dataset folder holding `val_dataset/prompts_50.txt`, a
    /// `prompts_50.txt`-format file itself, or a `.yaml`/`.yml` file in scrbench's format.
    ///
    /// Every problem found is reported at once ([`Error::Many`] when there are several).
    pub fn load(path: &Path) -> Result<Benchmark, Error> {
        let read_error = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(read_error)?;
        let draft = if metadata.is_dir() {
            let nested = path.join(paper::DATASET_FILE);
            let file = if nested.is_file() {
                nested
            } else {
                path.join(paper::FILE_NAME)
            };
            if !file.is_file() {
                return Err(Error::NotABenchmark {
                    path: path.to_path_buf(),
                    reason: format!(
                        "a folder without `{}` or `{}`",
                        paper::DATASET_FILE,
                        paper::FILE_NAME
                    ),
                });
            }
            paper::read(&file)?
        } else {
            match path.extension().and_then(|e| e.to_str()) {
                Some("txt") => paper::read(path)?,
                Some("yaml" | "yml") => yaml::read(path)?,
                _ => {
                    return Err(Error::NotABenchmark {
                        path: path.to_path_buf(),
                        reason: "expected a .txt, .yaml or .yml file or a dataset folder".into(),
                    });
                }
            }
        };
        let bench = draft.validate()?;
        tracing::debug!(
            name = %bench.name,
            subjects = bench.subjects.len(),
            prompts = bench.prompts.len(),
            "loaded benchmark from {}",
            path.display()
        );
        Ok(bench)
    }

    pub fn subject(&self, name: &str) -> Option<&Subject> {
        self.subjects.iter().find(|s| s.name == name)
    }

    pub fn prompt(&self, id: &str) -> Option<&Prompt> {
        self.prompts.iter().find(|p| p.id == id)
    }

    /// The deepest folder holding every subject image (normally the dataset's `val_dataset/`);
    /// [`to_yaml`] writes image paths relative to it. `None` without subjects.
    pub fn image_root(&self) -> Option<PathBuf> {
        let mut images = self
            .subjects
            .iter()
            .map(|s| s.image.parent().unwrap_or(&s.image));
        let mut root = images.next()?.to_path_buf();
        for dir in images {
            while !dir.starts_with(&root) {
                if !root.pop() {
                    break;
                }
            }
        }
        Some(root)
    }
}

/// A benchmark that cannot be loaded; every variant names the file (and line where there is one).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    #[error("{at}: unknown subject `{name}`")]
    UnknownSubject { at: Location, name: String },
    #[error("{at}: prompt `{id}` lists {listed} subjects but its text or header says {expected}")]
    SubjectCount {
        at: Location,
        id: String,
        listed: usize,
        expected: usize,
    },
    #[error("{path}: not a benchmark: {reason}")]
    NotABenchmark { path: PathBuf, reason: String },
    /// A duplicate prompt id (`what` = "prompt id") or subject name (`what` = "subject").
    #[error("{at}: duplicate {what} `{id}` (first defined at {first})")]
    DuplicateId {
        at: Location,
        what: &'static str,
        id: String,
        first: Location,
    },
    #[error("{at}: prompt `{id}` lists subject `{name}` more than once")]
    RepeatedSubject {
        at: Location,
        id: String,
        name: String,
    },
    #[error(
        "{at}: no image for subject `{name}` in {dir} (no file whose normalised stem is `{stem}`)"
    )]
    NoImage {
        at: Location,
        name: String,
        dir: PathBuf,
        stem: String,
    },
    #[error("{at}: image of subject `{name}` is missing: {path}")]
    MissingImage {
        at: Location,
        name: String,
        path: PathBuf,
    },
    #[error("{at}: image of subject `{name}` cannot be decoded ({path}): {message}")]
    UnreadableImage {
        at: Location,
        name: String,
        path: PathBuf,
        message: String,
    },
    /// Several problems found in one pass; shown one per line.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Many(Vec<Error>),
}

impl Error {
    /// Where the problem is, for errors that point into a benchmark file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Syntax { at, .. }
            | Error::UnknownSubject { at, .. }
            | Error::SubjectCount { at, .. }
            | Error::DuplicateId { at, .. }
            | Error::RepeatedSubject { at, .. }
            | Error::NoImage { at, .. }
            | Error::MissingImage { at, .. }
            | Error::UnreadableImage { at, .. } => Some(at),
            Error::Read { .. } | Error::NotABenchmark { .. } | Error::Many(_) => None,
        }
    }

    /// `Ok` for no errors, the error itself for one, [`Error::Many`] for several (nested lists
    /// flattened, in line order; the sort is stable, so errors on one line keep their order).
    pub fn from_all(errors: Vec<Error>) -> Result<(), Error> {
        let mut flat: Vec<Error> = errors
            .into_iter()
            .flat_map(|e| match e {
                Error::Many(inner) => inner,
                e => vec![e],
            })
            .collect();
        flat.sort_by_key(|e| e.location().map(|at| at.line));
        match flat.len() {
            0 => Ok(()),
            1 => Err(flat.remove(0)),
            _ => Err(Error::Many(flat)),
        }
    }
}
