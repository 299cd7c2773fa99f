//! The group commit both event logs share: appenders hand their request to one writer thread over a
//! channel and wait for its answer; the writer takes every request that is waiting (up to
//! [`MAX_GROUP`]) and lets its backend commit them together, so that many concurrent appends share
//! one transaction and one sync. What a group's transaction does is the backend's
//! (`storage::sqlite::log`, `storage::postgres::log`).

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::events::store::{AppendOutcome, AppendRequest, StoreError};

pub(crate) const MAX_GROUP: usize = 256;

/// One waiting append.
pub(crate) struct WriteJob {
    pub request: AppendRequest,
    /// A oneshot, whose receiver parks at once: with many appenders waiting, a receiver that spins
    /// before it sleeps (crossbeam's does) takes the cores the writer and the database need.
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// The writer thread and the channel to it; dropping it answers every queued job, then joins.
pub(crate) struct Writer {
    jobs: Option<Sender<WriteJob>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread `name`, which calls `commit` with each group and answers each job with the
    /// result at its index.
    pub fn start(
        name: &str,
        mut commit: impl FnMut(&[WriteJob]) -> Vec<Result<AppendOutcome, StoreError>> + Send + 'static,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = crossbeam_channel::unbounded::<WriteJob>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    let results = commit(&group);
                    for (job, result) in group.into_iter().zip(results) {
                        // The appender may have given up waiting; nothing to do then.
                        let _ = job.reply.send(result);
                    }
                }
            })
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(Self { jobs: Some(tx), thread: Some(thread) })
    }

    /// Queues `request` and waits for the writer's answer.
    pub fn append(&self, request: AppendRequest) -> Result<AppendOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or(StoreError::WriterStopped)?
            .send(WriteJob { request, reply })
            .map_err(|_| StoreError::WriterStopped)?;
        answer.recv().map_err(|_| StoreError::WriterStopped)?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop after it has answered every queued job.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `e` as the answer to every one of `jobs` appends: one failed commit fails its whole group.
pub(crate) fn fail_all(jobs: usize, e: StoreError) -> Vec<Result<AppendOutcome, StoreError>> {
    let e = Arc::new(e);
    (0..jobs).map(|_| Err(StoreError::Backend(Box::new(GroupFailed(e.clone()))))).collect()
}

/// One failed commit, reported to every append of its group.
#[derive(Debug)]
struct GroupFailed(Arc<StoreError>);

impl std::fmt::Display for GroupFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the group commit failed: {}", self.0)
    }
}

impl std::error::Error for GroupFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(self.0.as_ref())
    }
}
