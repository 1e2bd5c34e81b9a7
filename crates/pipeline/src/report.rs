//! Reports in `reports/<study>/`, rebuilt from the store alone.
//!
//! - `items.jsonl`: one line per item (model, prompt, seed, subject count, scene, the state of each
//!   stage, the image digest and size, and the failure message if any);
//! - `summary.md`: done / missing / failed per model × stage, and the failed items; with detection
//!   configured, the mean global and local (per-subject) SCR per model;
//! - `local.jsonl` (with detection configured): one line per image with its local scores;
//! - once images are scored: the `scores` crate's reports (`results.jsonl`, `summary.csv`,
//!   `report.md`, the figures, and `report.html`: one self-contained page with the tables, figures
//!   and a gallery of every image beside its references) over one [`scores::ImageScores`] per
//!   image, where an image that failed or is not computed yet is listed with its reason, never
//!   left out.
//!
//! All are deterministic: the same store gives byte-identical files.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::items::Item;
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

/// The thumbnails the `inspect` stage stored, for the report's gallery.
fn gallery(pipeline: &Pipeline, evaluated: &Evaluated) -> std::io::Result<scores::Gallery> {
    let mut gallery = scores::Gallery::default();
    for (item, states) in evaluated {
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

/// What produced an image's scores: scrbench's version and each encoder's identity.
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
    out.push_str(&local_summary(pipeline, evaluated));
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
        let Some((_, StageState::Done(entry))) = states.iter().find(|(s, _)| *s == "local-score")
        else {
            continue;
        };
        let Some(digest) = entry.outputs.get("local") else {
            continue;
        };
        let bytes = pipeline
            .store
            .read_blob(digest)
            .map_err(std::io::Error::other)?;
        let local: Value = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        let mut line = json!({"model": item.model, "prompt_id": item.prompt.id, "seed": item.seed});
        if let (Value::Object(line), Value::Object(local)) = (&mut line, local) {
            line.extend(local);
        }
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    Ok(lines)
}

/// Mean global and local (per-subject) SCR per model and τ over the images that have both, when
/// detection is configured; a blob that cannot be read is left out (the run reports its errors).
fn local_summary(pipeline: &Pipeline, evaluated: &Evaluated) -> String {
    if !pipeline.stage_names().contains(&"local-score") {
        return String::new();
    }
    let read = |states: &[(&'static str, StageState)], stage: &str, output: &str| {
        let (_, StageState::Done(entry)) = states.iter().find(|(s, _)| *s == stage)? else {
            return None;
        };
        let bytes = pipeline.store.read_blob(entry.outputs.get(output)?).ok()?;
        serde_json::from_slice::<Value>(&bytes).ok()
    };
    // model, images, global sums per τ, local sums per τ, homogenisation sum and count
    type Row = (String, usize, Vec<f64>, Vec<f64>, f64, usize);
    let mut rows: Vec<Row> = Vec::new();
    let taus: Vec<String> = pipeline
        .config
        .thresholds
        .iter()
        .map(|&t| scores::record::tau_key(t))
        .collect();
    for (item, states) in evaluated.iter().filter(|(item, _)| !item.is_reference()) {
        let (Some(global), Some(local)) = (
            read(states, "score", "scores"),
            read(states, "local-score", "local"),
        ) else {
            continue;
        };
        let index = match rows.iter().position(|r| r.0 == item.model) {
            Some(i) => i,
            None => {
                let zeros = vec![0.0; taus.len()];
                rows.push((item.model.clone(), 0, zeros.clone(), zeros, 0.0, 0));
                rows.len() - 1
            }
        };
        let row = &mut rows[index];
        row.1 += 1;
        for (t, tau) in taus.iter().enumerate() {
            row.2[t] += global["scr"][tau].as_f64().unwrap_or(f64::NAN);
            row.3[t] += local["local_scr"][tau].as_f64().unwrap_or(f64::NAN);
        }
        if let Some(h) = local["homogenisation"].as_f64() {
            row.4 += h;
            row.5 += 1;
        }
    }
    let mut out = String::from(
        "\n## Local (per-subject) SCR\n\nMean over images with both scores: the paper's global SCR \
         (whole image vs each reference) beside the detection-aware local SCR (matched crop vs \
         reference; a subject without a detection counts as collapsed), and the homogenisation \
         index (mean DINOv2 cosine between matched crops of different subjects).\n\n| model | images |",
    );
    for tau in &taus {
        out.push_str(&format!(" SCR@{tau} global | SCR@{tau} local |"));
    }
    out.push_str(" homogenisation |\n|---|---:|");
    out.push_str(&"---:|---:|".repeat(taus.len()));
    out.push_str("---:|\n");
    for (model, images, global, local, h, hn) in rows {
        let n = images as f64;
        out.push_str(&format!("| {model} | {images} |"));
        for (g, l) in global.iter().zip(&local) {
            out.push_str(&format!(" {:.4} | {:.4} |", g / n, l / n));
        }
        if hn > 0 {
            out.push_str(&format!(" {:.4} |\n", h / hn as f64));
        } else {
            out.push_str(" – |\n");
        }
    }
    out
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
