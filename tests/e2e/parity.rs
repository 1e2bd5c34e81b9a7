//! Paper-exact scoring: the pipeline's per-image scores against `tools/parity/paper_eval.py`, a
//! Python reference that follows the paper's `eval.py` (torch-hub DINOv2 interpolation, PIL and
//! torchvision preprocessing, transformers models), on the tiny fixture checkpoints. The reference's
//! outputs are committed in `tests/fixtures/scores/paper_reference.json`.

use super::*;

/// Largest allowed |difference| of any score or per-subject cosine.
const TOLERANCE: f64 = 1e-5;

#[test]
fn per_image_scores_match_the_papers_eval_to_1e_5() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/scores/paper_reference.json"))
            .unwrap(),
    )
    .unwrap();
    let records = fixture["records"].as_array().unwrap();
    let config = repo().join("tests/studies/mosaic-paper.yaml");
    let output = run_ok(
        scrbench(&config)
            .arg("--cache")
            .arg(tmp.path().join("cache"))
            .arg("--reports")
            .arg(tmp.path().join("reports"))
            .args(["run", "--json", "--prompts"])
            .arg("01_no_interaction,06_occlusion,31_no_interaction,61_no_interaction")
            .args(["--seeds", "42,43"]),
        0,
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(computed(&summary, "score"), 8);
    let results =
        std::fs::read_to_string(tmp.path().join("reports/mosaic-paper/results.jsonl")).unwrap();
    let ours: Vec<Value> = results
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let mut worst = (0.0f64, String::new());
    let mut compare = |what: String, a: &Value, b: &Value| {
        let (a, b) = (
            a.as_f64().unwrap_or(f64::NAN),
            b.as_f64().unwrap_or(f64::NAN),
        );
        let diff = (a - b).abs();
        if diff.is_nan() || diff > worst.0 {
            worst = (diff, format!("{what}: ours {a} vs reference {b}"));
        }
    };
    for reference in records {
        let (prompt, seed) = (
            reference["prompt_id"].as_str().unwrap(),
            reference["seed"].as_u64().unwrap(),
        );
        let mine = ours
            .iter()
            .find(|r| r["prompt_id"] == prompt && r["seed"] == seed)
            .unwrap_or_else(|| panic!("no scores for {prompt}/{seed}"));
        for metric in ["clip_t", "clip_i", "dino", "dinov2"] {
            compare(
                format!("{prompt}/{seed} {metric}"),
                &mine[metric],
                &reference[metric],
            );
        }
        for tau in ["0.4", "0.5", "0.6"] {
            compare(
                format!("{prompt}/{seed} scr@{tau}"),
                &mine["scr"][tau],
                &reference["scr"][tau],
            );
        }
        let subjects = reference["subjects"].as_array().unwrap();
        assert_eq!(mine["subjects"].as_array().unwrap().len(), subjects.len());
        for (i, subject) in subjects.iter().enumerate() {
            assert_eq!(mine["subjects"][i]["name"], subject["name"]);
            for metric in ["clip_i", "dino", "dinov2"] {
                let name = subject["name"].as_str().unwrap();
                compare(
                    format!("{prompt}/{seed} {name} {metric}"),
                    &mine["subjects"][i][metric],
                    &subject[metric],
                );
            }
        }
    }
    println!("max |diff| = {:.3e} ({})", worst.0, worst.1);
    assert!(
        worst.0 <= TOLERANCE,
        "max |diff| {:.3e} > {TOLERANCE:e}: {}",
        worst.0,
        worst.1
    );
}

#[test]
fn scr_thresholds_count_the_reference_cosines_below_tau() {
    // The tiny encoders' cosines lie between 0.9 and 1, so the paper's τ never bite: use τ there.
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = repo().join("tests/fixtures/encoders");
    let config = tmp.path().join("study.yaml");
    std::fs::write(
        &config,
        format!(
            "study: tau\nbenchmark: {data}\nthresholds: [0.95, 0.97, 0.99]\ncache: cache\nreports: reports\n\
             encoders:\n  dinov2:\n    model: {dinov2}\nmodels:\n  mosaic-paper:\n    adapter: replay\n    dir: {data}/results/mosaic\n",
            data = data().display(),
            dinov2 = fixtures.join("dinov2_tiny").display()
        ),
    )
    .unwrap();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/scores/paper_reference.json"))
            .unwrap(),
    )
    .unwrap();
    run_json(
        &config,
        &[
            "--prompts",
            "01_no_interaction,06_occlusion,31_no_interaction,61_no_interaction",
            "--seeds",
            "42,43",
        ],
        0,
    );
    let results = std::fs::read_to_string(tmp.path().join("reports/tau/results.jsonl")).unwrap();
    let mut bitten = 0;
    for reference in fixture["records"].as_array().unwrap() {
        let mine: Value = results
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| r["prompt_id"] == reference["prompt_id"] && r["seed"] == reference["seed"])
            .unwrap();
        let cosines: Vec<f64> = reference["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["dinov2"].as_f64().unwrap())
            .collect();
        for (key, tau) in [("0.95", 0.95), ("0.97", 0.97), ("0.99", 0.99)] {
            let expected =
                cosines.iter().filter(|&&c| c < tau).count() as f64 / cosines.len() as f64;
            assert_eq!(
                mine["scr"][key].as_f64(),
                Some(expected),
                "{} scr@{key}",
                reference["prompt_id"]
            );
            bitten += usize::from(expected > 0.0 && expected < 1.0);
        }
        assert!(
            mine["clip_t"].is_null(),
            "no CLIP configured: no CLIP metric, and no fallback"
        );
    }
    assert!(bitten > 0, "some thresholds split the subjects");
}
