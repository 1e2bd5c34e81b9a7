//! Datasets: the paper's benchmark files and published outputs, fetched from its public repository
//! at a pinned commit or imported from a local copy, and verified file by file against digests
//! committed in `prompts/`. A file that fails verification is never written to its destination.
//!
//! ```no_run
//! use std::path::Path;
//! let spec = dataset::spec("p13n-workshop")?;
//! let parts = [dataset::Part::Benchmark, dataset::Part::Results("mosaic".into())];
//! // From a local copy laid out like the repository …
//! let report = dataset::import(&spec, &parts, Path::new("/data/p13n"), Path::new("cache/datasets/p13n-workshop"))?;
//! // … or from GitHub.
//! let report = dataset::fetch(&spec, &parts, Path::new("cache/datasets/p13n-workshop"), dataset::GITHUB_RAW)?;
//! # Ok::<(), dataset::Error>(())
//! ```
//!
//! - [`spec`] names a known dataset: its repository, commit and [`Manifest`] (sha256 per file,
//!   `sha256sum` format, embedded from `prompts/<name>.sha256`).
//! - A [`Part`] selects files: [`Part::Benchmark`] is `LICENSE`, `val_dataset/` and
//!   `eval_outputs/`; [`Part::Results`] is `results/<model>/`.
//! - [`import`] copies from a folder laid out like the repository; [`fetch`] downloads
//!   `<base_url>/<repo>/<commit>/<path>`. Both stream each file into a temporary file beside its
//!   destination while hashing it, and rename it into place only when the digest matches. Files
//!   already present with the right digest are skipped, so both are idempotent and resumable. The
//!   first failure stops the run; files written before it stay (they are verified).

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where [`fetch`] downloads from by default.
pub const GITHUB_RAW: &str = "https://raw.githubusercontent.com";

/// The known datasets: (name, repository, commit, manifest).
const KNOWN: &[(&str, &str, &str, &str)] = &[(
    "p13n-workshop",
    "ZHIHANCHEN03/Multi-Subject-Personalization-Evaluation-P13N-Workshop-",
    "012ae6dbc1ad7cb39dbda75c2ec5da8cb1a1b92e",
    include_str!("../../../prompts/p13n-workshop.sha256"),
)];

/// A dataset: a repository at a pinned commit and the digest of every file scrbench uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    /// GitHub `owner/name`.
    pub repo: String,
    pub commit: String,
    pub manifest: Manifest,
}

/// Expected sha256 digests by repository path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// (path relative to the repository root, lower-case hex sha256), sorted by path.
    pub entries: Vec<(String, String)>,
}

impl Manifest {
    /// Parses `sha256sum` output (`<hex>  <path>`, a leading `./` ignored); `source` names the text
    /// in errors.
    pub fn parse(text: &str, source: &str) -> Result<Manifest, Error> {
        let mut entries = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let bad = |message: &str| Error::Manifest {
                file: source.to_owned(),
                line: i + 1,
                message: message.to_owned(),
            };
            let (hex, path) = line
                .split_once("  ")
                .ok_or_else(|| bad("expected `<sha256>  <path>`"))?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("not a sha256 hex digest"));
            }
            let path = path.strip_prefix("./").unwrap_or(path);
            if path.is_empty()
                || path.starts_with('/')
                || path.split('/').any(|c| c == ".." || c.is_empty())
            {
                return Err(bad(
                    "path must be relative, without `..` or empty components",
                ));
            }
            entries.push((path.to_owned(), hex.to_ascii_lowercase()));
        }
        entries.sort();
        Ok(Manifest { entries })
    }

    /// The entries of `part`, in path order.
    pub fn files(&self, part: &Part) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .filter(|(path, _)| part.contains(path))
            .map(|(p, h)| (p.as_str(), h.as_str()))
            .collect()
    }

    /// The models under `results/` that have pinned digests.
    pub fn result_models(&self) -> Vec<&str> {
        let mut models: Vec<&str> = self
            .entries
            .iter()
            .filter_map(|(p, _)| p.strip_prefix("results/")?.split_once('/').map(|(m, _)| m))
            .collect();
        models.dedup();
        models
    }
}

/// A selection of a dataset's files.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    /// `LICENSE`, `val_dataset/` (prompts and reference images) and `eval_outputs/` (the paper's
    /// scores).
    Benchmark,
    /// `results/<model>/`: one model's published images and `meta.json` files.
    Results(String),
}

impl Part {
    /// Whether repository path `path` belongs to this part.
    pub fn contains(&self, path: &str) -> bool {
        match self {
            Part::Benchmark => {
                path == "LICENSE"
                    || path.starts_with("val_dataset/")
                    || path.starts_with("eval_outputs/")
            }
            Part::Results(model) => path
                .strip_prefix("results/")
                .and_then(|p| p.strip_prefix(model.as_str()))
                .is_some_and(|p| p.starts_with('/')),
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Benchmark => f.write_str("benchmark"),
            Part::Results(model) => write!(f, "results/{model}"),
        }
    }
}

/// What an [`import`] or [`fetch`] did, by repository path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Files verified and written.
    pub written: Vec<String>,
    /// Files already present with the right digest, left alone.
    pub already_present: Vec<String>,
    /// Bytes written.
    pub bytes: u64,
}

/// A dataset operation that failed; every variant names the dataset file or URL concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown dataset `{name}` (known: {known})")]
    UnknownDataset { name: String, known: String },
    #[error("{file}:{line}: {message}")]
    Manifest {
        file: String,
        line: usize,
        message: String,
    },
    #[error(
        "no digests are pinned for results of `{model}` in dataset `{dataset}` (pinned: {pinned}); refusing to fetch unverifiable files"
    )]
    NoDigests {
        dataset: String,
        model: String,
        pinned: String,
    },
    #[error("{path}: missing from the source folder {}", from.display())]
    Missing { path: String, from: PathBuf },
    #[error("{path}: sha256 mismatch: expected {expected}, got {actual}; the file was not written")]
    Digest {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: download from {url} failed: HTTP status {status}\n{}", import_hint(.dataset))]
    Http {
        dataset: String,
        path: String,
        url: String,
        status: u16,
    },
    #[error("{path}: download from {url} failed: {message}\n{}", import_hint(.dataset))]
    Network {
        dataset: String,
        path: String,
        url: String,
        message: String,
    },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// How to get a dataset without network access.
fn import_hint(dataset: &str) -> String {
    format!(
        "To import from a local copy of the repository instead, run `scrbench dataset fetch {dataset} --from DIR` \
         (or `cargo xtask dataset fetch {dataset} --from DIR`), with DIR laid out like the repository."
    )
}

/// The known dataset `name` (`p13n-workshop`).
pub fn spec(name: &str) -> Result<Spec, Error> {
    let &(name, repo, commit, manifest) =
        KNOWN
            .iter()
            .find(|k| k.0 == name)
            .ok_or_else(|| Error::UnknownDataset {
                name: name.to_owned(),
                known: KNOWN.iter().map(|k| k.0).collect::<Vec<_>>().join(", "),
            })?;
    Ok(Spec {
        name: name.to_owned(),
        repo: repo.to_owned(),
        commit: commit.to_owned(),
        manifest: Manifest::parse(manifest, &format!("prompts/{name}.sha256"))?,
    })
}

/// Copies `parts` of `spec` from `from` (laid out like the repository) into `dest`, verifying each.
pub fn import(spec: &Spec, parts: &[Part], from: &Path, dest: &Path) -> Result<Report, Error> {
    run(spec, parts, dest, |path| {
        let source = from.join(path);
        match fs::File::open(&source) {
            Ok(file) => Ok(Box::new(file) as Box<dyn Read>),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Missing {
                path: path.to_owned(),
                from: from.to_path_buf(),
            }),
            Err(source_err) => Err(Error::Io {
                path: source,
                source: source_err,
            }),
        }
    })
}

/// Downloads `parts` of `spec` from `<base_url>/<repo>/<commit>/<path>` (e.g. [`GITHUB_RAW`]) into
/// `dest`, verifying each.
pub fn fetch(spec: &Spec, parts: &[Part], dest: &Path, base_url: &str) -> Result<Report, Error> {
    let agent = ureq::Agent::new_with_defaults();
    let base = base_url.trim_end_matches('/');
    run(spec, parts, dest, |path| {
        let url = format!(
            "{base}/{}/{}/{}",
            spec.repo,
            spec.commit,
            percent_encode(path)
        );
        tracing::debug!("GET {url}");
        let (dataset, path) = (spec.name.clone(), path.to_owned());
        match agent.get(&url).call() {
            Ok(response) => Ok(Box::new(response.into_body().into_reader()) as Box<dyn Read>),
            Err(ureq::Error::StatusCode(status)) => Err(Error::Http {
                dataset,
                path,
                url,
                status,
            }),
            Err(e) => Err(Error::Network {
                dataset,
                path,
                url,
                message: e.to_string(),
            }),
        }
    })
}

/// Installs every file of `parts` not yet present, reading each through `open`.
fn run(
    spec: &Spec,
    parts: &[Part],
    dest: &Path,
    mut open: impl FnMut(&str) -> Result<Box<dyn Read>, Error>,
) -> Result<Report, Error> {
    let mut report = Report::default();
    for part in parts {
        let files = spec.manifest.files(part);
        if let (Part::Results(model), true) = (part, files.is_empty()) {
            return Err(Error::NoDigests {
                dataset: spec.name.clone(),
                model: model.clone(),
                pinned: spec.manifest.result_models().join(", "),
            });
        }
        tracing::info!("{}: {part}: {} files", spec.name, files.len());
        for (path, expected) in files {
            let target = dest.join(path);
            if target.is_file() && sha256_file(&target)? == expected {
                tracing::debug!("{path}: already present");
                report.already_present.push(path.to_owned());
                continue;
            }
            let reader = open(path)?;
            report.bytes += install(reader, path, expected, &target)?;
            tracing::debug!("{path}: written");
            report.written.push(path.to_owned());
        }
    }
    tracing::info!(
        "{}: {} written, {} already present",
        spec.name,
        report.written.len(),
        report.already_present.len()
    );
    Ok(report)
}

/// Streams `reader` into a temporary file beside `target` while hashing it, and renames it to
/// `target` only if the digest is `expected`. Returns the size.
fn install(mut reader: impl Read, path: &str, expected: &str, target: &Path) -> Result<u64, Error> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let io_error = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(io_error(dir))?;
    let (actual, size) = copy_hashing(&mut reader, temp.as_file_mut()).map_err(|e| match e {
        CopyError::Read(source) => Error::Io {
            path: PathBuf::from(path),
            source,
        },
        CopyError::Write(source) => Error::Io {
            path: target.to_path_buf(),
            source,
        },
    })?;
    if actual != expected {
        return Err(Error::Digest {
            path: path.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    temp.as_file().sync_all().map_err(io_error(temp.path()))?;
    temp.persist(target).map_err(|e| Error::Io {
        path: target.to_path_buf(),
        source: e.error,
    })?;
    Ok(size)
}

/// The sha256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut file = fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (digest, _) = copy_hashing(&mut file, io::sink()).map_err(
        |(CopyError::Read(source) | CopyError::Write(source))| Error::Io {
            path: path.to_path_buf(),
            source,
        },
    )?;
    Ok(digest)
}

/// Which side of a copy failed.
enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Copies `reader` to `sink`, returning the sha256 (lower-case hex) and size of what was copied.
fn copy_hashing(reader: &mut impl Read, mut sink: impl Write) -> Result<(String, u64), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    let mut size = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        hasher.update(&buf[..n]);
        sink.write_all(&buf[..n]).map_err(CopyError::Write)?;
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Percent-encodes a repository path for a URL, keeping `/` and RFC 3986 unreserved characters.
fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encodes_spaces() {
        assert_eq!(
            percent_encode("val_dataset/Siamese cat.jpg"),
            "val_dataset/Siamese%20cat.jpg"
        );
    }

    #[test]
    fn parts_select_paths() {
        assert!(Part::Benchmark.contains("val_dataset/bowl.png"));
        assert!(!Part::Benchmark.contains("results/mosaic/01_no_interaction/42.png"));
        assert!(Part::Results("mosaic".into()).contains("results/mosaic/01_no_interaction/42.png"));
        assert!(!Part::Results("mos".into()).contains("results/mosaic/01_no_interaction/42.png"));
    }

    #[test]
    fn embedded_manifest_covers_the_paper() {
        let spec = spec("p13n-workshop").unwrap();
        assert_eq!(spec.manifest.files(&Part::Benchmark).len(), 41);
        assert_eq!(spec.manifest.result_models(), ["mosaic", "psr", "xverse"]);
        for model in ["mosaic", "psr", "xverse"] {
            assert_eq!(
                spec.manifest.files(&Part::Results(model.into())).len(),
                300,
                "{model}"
            );
        }
    }

    #[test]
    fn manifest_errors_name_the_line() {
        let err = Manifest::parse("abc  x\n", "m.sha256").unwrap_err();
        assert_eq!(err.to_string(), "m.sha256:1: not a sha256 hex digest");
    }
}
