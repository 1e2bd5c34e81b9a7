//! `cargo xtask bench-slurm`: the speed-up of a Slurm array over one task, on a generator that
//! sleeps per image (so the node's core count does not matter, as with GPU-bound generation).
//!
//! Starts a throwaway single-node Slurm ([`cluster::testbed`]; needs root and Debian's
//! `slurm-wlm` and `munge`) unless `--existing` says to use the Slurm that `sbatch` reaches now
//! (with `--partition P` if needed). For each task count it submits the study into a fresh cache
//! with the release binary (`run --executor slurm --array K`) and waits for the report job. The
//! generation stage's span is read from the cache: from the first image's start (its action
//! entry's mtime minus one sleep) to the last image's entry; the end-to-end time runs from
//! submission until the report job left the queue.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use cluster::testbed::{LocalSlurm, Options};

struct Args {
    tasks: Vec<usize>,
    ms: u64,
    seeds: String,
    existing: bool,
    partition: Option<String>,
}

fn parse(args: &[OsString]) -> Result<Args> {
    let mut parsed = Args {
        tasks: vec![1, 4],
        ms: 200,
        seeds: "42, 43, 44".into(),
        existing: false,
        partition: None,
    };
    let usage = "usage: cargo xtask bench-slurm [--tasks 1,4] [--ms 200] [--seeds 42,43,44] \
                 [--existing [--partition P]]";
    let mut iter = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = iter.next() {
        let mut value = || {
            iter.next()
                .with_context(|| format!("{arg} needs a value; {usage}"))
        };
        match arg.as_str() {
            "--tasks" => {
                parsed.tasks = value()?
                    .split(',')
                    .map(|t| t.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--tasks takes numbers like 1,4")?;
            }
            "--ms" => parsed.ms = value()?.parse().context("--ms takes milliseconds")?,
            "--seeds" => parsed.seeds = value()?.replace(',', ", "),
            "--existing" => parsed.existing = true,
            "--partition" => parsed.partition = Some(value()?),
            _ => bail!("unknown argument `{arg}`; {usage}"),
        }
    }
    ensure!(
        !parsed.tasks.is_empty() && parsed.tasks.iter().all(|&t| t > 0),
        "--tasks must be positive"
    );
    Ok(parsed)
}

/// One configuration's measurements.
struct Measured {
    tasks: usize,
    items: usize,
    generation: f64,
    end_to_end: f64,
}

pub fn main(args: &[OsString]) -> Result<()> {
    let args = parse(args)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?
        .to_path_buf();
    let data = root
        .join("../shared/datasets/p13n-workshop")
        .canonicalize()
        .or_else(|_| root.join("cache/datasets/p13n-workshop").canonicalize())
        .context("no dataset found; run `cargo xtask dataset fetch p13n-workshop`")?;

    println!("building the release binary...");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "-p", "scrbench"])
        .current_dir(&root)
        .status()?;
    ensure!(status.success(), "cargo build --release failed");
    let binary = root.join("target/release/scrbench");
    let work = tempfile::Builder::new()
        .prefix("scrbench-bench-slurm-")
        .tempdir()?;

    let slurm = if args.existing {
        None
    } else {
        if let Some(why) = cluster::testbed::unavailable() {
            bail!("cannot start a local Slurm: {why}; or pass --existing to use a running one");
        }
        let max = args.tasks.iter().copied().max().unwrap_or(1) as u32;
        println!("starting a single-node Slurm ({max} task slots)...");
        let options = Options {
            cpus: max.max(2),
            gpus: 0,
        };
        Some(LocalSlurm::start(&work.path().join("slurm"), &options)?)
    };
    let conf = slurm.as_ref().map(|s| s.conf().to_path_buf());

    let config = work.path().join("study.yaml");
    std::fs::write(
        &config,
        format!(
            "study: bench-slurm\nbenchmark: {}\nseeds: [{}]\nconcurrency: {{generate: 1}}\n\
             models:\n  sleep:\n    adapter: sleep\n    ms: {}\n",
            data.display(),
            args.seeds,
            args.ms
        ),
    )?;
    let mut results = Vec::new();
    for &tasks in &args.tasks {
        let cache = work.path().join(format!("cache-{tasks}"));
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&config)
            .arg("--cache")
            .arg(&cache)
            .arg("--reports")
            .arg(work.path().join(format!("reports-{tasks}")))
            .args(["run", "--executor", "slurm", "--json", "--array"])
            .arg(tasks.to_string());
        if let Some(partition) = &args.partition {
            command.args(["--partition", partition]);
        }
        if let Some(conf) = &conf {
            command.env("SLURM_CONF", conf);
        }
        let started = Instant::now();
        let output = command.output()?;
        ensure!(
            output.status.success(),
            "submission failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let submitted: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let jobs = [&submitted["array_job"], &submitted["report_job"]]
            .map(|j| j.as_str().unwrap_or_default().to_owned());
        wait_gone(&jobs, conf.as_deref(), Duration::from_secs(1800))?;
        let end_to_end = started.elapsed().as_secs_f64();
        let dir = PathBuf::from(submitted["dir"].as_str().unwrap_or_default());
        ensure!(
            dir.join("report.log").is_file(),
            "the report job did not run; logs in {}",
            dir.display()
        );
        let mtimes = action_mtimes(&cache.join("actions/generate"))?;
        let items = submitted["items"].as_u64().unwrap_or(0) as usize;
        ensure!(
            mtimes.len() == items,
            "{} of {items} images generated; logs in {}",
            mtimes.len(),
            dir.display()
        );
        let first = mtimes.iter().min().context("nothing was generated")?;
        let last = mtimes.iter().max().context("nothing was generated")?;
        let generation = last.duration_since(*first)?.as_secs_f64() + args.ms as f64 / 1000.0;
        println!(
            "{tasks} task(s): generation {generation:.2}s, submission to report {end_to_end:.2}s"
        );
        results.push(Measured {
            tasks,
            items,
            generation,
            end_to_end,
        });
    }
    let base = &results[0];
    println!(
        "\n{} images × {} ms (sleep generator), {}\n",
        base.items,
        args.ms,
        machine(conf.as_deref())
    );
    println!(
        "| array tasks | ideal generation (s) | generation stage (s) | speed-up | submission → report done (s) | speed-up |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        let ideal = r.items.div_ceil(r.tasks) as f64 * args.ms as f64 / 1000.0;
        println!(
            "| {} | {ideal:.2} | {:.2} | {:.2}× | {:.2} | {:.2}× |",
            r.tasks,
            r.generation,
            base.generation / r.generation,
            r.end_to_end,
            base.end_to_end / r.end_to_end
        );
    }
    drop(slurm);
    Ok(())
}

/// Waits until none of `jobs` is in the queue (finished, failed or cancelled).
fn wait_gone(jobs: &[String], conf: Option<&Path>, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut squeue = Command::new("squeue");
        squeue.args(["-h", "-o", "%i", "-j", &jobs.join(",")]);
        if let Some(conf) = conf {
            squeue.env("SLURM_CONF", conf);
        }
        let output = squeue.output().context("cannot run squeue")?;
        // squeue fails for job ids it no longer knows: they are gone too.
        if !output.status.success() || output.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "jobs {jobs:?} still queued");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The mtimes of every action entry under `dir` (`<2 hex>/<key>`).
fn action_mtimes(dir: &Path) -> Result<Vec<SystemTime>> {
    let mut mtimes = Vec::new();
    for shard in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        for entry in std::fs::read_dir(shard?.path())? {
            mtimes.push(entry?.metadata()?.modified()?);
        }
    }
    Ok(mtimes)
}

/// `<cores> cores, <CPU model>, <kernel>`.
fn machine(conf: Option<&Path>) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut sbatch = Command::new("sbatch");
    if let Some(conf) = conf {
        sbatch.env("SLURM_CONF", conf);
    }
    let slurm = sbatch
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores ({model}), {slurm}")
}
