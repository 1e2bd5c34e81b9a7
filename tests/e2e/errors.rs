//! Bad input gets a clear error naming the file and line or the item; failed items are kept,
//! shown, reported and retried.

use super::*;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_benchmark_file_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let image = data().join("val_dataset/dog.jpg");
    let yaml = tmp.path().join("bench.yaml");
    let bench = format!(
        "name: bad\nimages: {}\nsubjects:\n  - {{name: dog, kind: animal, image: dog.jpg}}\nprompts:\n  - id: p1\n    scene: neutral\n    subjects: [dog, unicorn]\n    text: A dog and a unicorn.\n",
        image.parent().unwrap().display()
    );
    std::fs::write(&yaml, bench).unwrap();
    let config = write_study(tmp.path(), &yaml, "  c:\n    adapter: compose\n");
    let output = run_ok(scrbench(&config).arg("status"), 1);
    let message = stderr(&output);
    assert!(message.contains("bench.yaml:"), "{message}");
    assert!(message.contains("unicorn"), "{message}");

    let output = run_ok(scrbench(&config).args(["benchmark", "check"]).arg(&yaml), 1);
    assert!(stderr(&output).contains("unicorn"));
}

#[test]
fn an_unknown_config_key_names_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_study(
        tmp.path(),
        &data(),
        "  c:\n    adapter: compose\n    sise: 64\n",
    );
    let output = run_ok(scrbench(&config).arg("status"), 1);
    let message = stderr(&output);
    assert!(message.contains("study.yaml"), "{message}");
    assert!(message.contains("sise"), "{message}");
    assert!(message.contains("line"), "{message}");
}

#[test]
fn a_missing_published_image_is_a_failed_item_that_is_shown_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results");
    for prompt in ["01_no_interaction", "02_no_interaction"] {
        std::fs::create_dir_all(results.join(prompt)).unwrap();
        for seed in ["42", "43"] {
            let file = format!("{seed}.png");
            std::fs::copy(
                data().join("results/mosaic").join(prompt).join(&file),
                results.join(prompt).join(&file),
            )
            .unwrap();
        }
    }
    std::fs::remove_file(results.join("02_no_interaction/43.png")).unwrap();
    let config = write_study(
        tmp.path(),
        &data(),
        &format!(
            "  m:\n    adapter: replay\n    dir: {}\n",
            results.display()
        ),
    );
    let dinov2 = repo().join("tests/fixtures/encoders/dinov2_tiny");
    let text = std::fs::read_to_string(&config).unwrap();
    let encoders = format!(
        "encoders:\n  dinov2:\n    model: {}\nmodels:\n",
        dinov2.display()
    );
    std::fs::write(&config, text.replace("models:\n", &encoders)).unwrap();
    let narrow = ["--prompts", "01_no_interaction,02_no_interaction"];
    let output = run_ok(scrbench(&config).arg("run").args(narrow), 2);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        stdout.contains("failed m/02_no_interaction/43 [generate]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("02_no_interaction/43.png"),
        "the message names the file: {stdout}"
    );

    let status = run_ok(scrbench(&config).args(["status"]).args(narrow), 0);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(text.contains("m/02_no_interaction/43 [generate]"), "{text}");
    let summary = std::fs::read_to_string(tmp.path().join("reports/test/summary.md")).unwrap();
    assert!(summary.contains("m/02_no_interaction/43"), "{summary}");
    // The scored report lists it too, with its reason, and scores the other three.
    let report = std::fs::read_to_string(tmp.path().join("reports/test/report.md")).unwrap();
    assert!(report.contains("02_no_interaction"), "{report}");
    assert!(report.contains("43.png does not exist"), "{report}");
    let jsonl = std::fs::read_to_string(tmp.path().join("reports/test/results.jsonl")).unwrap();
    let scored = jsonl.lines().filter(|l| l.contains("\"dinov2\":")).count();
    assert!(scored >= 3, "{jsonl}");

    std::fs::copy(
        data().join("results/mosaic/02_no_interaction/43.png"),
        results.join("02_no_interaction/43.png"),
    )
    .unwrap();
    let retry = run_json(&config, &narrow, 0);
    assert_eq!(
        computed(&retry, "generate"),
        1,
        "only the failed item is retried"
    );
}

#[test]
fn the_papers_published_scores_aggregate_to_its_table_1() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("paper");
    let eval = data().join("eval_outputs");
    run_ok(
        scrbench(Path::new("unused.yaml"))
            .args(["scores", "import"])
            .arg(eval.join("mosaic_results.json"))
            .arg(eval.join("xverse_results.json"))
            .arg(eval.join("psr_results.json"))
            .arg("--out")
            .arg(&out),
        0,
    );
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    // Table 1, N = 10 row, as printed in the paper.
    assert!(
        report.contains("| 10 | 0.300 / 0.504 / 0.110 / 96.0% | 0.283 / 0.524 / 0.104 / 96.4% | 0.309 / 0.500 / 0.101 / 97.8% |"),
        "{report}"
    );
}
