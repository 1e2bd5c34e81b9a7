//! The resumable runner: items flow through the stages with bounded concurrency per stage.
//!
//! Every item is its own task. At each stage it computes the key and looks it up; on a miss it
//! joins the stage's short "ready" line (as many places as the stage has workers), takes the key's
//! lock (so another process sharing the cache never computes it too) and looks again, then hands
//! the computation to one of the stage's worker threads ([`crate::workers`]; their number is the
//! stage's concurrency) and, once it comes back, stores the outputs and records the entry. A worker
//! only computes, so a slow stage (generation) never keeps a fast one (inspection) idle while the
//! fast one has work, and neither locking nor storing (hashing, fsync) delays the next generation.
//!
//! Ctrl-C cancels the run: no new stage starts, computations already running finish and are
//! stored. A killed process loses only its in-flight items; rerunning resumes from the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use store::{ActionEntry, ActionKey, LockGuard, Lookup, MissReason};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::items::Item;
use crate::stage::{Context, Output, Stage, StageError, StageOutput};
use crate::workers::{Job, Workers};
use crate::{Pipeline, PipelineError};

/// How a run behaves.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// List what would run and why, computing nothing.
    pub dry_run: bool,
    /// Draw progress bars (when stderr is a terminal).
    pub progress: bool,
}

/// Per-stage counts of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageCounts {
    /// Already in the store.
    pub cached: usize,
    /// Computed by this run.
    pub computed: usize,
    pub failed: usize,
    /// Not attempted: an earlier stage failed, or the run was interrupted.
    pub blocked: usize,
}

/// An item whose stage failed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Failure {
    pub item: String,
    pub stage: String,
    pub message: String,
}

/// An item stage that would run, with the reasons (dry run).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WouldRun {
    pub item: String,
    pub stage: String,
    pub reasons: Vec<MissReason>,
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunSummary {
    pub items: usize,
    pub stages: BTreeMap<String, StageCounts>,
    pub failures: Vec<Failure>,
    pub would_run: Vec<WouldRun>,
    pub interrupted: bool,
    /// A stage that cannot work at all (e.g. its model does not load) stopped the run.
    pub fatal: Option<String>,
    pub seconds: f64,
}

impl RunSummary {
    /// Adds the counts of a later run over other items.
    pub fn merge(&mut self, other: RunSummary) {
        self.items += other.items;
        for (stage, counts) in other.stages {
            let mine = self.stages.entry(stage).or_default();
            mine.cached += counts.cached;
            mine.computed += counts.computed;
            mine.failed += counts.failed;
            mine.blocked += counts.blocked;
        }
        self.failures.extend(other.failures);
        self.would_run.extend(other.would_run);
        self.interrupted |= other.interrupted;
        self.fatal = self.fatal.take().or(other.fatal);
        self.seconds += other.seconds;
    }

    pub fn computed(&self) -> usize {
        self.stages.values().map(|c| c.computed).sum()
    }
}

/// What happened to one item at one stage.
enum Outcome {
    Cached(ActionEntry),
    Computed(ActionEntry),
    Failed(String),
    WouldRun(Vec<MissReason>),
    Interrupted,
    /// The stage cannot work at all; the run was cancelled.
    Fatal(String),
    /// The stage does not apply to this item (e.g. scoring a reference image).
    NotApplicable,
}

struct Shared {
    pipeline: Arc<Pipeline>,
    /// One pool per stage: its slots, as worker threads.
    workers: Vec<Workers>,
    /// One semaphore per stage, as wide as its pool: items that hold their key's lock and wait
    /// for a worker. Taking the lock ahead keeps that I/O off the stage's critical path.
    ready: Vec<Arc<Semaphore>>,
    /// Bounds the blocking store operations (key computation, lookups, commits) in flight.
    io: Semaphore,
    cancel: CancellationToken,
    dry_run: bool,
    bars: Option<Vec<ProgressBar>>,
}

/// How long a stage waits between tries of a lock held by another process.
const LOCK_POLL: Duration = Duration::from_millis(25);

/// Runs `items` through the stages up to and including the one at index `upto`.
pub(crate) async fn run(
    pipeline: Arc<Pipeline>,
    items: Vec<Item>,
    options: &RunOptions,
    cancel: CancellationToken,
    upto: usize,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let stages: Vec<Arc<dyn Stage>> = pipeline.stages.iter().take(upto + 1).cloned().collect();
    let ready = stages
        .iter()
        .map(|s| {
            Arc::new(Semaphore::new(
                pipeline.concurrency(s.name()) * s.batch_size().max(1),
            ))
        })
        .collect();
    let workers = stages
        .iter()
        .map(|s| {
            let count = pipeline.concurrency(s.name());
            Workers::start(s.clone(), pipeline.clone(), count, cancel.clone())
        })
        .collect::<std::io::Result<_>>()
        .map_err(|e| PipelineError::Internal(format!("cannot start worker threads: {e}")))?;
    let bars = (options.progress && !options.dry_run).then(|| progress_bars(&stages, items.len()));
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shared = Arc::new(Shared {
        pipeline: pipeline.clone(),
        workers,
        ready,
        io: Semaphore::new(4 * cpus),
        cancel,
        dry_run: options.dry_run,
        bars,
    });

    let mut tasks = tokio::task::JoinSet::new();
    for (index, item) in items.iter().cloned().enumerate() {
        let shared = shared.clone();
        tasks.spawn(async move { (index, process(&shared, item).await) });
    }
    let mut outcomes: Vec<Vec<Outcome>> = (0..items.len()).map(|_| Vec::new()).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, outcome) = joined.map_err(|e| PipelineError::Internal(e.to_string()))?;
        outcomes[index] = outcome;
    }
    if let Some(bars) = &shared.bars {
        bars.iter().for_each(ProgressBar::finish);
    }

    let mut summary = RunSummary {
        items: items.len(),
        ..RunSummary::default()
    };
    for stage in &stages {
        summary
            .stages
            .insert(stage.name().to_owned(), StageCounts::default());
    }
    for (item, outcome) in items.iter().zip(outcomes) {
        for (i, stage) in stages.iter().enumerate() {
            let counts = summary.stages.entry(stage.name().to_owned()).or_default();
            match outcome.get(i) {
                Some(Outcome::Cached(_)) => counts.cached += 1,
                Some(Outcome::Computed(_)) => counts.computed += 1,
                Some(Outcome::Failed(message)) => {
                    counts.failed += 1;
                    summary.failures.push(Failure {
                        item: item.id(),
                        stage: stage.name().to_owned(),
                        message: message.clone(),
                    });
                }
                Some(Outcome::WouldRun(reasons)) => summary.would_run.push(WouldRun {
                    item: item.id(),
                    stage: stage.name().to_owned(),
                    reasons: reasons.clone(),
                }),
                Some(Outcome::Interrupted) => {
                    summary.interrupted = true;
                    counts.blocked += 1;
                }
                Some(Outcome::NotApplicable) => {}
                Some(Outcome::Fatal(message)) => {
                    counts.blocked += 1;
                    summary.fatal.get_or_insert_with(|| message.clone());
                }
                None => counts.blocked += 1,
            }
        }
    }
    summary.interrupted |= shared.cancel.is_cancelled() && summary.fatal.is_none();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn progress_bars(stages: &[Arc<dyn Stage>], len: usize) -> Vec<ProgressBar> {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let style =
        ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    stages
        .iter()
        .map(|stage| {
            let bar = multi.add(ProgressBar::new(len as u64));
            bar.set_style(style.clone());
            bar.set_prefix(stage.name());
            bar
        })
        .collect()
}

/// Runs one item through the stages, stopping at the first that does not end with an entry.
async fn process(shared: &Arc<Shared>, item: Item) -> Vec<Outcome> {
    let mut upstream: BTreeMap<&'static str, ActionEntry> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for (index, stage) in shared
        .pipeline
        .stages
        .iter()
        .enumerate()
        .take(shared.workers.len())
    {
        if !stage.applies_to(&item) {
            outcomes.push(Outcome::NotApplicable);
            continue;
        }
        let outcome = process_stage(shared, index, stage, &item, &upstream).await;
        if let Some(bars) = &shared.bars {
            let bar = &bars[index];
            bar.inc(1);
            if let Outcome::Failed(_) = outcome {
                bar.set_message("(some failed)");
            }
        }
        let entry = match &outcome {
            Outcome::Cached(entry) | Outcome::Computed(entry) => Some(entry.clone()),
            _ => None,
        };
        outcomes.push(outcome);
        match entry {
            Some(entry) => {
                upstream.insert(stage.name(), entry);
            }
            None => break,
        }
    }
    outcomes
}

/// What taking a key's lock ended with.
enum Locked {
    Mine(LockGuard),
    /// Another process finished the key meanwhile.
    Cached(ActionEntry),
    /// Another process holds the lock.
    Busy,
}

async fn process_stage(
    shared: &Arc<Shared>,
    index: usize,
    stage: &Arc<dyn Stage>,
    item: &Item,
    upstream: &BTreeMap<&'static str, ActionEntry>,
) -> Outcome {
    let item_id = item.id();
    loop {
        if shared.cancel.is_cancelled() {
            return Outcome::Interrupted;
        }
        let looked_up = blocking(shared, item, upstream, {
            let stage = stage.clone();
            let item_id = item_id.clone();
            move |cx| {
                let key = stage.key(cx)?;
                let lookup = cx.store.lookup(&item_id, &key)?;
                Ok((key, lookup))
            }
        })
        .await;
        let (key, reasons) = match looked_up {
            Err(message) => return Outcome::Failed(message),
            Ok((_, Lookup::Hit(entry))) => return Outcome::Cached(entry),
            Ok((key, Lookup::Miss(reasons))) => (key, reasons),
        };
        if shared.dry_run {
            return Outcome::WouldRun(reasons);
        }

        let Some(ready) = acquire(shared, &shared.ready[index]).await else {
            return Outcome::Interrupted;
        };
        let locked = blocking(shared, item, upstream, {
            let key = key.clone();
            let item_id = item_id.clone();
            move |cx| {
                let Some(guard) = cx.store.try_lock(&key.digest())? else {
                    return Ok(Locked::Busy);
                };
                // The holder we waited for may have finished it just now.
                if cx.store.entry(&key)?.is_some()
                    && let Lookup::Hit(entry) = cx.store.lookup(&item_id, &key)?
                {
                    return Ok(Locked::Cached(entry));
                }
                Ok(Locked::Mine(guard))
            }
        })
        .await;
        let guard = match locked {
            Err(message) => return Outcome::Failed(message),
            Ok(Locked::Cached(entry)) => return Outcome::Cached(entry),
            Ok(Locked::Mine(guard)) => guard,
            Ok(Locked::Busy) => {
                // Another process computes this key: look again after a while.
                drop(ready);
                tokio::time::sleep(LOCK_POLL).await;
                continue;
            }
        };
        // Run on the stage's workers; the place in the ready line is given back when a worker
        // takes the job.
        let (reply, receiver) = tokio::sync::oneshot::channel();
        let job = Job {
            item: item.clone(),
            upstream: upstream.clone(),
            key: key.clone(),
            ready,
            reply,
        };
        if !shared.workers[index].submit(job) {
            return Outcome::Interrupted;
        }
        let Ok((ran, elapsed)) = receiver.await else {
            // Cancelled before a worker took it (or the job panicked).
            return if shared.cancel.is_cancelled() {
                Outcome::Interrupted
            } else {
                Outcome::Failed(format!("stage {} panicked", stage.name()))
            };
        };
        let stage_name = stage.name();
        if let Err(StageError::Fatal(message)) = &ran {
            tracing::error!("{}: {message}", stage.name());
            shared.cancel.cancel();
            return Outcome::Fatal(message.clone());
        }
        return blocking(shared, item, upstream, move |cx| {
            let outcome = match ran.and_then(|output| commit(cx, &item_id, &key, output)) {
                Ok(entry) => {
                    tracing::info!(
                        "{stage_name} {item_id}: computed in {:.2}s",
                        elapsed.as_secs_f64()
                    );
                    Outcome::Computed(entry)
                }
                Err(error) => {
                    let message = error.to_string();
                    tracing::warn!("{stage_name} {item_id}: failed: {message}");
                    cx.store.record_failure(&item_id, &key, &message)?;
                    Outcome::Failed(message)
                }
            };
            drop(guard);
            Ok(outcome)
        })
        .await
        .unwrap_or_else(Outcome::Failed);
    }
}

/// A permit of `semaphore`, or `None` once the run is cancelled.
async fn acquire(shared: &Shared, semaphore: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        permit = semaphore.clone().acquire_owned() => permit.ok(),
        () = shared.cancel.cancelled() => None,
    }
}

/// Stores a stage's outputs, then records the entry (always last).
fn commit(
    cx: &Context,
    item_id: &str,
    key: &ActionKey,
    output: StageOutput,
) -> Result<ActionEntry, StageError> {
    let mut outputs = BTreeMap::new();
    for (name, data) in output.outputs {
        let digest = match data {
            Output::File(file) => cx.store.put_file(file)?,
            Output::Bytes(bytes) => cx.store.put_bytes(&bytes)?,
        };
        outputs.insert(name, digest);
    }
    Ok(cx.store.record(item_id, key, outputs, output.meta)?)
}

/// Runs store work `f` on a blocking thread with a [`Context`] for `item`, bounded by the I/O
/// semaphore. Errors come back as messages: they become the item's failure.
async fn blocking<T: Send + 'static>(
    shared: &Arc<Shared>,
    item: &Item,
    upstream: &BTreeMap<&'static str, ActionEntry>,
    f: impl FnOnce(&Context) -> Result<T, StageError> + Send + 'static,
) -> Result<T, String> {
    let _permit = shared.io.acquire().await.map_err(|e| e.to_string())?;
    compute(shared, item, upstream, f).await
}

/// Runs `f` on a blocking thread with a [`Context`] for `item` (the caller holds a stage slot).
async fn compute<T: Send + 'static>(
    shared: &Arc<Shared>,
    item: &Item,
    upstream: &BTreeMap<&'static str, ActionEntry>,
    f: impl FnOnce(&Context) -> Result<T, StageError> + Send + 'static,
) -> Result<T, String> {
    let pipeline = shared.pipeline.clone();
    let item = item.clone();
    let upstream = upstream.clone();
    tokio::task::spawn_blocking(move || {
        let cx = Context {
            item: &item,
            upstream: &upstream,
            store: &pipeline.store,
        };
        f(&cx).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("internal error: {e}"))?
}

/// The state of one stage of one item, as `status`, `explain` and reports see it.
#[derive(Clone, Debug)]
pub enum StageState {
    Done(ActionEntry),
    /// Would run, for these reasons.
    Pending {
        key: ActionKey,
        reasons: Vec<MissReason>,
    },
    /// An earlier stage is not done.
    Blocked,
    /// The key cannot be computed (e.g. a reference image is unreadable).
    Error(String),
}

impl StageState {
    pub fn failed(&self) -> Option<&str> {
        match self {
            StageState::Pending { reasons, .. } => reasons.iter().find_map(|r| match r {
                MissReason::Failed { message } => Some(message.as_str()),
                _ => None,
            }),
            StageState::Error(message) => Some(message),
            _ => None,
        }
    }
}

/// Evaluates every stage of `item` against the store without computing anything. Blocking.
pub(crate) fn evaluate(pipeline: &Pipeline, item: &Item) -> Vec<(&'static str, StageState)> {
    let mut upstream = BTreeMap::new();
    let mut states = Vec::new();
    let mut blocked = false;
    for stage in pipeline.stages.iter().filter(|s| s.applies_to(item)) {
        if blocked {
            states.push((stage.name(), StageState::Blocked));
            continue;
        }
        let cx = Context {
            item,
            upstream: &upstream,
            store: &pipeline.store,
        };
        let state = match stage.key(&cx) {
            Err(e) => StageState::Error(e.to_string()),
            Ok(key) => match pipeline.store.lookup(&item.id(), &key) {
                Err(e) => StageState::Error(e.to_string()),
                Ok(Lookup::Hit(entry)) => StageState::Done(entry),
                Ok(Lookup::Miss(reasons)) => StageState::Pending { key, reasons },
            },
        };
        if let StageState::Done(entry) = &state {
            upstream.insert(stage.name(), entry.clone());
        } else {
            blocked = true;
        }
        states.push((stage.name(), state));
    }
    states
}

/// The key a stage would use now, if its inputs are known.
pub(crate) fn current_key(state: &StageState) -> Option<&ActionKey> {
    match state {
        StageState::Done(entry) => Some(&entry.key),
        StageState::Pending { key, .. } => Some(key),
        _ => None,
    }
}
