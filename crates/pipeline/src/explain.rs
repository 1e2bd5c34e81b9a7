//! `explain`: the key of each stage of one item and why it would (or would not) run.

use std::fmt;

use serde::Serialize;
use serde_json::Value;
use store::{ActionKey, MissReason};

use crate::items::Item;
use crate::runner::StageState;

/// One stage of an explained item.
#[derive(Clone, Debug, Serialize)]
pub struct StageExplanation {
    pub stage: String,
    /// `up to date`, `would run`, `failed`, `blocked` or `error`.
    pub state: String,
    pub key: Option<ActionKey>,
    pub digest: Option<String>,
    pub reasons: Vec<String>,
}

/// Why an item would or would not run, stage by stage.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub item: String,
    pub stages: Vec<StageExplanation>,
}

impl Explanation {
    pub(crate) fn new(item: &Item, states: Vec<(&'static str, StageState)>) -> Explanation {
        let stages = states
            .into_iter()
            .map(|(stage, state)| {
                let failed = state.failed().is_some();
                let (state, key, reasons) = match state {
                    StageState::Done(entry) => (
                        "up to date".to_owned(),
                        Some(entry.key),
                        vec!["the key matches a stored entry whose outputs verify".to_owned()],
                    ),
                    StageState::Pending { key, reasons } => (
                        if failed { "failed" } else { "would run" }.to_owned(),
                        Some(key),
                        reasons.iter().map(describe).collect(),
                    ),
                    StageState::Blocked => (
                        "blocked".to_owned(),
                        None,
                        vec!["an earlier stage is not done".to_owned()],
                    ),
                    StageState::Error(message) => ("error".to_owned(), None, vec![message]),
                };
                StageExplanation {
                    stage: stage.to_owned(),
                    state,
                    digest: key.as_ref().map(|k| k.digest().to_string()),
                    key,
                    reasons,
                }
            })
            .collect();
        Explanation {
            item: item.id(),
            stages,
        }
    }
}

fn show(value: &Option<Value>) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(v) => v.to_string(),
    }
}

fn show_str(value: &Option<impl ToString>) -> String {
    value
        .as_ref()
        .map_or_else(|| "(absent)".to_owned(), ToString::to_string)
}

/// One line of English for a miss reason.
pub fn describe(reason: &MissReason) -> String {
    match reason {
        MissReason::New => "new: never computed for this item".to_owned(),
        MissReason::StageVersion { old, new } => format!("stage version bumped: {old} → {new}"),
        MissReason::Param { name, old, new } => {
            format!("parameter `{name}` changed: {} → {}", show(old), show(new))
        }
        MissReason::Input { name, old, new } => {
            format!(
                "input `{name}` changed: {} → {}",
                show_str(old),
                show_str(new)
            )
        }
        MissReason::Model { field, old, new } => {
            format!(
                "model `{field}` changed: {} → {}",
                show_str(old),
                show_str(new)
            )
        }
        MissReason::OutputMissing { output, digest } => {
            format!("output `{output}` ({digest}) is missing from the store")
        }
        MissReason::OutputCorrupt { output, digest } => {
            format!("output `{output}` ({digest}) failed verification and was removed")
        }
        MissReason::Failed { message } => format!("the last attempt failed: {message}"),
        MissReason::Unknown => {
            "not in this store (no earlier key recorded for this item)".to_owned()
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "item {}", self.item)?;
        for stage in &self.stages {
            writeln!(f, "\nstage {}: {}", stage.stage, stage.state)?;
            if let Some(digest) = &stage.digest {
                writeln!(f, "  key digest: {digest}")?;
            }
            for reason in &stage.reasons {
                writeln!(f, "  - {reason}")?;
            }
            if let Some(key) = &stage.key {
                let json = serde_json::to_string_pretty(key).map_err(|_| fmt::Error)?;
                writeln!(f, "  key:")?;
                for line in json.lines() {
                    writeln!(f, "    {line}")?;
                }
            }
        }
        Ok(())
    }
}
