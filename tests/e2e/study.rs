//! The CI study over MOSAIC's published images, narrowing, sharding and dry runs.

use super::*;

#[test]
fn mosaic_paper_study_runs_every_published_image_and_reruns_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = repo().join("tests/studies/mosaic-paper.yaml");
    let cache = tmp.path().join("cache");
    let reports = tmp.path().join("reports");
    let with_dirs = |command: &mut Command| {
        command
            .arg("--cache")
            .arg(&cache)
            .arg("--reports")
            .arg(&reports);
    };

    let mut first = scrbench(&config);
    with_dirs(&mut first);
    let summary: Value =
        serde_json::from_slice(&run_ok(first.args(["run", "--json"]), 0).stdout).unwrap();
    assert_eq!(summary["items"], 225);
    assert_eq!(computed(&summary, "generate"), 225);
    assert_eq!(computed(&summary, "inspect"), 225);

    let mut second = scrbench(&config);
    with_dirs(&mut second);
    let summary: Value =
        serde_json::from_slice(&run_ok(second.args(["run", "--json"]), 0).stdout).unwrap();
    assert_eq!(
        computed(&summary, "generate") + computed(&summary, "inspect"),
        0
    );
    assert_eq!(cached(&summary, "generate"), 225);
    assert_eq!(cached(&summary, "inspect"), 225);

    let mut explain = scrbench(&config);
    with_dirs(&mut explain);
    let output = run_ok(explain.args(["explain", "mosaic-paper/37_occlusion/43"]), 0);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("stage generate: up to date"), "{text}");
    assert!(text.contains("stage inspect: up to date"), "{text}");
    assert!(
        text.contains("\"seed\": 43"),
        "explain shows the key: {text}"
    );

    let items = std::fs::read_to_string(reports.join("mosaic-paper/items.jsonl")).unwrap();
    assert_eq!(items.lines().count(), 225);
    let first: Value = serde_json::from_str(items.lines().next().unwrap()).unwrap();
    assert_eq!(first["prompt_id"], "01_no_interaction");
    assert_eq!(first["stages"]["inspect"]["state"], "done");
    assert_eq!(first["width"], 512);

    let mut status = scrbench(&config);
    with_dirs(&mut status);
    let output = run_ok(status.args(["status", "--json"]), 0);
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    for row in status["rows"].as_array().unwrap() {
        assert_eq!(
            (
                row["done"].as_u64(),
                row["missing"].as_u64(),
                row["failed"].as_u64()
            ),
            (Some(225), Some(0), Some(0))
        );
    }
}

#[test]
fn shards_partition_the_items_and_dry_run_computes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_study(
        tmp.path(),
        &data(),
        "  c:\n    adapter: compose\n    size: 64\n",
    );
    let narrow = [
        "--prompts",
        "01_no_interaction,16_no_interaction,31_no_interaction",
    ];

    let dry = run_ok(scrbench(&config).args(["run", "--dry-run"]).args(narrow), 0);
    let text = String::from_utf8(dry.stdout).unwrap();
    assert!(
        text.contains("c/16_no_interaction/43 [generate]: new: never computed"),
        "{text}"
    );
    assert!(text.contains("6 item stages would run"), "{text}");
    assert!(
        !tmp.path().join("reports").exists(),
        "a dry run writes no report"
    );

    let a = run_json(&config, &[&narrow[..], &["--shard", "0/2"]].concat(), 0);
    let b = run_json(&config, &[&narrow[..], &["--shard", "1/2"]].concat(), 0);
    assert_eq!(computed(&a, "generate"), 3);
    assert_eq!(computed(&b, "generate"), 3);
    let all = run_json(&config, &narrow, 0);
    assert_eq!(
        computed(&all, "generate"),
        0,
        "the two shards covered every item"
    );
    assert_eq!(cached(&all, "generate"), 6);
}
