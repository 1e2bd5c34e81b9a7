//! `bench-encoders`: our forward against transformers' on the same real-size checkpoint.
//!
//! For each model it has `tools/parity/bench_transformers.py` write a randomly initialised
//! checkpoint in HF format (once, under `--dir`) and time transformers on `--threads` threads, then
//! loads the same checkpoint with this crate and times our forward on the same batch shape. Each
//! model runs in its own child process so the reported peak memory (VmHWM) is per model.
//!
//! `cargo run --release -p encoders --bin bench-encoders -- [--models dinov2-s14,clip-l14]
//! [--batch 16] [--iters 5] [--threads 2] [--python .venv-parity/bin/python] [--skip-torch]`

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use clap::Parser;
use encoders::{Checkpoint, Clip, ClipOptions, Dinov2, Dinov2Options, ModelSpec};

#[derive(Parser, Debug)]
#[command(about = "Time our encoders against transformers on the same checkpoint")]
struct Args {
    /// Comma-separated: dinov2-s14, clip-l14.
    #[arg(long, default_value = "dinov2-s14,clip-l14")]
    models: String,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..))]
    iters: u16,
    /// Threads for both sides (RAYON_NUM_THREADS for us, torch.set_num_threads for transformers).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Where the checkpoints are written (reused across runs).
    #[arg(long, default_value = "/tmp/scrbench-bench")]
    dir: PathBuf,
    #[arg(long, default_value = ".venv-parity/bin/python")]
    python: PathBuf,
    #[arg(long, default_value = "tools/parity/bench_transformers.py")]
    script: PathBuf,
    /// Only time our side (the checkpoints must exist).
    #[arg(long)]
    skip_torch: bool,
    /// Internal: time our forward for one model in this process.
    #[arg(long, hide = true)]
    ours: Option<String>,
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

/// A loaded model's batch forward.
type Forward = Box<dyn Fn(&Tensor) -> encoders::Result<Tensor>>;

fn main() -> BoxResult<()> {
    let args = Args::parse();
    if let Some(model) = &args.ours {
        return time_ours(&args, model);
    }
    println!(
        "model       batch  ours img/s  torch img/s  ratio  ours peak MiB  torch peak MiB  (median of {} runs, {} threads)",
        args.iters, args.threads
    );
    for model in args.models.split(',').map(str::trim) {
        let dir = args.dir.join(model);
        let torch = if args.skip_torch {
            None
        } else {
            run_python(&args, "create", model, &dir)?;
            Some(run_python(&args, "time", model, &dir)?)
        };
        let exe = std::env::current_exe()?;
        let out = Command::new(exe)
            .env("RAYON_NUM_THREADS", args.threads.to_string())
            .args(["--ours", model, "--batch", &args.batch.to_string()])
            .args(["--iters", &args.iters.to_string(), "--dir"])
            .arg(&args.dir)
            .output()?;
        if !out.status.success() {
            return Err(format!("our run failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let ours: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let ours_ips = ours["images_per_s"].as_f64().unwrap_or(f64::NAN);
        let (torch_ips, torch_mem) = torch
            .as_ref()
            .map(|t| {
                (
                    t["images_per_s"].as_f64().unwrap_or(f64::NAN),
                    t["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .unwrap_or((f64::NAN, f64::NAN));
        println!(
            "{model:<11} {:>5}  {ours_ips:>10.2}  {torch_ips:>11.2}  {:>5.2}  {:>13.0}  {torch_mem:>14.0}",
            args.batch,
            ours_ips / torch_ips,
            ours["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
        );
        println!("  ours runs (s): {}", ours["times_s"]);
        if let Some(t) = torch {
            println!("  torch runs (s): {}", t["times_s"]);
        }
    }
    Ok(())
}

fn run_python(args: &Args, command: &str, model: &str, dir: &Path) -> BoxResult<serde_json::Value> {
    let out = Command::new(&args.python)
        .arg(&args.script)
        .args([command, "--model", model, "--dir"])
        .arg(dir)
        .args([
            "--batch",
            &args.batch.to_string(),
            "--iters",
            &args.iters.to_string(),
        ])
        .args(["--threads", &args.threads.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args.python.display()))?;
    if !out.status.success() {
        return Err(format!("{command} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    if command == "create" {
        return Ok(serde_json::Value::Null);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rfind(|l| l.starts_with('{')).unwrap_or("{}");
    Ok(serde_json::from_str(line)?)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn time_ours(args: &Args, model: &str) -> BoxResult<()> {
    let device = Device::Cpu;
    let checkpoint =
        Checkpoint::resolve(&ModelSpec::new(args.dir.join(model).display().to_string()))?;
    let forward: Forward = match model {
        "dinov2-s14" => {
            let m = Dinov2::load(&checkpoint, Dinov2Options::default(), &device)?;
            Box::new(move |x| m.embed(x))
        }
        "clip-l14" => {
            let options = ClipOptions {
                vision: true,
                text: false,
            };
            let m = Clip::load(&checkpoint, options, &device)?;
            Box::new(move |x| m.embed_images(x))
        }
        other => return Err(format!("unknown model {other}").into()),
    };
    let x = Tensor::randn(0f32, 1f32, (args.batch, 3, 224, 224), &device)?;
    for _ in 0..2 {
        forward(&x)?;
    }
    let mut times = Vec::with_capacity(args.iters.into());
    for _ in 0..args.iters {
        let t = Instant::now();
        forward(&x)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let json = serde_json::json!({
        "images_per_s": args.batch as f64 / median,
        "median_s": median,
        "times_s": times,
        "peak_rss_mib": peak_rss_mib(),
        "threads": candle_core::utils::get_num_threads(),
    });
    println!("{json}");
    Ok(())
}
