//! Subject detection and cropping for the per-subject (local) SCR (DESIGN §3).
//!
//! - `detect` finds each reference subject in a generated image: one [`Detection`] per box, with
//!   the index of the query (subject) it answers, a score and a pixel box. The `oracle` detector
//!   reads the boxes the `compose` generator recorded as ground truth; the open-vocabulary models
//!   (OWL-ViT, OWLv2 from the `detectors` crate) and external detectors run behind
//!   [`detectors::Detector`], queried with each subject's name through a template.
//! - `crop` cuts every detection out of the image (optionally padded to a square with white),
//!   drops boxes that are too small (XVerse's rule: area below `(min_area_fraction·W)²` or a side
//!   below `min_side_fraction·W`, `W` the image width), and stores each crop as a PNG blob
//!   (`crop.0`, `crop.1`, …) with a thumbnail for the report's gallery (`thumb.0`, …), plus a
//!   `crops` JSON listing box, query and score per crop.
//!
//! Both apply to generated images only, and only when `detection:` is configured.

use std::collections::BTreeMap;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::ActionKey;

use crate::detector::DetectorModel;
use crate::items::Item;
use crate::stage::{Context, Output, Stage, StageError, StageOutput, new_key, thumbnail_png};

pub use detectors::{Detection, Detector};

/// Which detector the study uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorChoice {
    /// The boxes `compose` recorded (ground truth); other generators fail.
    #[default]
    Oracle,
    /// OWL-ViT (`google/owlvit-base-patch32` unless `model:` says otherwise).
    Owlvit,
    /// OWLv2 (`google/owlv2-base-patch16-ensemble` unless `model:` says otherwise).
    Owlv2,
    /// An external detector adapter (`worker:`) run as a worker process (adapters/PROTOCOL.md).
    Worker,
}

impl DetectorChoice {
    /// The checkpoint used when `model:` is not set.
    pub fn default_model(self) -> Option<&'static str> {
        match self {
            DetectorChoice::Oracle | DetectorChoice::Worker => None,
            DetectorChoice::Owlvit => Some("google/owlvit-base-patch32"),
            DetectorChoice::Owlv2 => Some("google/owlv2-base-patch16-ensemble"),
        }
    }
}

/// How crops are assigned to subjects (one crop serves at most one subject).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Matching {
    /// Maximum total cosine (Hungarian). Can hand an intact subject its second-best crop so that
    /// a collapsed subject gets a better one, which hides collapse when cross-identity cosines
    /// are high.
    #[default]
    Hungarian,
    /// Highest cosine first: pairs are taken in descending cosine order while both are free.
    Greedy,
}

/// `detection:` in a study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    pub detector: DetectorChoice,
    /// How crops are assigned to subjects: `hungarian` (default) or `greedy`.
    pub matching: Matching,
    /// Pad each crop to a square with white (default true).
    pub pad_square: bool,
    /// Drop boxes whose area is below `(min_area_fraction·W)²` (default 0.05: XVerse's `(W/20)²`).
    pub min_area_fraction: f64,
    /// Drop boxes with a side below `min_side_fraction·W` (default 0.0125: XVerse's `(W/20)/4`).
    pub min_side_fraction: f64,
    /// Model detectors: a hub id (resolved in the local hub cache) or a directory in the HF layout
    /// (relative to the config file); default [`DetectorChoice::default_model`].
    pub model: Option<String>,
    /// Hub revision (branch, tag or commit); default `main`.
    pub revision: Option<String>,
    /// Query text per subject; `{}` is replaced by the subject's name.
    pub template: String,
    /// Keep boxes scoring strictly above this (transformers' default 0.1).
    pub threshold: f32,
    /// Per-query non-maximum suppression at this IoU; `null` keeps every box.
    pub nms_iou: Option<f32>,
    /// `detector: worker`: the external detector adapter.
    pub worker: Option<WorkerDetectorConfig>,
}

/// `detection: worker:`: an external detector adapter, run as a long-lived worker process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerDetectorConfig {
    /// The adapter's folder (with `adapter.yaml`, `kind: detector`), relative to the config file.
    pub dir: std::path::PathBuf,
    /// The interpreter for `{python}` in the manifest's command; default: the adapter's venv
    /// `<cache>/adapters/<name>/venv/bin/python`, else `$SCRBENCH_PYTHON`.
    #[serde(default)]
    pub python: Option<std::path::PathBuf>,
    /// Run the adapter in smoke mode (its manifest's `smoke_args`).
    #[serde(default)]
    pub smoke: bool,
    /// Tries per image before it fails (default 3).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

fn default_attempts() -> u32 {
    3
}

impl Default for DetectionConfig {
    fn default() -> Self {
        DetectionConfig {
            detector: DetectorChoice::Oracle,
            matching: Matching::Hungarian,
            pad_square: true,
            min_area_fraction: 0.05,
            min_side_fraction: 0.0125,
            model: None,
            revision: None,
            template: detectors::OwlOptions::default().template,
            threshold: detectors::OwlOptions::default().threshold,
            nms_iou: detectors::OwlOptions::default().nms_iou,
            worker: None,
        }
    }
}

impl DetectionConfig {
    /// Checks what serde cannot; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.min_area_fraction >= 0.0 && self.min_side_fraction >= 0.0) {
            return Err("`detection:` minimum fractions must be non-negative".into());
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!(
                "`detection: threshold: {}` must be within [0, 1]",
                self.threshold
            ));
        }
        if let Some(iou) = self.nms_iou
            && !(0.0..=1.0).contains(&iou)
        {
            return Err(format!("`detection: nms_iou: {iou}` must be within [0, 1]"));
        }
        if self.detector == DetectorChoice::Oracle && self.model.is_some() {
            return Err(
                "`detection: model:` needs a model detector (owlvit, owlv2, worker)".into(),
            );
        }
        match (self.detector, &self.worker) {
            (DetectorChoice::Worker, None) => {
                Err("`detector: worker` needs a `worker:` section (`dir:` of the adapter)".into())
            }
            (DetectorChoice::Worker, Some(w)) if w.attempts == 0 => {
                Err("`detection: worker: attempts:` must be at least 1".into())
            }
            (DetectorChoice::Worker, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err("`detection: worker:` needs `detector: worker`".into()),
        }
    }

    /// Resolves a local model directory against `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(worker) = &mut self.worker {
            worker.dir = base.join(&worker.dir);
            if let Some(python) = &mut worker.python
                && python.components().count() > 1
            {
                *python = base.join(&*python);
            }
        }
        if let Some(model) = &mut self.model {
            let local = base.join(&*model);
            if local.is_dir() {
                *model = local.display().to_string();
            }
        }
    }
}

/// What the `detect` stage stores as its `detections` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Detections {
    /// The queries, in subject order.
    pub queries: Vec<String>,
    pub detections: Vec<Detection>,
}

/// The `detect` stage.
pub struct DetectStage {
    /// A model detector; `None` for the oracle.
    pub model: Option<DetectorModel>,
}

const ORACLE_NEEDS_TRUTH: &str = "the oracle detector needs compose's ground truth (a `truth` \
                                  output of the generate stage); this model has none";

impl Stage for DetectStage {
    fn name(&self) -> &'static str {
        "detect"
    }

    fn version(&self) -> u32 {
        1
    }

    fn applies_to(&self, item: &Item) -> bool {
        !item.is_reference()
    }

    fn release(&self) {
        if let Some(model) = &self.model {
            model.release();
        }
    }

    fn key(&self, cx: &Context) -> Result<ActionKey, StageError> {
        let mut key = new_key(self);
        key.params
            .insert("queries".into(), json!(cx.item.prompt.subjects));
        key.inputs
            .insert("image".into(), cx.upstream_output("generate", "image")?);
        match &self.model {
            None => {
                key.model.insert("detector".into(), "oracle".into());
                // A missing truth is recorded in the key; `run` fails with the message.
                if let Ok(truth) = cx.upstream_output("generate", "truth") {
                    key.inputs.insert("truth".into(), truth);
                }
            }
            Some(model) => key.model = model.model_key(cx)?,
        }
        Ok(key)
    }

    fn run(&self, cx: &Context, key: &ActionKey) -> Result<StageOutput, StageError> {
        let queries = cx.item.prompt.subjects.clone();
        let detections = match &self.model {
            None => {
                let digest = key
                    .inputs
                    .get("truth")
                    .ok_or_else(|| StageError::Failed(ORACLE_NEEDS_TRUTH.into()))?;
                let truth: generate::compose::Truth =
                    serde_json::from_slice(&cx.store.read_blob(digest)?).map_err(|e| {
                        StageError::Failed(format!("compose's ground truth does not parse: {e}"))
                    })?;
                oracle(&truth, &queries)?
            }
            Some(model) => model.detect(cx, &key.inputs["image"], &queries)?,
        };
        let count = detections.len();
        let bytes = serde_json::to_vec_pretty(&Detections {
            queries,
            detections,
        })
        .map_err(|e| StageError::Failed(format!("cannot serialise detections: {e}")))?;
        let mut outputs = BTreeMap::new();
        outputs.insert("detections".to_owned(), Output::Bytes(bytes));
        Ok(StageOutput {
            outputs,
            meta: json!({"detections": count}),
        })
    }
}

/// One detection per subject whose box compose drew (dropped subjects have none): query = the
/// subject whose box it is (whatever identity it shows), score 1.
pub fn oracle(
    truth: &generate::compose::Truth,
    queries: &[String],
) -> Result<Vec<Detection>, StageError> {
    if truth.subjects.len() != queries.len() {
        return Err(StageError::Failed(format!(
            "compose's ground truth has {} subjects, the prompt {}",
            truth.subjects.len(),
            queries.len()
        )));
    }
    Ok(truth
        .subjects
        .iter()
        .enumerate()
        .filter_map(|(query, subject)| {
            subject.bbox.map(|b| Detection {
                query,
                score: 1.0,
                bbox: b.map(|v| v as f32),
            })
        })
        .collect())
}

/// The image blob `digest`, decoded (the name in errors is the item and the digest).
pub(crate) fn decode(cx: &Context, digest: &store::Digest) -> Result<RgbImage, StageError> {
    let bytes = cx.store.read_blob(digest)?;
    let name = std::path::PathBuf::from(format!("{}@{}", cx.item.id(), digest.short()));
    preprocess::decode_rgb(&bytes, &name).map_err(|e| StageError::Failed(e.to_string()))
}

/// One stored crop, as listed in the `crops` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Crop {
    /// The output holding its PNG: `crop.{index}`.
    pub index: usize,
    pub query: usize,
    pub score: f32,
    /// The detection's box.
    pub bbox: [f32; 4],
    /// The pixels cut out (`bbox` rounded outwards and clipped to the image).
    pub pixels: [u32; 4],
}

/// What the `crop` stage stores as its `crops` output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Crops {
    pub crops: Vec<Crop>,
    /// Detections left out, with the reason.
    pub dropped: Vec<Value>,
}

/// Longest side of a crop's thumbnail (`thumb.{index}`) in pixels.
const CROP_THUMBNAIL: u32 = 64;

/// The `crop` stage.
pub struct CropStage {
    pub config: DetectionConfig,
}

impl Stage for CropStage {
    fn name(&self) -> &'static str {
        "crop"
    }

    fn version(&self) -> u32 {
        2
    }

    fn applies_to(&self, item: &Item) -> bool {
        !item.is_reference()
    }

    fn key(&self, cx: &Context) -> Result<ActionKey, StageError> {
        let mut key = new_key(self);
        key.params
            .insert("pad_square".into(), json!(self.config.pad_square));
        key.params.insert(
            "min_area_fraction".into(),
            json!(self.config.min_area_fraction),
        );
        key.params.insert(
            "min_side_fraction".into(),
            json!(self.config.min_side_fraction),
        );
        key.inputs
            .insert("image".into(), cx.upstream_output("generate", "image")?);
        key.inputs.insert(
            "detections".into(),
            cx.upstream_output("detect", "detections")?,
        );
        Ok(key)
    }

    fn run(&self, cx: &Context, key: &ActionKey) -> Result<StageOutput, StageError> {
        let image = decode(cx, &key.inputs["image"])?;
        let detections: Detections =
            serde_json::from_slice(&cx.store.read_blob(&key.inputs["detections"])?)
                .map_err(|e| StageError::Failed(format!("detections do not parse: {e}")))?;
        let (width, height) = image.dimensions();
        let w = f64::from(width);
        let min_area = (self.config.min_area_fraction * w).powi(2);
        let min_side = self.config.min_side_fraction * w;
        let mut outputs = BTreeMap::new();
        let mut crops = Crops {
            crops: Vec::new(),
            dropped: Vec::new(),
        };
        for detection in detections.detections {
            let [x0, y0, x1, y1] = detection.bbox.map(f64::from);
            let (bw, bh) = (x1 - x0, y1 - y0);
            let reason = if !(bw > 0.0 && bh > 0.0) {
                Some("empty box")
            } else if bw * bh < min_area {
                Some("area below the minimum")
            } else if bw.min(bh) < min_side {
                Some("side below the minimum")
            } else {
                None
            };
            let pixels = [
                x0.floor().clamp(0.0, w) as u32,
                y0.floor().clamp(0.0, f64::from(height)) as u32,
                x1.ceil().clamp(0.0, w) as u32,
                y1.ceil().clamp(0.0, f64::from(height)) as u32,
            ];
            let reason = reason.or((pixels[2] <= pixels[0] || pixels[3] <= pixels[1])
                .then_some("box outside the image"));
            if let Some(reason) = reason {
                crops.dropped.push(
                    json!({"query": detection.query, "bbox": detection.bbox, "reason": reason}),
                );
                continue;
            }
            let crop = crop_box(&image, pixels, self.config.pad_square);
            let png = generate::compose::encode_png(&crop)
                .map_err(|e| StageError::Failed(format!("cannot encode a crop: {e}")))?;
            let index = crops.crops.len();
            outputs.insert(format!("crop.{index}"), Output::Bytes(png));
            outputs.insert(
                format!("thumb.{index}"),
                Output::Bytes(thumbnail_png(crop, CROP_THUMBNAIL)?),
            );
            crops.crops.push(Crop {
                index,
                query: detection.query,
                score: detection.score,
                bbox: detection.bbox,
                pixels,
            });
        }
        let meta = json!({"crops": crops.crops.len(), "dropped": crops.dropped.len()});
        let bytes = serde_json::to_vec_pretty(&crops)
            .map_err(|e| StageError::Failed(format!("cannot serialise crops: {e}")))?;
        outputs.insert("crops".to_owned(), Output::Bytes(bytes));
        Ok(StageOutput { outputs, meta })
    }
}

/// Cuts `pixels` (`[x0, y0, x1, y1]`, inside the image, non-empty) out of `image`; with `pad_square`
/// the crop is centred on a white square whose side is its longer side.
pub fn crop_box(image: &RgbImage, pixels: [u32; 4], pad_square: bool) -> RgbImage {
    let [x0, y0, x1, y1] = pixels;
    let (w, h) = (x1 - x0, y1 - y0);
    let cut = image::imageops::crop_imm(image, x0, y0, w, h).to_image();
    if !pad_square || w == h {
        return cut;
    }
    let side = w.max(h);
    let mut square = RgbImage::from_pixel(side, side, image::Rgb([255, 255, 255]));
    image::imageops::replace(
        &mut square,
        &cut,
        i64::from((side - w) / 2),
        i64::from((side - h) / 2),
    );
    square
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_pads_to_a_white_square_centred() {
        let image = RgbImage::from_pixel(10, 10, image::Rgb([0, 0, 0]));
        let crop = crop_box(&image, [2, 3, 6, 5], true);
        assert_eq!(crop.dimensions(), (4, 4));
        assert_eq!(crop.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(crop.get_pixel(0, 1).0, [0, 0, 0]);
        assert_eq!(crop.get_pixel(3, 2).0, [0, 0, 0]);
        assert_eq!(crop.get_pixel(3, 3).0, [255, 255, 255]);
        let plain = crop_box(&image, [2, 3, 6, 5], false);
        assert_eq!(plain.dimensions(), (4, 2));
    }

    #[test]
    fn detection_config_defaults_follow_xverse() {
        let config: DetectionConfig = serde_saphyr::from_str("detector: oracle\n").unwrap();
        assert_eq!(config, DetectionConfig::default());
        assert!(serde_saphyr::from_str::<DetectionConfig>("detector: owl\n").is_err());
    }
}
