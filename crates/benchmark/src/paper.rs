//! Loader for the paper's `prompts_50.txt` format (DESIGN §1).
//!
//! ```text
//! MOSAIC Multi-Subject Generation Prompts         ← title (ignored)
//! 75 prompts | 2 / 4 / 6 / 8 / 10 subjects        ← declared total, checked
//! Reference subjects
//!   People  (7):  black woman, middle eastern man, …
//!   Animals (5):  dog, panda, …
//!   Objects (18): cup, t-shirt, …,                ← a list may continue on indented lines
//!                bowl, berry bowl, …
//! ======
//! 2-SUBJECT PROMPTS  (#01 – #15)                  ← level banner
//! ======
//! No interaction                                  ← scene heading (or `Occlusion`, `Interaction`)
//! #01  [black woman · western woman]              ← entry: number and subjects (U+00B7 separated)
//! An open plaza at noon: a black woman …          ← its text: the next non-empty line
//! …
//! END — 75 prompts total                          ← everything from here on is ignored
//! ```
//!
//! Entry `#NN` gets the id `NN_<scene>` (`01_no_interaction`, `06_occlusion`, `11_interaction`).
//! The paper's layout is fixed: scene = ((NN−1) mod 15) div 5 and level = 2·(⌊(NN−1)/15⌋+1); a
//! heading or banner that disagrees is a syntax error, and a bracket list whose length is not the
//! level is a [`Error::SubjectCount`].
//!
//! Subject images live beside the file. A subject name maps to the file whose normalised stem
//! equals the normalised name ([`normalise`]), after the aliases in [`ALIASES`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::validate::{Draft, DraftPrompt, DraftSubject};
use crate::{Error, Location, Prompt, Scene, SubjectKind};

/// The file name of the paper's benchmark.
pub const FILE_NAME: &str = "prompts_50.txt";
/// Where [`FILE_NAME`] lies in a dataset folder laid out like the paper's repository.
pub const DATASET_FILE: &str = "val_dataset/prompts_50.txt";

/// Subject names whose image file stem is not the name itself: (name, file stem).
pub const ALIASES: &[(&str, &str)] = &[
    ("motorcycle", "motor"),
    ("stuffed bear", "stuff_bear"),
    ("t-shirt", "tshirt"),
    ("black woman", "black_women"),
    ("black man", "blackman"),
];

/// Image file extensions a subject image may have.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// Prompts per subject-count level, and per scene within a level.
const PER_LEVEL: usize = 15;
const PER_SCENE: usize = 5;

const NO_TEXT: &str = "entry has no prompt text (expected on the next non-empty line)";

/// The entry separator inside brackets: U+00B7 MIDDLE DOT with spaces.
const SEPARATOR: &str = " \u{b7} ";

/// The matching key of a subject name or file stem: lower-case, words `a`/`an`/`the` dropped, only
/// `[a-z0-9]` kept. `"Siamese cat"` and `Siamese cat.jpg` both give `siamesecat`.
pub fn normalise(name: &str) -> String {
    name.to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect()
}

/// The normalised stem of the image file of subject `name`, aliases applied.
pub fn image_key(name: &str) -> String {
    let lower = name.to_lowercase();
    let stem = ALIASES
        .iter()
        .find(|(n, _)| *n == lower)
        .map_or(name, |(_, stem)| stem);
    normalise(stem)
}

/// Reads a `prompts_50.txt`-format file; problems that do not stop parsing are kept in the draft.
pub(crate) fn read(path: &Path) -> Result<Draft, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let canonical = std::fs::canonicalize(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = canonical.parent().unwrap_or(Path::new("/")).to_path_buf();
    let images = image_index(&dir)?;
    let mut parser = Parser {
        file: path.to_path_buf(),
        errors: Vec::new(),
    };
    let (subjects, prompts) = parser.parse(&text);

    let subjects = subjects
        .into_iter()
        .map(|(name, kind, at)| {
            let key = image_key(&name);
            let image = match images.get(&key) {
                Some(image) => Some(image.clone()),
                None => {
                    parser.errors.push(Error::NoImage {
                        at: at.clone(),
                        name: name.clone(),
                        dir: dir.clone(),
                        stem: key,
                    });
                    None
                }
            };
            DraftSubject {
                name,
                kind,
                image,
                at,
            }
        })
        .collect();
    Ok(Draft {
        name: dataset_name(&canonical),
        subjects,
        prompts,
        errors: parser.errors,
    })
}

/// `p13n-workshop` for `…/p13n-workshop/val_dataset/prompts_50.txt`, else the file stem.
fn dataset_name(canonical: &Path) -> String {
    let parent = canonical.parent();
    let dataset = parent
        .filter(|p| p.file_name().is_some_and(|n| n == "val_dataset"))
        .and_then(Path::parent)
        .and_then(Path::file_name);
    dataset.or_else(|| canonical.file_stem()).map_or_else(
        || "benchmark".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Normalised stem → image path for the image files in `dir` (first in name order on a clash).
fn image_index(dir: &Path) -> Result<HashMap<String, PathBuf>, Error> {
    let read_error = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut index: HashMap<String, PathBuf> = HashMap::new();
    for path in files {
        let key = normalise(&path.file_stem().unwrap_or_default().to_string_lossy());
        if let Some(first) = index.get(&key) {
            tracing::warn!(
                "{} and {} have the same normalised stem `{key}`; using the first",
                path.display(),
                first.display()
            );
            continue;
        }
        index.insert(key, path);
    }
    Ok(index)
}

/// What one line is, in the body of the file.
enum Line<'a> {
    Blank,
    Rule,
    Banner(usize),
    Heading(Scene),
    Entry(&'a str),
    End,
    Other,
}

fn classify(line: &str) -> Line<'_> {
    let t = line.trim();
    if t.is_empty() {
        Line::Blank
    } else if t.chars().all(|c| c == '=') {
        Line::Rule
    } else if let Some(n) = t
        .split_once("-SUBJECT PROMPTS")
        .and_then(|(n, _)| n.parse().ok())
    {
        Line::Banner(n)
    } else if t.starts_with('#') {
        Line::Entry(t)
    } else if t.starts_with("END") {
        Line::End
    } else {
        Scene::ALL
            .into_iter()
            .find(|&s| heading_of(s) == t)
            .map_or(Line::Other, Line::Heading)
    }
}

/// The section heading of a scene.
fn heading_of(scene: Scene) -> &'static str {
    match scene {
        Scene::Neutral => "No interaction",
        Scene::Occlusion => "Occlusion",
        Scene::Interaction => "Interaction",
    }
}

/// A `#NN  [a · b]` line waiting for its text.
struct Entry {
    number: usize,
    subjects: Vec<String>,
    at: Location,
}

struct Parser {
    file: PathBuf,
    errors: Vec<Error>,
}

type HeaderSubject = (String, SubjectKind, Location);

impl Parser {
    fn at(&self, line: usize) -> Location {
        Location {
            file: self.file.clone(),
            line,
        }
    }

    fn syntax(&mut self, line: usize, message: impl Into<String>) {
        self.errors.push(Error::Syntax {
            at: self.at(line),
            message: message.into(),
        });
    }

    fn parse(&mut self, text: &str) -> (Vec<HeaderSubject>, Vec<DraftPrompt>) {
        let lines: Vec<(usize, &str)> = text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect();
        let body_start = lines
            .iter()
            .position(|(_, l)| matches!(classify(l), Line::Banner(_)))
            .unwrap_or(lines.len());
        let (subjects, declared) = self.header(&lines[..body_start]);
        let prompts = self.body(&lines[body_start..]);
        if let Some((total, line)) = declared.filter(|(total, _)| *total != prompts.len()) {
            self.syntax(
                line,
                format!(
                    "the header declares {total} prompts but the file has {}",
                    prompts.len()
                ),
            );
        }
        (subjects, prompts)
    }

    /// The "Reference subjects" block and the declared prompt total (`75 prompts | …`).
    fn header(&mut self, lines: &[(usize, &str)]) -> (Vec<HeaderSubject>, Option<(usize, usize)>) {
        let mut declared = None;
        let mut subjects = Vec::new();
        let mut in_block = false;
        // The current kind line: kind, declared count, line, names so far.
        let mut group: Option<(SubjectKind, usize, usize, Vec<String>)> = None;
        for &(n, line) in lines {
            let t = line.trim();
            if let Some(total) = t
                .split_once(" prompts")
                .and_then(|(total, _)| total.parse().ok())
            {
                declared = Some((total, n));
            } else if t == "Reference subjects" {
                in_block = true;
            } else if in_block && t.is_empty() {
                in_block = false;
                self.close_group(group.take());
            } else if in_block {
                let rest = match t.split_once(':').filter(|(label, _)| label.contains('(')) {
                    Some((label, rest)) => {
                        self.close_group(group.take());
                        match parse_group_label(label) {
                            Some((kind, count)) => group = Some((kind, count, n, Vec::new())),
                            None => self.syntax(n, format!("unknown subject group `{label}` (expected `People (N)`, `Animals (N)` or `Objects (N)`)")),
                        }
                        rest
                    }
                    None if group.is_none() => {
                        self.syntax(
                            n,
                            "expected a subject group such as `People (7): black woman, …`",
                        );
                        continue;
                    }
                    None => t,
                };
                if let Some((kind, _, _, names)) = &mut group {
                    for name in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        names.push(name.to_owned());
                        subjects.push((name.to_owned(), *kind, self.at(n)));
                    }
                }
            }
        }
        self.close_group(group);
        (subjects, declared)
    }

    fn close_group(&mut self, group: Option<(SubjectKind, usize, usize, Vec<String>)>) {
        if let Some((kind, count, line, names)) =
            group.filter(|(_, count, _, names)| *count != names.len())
        {
            self.syntax(
                line,
                format!(
                    "the {kind:?} group declares {count} subjects but lists {}",
                    names.len()
                ),
            );
        }
    }

    /// Banners, headings and entries.
    fn body(&mut self, lines: &[(usize, &str)]) -> Vec<DraftPrompt> {
        let mut prompts = Vec::new();
        let mut level = None;
        let mut scene = None;
        // An entry line waiting for its text: its line, and the entry unless it was malformed.
        let mut pending: Option<(usize, Option<Entry>)> = None;
        for &(n, line) in lines {
            let kind = classify(line);
            if let Some((at, entry)) = pending.take() {
                match kind {
                    Line::Blank => {
                        pending = Some((at, entry));
                        continue;
                    }
                    Line::Other => {
                        if let Some(entry) = entry {
                            prompts.push(self.prompt(entry, line.trim(), level, scene));
                        }
                        continue;
                    }
                    _ => self.syntax(at, NO_TEXT),
                }
            }
            match kind {
                Line::Blank | Line::Rule => {}
                Line::Banner(n) => level = Some(n),
                Line::Heading(s) => scene = Some(s),
                Line::Entry(t) => pending = Some((n, self.entry(t, n))),
                Line::End => break,
                Line::Other => self.syntax(n, format!("unexpected line `{}`", line.trim())),
            }
        }
        if let Some((at, _)) = pending {
            self.syntax(at, NO_TEXT);
        }
        prompts
    }

    /// Parses `#NN  [a · b · …]`.
    fn entry(&mut self, t: &str, n: usize) -> Option<Entry> {
        let parsed = t.strip_prefix('#').and_then(|rest| {
            let (number, rest) = rest.split_once(char::is_whitespace)?;
            let list = rest.trim().strip_prefix('[')?.strip_suffix(']')?;
            let number = number.parse::<usize>().ok().filter(|&n| n >= 1)?;
            let subjects: Vec<String> =
                list.split(SEPARATOR).map(|s| s.trim().to_owned()).collect();
            Some((number, subjects))
        });
        match parsed {
            Some((_, subjects)) if subjects.iter().any(String::is_empty) => {
                self.syntax(n, "empty subject name in brackets");
                None
            }
            Some((number, subjects)) => Some(Entry {
                number,
                subjects,
                at: self.at(n),
            }),
            None => {
                self.syntax(
                    n,
                    format!("malformed entry `{t}` (expected `#NN  [subject · subject · …]`)"),
                );
                None
            }
        }
    }

    fn prompt(
        &mut self,
        entry: Entry,
        text: &str,
        banner: Option<usize>,
        heading: Option<Scene>,
    ) -> DraftPrompt {
        let Entry {
            number,
            subjects,
            at,
        } = entry;
        let index = number - 1;
        let level = 2 * (index / PER_LEVEL + 1);
        let formula_scene = Scene::ALL[(index % PER_LEVEL) / PER_SCENE];
        if let Some(banner) = banner.filter(|&b| b != level) {
            self.syntax(at.line, format!("#{number:02} is under the {banner}-SUBJECT banner but its number puts it at level {level}"));
        }
        let scene = heading.unwrap_or(formula_scene);
        if scene != formula_scene {
            self.syntax(
                at.line,
                format!(
                    "#{number:02} is under the `{}` heading but its number puts it under `{}`",
                    heading_of(scene),
                    heading_of(formula_scene)
                ),
            );
        }
        DraftPrompt {
            subject_lines: vec![at.clone(); subjects.len()],
            expected_count: Some(level),
            prompt: Prompt {
                id: format!("{number:02}_{}", scene.id_suffix()),
                scene,
                text: text.to_owned(),
                subjects,
                location: at,
            },
        }
    }
}

/// `People  (7)` → (Person, 7).
fn parse_group_label(label: &str) -> Option<(SubjectKind, usize)> {
    let (word, count) = label.split_once('(')?;
    let count = count.trim().strip_suffix(')')?.trim().parse().ok()?;
    let kind = match word.trim().to_lowercase().as_str() {
        "people" | "person" | "persons" => SubjectKind::Person,
        "animals" | "animal" => SubjectKind::Animal,
        "objects" | "object" => SubjectKind::Object,
        _ => return None,
    };
    Some((kind, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_matches_file_stems() {
        assert_eq!(normalise("Siamese cat"), "siamesecat");
        assert_eq!(normalise("the middle_eastern man"), "middleeasternman");
        assert_eq!(image_key("stuffed bear"), normalise("stuff_bear"));
        assert_eq!(image_key("Black Woman"), "blackwomen");
        assert_eq!(image_key("bowl"), "bowl");
    }
}
