//! Prompt expansion: one benchmark prompt in the format one model's adapter takes.
//!
//! - [`PromptFormat::Plain`]: the text as written plus the references in benchmark order (MOSAIC).
//! - [`PromptFormat::Placeholders`]: each subject's mention replaced by `ENT1..ENTn`, with a caption
//!   and an idip flag per subject (XVerse).
//! - [`PromptFormat::TextOnly`]: the text alone (FLUX.1-dev as the paper ran its "PSR" column).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Benchmark, Prompt, Subject, SubjectKind};

/// Which subjects XVerse treats as identities (face weights) rather than objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdipPolicy {
    /// idip only for people (XVerse's own advice). The default.
    #[default]
    PeopleOnly,
    /// idip for every subject, as the paper ran XVerse ("paper-compatible").
    PaperAll,
}

/// How a model takes a prompt; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PromptFormat {
    Plain,
    Placeholders { idip: IdipPolicy },
    TextOnly,
}

/// One reference as a model receives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub image: PathBuf,
    pub caption: String,
    pub idip: bool,
}

/// A prompt in one model's format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelPrompt {
    pub format: PromptFormat,
    /// The text the model receives (with `ENTi` placeholders for [`PromptFormat::Placeholders`]).
    pub text: String,
    /// References in order; empty for [`PromptFormat::TextOnly`].
    pub references: Vec<Reference>,
}

/// A prompt that cannot be put in the requested format.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    #[error(
        "{at}: prompt `{id}`: subject `{name}` is not mentioned in the text, so it has no ENT placeholder"
    )]
    NotMentioned {
        at: crate::Location,
        id: String,
        name: String,
    },
    #[error("{at}: prompt `{id}`: subject `{name}` is not in the benchmark")]
    UnknownSubject {
        at: crate::Location,
        id: String,
        name: String,
    },
}

/// Expands `prompt` of `bench` into `format`.
///
/// - `Plain`: the text unchanged; references in benchmark order, caption = name, `idip` = false
///   (MOSAIC has no such flag).
/// - `Placeholders`: subject *i*'s first mention in the text becomes `ENTi` (see [`placeholders`]);
///   caption = the subject name (the paper's choice, so XVerse's `ENTi → caption` substitution gives
///   back the original text), `idip` per the [`IdipPolicy`].
/// - `TextOnly`: the text alone, no references.
///
/// A subject of `prompt` missing from `bench` cannot happen for a loaded benchmark; it is reported
/// as [`ExpandError::UnknownSubject`] rather than a panic.
pub fn expand(
    bench: &Benchmark,
    prompt: &Prompt,
    format: PromptFormat,
) -> Result<ModelPrompt, ExpandError> {
    let subjects = prompt
        .subjects
        .iter()
        .map(|name| {
            bench
                .subject(name)
                .ok_or_else(|| ExpandError::UnknownSubject {
                    at: prompt.location.clone(),
                    id: prompt.id.clone(),
                    name: name.clone(),
                })
        })
        .collect::<Result<Vec<&Subject>, _>>()?;
    let reference = |s: &Subject, idip: bool| Reference {
        name: s.name.clone(),
        image: s.image.clone(),
        caption: s.name.clone(),
        idip,
    };
    let (text, references) = match format {
        PromptFormat::Plain => (
            prompt.text.clone(),
            subjects.iter().map(|s| reference(s, false)).collect(),
        ),
        PromptFormat::Placeholders { idip } => {
            let all: Vec<&str> = bench.subjects.iter().map(|s| s.name.as_str()).collect();
            let text = placeholders(&prompt.text, &prompt.subjects, &all).map_err(|name| {
                ExpandError::NotMentioned {
                    at: prompt.location.clone(),
                    id: prompt.id.clone(),
                    name: name.to_owned(),
                }
            })?;
            let flag = |s: &Subject| match idip {
                IdipPolicy::PeopleOnly => s.kind == SubjectKind::Person,
                IdipPolicy::PaperAll => true,
            };
            (
                text,
                subjects.iter().map(|s| reference(s, flag(s))).collect(),
            )
        }
        PromptFormat::TextOnly => (prompt.text.clone(), Vec::new()),
    };
    Ok(ModelPrompt {
        format,
        text,
        references,
    })
}

/// Replaces the first mention of each of `subjects` in `text` by `ENT1..ENTn` (in list order).
///
/// A mention is a case-insensitive, word-bounded occurrence of the name. Mentions of every name in
/// `vocabulary` (all benchmark subjects) are found left to right, longest first, without overlap,
/// so `bowl` never matches inside `berry bowl`. Later mentions of a subject stay as written ("the
/// old man leaning…"), and articles stay (`a black woman` → `a ENT1`). Returns the first subject
/// with no mention as the error.
pub fn placeholders<'a>(
    text: &str,
    subjects: &'a [String],
    vocabulary: &[&str],
) -> Result<String, &'a str> {
    let lower = text.to_ascii_lowercase();
    let mut names: Vec<String> = vocabulary
        .iter()
        .copied()
        .chain(subjects.iter().map(String::as_str))
        .map(str::to_ascii_lowercase)
        .collect();
    names.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    names.dedup();

    // Leftmost-longest, non-overlapping mentions: (start, end, lower-case name).
    let mut mentions: Vec<(usize, usize, &str)> = Vec::new();
    let mut pos = 0;
    while pos < lower.len() {
        let found = names.iter().find(|n| {
            !n.is_empty()
                && lower[pos..].starts_with(n.as_str())
                && is_word_at(&lower, pos, pos + n.len())
        });
        match found {
            Some(n) => {
                mentions.push((pos, pos + n.len(), n));
                pos += n.len();
            }
            None => pos += lower[pos..].chars().next().map_or(1, char::len_utf8),
        }
    }

    let mut replacements: Vec<(usize, usize, usize)> = Vec::with_capacity(subjects.len());
    for (i, subject) in subjects.iter().enumerate() {
        let key = subject.to_ascii_lowercase();
        let (start, end, _) = mentions
            .iter()
            .find(|(_, _, n)| *n == key)
            .ok_or(subject.as_str())?;
        replacements.push((*start, *end, i + 1));
    }
    replacements.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, n) in replacements {
        out.push_str(&text[last..start]);
        out.push_str(&format!("ENT{n}"));
        last = end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// Whether `text[start..end]` is bounded by non-word characters (or the ends of the text).
fn is_word_at(text: &str, start: usize, end: usize) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    !text[..start].chars().next_back().is_some_and(word)
        && !text[end..].chars().next().is_some_and(word)
}
