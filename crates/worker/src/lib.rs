//! The scrbench side of the worker protocol (`adapters/PROTOCOL.md`, version 1).
//!
//! An adapter (a generator such as MOSAIC, or an external detector) is a long-lived process that
//! keeps its model loaded and speaks JSON lines on stdin/stdout. This crate has:
//!
//! - [`protocol`]: the messages as serde types. [`Message`] is one line in either direction
//!   (`hello`, `generate`, `detect`, `result`, `progress`, `heartbeat`, `shutdown`); unknown
//!   fields are ignored, unknown types are errors. [`Request`] is what scrbench sends
//!   ([`GenerateRequest`], [`DetectRequest`]); [`Reply`] is a `result`.
//! - [`client`]: [`Worker`], a thread-safe handle to one supervised worker process, configured by a
//!   [`WorkerConfig`] (argv, working directory, environment, log folder, timeouts, attempts,
//!   restarts, backoff). It starts the process lazily, checks `hello`, pipelines up to
//!   `max_in_flight` requests, kills and restarts (with backoff) a worker that exits, hangs or
//!   writes garbage, retries each request up to `attempts` times and then fails it with
//!   [`Error::Failed`] carrying the last [`Failure`] and the worker's last stderr lines
//!   ([`StderrTail`]); after `max_restarts` failed starts in a row every request fails with
//!   [`Error::GaveUp`]. Dropping the handle sends `shutdown`, waits up to 10 s, kills, and reaps.
//! - [`validate`]: the client-side checks of replies ([`Worker::generate`] accepts only an image
//!   file of exactly the requested size; [`Worker::detect`] only boxes that index the queries).
//!
//! ```no_run
//! use worker::{DetectRequest, Worker, WorkerConfig};
//!
//! let mut config = WorkerConfig::new(
//!     "gdino",                                   // name in logs: <logs>/gdino.<pid>.log
//!     "groundingdino",                           // the adapter name `hello` must announce
//!     vec!["python".into(), "worker.py".into()], // argv
//!     "cache/logs/workers",
//! );
//! config.cwd = Some("adapters/groundingdino".into());
//! let worker = Worker::new(config)?;             // no process yet
//! let boxes = worker.detect(DetectRequest {
//!     id: "p07/42".into(),                       // a label; the wire id is `p07/42#<n>`
//!     image: "/abs/image.png".into(),
//!     queries: vec!["cat".into(), "dog".into()],
//! })?;
//! # Ok::<(), worker::Error>(())
//! ```

pub mod client;
pub mod protocol;
pub mod validate;

pub use client::{Error, Failure, FailureKind, StderrTail, Worker, WorkerConfig};
pub use protocol::{
    Capabilities, DetectRequest, Detection, GenerateRequest, Hello, Message, PROTOCOL_VERSION,
    ReferenceImage, Reply, Request,
};
