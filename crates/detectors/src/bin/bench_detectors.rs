//! `bench-detectors`: our OWL-ViT / OWLv2 detectors against transformers on the same real-size
//! checkpoints and images.
//!
//! For each model, `tools/parity/bench_transformers.py` writes a randomly initialised checkpoint in
//! HF format (once, under `--dir`: config, weights, image-processor config and the tiny tokenizer
//! of the detector fixtures) and times transformers on `--threads` threads; then this binary loads
//! the same checkpoint with [`OwlDetector`] in a child process (so the peak memory, VmHWM, is per
//! model) and times [`Detector::detect`] on the same work.
//!
//! The work is a fixed set of synthetic images (512² to 768², written under `--dir`) with 2 to 6
//! subject queries each, through the template `"a photo of a {}"`. One timed call is one image with
//! its queries: preprocessing, tokenisation, text and vision towers, heads and post-processing
//! (ours adds per-query NMS; transformers' `post_process_object_detection` has none). Images are
//! decoded before timing on both sides. Calls cycle through the images after `--warmup` untimed
//! calls; images/s is one over the median of `--iters` calls (default 5 for OWL-ViT and 3 for
//! OWLv2, whose 3600-patch forward takes tens of seconds on 2 threads, so that the whole run takes
//! a few minutes on a 2-core machine).
//!
//! `cargo run --release -p detectors --bin bench-detectors -- [--models owlvit-b32,owlv2-b16]
//! [--iters N] [--warmup 1] [--threads 2] [--dir /tmp/scrbench-bench]
//! [--python .venv-parity/bin/python] [--script tools/parity/bench_transformers.py] [--skip-torch]`

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use detectors::{Detector, OwlDetector, OwlOptions};
use encoders::checkpoint::{Checkpoint, ModelSpec};
use image::{Rgb, RgbImage};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: bench-detectors [--models owlvit-b32,owlv2-b16] [--iters N] [--warmup N] \
[--threads N] [--dir DIR] [--python PY] [--script PATH] [--skip-torch]";

/// Subject names of the work (six of the benchmark's reference subjects); item `i` queries the
/// first `QUERIES[i]` of them.
const SUBJECTS: [&str; 6] = [
    "siamese cat",
    "armchair",
    "backpack",
    "berry bowl",
    "cactus",
    "soda can",
];
/// Queries per image, in turn.
const QUERIES: [usize; 5] = [2, 3, 4, 5, 6];
/// Image sizes (width, height), in turn: MOSAIC's 512² and FLUX-as-run's 768², one landscape.
const SIZES: [(u32, u32); 5] = [(512, 512), (768, 768), (512, 512), (768, 512), (512, 512)];

#[derive(Debug)]
struct Args {
    models: String,
    /// Timed calls; `None`: the model's default ([`default_iters`]).
    iters: Option<usize>,
    warmup: usize,
    threads: usize,
    dir: PathBuf,
    python: PathBuf,
    script: PathBuf,
    skip_torch: bool,
    /// Internal: time our detector for one model in this process.
    ours: Option<String>,
}

impl Args {
    fn parse(raw: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut args = Self {
            models: "owlvit-b32,owlv2-b16".into(),
            iters: None,
            warmup: 1,
            threads: 2,
            dir: PathBuf::from("/tmp/scrbench-bench"),
            python: PathBuf::from(".venv-parity/bin/python"),
            script: PathBuf::from("tools/parity/bench_transformers.py"),
            skip_torch: false,
            ours: None,
        };
        let mut raw = raw.into_iter();
        while let Some(arg) = raw.next() {
            let flag = arg
                .to_str()
                .ok_or_else(|| format!("argument {arg:?} is not UTF-8"))?
                .to_owned();
            if flag == "--skip-torch" {
                args.skip_torch = true;
                continue;
            }
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.into());
            }
            let value = raw
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let text = || {
                value
                    .to_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{flag}: value is not UTF-8"))
            };
            let count = |min: usize| -> Result<usize, String> {
                let n: usize = text()?
                    .parse()
                    .map_err(|e| format!("{flag}: {e}\n{USAGE}"))?;
                if n < min {
                    return Err(format!("{flag} must be at least {min}"));
                }
                Ok(n)
            };
            match flag.as_str() {
                "--models" => args.models = text()?,
                "--iters" => args.iters = Some(count(1)?),
                "--warmup" => args.warmup = count(0)?,
                "--threads" => args.threads = count(1)?,
                "--dir" => args.dir = PathBuf::from(value),
                "--python" => args.python = PathBuf::from(value),
                "--script" => args.script = PathBuf::from(value),
                "--ours" => args.ours = Some(text()?),
                other => return Err(format!("unknown argument {other}\n{USAGE}")),
            }
        }
        Ok(args)
    }
}

fn main() -> BoxResult<()> {
    let args = match Args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(message) if message == USAGE => {
            println!("{USAGE}");
            return Ok(());
        }
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let workload = args.dir.join("detector-work");
    if let Some(model) = &args.ours {
        return time_ours(&args, model, &workload);
    }
    write_workload(&workload)?;
    let mut rows = Vec::new();
    let mut details = Vec::new();
    for model in args.models.split(',').map(str::trim) {
        let (pixels, hub) = match model {
            "owlvit-b32" => (768, "google/owlvit-base-patch32"),
            "owlv2-b16" => (960, "google/owlv2-base-patch16-ensemble"),
            other => return Err(format!("unknown model {other} (owlvit-b32, owlv2-b16)").into()),
        };
        let iters = args.iters.unwrap_or_else(|| default_iters(model));
        let dir = args.dir.join(model);
        eprintln!("{model}: checkpoint in {}", dir.display());
        let torch = if args.skip_torch {
            None
        } else {
            run_python(&args, "create", model, &dir, &workload, iters)?;
            eprintln!("{model}: timing transformers...");
            Some(run_python(&args, "time", model, &dir, &workload, iters)?)
        };
        eprintln!("{model}: timing ours...");
        let out = Command::new(std::env::current_exe()?)
            .env("RAYON_NUM_THREADS", args.threads.to_string())
            .args(["--ours", model, "--iters", &iters.to_string()])
            .args(["--warmup", &args.warmup.to_string(), "--dir"])
            .arg(&args.dir)
            .output()?;
        if !out.status.success() {
            return Err(format!("our run failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let ours: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let number = |v: &serde_json::Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
        let ours_ips = number(&ours, "images_per_s");
        let (torch_ips, torch_mem) = torch.as_ref().map_or((f64::NAN, f64::NAN), |t| {
            (number(t, "images_per_s"), number(t, "peak_rss_mib"))
        });
        rows.push(format!(
            "| {model} ({hub} shape, {pixels} px) | {iters} | {ours_ips:.3} | {torch_ips:.3} | {:.2} | {:.0} / {torch_mem:.0} |",
            ours_ips / torch_ips,
            number(&ours, "peak_rss_mib"),
        ));
        details.push(format!(
            "{model}: ours load {:.1} s, call times (s) {}, detections after NMS {}, top scores {}",
            number(&ours, "load_s"),
            ours["times_s"],
            ours["detections"],
            ours["top_scores"],
        ));
        if let Some(t) = &torch {
            details.push(format!(
                "{model}: transformers {} / torch {}, call times (s) {}, detections {}, top scores {}",
                t["transformers"].as_str().unwrap_or("?"),
                t["torch"].as_str().unwrap_or("?"),
                t["times_s"],
                t["detections"],
                t["top_scores"],
            ));
            details.push(format!(
                "{model}: max |Δ top score| ours vs transformers {:.2e}",
                top_score_gap(&ours, t)
            ));
        }
    }
    println!(
        "One image with 2–6 queries per call; median of the timed calls after {} warm-up, {} threads.",
        args.warmup, args.threads
    );
    println!();
    println!(
        "| model | calls | ours img/s | transformers img/s | ratio | peak RSS MiB ours / transformers |"
    );
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
    println!();
    for line in details {
        println!("{line}");
    }
    Ok(())
}

/// Timed calls when `--iters` is not given: an OWLv2 call takes about 14× an OWL-ViT call.
fn default_iters(model: &str) -> usize {
    if model == "owlv2-b16" { 3 } else { 5 }
}

/// The largest difference between the two sides' top score of the same call (`NaN` when the
/// lists differ in length or in which calls found nothing).
fn top_score_gap(ours: &serde_json::Value, torch: &serde_json::Value) -> f64 {
    let (Some(a), Some(b)) = (
        ours["top_scores"].as_array(),
        torch["top_scores"].as_array(),
    ) else {
        return f64::NAN;
    };
    if a.len() != b.len() {
        return f64::NAN;
    }
    a.iter()
        .zip(b)
        .fold(0.0, |worst, (x, y)| match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => f64::max(worst, (x - y).abs()),
            (None, None) => worst,
            _ => f64::NAN,
        })
}

/// A deterministic test image: a smooth background with one flat rectangle per subject (up to 6).
fn synthetic_image(width: u32, height: u32, subjects: usize) -> RgbImage {
    let mut image = RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let r = 127.0 + 100.0 * (fx / 37.0).sin() * (fy / 53.0).cos();
        let g = fx * 255.0 / (width - 1) as f32;
        let b = fy * 255.0 / (height - 1) as f32;
        Rgb([r as u8, g as u8, b as u8])
    });
    let palette = [
        [230, 40, 40],
        [40, 200, 60],
        [40, 60, 220],
        [240, 220, 30],
        [200, 40, 200],
        [30, 210, 210],
    ];
    for s in 0..subjects.min(6) as u32 {
        let (cols, col, row) = (3, s % 3, s / 3);
        let (cell_w, cell_h) = (width / cols, height / 2);
        let (x0, y0) = (col * cell_w + cell_w / 6, row * cell_h + cell_h / 5);
        for y in y0..y0 + cell_h * 3 / 5 {
            for x in x0..x0 + cell_w * 2 / 3 {
                image.put_pixel(x, y, Rgb(palette[s as usize % palette.len()]));
            }
        }
    }
    image
}

/// Writes the images and `workload.json` (read by both sides) into `dir`.
fn write_workload(dir: &Path) -> BoxResult<()> {
    std::fs::create_dir_all(dir)?;
    let mut items = Vec::new();
    for (i, (&n, &(w, h))) in QUERIES.iter().zip(&SIZES).enumerate() {
        let path = dir.join(format!("image{i}_{w}x{h}_{n}q.png"));
        synthetic_image(w, h, n).save(&path)?;
        items.push(serde_json::json!({
            "image": path.canonicalize()?,
            "subjects": &SUBJECTS[..n],
        }));
    }
    let options = OwlOptions::default();
    let json = serde_json::json!({
        "template": options.template,
        "threshold": options.threshold,
        "items": items,
    });
    std::fs::write(
        dir.join("workload.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

fn run_python(
    args: &Args,
    command: &str,
    model: &str,
    dir: &Path,
    workload: &Path,
    iters: usize,
) -> BoxResult<serde_json::Value> {
    let out = Command::new(&args.python)
        .arg(&args.script)
        .args([command, "--model", model, "--dir"])
        .arg(dir)
        .arg("--workload")
        .arg(workload.join("workload.json"))
        .args(["--iters", &iters.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
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

fn time_ours(args: &Args, model: &str, workload: &Path) -> BoxResult<()> {
    let device = Device::Cpu;
    let work: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workload.join("workload.json"))?)?;
    let options = OwlOptions {
        template: work["template"].as_str().ok_or("no template")?.to_owned(),
        threshold: work["threshold"].as_f64().ok_or("no threshold")? as f32,
        ..OwlOptions::default()
    };
    let mut items = Vec::new();
    for item in work["items"].as_array().ok_or("no items")? {
        let image = image::open(item["image"].as_str().ok_or("no image path")?)?.to_rgb8();
        let subjects: Vec<String> = item["subjects"]
            .as_array()
            .ok_or("no subjects")?
            .iter()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        items.push((image, subjects));
    }
    let started = Instant::now();
    let checkpoint =
        Checkpoint::resolve(&ModelSpec::new(args.dir.join(model).display().to_string()))?;
    let detector = OwlDetector::load(&checkpoint, options, &device)?;
    let load_s = started.elapsed().as_secs_f64();
    for i in 0..args.warmup {
        let (image, subjects) = &items[i % items.len()];
        detector.detect(image, subjects)?;
    }
    let iters = args.iters.unwrap_or_else(|| default_iters(model));
    let mut times = Vec::with_capacity(iters);
    let mut detections = Vec::with_capacity(iters);
    let mut top_scores = Vec::with_capacity(iters);
    for i in 0..iters {
        let (image, subjects) = &items[i % items.len()];
        let t = Instant::now();
        let found = detector.detect(image, subjects)?;
        times.push(t.elapsed().as_secs_f64());
        detections.push(found.len());
        top_scores.push(found.iter().map(|d| d.score).reduce(f32::max));
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    let json = serde_json::json!({
        "images_per_s": 1.0 / median,
        "median_s": median,
        "times_s": times,
        "detections": detections,
        "top_scores": top_scores,
        "load_s": load_s,
        "peak_rss_mib": peak_rss_mib(),
        "threads": candle_core::utils::get_num_threads(),
    });
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn arguments_parse_with_defaults() {
        let args = parse(&["--models", "owlv2-b16", "--iters", "3", "--skip-torch"]).unwrap();
        assert_eq!(args.models, "owlv2-b16");
        assert_eq!((args.iters, args.warmup, args.threads), (Some(3), 1, 2));
        assert_eq!(parse(&[]).unwrap().iters, None);
        assert_eq!(
            (default_iters("owlvit-b32"), default_iters("owlv2-b16")),
            (5, 3)
        );
        assert!(args.skip_torch);
        assert!(parse(&["--iters", "0"]).is_err());
        assert!(parse(&["--iters"]).is_err());
        assert!(parse(&["--frobnicate", "1"]).is_err());
    }

    #[test]
    fn work_covers_two_to_six_queries() {
        assert_eq!(QUERIES.iter().min(), Some(&2));
        assert_eq!(QUERIES.iter().max(), Some(&SUBJECTS.len()));
        for subjects in [0, 6, 9] {
            assert_eq!(synthetic_image(96, 64, subjects).dimensions(), (96, 64));
        }
    }
}
