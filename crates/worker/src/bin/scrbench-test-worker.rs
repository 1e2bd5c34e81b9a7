//! A protocol-1 worker for the contract and fault tests and the throughput benchmark. It serves
//! `generate` (a solid-colour PNG of the requested size) and `detect` (one whole-image box per
//! query), and misbehaves on request.
//!
//! ```text
//! scrbench-test-worker [--adapter NAME] [--smoke] [--max-in-flight N] [--protocol N]
//!                      [--log FILE] [--start MODE] [--fault LABEL=MODE]... [--work-ms MS]
//!                      [--progress] [--ignore-shutdown] [--noise]
//! ```
//!
//! - `--log FILE`: appends one JSON line per event (`start`, `received`, `replied`) with the pid,
//!   the request id and label (the id before `#`), and for `received` the time since this process
//!   began writing its last reply (`gap_us`, absent for its first request). `*-once` modes need it: they fire
//!   only when the log shows no earlier start (start modes) or receipt of the label (faults).
//! - `--start MODE`: `normal`, `crash`, `crash-once`, `hang`, `hang-once`, `slow:MS`,
//!   `slow-once:MS`, `garbage`, `wrong-adapter`.
//! - `--fault LABEL=MODE` for requests labelled LABEL (`*` = every request): `crash`, `hang`,
//!   `garbage`, `wrong-size`, `not-image`, `missing`, `refuse`, each also as `…-once`, and
//!   `slow:MS`.
//!
//! - `--noise`: random pixels instead of a solid colour (realistic PNG encoding and decoding cost).
//!
//! Arguments can also come from the environment variable `SCRBENCH_TEST_WORKER_ARGS`
//! (whitespace-separated, read before the command line).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use worker::protocol::{Capabilities, GenerateRequest, Hello, Message, Progress, Reply};

#[derive(Default)]
struct Options {
    adapter: String,
    smoke: bool,
    max_in_flight: usize,
    protocol: u32,
    log: Option<PathBuf>,
    start: String,
    faults: BTreeMap<String, String>,
    work: Duration,
    progress: bool,
    ignore_shutdown: bool,
    noise: bool,
}

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        adapter: "test".into(),
        max_in_flight: 1,
        protocol: 1,
        start: "normal".into(),
        ..Options::default()
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--adapter" => options.adapter = value()?,
            "--smoke" => options.smoke = true,
            "--progress" => options.progress = true,
            "--ignore-shutdown" => options.ignore_shutdown = true,
            "--noise" => options.noise = true,
            "--max-in-flight" => {
                options.max_in_flight = value()?.parse().map_err(|e| format!("{e}"))?
            }
            "--protocol" => options.protocol = value()?.parse().map_err(|e| format!("{e}"))?,
            "--log" => options.log = Some(value()?.into()),
            "--start" => options.start = value()?,
            "--work-ms" => {
                options.work = Duration::from_millis(value()?.parse().map_err(|e| format!("{e}"))?)
            }
            "--fault" => {
                let spec = value()?;
                let (label, mode) = spec
                    .rsplit_once('=')
                    .ok_or_else(|| format!("--fault {spec}: expected LABEL=MODE"))?;
                options.faults.insert(label.to_owned(), mode.to_owned());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

/// The worker's own view of its log file.
struct Log {
    path: Option<PathBuf>,
}

impl Log {
    fn write(&self, mut event: Value) {
        let Some(path) = &self.path else { return };
        event["pid"] = json!(std::process::id());
        event["unix_us"] = json!(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64)
        );
        let line = format!("{event}\n");
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = appended {
            eprintln!("test-worker: cannot write {}: {e}", path.display());
        }
    }

    /// Events recorded so far, by any process.
    fn events(&self) -> Vec<Value> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn count(&self, event: &str, label: Option<&str>) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == event && label.is_none_or(|l| e["label"] == l))
            .count()
    }
}

fn say(message: &str) {
    eprintln!("test-worker[{}]: {message}", std::process::id());
}

fn send(message: &Message) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(message.to_line().as_bytes());
    let _ = stdout.flush();
}

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// `mode` with `-once` stripped (`slow-once:MS` → `slow:MS`), and whether it fires now (`-once`:
/// only when `earlier` is 0).
fn fires(mode: &str, earlier: usize) -> (String, bool) {
    let (name, argument) = match mode.split_once(':') {
        Some((name, argument)) => (name, Some(argument)),
        None => (mode, None),
    };
    let (name, fire) = match name.strip_suffix("-once") {
        Some(base) => (base, earlier == 0),
        None => (name, true),
    };
    match argument {
        Some(argument) => (format!("{name}:{argument}"), fire),
        None => (name.to_owned(), fire),
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::var("SCRBENCH_TEST_WORKER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    args.extend(std::env::args().skip(1));
    let options = match parse(args) {
        Ok(options) => options,
        Err(e) => {
            say(&e);
            return ExitCode::from(2);
        }
    };
    let log = Log {
        path: options.log.clone(),
    };
    let starts = log.count("start", None);
    log.write(json!({"event": "start"}));
    say(&format!("starting (start mode {})", options.start));

    let (start, fire) = fires(&options.start, starts);
    if fire {
        if let Some(ms) = start.strip_prefix("slow:") {
            let ms: u64 = ms.parse().unwrap_or(1000);
            say(&format!("slow start: {ms} ms"));
            std::thread::sleep(Duration::from_millis(ms));
        }
        match start.as_str() {
            "crash" => {
                say("crashing at start (deliberately)");
                return ExitCode::from(3);
            }
            "hang" => {
                say("hanging at start (deliberately)");
                hang();
            }
            "garbage" => {
                println!("Loading checkpoint shards: 100%");
            }
            _ => {}
        }
    }
    let adapter = if fire && start == "wrong-adapter" {
        "somebody-else".to_owned()
    } else {
        options.adapter.clone()
    };
    send(&Message::Hello(Hello {
        protocol: options.protocol,
        adapter,
        adapter_version: Some("0.1.0".into()),
        model: [("id".to_owned(), json!("test/solid-colour"))].into(),
        device: Some("cpu".into()),
        smoke: options.smoke,
        capabilities: Capabilities {
            requests: vec!["generate".into(), "detect".into()],
            max_in_flight: options.max_in_flight,
        },
    }));

    let mut last_reply: Option<Instant> = None;
    let stdin = std::io::stdin().lock();
    for line in stdin.lines() {
        let Ok(line) = line else { break };
        let received = Instant::now();
        let message = match Message::parse(&line) {
            Ok(message) => message,
            Err(e) => {
                say(&format!("not a protocol line: {e}"));
                return ExitCode::from(4);
            }
        };
        let request = match message {
            Message::Shutdown(_) if options.ignore_shutdown => {
                say("ignoring shutdown (deliberately)");
                hang();
            }
            Message::Shutdown(_) => {
                say("shutdown");
                return ExitCode::SUCCESS;
            }
            Message::Generate(request) => request,
            Message::Detect(request) => {
                let detections = (0..request.queries.len())
                    .map(|query| worker::Detection {
                        query,
                        score: 0.9,
                        bbox: [0.0, 0.0, 8.0, 8.0],
                    })
                    .collect();
                send(&Message::Result(Reply {
                    id: request.id,
                    ok: true,
                    detections: Some(detections),
                    ..Reply::default()
                }));
                last_reply = Some(Instant::now());
                continue;
            }
            other => {
                say(&format!("unexpected `{}` message", other.kind()));
                return ExitCode::from(4);
            }
        };
        let id = request.id.clone();
        let label = id
            .split_once('#')
            .map_or(id.as_str(), |(l, _)| l)
            .to_owned();
        let earlier = log.count("received", Some(&label));
        let gap = last_reply.map(|t| received.duration_since(t).as_micros() as u64);
        log.write(json!({"event": "received", "id": id, "label": label, "gap_us": gap}));
        say(&format!("serving {id}"));
        let mode = options
            .faults
            .get(&label)
            .or_else(|| options.faults.get("*"))
            .map_or("normal", String::as_str);
        let (mode, fire) = fires(mode, earlier);
        let mode = if fire { mode } else { "normal".to_owned() };
        if options.progress {
            send(&Message::Progress(Progress {
                id: Some(id.clone()),
                step: Some(1),
                steps: Some(2),
            }));
        }
        std::thread::sleep(options.work);
        if let Some(ms) = mode.strip_prefix("slow:") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(1000)));
        }
        let reply = match mode.as_str() {
            "crash" => {
                say(&format!("crashing on {id} (deliberately)"));
                return ExitCode::from(3);
            }
            "hang" => {
                say(&format!("hanging on {id} (deliberately)"));
                hang();
            }
            "garbage" => {
                say(&format!(
                    "writing garbage on stdout for {id} (deliberately)"
                ));
                println!("step 1/28 {id}");
                let _ = std::io::stdout().flush();
                serve(&request, 0, options.noise)
            }
            "refuse" => Reply {
                id: id.clone(),
                ok: false,
                error: Some(format!("refusing {id} (deliberately)")),
                ..Reply::default()
            },
            "wrong-size" => serve(&request, 1, options.noise),
            "not-image" => match std::fs::write(&request.output, b"this is not a PNG") {
                Ok(()) => ok(&request),
                Err(e) => refused(&request, &e.to_string()),
            },
            "missing" => {
                let _ = std::fs::remove_file(&request.output);
                ok(&request)
            }
            _ => serve(&request, 0, options.noise),
        };
        // Logged before it is sent, so a test that got the reply finds it in the log.
        log.write(
            json!({"event": "replied", "id": id, "label": label, "ok": reply.ok, "mode": mode}),
        );
        // The clock starts before the write: once the reply is in the pipe, scrbench may run
        // before this process is scheduled again, and that wait is part of the gap.
        let replying = Instant::now();
        send(&Message::Result(reply));
        last_reply = Some(replying);
    }
    say("stdin closed");
    ExitCode::SUCCESS
}

fn ok(request: &GenerateRequest) -> Reply {
    Reply {
        id: request.id.clone(),
        ok: true,
        file: Some(request.output.clone()),
        seconds: Some(0.0),
        info: Some(json!({"device": "cpu"})),
        ..Reply::default()
    }
}

fn refused(request: &GenerateRequest, error: &str) -> Reply {
    Reply {
        id: request.id.clone(),
        ok: false,
        error: Some(error.to_owned()),
        ..Reply::default()
    }
}

/// Writes a PNG `extra` pixels wider than requested (0: the requested size): a solid colour, or
/// random pixels with `noise`.
fn serve(request: &GenerateRequest, extra: u32, noise: bool) -> Reply {
    if !request.output.is_absolute() {
        return refused(request, "the output path is not absolute");
    }
    for reference in &request.references {
        if !reference.path.is_absolute() || !reference.path.is_file() {
            return refused(
                request,
                &format!(
                    "reference {} is not an absolute path to a file",
                    reference.path.display()
                ),
            );
        }
    }
    let mut hash: u32 = 2166136261;
    for byte in request.prompt.bytes().chain(request.seed.to_le_bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(16777619);
    }
    let [r, g, b, _] = hash.to_le_bytes();
    let (width, height) = (request.width + extra, request.height);
    let image = if noise {
        // Incompressible pixels: PNG writing and decoding cost what they cost for a photograph
        // or more (a solid colour decodes in microseconds).
        let mut state = u64::from(hash) | 1;
        image::RgbImage::from_fn(width, height, |_, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let [r, g, b, ..] = state.to_le_bytes();
            image::Rgb([r, g, b])
        })
    } else {
        image::RgbImage::from_pixel(width, height, image::Rgb([r, g, b]))
    };
    match write_png(&image, &request.output) {
        Ok(()) => ok(request),
        Err(e) => refused(request, &e),
    }
}

fn write_png(image: &image::RgbImage, path: &Path) -> Result<(), String> {
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
