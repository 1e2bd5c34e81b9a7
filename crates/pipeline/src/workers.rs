//! Per-stage worker threads: a stage's slots are long-lived threads that take ready jobs from a
//! queue, so handing a slot from one item to the next costs a channel receive on a thread that is
//! already running, not a task wake-up and a hop to another thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One unit of work for a worker.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// `count` threads running the jobs submitted to them, in submission order.
pub(crate) struct Workers {
    sender: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(crate) fn start(name: &str, count: usize) -> std::io::Result<Workers> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let threads = (0..count)
            .map(|i| {
                let receiver = receiver.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        loop {
                            // The lock is released at the end of this statement, before the job runs.
                            let job = match receiver.lock() {
                                Ok(receiver) => receiver.recv(),
                                Err(_) => return,
                            };
                            let Ok(job) = job else { return };
                            // A panicking job loses its own item (its result channel is dropped),
                            // never the worker.
                            let _ = catch_unwind(AssertUnwindSafe(job));
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

impl Drop for Workers {
    fn drop(&mut self) {
        self.sender.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;

    use super::*;

    #[test]
    fn runs_every_job_and_survives_a_panicking_one() {
        let workers = Workers::start("test", 2).unwrap();
        let (sender, receiver) = channel();
        assert!(workers.submit(Box::new(|| panic!("job fails"))));
        for i in 0..10 {
            let sender = sender.clone();
            assert!(workers.submit(Box::new(move || sender.send(i).unwrap())));
        }
        drop(sender);
        let mut got: Vec<i32> = receiver.iter().collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }
}
