//! The per-image record.
//!
//! An [`ImageScores`] identifies one generated image (model, prompt, seed, subject count, scene,
//! digest) and carries its [`Metrics`], flattened into the same JSON object, plus free-form
//! `provenance`. [`Metrics`] is what [`crate::score_image`] computes: the four paper metrics, SCR
//! at every threshold, and the per-subject cosines ([`SubjectScores`]) they were averaged from.
//!
//! Absence is explicit: a metric whose encoder is not configured is `None` (`null` in JSON), never
//! replaced by another metric; an image that could not be scored has `error` set and empty metrics,
//! and stays in every report with its reason.

use std::collections::BTreeMap;

use benchmark::Scene;
use serde::{Deserialize, Serialize};

/// Scores of one generated image; one line of `results.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageScores {
    pub model: String,
    /// The benchmark's prompt id, e.g. `06_occlusion`.
    pub prompt_id: String,
    pub seed: u64,
    /// Number of reference subjects N.
    pub subject_count: usize,
    pub scene: Scene,
    /// Content digest of the generated image, where known.
    pub image_digest: Option<String>,
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Encoder ids, revisions, weight digests, scrbench version, import source, …
    #[serde(default)]
    pub provenance: serde_json::Value,
    /// Why this image has no scores; `None` for a scored image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImageScores {
    /// Whether the image failed (it then counts in reports only as a failure).
    pub fn is_failed(&self) -> bool {
        self.error.is_some()
    }

    /// The key `results.jsonl` is sorted by: model, prompt id, seed.
    pub fn sort_key(&self) -> (&str, &str, u64) {
        (&self.model, &self.prompt_id, self.seed)
    }
}

/// The paper's metrics for one generated image against its N references.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// cos(CLIP(gen), CLIP_text(prompt)).
    pub clip_t: Option<f64>,
    /// mean over references of cos(CLIP(gen), CLIP(ref)).
    pub clip_i: Option<f64>,
    /// mean over references of cos(DINO(gen), DINO(ref)).
    pub dino: Option<f64>,
    /// mean over references of cos(DINOv2(gen), DINOv2(ref)).
    pub dinov2: Option<f64>,
    /// SCR@τ keyed by the threshold as written (see [`tau_key`]); empty without DINOv2.
    #[serde(default)]
    pub scr: BTreeMap<String, f64>,
    /// Per-reference cosines, in the prompt's subject order; empty where unknown (the paper's
    /// published scores have none).
    #[serde(default)]
    pub subjects: Vec<SubjectScores>,
    /// Per-subject (local) SCR@τ from detected crops (DESIGN §3), keyed like [`Metrics::scr`];
    /// empty without detection.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub local_scr: BTreeMap<String, f64>,
    /// Mean DINOv2 cosine between the matched crops of different subjects; `None` without
    /// detection or with fewer than two matched subjects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homogenisation: Option<f64>,
    /// How many subjects' best crop is also another subject's best crop (an instance serving
    /// several identities); `None` without detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_instance: Option<f64>,
}

/// Cosines of the generated image (and of its matched crop) against one reference subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubjectScores {
    pub name: String,
    pub clip_i: Option<f64>,
    pub dino: Option<f64>,
    pub dinov2: Option<f64>,
    /// DINOv2 cosine of the crop matched to this subject (detection); `None` when no crop was
    /// matched or detection is not configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<f64>,
}

/// The key SCR@τ is stored under: the threshold as Python prints it (`0.4`, `0.5`, `1.0`).
pub fn tau_key(tau: f64) -> String {
    let text = tau.to_string();
    if text.contains(['.', 'e', 'N', 'i']) {
        text
    } else {
        format!("{text}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tau_keys_match_python() {
        assert_eq!(tau_key(0.4), "0.4");
        assert_eq!(tau_key(0.55), "0.55");
        assert_eq!(tau_key(1.0), "1.0");
    }
}
