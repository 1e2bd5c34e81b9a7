//! Import of the paper's published per-image scores (`eval_outputs/<model>_results.json`).
//!
//! The file is `{model, time, thresholds, summary, results: [{prompt_id, seed, subject_count,
//! scene_type, clip_t, clip_i, dino, dinov2, scr: {"0.4": …}, prompt, output_path}]}`. Each result
//! becomes an [`ImageScores`]. The paper's `scene_type` is `"unknown"` everywhere (its script ran
//! `int("01_no_interaction")`), so the scene is recovered from the prompt id instead, and checked
//! against the fixed layout of the benchmark (DESIGN §1): for entry `NN`, scene =
//! ((NN−1) mod 15) div 5 and subject count = 2·(⌊(NN−1)/15⌋+1). The published file has no
//! per-subject cosines, so `subjects` is empty; the prompt text and output path go to
//! `provenance`.

use std::path::Path;

use benchmark::Scene;
use serde::Deserialize;

use crate::error::Error;
use crate::record::{ImageScores, Metrics};

#[derive(Deserialize)]
struct ResultsFile {
    model: String,
    #[serde(default)]
    time: Option<serde_json::Value>,
    results: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct PaperRecord {
    prompt_id: String,
    seed: u64,
    subject_count: usize,
    #[serde(default)]
    scene_type: Option<String>,
    clip_t: f64,
    clip_i: f64,
    dino: f64,
    dinov2: f64,
    scr: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    output_path: Option<String>,
}

/// Reads one `<model>_results.json` of the paper, fixing every scene from its prompt id.
pub fn import_paper_results(path: &Path) -> Result<Vec<ImageScores>, Error> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let file: ResultsFile = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_owned(),
        source,
    })?;
    let source_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.results
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let prompt_id = value
                .get("prompt_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            let fail = |reason: String| Error::Record {
                path: path.to_owned(),
                index,
                prompt_id: prompt_id.clone(),
                reason,
            };
            let record: PaperRecord =
                serde_json::from_value(value).map_err(|e| fail(e.to_string()))?;
            let (scene, expected_count) = parse_prompt_id(&record.prompt_id).map_err(&fail)?;
            if record.subject_count != expected_count {
                return Err(fail(format!(
                    "subject_count is {} but prompt {} has {expected_count} subjects",
                    record.subject_count, record.prompt_id
                )));
            }
            if let Some(stated) = record.scene_type.as_deref().and_then(scene_from_suffix)
                && stated != scene
            {
                return Err(fail(format!(
                    "scene_type says {stated} but the prompt id says {scene}"
                )));
            }
            let values = [record.clip_t, record.clip_i, record.dino, record.dinov2];
            if let Some(bad) = values
                .iter()
                .chain(record.scr.values())
                .find(|v| !v.is_finite())
            {
                return Err(fail(format!("non-finite score {bad}")));
            }
            Ok(ImageScores {
                model: file.model.clone(),
                prompt_id: record.prompt_id,
                seed: record.seed,
                subject_count: record.subject_count,
                scene,
                image_digest: None,
                metrics: Metrics {
                    clip_t: Some(record.clip_t),
                    clip_i: Some(record.clip_i),
                    dino: Some(record.dino),
                    dinov2: Some(record.dinov2),
                    scr: record.scr,
                    ..Metrics::default()
                },
                provenance: serde_json::json!({
                    "source": "paper",
                    "file": source_name,
                    "time": file.time,
                    "prompt": record.prompt,
                    "output_path": record.output_path,
                    "scrbench": env!("CARGO_PKG_VERSION"),
                }),
                error: None,
            })
        })
        .collect()
}

fn scene_from_suffix(suffix: &str) -> Option<Scene> {
    Scene::ALL.into_iter().find(|s| s.id_suffix() == suffix)
}

/// Scene and subject count of a paper prompt id `NN_<scene>`, checked against the fixed layout.
pub fn parse_prompt_id(id: &str) -> Result<(Scene, usize), String> {
    let bad =
        || format!("prompt id {id:?} is not NN_no_interaction, NN_occlusion or NN_interaction");
    let (number, suffix) = id.split_once('_').ok_or_else(bad)?;
    let scene = scene_from_suffix(suffix).ok_or_else(bad)?;
    let number: usize = match number.parse() {
        Ok(n) if n >= 1 && number.len() == 2 => n,
        _ => return Err(bad()),
    };
    let layout = Scene::ALL[(number - 1) % 15 / 5];
    if layout != scene {
        return Err(format!(
            "prompt id {id:?}: entry {number} is a {layout} prompt in the paper's layout"
        ));
    }
    Ok((scene, 2 * ((number - 1) / 15 + 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids() {
        assert_eq!(
            parse_prompt_id("01_no_interaction"),
            Ok((Scene::Neutral, 2))
        );
        assert_eq!(parse_prompt_id("06_occlusion"), Ok((Scene::Occlusion, 2)));
        assert_eq!(
            parse_prompt_id("75_interaction"),
            Ok((Scene::Interaction, 10))
        );
        assert!(parse_prompt_id("01_occlusion").is_err());
        assert!(parse_prompt_id("1_no_interaction").is_err());
        assert!(parse_prompt_id("unknown").is_err());
    }
}
