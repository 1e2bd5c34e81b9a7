//! Reports in `reports/<study>/`, rebuilt from the store alone.
//!
//! - `items.jsonl`: one line per item (model, prompt, seed, subject count, scene, the state of each
//!   stage, the image digest and size, and the failure message if any);
//! - `summary.md`: done / missing / failed per model × stage, and the failed items.
//!
//! Both are deterministic: the same store gives byte-identical files.

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
    )
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

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
