//! The content-addressed cache seen from the command line: invalidation, corruption, sharing.

use super::*;

const NARROW: [&str; 2] = [
    "--prompts",
    "01_no_interaction,02_no_interaction,16_no_interaction",
];

#[test]
fn changing_one_prompt_recomputes_exactly_its_items_and_explain_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = tmp.path().join("bench.yaml");
    run_ok(
        scrbench(Path::new("unused.yaml"))
            .args(["benchmark", "convert"])
            .arg(data())
            .arg("--out")
            .arg(&yaml),
        0,
    );
    let config = write_study(
        tmp.path(),
        &yaml,
        "  a:\n    adapter: compose\n    size: 64\n  b:\n    adapter: compose\n    size: 72\n",
    );
    let first = run_json(&config, &NARROW, 0);
    assert_eq!(
        computed(&first, "generate"),
        12,
        "2 models × 3 prompts × 2 seeds"
    );

    let original =
        "A quiet loft: a dog lying near the window, and a panda sitting against the wall.";
    let text = std::fs::read_to_string(&yaml).unwrap();
    assert!(
        text.contains(original),
        "the converted benchmark holds prompt 02"
    );
    std::fs::write(
        &yaml,
        text.replace(
            original,
            "A quiet loft: a dog asleep by the window, and a panda sitting against the wall.",
        ),
    )
    .unwrap();

    let second = run_json(&config, &NARROW, 0);
    assert_eq!(
        computed(&second, "generate"),
        4,
        "prompt 02 × 2 models × 2 seeds, nothing else"
    );
    assert_eq!(cached(&second, "generate"), 8);

    // Changing a model's settings recomputes that model's items only, and explain names the parameter.
    let models_b = "  b:\n    adapter: compose\n    size: 72\n";
    let study = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        study.replace(models_b, "  b:\n    adapter: compose\n    size: 80\n"),
    )
    .unwrap();
    let dry = run_ok(
        scrbench(&config).args(["explain", "b/16_no_interaction/42"]),
        0,
    );
    let text = String::from_utf8(dry.stdout).unwrap();
    assert!(text.contains("stage generate: would run"), "{text}");
    assert!(text.contains("parameter `settings` changed"), "{text}");
    assert!(
        text.contains("\"size\":72"),
        "the old value is shown: {text}"
    );
    let third = run_json(&config, &NARROW, 0);
    assert_eq!(computed(&third, "generate"), 6, "model b's 6 items");
    assert_eq!(cached(&third, "generate"), 6, "model a untouched");

    let explain = run_ok(
        scrbench(&config).args(["explain", "a/02_no_interaction/43"]),
        0,
    );
    let text = String::from_utf8(explain.stdout).unwrap();
    assert!(text.contains("stage generate: up to date"), "{text}");
}

#[test]
fn a_flipped_byte_in_a_blob_is_detected_and_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_study(
        tmp.path(),
        &data(),
        "  c:\n    adapter: compose\n    size: 64\n",
    );
    run_json(&config, &NARROW, 0);
    let before = items_jsonl(tmp.path());
    let line: Value = serde_json::from_str(before.lines().nth(2).unwrap()).unwrap();
    let digest = line["image"].as_str().unwrap();
    let blob = tmp
        .path()
        .join("cache/blobs")
        .join(&digest[..2])
        .join(digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let mut permissions = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&blob, permissions).unwrap();
    std::fs::write(&blob, &bytes).unwrap();

    // Content addressing: compose without collapse ignores the seed, so items may share a blob.
    let sharing = before.lines().filter(|l| l.contains(digest)).count() as u64;
    assert!(sharing >= 1);
    let rerun = run_json(&config, &NARROW, 0);
    assert_eq!(
        computed(&rerun, "generate"),
        sharing,
        "only the items of the corrupted blob"
    );
    assert_eq!(
        items_jsonl(tmp.path()),
        before,
        "and it comes back identical"
    );
    assert_eq!(std::fs::read(&blob).unwrap(), {
        bytes[middle] ^= 0x40;
        bytes
    });
}

#[test]
fn two_processes_share_one_cache_without_computing_an_item_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_study(
        tmp.path(),
        &data(),
        "  c:\n    adapter: compose\n    size: 64\n    delay_ms: 40\n",
    );
    let narrow = [
        "--prompts",
        "01_no_interaction,02_no_interaction,03_no_interaction,04_no_interaction,05_no_interaction,06_occlusion,07_occlusion,08_occlusion",
    ];
    let spawn = || {
        scrbench(&config)
            .args(["run", "--json"])
            .args(narrow)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let parse = |child: std::process::Child| -> Value {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let (a, b) = (parse(a), parse(b));

    let alone = tempfile::tempdir().unwrap();
    let config_alone = write_study(
        alone.path(),
        &data(),
        "  c:\n    adapter: compose\n    size: 64\n    delay_ms: 40\n",
    );
    let single = run_json(&config_alone, &narrow, 0);
    for stage in ["generate", "inspect"] {
        assert_eq!(
            computed(&a, stage) + computed(&b, stage),
            computed(&single, stage),
            "{stage}: each action computed once by the pair, as by one process alone"
        );
    }
    assert_eq!(computed(&single, "generate"), 16);
    assert!(
        computed(&a, "generate") > 0 && computed(&b, "generate") > 0,
        "both did work: {a} {b}"
    );
    run_json(&config, &narrow, 0);
    assert_eq!(items_jsonl(tmp.path()), items_jsonl(alone.path()));
}
