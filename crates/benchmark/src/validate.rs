//! Validation shared by both loaders: a [`Draft`] (what a file says, with where it says it) becomes
//! a [`Benchmark`] only when every check passes; otherwise all problems are reported together.
//!
//! Images are checked by their headers (format, dimensions), which catches a missing, foreign or
//! mangled file in a few milliseconds for the whole benchmark, so that every command can afford it;
//! a file truncated in its pixel data is reported by the stage that decodes it, naming the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Benchmark, Error, Location, Prompt, Subject, SubjectKind};

/// A subject as a file defines it.
#[derive(Debug)]
pub(crate) struct DraftSubject {
    pub name: String,
    pub kind: SubjectKind,
    /// The image path as resolved against the file's folder (not yet known to exist); `None` when
    /// the reader found none and already reported it.
    pub image: Option<PathBuf>,
    pub at: Location,
}

/// A prompt as a file defines it.
#[derive(Debug)]
pub(crate) struct DraftPrompt {
    pub prompt: Prompt,
    /// Where each listed subject name is written (the prompt's own line if not known better).
    pub subject_lines: Vec<Location>,
    /// The subject count the file declares for this prompt, if it declares one.
    pub expected_count: Option<usize>,
}

/// A benchmark as read, plus the problems the reader already found.
#[derive(Debug)]
pub(crate) struct Draft {
    pub name: String,
    pub subjects: Vec<DraftSubject>,
    pub prompts: Vec<DraftPrompt>,
    pub errors: Vec<Error>,
}

impl Draft {
    /// Checks everything and returns the benchmark, or every problem found.
    pub fn validate(self) -> Result<Benchmark, Error> {
        let Draft {
            name,
            subjects,
            prompts,
            mut errors,
        } = self;

        let mut known: HashMap<&str, &Location> = HashMap::new();
        for s in &subjects {
            if let Some(first) = known.insert(&s.name, &s.at) {
                errors.push(Error::DuplicateId {
                    at: s.at.clone(),
                    what: "subject",
                    id: s.name.clone(),
                    first: first.clone(),
                });
            }
        }

        let mut ids: HashMap<&str, &Location> = HashMap::new();
        for draft in &prompts {
            let p = &draft.prompt;
            if let Some(first) = ids.insert(&p.id, &p.location) {
                errors.push(Error::DuplicateId {
                    at: p.location.clone(),
                    what: "prompt id",
                    id: p.id.clone(),
                    first: (*first).clone(),
                });
            }
            for (i, (name, at)) in p.subjects.iter().zip(&draft.subject_lines).enumerate() {
                if !known.contains_key(name.as_str()) {
                    errors.push(Error::UnknownSubject {
                        at: at.clone(),
                        name: name.clone(),
                    });
                } else if p.subjects[..i].contains(name) {
                    errors.push(Error::RepeatedSubject {
                        at: at.clone(),
                        id: p.id.clone(),
                        name: name.clone(),
                    });
                }
            }
            if let Some(expected) = draft.expected_count.filter(|&n| n != p.subjects.len()) {
                errors.push(Error::SubjectCount {
                    at: p.location.clone(),
                    id: p.id.clone(),
                    listed: p.subjects.len(),
                    expected,
                });
            }
        }

        let mut checked = Vec::with_capacity(subjects.len());
        for s in subjects {
            let Some(image) = &s.image else { continue };
            match check_image(&s, image) {
                Ok(image) => checked.push(Subject {
                    name: s.name,
                    kind: s.kind,
                    image,
                }),
                Err(e) => errors.push(e),
            }
        }

        Error::from_all(errors)?;
        Ok(Benchmark {
            name,
            subjects: checked,
            prompts: prompts.into_iter().map(|d| d.prompt).collect(),
        })
    }
}

/// Canonicalises one subject's image and checks its header.
fn check_image(s: &DraftSubject, image: &Path) -> Result<PathBuf, Error> {
    let missing = || Error::MissingImage {
        at: s.at.clone(),
        name: s.name.clone(),
        path: image.to_path_buf(),
    };
    let path = std::fs::canonicalize(image).map_err(|_| missing())?;
    if !path.is_file() {
        return Err(missing());
    }
    let unreadable = |message: String| Error::UnreadableImage {
        at: s.at.clone(),
        name: s.name.clone(),
        path: path.clone(),
        message,
    };
    let reader = image::ImageReader::open(&path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| unreadable(e.to_string()))?;
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| unreadable(e.to_string()))?;
    if width == 0 || height == 0 {
        return Err(unreadable(format!("the image is {width}×{height}")));
    }
    Ok(path)
}
