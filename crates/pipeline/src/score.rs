//! The `score` stage: the paper's per-image metrics from the stored embeddings.
//!
//! Its key holds the digests of the generated image's embeddings (one per configured encoder), of
//! the prompt's text embedding, and of every reference subject's embeddings, plus the SCR
//! thresholds, so it reruns exactly when one of them changes. Reference embeddings come from the
//! `@references` items, embedded once ([`ReferenceEmbeddings`], filled by the pipeline before the
//! images are scored); they are never recomputed per image. A metric whose encoder is not
//! configured is absent from the scores, never replaced by another encoder's.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::json;
use store::{ActionKey, Digest};

use crate::embed::from_bytes;
use crate::items::Item;
use crate::stage::{Context, Output, Stage, StageError, StageOutput, new_key};

/// Embedding stages and the metric family each one feeds.
const ENCODERS: [(&str, &str); 3] = [
    ("embed-clip", "clip"),
    ("embed-dino", "dino"),
    ("embed-dinov2", "dinov2"),
];
const TEXT: &str = "embed-clip-text";

/// Per reference subject, the digest of its embedding per embedding stage.
pub type ReferenceEmbeddings = Arc<RwLock<BTreeMap<String, BTreeMap<String, Digest>>>>;

pub struct ScoreStage {
    /// The embedding stages configured in this study.
    pub encoders: Vec<&'static str>,
    pub thresholds: Vec<f64>,
    pub references: ReferenceEmbeddings,
}

impl ScoreStage {
    fn embeddings(
        cx: &Context,
        key: &ActionKey,
        prefix: &str,
    ) -> Result<scores::Embeddings, StageError> {
        let mut embeddings = scores::Embeddings::default();
        for (stage, family) in ENCODERS {
            let Some(digest) = key.inputs.get(&format!("{prefix}{stage}")) else {
                continue;
            };
            let vector = Some(from_bytes(&cx.store.read_blob(digest)?)?);
            match family {
                "clip" => embeddings.clip = vector,
                "dino" => embeddings.dino = vector,
                _ => embeddings.dinov2 = vector,
            }
        }
        Ok(embeddings)
    }
}

impl Stage for ScoreStage {
    fn name(&self) -> &'static str {
        "score"
    }

    fn version(&self) -> u32 {
        1
    }

    fn applies_to(&self, item: &Item) -> bool {
        !item.is_reference()
    }

    fn key(&self, cx: &Context) -> Result<ActionKey, StageError> {
        let mut key = new_key(self);
        key.params
            .insert("thresholds".into(), json!(self.thresholds));
        key.params
            .insert("subjects".into(), json!(cx.item.prompt.subjects));
        for stage in &self.encoders {
            key.inputs.insert(
                format!("gen.{stage}"),
                cx.upstream_output(stage, "embedding")?,
            );
        }
        if cx.upstream.contains_key(TEXT) {
            key.inputs
                .insert("text".into(), cx.upstream_output(TEXT, "embedding")?);
        }
        let references = self
            .references
            .read()
            .map_err(|_| StageError::Failed("reference table poisoned".into()))?;
        for (i, subject) in cx.item.prompt.subjects.iter().enumerate() {
            for stage in &self.encoders {
                let digest = references.get(subject).and_then(|r| r.get(*stage)).ok_or_else(|| {
                    StageError::Failed(format!(
                        "the reference `{subject}` has no {stage} embedding (see `status` for its item)"
                    ))
                })?;
                key.inputs.insert(format!("ref.{i}.{stage}"), *digest);
            }
        }
        Ok(key)
    }

    fn run(&self, cx: &Context, key: &ActionKey) -> Result<StageOutput, StageError> {
        let generated = Self::embeddings(cx, key, "gen.")?;
        let mut references = Vec::new();
        for i in 0..cx.item.prompt.subjects.len() {
            references.push(Self::embeddings(cx, key, &format!("ref.{i}."))?);
        }
        let named: Vec<scores::Reference> = cx
            .item
            .prompt
            .subjects
            .iter()
            .zip(&references)
            .map(|(name, embeddings)| scores::Reference { name, embeddings })
            .collect();
        let text = match key.inputs.get("text") {
            Some(digest) => Some(from_bytes(&cx.store.read_blob(digest)?)?),
            None => None,
        };
        let metrics = scores::score_image(&generated, &named, text.as_deref(), &self.thresholds)
            .map_err(|e| StageError::Failed(format!("scoring: {e}")))?;
        let bytes = serde_json::to_vec_pretty(&metrics)
            .map_err(|e| StageError::Failed(format!("cannot serialise scores: {e}")))?;
        let mut outputs = BTreeMap::new();
        outputs.insert("scores".to_owned(), Output::Bytes(bytes));
        Ok(StageOutput {
            outputs,
            meta: json!({}),
        })
    }
}
