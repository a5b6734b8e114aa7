//! What both modes of the committer share: the commit request, the checks a request passes
//! before it gets an LSN, the write of one group, and what happens when that write fails.
//!
//! Kept apart from `log` (the committer and its Direct mode) and `wal` (its WAL mode) so that
//! both use one definition of each: a request is refused for the same reasons, and a failed
//! write stops the node the same way, whichever mode wrote it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::oneshot;

use super::engine::{check_keys, Engine, Write, MAX_KEY, MAX_VALUE};
use super::record::Lsn;
use crate::error::{sqlstate, Error, Result};

/// Most requests taken into one group; bounds the batch size and the latency of its first
/// member.
pub(crate) const MAX_GROUP: usize = 512;

/// How long the committer lets the sessions whose commits failed tell their clients why, before
/// it stops the node (PostgreSQL sends its PANIC message before it aborts, too). Nothing is
/// committed meanwhile: the committer refuses every commit once one has failed.
const FAILURE_NOTICE: std::time::Duration = std::time::Duration::from_millis(500);

/// One commit submitted by a session.
pub(crate) struct Request {
    pub epoch: u64,
    pub txn: u64,
    pub writes: Vec<Write>,
    pub reply: oneshot::Sender<Result<Lsn>>,
}

/// Counters of the committer, for status output and benchmarks.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Commits written (in WAL mode: appended to the log).
    pub commits: AtomicU64,
    /// Groups written, each with one fsync.
    pub groups: AtomicU64,
}

impl CommitStats {
    pub(crate) fn count_group(&self, commits: usize) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.commits.fetch_add(commits as u64, Ordering::Relaxed);
    }
}

/// Refuses writes the engine cannot store, whose log entry would be `entry_len` bytes, with
/// SQLSTATE 54000 naming the limit.
pub(crate) fn storable(writes: &[Write], entry_len: usize) -> Result<()> {
    let limit = |what: String| Error::sql(sqlstate::PROGRAM_LIMIT_EXCEEDED, what);
    check_keys(writes).map_err(|_| {
        limit(format!(
            "a write has a key the storage engine cannot store: keys are 1 to {MAX_KEY} bytes"
        ))
    })?;
    for w in writes {
        if let Write::Put(_, _, v) = w {
            if v.len() > MAX_VALUE {
                return Err(limit(format!(
                    "a value of {} bytes exceeds the storage engine's maximum of {MAX_VALUE} bytes",
                    v.len()
                )));
            }
        }
    }
    if entry_len > MAX_VALUE {
        return Err(limit(format!(
            "a commit of {entry_len} bytes exceeds the log's maximum entry of {MAX_VALUE} bytes"
        )));
    }
    Ok(())
}

/// Writes one batch and, if `persist`, makes it durable. A panic in the engine is a failed
/// write.
pub(crate) fn write_batch(engine: &dyn Engine, batch: Vec<Write>, persist: bool) -> Result<()> {
    let write = std::panic::AssertUnwindSafe(|| {
        if !batch.is_empty() {
            engine.write(batch)?;
        }
        if persist {
            engine.persist()?;
        }
        Ok(())
    });
    std::panic::catch_unwind(write).unwrap_or_else(|_| {
        Err(Error::Internal(
            "the storage engine panicked in a write".into(),
        ))
    })
}

/// Writes one group's batch and persists it. A panic in the engine is a failed write.
pub(crate) fn write_and_persist(engine: &dyn Engine, batch: Vec<Write>) -> Result<()> {
    write_batch(engine, batch, true)
}

/// Marks the committer failed after a write or fsync failed: the state of the disk is unknown,
/// and what was written may already be visible to readers, so the committer refuses everything
/// from now on. The caller answers the failed requests, then calls [`stop_node`].
pub(crate) fn mark_failed(failed: &AtomicBool, e: &Error) {
    tracing::error!("a write to disk failed ({e}); stopping the node to protect the data");
    failed.store(true, Ordering::Release);
}

/// Stops the node after a failed write, once the sessions have had a moment to tell their
/// clients why, as PostgreSQL does. Recovery at restart starts again from what is durable.
/// Tests of the committer run in the test process itself: there it returns, and the committer
/// goes on refusing.
pub(crate) fn stop_node() {
    if !cfg!(test) {
        std::thread::sleep(FAILURE_NOTICE);
        std::process::abort();
    }
}

/// The error for a request made after a write failed.
pub(crate) fn failed_error() -> Error {
    Error::Io("a previous write to disk failed; restart the node".into())
}
