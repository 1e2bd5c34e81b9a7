//! The README's first command, offline: import the dataset next to a copy of the default
//! `pipeline.yaml`, run a model, rebuild the report from the cache, and maintain the cache.

use super::*;

#[test]
fn default_study_from_an_imported_dataset_then_report_stats_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("pipeline.yaml");
    std::fs::copy(repo().join("pipeline.yaml"), &config).unwrap();

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
    assert_eq!(summary["items"], 7);
    assert_eq!(computed(&summary, "generate"), 7);
    let other = run_json(&config, &["--model", "compose", "--limit", "2"], 0);
    assert_eq!(computed(&other, "generate"), 2);

    // The report covers the whole study (675 items) and is rebuilt from the cache alone.
    let report = tmp.path().join("reports/p13n-workshop");
    let items = std::fs::read_to_string(report.join("items.jsonl")).unwrap();
    assert_eq!(items.lines().count(), 675);
    let done = items
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|item| item["stages"]["inspect"]["state"] == "done")
        .count();
    assert_eq!(done, 9);
    std::fs::remove_dir_all(&report).unwrap();
    run_ok(scrbench(&config).arg("report"), 0);
    assert_eq!(
        std::fs::read_to_string(report.join("items.jsonl")).unwrap(),
        items
    );
    let summary_md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(
        summary_md.contains("| mosaic-paper | generate | 7 | 218 | 0 |"),
        "{summary_md}"
    );

    let stats = run_ok(scrbench(&config).args(["cache", "stats"]), 0);
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["actions"]["generate"], 9);
    let total: u64 = stats["actions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    // compose ignores the seed without collapse: its two items share one image, so one inspect entry.
    let compose_entries = total - 14;
    assert!(compose_entries >= 3);

    // Dropping a model from the study makes its entries unreferenced: gc removes them only.
    let study = std::fs::read_to_string(&config).unwrap();
    let start = study.find("  compose:\n").unwrap();
    std::fs::write(&config, format!("{}\n", &study[..start])).unwrap();
    let dry = run_ok(scrbench(&config).args(["cache", "gc", "--dry-run"]), 0);
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["removed_actions"], compose_entries, "{dry}");
    let gc = run_ok(scrbench(&config).args(["cache", "gc"]), 0);
    let gc: Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert_eq!(gc["removed_actions"], compose_entries, "{gc}");
    let rerun = run_json(&config, &["--model", "mosaic-paper", "--limit", "7"], 0);
    assert_eq!(
        cached(&rerun, "generate"),
        7,
        "what the study references survived gc"
    );
}
