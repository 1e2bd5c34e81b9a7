//! Open-vocabulary object detection natively on candle: OWL-ViT and OWLv2 from Hugging Face
//! checkpoints, matching transformers' `OwlViTForObjectDetection` / `Owlv2ForObjectDetection`
//! and their image processors' `post_process_object_detection`.
//!
//! Used for detection-aware (per-subject) collapse scoring (DESIGN §3): every subject name becomes
//! a text query (through a template, default `"a photo of a {}"`), the detector returns boxes with
//! the query they match, and per-query NMS removes duplicates before crops are matched to subjects.
//!
//! * [`owl`]: the model ([`Owl`]): vision tower with OWL's class-token merge, text tower, box,
//!   class and (OWLv2) objectness heads; tensor-level outputs ([`OwlOutput`]).
//! * [`imaging`]: transformers' image preprocessing for both variants.
//! * [`postprocess`]: scores, labels, threshold and absolute `xyxy` boxes as transformers does,
//!   plus per-query NMS.
//! * [`OwlDetector`] puts them behind the object-safe [`Detector`] trait.
//!
//! Checkpoints are resolved with [`encoders::checkpoint`] (local directory or hub cache, never
//! downloaded).

pub mod error;
pub mod imaging;
pub mod owl;
pub mod postprocess;

use candle_core::{Device, Tensor};
use encoders::checkpoint::Checkpoint;
use image::RgbImage;
use serde::Serialize;

pub use error::{Error, Result};
pub use owl::{ImageOutputs, Owl, OwlOutput, OwlVariant};
pub use postprocess::{Detection, iou, nms_per_query, post_process};

/// Bump when a change may alter any output beyond rounding.
pub const IMPLEMENTATION_VERSION: u32 = 1;

/// An open-vocabulary detector the pipeline can hold as `Box<dyn Detector>`.
pub trait Detector: Send + Sync {
    /// Everything that determines the outputs (for cache keys).
    fn identity(&self) -> serde_json::Value;
    /// Detections for `queries` (one per subject, already phrased or raw names, as the
    /// implementation documents) in `image`; `bbox` in the image's pixels.
    fn detect(&self, image: &RgbImage, queries: &[String]) -> Result<Vec<Detection>>;
}

/// Options of [`OwlDetector`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OwlOptions {
    /// Query template; `{}` is replaced by the subject name.
    pub template: String,
    /// Keep boxes whose score is strictly above this (transformers' default 0.1).
    pub threshold: f32,
    /// Per-query NMS IoU threshold; `None` keeps every box above the threshold.
    pub nms_iou: Option<f32>,
    /// OWLv2 padding value (after scaling to `[0, 1]`); transformers 5 uses 0.0.
    pub pad_value: f32,
}

impl Default for OwlOptions {
    fn default() -> Self {
        Self {
            template: "a photo of a {}".into(),
            threshold: 0.1,
            nms_iou: Some(0.3),
            pad_value: 0.0,
        }
    }
}

impl OwlOptions {
    /// The text query for a subject name.
    pub fn query(&self, subject: &str) -> String {
        if self.template.contains("{}") {
            self.template.replacen("{}", subject, 1)
        } else {
            subject.to_string()
        }
    }
}

/// OWL-ViT / OWLv2 behind [`Detector`].
pub struct OwlDetector {
    model: Owl,
    options: OwlOptions,
    checkpoint_model: String,
    revision: Option<String>,
    device: Device,
}

impl OwlDetector {
    /// Loads the checkpoint onto `device`.
    pub fn load(checkpoint: &Checkpoint, options: OwlOptions, device: &Device) -> Result<Self> {
        if !(0.0..=1.0).contains(&options.threshold) {
            return Err(Error::Input(format!(
                "score threshold {} outside [0, 1]",
                options.threshold
            )));
        }
        Ok(Self {
            model: Owl::load(checkpoint, device)?,
            options,
            checkpoint_model: checkpoint.model.clone(),
            revision: checkpoint.revision.clone(),
            device: device.clone(),
        })
    }

    /// The wrapped model.
    pub fn model(&self) -> &Owl {
        &self.model
    }

    /// The options.
    pub fn options(&self) -> &OwlOptions {
        &self.options
    }

    /// Preprocessed pixels `(1, 3, s, s)` for `image`.
    pub fn pixels(&self, image: &RgbImage) -> Result<Tensor> {
        let s = self.model.image_size();
        let data = imaging::preprocess(image, self.model.variant(), s, self.options.pad_value)?;
        Ok(Tensor::from_vec(data, (1, 3, s, s), &self.device)?)
    }

    /// Detections before NMS, in patch order (transformers' `post_process_object_detection`).
    pub fn detect_raw(&self, image: &RgbImage, queries: &[String]) -> Result<Vec<Detection>> {
        if queries.is_empty() {
            return Ok(Vec::new());
        }
        let texts: Vec<String> = queries.iter().map(|q| self.options.query(q)).collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let query_embeds = self.model.embed_queries(&texts)?;
        let output = self.model.forward(&self.pixels(image)?, &query_embeds)?;
        let out = Owl::image_outputs(&output, 0)?;
        Ok(post_process(
            &out.logits,
            &out.boxes,
            queries.len(),
            self.options.threshold,
            (image.width(), image.height()),
            self.model.variant(),
        ))
    }
}

impl Detector for OwlDetector {
    fn identity(&self) -> serde_json::Value {
        serde_json::json!({
            "family": self.model.variant(),
            "model": self.checkpoint_model,
            "revision": self.revision,
            "image_size": self.model.image_size(),
            "options": self.options,
            "dtype": "f32",
            "implementation": IMPLEMENTATION_VERSION,
        })
    }

    /// `queries` are subject names, put through [`OwlOptions::template`]. Output sorted by
    /// descending score (after per-query NMS when [`OwlOptions::nms_iou`] is set).
    fn detect(&self, image: &RgbImage, queries: &[String]) -> Result<Vec<Detection>> {
        let mut dets = self.detect_raw(image, queries)?;
        Ok(match self.options.nms_iou {
            Some(iou) => nms_per_query(&dets, iou),
            None => {
                dets.sort_by(|a, b| b.score.total_cmp(&a.score));
                dets
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_fills_the_subject() {
        let options = OwlOptions::default();
        assert_eq!(options.query("red sofa"), "a photo of a red sofa");
        let raw = OwlOptions {
            template: "plain".into(),
            ..OwlOptions::default()
        };
        assert_eq!(raw.query("cat"), "cat");
    }

    #[test]
    fn empty_image_is_an_input_error() {
        let empty = RgbImage::new(0, 0);
        for variant in [OwlVariant::OwlVit, OwlVariant::Owlv2] {
            assert!(matches!(
                imaging::preprocess(&empty, variant, 64, 0.0),
                Err(Error::Input(_))
            ));
        }
    }
}
