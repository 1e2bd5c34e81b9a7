//! The model detectors behind the `detect` stage ([`DetectorModel`]):
//!
//! - [`OwlModel`]: OWL-ViT / OWLv2 natively on candle (`crates/detectors`), from a hub id or an
//!   HF-layout folder; keyed by its checkpoint files' digests and its options;
//! - [`WorkerModel`]: an external detector adapter (GroundingDINO, Florence-2, transformers…) run
//!   as a long-lived worker process speaking the adapter protocol (`adapters/PROTOCOL.md`,
//!   `detect` requests) through `crates/worker`; keyed by the adapter's name, version, the
//!   digests of its manifest and script, and the options passed to it.
//!
//! Both are resolved when the study opens (a missing checkpoint or adapter is an error then) and
//! start on the first image a run detects, so a fully cached rerun loads no model and starts no
//! worker; `low_memory` runs release them when the stage is done.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use generate::worker::{AdapterKind, Manifest, ManifestError, adapter_python};
use serde_json::json;
use store::Digest;

use crate::detect::{DetectionConfig, DetectorChoice, WorkerDetectorConfig, decode};
use crate::lazy::{FileDigests, LazyModel};
use crate::stage::{Context, StageError};

use detectors::{Detection, Detector as _};

/// A configured model detector.
pub enum DetectorModel {
    Owl(Box<OwlModel>),
    Worker(Box<WorkerModel>),
}

/// Why a detector cannot be set up when the study opens.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error(transparent)]
    Checkpoint(#[from] encoders::Error),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: {message}")]
    Adapter { path: PathBuf, message: String },
}

impl DetectorModel {
    /// The configured model detector (`None` for the oracle). `device` is asked for only by a
    /// native model; worker logs go under `<cache>/logs/workers`.
    pub fn open(
        config: &DetectionConfig,
        device: impl FnOnce() -> Result<candle_core::Device, encoders::Error>,
        cache: &Path,
    ) -> Result<Option<DetectorModel>, DetectorError> {
        Ok(match (config.detector, &config.worker) {
            (DetectorChoice::Oracle, _) => None,
            (DetectorChoice::Owlvit | DetectorChoice::Owlv2, _) => Some(DetectorModel::Owl(
                Box::new(OwlModel::resolve(config, &device()?)?),
            )),
            (DetectorChoice::Worker, Some(worker)) => Some(DetectorModel::Worker(Box::new(
                WorkerModel::resolve(config, worker, cache)?,
            ))),
            (DetectorChoice::Worker, None) => {
                return Err(DetectorError::Adapter {
                    path: PathBuf::from("detection"),
                    message: "`detector: worker` needs a `worker:` section".into(),
                });
            }
        })
    }

    /// The model part of the `detect` key.
    pub(crate) fn model_key(&self, cx: &Context) -> Result<BTreeMap<String, String>, StageError> {
        match self {
            DetectorModel::Owl(owl) => owl.model_key(cx),
            DetectorModel::Worker(worker) => worker.model_key(cx),
        }
    }

    /// Detections of `queries` (subject names) in the image blob `image`.
    pub(crate) fn detect(
        &self,
        cx: &Context,
        image: &Digest,
        queries: &[String],
    ) -> Result<Vec<Detection>, StageError> {
        match self {
            DetectorModel::Owl(owl) => owl.detect(cx, image, queries),
            DetectorModel::Worker(worker) => worker.detect(cx, image, queries),
        }
    }

    /// Frees the model or stops the worker; the next image loads or starts it again.
    pub(crate) fn release(&self) {
        match self {
            DetectorModel::Owl(owl) => owl.model.release(),
            DetectorModel::Worker(worker) => worker.worker.release(),
        }
    }
}

/// An OWL checkpoint, resolved when the study opens and loaded on the first image a run detects.
pub struct OwlModel {
    checkpoint: encoders::Checkpoint,
    options: detectors::OwlOptions,
    device: candle_core::Device,
    files: FileDigests,
    model: LazyModel<detectors::OwlDetector>,
}

impl OwlModel {
    /// Resolves the configured checkpoint (no weights read): a missing model is an error at open.
    pub fn resolve(
        config: &DetectionConfig,
        device: &candle_core::Device,
    ) -> Result<OwlModel, encoders::Error> {
        let model = config
            .model
            .clone()
            .or(config.detector.default_model().map(str::to_owned))
            .unwrap_or_default();
        let mut spec = encoders::ModelSpec::new(model);
        if let Some(revision) = &config.revision {
            spec = spec.with_revision(revision.clone());
        }
        let checkpoint = encoders::Checkpoint::resolve(&spec)?;
        let mut files = vec![checkpoint.config_file.clone()];
        files.extend(checkpoint.weight_files.iter().cloned());
        for name in ["tokenizer.json", "preprocessor_config.json"] {
            files.extend(checkpoint.file(name));
        }
        Ok(OwlModel {
            options: detectors::OwlOptions {
                template: config.template.clone(),
                threshold: config.threshold,
                nms_iou: config.nms_iou,
                ..detectors::OwlOptions::default()
            },
            files: FileDigests::new(files),
            checkpoint,
            device: device.clone(),
            model: LazyModel::default(),
        })
    }

    /// The model part of a key: file digests, options and implementation, no local paths.
    fn model_key(&self, cx: &Context) -> Result<BTreeMap<String, String>, StageError> {
        let mut model = self.files.get(cx)?;
        model.insert("detector".into(), "owl".into());
        model.insert("options".into(), json!(self.options).to_string());
        model.insert(
            "implementation".into(),
            detectors::IMPLEMENTATION_VERSION.to_string(),
        );
        model.insert("dtype".into(), "f32".into());
        if let Some(revision) = &self.checkpoint.revision {
            model.insert("hub_id".into(), self.checkpoint.model.clone());
            model.insert("revision".into(), revision.clone());
        }
        Ok(model)
    }

    fn detect(
        &self,
        cx: &Context,
        image: &Digest,
        queries: &[String],
    ) -> Result<Vec<Detection>, StageError> {
        let image = decode(cx, image)?;
        let detector = self.model.get(|| {
            let dir = self.checkpoint.dir.display();
            tracing::info!("loading the detector from {dir}");
            detectors::OwlDetector::load(&self.checkpoint, self.options.clone(), &self.device)
                .map(Arc::new)
                .map_err(|e| format!("cannot load the detector from {dir}: {e}"))
        })?;
        detector
            .detect(&image, queries)
            .map_err(|e| StageError::Failed(format!("detector: {e}")))
    }
}

/// An external detector adapter, started on the first image a run detects.
pub struct WorkerModel {
    manifest: Manifest,
    config: worker::WorkerConfig,
    /// The options passed to the worker (`--model`, `--threshold`, …), in the key.
    args: Vec<String>,
    files: FileDigests,
    worker: LazyModel<worker::Worker>,
}

impl WorkerModel {
    /// Reads the adapter's manifest and resolves its interpreter; starts nothing.
    pub fn resolve(
        detection: &DetectionConfig,
        settings: &WorkerDetectorConfig,
        cache: &Path,
    ) -> Result<WorkerModel, DetectorError> {
        let manifest = Manifest::load(&settings.dir)?;
        let adapter = |message: String| DetectorError::Adapter {
            path: settings.dir.join("adapter.yaml"),
            message,
        };
        if manifest.kind != AdapterKind::Detector {
            return Err(adapter(format!(
                "adapter `{}` is a generator, not a detector",
                manifest.name
            )));
        }
        let python = match manifest.uses_python() {
            true => Some(
                adapter_python(&manifest.name, settings.python.as_deref(), cache)
                    .map_err(adapter)?,
            ),
            false => None,
        };
        let logs = std::path::absolute(cache.join("logs/workers"))
            .map_err(|e| adapter(format!("cache {}: {e}", cache.display())))?;
        let mut config = manifest
            .worker_config(
                &format!("detector-{}", manifest.name),
                &settings.dir,
                python.as_deref(),
                settings.smoke,
                &logs,
            )
            .map_err(adapter)?;
        config.attempts = settings.attempts;
        // The study's detection options, passed on; they are part of the key.
        let mut args = Vec::new();
        let model = detection.model.iter().map(|m| ("--model", m.clone()));
        let revision = detection.revision.iter().map(|r| ("--revision", r.clone()));
        let nms = detection
            .nms_iou
            .iter()
            .map(|n| ("--nms-iou", n.to_string()));
        let fixed = [
            ("--template", detection.template.clone()),
            ("--threshold", detection.threshold.to_string()),
        ];
        for (flag, value) in model.chain(revision).chain(fixed).chain(nms) {
            args.extend([flag.to_owned(), value]);
        }
        config.command.extend(args.iter().map(OsString::from));
        // The manifest and the files its command names (the worker script) decide the outputs.
        let mut files = vec![settings.dir.join("adapter.yaml")];
        files.extend(
            manifest
                .command
                .iter()
                .map(|part| settings.dir.join(part))
                .filter(|file| file.is_file()),
        );
        Ok(WorkerModel {
            manifest,
            config,
            args,
            files: FileDigests::new(files),
            worker: LazyModel::default(),
        })
    }

    fn model_key(&self, cx: &Context) -> Result<BTreeMap<String, String>, StageError> {
        let mut model = self.files.get(cx)?;
        model.insert("detector".into(), "worker".into());
        model.insert("adapter".into(), self.manifest.name.clone());
        model.insert("adapter_version".into(), self.manifest.version.clone());
        model.insert("args".into(), json!(self.args).to_string());
        model.insert("smoke".into(), self.config.smoke.to_string());
        Ok(model)
    }

    fn detect(
        &self,
        cx: &Context,
        image: &Digest,
        queries: &[String],
    ) -> Result<Vec<Detection>, StageError> {
        let worker = self.worker.get(|| {
            worker::Worker::new(self.config.clone())
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })?;
        let request = worker::DetectRequest {
            id: cx.item.id().to_string(),
            image: cx.store.blob_path(image),
            queries: queries.to_vec(),
        };
        let found = worker
            .detect(request)
            .map_err(|e| StageError::Failed(e.to_string()))?;
        Ok(found
            .into_iter()
            .map(|d| Detection {
                query: d.query,
                score: d.score as f32,
                bbox: d.bbox.map(|v| v as f32),
            })
            .collect())
    }
}
