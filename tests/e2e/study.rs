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
    // 225 published images plus the 30 reference subjects, which go through the same stages.
    assert_eq!(summary["items"], 255);
    for stage in [
        "generate",
        "inspect",
        "embed-dinov2",
        "embed-dino",
        "embed-clip",
    ] {
        assert_eq!(computed(&summary, stage), 255, "{stage}");
    }
    assert_eq!(
        computed(&summary, "score"),
        225,
        "every published image is scored"
    );
    for stage in ["detect", "crop", "embed-crops", "local-score"] {
        assert_eq!(computed(&summary, stage), 225, "{stage}: {summary}");
    }
    // One text embedding per distinct prompt text (75) and subject name (30); seeds share them.
    assert_eq!(computed(&summary, "embed-clip-text"), 105);
    assert_eq!(cached(&summary, "embed-clip-text"), 150);

    let mut second = scrbench(&config);
    with_dirs(&mut second);
    let summary: Value =
        serde_json::from_slice(&run_ok(second.args(["run", "--json"]), 0).stdout).unwrap();
    for stage in [
        "generate",
        "inspect",
        "embed-dinov2",
        "embed-dino",
        "embed-clip",
    ] {
        assert_eq!(computed(&summary, stage), 0, "{stage}");
        assert_eq!(cached(&summary, stage), 255, "{stage}");
    }

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

    let report = reports.join("mosaic-paper");
    let results = std::fs::read_to_string(report.join("results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 225);
    let record: Value = serde_json::from_str(results.lines().next().unwrap()).unwrap();
    assert!(
        record["dinov2"].is_f64() && record["clip_t"].is_f64(),
        "{record}"
    );
    assert_eq!(record["subjects"].as_array().unwrap().len(), 2);
    let markdown = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(markdown.contains("225 scored images"), "{markdown}");
    assert!(
        markdown.contains("## Global and local SCR@0.4, with 95% CI"),
        "{markdown}"
    );
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(
        html.matches("data:image/png;base64,").count() >= 225 + 30,
        "gallery thumbnails"
    );
    for figure in [
        "scr_vs_n.svg",
        "scr_vs_n.png",
        "scr_by_scene.svg",
        "clip_vs_scr.png",
        "summary.csv",
    ] {
        assert!(report.join(figure).is_file(), "{figure}");
    }
    let items = std::fs::read_to_string(reports.join("mosaic-paper/items.jsonl")).unwrap();
    assert_eq!(items.lines().count(), 255);
    let first: Value = serde_json::from_str(items.lines().next().unwrap()).unwrap();
    assert_eq!(first["model"], "@references");
    let image: Value = serde_json::from_str(items.lines().nth(30).unwrap()).unwrap();
    assert_eq!(image["prompt_id"], "01_no_interaction");
    assert_eq!(image["stages"]["embed-dinov2"]["state"], "done");
    assert_eq!(image["width"], 512);

    let mut status = scrbench(&config);
    with_dirs(&mut status);
    let output = run_ok(status.args(["status", "--json"]), 0);
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    for row in status["rows"].as_array().unwrap() {
        let total = if row["model"] == "@references" {
            30
        } else {
            225
        };
        assert_eq!(
            (
                row["done"].as_u64(),
                row["missing"].as_u64(),
                row["failed"].as_u64()
            ),
            (Some(total), Some(0), Some(0)),
            "{row}"
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

#[test]
fn references_are_embedded_once_per_encoder_ever_and_a_broken_model_stops_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = repo().join("tests/fixtures/encoders");
    let encoders = format!(
        "encoders:\n  dinov2:\n    model: {}\n",
        fixtures.join("dinov2_tiny").display()
    );
    let study = |models: &str| {
        let config = write_study(tmp.path(), &data(), models);
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(
            &config,
            text.replace("models:\n", &format!("{encoders}models:\n")),
        )
        .unwrap();
        config
    };
    let narrow = ["--prompts", "01_no_interaction,16_no_interaction"];
    let config = study("  a:\n    adapter: compose\n    size: 64\n");
    let first = run_json(&config, &narrow, 0);
    let references = first["items"].as_u64().unwrap() - 4;
    assert!(references >= 4, "the subjects of 2 prompts");
    // Without collapse, compose ignores the seed: 2 distinct images for 4 items.
    assert_eq!(computed(&first, "embed-dinov2"), references + 2);

    let config = study("  b:\n    adapter: compose\n    size: 72\n");
    let second = run_json(&config, &narrow, 0);
    assert_eq!(
        computed(&second, "embed-dinov2"),
        2,
        "only model b's new images"
    );
    assert_eq!(
        cached(&second, "embed-dinov2"),
        references + 2,
        "references reused"
    );
    let explain = run_ok(
        scrbench(&config).args(["explain", "@references/black woman/0"]),
        0,
    );
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("stage embed-dinov2: up to date"), "{text}");

    // A model that cannot load stops the run with a clear error; nothing else is substituted.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(
        fixtures.join("dinov2_tiny/config.json"),
        broken.join("config.json"),
    )
    .unwrap();
    std::fs::write(broken.join("model.safetensors"), b"not safetensors").unwrap();
    let config = write_study(
        tmp.path(),
        &data(),
        "  c:\n    adapter: compose\n    size: 80\n",
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let encoders = format!("encoders:\n  dinov2:\n    model: {}\n", broken.display());
    std::fs::write(
        &config,
        text.replace("models:\n", &format!("{encoders}models:\n")),
    )
    .unwrap();
    let output = run_ok(scrbench(&config).args(["run"]).args(narrow), 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot load the dinov2 encoder"),
        "{stderr}"
    );
    assert!(stderr.contains("the run stopped"), "{stderr}");
}

#[test]
fn a_low_memory_run_gives_the_same_results_stage_by_stage() {
    let fixtures = repo().join("tests/fixtures/encoders");
    let study = |dir: &Path, low_memory: bool| {
        let config = dir.join("study.yaml");
        std::fs::write(
            &config,
            format!(
                "study: test\nbenchmark: {data}\nseeds: [42, 43]\ncache: cache\nreports: reports\n\
                 low_memory: {low_memory}\nencoders:\n  dinov2: {{model: {d2}}}\n  clip: {{model: {clip}}}\n\
                 models:\n  m:\n    adapter: replay\n    dir: {data}/results/mosaic\n",
                data = data().display(),
                d2 = fixtures.join("dinov2_tiny").display(),
                clip = fixtures.join("clip_tiny").display(),
            ),
        )
        .unwrap();
        config
    };
    let narrow = ["--prompts", "01_no_interaction,16_no_interaction"];
    let (normal, lean) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = run_json(&study(normal.path(), false), &narrow, 0);
    let b = run_json(&study(lean.path(), true), &narrow, 0);
    assert_eq!(
        a["stages"], b["stages"],
        "the same work, counted once per stage"
    );
    assert_eq!(a["items"], b["items"]);
    let results =
        |dir: &Path| std::fs::read_to_string(dir.join("reports/test/results.jsonl")).unwrap();
    assert_eq!(results(normal.path()), results(lean.path()));
    let again = run_json(&study(lean.path(), true), &narrow, 0);
    assert_eq!(
        computed(&again, "score") + computed(&again, "embed-clip"),
        0
    );
}
