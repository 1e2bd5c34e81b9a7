//! Per-stage worker threads: a stage's slots are long-lived threads that take ready jobs from a
//! queue, so handing a slot from one item to the next costs a channel receive on a thread that is
//! already running, not a task wake-up and a hop to another thread. A worker takes up to the
//! stage's batch size of queued jobs at once and runs them in one [`Stage::run_batch`] call
//! (encoders are much faster on batches).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use store::{ActionEntry, ActionKey};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::Pipeline;
use crate::items::Item;
use crate::stage::{Context, Stage, StageError, StageOutput};

/// What a job's submitter gets back: the stage's result and how long its batch took.
pub(crate) type Reply = (Result<StageOutput, StageError>, Duration);

/// One item's computation, queued for a worker. Dropping it unanswered means "not run".
pub(crate) struct Job {
    pub item: Item,
    pub upstream: BTreeMap<&'static str, ActionEntry>,
    pub key: ActionKey,
    /// The item's place in the stage's ready line, given back when a worker takes the job.
    pub ready: OwnedSemaphorePermit,
    pub reply: oneshot::Sender<Reply>,
}

/// `count` threads running one stage's jobs, in submission order.
pub(crate) struct Workers {
    sender: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(crate) fn start(
        stage: Arc<dyn Stage>,
        pipeline: Arc<Pipeline>,
        count: usize,
        cancel: CancellationToken,
    ) -> std::io::Result<Workers> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = (0..count)
            .map(|i| {
                let (stage, pipeline, cancel) = (stage.clone(), pipeline.clone(), cancel.clone());
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("{}-{i}", stage.name()))
                    .spawn(move || {
                        while let Some(batch) = take_batch(&receiver, stage.batch_size()) {
                            run_batch(stage.as_ref(), &pipeline, &cancel, batch);
                        }
                    })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Workers {
            sender: Some(sender),
            threads,
        })
    }

    /// Queues `job`; false once the workers are gone.
    pub(crate) fn submit(&self, job: Job) -> bool {
        self.sender
            .as_ref()
            .is_some_and(|sender| sender.send(job).is_ok())
    }
}

/// Waits for one job, then takes whatever else is queued, up to `size` jobs; `None` when closed.
fn take_batch(receiver: &Mutex<Receiver<Job>>, size: usize) -> Option<Vec<Job>> {
    let receiver = receiver.lock().ok()?;
    let mut batch = vec![receiver.recv().ok()?];
    while batch.len() < size.max(1) {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}

fn run_batch(stage: &dyn Stage, pipeline: &Pipeline, cancel: &CancellationToken, batch: Vec<Job>) {
    let mut jobs = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        drop(job.ready);
        if !cancel.is_cancelled() {
            jobs.push((job.item, job.upstream, job.key));
            replies.push(job.reply);
        }
    }
    if jobs.is_empty() {
        return;
    }
    let contexts: Vec<Context> = jobs
        .iter()
        .map(|(item, upstream, _)| Context {
            item,
            upstream,
            store: &pipeline.store,
        })
        .collect();
    let inputs: Vec<(&Context, &ActionKey)> = contexts
        .iter()
        .zip(&jobs)
        .map(|(cx, (_, _, key))| (cx, key))
        .collect();
    let started = Instant::now();
    // A panicking stage loses its batch (the replies are dropped), never the worker.
    let Ok(results) = catch_unwind(AssertUnwindSafe(|| stage.run_batch(&inputs))) else {
        return;
    };
    let elapsed = started.elapsed();
    if results.len() != replies.len() {
        let message = format!(
            "stage {} returned {} results for {} jobs",
            stage.name(),
            results.len(),
            replies.len()
        );
        for reply in replies {
            let _ = reply.send((Err(StageError::Failed(message.clone())), elapsed));
        }
        return;
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send((result, elapsed));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.sender.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
