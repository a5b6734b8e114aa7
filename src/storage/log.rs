//! The commit log and the group committer.
//!
//! Every commit on a node is one [`LogEntry`]: a dense LSN, the epoch of the shard it was
//! written under, the transaction id and the writes. The committer writes the entry **and** its
//! effects in one atomic engine batch, so the log and the data can never disagree, and then
//! persists.
//!
//! Group commit: the committer is one thread that takes every commit request waiting in its
//! queue, writes them all in one batch and calls `persist` (one fsync) once for the group, then
//! answers each requester. Under load many commits share one fsync; an idle node pays one fsync
//! per commit. A commit is acknowledged only after its fsync.
//!
//! The committer assigns the LSN; the caller names the epoch, per commit. An entry is identified
//! by (epoch, LSN) (DESIGN §6.1), and the epoch belongs to the shard, not to the committer: a
//! node promoted to primary stamps its new epoch from the next commit on, and a replica appends
//! its primary's entries with the epochs they were written under. The committer does not check
//! the epoch; fencing an old primary is the replication layer's work.
//!
//! A request the engine cannot store (a key outside 1 to [`MAX_KEY`] bytes, a value or a log
//! entry over [`MAX_VALUE`]) fails alone, with SQLSTATE 54000 naming the limit, before it gets an
//! LSN: the statement that sent it should have been refused when it was planned, and a bad
//! request is no reason to stop a node. The rest of its group is written as usual.
//!
//! If a write or an fsync fails the committer stops accepting commits (the state of the disk is
//! unknown after a failed fsync); the node must be restarted, and recovery replays from what is
//! durable. A panic inside the engine's write is treated the same way: the committer cannot
//! know what it left behind.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::engine::{check_keys, Engine, Space, Write, MAX_KEY, MAX_VALUE};
use crate::error::{sqlstate, Error, Result};

/// A log sequence number: dense, starting at 1.
pub type Lsn = u64;

/// The receiver of a submitted commit's outcome.
pub type CommitReceiver = oneshot::Receiver<Result<Lsn>>;

/// The meta key under which the last applied LSN is stored.
pub const APPLIED_LSN_KEY: &[u8] = b"applied_lsn";

/// Most commits written in one group; bounds the batch size and the latency of its first member.
const MAX_GROUP: usize = 512;

/// How long the committer lets the sessions whose commits failed tell their clients why, before
/// it stops the node (PostgreSQL sends its PANIC message before it aborts, too). Nothing is
/// committed meanwhile: the committer refuses every commit once one has failed.
const FAILURE_NOTICE: std::time::Duration = std::time::Duration::from_millis(500);

/// One committed transaction, as stored in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub lsn: Lsn,
    /// The shard epoch under which the entry was written (fences old primaries; DESIGN §3).
    pub epoch: u64,
    /// The transaction id, 0 for node-internal writes.
    pub txn: u64,
    pub writes: Vec<Write>,
}

/// The key of a log entry in [`Space::Log`]: the LSN big-endian, so the log scans in order.
pub fn log_key(lsn: Lsn) -> [u8; 8] {
    lsn.to_be_bytes()
}

struct Request {
    epoch: u64,
    txn: u64,
    writes: Vec<Write>,
    reply: oneshot::Sender<Result<Lsn>>,
}

/// Counters of the committer, for status output and benchmarks.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Commits written.
    pub commits: AtomicU64,
    /// Groups written, each with one fsync.
    pub groups: AtomicU64,
}

/// The group committer of a node. Cheap to share behind an `Arc`.
pub struct Committer {
    queue: std::sync::Mutex<Option<mpsc::Sender<Request>>>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    failed: Arc<AtomicBool>,
    /// How many commits and fsyncs the committer has done.
    pub stats: Arc<CommitStats>,
}

impl Committer {
    /// Starts the committer thread over `engine`; the next entry gets `next_lsn`.
    pub fn start(engine: Arc<dyn Engine>, next_lsn: Lsn) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        let failed = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(CommitStats::default());
        let (flag, counters) = (failed.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("ddb-committer".into())
            .spawn(move || run(engine, rx, next_lsn, flag, counters))
            .ok();
        Self {
            queue: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(thread),
            failed,
            stats,
        }
    }

    /// Commits `writes` as one log entry of shard epoch `epoch` and returns its LSN once it is
    /// durable.
    pub async fn commit(&self, epoch: u64, txn: u64, writes: Vec<Write>) -> Result<Lsn> {
        let rx = self.submit(epoch, txn, writes)?;
        rx.await
            .map_err(|_| Error::Io("the committer stopped before answering".into()))?
    }

    /// Queues `writes` for commit as one log entry of shard epoch `epoch`, and returns the
    /// receiver of its outcome. Commits are written in the order they are submitted, so a caller
    /// that submits under a lock orders its commit before any commit submitted after it releases
    /// the lock.
    pub fn submit(&self, epoch: u64, txn: u64, writes: Vec<Write>) -> Result<CommitReceiver> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::Io(
                "a previous write to disk failed; restart the node".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        let queue = self
            .queue
            .lock()
            .map_err(|_| Error::Internal("committer lock".into()))?;
        let sender = queue
            .as_ref()
            .ok_or_else(|| Error::ShuttingDown("the node is shutting down".into()))?;
        sender
            .send(Request {
                epoch,
                txn,
                writes,
                reply,
            })
            .map_err(|_| Error::ShuttingDown("the committer has stopped".into()))?;
        Ok(rx)
    }

    /// Stops taking commits, waits for the queued ones to be written and persisted.
    pub fn shutdown(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    engine: Arc<dyn Engine>,
    rx: mpsc::Receiver<Request>,
    mut next_lsn: Lsn,
    failed: Arc<AtomicBool>,
    stats: Arc<CommitStats>,
) {
    // Tests of the committer run in the test process itself: they must not abort it.
    let stop_on_failure = !cfg!(test);
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        let mut batch = Vec::new();
        let mut lsns = Vec::with_capacity(group.len());
        let mut encode_error = None;
        let mut accepted = Vec::with_capacity(group.len());
        for req in group {
            let entry = LogEntry {
                lsn: next_lsn,
                epoch: req.epoch,
                txn: req.txn,
                writes: req.writes.clone(),
            };
            let bytes = match postcard::to_stdvec(&entry) {
                Ok(bytes) => bytes,
                Err(e) => {
                    encode_error = Some(Error::Internal(format!("encode log entry: {e}")));
                    Vec::new()
                }
            };
            // A request the engine cannot store fails alone and takes no LSN.
            if let Err(e) = storable(&req.writes, bytes.len()) {
                let _ = req.reply.send(Err(e));
                continue;
            }
            batch.push(Write::Put(Space::Log, log_key(next_lsn).to_vec(), bytes));
            batch.extend(req.writes.iter().cloned());
            lsns.push(next_lsn);
            next_lsn += 1;
            accepted.push(req);
        }
        let group = accepted;
        if group.is_empty() {
            continue;
        }
        batch.push(Write::Put(
            Space::Meta,
            APPLIED_LSN_KEY.to_vec(),
            (next_lsn - 1).to_be_bytes().to_vec(),
        ));
        let result = match encode_error {
            Some(e) => Err(e),
            None => write_and_persist(engine.as_ref(), batch),
        };
        match result {
            Ok(()) => {
                stats.groups.fetch_add(1, Ordering::Relaxed);
                stats
                    .commits
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                for (req, lsn) in group.into_iter().zip(lsns) {
                    let _ = req.reply.send(Ok(lsn));
                }
            }
            Err(e) => {
                // After a failed write or fsync the state of the disk is unknown, and what was
                // written may already be visible to readers: stop at once, as PostgreSQL does.
                // Recovery at restart starts again from what is durable.
                tracing::error!("commit failed ({e}); stopping the node to protect the data");
                failed.store(true, Ordering::Release);
                for req in group {
                    let _ = req.reply.send(Err(e.clone()));
                }
                if stop_on_failure {
                    std::thread::sleep(FAILURE_NOTICE);
                    std::process::abort();
                }
            }
        }
    }
    if let Err(e) = engine.persist() {
        tracing::error!("final persist failed: {e}");
    }
}

/// Refuses writes the engine cannot store, whose log entry would be `entry_len` bytes, with
/// SQLSTATE 54000 naming the limit.
fn storable(writes: &[Write], entry_len: usize) -> Result<()> {
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

/// Writes one group's batch and persists it. A panic in the engine is a failed write.
fn write_and_persist(engine: &dyn Engine, batch: Vec<Write>) -> Result<()> {
    let write =
        std::panic::AssertUnwindSafe(|| engine.write(batch).and_then(|()| engine.persist()));
    std::panic::catch_unwind(write).unwrap_or_else(|_| {
        Err(Error::Internal(
            "the storage engine panicked in a write".into(),
        ))
    })
}

/// Reads the last applied LSN from the meta space (0 for a new store).
pub fn applied_lsn(engine: &dyn Engine) -> Result<Lsn> {
    match engine.get(Space::Meta, APPLIED_LSN_KEY)? {
        None => Ok(0),
        Some(bytes) => {
            let a: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("applied_lsn is not 8 bytes".into()))?;
            Ok(u64::from_be_bytes(a))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound;

    use crate::storage::engine::{Memory, Scan, Snapshot};

    /// A memory engine whose fsync takes 5 ms, like a slow disk.
    struct SlowPersist(Memory);

    impl Engine for SlowPersist {
        fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
            self.0.get(space, key)
        }
        fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
            self.0.scan_prefix(space, prefix)
        }
        fn scan_range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_> {
            self.0.scan_range(space, start, end)
        }
        fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
            self.0.snapshot()
        }
        fn write(&self, writes: Vec<Write>) -> Result<()> {
            self.0.write(writes)
        }
        fn persist(&self) -> Result<()> {
            std::thread::sleep(std::time::Duration::from_millis(5));
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_one_fsync() {
        let committer = Arc::new(Committer::start(Arc::new(SlowPersist(Memory::new())), 1));
        let mut handles = Vec::new();
        for i in 0..64u8 {
            let c = committer.clone();
            handles.push(tokio::spawn(async move {
                c.commit(1, 1, vec![Write::Put(Space::Data, vec![i], vec![])])
                    .await
            }));
        }
        for h in handles {
            h.await.unwrap().unwrap();
        }
        let commits = committer.stats.commits.load(Ordering::Relaxed);
        let groups = committer.stats.groups.load(Ordering::Relaxed);
        assert_eq!(commits, 64);
        // While one group's fsync runs, the next commits queue up and go together.
        assert!(groups < 32, "{groups} fsyncs for 64 concurrent commits");
    }

    #[tokio::test]
    async fn commits_get_dense_lsns_and_their_log_entries() {
        let engine: Arc<dyn Engine> = Arc::new(Memory::new());
        let committer = Committer::start(engine.clone(), 1);
        let mut handles = Vec::new();
        let committer = Arc::new(committer);
        for i in 0..20u8 {
            let c = committer.clone();
            handles.push(tokio::spawn(async move {
                c.commit(1, 7, vec![Write::Put(Space::Data, vec![i], vec![i])])
                    .await
            }));
        }
        let mut lsns = Vec::new();
        for h in handles {
            lsns.push(h.await.unwrap().unwrap());
        }
        lsns.sort();
        assert_eq!(lsns, (1..=20).collect::<Vec<_>>());
        assert_eq!(applied_lsn(engine.as_ref()).unwrap(), 20);
        let log: Vec<_> = engine
            .scan_prefix(Space::Log, &[])
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(log.len(), 20);
        let entry: LogEntry = postcard::from_bytes(&log[0].1).unwrap();
        assert_eq!(entry.lsn, 1);
        assert_eq!(engine.get(Space::Data, &[3]).unwrap(), Some(vec![3]));
        committer.shutdown();
        assert!(committer.commit(1, 1, vec![]).await.is_err());
    }

    #[tokio::test]
    async fn each_entry_carries_the_epoch_it_was_committed_under() {
        let engine: Arc<dyn Engine> = Arc::new(Memory::new());
        let committer = Committer::start(engine.clone(), 5);
        // Submitted back to back, these usually share a group and one engine batch: the epoch is
        // still each entry's own.
        let receivers = [(1, 10), (2, 11), (1, 12)].map(|(epoch, txn)| {
            committer
                .submit(
                    epoch,
                    txn,
                    vec![Write::Put(Space::Data, vec![txn as u8], vec![])],
                )
                .unwrap()
        });
        for rx in receivers {
            rx.await.unwrap().unwrap();
        }
        committer.commit(7, 13, vec![]).await.unwrap();
        let entries: Vec<LogEntry> = engine
            .scan_prefix(Space::Log, &[])
            .map(|kv| postcard::from_bytes(&kv.unwrap().1).unwrap())
            .collect();
        let stamps: Vec<_> = entries.iter().map(|e| (e.lsn, e.epoch, e.txn)).collect();
        assert_eq!(stamps, vec![(5, 1, 10), (6, 2, 11), (7, 1, 12), (8, 7, 13)]);
    }

    #[tokio::test]
    async fn a_request_the_engine_cannot_store_fails_alone_and_the_committer_goes_on() {
        let engine: Arc<dyn Engine> = Arc::new(Memory::new());
        let committer = Committer::start(engine.clone(), 1);
        let put = |k: Vec<u8>| vec![Write::Put(Space::Data, k, vec![1])];
        // Submitted back to back, so they usually share a group.
        let good = committer.submit(1, 1, put(vec![1])).unwrap();
        let long = committer.submit(1, 2, put(vec![7; MAX_KEY + 1])).unwrap();
        let empty = committer.submit(1, 3, put(Vec::new())).unwrap();
        let after = committer.submit(1, 4, put(vec![2])).unwrap();
        assert_eq!(good.await.unwrap().unwrap(), 1);
        for refused in [long, empty] {
            let err = refused.await.unwrap().unwrap_err();
            assert_eq!(err.sqlstate(), "54000", "{err}");
            assert!(err.to_string().contains("65535"), "{err}");
        }
        // The refused requests took no LSN; the node keeps writing.
        assert_eq!(after.await.unwrap().unwrap(), 2);
        assert_eq!(committer.commit(1, 5, put(vec![3])).await.unwrap(), 3);
        assert_eq!(engine.get(Space::Data, &[2]).unwrap(), Some(vec![1]));
        assert_eq!(applied_lsn(engine.as_ref()).unwrap(), 3);
    }
}
