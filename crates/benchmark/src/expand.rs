//! Prompt expansion: one benchmark prompt in the format one model's adapter takes.
//!
//! - [`PromptFormat::Plain`]: the text as written plus the references in benchmark order (MOSAIC).
//! - [`PromptFormat::Placeholders`]: each subject's mention replaced by `ENT1..ENTn`, with a caption
//!   and an idip flag per subject (XVerse).
//! - [`PromptFormat::TextOnly`]: the text alone (FLUX.1-dev as the paper ran its "PSR" column).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Benchmark, Prompt};

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

#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    #[error("{at}: prompt `{id}`: subject `{name}` is not mentioned in the text, so it has no ENT placeholder")]
    NotMentioned { at: crate::Location, id: String, name: String },
}

/// Expands `prompt` of `bench` into `format`.
pub fn expand(bench: &Benchmark, prompt: &Prompt, format: PromptFormat) -> Result<ModelPrompt, ExpandError> {
    let _ = (bench, prompt, format);
    todo!()
}
