//! End-to-end tests of the `scrbench` binary on the paper's data (`../shared/datasets/p13n-workshop`)
//! and on synthetic `compose` studies. Each test works in its own temporary directory.

mod adapters;
mod cache;
mod errors;
mod local;
mod parity;
mod resume;
mod setup;
mod slurm;
mod study;
mod worker;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The shared copy of the paper's dataset beside the checkout.
pub fn data() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/p13n-workshop");
    dir.canonicalize()
        .unwrap_or_else(|_| panic!("the shared dataset is missing at {}", dir.display()))
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// A `scrbench` command with `--config config`.
pub fn scrbench(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scrbench"));
    command.arg("--config").arg(config).env("RUST_LOG", "warn");
    command
}

/// Runs and returns the output, failing the test with stderr if the exit code differs.
pub fn run_ok(command: &mut Command, expected_code: i32) -> Output {
    let output = command.output().expect("scrbench starts");
    assert_eq!(
        output.status.code(),
        Some(expected_code),
        "unexpected exit status\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `scrbench run --json` plus `extra` args; returns the run summary.
pub fn run_json(config: &Path, extra: &[&str], expected_code: i32) -> Value {
    let output = run_ok(
        scrbench(config).args(["run", "--json"]).args(extra),
        expected_code,
    );
    serde_json::from_slice(&output.stdout).expect("run --json prints JSON")
}

/// `computed` count of `stage` in a run summary.
pub fn computed(summary: &Value, stage: &str) -> u64 {
    summary["stages"][stage]["computed"]
        .as_u64()
        .expect("computed count")
}

pub fn cached(summary: &Value, stage: &str) -> u64 {
    summary["stages"][stage]["cached"]
        .as_u64()
        .expect("cached count")
}

/// Writes a study config into `dir` and returns its path. `models` is YAML indented by 2.
pub fn write_study(dir: &Path, benchmark: &Path, models: &str) -> PathBuf {
    let path = dir.join("study.yaml");
    let text = format!(
        "study: test\nbenchmark: {}\nseeds: [42, 43]\ncache: cache\nreports: reports\nmodels:\n{models}",
        benchmark.display()
    );
    std::fs::write(&path, text).expect("write study");
    path
}

/// The report's `items.jsonl`.
pub fn items_jsonl(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("reports/test/items.jsonl")).expect("items.jsonl")
}
