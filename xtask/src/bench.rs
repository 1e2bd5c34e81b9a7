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
    let run = || -> Result<bool> {
        let root = workspace_root()?;
        let status = Command::new(env!("CARGO"))
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "encoders",
                "--bin",
                "bench-encoders",
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
