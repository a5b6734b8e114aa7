//! The commit log and the group committer, in its two modes.
//!
//! Every commit on a node is one [`LogEntry`]: a dense LSN, the epoch of the shard it was
//! written under, the transaction id and the writes. Its stored form and the meta keys that say
//! how far the log is applied are in `storage::record`.
//!
//! The committer is one thread that owns the log. It runs in one of two modes, chosen when it
//! starts, because the two differ in when a commit's effects may be applied:
//!
//! * **Direct** ([`Committer::start`]): the shard has one copy (a standalone node, or a cluster
//!   of factor 1). A commit is final once this node's disk has it, so the committer writes the
//!   entry **and** its effects and the applied LSN in one atomic engine batch, so the log and
//!   the data can never disagree, and then persists. The log holds nothing unapplied.
//! * **WAL** ([`Committer::start_wal`], in `storage::wal`): the shard has replicas, and an entry
//!   is committed only once the in-sync set holds it (DESIGN §6.1), which replication decides.
//!   Until then nobody may read its effects, so the entry goes to the log alone; replication
//!   later calls [`Committer::commit_to`] and the effects are applied then, without an fsync of
//!   their own (after a crash, the entries past the applied LSN are pending again and are
//!   applied again). A replica appends its primary's entries with [`Committer::append`]. The
//!   committer knows nothing of replicas or the network: it carries out what the replication
//!   core decided, and tells it which entries are durable through a watch channel
//!   ([`Committer::durable`]).
//!
//! In both modes [`Committer::submit`] is the same call with the same answer: the LSN, once
//! the commit is durable and its effects applied. Sessions do not know which mode they run in.
//! Direct mode is kept separate rather than expressed as WAL mode with an immediate commit:
//! one batch and one fsync per group is where a single copy's write throughput comes from.
//!
//! Group commit: the committer takes every request waiting in its queue, writes them all in one
//! batch and calls `persist` (one fsync) once for the group, then answers each requester. Under
//! load many commits share one fsync; an idle node pays one fsync per commit. A commit is
//! acknowledged only after its fsync.
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
//!
//! [`MAX_KEY`]: super::engine::MAX_KEY
//! [`MAX_VALUE`]: super::engine::MAX_VALUE

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use super::engine::{Engine, Space, Write};
pub use super::group::CommitStats;
use super::group::{
    failed_error, mark_failed, stop_node, storable, write_and_persist, Request, MAX_GROUP,
};
pub use super::record::{
    applied_lsn, first_txn_record, log_id_at, log_key, read_entries, wal_state, LogEntry, LogId,
    LogRead, Lsn, WalState, APPLIED_LSN_KEY,
};
use super::record::{applied_write, encode_entry};
use super::wal::{self, Op};
use crate::error::{Error, Result};

/// Says why a new commit must be refused now, if it must (the replication runtime's check
/// before a primary's `submit`: too few in-sync copies, not the primary). See
/// [`Committer::set_gate`].
pub type Gate = Arc<dyn Fn() -> Option<Error> + Send + Sync>;

/// The receiver of a submitted commit's outcome.
pub type CommitReceiver = oneshot::Receiver<Result<Lsn>>;

/// The receiver of an append's outcome: the last durable entry of the log.
pub type AppendReceiver = oneshot::Receiver<Result<LogId>>;

/// The queue into the committer thread, by mode.
enum Queue {
    Direct(mpsc::Sender<Request>),
    Wal(mpsc::Sender<Op>),
}

/// What a WAL-mode committer shares with its thread.
struct WalHandles {
    state: Arc<Mutex<WalState>>,
    durable: watch::Receiver<LogId>,
}

/// The group committer of a node. Cheap to share behind an `Arc`.
pub struct Committer {
    queue: Mutex<Option<Queue>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    failed: Arc<AtomicBool>,
    /// Set in WAL mode (at start, or once by [`Committer::switch_to_wal`]).
    wal: OnceLock<WalHandles>,
    /// Asked before every submit, once set.
    gate: OnceLock<Gate>,
    /// Whether the log belongs to another node: a replica's log holds its primary's entries
    /// only, so what the node keeps for itself (its gateway's row-id blocks) is written beside
    /// the log ([`Committer::set_foreign`]).
    foreign: AtomicBool,
    /// Asked before a transaction reads the shard's data, once set.
    read_gate: OnceLock<Gate>,
    /// The shard epoch stamped on the entries submitted from now on ([`Committer::set_epoch`]).
    epoch: AtomicU64,
    /// How many commits and fsyncs the committer has done.
    pub stats: Arc<CommitStats>,
}

impl Committer {
    /// Starts the committer thread in Direct mode over `engine`; the next entry gets
    /// `next_lsn`.
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
            queue: Mutex::new(Some(Queue::Direct(tx))),
            thread: Mutex::new(thread),
            failed,
            wal: OnceLock::new(),
            gate: OnceLock::new(),
            foreign: AtomicBool::new(false),
            read_gate: OnceLock::new(),
            epoch: AtomicU64::new(1),
            stats,
        }
    }

    /// Starts the committer thread in WAL mode over `engine`, whose log is in `state` (read with
    /// [`wal_state`] at open). The entries in `state.pending()` stay unapplied until
    /// [`Committer::commit_to`] covers them. A state that says a snapshot install was cut short
    /// refuses every log write until [`Committer::begin_snapshot`] and
    /// [`Committer::finish_snapshot`] have installed one.
    pub fn start_wal(engine: Arc<dyn Engine>, state: WalState) -> Self {
        let failed = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(CommitStats::default());
        let (tx, thread, handles) = spawn_wal(engine, state, failed.clone(), stats.clone());
        let wal = OnceLock::new();
        let _ = wal.set(handles);
        Self {
            queue: Mutex::new(Some(Queue::Wal(tx))),
            thread: Mutex::new(thread),
            failed,
            wal,
            gate: OnceLock::new(),
            foreign: AtomicBool::new(false),
            read_gate: OnceLock::new(),
            epoch: AtomicU64::new(1),
            stats,
        }
    }

    /// Turns a Direct-mode committer into a WAL-mode one over the same `engine` (a node that
    /// joins a replicated cluster, before anything is committed in it): stops the Direct
    /// thread once its queue is written, reads the log's state and starts the WAL thread. A
    /// commit submitted while it switches is refused (the node serves nothing yet). A
    /// committer already in WAL mode is left as it is.
    pub fn switch_to_wal(&self, engine: Arc<dyn Engine>) -> Result<()> {
        if self.is_wal() {
            return Ok(());
        }
        let poisoned = || Error::Internal("committer lock".into());
        drop(self.queue.lock().map_err(|_| poisoned())?.take());
        if let Some(thread) = self.thread.lock().map_err(|_| poisoned())?.take() {
            let _ = thread.join();
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(failed_error());
        }
        let state = wal_state(engine.as_ref())?;
        let (tx, thread, handles) =
            spawn_wal(engine, state, self.failed.clone(), self.stats.clone());
        let _ = self.wal.set(handles);
        *self.thread.lock().map_err(|_| poisoned())? = thread;
        *self.queue.lock().map_err(|_| poisoned())? = Some(Queue::Wal(tx));
        Ok(())
    }

    /// Sets the check asked before every [`Committer::submit`] (once; later calls are
    /// ignored): a submit it refuses fails with its error and takes no LSN.
    pub fn set_gate(&self, gate: Gate) {
        let _ = self.gate.set(gate);
    }

    /// Sets the shard epoch the entries submitted from now on are stamped with: the primary
    /// driver sets its epoch before it lets writes in (the gate is shut while it changes).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }

    /// The shard epoch new entries are stamped with.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Says whether the log belongs to another node (this node is a replica of its shard).
    pub fn set_foreign(&self, foreign: bool) {
        self.foreign.store(foreign, Ordering::Release);
    }

    /// Whether the log belongs to another node (see [`Committer::set_foreign`]).
    pub fn is_foreign(&self) -> bool {
        self.foreign.load(Ordering::Acquire)
    }

    /// Sets the check asked before a transaction of this node starts to read or write the
    /// shard's data (once; later calls are ignored): see [`Committer::read_refusal`].
    pub fn set_read_gate(&self, gate: Gate) {
        let _ = self.read_gate.set(gate);
    }

    /// Why the shard's data must not be read now, if it must not: a restarted primary whose
    /// log holds entries not yet applied (some may have been acknowledged) would serve rows
    /// that miss them.
    pub fn read_refusal(&self) -> Option<Error> {
        self.read_gate.get().and_then(|gate| gate())
    }

    /// Why commits are refused right now (the answer of the gate set by
    /// [`Committer::set_gate`]), if they are.
    pub fn refusal(&self) -> Option<Error> {
        self.gate.get().and_then(|gate| gate())
    }

    /// Whether the committer runs in WAL mode.
    pub fn is_wal(&self) -> bool {
        self.wal.get().is_some()
    }

    /// Commits `writes` as one log entry (of the committer's epoch, [`Committer::set_epoch`])
    /// and returns its LSN once it is durable and applied.
    pub async fn commit(&self, txn: u64, writes: Vec<Write>) -> Result<Lsn> {
        let rx = self.submit(txn, writes)?;
        rx.await
            .map_err(|_| Error::Io("the committer stopped before answering".into()))?
    }

    /// Queues `writes` for commit as one log entry of the committer's epoch, and returns the
    /// receiver of its outcome. Commits are written in the order they are submitted, so a caller
    /// that submits under a lock orders its commit before any commit submitted after it releases
    /// the lock.
    ///
    /// In Direct mode the receiver resolves once the entry and its effects are durable. In WAL
    /// mode the entry is appended to the log alone (durably, in a group), and the receiver
    /// resolves once [`Committer::commit_to`] has applied it; with an error of class
    /// `UnknownOutcome` if the entry is dropped first (a truncation, a snapshot install).
    pub fn submit(&self, txn: u64, writes: Vec<Write>) -> Result<CommitReceiver> {
        if let Some(refusal) = self.gate.get().and_then(|gate| gate()) {
            return Err(refusal);
        }
        let (reply, rx) = oneshot::channel();
        let req = Request {
            epoch: self.epoch(),
            txn,
            writes,
            reply,
        };
        self.send(|q| match q {
            Queue::Direct(tx) => tx.send(req).map_err(|_| ()),
            Queue::Wal(tx) => tx.send(Op::Submit(req)).map_err(|_| ()),
        })?;
        Ok(rx)
    }

    /// As [`Committer::submit`], and also returns a receiver that fires, before the entry is
    /// applied or dropped, if replication says it cannot commit for now
    /// ([`Committer::fail`]): the submitter may answer its client then (SQLSTATE 40003, the
    /// outcome is unknown) while it keeps the transaction's locks until the first receiver
    /// resolves. In Direct mode the second receiver never fires (its sender is dropped).
    pub fn submit_watched(
        &self,
        txn: u64,
        writes: Vec<Write>,
    ) -> Result<(CommitReceiver, oneshot::Receiver<Error>)> {
        if !self.is_wal() {
            let (_, never) = oneshot::channel();
            return Ok((self.submit(txn, writes)?, never));
        }
        if let Some(refusal) = self.gate.get().and_then(|gate| gate()) {
            return Err(refusal);
        }
        let (reply, rx) = oneshot::channel();
        let (fail, failed) = oneshot::channel();
        let req = Request {
            epoch: self.epoch(),
            txn,
            writes,
            reply,
        };
        self.send(|q| match q {
            Queue::Wal(tx) => tx.send(Op::SubmitWatched(req, fail)).map_err(|_| ()),
            Queue::Direct(_) => Err(()),
        })?;
        Ok((rx, failed))
    }

    /// WAL mode: the entries `first..=last` cannot commit for now (too few in-sync copies):
    /// their watching submitters ([`Committer::submit_watched`]) hear `error` at once. The
    /// entries stay in the log, waiting: a later [`Committer::commit_to`] still applies them.
    pub fn fail(&self, first: Lsn, last: Lsn, error: Error) -> Result<()> {
        if !self.is_wal() {
            return Err(not_wal());
        }
        self.send(|q| match q {
            Queue::Wal(tx) => tx.send(Op::Fail(first, last, error)).map_err(|_| ()),
            Queue::Direct(_) => Err(()),
        })
    }

    /// Sends into the queue, refusing once a write failed or the committer shut down.
    fn send(&self, send: impl FnOnce(&Queue) -> std::result::Result<(), ()>) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(failed_error());
        }
        let queue = self
            .queue
            .lock()
            .map_err(|_| Error::Internal("committer lock".into()))?;
        let queue = queue
            .as_ref()
            .ok_or_else(|| Error::ShuttingDown("the node is shutting down".into()))?;
        send(queue).map_err(|()| Error::ShuttingDown("the committer has stopped".into()))
    }

    /// Sends a WAL-mode operation built around its reply channel, and returns the receiver.
    fn send_wal<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op,
    ) -> Result<oneshot::Receiver<Result<T>>> {
        if !self.is_wal() {
            return Err(not_wal());
        }
        let (reply, rx) = oneshot::channel();
        let op = op(reply);
        self.send(|q| match q {
            Queue::Wal(tx) => tx.send(op).map_err(|_| ()),
            Queue::Direct(_) => Err(()),
        })?;
        Ok(rx)
    }

    /// Sends a WAL-mode operation and waits for its answer.
    async fn call_wal<T>(&self, op: impl FnOnce(oneshot::Sender<Result<T>>) -> Op) -> Result<T> {
        self.send_wal(op)?
            .await
            .map_err(|_| Error::Io("the committer stopped before answering".into()))?
    }

    /// WAL mode: this node stopped being the shard's primary of `epoch` (a newer epoch has
    /// another). Every entry submitted before is written first; their watching submitters
    /// ([`Committer::submit_watched`]) hear at once that the outcome is unknown (the entries
    /// stay, to be applied or dropped as the new primary's log says), and every later submit
    /// of `epoch` or older is refused with `error` without taking an LSN, so none is left
    /// waiting for a commit this node will not make. A submit of a newer epoch (the node
    /// promoted again) is taken as before. Not durable: a restarted node refuses writes
    /// until its role is known.
    pub async fn seal(&self, epoch: u64, error: Error) -> Result<()> {
        self.call_wal(|reply| Op::Seal {
            epoch,
            error,
            answer_waiting: true,
            reply,
        })
        .await
        .map(|_| ())
    }

    /// WAL mode: a primary of `epoch` hands its shard over (a switchover). Every submit of
    /// `epoch` or older from now on is refused with `error` without taking an LSN; the entries
    /// submitted before are written (and wait for their commit as before). Returns the log's
    /// last entry: nothing of `epoch` will follow it unless [`Committer::resume`] is called.
    /// Not durable, as [`Committer::seal`].
    pub async fn pause(&self, epoch: u64, error: Error) -> Result<LogId> {
        self.call_wal(|reply| Op::Seal {
            epoch,
            error,
            answer_waiting: false,
            reply,
        })
        .await
    }

    /// WAL mode: submits of `epoch` are taken again after a [`Committer::pause`] (the
    /// switchover did not happen). A seal or pause of another epoch stays.
    pub fn resume(&self, epoch: u64) -> Result<()> {
        self.send_wal(|_reply: oneshot::Sender<Result<()>>| Op::Unseal(epoch))
            .map(|_| ())
    }

    /// Replica side, WAL mode: appends `entries`, which carry their LSNs and must continue the
    /// log densely (the first one right after the log's last entry, each next one the LSN
    /// after); anything else is refused whole with `Error::Internal` (deciding what to send is
    /// the replication core's work). The entries are written in a group with other appends and
    /// fsynced before the receiver resolves with the log's last durable entry. Nothing is
    /// applied: that waits for [`Committer::commit_to`]. An empty append resolves with the last
    /// durable entry.
    pub fn append(&self, entries: Vec<LogEntry>) -> Result<AppendReceiver> {
        self.send_wal(|reply| Op::Append(entries, reply))
    }

    /// WAL mode: the commit LSN reached `lsn`. Applies the effects of every appended, unapplied
    /// entry up to `lsn`, but never past the log's last entry, in LSN order, with the applied
    /// LSN, in one engine write and no fsync of its own; then answers their submitters and
    /// resolves with the applied LSN. An `lsn` at or below the applied one changes nothing.
    /// Entries appended after this call are not applied until another `commit_to` covers them.
    pub fn commit_to(&self, lsn: Lsn) -> Result<CommitReceiver> {
        self.send_wal(|reply| Op::CommitTo(lsn, reply))
    }

    /// WAL mode: drops the entries after `lsn` (a divergent suffix, never applied), durably,
    /// and returns the log's new last entry. Refused with `Error::Refused` if `lsn` is before
    /// the applied LSN: an applied entry is never undone. Submitters of dropped entries hear
    /// `UnknownOutcome`. The durable watch moves back to the new last entry.
    pub async fn truncate_after(&self, lsn: Lsn) -> Result<LogId> {
        self.call_wal(|reply| Op::TruncateAfter(lsn, reply)).await
    }

    /// WAL mode: drops the entries before `lsn`, which must be at most one past the applied
    /// LSN (an unapplied entry is never dropped from the front), and durably records the
    /// identity of the last one dropped as the log's base, which it returns. An `lsn` at or
    /// before the log's first entry changes nothing and returns the current base.
    pub async fn truncate_before(&self, lsn: Lsn) -> Result<LogId> {
        self.call_wal(|reply| Op::TruncateBefore(lsn, reply)).await
    }

    /// WAL mode, install side of a snapshot: durably marks the store as installing a snapshot,
    /// then clears its `data`, `txn` and `log` spaces (in bounded batches) and persists.
    /// Submitters still waiting hear `UnknownOutcome`. Until [`Committer::finish_snapshot`], the
    /// log refuses submits, appends, commits and truncations, and a restart reports
    /// [`WalState::installing_snapshot`]: the data is not to be served.
    pub async fn begin_snapshot(&self) -> Result<()> {
        self.call_wal(Op::BeginSnapshot).await
    }

    /// WAL mode: writes one batch of a snapshot being installed (puts into `data` and `txn`
    /// only; anything else is refused), without an fsync: `finish_snapshot` persists.
    pub async fn install_batch(&self, writes: Vec<Write>) -> Result<()> {
        self.call_wal(|reply| Op::InstallBatch(writes, reply)).await
    }

    /// WAL mode: ends a snapshot install at `at`: the applied LSN is `at.lsn`, the log is empty
    /// and continues after `at` (its base), the marker is cleared, and all of it is durable.
    pub async fn finish_snapshot(&self, at: LogId) -> Result<()> {
        self.call_wal(|reply| Op::FinishSnapshot(at, reply)).await
    }

    /// WAL mode: the last durable entry of the log, updated after every fsync without blocking
    /// the committer. It moves back when a truncation drops the log's end.
    pub fn durable(&self) -> Result<watch::Receiver<LogId>> {
        self.wal
            .get()
            .map(|w| w.durable.clone())
            .ok_or_else(not_wal)
    }

    /// WAL mode: the log's state after the last operation written.
    pub fn log_state(&self) -> Result<WalState> {
        let wal = self.wal.get().ok_or_else(not_wal)?;
        let state = wal
            .state
            .lock()
            .map_err(|_| Error::Internal("committer state lock".into()))?;
        Ok(*state)
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

/// Starts a WAL-mode committer thread over `engine`, whose log is in `state`.
fn spawn_wal(
    engine: Arc<dyn Engine>,
    state: WalState,
    failed: Arc<AtomicBool>,
    stats: Arc<CommitStats>,
) -> (mpsc::Sender<Op>, Option<JoinHandle<()>>, WalHandles) {
    let (tx, rx) = mpsc::channel::<Op>();
    let shared_state = Arc::new(Mutex::new(state));
    let (durable_tx, durable_rx) = watch::channel(state.last);
    let shared = wal::Shared {
        failed,
        stats,
        state: shared_state.clone(),
        durable: durable_tx,
    };
    let thread = std::thread::Builder::new()
        .name("ddb-wal".into())
        .spawn(move || wal::run(engine, rx, state, shared))
        .ok();
    let handles = WalHandles {
        state: shared_state,
        durable: durable_rx,
    };
    (tx, thread, handles)
}

/// The refusal of a WAL-mode operation by a Direct-mode committer.
fn not_wal() -> Error {
    Error::Internal(
        "the log is not in WAL mode: this store commits in Direct mode (one copy)".into(),
    )
}

/// The Direct-mode committer loop.
fn run(
    engine: Arc<dyn Engine>,
    rx: mpsc::Receiver<Request>,
    mut next_lsn: Lsn,
    failed: Arc<AtomicBool>,
    stats: Arc<CommitStats>,
) {
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
            let bytes = match encode_entry(&entry) {
                Ok(bytes) => bytes,
                Err(e) => {
                    encode_error = Some(e);
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
        batch.push(applied_write(next_lsn - 1));
        let result = match encode_error {
            Some(e) => Err(e),
            None => write_and_persist(engine.as_ref(), batch),
        };
        match result {
            Ok(()) => {
                stats.count_group(group.len());
                for (req, lsn) in group.into_iter().zip(lsns) {
                    let _ = req.reply.send(Ok(lsn));
                }
            }
            Err(e) => {
                mark_failed(&failed, &e);
                for req in group {
                    let _ = req.reply.send(Err(e.clone()));
                }
                stop_node();
            }
        }
    }
    if let Err(e) = engine.persist() {
        tracing::error!("final persist failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound;

    use crate::storage::engine::{Memory, Scan, Snapshot, MAX_KEY};

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
                c.commit(1, vec![Write::Put(Space::Data, vec![i], vec![])])
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
                c.commit(7, vec![Write::Put(Space::Data, vec![i], vec![i])])
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
        assert!(committer.commit(1, vec![]).await.is_err());
    }

    #[tokio::test]
    async fn each_entry_carries_the_epoch_it_was_committed_under() {
        let engine: Arc<dyn Engine> = Arc::new(Memory::new());
        let committer = Committer::start(engine.clone(), 5);
        // Submitted back to back, these usually share a group and one engine batch: the epoch is
        // still each entry's own.
        let receivers = [(1, 10), (2, 11), (1, 12)].map(|(epoch, txn)| {
            committer.set_epoch(epoch);
            committer
                .submit(txn, vec![Write::Put(Space::Data, vec![txn as u8], vec![])])
                .unwrap()
        });
        for rx in receivers {
            rx.await.unwrap().unwrap();
        }
        committer.set_epoch(7);
        committer.commit(13, vec![]).await.unwrap();
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
        let good = committer.submit(1, put(vec![1])).unwrap();
        let long = committer.submit(2, put(vec![7; MAX_KEY + 1])).unwrap();
        let empty = committer.submit(3, put(Vec::new())).unwrap();
        let after = committer.submit(4, put(vec![2])).unwrap();
        assert_eq!(good.await.unwrap().unwrap(), 1);
        for refused in [long, empty] {
            let err = refused.await.unwrap().unwrap_err();
            assert_eq!(err.sqlstate(), "54000", "{err}");
            assert!(err.to_string().contains("65535"), "{err}");
        }
        // The refused requests took no LSN; the node keeps writing.
        assert_eq!(after.await.unwrap().unwrap(), 2);
        assert_eq!(committer.commit(5, put(vec![3])).await.unwrap(), 3);
        assert_eq!(engine.get(Space::Data, &[2]).unwrap(), Some(vec![1]));
        assert_eq!(applied_lsn(engine.as_ref()).unwrap(), 3);
    }
}
