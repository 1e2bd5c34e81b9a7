//! The `worker` generator: a model served by an out-of-process adapter (MOSAIC, XVerse, FLUX…)
//! speaking the worker protocol (`adapters/PROTOCOL.md`) through [`worker::Worker`].
//!
//! An adapter is a folder with a manifest, `adapter.yaml`:
//!
//! ```yaml
//! name: psr                     # the adapter's name; the worker's hello must announce it
//! version: 0.1.0                # bump when the adapter's images change for the same settings
//! label: "FLUX.1-dev, text only, as run in the paper (not PSR)"   # shown in reports
//! description: ...              # free text
//! kind: generator               # or detector (read by the detect stage, not here)
//! prompt_format: {kind: text-only}   # plain | placeholders (with idip: people-only | paper-all) | text-only
//! model: {id: black-forest-labs/FLUX.1-dev, revision: <sha>}   # strings; the cache key's model identity
//! defaults: {width: 768, height: 768, steps: 28, guidance: 3.5}
//! references: {size: 512, pad_color: white}   # optional, free-form: how the worker prepares references
//! command: ["{python}", "worker.py"]          # argv, run in the adapter folder; {python} = the interpreter
//! smoke_args: ["--smoke"]                     # appended in smoke mode
//! env: {PYTORCH_CUDA_ALLOC_CONF: expandable_segments:True}   # optional, added to the environment
//! max_in_flight: 2              # optional upper bound on pipelining (the worker's hello decides)
//! timeouts: {startup_s: 900, request_s: 900, shutdown_s: 10}   # optional, seconds (fractions allowed)
//! restarts: {max: 5, max_failures: 10, backoff_s: 1, backoff_max_s: 60}   # optional: give-up limits, backoff (PROTOCOL.md)
//! ```
//!
//! Unknown keys are errors naming the file. A study uses it as a model:
//!
//! ```yaml
//! models:
//!   psr:
//!     adapter: worker
//!     dir: adapters/psr   # the folder with adapter.yaml, relative to the study file
//!     smoke: false        # true: the adapter's tiny random components on CPU (`smoke_args`)
//!     python: null        # the interpreter for {python}; default below
//!     settings: {}        # overrides of the manifest's defaults: width, height, steps, guidance
//!     attempts: 3         # tries per image before the item is marked failed
//! ```
//!
//! `{python}` is, in order: `python:`; `<cache>/adapters/<name>/venv/bin/python` if it exists (made
//! by `cargo xtask adapter setup <name>`); the environment variable `SCRBENCH_PYTHON`. Without any,
//! generation fails with a message saying to run the setup.
//!
//! The [`Identity`] (part of every cache key) comes from the manifest (name, version, `model`), the
//! effective defaults, `references` and the smoke flag, never from the running worker, so a fully
//! cached rerun never starts one. The worker starts on the first [`Generator::generate`] call and is
//! shut down when the generator is dropped. Its stderr goes to `<cache>/logs/workers/<model>.<pid>.log`.
//!
//! Each image also gets an extra output `provenance` (stored beside it, not in the key): the label,
//! adapter, version, smoke flag, the device and model the worker announced, and its timing.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::worker::{GenerateRequest, ReferenceImage, Worker, WorkerConfig};
use benchmark::expand::PromptFormat;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Error, Generated, GenerationJob, Generator, Identity};

/// The manifest file's name inside an adapter folder.
pub const MANIFEST: &str = "adapter.yaml";

/// `adapter.yaml`; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// How reports name the model (e.g. "FLUX.1-dev, text only, as run in the paper (not PSR)").
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub kind: AdapterKind,
    /// Required for generators.
    #[serde(default)]
    pub prompt_format: Option<PromptFormat>,
    /// Model identity (id, revision, LoRA…), part of the cache key.
    #[serde(default)]
    pub model: BTreeMap<String, String>,
    #[serde(default)]
    pub defaults: ImageSettings,
    /// How the worker prepares references (informative for scrbench, part of the key).
    #[serde(default)]
    pub references: Option<BTreeMap<String, Value>>,
    /// argv, run in the adapter folder; `{python}` is replaced by the interpreter.
    pub command: Vec<String>,
    #[serde(default)]
    pub smoke_args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub restarts: Restarts,
}

/// What an adapter serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterKind {
    Generator,
    Detector,
}

/// Image settings: the manifest's `defaults`, or a study's overrides (`settings:`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
}

/// `timeouts:` of a manifest, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Longest wait for `hello` (default 900).
    #[serde(default)]
    pub startup_s: Option<f64>,
    /// Longest wait for one result (default 900).
    #[serde(default)]
    pub request_s: Option<f64>,
    /// Longest wait for a clean exit after `shutdown` (default 10).
    #[serde(default)]
    pub shutdown_s: Option<f64>,
}

/// `restarts:` of a manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restarts {
    /// Consecutive failed starts after which the model is given up for the run (default 5).
    #[serde(default)]
    pub max: Option<u32>,
    /// Consecutive failures of the running worker without a successful result after which the
    /// model is given up for the run (default 10).
    #[serde(default)]
    pub max_failures: Option<u32>,
    /// First restart delay in seconds, doubling per consecutive failure (default 1).
    #[serde(default)]
    pub backoff_s: Option<f64>,
    /// Longest restart delay in seconds (default 60).
    #[serde(default)]
    pub backoff_max_s: Option<f64>,
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ManifestError {
    pub path: PathBuf,
    pub message: String,
}

impl Manifest {
    /// Reads `<dir>/adapter.yaml`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST);
        let error = |message: String| ManifestError {
            path: path.clone(),
            message,
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| error(format!("cannot read: {e}")))?;
        let manifest: Manifest = serde_saphyr::from_str(&text).map_err(|e| error(e.to_string()))?;
        if manifest.name.is_empty() || manifest.version.is_empty() {
            return Err(error("`name` and `version` must not be empty".into()));
        }
        if manifest.command.is_empty() {
            return Err(error("`command` is empty".into()));
        }
        if manifest.max_in_flight == Some(0) {
            return Err(error("`max_in_flight` must be at least 1".into()));
        }
        Ok(manifest)
    }

    /// A client configuration that runs this adapter from `dir` (its argv with `{python}`
    /// replaced, `smoke_args` appended in smoke mode, its environment, timeouts and restarts).
    /// Shared by generators and detectors. `name` names the log files.
    pub fn worker_config(
        &self,
        name: &str,
        dir: &Path,
        python: Option<&Path>,
        smoke: bool,
        logs: &Path,
    ) -> Result<WorkerConfig, String> {
        let mut argv = self.command.clone();
        if smoke {
            argv.extend(self.smoke_args.iter().cloned());
        }
        let command = argv
            .iter()
            .map(|part| match (part.contains("{python}"), python) {
                (false, _) => Ok(OsString::from(part)),
                (true, Some(python)) => {
                    let python = python.to_str().ok_or_else(|| {
                        format!("the interpreter path {} is not UTF-8", python.display())
                    })?;
                    Ok(OsString::from(part.replace("{python}", python)))
                }
                (true, None) => Err("the command uses {python} but no interpreter is set".into()),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let mut config = WorkerConfig::new(name, &self.name, command, logs);
        config.cwd = Some(dir.to_owned());
        config.smoke = smoke;
        // Python buffers a piped stdout/stderr; the protocol and the logs need every line now.
        config.env.push(("PYTHONUNBUFFERED".into(), "1".into()));
        config
            .env
            .extend(self.env.iter().map(|(k, v)| (k.into(), v.into())));
        config.max_in_flight = self.max_in_flight;
        let seconds = |value: Option<f64>, what: &str, default: Duration| match value {
            None => Ok(default),
            Some(s) => Duration::try_from_secs_f64(s)
                .map_err(|_| format!("`{what}` must be a non-negative number of seconds")),
        };
        let t = &self.timeouts;
        config.startup_timeout =
            seconds(t.startup_s, "timeouts.startup_s", config.startup_timeout)?;
        config.request_timeout =
            seconds(t.request_s, "timeouts.request_s", config.request_timeout)?;
        config.shutdown_timeout =
            seconds(t.shutdown_s, "timeouts.shutdown_s", config.shutdown_timeout)?;
        let r = &self.restarts;
        config.backoff = seconds(r.backoff_s, "restarts.backoff_s", config.backoff)?;
        config.backoff_max = seconds(
            r.backoff_max_s,
            "restarts.backoff_max_s",
            config.backoff_max,
        )?;
        if let Some(max) = r.max {
            config.max_restarts = max.max(1);
        }
        if let Some(max) = r.max_failures {
            config.max_failures = max.max(1);
        }
        Ok(config)
    }

    /// Whether the command needs an interpreter.
    pub fn uses_python(&self) -> bool {
        self.command
            .iter()
            .chain(&self.smoke_args)
            .any(|part| part.contains("{python}"))
    }
}

/// Settings of the `worker` adapter in a study; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// The adapter folder (with `adapter.yaml`). The pipeline resolves it relative to its config
    /// file.
    pub dir: PathBuf,
    /// Run the adapter's tiny random components on CPU.
    #[serde(default)]
    pub smoke: bool,
    /// The interpreter for `{python}`; see the module docs for the default.
    #[serde(default)]
    pub python: Option<PathBuf>,
    /// Overrides of the manifest's `defaults`.
    #[serde(default)]
    pub settings: ImageSettings,
    /// Tries per image (default 3).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_attempts() -> u32 {
    3
}

/// The effective image settings of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Resolved {
    width: u32,
    height: u32,
    steps: u32,
    guidance: f64,
}

/// A generator served by a worker process; see the module docs.
pub struct WorkerGenerator {
    model: String,
    dir: PathBuf,
    manifest: Manifest,
    prompt_format: PromptFormat,
    image: Resolved,
    settings: WorkerSettings,
    cache: PathBuf,
    /// Started on first use; an error (no interpreter…) is kept and repeated.
    worker: OnceLock<Result<Arc<Worker>, String>>,
}

impl std::fmt::Debug for WorkerGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerGenerator")
            .field("model", &self.model)
            .field("dir", &self.dir)
            .field("adapter", &self.manifest.name)
            .finish_non_exhaustive()
    }
}

impl WorkerGenerator {
    /// Reads and checks the manifest; starts nothing. `model` is the study's model name (log file
    /// names), `cache` the study's store (logs and the default interpreter live under it).
    pub fn new(model: &str, settings: WorkerSettings, cache: &Path) -> Result<Self, Error> {
        let invalid = |message: String| Error::Settings {
            adapter: "worker".into(),
            message,
        };
        let dir = std::path::absolute(&settings.dir).map_err(|source| Error::Io {
            path: settings.dir.clone(),
            source,
        })?;
        let manifest = Manifest::load(&dir).map_err(|e| invalid(e.to_string()))?;
        let path = dir.join(MANIFEST);
        let invalid_manifest = |message: String| invalid(format!("{}: {message}", path.display()));
        if manifest.kind != AdapterKind::Generator {
            return Err(invalid_manifest(format!(
                "adapter `{}` is a detector, not a generator",
                manifest.name
            )));
        }
        let prompt_format = manifest
            .prompt_format
            .ok_or_else(|| invalid_manifest("a generator needs `prompt_format`".into()))?;
        let (defaults, overrides) = (&manifest.defaults, &settings.settings);
        let missing = |what: &str| {
            invalid_manifest(format!(
                "`defaults.{what}` is missing (set it there or under the model's `settings:`)"
            ))
        };
        let image = Resolved {
            width: overrides
                .width
                .or(defaults.width)
                .ok_or_else(|| missing("width"))?,
            height: overrides
                .height
                .or(defaults.height)
                .ok_or_else(|| missing("height"))?,
            steps: overrides
                .steps
                .or(defaults.steps)
                .ok_or_else(|| missing("steps"))?,
            guidance: overrides
                .guidance
                .or(defaults.guidance)
                .ok_or_else(|| missing("guidance"))?,
        };
        if !(1..=8192).contains(&image.width) || !(1..=8192).contains(&image.height) {
            return Err(invalid(format!(
                "size {}×{} is outside 1..=8192",
                image.width, image.height
            )));
        }
        if !image.guidance.is_finite() {
            return Err(invalid("guidance must be a finite number".into()));
        }
        if settings.attempts == 0 {
            return Err(invalid("`attempts` must be at least 1".into()));
        }
        // Reject bad timeouts now rather than at the first image.
        manifest
            .worker_config(
                model,
                &dir,
                Some(Path::new("python")),
                false,
                Path::new("."),
            )
            .map_err(invalid_manifest)?;
        Ok(WorkerGenerator {
            model: model.to_owned(),
            dir,
            manifest,
            prompt_format,
            image,
            settings,
            cache: cache.to_owned(),
            worker: OnceLock::new(),
        })
    }

    /// The manifest's label, or its name: how reports should name this model.
    pub fn label(&self) -> &str {
        self.manifest
            .label
            .as_deref()
            .unwrap_or(&self.manifest.name)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The running worker's `hello`, if it has started.
    pub fn hello(&self) -> Option<::worker::Hello> {
        match self.worker.get() {
            Some(Ok(worker)) => worker.hello(),
            _ => None,
        }
    }

    /// The interpreter for `{python}`: `python:`, the set-up virtual environment, or
    /// `SCRBENCH_PYTHON`.
    pub fn python(&self) -> Result<PathBuf, String> {
        adapter_python(
            &self.manifest.name,
            self.settings.python.as_deref(),
            &self.cache,
        )
    }

    fn worker(&self) -> Result<&Arc<Worker>, Error> {
        self.worker
            .get_or_init(|| {
                let python = match self.manifest.uses_python() {
                    true => Some(self.python()?),
                    false => None,
                };
                let logs = std::path::absolute(self.cache.join("logs/workers"))
                    .map_err(|e| format!("cache {}: {e}", self.cache.display()))?;
                let mut config = self.manifest.worker_config(
                    &self.model,
                    &self.dir,
                    python.as_deref(),
                    self.settings.smoke,
                    &logs,
                )?;
                config.attempts = self.settings.attempts;
                Worker::new(config).map(Arc::new).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|message| Error::Other(format!("model `{}`: {message}", self.model)))
    }
}

/// The interpreter for an adapter's `{python}`, for generators and detectors alike: `explicit`
/// (the study's `python:`), else the virtual environment `cargo xtask adapter setup` creates
/// (`<cache>/adapters/<name>/venv/bin/python`), else `SCRBENCH_PYTHON`; else an error saying how
/// to get one.
pub fn adapter_python(
    name: &str,
    explicit: Option<&Path>,
    cache: &Path,
) -> Result<PathBuf, String> {
    if let Some(python) = explicit {
        return Ok(python.to_owned());
    }
    let venv = cache.join("adapters").join(name).join("venv/bin/python");
    if venv.is_file() {
        return Ok(venv);
    }
    if let Some(python) = std::env::var_os("SCRBENCH_PYTHON").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(python));
    }
    Err(format!(
        "no Python for adapter `{name}`: run `cargo xtask adapter setup {name}` (it creates {}), \
         set `python:` in the study, or set SCRBENCH_PYTHON",
        venv.display()
    ))
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The wire name of a prompt format: its `kind`.
fn format_name(format: PromptFormat) -> &'static str {
    match format {
        PromptFormat::Plain => "plain",
        PromptFormat::Placeholders { .. } => "placeholders",
        PromptFormat::TextOnly => "text-only",
    }
}

impl Generator for WorkerGenerator {
    fn identity(&self) -> Identity {
        let mut settings = json!({
            "width": self.image.width,
            "height": self.image.height,
            "steps": self.image.steps,
            "guidance": self.image.guidance,
            "smoke": self.settings.smoke,
        });
        if let Some(references) = &self.manifest.references {
            settings["references"] = json!(references);
        }
        Identity {
            adapter: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            model: self.manifest.model.clone(),
            settings,
        }
    }

    fn prompt_format(&self) -> PromptFormat {
        self.prompt_format
    }

    fn generate(&self, job: &GenerationJob, out: &Path) -> Result<Generated, Error> {
        let worker = self.worker()?;
        // The worker runs in the adapter folder: every path it gets is absolute.
        let output = absolute(out)?;
        let references = job
            .prompt
            .references
            .iter()
            .map(|r| {
                Ok(ReferenceImage {
                    name: r.name.clone(),
                    caption: r.caption.clone(),
                    idip: r.idip,
                    path: absolute(&r.image)?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let request = GenerateRequest {
            id: format!("{}/{}", job.prompt_id, job.seed),
            prompt: job.prompt.text.clone(),
            format: format_name(job.prompt.format).to_owned(),
            references,
            seed: job.seed,
            width: self.image.width,
            height: self.image.height,
            steps: self.image.steps,
            guidance: self.image.guidance,
            output: output.clone(),
        };
        let reply = worker
            .generate(request)
            .map_err(|e| Error::Other(e.to_string()))?;
        if let Some(file) = &reply.file
            && *file != output
        {
            std::fs::copy(file, &output).map_err(|source| Error::Io {
                path: file.clone(),
                source,
            })?;
        }
        let hello = worker.hello();
        let provenance = json!({
            "label": self.label(),
            "adapter": self.manifest.name,
            "adapter_version": self.manifest.version,
            "smoke": self.settings.smoke,
            "device": hello.as_ref().and_then(|h| h.device.clone()),
            "worker_model": hello.as_ref().map(|h| json!(h.model)),
            "seconds": reply.seconds,
            "info": reply.info,
        });
        Ok(Generated {
            extra: [("provenance".to_owned(), provenance)].into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(dir: &Path, manifest: &str) -> PathBuf {
        let folder = dir.join("adapter");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(MANIFEST), manifest).unwrap();
        folder
    }

    const PSR: &str = r#"
name: psr
version: 0.1.0
label: "FLUX.1-dev, text only, as run in the paper (not PSR)"
description: test
kind: generator
prompt_format: {kind: text-only}
model: {id: black-forest-labs/FLUX.1-dev, revision: 3de623fc3c33e44ffbe2bad470d0f45bccf2eb21}
defaults: {width: 768, height: 768, steps: 28, guidance: 3.5}
command: ["{python}", "worker.py"]
smoke_args: ["--smoke"]
max_in_flight: 2
timeouts: {startup_s: 900, request_s: 0.5}
"#;

    fn settings(dir: PathBuf) -> WorkerSettings {
        WorkerSettings {
            dir,
            smoke: false,
            python: None,
            settings: ImageSettings::default(),
            attempts: 3,
        }
    }

    #[test]
    fn identity_comes_from_the_manifest_settings_and_smoke_flag() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = adapter(tmp.path(), PSR);
        let generator = WorkerGenerator::new("psr", settings(dir.clone()), tmp.path()).unwrap();
        let identity = generator.identity();
        assert_eq!(
            (identity.adapter.as_str(), identity.version.as_str()),
            ("psr", "0.1.0")
        );
        assert_eq!(identity.model["id"], "black-forest-labs/FLUX.1-dev");
        assert_eq!(
            identity.settings,
            json!({"width": 768, "height": 768, "steps": 28, "guidance": 3.5, "smoke": false})
        );
        assert_eq!(generator.prompt_format(), PromptFormat::TextOnly);
        assert_eq!(
            generator.label(),
            "FLUX.1-dev, text only, as run in the paper (not PSR)"
        );
        // Nothing was started: no logs, no hello.
        assert!(generator.hello().is_none());
        assert!(!tmp.path().join("logs").exists());

        let mut smoke = settings(dir);
        smoke.smoke = true;
        smoke.settings.width = Some(64);
        let identity = WorkerGenerator::new("psr", smoke, tmp.path())
            .unwrap()
            .identity();
        assert_eq!(identity.settings["width"], 64);
        assert_eq!(identity.settings["smoke"], true);
    }

    #[test]
    fn unknown_manifest_keys_are_errors_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = adapter(tmp.path(), &format!("{PSR}colour: blue\n"));
        let error = WorkerGenerator::new("psr", settings(dir), tmp.path()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("adapter.yaml"), "{message}");
        assert!(message.contains("colour"), "{message}");
    }

    #[test]
    fn a_detector_manifest_or_a_missing_default_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = adapter(
            tmp.path(),
            &PSR.replace("kind: generator", "kind: detector"),
        );
        let message = WorkerGenerator::new("psr", settings(dir), tmp.path())
            .unwrap_err()
            .to_string();
        assert!(message.contains("not a generator"), "{message}");
        let dir = adapter(tmp.path(), &PSR.replace(", steps: 28", ""));
        let message = WorkerGenerator::new("psr", settings(dir.clone()), tmp.path())
            .unwrap_err()
            .to_string();
        assert!(message.contains("defaults.steps"), "{message}");
        let mut with_steps = settings(dir);
        with_steps.settings.steps = Some(4);
        assert!(WorkerGenerator::new("psr", with_steps, tmp.path()).is_ok());
    }

    #[test]
    fn no_interpreter_is_an_error_saying_to_run_the_setup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = adapter(tmp.path(), PSR);
        let generator = WorkerGenerator::new("psr", settings(dir.clone()), tmp.path()).unwrap();
        // SCRBENCH_PYTHON may be set by the environment running the tests; the venv wins over it.
        let venv = tmp.path().join("adapters/psr/venv/bin");
        std::fs::create_dir_all(&venv).unwrap();
        std::fs::write(venv.join("python"), "").unwrap();
        assert_eq!(generator.python().unwrap(), venv.join("python"));
        std::fs::remove_file(venv.join("python")).unwrap();
        if std::env::var_os("SCRBENCH_PYTHON").is_none() {
            let message = generator.python().unwrap_err();
            assert!(
                message.contains("cargo xtask adapter setup psr"),
                "{message}"
            );
        }
        let mut explicit = settings(dir);
        explicit.python = Some("/opt/py/bin/python3".into());
        let generator = WorkerGenerator::new("psr", explicit, tmp.path()).unwrap();
        assert_eq!(
            generator.python().unwrap(),
            Path::new("/opt/py/bin/python3")
        );
    }

    #[test]
    fn the_worker_config_substitutes_python_and_appends_smoke_args() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = adapter(tmp.path(), PSR);
        let manifest = Manifest::load(&dir).unwrap();
        let config = manifest
            .worker_config(
                "psr-smoke",
                &dir,
                Some(Path::new("/v/bin/python")),
                true,
                tmp.path(),
            )
            .unwrap();
        assert_eq!(config.command, ["/v/bin/python", "worker.py", "--smoke"]);
        assert_eq!(config.cwd.as_deref(), Some(dir.as_path()));
        assert_eq!(config.request_timeout, Duration::from_millis(500));
        assert_eq!(config.max_in_flight, Some(2));
        assert!(config.smoke);
        assert!(
            manifest
                .worker_config("psr", &dir, None, false, tmp.path())
                .is_err()
        );
    }

    /// The manifests in `adapters/` are written to this schema.
    #[test]
    fn the_repository_adapters_manifests_parse() {
        let adapters = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../adapters");
        let Ok(entries) = std::fs::read_dir(&adapters) else {
            return;
        };
        let mut generators = 0;
        for entry in entries.flatten() {
            let dir = entry.path();
            // adapters/tests holds the Python helper's own test fixtures, not an adapter.
            if !dir.join(MANIFEST).is_file() || dir.ends_with("tests") {
                continue;
            }
            let manifest = Manifest::load(&dir).unwrap_or_else(|e| panic!("{e}"));
            if manifest.kind == AdapterKind::Generator {
                let tmp = tempfile::tempdir().unwrap();
                WorkerGenerator::new(&manifest.name, settings(dir.clone()), tmp.path())
                    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
                generators += 1;
            }
        }
        assert!(generators >= 1 || !adapters.join("psr").exists());
    }
}
