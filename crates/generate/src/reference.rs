//! The `reference` generator: a benchmark subject's own reference image, as an "image" of the
//! pseudo-model [`REFERENCES`], so references flow through the same stages (inspection,
//! embedding) as generated images and are computed once per content, ever.
//!
//! Its job has one reference (the subject); the output is a byte-for-byte copy of that file, in
//! whatever format it is stored.

use std::path::{Path, PathBuf};

use benchmark::expand::PromptFormat;

use crate::{Error, Generated, GenerationJob, Generator, Identity};

/// The model name under which reference items appear (`@references/<subject>/0`).
pub const REFERENCES: &str = "@references";

pub struct Reference;

fn source(job: &GenerationJob) -> Result<&PathBuf, Error> {
    match &job.prompt.references[..] {
        [reference] => Ok(&reference.image),
        other => Err(Error::Other(format!(
            "a reference job has exactly one reference, {} has {}",
            job.prompt_id,
            other.len()
        ))),
    }
}

impl Generator for Reference {
    fn identity(&self) -> Identity {
        Identity {
            adapter: "reference".into(),
            version: "1".into(),
            model: Default::default(),
            settings: serde_json::json!({}),
        }
    }

    fn prompt_format(&self) -> PromptFormat {
        PromptFormat::Plain
    }

    fn job_inputs(&self, job: &GenerationJob) -> Result<Vec<PathBuf>, Error> {
        Ok(vec![source(job)?.clone()])
    }

    fn generate(&self, job: &GenerationJob, out: &Path) -> Result<Generated, Error> {
        let path = source(job)?;
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        std::fs::write(out, bytes).map_err(|source| Error::Io {
            path: out.to_owned(),
            source,
        })?;
        Ok(Generated::default())
    }
}
