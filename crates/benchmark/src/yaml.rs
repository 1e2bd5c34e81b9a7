//! Loader for scrbench's own YAML benchmark format (see `prompts/README.md`), and [`to_yaml`],
//! its writer.
//!
//! ```yaml
//! name: p13n-workshop
//! images: val_dataset            # folder of the images, relative to this file (default: `.`)
//! subjects:
//!   - {name: black woman, kind: person, image: black_women.jpg}
//! prompts:
//!   - id: 01_no_interaction
//!     scene: neutral               # neutral (alias no_interaction) | occlusion | interaction
//!     subjects: [black woman, western woman]
//!     count: 2                     # optional; checked against the list
//!     text: "An open plaza at noon: a black woman …"
//! ```
//!
//! Unknown keys are errors. Syntax errors carry serde-saphyr's line; semantic errors the line of
//! the subject's `name`, the prompt's `id`, or the offending entry of a prompt's `subjects`.

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{DefaultMessageFormatter, MessageFormatter, Spanned};

use crate::validate::{Draft, DraftPrompt, DraftSubject};
use crate::{Benchmark, Error, Location, Prompt, Scene, SubjectKind};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    images: Option<PathBuf>,
    subjects: Vec<SubjectDef>,
    prompts: Vec<PromptDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectDef {
    name: Spanned<String>,
    kind: SubjectKind,
    image: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptDef {
    id: Spanned<String>,
    scene: Scene,
    subjects: Vec<Spanned<String>>,
    #[serde(default)]
    count: Option<usize>,
    text: String,
}

/// Reads a YAML benchmark; semantic checks are left to [`Draft::validate`].
pub(crate) fn read(path: &Path) -> Result<Draft, Error> {
    let read_error = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let canonical = std::fs::canonicalize(path).map_err(read_error)?;
    let at = |line: u64| Location {
        file: path.to_path_buf(),
        line: usize::try_from(line).unwrap_or(usize::MAX),
    };

    let file: File = serde_saphyr::from_str(&text).map_err(|e| {
        let message = DefaultMessageFormatter.format_message(e.without_snippet());
        let location = e.location();
        Error::Syntax {
            at: at(location.map_or(1, |l| l.line())),
            message: match location {
                Some(l) => format!("column {}: {message}", l.column()),
                None => message.into_owned(),
            },
        }
    })?;

    // Relative to the file's folder; `.` components dropped so messages show clean paths.
    let folder = canonical.parent().unwrap_or(Path::new("/"));
    let images: PathBuf = folder
        .join(file.images.unwrap_or_default())
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    let subjects = file
        .subjects
        .into_iter()
        .map(|s| DraftSubject {
            at: at(s.name.referenced.line()),
            name: s.name.value,
            kind: s.kind,
            image: Some(images.join(s.image)),
        })
        .collect();
    let prompts = file
        .prompts
        .into_iter()
        .map(|p| {
            let location = at(p.id.referenced.line());
            DraftPrompt {
                subject_lines: p.subjects.iter().map(|s| at(s.referenced.line())).collect(),
                expected_count: p.count,
                prompt: Prompt {
                    id: p.id.value,
                    scene: p.scene,
                    text: p.text,
                    subjects: p.subjects.into_iter().map(|s| s.value).collect(),
                    location,
                },
            }
        })
        .collect();
    Ok(Draft {
        name: file.name,
        subjects,
        prompts,
        errors: Vec::new(),
    })
}

/// Writes `bench` in the YAML format.
///
/// `images_dir` is written as `images:` verbatim: the folder holding the images as seen from where
/// the YAML file will be saved (or absolute). Each subject's `image:` is its path relative to
/// [`Benchmark::image_root`], so `images_dir` should name that folder.
pub fn to_yaml(bench: &Benchmark, images_dir: &Path) -> String {
    let root = bench.image_root().unwrap_or_default();
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_yaml(&mut out, bench, images_dir, &root);
    out
}

fn write_yaml(
    out: &mut String,
    bench: &Benchmark,
    images_dir: &Path,
    root: &Path,
) -> std::fmt::Result {
    writeln!(out, "# scrbench benchmark; format: prompts/README.md")?;
    writeln!(out, "name: {}", scalar(&bench.name))?;
    writeln!(out, "images: {}", scalar(&images_dir.to_string_lossy()))?;
    writeln!(out, "subjects:")?;
    for s in &bench.subjects {
        let image = s.image.strip_prefix(root).unwrap_or(&s.image);
        let kind = match s.kind {
            SubjectKind::Person => "person",
            SubjectKind::Animal => "animal",
            SubjectKind::Object => "object",
        };
        writeln!(
            out,
            "  - {{name: {}, kind: {kind}, image: {}}}",
            scalar(&s.name),
            scalar(&image.to_string_lossy())
        )?;
    }
    writeln!(out, "prompts:")?;
    for p in &bench.prompts {
        let subjects: Vec<String> = p.subjects.iter().map(|s| scalar(s)).collect();
        writeln!(out, "  - id: {}", scalar(&p.id))?;
        writeln!(out, "    scene: {}", p.scene)?;
        writeln!(out, "    subjects: [{}]", subjects.join(", "))?;
        writeln!(out, "    text: {}", quoted(&p.text))?;
    }
    Ok(())
}

/// `s` as a plain YAML scalar where that is unambiguous (also inside a flow collection), else
/// double-quoted.
fn scalar(s: &str) -> String {
    let safe = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " _.-/".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '/')
        && !s.ends_with(' ')
        && s.chars().any(|c| c.is_ascii_alphabetic())
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if safe { s.to_owned() } else { quoted(s) }
}

/// `s` as a double-quoted YAML scalar.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
