//! Interruptions: `kill -9` at random instants loses only in-flight items, and resuming gives
//! results byte-identical to an uninterrupted run with nothing partial left in the cache.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

const MODELS: &str = "  c:\n    adapter: compose\n    size: 96\n    delay_ms: 25\n  \
                      k:\n    adapter: compose\n    size: 96\n    delay_ms: 25\n    collapse: {mode: clone, k: 1}\n";
const NARROW: [&str; 2] = [
    "--prompts",
    "01_no_interaction,06_occlusion,11_interaction,16_no_interaction,21_occlusion,26_interaction,46_no_interaction,61_no_interaction",
];

#[test]
fn sigkill_at_random_instants_then_resume_matches_an_uninterrupted_run() {
    let reference = tempfile::tempdir().unwrap();
    let config = write_study(reference.path(), &data(), MODELS);
    let summary = run_json(&config, &NARROW, 0);
    assert_eq!(computed(&summary, "generate"), 32);
    let expected = items_jsonl(reference.path());

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill instants seeded with {seed}");
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };

    let tmp = tempfile::tempdir().unwrap();
    let config = write_study(tmp.path(), &data(), MODELS);
    for _ in 0..3 {
        let mut child = scrbench(&config)
            .args(["run", "--json"])
            .args(NARROW)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a random instant once the run has stored something (so it got somewhere).
        let entries = tmp.path().join("cache/actions/generate");
        while child.try_wait().unwrap().is_none() && count_files(&entries) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(next() % 300));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let resumed = run_json(&config, &NARROW, 0);
    assert!(
        computed(&resumed, "generate") < 32,
        "the killed runs stored work: {resumed}"
    );
    assert_eq!(items_jsonl(tmp.path()), expected);

    // Nothing partial: every entry parses and points to verified blobs, no temporary file is left.
    let verify = run_ok(scrbench(&config).args(["cache", "verify"]), 0);
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["corrupt"], Value::Array(vec![]), "{report}");
    assert_eq!(report["broken_actions"], Value::Array(vec![]), "{report}");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("cache/tmp"))
        .unwrap()
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn ctrl_c_stops_cleanly_and_the_next_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_study(tmp.path(), &data(), MODELS);
    let child = scrbench(&config)
        .args(["run", "--json"])
        .args(NARROW)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let entries = tmp.path().join("cache/actions/generate");
    while count_files(&entries) < 3 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("interrupted"));
    let interrupted: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(interrupted["interrupted"], true);
    let done = computed(&interrupted, "generate");
    assert!((3..32).contains(&done), "{interrupted}");
    assert_eq!(
        count_files(&entries) as u64,
        done,
        "everything computed before the stop was stored"
    );

    let resumed = run_json(&config, &NARROW, 0);
    assert_eq!(computed(&resumed, "generate"), 32 - done);
    assert_eq!(cached(&resumed, "generate"), done);
}
