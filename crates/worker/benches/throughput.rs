//! Throughput of the worker client: the gap between the worker's reply and the next request
//! reaching it, the time a GPU would sit idle waiting for scrbench (goal: < 20 ms).
//!
//! ```sh
//! cargo bench -p worker --bench throughput
//! ```
//!
//! The test worker (`scrbench-test-worker`) stands in for the model: each request takes
//! `--work-ms` and writes a 512×512 PNG of random pixels (so writing and checking it costs at least
//! what a photograph does); the worker timestamps, on its own monotonic clock, when
//! it sent each reply and when the next request line arrived, and records the difference
//! (`gap_us`) in its event log. Rows:
//!
//! - **client**: callers on threads loop over [`Worker::generate`] (which also decodes and checks
//!   every image), as the pipeline's generate threads do;
//! - **pipeline** (when a `scrbench` binary of the same profile and the shared dataset exist, e.g.
//!   after `cargo build --release -p scrbench`): a real `scrbench run` of 45 items with a worker
//!   model, so the gap includes storing, inspecting and the next key lookups.
//!
//! With `max_in_flight` 2 and two callers the next request already waits in the worker's stdin
//! when it replies, so the gap is the worker's own read; with 1 it is a full round trip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use worker::{GenerateRequest, Worker, WorkerConfig};

const TEST_WORKER: &str = env!("CARGO_BIN_EXE_scrbench-test-worker");
/// Simulated model time per request (client rows).
const WORK_MS: u64 = 20;
/// Simulated model time per request in the pipeline rows: still ~100× shorter than a FLUX image,
/// but long enough that the store's fsyncs on this disk do not decide the figure.
const PIPELINE_WORK_MS: u64 = 100;
const SIZE: u32 = 512;

struct Row {
    kind: &'static str,
    work_ms: u64,
    max_in_flight: usize,
    callers: usize,
    requests: usize,
    gaps_us: Vec<u64>,
    wall: Duration,
}

fn events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn gaps(path: &Path) -> Vec<u64> {
    let mut gaps: Vec<u64> = events(path)
        .iter()
        .filter(|e| e["event"] == "received")
        .filter_map(|e| e["gap_us"].as_u64())
        .collect();
    gaps.sort_unstable();
    gaps
}

fn client(max_in_flight: usize, callers: usize, requests: usize) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("events.jsonl");
    let command = vec![
        TEST_WORKER.into(),
        "--log".into(),
        log.clone().into_os_string(),
        "--work-ms".into(),
        WORK_MS.to_string().into(),
        "--max-in-flight".into(),
        max_in_flight.to_string().into(),
        "--noise".into(),
    ];
    let config = WorkerConfig::new("bench", "test", command, dir.path().join("logs"));
    let worker = Arc::new(Worker::new(config).expect("worker"));
    worker.start().expect("the test worker starts");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for caller in 0..callers {
            let worker = worker.clone();
            let dir = dir.path();
            scope.spawn(move || {
                for i in (caller..requests).step_by(callers) {
                    let request = GenerateRequest {
                        id: format!("r{i}"),
                        prompt: format!("prompt {i}"),
                        format: "plain".into(),
                        references: Vec::new(),
                        seed: i as u64,
                        width: SIZE,
                        height: SIZE,
                        steps: 28,
                        guidance: 3.5,
                        output: dir.join(format!("{i}.png")),
                    };
                    worker.generate(request).expect("served");
                }
            });
        }
    });
    let wall = started.elapsed();
    drop(worker);
    Row {
        kind: "client",
        work_ms: WORK_MS,
        max_in_flight,
        callers,
        requests,
        gaps_us: gaps(&log),
        wall,
    }
}

/// The floor: the test worker driven without the client, every request written at once by a
/// thread and the replies read by another (no validation, no supervision).
fn direct(requests: usize) -> Row {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("events.jsonl");
    let mut child = Command::new(TEST_WORKER)
        .arg("--log")
        .arg(&log)
        .args(["--work-ms", &WORK_MS.to_string(), "--noise"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the test worker starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("hello");
    let started = Instant::now();
    let out = dir.path().to_owned();
    let writer = std::thread::spawn(move || {
        for i in 0..requests {
            let request = worker::Message::Generate(GenerateRequest {
                id: format!("r{i}"),
                prompt: format!("prompt {i}"),
                format: "plain".into(),
                references: Vec::new(),
                seed: i as u64,
                width: SIZE,
                height: SIZE,
                steps: 28,
                guidance: 3.5,
                output: out.join(format!("{i}.png")),
            });
            stdin
                .write_all(request.to_line().as_bytes())
                .expect("write");
        }
        stdin
    });
    for _ in 0..requests {
        line.clear();
        stdout.read_line(&mut line).expect("a result");
    }
    let wall = started.elapsed();
    drop(writer.join().expect("writer"));
    child.wait().expect("the test worker exits");
    Row {
        kind: "floor (no client)",
        work_ms: WORK_MS,
        max_in_flight: requests,
        callers: 1,
        requests,
        gaps_us: gaps(&log),
        wall,
    }
}

/// A `scrbench run` of 15 prompts × 3 seeds with a worker model, if the binary and data exist.
fn pipeline(scrbench: &Path, data: &Path, max_in_flight: usize, callers: usize) -> Option<Row> {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("events.jsonl");
    let adapter = dir.path().join("adapter");
    std::fs::create_dir_all(&adapter).ok()?;
    let command = serde_json::json!([
        TEST_WORKER,
        "--log",
        log,
        "--work-ms",
        PIPELINE_WORK_MS.to_string(),
        "--max-in-flight",
        max_in_flight.to_string(),
        "--noise"
    ]);
    let manifest = format!(
        "name: test\nversion: 0.1.0\nkind: generator\nprompt_format: {{kind: plain}}\n\
         defaults: {{width: {SIZE}, height: {SIZE}, steps: 28, guidance: 3.5}}\n\
         command: {command}\nmax_in_flight: {max_in_flight}\n"
    );
    std::fs::write(adapter.join("adapter.yaml"), manifest).ok()?;
    let study = format!(
        "study: bench\nbenchmark: {}\nseeds: [42, 43, 44]\nconcurrency: {{generate: {callers}}}\n\
         models:\n  w: {{adapter: worker, dir: adapter}}\n",
        data.display()
    );
    let config = dir.path().join("study.yaml");
    std::fs::write(&config, study).ok()?;
    let prompts: Vec<String> = (1..=15)
        .map(|n| {
            let scene = ["no_interaction", "occlusion", "interaction"][(n - 1) % 15 / 5];
            format!("{n:02}_{scene}")
        })
        .collect();
    let started = Instant::now();
    let output = Command::new(scrbench)
        .arg("--config")
        .arg(&config)
        .args(["run", "--json", "--prompts", &prompts.join(",")])
        .env("RUST_LOG", "warn")
        .output()
        .ok()?;
    let wall = started.elapsed();
    if !output.status.success() {
        eprintln!(
            "scrbench run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    Some(Row {
        kind: "pipeline",
        work_ms: PIPELINE_WORK_MS,
        max_in_flight,
        callers,
        requests: 45,
        gaps_us: gaps(&log),
        wall,
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let mut rows = vec![direct(200)];
    for (max_in_flight, callers) in [(1, 1), (1, 2), (2, 2)] {
        rows.push(client(max_in_flight, callers, 200));
    }
    let exe = PathBuf::from(TEST_WORKER);
    let scrbench = exe.with_file_name("scrbench");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/p13n-workshop");
    if scrbench.is_file() && data.is_dir() {
        for (max_in_flight, callers) in [(1, 1), (2, 2)] {
            rows.extend(pipeline(&scrbench, &data, max_in_flight, callers));
        }
    } else {
        eprintln!(
            "(no pipeline rows: build {} first, and have the dataset at {})",
            scrbench.display(),
            data.display()
        );
    }
    println!(
        "{SIZE}×{SIZE} PNG of random pixels per request; gap = the worker starts writing its reply → \
         the next request is read (worker's clock)\n"
    );
    println!(
        "| run | work (ms) | max_in_flight | callers | requests | gap median (ms) | gap p90 (ms) | gap max (ms) | wall − work, per request (ms) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let floor = Duration::from_millis(row.work_ms) * row.requests as u32;
        let overhead = row.wall.saturating_sub(floor).as_secs_f64() * 1000.0 / row.requests as f64;
        println!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.2} |",
            row.kind,
            row.work_ms,
            row.max_in_flight,
            row.callers,
            row.requests,
            percentile(&row.gaps_us, 0.5),
            percentile(&row.gaps_us, 0.9),
            percentile(&row.gaps_us, 1.0),
            overhead
        );
    }
}
