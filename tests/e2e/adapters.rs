//! The Python adapters of `adapters/` through the real binary: the worker helper's own tests, a
//! scaffolded adapter (`cargo xtask adapter new`) and the `psr` adapter in smoke mode (tiny random
//! FLUX on CPU), each generating images through the whole pipeline.
//!
//! The psr smoke test needs a Python with torch and diffusers: `SCRBENCH_SMOKE_PYTHON` (CI makes it
//! with `adapters/tests/smoke_venv.sh`). Without one it is skipped with the reason printed, unless
//! `SCRBENCH_REQUIRE_SMOKE=1` (set by `.ci/run`), where it fails.

use super::*;

fn adapters() -> PathBuf {
    repo().join("adapters")
}

/// Runs `python3 args…` in the repository; panics with the output unless it succeeds.
fn python3(args: &[&str]) -> Output {
    let output = Command::new("python3")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "python3 {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A study over the paper's benchmark with `models` (YAML indented by 2), seeds 42 and 43.
fn study_in(dir: &Path, models: &str) -> PathBuf {
    write_study(dir, &data(), models)
}

const TWO_PROMPTS: [&str; 2] = ["--prompts", "01_no_interaction,06_occlusion"];

/// (item, image digest, width, height) of every generated image in the report's items.jsonl.
fn images(dir: &Path) -> Vec<(String, String, u64, u64)> {
    items_jsonl(dir)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|item| item["image"].is_string())
        .map(|item| {
            (
                format!("{}/{}", item["prompt_id"].as_str().unwrap(), item["seed"]),
                item["image"].as_str().unwrap().to_owned(),
                item["width"].as_u64().unwrap(),
                item["height"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn blob(cache: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(cache.join("blobs").join(&digest[..2]).join(digest)).expect("blob")
}

/// Width and height from a PNG's IHDR.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

/// The provenance record stored beside the image of `item` (`prompt_id/seed`).
fn provenance(dir: &Path, cache: &Path, item: &str) -> Value {
    let line = items_jsonl(dir)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|i| format!("{}/{}", i["prompt_id"].as_str().unwrap(), i["seed"]) == item)
        .expect("item");
    let digest = line["stages"]["generate"]["outputs"]["provenance"]
        .as_str()
        .expect("provenance output");
    serde_json::from_slice(&blob(cache, digest)).unwrap()
}

#[test]
fn the_worker_helper_python_tests_pass() {
    let output = python3(&["-m", "unittest", "discover", "-s", "adapters/tests"]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(text.contains("\nOK"), "{text}");
}

#[test]
fn a_scaffolded_adapter_runs_through_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("adapters");
    let setup = adapters().join("scrbench_setup.py");
    python3(&[
        setup.to_str().unwrap(),
        "new",
        "throwaway",
        "--dir",
        parent.to_str().unwrap(),
    ]);
    let folder = parent.join("throwaway");
    let config = study_in(
        tmp.path(),
        &format!(
            "  throwaway:\n    adapter: worker\n    dir: {}\n    python: python3\n    settings: {{width: 40, height: 24}}\n",
            folder.display()
        ),
    );
    let summary = run_json(&config, &TWO_PROMPTS, 0);
    assert_eq!(computed(&summary, "generate"), 4, "{summary}");
    assert_eq!(computed(&summary, "inspect"), 4, "{summary}");
    let images = images(tmp.path());
    assert_eq!(images.len(), 4);
    let cache = tmp.path().join("cache");
    for (item, digest, width, height) in &images {
        assert_eq!((*width, *height), (40, 24), "{item}");
        assert_eq!(png_size(&blob(&cache, digest)), (40, 24), "{item}");
    }
    let distinct: std::collections::BTreeSet<_> = images.iter().map(|i| &i.1).collect();
    assert_eq!(distinct.len(), 4, "one pattern per prompt and seed");
    let record = provenance(tmp.path(), &cache, "01_no_interaction/42");
    assert_eq!(record["adapter"], "throwaway", "{record}");
    assert!(
        record["label"].as_str().unwrap().contains("scaffold"),
        "{record}"
    );
    let again = run_json(&config, &TWO_PROMPTS, 0);
    assert_eq!(cached(&again, "generate"), 4, "{again}");

    // Scored, the report names the model by its adapter's label.
    let label = record["label"].as_str().unwrap().to_owned();
    let study = std::fs::read_to_string(&config).unwrap().replace(
        "models:\n",
        &format!(
            "encoders:\n  dinov2:\n    model: {}\nmodels:\n",
            repo().join("tests/fixtures/encoders/dinov2_tiny").display()
        ),
    );
    std::fs::write(&config, study).unwrap();
    let scored = run_json(&config, &TWO_PROMPTS, 0);
    assert_eq!(computed(&scored, "score"), 4, "{scored}");
    let report = std::fs::read_to_string(tmp.path().join("reports/test/report.md")).unwrap();
    assert!(
        report.contains(&format!("- throwaway: {label}")),
        "{report}"
    );
}

/// The interpreter for the psr smoke test, or why there is none.
fn smoke_python() -> Result<PathBuf, String> {
    let python = std::env::var_os("SCRBENCH_SMOKE_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or("SCRBENCH_SMOKE_PYTHON is not set (make one with adapters/tests/smoke_venv.sh)")?;
    let probe = Command::new(&python)
        .args(["-c", "import torch, diffusers, transformers"])
        .output()
        .map_err(|e| format!("{} does not run: {e}", python.display()))?;
    if !probe.status.success() {
        return Err(format!(
            "{} cannot import torch, diffusers and transformers: {}",
            python.display(),
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
    }
    Ok(python)
}

#[test]
fn psr_smoke_runs_through_the_pipeline_deterministically() {
    let python = match smoke_python() {
        Ok(python) => python,
        Err(reason) if std::env::var("SCRBENCH_REQUIRE_SMOKE").as_deref() == Ok("1") => {
            panic!("the psr smoke test must run here (SCRBENCH_REQUIRE_SMOKE=1): {reason}")
        }
        Err(reason) => {
            eprintln!("skipped psr smoke test: {reason}");
            return;
        }
    };
    let model = format!(
        "  psr:\n    adapter: worker\n    dir: {}\n    smoke: true\n    python: {}\n    settings: {{width: 64, height: 48, steps: 2}}\n",
        adapters().join("psr").display(),
        python.display()
    );
    let run_once = |dir: &Path| {
        let config = study_in(dir, &model);
        let summary = run_json(&config, &TWO_PROMPTS, 0);
        assert_eq!(computed(&summary, "generate"), 4, "{summary}");
        assert!(
            summary["failures"].as_array().unwrap().is_empty(),
            "{summary}"
        );
        config
    };

    let first = tempfile::tempdir().unwrap();
    let config = run_once(first.path());
    let cache = first.path().join("cache");
    let made = images(first.path());
    assert_eq!(made.len(), 4);
    for (item, digest, width, height) in &made {
        assert_eq!((*width, *height), (64, 48), "{item}");
        assert_eq!(png_size(&blob(&cache, digest)), (64, 48), "{item}");
    }
    let distinct: std::collections::BTreeSet<_> = made.iter().map(|i| &i.1).collect();
    assert_eq!(distinct.len(), 4, "distinct per prompt and seed: {made:?}");

    // Generated by the worker, in smoke mode, with the paper's prompt (subjects appended).
    let record = provenance(first.path(), &cache, "01_no_interaction/42");
    assert_eq!(record["adapter"], "psr", "{record}");
    assert_eq!(record["smoke"], true, "{record}");
    assert_eq!(
        record["label"],
        "FLUX.1-dev, text only, as run in the paper (not PSR)"
    );
    assert!(
        record["device"].as_str().unwrap().starts_with("cpu"),
        "{record}"
    );
    let prompt = record["info"]["prompt"].as_str().unwrap();
    assert!(
        prompt.ends_with(". Subjects: black woman, western woman."),
        "{prompt}"
    );

    // A cached rerun starts no worker and computes nothing.
    let again = run_json(&config, &TWO_PROMPTS, 0);
    assert_eq!(cached(&again, "generate"), 4, "{again}");

    // From an empty cache, in another process: the same bytes.
    let second = tempfile::tempdir().unwrap();
    run_once(second.path());
    assert_eq!(
        images(second.path()),
        made,
        "a rerun from an empty cache gave other images"
    );
}
