//! The supervised client: [`Worker`] starts a worker process on first use, keeps it alive across
//! requests, pipelines up to `max_in_flight` requests, restarts it with backoff when it fails, and
//! retries each request a bounded number of times.
//!
//! # Threads
//!
//! A [`Worker`] is a handle to one **supervisor thread** that owns the child process and all
//! protocol state; callers on any number of threads talk to it through one channel. Per process
//! there are two more threads: the stdout reader (parses lines into [`Message`]s and forwards them
//! to the supervisor) and the stderr drain (appends to the log file, keeps the last lines). The
//! supervisor waits on a single channel with a deadline (start-up, the oldest open request or the
//! restart backoff), so no thread ever polls.
//!
//! # Attempts and blame
//!
//! The supervisor runs single **attempts**; the retry policy lives in the calling thread
//! ([`Worker::request`]), which also validates replies (image file and size for `generate`), so an
//! invalid result is retried like any other failed attempt and image decoding never delays the I/O
//! thread. When a process fails (exit, hang, garbage), only the oldest open request, the one the
//! worker was working on, is charged an attempt; requests queued behind it in the worker's stdin
//! are re-sent to the next process without losing an attempt.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::protocol::{
    DetectRequest, Detection, GenerateRequest, Hello, Message, PROTOCOL_VERSION, Reply, Request,
    Shutdown,
};
use crate::validate;

/// Longest stdout line accepted (a longer one is a protocol error).
const MAX_LINE: u64 = 1 << 20;
/// Longest stderr line kept in memory (the log file gets everything).
const MAX_TAIL_LINE: usize = 500;

/// How to run and supervise one worker. [`WorkerConfig::new`] fills in the protocol's defaults.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Name in logs and messages (the model name); log files are `<logs>/<name>.<pid>.log`.
    pub name: String,
    /// The adapter name the worker must announce in `hello`.
    pub adapter: String,
    /// Whether the worker must run in smoke mode (`hello.smoke` must be equal).
    pub smoke: bool,
    /// argv: program and arguments. A relative program with a `/` is taken relative to `cwd`.
    pub command: Vec<OsString>,
    /// Working directory of the worker (default: scrbench's).
    pub cwd: Option<PathBuf>,
    /// Variables added to the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    /// Folder of the per-process stderr logs (created when needed).
    pub logs: PathBuf,
    /// Longest wait for `hello` after starting (default 900 s).
    pub startup_timeout: Duration,
    /// Longest wait for one `result`, counted from when the worker can start the request (default
    /// 900 s).
    pub request_timeout: Duration,
    /// Longest wait for a clean exit after `shutdown` before the worker is killed (default 10 s).
    pub shutdown_timeout: Duration,
    /// Tries per request (default 3, at least 1).
    pub attempts: u32,
    /// Consecutive failed starts after which the worker is given up (default 5, at least 1).
    pub max_restarts: u32,
    /// Consecutive failures of a running worker (exits, hangs, protocol errors) without one
    /// successful result in between, after which it is given up (default 10, at least 1): a worker
    /// that crashes on every request stops the model instead of reloading it for every item.
    pub max_failures: u32,
    /// First restart delay; doubles per consecutive failure (default 1 s).
    pub backoff: Duration,
    /// Longest restart delay (default 60 s).
    pub backoff_max: Duration,
    /// Upper bound on the pipelining depth; the worker's `hello` sets it otherwise (default: no
    /// bound beyond the worker's).
    pub max_in_flight: Option<usize>,
    /// Stderr lines kept in memory for error messages (default 20).
    pub stderr_lines: usize,
}

impl WorkerConfig {
    /// A configuration with the protocol's defaults.
    pub fn new(
        name: impl Into<String>,
        adapter: impl Into<String>,
        command: Vec<OsString>,
        logs: impl Into<PathBuf>,
    ) -> WorkerConfig {
        WorkerConfig {
            name: name.into(),
            adapter: adapter.into(),
            smoke: false,
            command,
            cwd: None,
            env: Vec::new(),
            logs: logs.into(),
            startup_timeout: Duration::from_secs(900),
            request_timeout: Duration::from_secs(900),
            shutdown_timeout: Duration::from_secs(10),
            attempts: 3,
            max_restarts: 5,
            max_failures: 10,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_in_flight: None,
            stderr_lines: 20,
        }
    }

    /// The restart delay after `failures` consecutive failures (≥ 1): base · 2^(failures−1),
    /// capped.
    pub fn backoff_after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.backoff
            .saturating_mul(1 << doublings)
            .min(self.backoff_max)
    }
}

/// The last stderr lines of one worker process, and where its whole log is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StderrTail {
    pub log: Option<PathBuf>,
    pub lines: Vec<String>,
}

impl fmt::Display for StderrTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = match &self.log {
            Some(log) => format!("log {}", log.display()),
            None => "no log file".to_owned(),
        };
        if self.lines.is_empty() {
            return write!(f, "(worker stderr empty; {log})");
        }
        write!(f, "worker stderr, last {} lines ({log}):", self.lines.len())?;
        for line in &self.lines {
            write!(f, "\n  | {line}")?;
        }
        Ok(())
    }
}

/// Why one attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The worker could not be started, or sent no acceptable `hello` in time.
    Start,
    /// The worker exited or closed its stdout while the request was open.
    Exited,
    /// No `result` within the per-request timeout; the worker was killed.
    Hung,
    /// A stdout line that is not protocol; the worker was killed.
    Protocol,
    /// The worker answered `ok: false`.
    Refused,
    /// The result failed the client's checks (missing file, not an image, wrong size…).
    InvalidResult,
    /// The worker does not serve this request type (not retried).
    Unsupported,
}

/// One failed attempt: what happened, with the stderr tail of the process it happened on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    pub stderr: StderrTail,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n{}", self.message, self.stderr)
    }
}

/// A request that did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every attempt failed; `last` is the last attempt's failure.
    #[error("worker `{worker}`: request `{request}` failed after {attempts} attempt(s): {last}")]
    Failed {
        worker: String,
        request: String,
        attempts: u32,
        last: Box<Failure>,
    },
    /// The worker failed to start `max_restarts` times in a row, failed `max_failures` times in a
    /// row while running without one successful result, or announced itself wrongly; no request of
    /// this worker will be served.
    #[error("worker `{worker}` was given up: {reason}")]
    GaveUp {
        worker: String,
        reason: Box<Failure>,
    },
    /// The request type is not in the worker's `hello` capabilities.
    #[error("worker `{worker}`: {message}")]
    Unsupported { worker: String, message: String },
    /// The client is shutting down (or its supervisor thread is gone).
    #[error("worker `{worker}` is shut down")]
    Closed { worker: String },
    #[error("worker `{worker}`: cannot start the supervisor thread: {source}")]
    Thread {
        worker: String,
        source: std::io::Error,
    },
}

/// What the supervisor answers for one attempt.
enum Outcome {
    Reply(Reply),
    Failed(Failure),
    GaveUp(Failure),
    Closed,
}

struct Submission {
    request: Request,
    reply: Sender<Outcome>,
}

struct InFlight {
    submission: Submission,
    wire_id: String,
    sent: Instant,
}

enum Event {
    Submit(Submission),
    WaitReady(Sender<Result<Hello, Failure>>),
    Stdout {
        generation: u64,
        line: Result<Message, String>,
    },
    StdoutClosed {
        generation: u64,
        error: Option<String>,
    },
    Shutdown,
}

/// What callers can read without asking the supervisor.
#[derive(Default)]
struct Shared {
    hello: Mutex<Option<Hello>>,
    tail: Mutex<Option<Tail>>,
}

/// The stderr lines of one process, shared with its drain thread.
#[derive(Clone)]
struct Tail {
    log: Option<PathBuf>,
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl Tail {
    fn snapshot(&self) -> StderrTail {
        let lines = match self.lines.lock() {
            Ok(lines) => lines.iter().cloned().collect(),
            Err(poisoned) => poisoned.get_ref().iter().cloned().collect(),
        };
        StderrTail {
            log: self.log.clone(),
            lines,
        }
    }
}

/// A handle to one supervised worker; see the module docs. `Send + Sync`: share it (e.g. in an
/// `Arc`) between threads and call [`Worker::request`] from each. Dropping it shuts the worker
/// down (`shutdown`, at most `shutdown_timeout`, then kill) and reaps it.
pub struct Worker {
    name: String,
    attempts: u32,
    events: Sender<Event>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}

impl Worker {
    /// Starts the supervisor thread. No process is started until the first request (or
    /// [`Worker::start`]).
    pub fn new(config: WorkerConfig) -> Result<Worker, Error> {
        let (events, receiver) = channel();
        let shared = Arc::new(Shared::default());
        let name = config.name.clone();
        let attempts = config.attempts.max(1);
        let mut supervisor = Supervisor::new(config, events.clone(), receiver, shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("worker-{name}"))
            .spawn(move || supervisor.run())
            .map_err(|source| Error::Thread {
                worker: name.clone(),
                source,
            })?;
        Ok(Worker {
            name,
            attempts,
            events,
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last `hello` received, if a worker process has started.
    pub fn hello(&self) -> Option<Hello> {
        lock(&self.shared.hello).clone()
    }

    /// The current (or last) worker process's last stderr lines.
    pub fn stderr_tail(&self) -> StderrTail {
        lock(&self.shared.tail)
            .as_ref()
            .map(Tail::snapshot)
            .unwrap_or_default()
    }

    /// Starts the worker if it is not running and waits for its `hello` (restarting with backoff
    /// as for requests).
    pub fn start(&self) -> Result<Hello, Error> {
        let (sender, receiver) = channel();
        self.send(Event::WaitReady(sender))?;
        match receiver.recv() {
            Ok(Ok(hello)) => Ok(hello),
            Ok(Err(reason)) => Err(Error::GaveUp {
                worker: self.name.clone(),
                reason: Box::new(reason),
            }),
            Err(_) => Err(self.closed()),
        }
    }

    /// Sends `request` and waits for its reply, retrying failed attempts up to `attempts` times.
    /// `request`'s id is a label: the id on the wire is `<label>#<n>`, unique per attempt.
    /// The reply is `ok: true`; nothing beyond that is checked (see [`Worker::generate`]).
    pub fn request(&self, request: Request) -> Result<Reply, Error> {
        self.call(request, |_| Ok(()))
    }

    /// A `generate` request whose reply is checked: its file (the request's `output` when the
    /// reply names none) must exist, decode as an image and be exactly `width`×`height`;
    /// otherwise the attempt failed and is retried. The reply's `file` is always set.
    pub fn generate(&self, request: GenerateRequest) -> Result<Reply, Error> {
        let (output, width, height) = (request.output.clone(), request.width, request.height);
        let mut reply = self.call(Request::Generate(request), |reply| {
            let file = reply.file.as_deref().unwrap_or(&output);
            validate::check_image(file, width, height)
        })?;
        reply.file.get_or_insert(output);
        Ok(reply)
    }

    /// A `detect` request; the reply's boxes must index the queries and be finite.
    pub fn detect(&self, request: DetectRequest) -> Result<Vec<Detection>, Error> {
        let checked = request.clone();
        let reply = self.call(Request::Detect(request), |reply| match &reply.detections {
            Some(detections) => validate::check_detections(&checked, detections),
            None => Err("a detect result without `detections`".to_owned()),
        })?;
        Ok(reply.detections.unwrap_or_default())
    }

    fn call(
        &self,
        request: Request,
        check: impl Fn(&Reply) -> Result<(), String>,
    ) -> Result<Reply, Error> {
        let label = request.id().to_owned();
        let mut last = None;
        for attempt in 1..=self.attempts {
            let (sender, receiver) = channel();
            self.send(Event::Submit(Submission {
                request: request.clone(),
                reply: sender,
            }))?;
            let failure = match receiver.recv() {
                Ok(Outcome::Reply(reply)) => match check(&reply) {
                    Ok(()) => return Ok(reply),
                    Err(message) => Failure {
                        kind: FailureKind::InvalidResult,
                        message,
                        stderr: self.stderr_tail(),
                    },
                },
                Ok(Outcome::Failed(failure)) if failure.kind == FailureKind::Unsupported => {
                    return Err(Error::Unsupported {
                        worker: self.name.clone(),
                        message: failure.message,
                    });
                }
                Ok(Outcome::Failed(failure)) => failure,
                Ok(Outcome::GaveUp(reason)) => {
                    return Err(Error::GaveUp {
                        worker: self.name.clone(),
                        reason: Box::new(reason),
                    });
                }
                Ok(Outcome::Closed) | Err(_) => return Err(self.closed()),
            };
            tracing::warn!(
                "worker `{}`: request `{label}` attempt {attempt}/{} failed: {}",
                self.name,
                self.attempts,
                failure.message
            );
            last = Some(failure);
        }
        Err(Error::Failed {
            worker: self.name.clone(),
            request: label,
            attempts: self.attempts,
            last: Box::new(last.unwrap_or_else(|| Failure {
                kind: FailureKind::Start,
                message: "no attempt was made".into(),
                stderr: StderrTail::default(),
            })),
        })
    }

    fn send(&self, event: Event) -> Result<(), Error> {
        self.events.send(event).map_err(|_| self.closed())
    }

    fn closed(&self) -> Error {
        Error::Closed {
            worker: self.name.clone(),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.events.send(Event::Shutdown);
        let thread = match self.thread.get_mut() {
            Ok(thread) => thread.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("worker `{}`: the supervisor thread panicked", self.name);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One running worker process.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    tail: Tail,
    /// Disconnected once the stderr drain has seen end of file.
    stderr_done: Receiver<()>,
}

enum State {
    /// No process; one is started (after `next_start`) when there is work.
    Idle,
    Starting {
        process: Process,
        deadline: Instant,
    },
    Ready {
        process: Process,
        max_in_flight: usize,
    },
    GaveUp(Failure),
}

struct Supervisor {
    config: WorkerConfig,
    events_in: Sender<Event>,
    events: Receiver<Event>,
    shared: Arc<Shared>,
    state: State,
    queue: VecDeque<Submission>,
    in_flight: VecDeque<InFlight>,
    waiting_ready: Vec<Sender<Result<Hello, Failure>>>,
    /// Consecutive starts that ended without an acceptable `hello`.
    failed_starts: u32,
    /// Consecutive process failures since the last `ok` result (the backoff exponent).
    failures: u32,
    next_start: Instant,
    /// When the worker last became free to start the next request: `hello` or the last reply.
    last_reply: Instant,
    generation: u64,
    sequence: u64,
}

impl Supervisor {
    fn new(
        config: WorkerConfig,
        events_in: Sender<Event>,
        events: Receiver<Event>,
        shared: Arc<Shared>,
    ) -> Supervisor {
        let now = Instant::now();
        Supervisor {
            config,
            events_in,
            events,
            shared,
            state: State::Idle,
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            waiting_ready: Vec::new(),
            failed_starts: 0,
            failures: 0,
            next_start: now,
            last_reply: now,
            generation: 0,
            sequence: 0,
        }
    }

    fn run(&mut self) {
        loop {
            self.advance();
            let event = match self.deadline() {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match self.events.recv_timeout(wait) {
                        Ok(event) => Some(event),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => Some(Event::Shutdown),
                    }
                }
                None => Some(self.events.recv().unwrap_or(Event::Shutdown)),
            };
            match event {
                Some(Event::Shutdown) => {
                    self.shutdown();
                    return;
                }
                Some(event) => self.handle(event),
                None => self.check_timeouts(),
            }
        }
    }

    /// Starts a process when there is work and the backoff has passed; sends queued requests up to
    /// the pipelining depth.
    fn advance(&mut self) {
        let has_work = !self.queue.is_empty() || !self.waiting_ready.is_empty();
        if matches!(self.state, State::Idle) && has_work && Instant::now() >= self.next_start {
            self.spawn();
        }
        if let State::GaveUp(reason) = &self.state {
            let reason = reason.clone();
            for submission in self.queue.drain(..) {
                let _ = submission.reply.send(Outcome::GaveUp(reason.clone()));
            }
            for waiter in self.waiting_ready.drain(..) {
                let _ = waiter.send(Err(reason.clone()));
            }
            return;
        }
        self.fill();
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Idle if !self.queue.is_empty() || !self.waiting_ready.is_empty() => {
                Some(self.next_start)
            }
            State::Starting { deadline, .. } => Some(*deadline),
            State::Ready { .. } => self
                .in_flight
                .front()
                .map(|head| head.sent.max(self.last_reply) + self.config.request_timeout),
            _ => None,
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Submit(submission) => self.queue.push_back(submission),
            Event::WaitReady(waiter) => match &self.state {
                State::Ready { .. } => {
                    let hello = lock(&self.shared.hello).clone();
                    let _ = waiter.send(hello.ok_or_else(|| Failure {
                        kind: FailureKind::Start,
                        message: "no hello recorded".into(),
                        stderr: StderrTail::default(),
                    }));
                }
                _ => self.waiting_ready.push(waiter),
            },
            Event::Stdout { generation, line } if generation == self.generation => match line {
                Ok(message) => self.on_message(message),
                Err(garbage) => self.process_failed(
                    FailureKind::Protocol,
                    format!("protocol error: stdout line is not a protocol message: {garbage}"),
                ),
            },
            Event::StdoutClosed { generation, error } if generation == self.generation => {
                self.on_stdout_closed(error)
            }
            // Lines and end of file of processes already replaced.
            Event::Stdout { .. } | Event::StdoutClosed { .. } => {}
            Event::Shutdown => {}
        }
    }

    fn check_timeouts(&mut self) {
        let now = Instant::now();
        match &self.state {
            State::Starting { deadline, .. } if now >= *deadline => {
                let timeout = self.config.startup_timeout;
                self.process_failed(
                    FailureKind::Start,
                    format!("no hello within the start-up timeout ({timeout:?}); killed"),
                );
            }
            State::Ready { .. } => {
                if let Some(head) = self.in_flight.front() {
                    let started = head.sent.max(self.last_reply);
                    if now >= started + self.config.request_timeout {
                        let message = format!(
                            "no result for `{}` within the request timeout ({:?}): the worker \
                             hung and was killed",
                            head.wire_id, self.config.request_timeout
                        );
                        self.process_failed(FailureKind::Hung, message);
                    }
                }
            }
            _ => {}
        }
    }

    fn spawn(&mut self) {
        self.generation += 1;
        let generation = self.generation;
        let Some((program, args)) = self.config.command.split_first() else {
            self.start_failed("the worker command is empty".into(), None);
            return;
        };
        let mut program = PathBuf::from(program);
        if let Some(cwd) = &self.config.cwd
            && program.is_relative()
            && program.components().count() > 1
        {
            program = cwd.join(program);
        }
        let mut command = Command::new(&program);
        command
            .args(args)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(cwd) = &self.config.cwd {
            command.current_dir(cwd);
        }
        // Its own process group: a Ctrl-C on the terminal reaches scrbench only, which lets the
        // requests in flight finish and then shuts the worker down.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.start_failed(format!("cannot start `{}`: {e}", program.display()), None);
                return;
            }
        };
        let pid = child.id();
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let (Some(stdin), Some(stdout), Some(stderr)) = (stdin, stdout, stderr) else {
            let _ = child.kill();
            let _ = child.wait();
            self.start_failed("the worker's standard streams are missing".into(), None);
            return;
        };
        let log = self.open_log(pid);
        let tail = Tail {
            log: log.as_ref().map(|(path, _)| path.clone()),
            lines: Arc::new(Mutex::new(VecDeque::new())),
        };
        *lock(&self.shared.tail) = Some(tail.clone());
        let (stderr_done_tx, stderr_done) = channel::<()>();
        let keep = self.config.stderr_lines;
        let lines = tail.lines.clone();
        let drain = std::thread::Builder::new()
            .name(format!("worker-{}-stderr", self.config.name))
            .spawn(move || {
                drain_stderr(stderr, log.map(|(_, file)| file), &lines, keep);
                drop(stderr_done_tx);
            });
        let events = self.events_in.clone();
        let reader = std::thread::Builder::new()
            .name(format!("worker-{}-stdout", self.config.name))
            .spawn(move || read_stdout(stdout, generation, &events));
        let process = Process {
            child,
            stdin: Some(stdin),
            pid,
            tail,
            stderr_done,
        };
        if let Err(e) = drain.and(reader) {
            let stderr = stop(process, Duration::ZERO).1;
            self.start_failed(format!("cannot start reader threads: {e}"), Some(stderr));
            return;
        }
        tracing::info!(
            "worker `{}`: started pid {pid}: {:?}",
            self.config.name,
            self.config.command
        );
        self.state = State::Starting {
            process,
            deadline: Instant::now() + self.config.startup_timeout,
        };
    }

    fn open_log(&self, pid: u32) -> Option<(PathBuf, File)> {
        let path = self
            .config
            .logs
            .join(format!("{}.{pid}.log", self.config.name));
        let opened = std::fs::create_dir_all(&self.config.logs)
            .and_then(|()| File::options().create(true).append(true).open(&path));
        match opened {
            Ok(file) => Some((path, file)),
            Err(e) => {
                tracing::warn!(
                    "worker `{}`: cannot open log {}: {e}; stderr is kept in memory only",
                    self.config.name,
                    path.display()
                );
                None
            }
        }
    }

    fn on_message(&mut self, message: Message) {
        let starting = matches!(self.state, State::Starting { .. });
        match message {
            Message::Hello(hello) if starting => self.on_hello(hello),
            Message::Result(reply) if !starting => self.on_reply(reply),
            Message::Progress(progress) => tracing::debug!(
                "worker `{}`: progress {:?} {:?}/{:?}",
                self.config.name,
                progress.id,
                progress.step,
                progress.steps
            ),
            Message::Heartbeat(_) => tracing::trace!("worker `{}`: heartbeat", self.config.name),
            other => {
                let when = if starting {
                    "before hello"
                } else {
                    "after hello"
                };
                self.process_failed(
                    FailureKind::Protocol,
                    format!(
                        "protocol error: unexpected `{}` message {when}",
                        other.kind()
                    ),
                );
            }
        }
    }

    fn on_hello(&mut self, hello: Hello) {
        let config = &self.config;
        let wrong = if hello.protocol != PROTOCOL_VERSION {
            Some(format!(
                "the worker speaks protocol {}, scrbench speaks {PROTOCOL_VERSION}",
                hello.protocol
            ))
        } else if hello.adapter != config.adapter {
            Some(format!(
                "the worker announced adapter `{}`, the manifest names `{}`",
                hello.adapter, config.adapter
            ))
        } else if hello.smoke != config.smoke {
            Some(format!(
                "the worker runs with smoke = {}, but smoke = {} was asked",
                hello.smoke, config.smoke
            ))
        } else {
            None
        };
        if let Some(message) = wrong {
            // Deterministic: restarting would only repeat it.
            let state = std::mem::replace(&mut self.state, State::Idle);
            let stderr = match state {
                State::Starting { process, .. } | State::Ready { process, .. } => {
                    stop(process, Duration::ZERO).1
                }
                _ => StderrTail::default(),
            };
            self.give_up(Failure {
                kind: FailureKind::Start,
                message: format!("wrong hello: {message}"),
                stderr,
            });
            return;
        }
        let state = std::mem::replace(&mut self.state, State::Idle);
        let State::Starting { process, .. } = state else {
            self.state = state;
            return;
        };
        let max_in_flight = hello
            .capabilities
            .max_in_flight
            .max(1)
            .min(config.max_in_flight.unwrap_or(usize::MAX).max(1));
        tracing::info!(
            "worker `{}`: ready (pid {}, adapter {} {}, device {}, smoke {}, max_in_flight {max_in_flight}, model {})",
            config.name,
            process.pid,
            hello.adapter,
            hello.adapter_version.as_deref().unwrap_or("?"),
            hello.device.as_deref().unwrap_or("?"),
            hello.smoke,
            serde_json::to_string(&hello.model).unwrap_or_default()
        );
        self.failed_starts = 0;
        self.last_reply = Instant::now();
        for waiter in self.waiting_ready.drain(..) {
            let _ = waiter.send(Ok(hello.clone()));
        }
        *lock(&self.shared.hello) = Some(hello);
        self.state = State::Ready {
            process,
            max_in_flight,
        };
    }

    fn on_reply(&mut self, reply: Reply) {
        let expected = self.in_flight.front().map(|head| head.wire_id.as_str());
        if expected != Some(reply.id.as_str()) {
            let message = match expected {
                Some(id) => format!(
                    "protocol error: result for `{}` while `{id}` is the oldest open request",
                    reply.id
                ),
                None => format!(
                    "protocol error: result for `{}`, no request is open",
                    reply.id
                ),
            };
            self.process_failed(FailureKind::Protocol, message);
            return;
        }
        let Some(head) = self.in_flight.pop_front() else {
            return;
        };
        self.last_reply = Instant::now();
        // The next request first, so the worker is never kept waiting by our bookkeeping.
        self.fill();
        let outcome = if reply.ok {
            self.failures = 0;
            Outcome::Reply(reply)
        } else {
            Outcome::Failed(Failure {
                kind: FailureKind::Refused,
                message: format!(
                    "the worker could not serve it: {}",
                    reply.error.as_deref().unwrap_or("(no error message)")
                ),
                stderr: self.current_tail(),
            })
        };
        let _ = head.submission.reply.send(outcome);
    }

    fn on_stdout_closed(&mut self, error: Option<String>) {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let (process, starting) = match state {
            State::Starting { process, .. } => (process, true),
            State::Ready { process, .. } => (process, false),
            other => {
                self.state = other;
                return;
            }
        };
        // A worker whose stdout ended is exiting: give it time to do so by itself (generous, for a
        // loaded machine; it returns as soon as the process is gone) so the message carries its
        // real exit status.
        let (status, stderr) = stop(process, Duration::from_secs(5));
        let mut message = match status {
            Some(status) => format!("the worker exited ({status})"),
            None => "the worker closed its stdout".to_owned(),
        };
        if let Some(error) = error {
            message.push_str(&format!(" (reading its stdout: {error})"));
        }
        if starting {
            message.push_str(" before sending hello");
            self.start_failed(message, Some(stderr));
        } else {
            self.after_failure(FailureKind::Exited, message, stderr);
        }
    }

    /// Kills the current process after a failure of `kind` and charges the oldest open request.
    fn process_failed(&mut self, kind: FailureKind, message: String) {
        let state = std::mem::replace(&mut self.state, State::Idle);
        match state {
            State::Starting { process, .. } => {
                let stderr = stop(process, Duration::ZERO).1;
                self.start_failed(message, Some(stderr));
            }
            State::Ready { process, .. } => {
                let stderr = stop(process, Duration::ZERO).1;
                self.after_failure(kind, message, stderr);
            }
            other => self.state = other,
        }
    }

    /// A start that ended without an acceptable `hello`.
    fn start_failed(&mut self, message: String, stderr: Option<StderrTail>) {
        self.failed_starts += 1;
        let failure = Failure {
            kind: FailureKind::Start,
            message: format!(
                "start {} of at most {} failed: {message}",
                self.failed_starts,
                self.config.max_restarts.max(1)
            ),
            stderr: stderr.unwrap_or_default(),
        };
        if self.failed_starts >= self.config.max_restarts.max(1) {
            self.give_up(failure);
            return;
        }
        self.failures += 1;
        let delay = self.config.backoff_after(self.failures);
        tracing::warn!(
            "worker `{}`: {}; restarting in {delay:?}",
            self.config.name,
            failure.message
        );
        self.next_start = Instant::now() + delay;
        self.state = State::Idle;
    }

    /// A running worker failed: the oldest open request fails this attempt, the others go back to
    /// the front of the queue, and a restart is scheduled after the backoff.
    fn after_failure(&mut self, kind: FailureKind, message: String, stderr: StderrTail) {
        self.failures += 1;
        if self.failures >= self.config.max_failures.max(1) {
            let message = format!(
                "{} failures in a row without a successful result; the last: {message}",
                self.failures
            );
            self.give_up(Failure {
                kind,
                message,
                stderr,
            });
            return;
        }
        let delay = self.config.backoff_after(self.failures);
        tracing::warn!(
            "worker `{}`: {message}; restarting in {delay:?}",
            self.config.name
        );
        let mut open = std::mem::take(&mut self.in_flight);
        if let Some(head) = open.pop_front() {
            let _ = head.submission.reply.send(Outcome::Failed(Failure {
                kind,
                message,
                stderr,
            }));
        }
        while let Some(innocent) = open.pop_back() {
            self.queue.push_front(innocent.submission);
        }
        self.next_start = Instant::now() + delay;
        self.state = State::Idle;
    }

    fn give_up(&mut self, reason: Failure) {
        tracing::error!(
            "worker `{}`: giving up: {}",
            self.config.name,
            reason.message
        );
        for open in self.in_flight.drain(..) {
            let _ = open.submission.reply.send(Outcome::GaveUp(reason.clone()));
        }
        self.state = State::GaveUp(reason);
    }

    /// Sends queued requests while the worker has room for them.
    fn fill(&mut self) {
        while let State::Ready {
            process,
            max_in_flight,
        } = &mut self.state
        {
            if self.in_flight.len() >= *max_in_flight {
                return;
            }
            let Some(submission) = self.queue.pop_front() else {
                return;
            };
            let served = lock(&self.shared.hello)
                .as_ref()
                .map(|hello| hello.capabilities.requests.clone())
                .unwrap_or_default();
            let kind = submission.request.kind();
            if !served.is_empty() && !served.iter().any(|r| r == kind) {
                let _ = submission.reply.send(Outcome::Failed(Failure {
                    kind: FailureKind::Unsupported,
                    message: format!(
                        "the worker does not serve `{kind}` requests (it serves {served:?})"
                    ),
                    stderr: StderrTail::default(),
                }));
                continue;
            }
            self.sequence += 1;
            let wire_id = format!("{}#{}", submission.request.id(), self.sequence);
            let mut request = submission.request.clone();
            request.set_id(wire_id.clone());
            let line = request.into_message().to_line();
            let written = match process.stdin.as_mut() {
                Some(stdin) => stdin
                    .write_all(line.as_bytes())
                    .and_then(|()| stdin.flush()),
                None => Err(std::io::Error::other("stdin is closed")),
            };
            match written {
                Ok(()) => self.in_flight.push_back(InFlight {
                    submission,
                    wire_id,
                    sent: Instant::now(),
                }),
                Err(e) => {
                    // The worker is gone; this request was never received, so it is not charged.
                    self.queue.push_front(submission);
                    self.process_failed(
                        FailureKind::Exited,
                        format!("cannot write to the worker's stdin: {e}"),
                    );
                    return;
                }
            }
        }
    }

    fn current_tail(&self) -> StderrTail {
        match &self.state {
            State::Starting { process, .. } | State::Ready { process, .. } => {
                process.tail.snapshot()
            }
            _ => StderrTail::default(),
        }
    }

    /// Graceful end: `shutdown`, close stdin, wait, then kill.
    fn shutdown(&mut self) {
        for submission in self.queue.drain(..) {
            let _ = submission.reply.send(Outcome::Closed);
        }
        for open in self.in_flight.drain(..) {
            let _ = open.submission.reply.send(Outcome::Closed);
        }
        let state = std::mem::replace(&mut self.state, State::Idle);
        if let State::Starting { mut process, .. } | State::Ready { mut process, .. } = state {
            if let Some(mut stdin) = process.stdin.take() {
                let line = Message::Shutdown(Shutdown {}).to_line();
                let _ = stdin
                    .write_all(line.as_bytes())
                    .and_then(|()| stdin.flush());
            }
            let pid = process.pid;
            let (status, _) = stop(process, self.config.shutdown_timeout);
            match status {
                Some(status) if status.success() => {
                    tracing::info!("worker `{}`: pid {pid} shut down", self.config.name)
                }
                Some(status) => tracing::warn!(
                    "worker `{}`: pid {pid} ended with {status} at shutdown",
                    self.config.name
                ),
                None => {}
            }
        }
    }
}

/// Ends `process`: closes its stdin, waits up to `grace` for it to exit by itself, kills it
/// otherwise, reaps it, and waits (briefly) for its last stderr lines. Returns its exit status
/// when it exited by itself, and its stderr tail.
fn stop(mut process: Process, grace: Duration) -> (Option<ExitStatus>, StderrTail) {
    drop(process.stdin.take());
    let deadline = Instant::now() + grace;
    let mut status = None;
    loop {
        match process.child.try_wait() {
            Ok(Some(exited)) => {
                status = Some(exited);
                break;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => break,
        }
    }
    if status.is_none() {
        if let Err(e) = process.child.kill() {
            tracing::debug!("kill pid {}: {e}", process.pid);
        }
        if let Err(e) = process.child.wait() {
            tracing::warn!("cannot reap worker pid {}: {e}", process.pid);
        }
    }
    // The drain ends at end of file, which comes once the process (and any child holding its
    // stderr) is gone; do not wait for orphans forever.
    let _ = process.stderr_done.recv_timeout(Duration::from_secs(1));
    (status, process.tail.snapshot())
}

/// Reads protocol lines and forwards them; ends at end of file.
fn read_stdout(stdout: impl Read, generation: u64, events: &Sender<Event>) {
    let mut reader = BufReader::new(stdout);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        let read = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buffer);
        let event = match read {
            Ok(0) => Event::StdoutClosed {
                generation,
                error: None,
            },
            Err(e) => Event::StdoutClosed {
                generation,
                error: Some(e.to_string()),
            },
            Ok(_) if buffer.last() != Some(&b'\n') && buffer.len() as u64 >= MAX_LINE => {
                Event::Stdout {
                    generation,
                    line: Err(format!("a line longer than {MAX_LINE} bytes")),
                }
            }
            Ok(_) => {
                let text = String::from_utf8_lossy(&buffer);
                let text = text.trim_end_matches(['\n', '\r']);
                let line = Message::parse(text).map_err(|e| format!("{} ({e})", shorten(text)));
                Event::Stdout { generation, line }
            }
        };
        let closed = matches!(event, Event::StdoutClosed { .. });
        if events.send(event).is_err() || closed {
            return;
        }
    }
}

/// Appends stderr to the log file and keeps the last `keep` lines.
fn drain_stderr(
    stderr: impl Read,
    mut log: Option<File>,
    lines: &Mutex<VecDeque<String>>,
    keep: usize,
) {
    let mut reader = BufReader::new(stderr);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Some(file) = &mut log
            && let Err(e) = file.write_all(&buffer)
        {
            tracing::warn!("cannot write worker log: {e}");
            log = None;
        }
        let text = String::from_utf8_lossy(&buffer);
        let text = text.trim_end_matches(['\n', '\r']);
        if keep == 0 {
            continue;
        }
        let mut lines = lock(lines);
        if lines.len() >= keep {
            lines.pop_front();
        }
        lines.push_back(truncate(text, MAX_TAIL_LINE).to_owned());
    }
}

/// A garbage line as shown in messages: quoted, at most 200 bytes.
fn shorten(text: &str) -> String {
    let short = truncate(text, 200);
    if short.len() < text.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
