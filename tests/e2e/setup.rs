//! The README's first command, offline: import the dataset next to a copy of the default
//! `pipeline.yaml`, resolve its encoders and detector (real hub ids) in a local hub cache that
//! holds the tiny fixture checkpoints under those names, run a model, rebuild the report from the cache, and
//! maintain the cache.

use super::*;

#[test]
fn default_study_from_an_imported_dataset_then_report_stats_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("pipeline.yaml");
    // The copy's adapters are the repository's.
    let study = std::fs::read_to_string(repo().join("pipeline.yaml")).unwrap();
    let adapters = format!("dir: {}/", repo().join("adapters").display());
    std::fs::write(&config, study.replace("dir: adapters/", &adapters)).unwrap();
    let hub = fake_hub(tmp.path());
    let scrbench = |config: &Path| {
        let mut command = super::scrbench(config);
        command.env("HF_HUB_CACHE", &hub).env_remove("HF_HOME");
        command
    };
    let run_json = |config: &Path, extra: &[&str], code: i32| -> Value {
        let output = run_ok(scrbench(config).args(["run", "--json"]).args(extra), code);
        serde_json::from_slice(&output.stdout).unwrap()
    };

    let output = run_ok(
        scrbench(&config)
            .args([
                "dataset",
                "fetch",
                "p13n-workshop",
                "--results",
                "mosaic",
                "--from",
            ])
            .arg(data()),
        0,
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.contains("341 files written"), "{text}");
    let imported = tmp.path().join("cache/datasets/p13n-workshop");
    assert!(imported.join("val_dataset/Siamese cat.jpg").is_file());
    assert!(
        imported
            .join("results/mosaic/44_interaction/44.png")
            .is_file()
    );
    let again = run_ok(
        scrbench(&config)
            .args([
                "dataset",
                "fetch",
                "p13n-workshop",
                "--results",
                "mosaic",
                "--from",
            ])
            .arg(data()),
        0,
    );
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 files written"));

    let summary = run_json(&config, &["--model", "mosaic-paper", "--limit", "7"], 0);
    assert_eq!(computed(&summary, "score"), 7, "7 images scored");
    assert_eq!(
        computed(&summary, "local-score"),
        7,
        "the default study's detector (OWLv2) ran"
    );
    let other = run_json(&config, &["--model", "compose", "--limit", "2"], 0);
    assert_eq!(computed(&other, "score") + cached(&other, "score"), 2);

    // The report covers the whole study (7 models × 225 images, four of them GPU workers that
    // were not run and were never started, and the 30 references) and is rebuilt from the cache
    // alone.
    let report = tmp.path().join("reports/p13n-workshop");
    let items = std::fs::read_to_string(report.join("items.jsonl")).unwrap();
    assert_eq!(items.lines().count(), 7 * 225 + 30);
    assert!(
        !tmp.path().join("cache/logs/workers").exists(),
        "no worker was started"
    );
    let scored = items
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|item| item["stages"]["score"]["state"] == "done")
        .count();
    assert_eq!(scored, 9);
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    std::fs::remove_dir_all(&report).unwrap();
    run_ok(scrbench(&config).arg("report"), 0);
    assert_eq!(
        std::fs::read_to_string(report.join("items.jsonl")).unwrap(),
        items
    );
    assert_eq!(
        std::fs::read_to_string(report.join("report.md")).unwrap(),
        markdown
    );
    let summary_md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(
        summary_md.contains("| mosaic-paper | score | 7 | 218 | 0 |"),
        "{summary_md}"
    );

    // Dropping a model from the study makes its entries unreferenced: gc removes them, and only
    // them (everything the remaining study uses is still cached).
    let actions = |config: &Path| -> u64 {
        let stats = run_ok(scrbench(config).args(["cache", "stats"]), 0);
        let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
        stats["actions"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    let before = actions(&config);
    let study = std::fs::read_to_string(&config).unwrap();
    let start = study.find("  compose:\n").unwrap();
    std::fs::write(&config, format!("{}\n", &study[..start])).unwrap();
    let dry = run_ok(scrbench(&config).args(["cache", "gc", "--dry-run"]), 0);
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    let removed = dry["removed_actions"].as_u64().unwrap();
    assert!(removed > 0, "{dry}");
    assert_eq!(actions(&config), before, "a dry run removes nothing");
    let gc = run_ok(scrbench(&config).args(["cache", "gc"]), 0);
    let gc: Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(gc["removed_actions"].as_u64(), Some(removed), "{gc}");
    assert_eq!(actions(&config), before - removed);
    let rerun = run_json(&config, &["--model", "mosaic-paper", "--limit", "7"], 0);
    for stage in ["generate", "embed-dinov2", "embed-clip-text", "score"] {
        assert_eq!(computed(&rerun, stage), 0, "{stage} survived gc");
    }
}

/// A Hugging Face hub cache (the `models--org--name/{refs,snapshots}` layout) holding the tiny
/// fixture checkpoints under the names `pipeline.yaml` uses.
fn fake_hub(dir: &Path) -> PathBuf {
    let hub = dir.join("hub");
    let fixtures = repo().join("tests/fixtures");
    for (id, fixture) in [
        ("facebook/dinov2-small", "encoders/dinov2_tiny"),
        ("facebook/dino-vits16", "encoders/dino_vits16_tiny"),
        ("openai/clip-vit-large-patch14", "encoders/clip_tiny"),
        ("google/owlv2-base-patch16-ensemble", "detectors/owlv2_tiny"),
    ] {
        let repo_dir = hub.join(format!("models--{}", id.replace('/', "--")));
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let snapshot = repo_dir.join("snapshots").join(sha);
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), sha).unwrap();
        for file in std::fs::read_dir(fixtures.join(fixture)).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, snapshot.join(file.file_name().unwrap())).unwrap();
        }
    }
    hub
}
