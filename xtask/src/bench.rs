//! Runner benchmarks on the real release binary (wall-clock, several repetitions; no timed tests).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

const REPEATS: usize = 5;

pub fn main(args: &[OsString]) -> Result<()> {
    let root = workspace_root()?;
    let mut data = root.join("../shared/datasets/p13n-workshop");
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.to_str() {
            Some("--data") => data = PathBuf::from(iter.next().context("--data needs a folder")?),
            other => bail!("unknown argument {other:?}; usage: cargo xtask bench [--data DIR]"),
        }
    }
    if !data.join("val_dataset/prompts_50.txt").is_file() {
        data = root.join("cache/datasets/p13n-workshop");
    }
    ensure!(
        data.join("val_dataset/prompts_50.txt").is_file(),
        "no dataset found; run `cargo xtask dataset fetch p13n-workshop --results mosaic` or pass --data DIR"
    );
    let data = data.canonicalize()?;

    println!("building the release binary...");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "scrbench"])
        .current_dir(&root)
        .status()?;
    ensure!(status.success(), "cargo build --release failed");
    let binary = root.join("target/release/scrbench");
    let work = std::env::temp_dir().join(format!("scrbench-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    // 1. No-op rerun of a fully cached 675-item study (3 models × 75 prompts × 3 seeds).
    let noop = work.join("noop.yaml");
    std::fs::write(
        &noop,
        format!(
            "study: bench-noop\nbenchmark: {data}\ncache: cache-noop\nreports: reports\nmodels:\n  \
             mosaic-paper:\n    adapter: replay\n    dir: {data}/results/mosaic\n  \
             compose:\n    adapter: compose\n    size: 256\n  \
             compose-clone:\n    adapter: compose\n    size: 256\n    collapse: {{mode: clone, k: 1}}\n",
            data = data.display()
        ),
    )?;
    let first = time(&binary, &noop)?;
    let mut reruns: Vec<f64> = (0..REPEATS)
        .map(|_| time(&binary, &noop))
        .collect::<Result<_>>()?;
    reruns.sort_by(f64::total_cmp);

    // 2. Scheduling overhead: 225 items through a generator that sleeps 50 ms each, one at a time.
    let sleep = work.join("sleep.yaml");
    let mut overheads = Vec::new();
    for repeat in 0..3 {
        std::fs::write(
            &sleep,
            format!(
                "study: bench-sleep\nbenchmark: {data}\ncache: cache-sleep-{repeat}\nreports: reports\n\
                 concurrency: {{generate: 1}}\nmodels:\n  sleep:\n    adapter: sleep\n    ms: 50\n",
                data = data.display()
            ),
        )?;
        overheads.push(time(&binary, &sleep)?);
    }
    overheads.sort_by(f64::total_cmp);
    let ideal = 225.0 * 0.050;
    // What 225 sleeps of 50 ms take on this machine with nothing else around them: the OS wakes a
    // sleeping thread late by a fraction of a millisecond, which no scheduler can win back.
    let floor = {
        let started = Instant::now();
        for _ in 0..225 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        started.elapsed().as_secs_f64()
    };

    println!();
    println!("| measurement | result | goal |");
    println!("|---|---|---|");
    println!(
        "| first run, 675 items (replay + 2× compose 256², generate + inspect) | {first:.2} s | — |"
    );
    println!(
        "| no-op rerun of the cached 675-item study (median of {REPEATS}; min {:.3} s, max {:.3} s) | {:.3} s | ≤ 0.5 s |",
        reruns[0],
        reruns[REPEATS - 1],
        reruns[REPEATS / 2]
    );
    let median = overheads[1];
    println!(
        "| 225 items × 50 ms sleep, generate concurrency 1 (median of 3 cold runs) | {median:.3} s = {ideal:.2} s + {:.1}% | ≤ 3% over {ideal:.2} s |",
        (median / ideal - 1.0) * 100.0
    );
    println!(
        "| 225 × `thread::sleep(50 ms)` alone, no scrbench (the floor) | {floor:.3} s = {ideal:.2} s + {:.1}% | — |",
        (floor / ideal - 1.0) * 100.0
    );
    println!(
        "| scrbench's own overhead over that floor (process start to exit) | {:.3} s = {:.1}% | — |",
        median - floor,
        (median / floor - 1.0) * 100.0
    );
    std::fs::remove_dir_all(&work).ok();
    Ok(())
}

/// Wall time of one `scrbench run` of `config`, process start to exit.
fn time(binary: &Path, config: &Path) -> Result<f64> {
    let started = Instant::now();
    let output = Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(["run", "--json"])
        .env("RUST_LOG", "warn")
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    ensure!(
        output.status.success(),
        "scrbench run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(seconds)
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// `cargo xtask bench-encoders`: runs the encoders' benchmark binary in release mode from the
/// workspace root, forwarding `args`.
pub fn encoders(args: &[OsString]) -> std::process::ExitCode {
    run_release_bin("encoders", "bench-encoders", args)
}

/// `cargo xtask bench-detectors`: runs the detectors' benchmark binary (OWL-ViT and OWLv2 against
/// transformers, `crates/detectors/src/bin/bench_detectors.rs`) in release mode from the workspace
/// root, forwarding `args`.
pub fn detectors(args: &[OsString]) -> std::process::ExitCode {
    run_release_bin("detectors", "bench-detectors", args)
}

/// `cargo run --release -p package --bin bin -- args` from the workspace root (where the
/// benchmarks' default `.venv-parity/bin/python` and `tools/parity/…` paths resolve).
fn run_release_bin(package: &str, bin: &str, args: &[OsString]) -> std::process::ExitCode {
    let run = || -> Result<bool> {
        let root = workspace_root()?;
        let status = Command::new(env!("CARGO"))
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                package,
                "--bin",
                bin,
                "--",
            ])
            .args(args)
            .current_dir(&root)
            .status()?;
        Ok(status.success())
    };
    match run() {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `cargo xtask bench-scores [--prompts IDS] [--seeds S] [--python PY]`: every paper metric over
/// MOSAIC's published images with real-size random-weight checkpoints on the CPU, once through
/// scrbench (release build, fresh cache) and once through the paper-faithful Python reference
/// (`tools/parity/paper_eval.py`, which like the paper's script embeds every reference for every
/// image). Prints both wall times, the ratio and both peak memories (GNU time's maximum RSS).
pub fn scores(args: &[OsString]) -> Result<()> {
    let root = workspace_root()?;
    let mut prompts = String::new();
    let mut seeds = "42,43,44".to_owned();
    let mut python = root.join(".venv-parity/bin/python");
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let mut value = || {
            iter.next()
                .and_then(|v| v.to_str())
                .map(str::to_owned)
                .context("missing value")
        };
        match arg.to_str() {
            Some("--prompts") => prompts = value()?,
            Some("--seeds") => seeds = value()?,
            Some("--python") => python = PathBuf::from(value()?),
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask bench-scores [--prompts IDS] [--seeds S] [--python PY]"
            ),
        }
    }
    let data = root
        .join("../shared/datasets/p13n-workshop")
        .canonicalize()?;
    let work = std::env::temp_dir().join("scrbench-bench-scores");
    let checkpoints = work.join("checkpoints");
    if !checkpoints
        .join("clip_vit_large_patch14/config.json")
        .is_file()
    {
        println!(
            "writing real-size random-weight checkpoints to {}...",
            checkpoints.display()
        );
        let status = Command::new(&python)
            .arg(root.join("tools/parity/paper_eval.py"))
            .arg("--make-real-size")
            .arg(&checkpoints)
            .status()?;
        ensure!(status.success(), "paper_eval.py --make-real-size failed");
    }
    println!("building the release binary...");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "scrbench"])
        .current_dir(&root)
        .status()?;
    ensure!(status.success(), "cargo build --release failed");

    let cache = work.join("cache");
    std::fs::remove_dir_all(&cache).ok();
    let config = work.join("study.yaml");
    std::fs::write(
        &config,
        format!(
            "study: bench-scores\nbenchmark: {data}\nseeds: [{seeds}]\ncache: cache\nreports: reports\n\
             encoders:\n  dinov2: {{model: {ck}/dinov2_small}}\n  dino: {{model: {ck}/dino_vits16}}\n  \
             clip: {{model: {ck}/clip_vit_large_patch14}}\n\
             models:\n  mosaic-paper:\n    adapter: replay\n    dir: {data}/results/mosaic\n",
            data = data.display(),
            ck = checkpoints.display()
        ),
    )?;
    let mut ours = Command::new("/usr/bin/time");
    ours.arg("-v")
        .arg(root.join("target/release/scrbench"))
        .arg("--config")
        .arg(&config);
    ours.args(["run", "--json"])
        .env("RUST_LOG", "warn")
        .env("RAYON_NUM_THREADS", "2");
    if !prompts.is_empty() {
        ours.args(["--prompts", &prompts]);
    }
    let (ours_s, ours_kib) = time_command(&mut ours)?;

    let mut theirs = Command::new("/usr/bin/time");
    theirs
        .arg("-v")
        .arg(&python)
        .arg(root.join("tools/parity/paper_eval.py"));
    theirs.arg("--data").arg(&data);
    for (flag, dir) in [
        ("--dinov2", "dinov2_small"),
        ("--dino", "dino_vits16"),
        ("--clip", "clip_vit_large_patch14"),
    ] {
        theirs.arg(flag).arg(checkpoints.join(dir));
    }
    theirs
        .args(["--seeds", &seeds, "--threads", "2", "--out"])
        .arg(work.join("paper_scores.json"));
    if !prompts.is_empty() {
        theirs.args(["--prompts", &prompts]);
    }
    let (theirs_s, theirs_kib) = time_command(&mut theirs)?;

    println!();
    println!("| implementation | wall time | peak RSS |");
    println!("|---|---|---|");
    println!(
        "| scrbench (release, fresh cache, batch 16) | {ours_s:.1} s | {:.0} MiB |",
        ours_kib as f64 / 1024.0
    );
    println!(
        "| paper-faithful Python (paper_eval.py) | {theirs_s:.1} s | {:.0} MiB |",
        theirs_kib as f64 / 1024.0
    );
    println!(
        "| ratio (Python / scrbench) | {:.2}× | — |",
        theirs_s / ours_s
    );
    Ok(())
}

/// Wall seconds and GNU time's maximum resident set size (KiB) of `command` (`/usr/bin/time -v …`).
fn time_command(command: &mut Command) -> Result<(f64, u64)> {
    let started = Instant::now();
    let output = command.output()?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "command failed:\n{stderr}");
    let kib = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .context("no maximum RSS in /usr/bin/time's output")?;
    Ok((seconds, kib))
}
