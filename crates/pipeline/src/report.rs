//! Reports in `reports/<study>/`, rebuilt from the store alone.
//!
//! - `items.jsonl`: one line per item (model, prompt, seed, subject count, scene, the state of each
//!   stage, the image digest and size, and the failure message if any);
//! - `summary.md`: done / missing / failed per model × stage, and the failed items;
//! - `local.jsonl` (with detection configured): one line per image with its local scores;
//! - once images are scored: the `scores` crate's reports (`results.jsonl`, `summary.csv`,
//!   `report.md`, the figures, and `report.html`: one self-contained page with the tables, figures
//!   and a gallery of every image beside its references) over one [`scores::ImageScores`] per
//!   image; with detection, each record also carries the image's local scores (local SCR,
//!   homogenisation, same-instance, each subject's matched-crop cosine) and the gallery the
//!   matched crops, so local SCR is aggregated and shown beside the global SCR; where an image that failed or is not computed yet is listed with its reason, never
//!   left out.
//!
//! All are deterministic: the same store gives byte-identical files.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::items::Item;
use crate::local::LocalScores;
use crate::runner::StageState;
use crate::{Evaluated, Pipeline, Status};

pub(crate) fn write(dir: &Path, pipeline: &Pipeline, evaluated: &Evaluated) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut lines = String::new();
    for (item, states) in evaluated {
        lines.push_str(&item_line(item, states).to_string());
        lines.push('\n');
    }
    write_atomic(&dir.join("items.jsonl"), lines.as_bytes())?;
    write_atomic(
        &dir.join("summary.md"),
        summary(pipeline, evaluated).as_bytes(),
    )?;
    if pipeline.stage_names().contains(&"local-score") {
        write_atomic(
            &dir.join("local.jsonl"),
            local_lines(pipeline, evaluated)?.as_bytes(),
        )?;
    }
    if pipeline.stage_names().contains(&"score") {
        let scores = image_scores(pipeline, evaluated)?;
        let gallery = gallery(pipeline, evaluated)?;
        let options = scores::ReportOptions::default();
        scores::write_report_html(dir, &pipeline.config.study, &scores, &options, &gallery)
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// One record per scored (or failed, or not yet computed) image of the study.
fn image_scores(
    pipeline: &Pipeline,
    evaluated: &Evaluated,
) -> std::io::Result<Vec<scores::ImageScores>> {
    let mut records = Vec::new();
    for (item, states) in evaluated.iter().filter(|(item, _)| !item.is_reference()) {
        let state = |name: &str| {
            states
                .iter()
                .find(|(s, _)| *s == name)
                .map(|(_, state)| state)
        };
        let mut record = scores::ImageScores {
            model: item.model.clone(),
            prompt_id: item.prompt.id.clone(),
            seed: item.seed,
            subject_count: item.prompt.subject_count(),
            scene: item.prompt.scene,
            image_digest: match state("generate") {
                Some(StageState::Done(entry)) => {
                    entry.outputs.get("image").map(ToString::to_string)
                }
                _ => None,
            },
            metrics: scores::Metrics::default(),
            provenance: provenance(states),
            error: None,
        };
        // A worker generator's own account of the image (label, adapter, device, timing).
        if let Some(generator) = done_json::<Value>(pipeline, states, "generate", "provenance")? {
            record.provenance["label"] = generator["label"].clone();
            record.provenance["generator"] = generator;
        }
        match state("score") {
            Some(StageState::Done(entry)) => {
                let digest = entry.outputs.get("scores").ok_or_else(|| {
                    std::io::Error::other(format!("{}: score entry without scores", item.id()))
                })?;
                let bytes = pipeline
                    .store
                    .read_blob(digest)
                    .map_err(std::io::Error::other)?;
                record.metrics = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
                if let Some(local) =
                    done_json::<LocalScores>(pipeline, states, "local-score", "local")?
                {
                    merge_local(&mut record.metrics, local);
                }
            }
            _ => {
                let failed = states
                    .iter()
                    .find_map(|(stage, s)| s.failed().map(|m| format!("{stage}: {m}")));
                record.error =
                    Some(failed.unwrap_or_else(|| "not computed yet: run `scrbench run`".into()));
            }
        }
        records.push(record);
    }
    Ok(records)
}

/// The JSON output `output` of `stage` when that stage is done for the item.
fn done_json<T: serde::de::DeserializeOwned>(
    pipeline: &Pipeline,
    states: &[(&'static str, StageState)],
    stage: &str,
    output: &str,
) -> std::io::Result<Option<T>> {
    let Some((_, StageState::Done(entry))) = states.iter().find(|(s, _)| *s == stage) else {
        return Ok(None);
    };
    let Some(digest) = entry.outputs.get(output) else {
        return Ok(None);
    };
    let bytes = pipeline
        .store
        .read_blob(digest)
        .map_err(std::io::Error::other)?;
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        std::io::Error::other(format!(
            "{stage} output `{output}` ({digest}) does not parse: {e}"
        ))
    })
}

/// Adds an image's local (detection-aware) scores to its paper metrics.
fn merge_local(metrics: &mut scores::Metrics, local: LocalScores) {
    metrics.local_scr = local.local_scr;
    metrics.homogenisation = local.homogenisation;
    metrics.same_instance = Some(local.same_instance as f64);
    for (subject, verdict) in metrics.subjects.iter_mut().zip(&local.subjects) {
        subject.local = verdict.cosine;
    }
}

/// The thumbnails the `inspect` stage stored, and those of the crops matched to subjects, for
/// the report's gallery.
fn gallery(pipeline: &Pipeline, evaluated: &Evaluated) -> std::io::Result<scores::Gallery> {
    let mut gallery = scores::Gallery::default();
    for (item, states) in evaluated {
        if let (Some(local), Some((_, StageState::Done(crop)))) = (
            done_json::<LocalScores>(pipeline, states, "local-score", "local")?,
            states.iter().find(|(s, _)| *s == "crop"),
        ) {
            for subject in &local.subjects {
                let Some(digest) = subject
                    .crop
                    .and_then(|i| crop.outputs.get(&format!("thumb.{i}")))
                else {
                    continue;
                };
                let bytes = pipeline
                    .store
                    .read_blob(digest)
                    .map_err(std::io::Error::other)?;
                let key = (item.model.as_str(), item.prompt.id.as_str(), item.seed);
                gallery.insert_crop(key, &subject.name, bytes);
            }
        }
        let Some((_, StageState::Done(entry))) = states.iter().find(|(s, _)| *s == "inspect")
        else {
            continue;
        };
        let Some(digest) = entry.outputs.get("thumbnail") else {
            continue;
        };
        let bytes = pipeline
            .store
            .read_blob(digest)
            .map_err(std::io::Error::other)?;
        if item.is_reference() {
            gallery.insert_reference(&item.prompt.id, bytes);
        } else {
            gallery.insert_image(&item.model, &item.prompt.id, item.seed, bytes);
        }
    }
    Ok(gallery)
}

/// What produced an image's scores: scrbench's version and each encoder's identity (and, added by
/// [`image_scores`], a worker generator's `label` and `generator` provenance).
fn provenance(states: &[(&'static str, StageState)]) -> Value {
    let encoders: Map<String, Value> = states
        .iter()
        .filter(|(stage, _)| stage.starts_with("embed-"))
        .filter_map(|(stage, state)| match state {
            StageState::Done(entry) => Some(((*stage).to_owned(), json!(entry.key.model))),
            _ => None,
        })
        .collect();
    json!({"scrbench": env!("CARGO_PKG_VERSION"), "encoders": encoders})
}

fn item_line(item: &Item, states: &[(&'static str, StageState)]) -> Value {
    let mut stages = Map::new();
    let mut line = json!({
        "model": item.model,
        "prompt_id": item.prompt.id,
        "seed": item.seed,
        "subjects": item.prompt.subject_count(),
        "scene": item.prompt.scene,
    });
    for (stage, state) in states {
        let value = match state {
            StageState::Done(entry) => json!({"state": "done", "outputs": entry.outputs}),
            StageState::Pending { .. } => match state.failed() {
                Some(message) => json!({"state": "failed", "error": message}),
                None => json!({"state": "missing"}),
            },
            StageState::Blocked => json!({"state": "blocked"}),
            StageState::Error(message) => json!({"state": "failed", "error": message}),
        };
        if let StageState::Done(entry) = state {
            if *stage == "inspect" {
                line["width"] = entry.meta["width"].clone();
                line["height"] = entry.meta["height"].clone();
            }
            if *stage == "generate" {
                line["image"] = json!(entry.outputs.get("image"));
            }
        }
        stages.insert((*stage).to_owned(), value);
    }
    line["stages"] = Value::Object(stages);
    line
}

fn summary(pipeline: &Pipeline, evaluated: &Evaluated) -> String {
    let status = Status::of(evaluated);
    let mut out = format!(
        "# {}\n\nBenchmark: {} ({} prompts, {} subjects); seeds {:?}.\n\n",
        pipeline.config.study,
        pipeline.bench.name,
        pipeline.bench.prompts.len(),
        pipeline.bench.subjects.len(),
        pipeline.config.seeds
    );
    out.push_str("| model | stage | done | missing | failed |\n|---|---|---:|---:|---:|\n");
    for row in &status.rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.model, row.stage, row.done, row.missing, row.failed
        ));
    }
    if !status.failures.is_empty() {
        out.push_str("\n## Failed items\n\n");
        for failure in &status.failures {
            out.push_str(&format!(
                "- `{}` [{}]: {}\n",
                failure.item, failure.stage, failure.message
            ));
        }
    }
    out
}

/// One line per image whose local scores are computed: model, prompt, seed and the `local-score`
/// output (local SCR per τ, per-subject matches, homogenisation, same-instance count).
fn local_lines(pipeline: &Pipeline, evaluated: &Evaluated) -> std::io::Result<String> {
    let mut lines = String::new();
    for (item, states) in evaluated.iter().filter(|(item, _)| !item.is_reference()) {
        let Some(local) = done_json::<Value>(pipeline, states, "local-score", "local")? else {
            continue;
        };
        let mut line = json!({"model": item.model, "prompt_id": item.prompt.id, "seed": item.seed});
        if let (Value::Object(line), Value::Object(local)) = (&mut line, local) {
            line.extend(local);
        }
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    Ok(lines)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
