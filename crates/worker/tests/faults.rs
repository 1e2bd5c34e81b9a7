//! Contract and fault tests of the client against the test worker (`scrbench-test-worker`): every
//! failure of `adapters/PROTOCOL.md` ends as specified there, and no request is served twice.
//! Timeouts and backoff are short so the whole file runs in a few seconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use worker::{
    DetectRequest, Error, FailureKind, GenerateRequest, ReferenceImage, Reply, Worker, WorkerConfig,
};

const TEST_WORKER: &str = env!("CARGO_BIN_EXE_scrbench-test-worker");

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn events_file(&self) -> PathBuf {
        self.path().join("events.jsonl")
    }

    fn logs(&self) -> PathBuf {
        self.path().join("logs")
    }

    /// A configuration running the test worker with `args`, fast timeouts and backoff.
    fn config(&self, args: &[&str]) -> WorkerConfig {
        let mut command = vec![
            TEST_WORKER.into(),
            "--log".into(),
            self.events_file().into_os_string(),
        ];
        command.extend(args.iter().map(Into::into));
        let mut config = WorkerConfig::new("test-model", "test", command, self.logs());
        config.startup_timeout = Duration::from_secs(10);
        config.request_timeout = Duration::from_secs(10);
        config.shutdown_timeout = Duration::from_secs(5);
        config.backoff = Duration::from_millis(10);
        config.backoff_max = Duration::from_millis(40);
        config
    }

    fn request(&self, label: &str) -> GenerateRequest {
        GenerateRequest {
            id: label.to_owned(),
            prompt: format!("a cat and a dog, {label}"),
            format: "plain".into(),
            references: Vec::new(),
            seed: 42,
            width: 12,
            height: 8,
            steps: 2,
            guidance: 3.5,
            output: self.path().join(format!("{label}.png")),
        }
    }

    /// The test worker's events (`start`, `received`, `replied`).
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.events_file())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("event line"))
            .collect()
    }

    fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == event).count()
    }

    fn received(&self, label: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "received" && e["label"] == label)
            .count()
    }

    /// Replies the worker produced normally (not a deliberate fault) for `label`.
    fn served(&self, label: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| {
                e["event"] == "replied"
                    && e["label"] == label
                    && e["ok"] == true
                    && e["mode"] == "normal"
            })
            .count()
    }

    fn pids(&self) -> Vec<u32> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "start")
            .map(|e| e["pid"].as_u64().expect("pid") as u32)
            .collect()
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.logs()) {
            for entry in entries.flatten() {
                text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        text
    }
}

fn assert_image(reply: &Reply, width: u32, height: u32) {
    let file = reply.file.as_ref().expect("file");
    let image = image::open(file).expect("decodes");
    assert_eq!((image.width(), image.height()), (width, height));
}

/// Neither running nor a zombie: its `/proc` entry is gone once it was reaped.
fn assert_gone(pid: u32) {
    #[cfg(target_os = "linux")]
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "worker pid {pid} is still there (running or a zombie)"
    );
    let _ = pid;
}

#[test]
fn the_handle_is_shareable_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Worker>();
}

#[test]
fn serves_requests_then_shuts_down_cleanly_and_reaps() {
    let fx = Fixture::new();
    let worker = Worker::new(fx.config(&["--progress"])).unwrap();
    for label in ["a", "b", "c"] {
        let reply = worker.generate(fx.request(label)).unwrap();
        assert!(reply.id.starts_with(&format!("{label}#")), "{}", reply.id);
        assert_image(&reply, 12, 8);
    }
    let hello = worker.hello().expect("hello recorded");
    assert_eq!((hello.adapter.as_str(), hello.protocol), ("test", 1));
    let tail = worker.stderr_tail();
    assert!(
        tail.lines.iter().any(|l| l.contains("serving c#")),
        "{tail}"
    );
    let log = tail.log.clone().expect("log file");
    let pid = fx.pids()[0];
    assert_eq!(
        log.file_name().unwrap().to_str().unwrap(),
        format!("test-model.{pid}.log")
    );
    drop(worker);
    assert_eq!(fx.count("start"), 1);
    assert!(std::fs::read_to_string(&log).unwrap().contains("shutdown"));
    assert_gone(pid);
}

#[test]
fn no_process_starts_before_the_first_request() {
    let fx = Fixture::new();
    let worker = Worker::new(fx.config(&[])).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fx.count("start"), 0);
    assert!(worker.hello().is_none());
    drop(worker);
    assert_eq!(fx.count("start"), 0);
}

#[test]
fn start_waits_for_hello() {
    let fx = Fixture::new();
    let mut config = fx.config(&["--smoke"]);
    config.smoke = true;
    let worker = Worker::new(config).unwrap();
    let hello = worker.start().unwrap();
    assert!(hello.smoke);
    assert_eq!(hello.capabilities.max_in_flight, 1);
    assert_eq!(fx.count("start"), 1);
}

#[test]
fn a_crash_at_start_is_retried_with_backoff_then_given_up() {
    let fx = Fixture::new();
    let mut config = fx.config(&["--start", "crash"]);
    config.max_restarts = 3;
    let worker = Worker::new(config).unwrap();
    let error = worker.generate(fx.request("a")).unwrap_err();
    let Error::GaveUp { reason, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(reason.kind, FailureKind::Start);
    let message = error.to_string();
    assert!(message.contains("start 3 of at most 3"), "{message}");
    assert!(message.contains("exited"), "{message}");
    assert!(
        message.contains("crashing at start (deliberately)"),
        "{message}"
    );
    assert_eq!(fx.count("start"), 3);
    // Given up for good: later requests fail at once, nothing is started again.
    let again = worker.generate(fx.request("b")).unwrap_err();
    assert!(matches!(again, Error::GaveUp { .. }), "{again}");
    assert_eq!(fx.count("start"), 3);
    for pid in fx.pids() {
        assert_gone(pid);
    }
}

#[test]
fn a_crash_once_at_start_recovers() {
    let fx = Fixture::new();
    let worker = Worker::new(fx.config(&["--start", "crash-once"])).unwrap();
    assert_image(&worker.generate(fx.request("a")).unwrap(), 12, 8);
    assert_eq!(fx.count("start"), 2);
}

#[test]
fn a_hang_at_start_is_killed_after_the_startup_timeout() {
    let fx = Fixture::new();
    let mut config = fx.config(&["--start", "hang-once"]);
    config.startup_timeout = Duration::from_millis(300);
    let worker = Worker::new(config).unwrap();
    let started = Instant::now();
    assert_image(&worker.generate(fx.request("a")).unwrap(), 12, 8);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(fx.count("start"), 2);
    assert_gone(fx.pids()[0]);
}

#[test]
fn a_slow_start_within_the_timeout_is_fine_beyond_it_is_restarted() {
    let fx = Fixture::new();
    let mut config = fx.config(&["--start", "slow:200"]);
    config.startup_timeout = Duration::from_secs(5);
    let worker = Worker::new(config).unwrap();
    worker.generate(fx.request("a")).unwrap();
    assert_eq!(fx.count("start"), 1);
    drop(worker);

    let fx = Fixture::new();
    let mut config = fx.config(&["--start", "slow-once:2000"]);
    config.startup_timeout = Duration::from_millis(300);
    let worker = Worker::new(config).unwrap();
    worker.generate(fx.request("a")).unwrap();
    assert_eq!(fx.count("start"), 2);
    let log = fx.log_text();
    assert!(log.contains("slow start: 2000 ms"), "{log}");
}

#[test]
fn garbage_before_hello_is_a_failed_start() {
    let fx = Fixture::new();
    let mut config = fx.config(&["--start", "garbage"]);
    config.max_restarts = 2;
    let worker = Worker::new(config).unwrap();
    let error = worker.generate(fx.request("a")).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::GaveUp { .. }), "{message}");
    assert!(message.contains("Loading checkpoint shards"), "{message}");
    assert_eq!(fx.count("start"), 2);
}

#[test]
fn a_wrong_hello_gives_up_at_once() {
    for (args, smoke, expected) in [
        (
            &["--start", "wrong-adapter"][..],
            false,
            "adapter `somebody-else`",
        ),
        (&["--protocol", "2"][..], false, "protocol 2"),
        (&[][..], true, "smoke = false"),
    ] {
        let fx = Fixture::new();
        let mut config = fx.config(args);
        config.smoke = smoke;
        let worker = Worker::new(config).unwrap();
        let error = worker.generate(fx.request("a")).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::GaveUp { .. }), "{message}");
        assert!(message.contains(expected), "{message}");
        assert_eq!(fx.count("start"), 1, "{message}");
    }
}

#[test]
fn a_command_that_does_not_exist_is_a_failed_start() {
    let fx = Fixture::new();
    let mut config = fx.config(&[]);
    config.command = vec![fx.path().join("no-such-worker").into()];
    config.max_restarts = 2;
    let worker = Worker::new(config).unwrap();
    let message = worker.generate(fx.request("a")).unwrap_err().to_string();
    assert!(message.contains("cannot start"), "{message}");
    assert!(message.contains("no-such-worker"), "{message}");
}

#[test]
fn a_crash_mid_request_is_retried_on_a_new_process() {
    let fx = Fixture::new();
    let worker = Worker::new(fx.config(&["--fault", "a=crash-once"])).unwrap();
    assert_image(&worker.generate(fx.request("a")).unwrap(), 12, 8);
    assert_eq!(fx.count("start"), 2);
    assert_eq!(fx.received("a"), 2);
    assert_eq!(fx.served("a"), 1);
}

#[test]
fn a_request_that_always_crashes_fails_with_the_stderr_tail_and_the_rest_goes_on() {
    let fx = Fixture::new();
    let worker = Worker::new(fx.config(&["--fault", "bad=crash"])).unwrap();
    worker.generate(fx.request("before")).unwrap();
    let error = worker.generate(fx.request("bad")).unwrap_err();
    let Error::Failed { attempts, last, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(*attempts, 3);
    assert_eq!(last.kind, FailureKind::Exited);
    let message = error.to_string();
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("crashing on bad#"), "{message}");
    assert!(message.contains("worker stderr, last"), "{message}");
    assert_eq!(fx.received("bad"), 3);
    worker.generate(fx.request("after")).unwrap();
    assert_eq!(fx.count("start"), 4);
}

#[test]
fn a_worker_that_crashes_on_every_request_is_given_up() {
    let fx = Fixture::new();
    let mut config = fx.config(&["--fault", "*=crash"]);
    config.max_failures = 4;
    let worker = Worker::new(config).unwrap();
    // Three attempts, three crashes: this request fails, the worker is not given up yet.
    let first = worker.generate(fx.request("a")).unwrap_err();
    assert!(
        matches!(first, Error::Failed { attempts: 3, .. }),
        "{first}"
    );
    // The fourth crash in a row without a result gives the worker up, and every later request.
    let second = worker.generate(fx.request("b")).unwrap_err();
    assert!(matches!(second, Error::GaveUp { .. }), "{second}");
    let message = second.to_string();
    assert!(message.contains("4 failures in a row"), "{message}");
    assert!(message.contains("crashing on b#"), "{message}");
    let third = worker.generate(fx.request("c")).unwrap_err();
    assert!(matches!(third, Error::GaveUp { .. }), "{third}");
    assert_eq!(fx.count("start"), 4, "no start after giving up");
    assert_eq!(fx.received("c"), 0);
}

#[test]
fn a_hung_request_is_killed_after_the_request_timeout_and_retried() {
    let fx = Fixture::new();
    let mut config = fx.config(&["--fault", "a=hang-once"]);
    config.request_timeout = Duration::from_millis(1000);
    let worker = Worker::new(config).unwrap();
    let started = Instant::now();
    assert_image(&worker.generate(fx.request("a")).unwrap(), 12, 8);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(fx.count("start"), 2);
    assert_gone(fx.pids()[0]);
    let log = fx.log_text();
    assert!(log.contains("hanging on a#"), "{log}");
}

#[test]
fn garbage_on_stdout_kills_and_retries() {
    let fx = Fixture::new();
    let worker = Worker::new(fx.config(&["--fault", "a=garbage-once"])).unwrap();
    assert_image(&worker.generate(fx.request("a")).unwrap(), 12, 8);
    assert_eq!(fx.count("start"), 2);
    assert_eq!(fx.served("a"), 1);

    let fx = Fixture::new();
    let worker = Worker::new(fx.config(&["--fault", "a=garbage"])).unwrap();
    let error = worker.generate(fx.request("a")).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("protocol error"), "{message}");
    assert!(message.contains("step 1/28"), "{message}");
}

#[test]
fn a_wrong_size_or_non_image_result_is_a_failed_attempt_never_a_result() {
    let fx = Fixture::new();
    let worker = Worker::new(fx.config(&[
        "--fault",
        "wide=wrong-size",
        "--fault",
        "text=not-image",
        "--fault",
        "gone=missing",
        "--fault",
        "once=not-image-once",
    ]))
    .unwrap();
    for (label, expected) in [
        ("wide", "13×8, but 12×8 was requested"),
        ("text", "not a decodable image"),
        ("gone", "does not exist"),
    ] {
        let error = worker.generate(fx.request(label)).unwrap_err();
        let Error::Failed { last, attempts, .. } = &error else {
            panic!("{error}")
        };
        assert_eq!((last.kind, *attempts), (FailureKind::InvalidResult, 3));
        let message = error.to_string();
        assert!(message.contains(expected), "{message}");
        assert_eq!(fx.received(label), 3);
    }
    assert_image(&worker.generate(fx.request("once")).unwrap(), 12, 8);
    assert_eq!(fx.received("once"), 2);
    // Bad results are the request's fault, not the worker's: no restart.
    assert_eq!(fx.count("start"), 1);
}

#[test]
fn ok_false_is_retried_on_the_same_worker() {
    let fx = Fixture::new();
    let worker =
        Worker::new(fx.config(&["--fault", "a=refuse-once", "--fault", "b=refuse"])).unwrap();
    assert_image(&worker.generate(fx.request("a")).unwrap(), 12, 8);
    let error = worker.generate(fx.request("b")).unwrap_err();
    let Error::Failed { last, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(last.kind, FailureKind::Refused);
    assert!(error.to_string().contains("refusing b#"), "{error}");
    assert_eq!(fx.count("start"), 1);
}

#[test]
fn a_worker_that_ignores_shutdown_is_killed_and_reaped() {
    let fx = Fixture::new();
    let mut config = fx.config(&["--ignore-shutdown"]);
    config.shutdown_timeout = Duration::from_millis(200);
    let worker = Worker::new(config).unwrap();
    worker.generate(fx.request("a")).unwrap();
    let started = Instant::now();
    drop(worker);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_gone(fx.pids()[0]);
}

#[test]
fn detect_returns_the_boxes() {
    let fx = Fixture::new();
    let worker = Worker::new(fx.config(&[])).unwrap();
    let boxes = worker
        .detect(DetectRequest {
            id: "d".into(),
            image: fx.path().join("x.png"),
            queries: vec!["cat".into(), "dog".into()],
        })
        .unwrap();
    assert_eq!(boxes.len(), 2);
    assert_eq!(boxes[1].query, 1);
}

#[test]
fn references_reach_the_worker_as_absolute_paths() {
    let fx = Fixture::new();
    let reference = fx.path().join("cat.png");
    image::RgbImage::new(2, 2).save(&reference).unwrap();
    let worker = Worker::new(fx.config(&[])).unwrap();
    let mut request = fx.request("a");
    request.references = vec![ReferenceImage {
        name: "cat".into(),
        caption: "cat".into(),
        idip: false,
        path: reference,
    }];
    worker.generate(request).unwrap();
    let mut request = fx.request("b");
    request.references = vec![ReferenceImage {
        name: "cat".into(),
        caption: "cat".into(),
        idip: false,
        path: "relative/cat.png".into(),
    }];
    let error = worker.generate(request).unwrap_err();
    assert!(
        error.to_string().contains("not an absolute path"),
        "{error}"
    );
}

#[test]
fn a_pipelined_request_behind_a_crash_is_not_charged() {
    let fx = Fixture::new();
    let mut config = fx.config(&[
        "--max-in-flight",
        "2",
        "--work-ms",
        "300",
        "--fault",
        "a=crash",
    ]);
    config.attempts = 1;
    let worker = Arc::new(Worker::new(config).unwrap());
    worker.start().unwrap();
    let first = {
        let (worker, request) = (worker.clone(), fx.request("a"));
        std::thread::spawn(move || worker.generate(request))
    };
    std::thread::sleep(Duration::from_millis(100));
    // `b` waits in the worker's stdin while `a` is being served, and `a` crashes the worker.
    let second = worker.generate(fx.request("b"));
    let first = first.join().unwrap();
    assert!(matches!(first, Err(Error::Failed { .. })), "{first:?}");
    assert_image(&second.unwrap(), 12, 8);
    assert_eq!(fx.count("start"), 2);
    assert_eq!(fx.served("b"), 1);
}

#[test]
fn a_concurrent_sweep_with_every_fault_serves_each_request_at_most_once() {
    let fx = Fixture::new();
    let mut config = fx.config(&[
        "--max-in-flight",
        "2",
        "--fault",
        "r1=crash-once",
        "--fault",
        "r2=hang-once",
        "--fault",
        "r3=garbage-once",
        "--fault",
        "r4=refuse-once",
        "--fault",
        "r5=wrong-size",
        "--fault",
        "r6=not-image-once",
        "--fault",
        "r7=crash",
    ]);
    config.request_timeout = Duration::from_millis(1000);
    let worker = Arc::new(Worker::new(config).unwrap());
    let labels: Vec<String> = (0..16).map(|i| format!("r{i}")).collect();
    let results: Vec<(String, Result<Reply, Error>)> = std::thread::scope(|scope| {
        let chunks: Vec<_> = labels
            .chunks(4)
            .map(|chunk| {
                let worker = worker.clone();
                let fx = &fx;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|label| (label.clone(), worker.generate(fx.request(label))))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let events = fx.events();
    for (label, result) in &results {
        let should_fail = label == "r5" || label == "r7";
        assert_eq!(result.is_err(), should_fail, "{label}: {result:?}");
        let Ok(reply) = result else { continue };
        assert_image(reply, 12, 8);
        // Once a result is accepted, its request is never sent again. (A worker killed for
        // garbage may have served a request queued behind the culprit whose reply was then
        // discarded; that request is served again, so "served" can exceed 1 before acceptance.)
        let accepted = events
            .iter()
            .position(|e| e["event"] == "replied" && e["id"] == reply.id.as_str())
            .unwrap_or_else(|| panic!("{label}: no reply {} in the worker's log", reply.id));
        let again = events[accepted..]
            .iter()
            .filter(|e| e["event"] == "received" && e["label"] == label.as_str())
            .count();
        assert_eq!(
            again, 0,
            "{label} was sent again after its result was accepted"
        );
        assert!(fx.served(label) >= 1, "{label}");
    }
    assert_eq!(fx.served("r5") + fx.served("r7"), 0);
}
