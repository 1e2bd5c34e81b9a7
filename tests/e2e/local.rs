//! The per-subject (local) SCR with the oracle detector, validated on compose scenes whose truth is
//! known: dropped subjects are missing, crops match the identity they show, homogenisation rises
//! with clones, and a threshold between the two groups separates cloned from intact subjects.
//! These hold for any encoder weights (the crops are the references resized), so the tiny DINOv2
//! fixture is enough.

use super::*;

const PROMPTS: &str = "17_no_interaction,31_no_interaction,33_no_interaction,42_interaction";

/// A compose study with the oracle detector: models `k0` (intact), `clone1`, `clone2`, `drop1`.
/// Crops are not padded: an unpadded crop is the reference resized, so DINOv2's resize and centre
/// crop see nearly the reference's own pixels (padding adds white bars the reference lacks).
fn write_local_study(dir: &Path, thresholds: &str) -> PathBuf {
    let pad = false;
    let dinov2 = repo().join("tests/fixtures/encoders/dinov2_tiny");
    let compose =
        |collapse: &str| format!("    adapter: compose\n    size: 256\n    collapse: {collapse}\n");
    let text = format!(
        "study: test\nbenchmark: {data}\nseeds: [42, 43]\ncache: cache\nreports: reports\n\
         thresholds: {thresholds}\n\
         encoders:\n  dinov2:\n    model: {dinov2}\n\
         detection:\n  detector: oracle\n  matching: greedy\n  pad_square: {pad}\n\
         models:\n  k0:\n{k0}  clone1:\n{clone1}  clone2:\n{clone2}  drop1:\n{drop1}",
        data = data().display(),
        dinov2 = dinov2.display(),
        pad = pad,
        k0 = compose("{mode: none}"),
        clone1 = compose("{mode: clone, k: 1}"),
        clone2 = compose("{mode: clone, k: 2}"),
        drop1 = compose("{mode: drop, k: 1}"),
    );
    let path = dir.join("study.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn blob(dir: &Path, digest: &Value) -> Value {
    let digest = digest.as_str().expect("a digest");
    let bytes = std::fs::read(dir.join("cache/blobs").join(&digest[..2]).join(digest)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Per generated image: model, truth and local scores.
fn local_images(dir: &Path) -> Vec<(String, Value, Value)> {
    items_jsonl(dir)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["model"] != "@references")
        .filter(|l| PROMPTS.split(',').any(|p| l["prompt_id"] == p))
        .map(|l| {
            let stages = &l["stages"];
            assert_eq!(stages["local-score"]["state"], "done", "{l}");
            (
                l["model"].as_str().unwrap().to_owned(),
                blob(dir, &stages["generate"]["outputs"]["truth"]),
                blob(dir, &stages["local-score"]["outputs"]["local"]),
            )
        })
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let values: Vec<f64> = values.collect();
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn local_scr_finds_dropped_and_cloned_subjects_on_known_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_local_study(tmp.path(), "[0.4, 0.5, 0.6]");
    let first = run_json(&config, &["--prompts", PROMPTS], 0);
    // 4 models × 4 prompts × 2 seeds (intact scenes do not depend on the seed: some are shared).
    for stage in ["detect", "crop", "embed-crops", "local-score", "score"] {
        assert_eq!(
            computed(&first, stage) + cached(&first, stage),
            32,
            "{stage}"
        );
    }
    let images = local_images(tmp.path());
    assert_eq!(images.len(), 32);

    let subject_index = |truth: &Value, name: &Value| {
        truth["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .position(|s| &s["name"] == name)
            .unwrap()
    };
    let mut cloned_cosines = Vec::new();
    let mut intact_cosines = Vec::new();
    for (model, truth, local) in &images {
        let subjects = truth["subjects"].as_array().unwrap();
        let n = subjects.len();
        let crops = local["crops"].as_array().unwrap();
        let present = subjects.iter().filter(|s| !s["box"].is_null()).count();
        assert_eq!(crops.len(), present, "one crop per drawn box: {local}");
        // Every crop is closest to the reference of the identity it shows.
        for crop in crops {
            let query = crop["query"].as_u64().unwrap() as usize;
            let cosines: Vec<f64> = crop["cosines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_f64().unwrap())
                .collect();
            let best = (0..n)
                .max_by(|&a, &b| cosines[a].total_cmp(&cosines[b]))
                .unwrap();
            let shown = subject_index(truth, &subjects[query]["shown"]);
            assert_eq!(
                best, shown,
                "{model}: crop of {query} shows {shown}: {local}"
            );
        }
        for (i, (subject, verdict)) in subjects
            .iter()
            .zip(local["subjects"].as_array().unwrap())
            .enumerate()
        {
            match subject["status"].as_str().unwrap() {
                "dropped" => {
                    assert!(
                        verdict["crop"].is_null(),
                        "{model}: dropped {i} unmatched: {local}"
                    );
                    assert!(verdict["cosine"].is_null());
                    for tau in ["0.4", "0.5", "0.6"] {
                        assert_eq!(verdict["collapsed"][tau], true, "{local}");
                    }
                }
                "present" => {
                    // Without clones every intact subject gets its own box. (With clones the
                    // maximum-sum matching may trade an intact subject's own box for a clone's
                    // when the tiny encoder's cross-identity cosines are ~0.99.)
                    if !model.starts_with("clone") {
                        assert_eq!(verdict["query"], i, "{model}: intact {i}: {local}");
                    }
                    intact_cosines.push(verdict["cosine"].as_f64().unwrap());
                }
                "cloned" => cloned_cosines.push(verdict["cosine"].as_f64().unwrap()),
                other => panic!("unexpected status {other}"),
            }
        }
        if model == "drop1" {
            let expected = 1.0 / n as f64;
            for tau in ["0.4", "0.5", "0.6"] {
                assert!(
                    local["local_scr"][tau].as_f64().unwrap() >= expected,
                    "{local}"
                );
            }
        }
    }
    assert_eq!(cloned_cosines.len(), 4 * 2 * (1 + 2));

    // Homogenisation and the same-instance count rise with the number of clones.
    let stats = |model: &str| {
        let of = images.iter().filter(|(m, _, _)| m == model);
        (
            mean(
                of.clone()
                    .map(|(_, _, l)| l["homogenisation"].as_f64().unwrap()),
            ),
            mean(of.map(|(_, _, l)| l["same_instance"].as_f64().unwrap())),
        )
    };
    let (k0, k1, k2) = (stats("k0"), stats("clone1"), stats("clone2"));
    eprintln!("homogenisation / same-instance: k0 {k0:?}, k1 {k1:?}, k2 {k2:?}");
    // Any clone raises the mean pairwise cosine over intact scenes. From one clone to two it rises
    // on the no-interaction prompts but not on 41_interaction (0.9471 → 0.9428): the tiny
    // encoder's cross-identity cosines (0.87–0.99) vary by as much as one clone adds.
    assert!(
        k0.0 < k1.0 && k0.0 < k2.0,
        "homogenisation {k0:?} {k1:?} {k2:?}"
    );
    assert_eq!(k0.1, 0.0, "intact subjects each have their own best crop");
    assert!(
        k0.1 < k1.1 && k1.1 <= k2.1,
        "same instance {k0:?} {k1:?} {k2:?}"
    );

    // A threshold between the groups flags every cloned subject and no intact one.
    let cloned_max = cloned_cosines.iter().copied().fold(f64::MIN, f64::max);
    let intact_min = intact_cosines.iter().copied().fold(f64::MAX, f64::min);
    eprintln!("cloned max {cloned_max}, intact min {intact_min}");
    assert!(cloned_max < intact_min, "{cloned_max} < {intact_min}");
    let tau = (cloned_max + intact_min) / 2.0;
    let config = write_local_study(tmp.path(), &format!("[{tau}]"));
    let second = run_json(&config, &["--prompts", PROMPTS], 0);
    for stage in ["detect", "crop", "embed-crops"] {
        assert_eq!(
            cached(&second, stage),
            32,
            "{stage}: thresholds do not reach it"
        );
    }
    assert!(computed(&second, "local-score") > 0);
    let key = format!("{tau}");
    for (model, truth, local) in local_images(tmp.path()) {
        let subjects = truth["subjects"].as_array().unwrap();
        let mut collapsed = 0;
        for (subject, verdict) in subjects.iter().zip(local["subjects"].as_array().unwrap()) {
            let expected = subject["status"] != "present";
            assert_eq!(verdict["collapsed"][&key], expected, "{model}: {local}");
            collapsed += usize::from(expected);
        }
        assert_eq!(
            local["local_scr"][&key].as_f64().unwrap(),
            collapsed as f64 / subjects.len() as f64
        );
    }
    // Local SCR is aggregated with intervals beside the global SCR, and the matched crops show
    // in the gallery.
    let report = std::fs::read_to_string(tmp.path().join("reports/test/report.md")).unwrap();
    assert!(
        report.contains(&format!("## Global and local SCR@{key}, with 95% CI")),
        "{report}"
    );
    assert!(report.contains("clone2 local"), "{report}");
    let results = std::fs::read_to_string(tmp.path().join("reports/test/results.jsonl")).unwrap();
    let record: Value = results
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["error"].is_null())
        .expect("a scored image");
    assert!(record["local_scr"][&key].is_f64(), "{record}");
    let subjects = record["subjects"].as_array().unwrap();
    assert!(subjects.iter().any(|s| s["local"].is_f64()), "{record}");
    let html = std::fs::read_to_string(tmp.path().join("reports/test/report.html")).unwrap();
    assert!(html.contains("<img class=\"crop\" alt=\"matched crop\""));
    let local = std::fs::read_to_string(tmp.path().join("reports/test/local.jsonl")).unwrap();
    let line: Value = serde_json::from_str(local.lines().next().unwrap()).unwrap();
    assert!(
        line["local_scr"][&key].is_f64() && line["model"].is_string(),
        "{line}"
    );
}

#[test]
fn the_oracle_detector_fails_items_without_compose_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_study(
        tmp.path(),
        &data(),
        &format!(
            "  m:\n    adapter: replay\n    dir: {}\n",
            data().join("results/mosaic").display()
        ),
    );
    let dinov2 = repo().join("tests/fixtures/encoders/dinov2_tiny");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "models:\n",
        &format!(
            "encoders:\n  dinov2:\n    model: {}\ndetection:\n  detector: oracle\nmodels:\n",
            dinov2.display()
        ),
    );
    std::fs::write(&config, text).unwrap();
    let summary = run_json(
        &config,
        &["--prompts", "01_no_interaction", "--seeds", "42"],
        2,
    );
    assert_eq!(
        computed(&summary, "score"),
        1,
        "the global score is unaffected"
    );
    let status = run_ok(scrbench(&config).arg("status"), 0);
    let text = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        text.contains("the oracle detector needs compose's ground truth"),
        "{text}"
    );
}

/// A compose study with an OWL detector from a tiny random checkpoint in the HF layout.
fn write_owl_study(dir: &Path, variant: &str, threshold: f64) -> PathBuf {
    let text = format!(
        "study: test\nbenchmark: {data}\nseeds: [42]\ncache: cache\nreports: reports\n\
         encoders:\n  dinov2:\n    model: {dinov2}\n\
         detection:\n  detector: {variant}\n  model: {model}\n  threshold: {threshold}\n\
         models:\n  k0:\n    adapter: compose\n    size: 256\n",
        data = data().display(),
        dinov2 = repo().join("tests/fixtures/encoders/dinov2_tiny").display(),
        model = repo()
            .join(format!("tests/fixtures/detectors/{variant}_tiny"))
            .display(),
    );
    let path = dir.join("study.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// OWL-ViT and OWLv2 run in `detect` from HF checkpoints: each image's stored detections are
/// exactly what the `detectors` crate finds in that image for the subjects' names; crops and local
/// scores follow; a new score threshold re-runs detection and what follows it, nothing before.
#[test]
fn owl_detectors_run_in_the_detect_stage() {
    let prompts = "17_no_interaction,42_interaction";
    for variant in ["owlvit", "owlv2"] {
        let tmp = tempfile::tempdir().unwrap();
        let config = write_owl_study(tmp.path(), variant, 0.3);
        let summary = run_json(&config, &["--prompts", prompts], 0);
        assert_eq!(computed(&summary, "detect"), 2, "{variant}: {summary}");
        assert_eq!(computed(&summary, "local-score"), 2, "{variant}: {summary}");

        let checkpoint = encoders::Checkpoint::from_dir(
            &repo().join(format!("tests/fixtures/detectors/{variant}_tiny")),
        )
        .unwrap();
        let options = detectors::OwlOptions {
            threshold: 0.3,
            ..detectors::OwlOptions::default()
        };
        let owl =
            detectors::OwlDetector::load(&checkpoint, options, &candle_core::Device::Cpu).unwrap();
        let mut boxes = 0;
        for line in items_jsonl(tmp.path()).lines() {
            let line: Value = serde_json::from_str(line).unwrap();
            if line["model"] != "k0" || !prompts.split(',').any(|p| line["prompt_id"] == p) {
                continue;
            }
            let stages = &line["stages"];
            let digest = stages["generate"]["outputs"]["image"].as_str().unwrap();
            let image = std::fs::read(
                tmp.path()
                    .join("cache/blobs")
                    .join(&digest[..2])
                    .join(digest),
            )
            .unwrap();
            let image = image::load_from_memory(&image).unwrap().to_rgb8();
            let stored = blob(tmp.path(), &stages["detect"]["outputs"]["detections"]);
            let queries: Vec<String> = serde_json::from_value(stored["queries"].clone()).unwrap();
            assert!(!queries.is_empty());
            use detectors::Detector as _;
            let expected = owl.detect(&image, &queries).unwrap();
            let found: Vec<detectors::Detection> =
                serde_json::from_value(stored["detections"].clone()).unwrap();
            assert_eq!(found, expected, "{variant}: {}", line["prompt_id"]);
            boxes += found.len();
            let crops = blob(tmp.path(), &stages["crop"]["outputs"]["crops"]);
            let kept = crops["crops"].as_array().unwrap().len();
            let dropped = crops["dropped"].as_array().unwrap().len();
            assert_eq!(kept + dropped, found.len(), "{crops}");
        }
        assert!(boxes > 0, "{variant}: the fixture finds boxes at 0.3");

        let config = write_owl_study(tmp.path(), variant, 0.5);
        let second = run_json(&config, &["--prompts", prompts], 0);
        for stage in ["generate", "embed-dinov2", "score"] {
            assert_eq!(computed(&second, stage), 0, "{variant} {stage}: {second}");
        }
        assert_eq!(computed(&second, "detect"), 2, "{variant}: {second}");
    }
}

/// A detector checkpoint that is not there stops the study at open, naming what is missing.
#[test]
fn a_missing_detector_checkpoint_is_an_error_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_owl_study(tmp.path(), "owlv2", 0.1);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("owlv2_tiny", "no_such_model");
    std::fs::write(&config, text).unwrap();
    let out = run_ok(
        scrbench(&config).args(["run", "--prompts", "17_no_interaction"]),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no_such_model"), "{stderr}");
}

/// A Python with the hf-detector adapter's packages (torch, transformers, Pillow, scipy): the smoke
/// venv (`SCRBENCH_SMOKE_PYTHON`, which `.ci/run` builds with `adapters/tests/smoke_venv.sh`), else
/// `SCRBENCH_PYTHON`, else the parity venv of `tools/parity`. `None` (the test skips, saying why)
/// only where `SCRBENCH_REQUIRE_SMOKE` is not set.
fn transformers_python() -> Option<PathBuf> {
    let python = ["SCRBENCH_SMOKE_PYTHON", "SCRBENCH_PYTHON"]
        .into_iter()
        .find_map(std::env::var_os)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-parity/bin/python"));
    let usable = Command::new(&python)
        .args(["-c", "import torch, transformers, PIL, scipy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if usable {
        return Some(python);
    }
    assert!(
        std::env::var_os("SCRBENCH_REQUIRE_SMOKE").is_none(),
        "{} lacks adapters/hf-detector/requirements.txt (SCRBENCH_REQUIRE_SMOKE is set)",
        python.display()
    );
    eprintln!(
        "skipped: no Python with adapters/hf-detector/requirements.txt ({})",
        python.display()
    );
    None
}

/// The external detector backend: `adapters/hf-detector` (transformers' OWLv2 as a worker
/// process) on the tiny OWLv2 fixture finds the same boxes as the native OWLv2, through the same
/// stages; the worker is started only when there is something to detect.
#[test]
fn an_external_detector_worker_agrees_with_the_native_detector() {
    let Some(python) = transformers_python() else {
        return;
    };
    let prompts = "17_no_interaction,42_interaction";
    let tmp = tempfile::tempdir().unwrap();
    let native = write_owl_study(tmp.path(), "owlv2", 0.3);
    run_json(&native, &["--prompts", prompts], 0);
    let detections = |dir: &Path| -> Vec<(String, Vec<detectors::Detection>)> {
        items_jsonl(dir)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["model"] == "k0" && prompts.split(',').any(|p| l["prompt_id"] == p))
            .map(|l| {
                let stored = blob(dir, &l["stages"]["detect"]["outputs"]["detections"]);
                let mut found: Vec<detectors::Detection> =
                    serde_json::from_value(stored["detections"].clone()).unwrap();
                found.sort_by(|a, b| {
                    (a.query, a.bbox[0])
                        .partial_cmp(&(b.query, b.bbox[0]))
                        .unwrap()
                });
                (l["prompt_id"].as_str().unwrap().to_owned(), found)
            })
            .collect()
    };
    let expected = detections(tmp.path());

    let external = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&native).unwrap().replace(
        "  detector: owlv2\n",
        &format!(
            "  detector: worker\n  worker:\n    dir: {}\n    python: {}\n  nms_iou: 0.3\n",
            repo().join("adapters/hf-detector").display(),
            python.display()
        ),
    );
    let config = external.path().join("study.yaml");
    std::fs::write(&config, text).unwrap();
    let summary = run_json(&config, &["--prompts", prompts], 0);
    assert_eq!(computed(&summary, "detect"), 2, "{summary}");
    assert_eq!(computed(&summary, "local-score"), 2, "{summary}");
    let found = detections(external.path());
    assert_eq!(found.len(), expected.len());
    let mut boxes = 0;
    for ((prompt, ours), (_, theirs)) in expected.iter().zip(&found) {
        assert_eq!(ours.len(), theirs.len(), "{prompt}: {ours:?} vs {theirs:?}");
        for (a, b) in ours.iter().zip(theirs) {
            assert_eq!(a.query, b.query, "{prompt}");
            assert!((a.score - b.score).abs() < 1e-4, "{prompt}: {a:?} vs {b:?}");
            for (x, y) in a.bbox.iter().zip(&b.bbox) {
                assert!((x - y).abs() < 1e-3, "{prompt}: {a:?} vs {b:?}");
            }
            boxes += 1;
        }
    }
    assert!(boxes > 0);
    let logs = std::fs::read_dir(external.path().join("cache/logs/workers"))
        .unwrap()
        .count();
    assert_eq!(logs, 1, "one worker process served the run");

    // Cached: nothing to detect, no worker started.
    let again = run_json(&config, &["--prompts", prompts], 0);
    assert_eq!(computed(&again, "detect"), 0, "{again}");
    let logs = std::fs::read_dir(external.path().join("cache/logs/workers"))
        .unwrap()
        .count();
    assert_eq!(logs, 1, "a cached rerun starts no worker");
}

/// `detector: worker` without its adapter, or an adapter that is not a detector, stops the study
/// at open with the reason.
#[test]
fn a_detector_worker_needs_a_detector_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_owl_study(tmp.path(), "owlv2", 0.3);
    let study = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        study.replace("  detector: owlv2\n", "  detector: worker\n"),
    )
    .unwrap();
    let out = run_ok(scrbench(&config).args(["run"]), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`detector: worker` needs a `worker:` section"),
        "{stderr}"
    );

    let adapter = tmp.path().join("gen");
    std::fs::create_dir_all(&adapter).unwrap();
    std::fs::write(
        adapter.join("adapter.yaml"),
        "name: gen\nversion: 0.1.0\nkind: generator\ncommand: [\"{python}\", \"worker.py\"]\n",
    )
    .unwrap();
    let text = study.replace(
        "  detector: owlv2\n",
        "  detector: worker\n  worker:\n    dir: gen\n    python: /usr/bin/python3\n",
    );
    std::fs::write(&config, text).unwrap();
    let out = run_ok(scrbench(&config).args(["run"]), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("adapter.yaml") && stderr.contains("is a generator, not a detector"),
        "{stderr}"
    );
}
