//! Models served by worker processes (`adapter: worker`), end to end through the real binary with
//! the protocol test worker (`scrbench-test-worker` of `crates/worker`): every fault of
//! `adapters/PROTOCOL.md` ends as specified there, with the rest of the sweep completed and the
//! failure messages carrying the worker's stderr; a cached rerun never starts a worker.

use std::sync::OnceLock;

use super::*;

/// The test worker, built (once per test process) into the same target folder as `scrbench`.
/// `cargo test --workspace` has built it already; `cargo test -p scrbench` has not.
fn test_worker() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let scrbench = Path::new(env!("CARGO_BIN_EXE_scrbench"));
        let dir = scrbench.parent().expect("scrbench's folder");
        let mut build = Command::new(env!("CARGO"));
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "worker",
                "--bin",
                "scrbench-test-worker",
            ])
            .current_dir(repo());
        if dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "cannot build scrbench-test-worker");
        let worker = dir.join("scrbench-test-worker");
        assert!(worker.is_file(), "{} is missing", worker.display());
        worker
    })
}

/// An adapter folder whose manifest runs the test worker with `args`; `extra` is appended to the
/// manifest. Returns the folder.
fn adapter(dir: &Path, name: &str, args: &[&str], extra: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let mut command = vec![
        test_worker().display().to_string(),
        "--log".to_owned(),
        dir.join(format!("{name}.events.jsonl"))
            .display()
            .to_string(),
    ];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    let manifest = format!(
        "name: test\nversion: 0.1.0\nlabel: \"test worker: a flat colour per image\"\n\
         kind: generator\nprompt_format: {{kind: plain}}\nmodel: {{id: test/solid-colour}}\n\
         defaults: {{width: 64, height: 48, steps: 2, guidance: 1.0}}\n\
         command: {command}\nmax_in_flight: 2\n\
         timeouts: {{startup_s: 20, request_s: 2, shutdown_s: 5}}\n\
         restarts: {{max: 3, backoff_s: 0.01, backoff_max_s: 0.05}}\n{extra}",
        command = serde_json::to_string(&command).unwrap(),
    );
    std::fs::write(folder.join("adapter.yaml"), manifest).unwrap();
    folder
}

/// The test worker's recorded events (`start`, `received`, `replied`).
fn events(dir: &Path, name: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(format!("{name}.events.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn starts(dir: &Path, name: &str) -> usize {
    events(dir, name)
        .iter()
        .filter(|e| e["event"] == "start")
        .count()
}

/// A study over prompts 01–04 (no interaction) × seeds 42/43 with the given models.
fn study(dir: &Path, models: &str) -> PathBuf {
    let config = write_study(dir, &data(), models);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("models:\n", "concurrency: {generate: 2}\nmodels:\n"),
    )
    .unwrap();
    config
}

const PROMPTS: [&str; 2] = [
    "--prompts",
    "01_no_interaction,02_no_interaction,03_no_interaction,04_no_interaction",
];

fn failure<'a>(summary: &'a Value, item: &str) -> &'a str {
    summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["item"] == item)
        .unwrap_or_else(|| panic!("no failure for {item}: {summary}"))["message"]
        .as_str()
        .unwrap()
}

#[test]
fn every_worker_fault_ends_as_specified_and_the_sweep_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let faults = [
        ("01_no_interaction/42", "crash-once"),
        ("01_no_interaction/43", "crash"),
        ("02_no_interaction/42", "hang-once"),
        ("02_no_interaction/43", "garbage-once"),
        ("03_no_interaction/42", "wrong-size"),
        ("03_no_interaction/43", "not-image"),
        ("04_no_interaction/42", "refuse-once"),
    ];
    let specs: Vec<String> = faults.iter().map(|(l, m)| format!("{l}={m}")).collect();
    let mut args = vec!["--max-in-flight", "2"];
    for spec in &specs {
        args.extend(["--fault", spec.as_str()]);
    }
    let folder = adapter(tmp.path(), "w", &args, "");
    let config = study(
        tmp.path(),
        &format!("  w:\n    adapter: worker\n    dir: {}\n", folder.display()),
    );
    let summary = run_json(&config, &PROMPTS, 2);
    assert_eq!(computed(&summary, "generate"), 5, "{summary}");
    assert_eq!(computed(&summary, "inspect"), 5, "{summary}");
    assert_eq!(
        summary["failures"].as_array().unwrap().len(),
        3,
        "{summary}"
    );

    let crash = failure(&summary, "w/01_no_interaction/43");
    assert!(crash.contains("failed after 3 attempt(s)"), "{crash}");
    assert!(crash.contains("exited (exit status: 3)"), "{crash}");
    assert!(crash.contains("worker stderr, last"), "{crash}");
    assert!(
        crash.contains("crashing on 01_no_interaction/43#"),
        "{crash}"
    );
    let wide = failure(&summary, "w/03_no_interaction/42");
    assert!(wide.contains("is 65×48, but 64×48 was requested"), "{wide}");
    assert!(wide.contains("worker stderr"), "{wide}");
    let text = failure(&summary, "w/03_no_interaction/43");
    assert!(text.contains("not a decodable image"), "{text}");

    // The worker logs are where the messages say, named <model>.<pid>.log.
    let logs: Vec<String> = std::fs::read_dir(tmp.path().join("cache/logs/workers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !logs.is_empty()
            && logs
                .iter()
                .all(|l| l.starts_with("w.") && l.ends_with(".log"))
    );

    // Every stored image is the requested size and carries its provenance (the label).
    let items = items_jsonl(tmp.path());
    let done: Vec<Value> = items
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["stages"]["generate"]["state"] == "done")
        .collect();
    assert_eq!(done.len(), 5);
    for item in &done {
        let digest = item["stages"]["generate"]["outputs"]["provenance"]
            .as_str()
            .expect("a provenance output");
        let blob = tmp
            .path()
            .join("cache/blobs")
            .join(&digest[..2])
            .join(digest);
        let provenance: Value = serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
        assert_eq!(provenance["label"], "test worker: a flat colour per image");
        assert_eq!(provenance["device"], "cpu");
    }

    // Each item's image came from one served request; nothing done was asked for again, and no
    // request was tried more than its 3 attempts plus re-sends after another request's crash.
    let log = events(tmp.path(), "w");
    for (label, _) in &faults {
        let received = log
            .iter()
            .filter(|e| e["event"] == "received" && e["label"] == *label)
            .count();
        assert!(
            (1..=4).contains(&received),
            "{label}: received {received} times"
        );
    }

    // The next run retries the failed items only (they fail again: their faults are permanent).
    let starts_before = starts(tmp.path(), "w");
    let again = run_json(&config, &PROMPTS, 2);
    assert_eq!(cached(&again, "generate"), 5, "{again}");
    assert_eq!(again["failures"].as_array().unwrap().len(), 3, "{again}");
    assert!(starts(tmp.path(), "w") > starts_before);
    let status = run_ok(scrbench(&config).arg("status"), 0);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("crashing on 01_no_interaction/43#"),
        "{status}"
    );
}

#[test]
fn a_cached_rerun_never_starts_a_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = adapter(tmp.path(), "w", &[], "");
    let config = study(
        tmp.path(),
        &format!("  w:\n    adapter: worker\n    dir: {}\n", folder.display()),
    );
    let narrow = ["--prompts", "01_no_interaction,02_no_interaction"];
    let first = run_json(&config, &narrow, 0);
    assert_eq!(computed(&first, "generate"), 4, "{first}");
    assert_eq!(starts(tmp.path(), "w"), 1);
    let second = run_json(&config, &narrow, 0);
    assert_eq!(cached(&second, "generate"), 4, "{second}");
    run_ok(scrbench(&config).arg("status"), 0);
    run_ok(scrbench(&config).arg("report"), 0);
    assert_eq!(
        starts(tmp.path(), "w"),
        1,
        "a cached rerun started the worker"
    );
    // The worker was shut down at the end of the first run, not killed.
    let logs = std::fs::read_dir(tmp.path().join("cache/logs/workers")).unwrap();
    let log = std::fs::read_to_string(logs.map(|e| e.unwrap().path()).next().unwrap()).unwrap();
    assert!(log.contains("shutdown"), "{log}");

    // Changing a setting changes the key: the images are made again.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "    adapter: worker\n",
            "    adapter: worker\n    settings: {width: 32}\n",
        ),
    )
    .unwrap();
    let third = run_json(&config, &narrow, 0);
    assert_eq!(computed(&third, "generate"), 4, "{third}");
    assert_eq!(starts(tmp.path(), "w"), 2);
}

#[test]
fn a_worker_that_cannot_start_is_given_up_and_the_other_models_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = adapter(tmp.path(), "broken", &["--start", "crash"], "");
    let config = study(
        tmp.path(),
        &format!(
            "  broken:\n    adapter: worker\n    dir: {}\n  c:\n    adapter: compose\n    size: 64\n",
            folder.display()
        ),
    );
    let narrow = ["--prompts", "01_no_interaction,02_no_interaction"];
    let summary = run_json(&config, &narrow, 2);
    let failures = summary["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 4, "{summary}");
    for f in failures {
        assert!(f["item"].as_str().unwrap().starts_with("broken/"), "{f}");
        let message = f["message"].as_str().unwrap();
        assert!(message.contains("was given up"), "{message}");
        assert!(
            message.contains("crashing at start (deliberately)"),
            "{message}"
        );
    }
    assert_eq!(
        computed(&summary, "generate"),
        4,
        "the compose model finished: {summary}"
    );
    assert_eq!(
        starts(tmp.path(), "broken"),
        3,
        "max 3 failed starts, then given up"
    );
}

#[test]
fn a_worker_without_an_interpreter_says_how_to_set_it_up() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("needs-python");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("adapter.yaml"),
        "name: needs-python\nversion: 0.1.0\nkind: generator\nprompt_format: {kind: text-only}\n\
         defaults: {width: 8, height: 8, steps: 1, guidance: 1.0}\n\
         command: [\"{python}\", \"worker.py\"]\n",
    )
    .unwrap();
    let config = study(
        tmp.path(),
        &format!("  p:\n    adapter: worker\n    dir: {}\n", folder.display()),
    );
    let output = run_ok(
        scrbench(&config)
            .args(["run", "--json", "--prompts", "01_no_interaction"])
            .env_remove("SCRBENCH_PYTHON"),
        2,
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    let message = failure(&summary, "p/01_no_interaction/42");
    assert!(
        message.contains("cargo xtask adapter setup needs-python"),
        "{message}"
    );
    // `status` and `report` need no interpreter.
    run_ok(
        scrbench(&config)
            .arg("status")
            .env_remove("SCRBENCH_PYTHON"),
        0,
    );
}

#[test]
fn two_worker_models_in_one_study_each_start_once_and_shut_down_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let a = adapter(tmp.path(), "a", &["--max-in-flight", "2"], "");
    let b = adapter(tmp.path(), "b", &["--max-in-flight", "2"], "");
    let config = study(
        tmp.path(),
        &format!(
            "  a:\n    adapter: worker\n    dir: {}\n  b:\n    adapter: worker\n    dir: {}\n    \
             settings: {{width: 32}}\n",
            a.display(),
            b.display()
        ),
    );
    let summary = run_json(
        &config,
        &["--prompts", "01_no_interaction,02_no_interaction"],
        0,
    );
    assert_eq!(computed(&summary, "generate"), 8, "{summary}");
    assert_eq!((starts(tmp.path(), "a"), starts(tmp.path(), "b")), (1, 1));
    // Both were shut down cleanly when the run ended, not killed.
    for entry in std::fs::read_dir(tmp.path().join("cache/logs/workers")).unwrap() {
        let log = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(log.contains("shutdown"), "{log}");
    }
}
