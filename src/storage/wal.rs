//! The committer in WAL mode: the log is the shard's write-ahead log, and effects are applied
//! only once replication says an entry is committed (DESIGN §6.1).
//!
//! One thread owns the log, as in Direct mode (`storage::log`). It takes every operation
//! waiting in its queue, in order, and turns each run of appends and commits into **one**
//! engine batch:
//!
//! * A primary's `Submit` gets the next LSN and puts its entry in the log; the submitter waits
//!   (its writes held in memory) until a `CommitTo` covers it.
//! * A replica's `Append` puts entries at the LSNs they carry, which must continue the log
//!   densely.
//! * `CommitTo(lsn)` applies the effects of every appended, unapplied entry up to `lsn` (never
//!   past the log's last entry), in LSN order, with the `applied_lsn` key, and answers their
//!   submitters. A commit far ahead of the applied LSN (a replica catching up) is applied in
//!   batches of at most [`APPLY_CHUNK`] entries, each with its own applied LSN, so no batch
//!   holds more than a bounded part of the log.
//!
//! A run that appended anything is fsynced once (group commit) before anyone hears of it, and
//! the last durable [`LogId`] is then published on a watch channel, which never blocks the
//! thread. A run that only applies is not fsynced: its entries are durable already, so after a
//! crash recovery finds them again in (applied, last], pending, and the next `CommitTo` applies
//! them again. Applying twice is harmless because an entry's writes are whole values (puts and
//! deletes), and the applied LSN moves in the same batch as the effects, so a batch is never
//! applied half.
//!
//! Truncations and the snapshot install end the current run and are written on their own, each
//! made durable before it is answered. A snapshot install first writes its marker durably and
//! only then clears the data, so a crash at any point of it leaves the marker, and the store
//! knows at restart that its data is half a snapshot.
//!
//! A failed write or fsync stops the thread from writing anything more, as in Direct mode.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tokio::sync::{oneshot, watch};

use super::engine::{Engine, Space, Write};
use super::group::{
    failed_error, mark_failed, stop_node, storable, write_batch, CommitStats, Request, MAX_GROUP,
};
use super::record::{
    applied_write, base_write, encode_entry, id_at, log_key, read_entry, LogEntry, LogId, Lsn,
    WalState, SNAPSHOT_INSTALL_KEY,
};
use crate::error::{Error, Result};

/// Keys removed per batch when a snapshot install clears a space, so that clearing a large
/// shard never builds one batch of the whole shard.
const CLEAR_CHUNK: usize = 4096;

/// Most entries applied in one batch: a commit LSN far ahead of the applied one (a replica
/// catching up) is applied in several batches, each with its applied LSN.
const APPLY_CHUNK: Lsn = 512;

/// One operation for the WAL-mode committer thread.
pub(crate) enum Op {
    Submit(Request),
    /// A submit whose submitter also hears, early, that its entry cannot commit for now.
    SubmitWatched(Request, oneshot::Sender<Error>),
    /// Tells the submitters of the waiting entries `first..=last` that they cannot commit
    /// for now; the entries stay waiting (see [`crate::storage::Committer::fail`]).
    Fail(Lsn, Lsn, Error),
    Append(Vec<LogEntry>, oneshot::Sender<Result<LogId>>),
    CommitTo(Lsn, oneshot::Sender<Result<Lsn>>),
    TruncateAfter(Lsn, oneshot::Sender<Result<LogId>>),
    TruncateBefore(Lsn, oneshot::Sender<Result<LogId>>),
    BeginSnapshot(oneshot::Sender<Result<()>>),
    InstallBatch(Vec<Write>, oneshot::Sender<Result<()>>),
    FinishSnapshot(LogId, oneshot::Sender<Result<()>>),
    /// Submits of `epoch` or older are refused from now on (see
    /// [`crate::storage::Committer::seal`] and [`crate::storage::Committer::pause`]); with
    /// `answer_waiting`, the waiting entries' watching submitters hear the outcome is unknown.
    /// Answered with the log's last entry.
    Seal {
        epoch: u64,
        error: Error,
        answer_waiting: bool,
        reply: oneshot::Sender<Result<LogId>>,
    },
    /// Submits of `epoch` are taken again (see [`crate::storage::Committer::resume`]).
    Unseal(u64),
}

/// What the thread shares with the [`crate::storage::Committer`] that started it.
pub(crate) struct Shared {
    pub failed: Arc<AtomicBool>,
    pub stats: Arc<CommitStats>,
    /// The log's state after the last operation written.
    pub state: Arc<Mutex<WalState>>,
    /// The last durable entry, published after every fsync.
    pub durable: watch::Sender<LogId>,
}

/// A primary's submitted entry, appended and waiting to be applied.
struct Waiting {
    id: LogId,
    writes: Vec<Write>,
    reply: oneshot::Sender<Result<Lsn>>,
    /// Where the submitter hears early that the entry cannot commit for now, if it listens.
    fail: Option<oneshot::Sender<Error>>,
}

/// One run of appends and commits, written as one batch.
#[derive(Default)]
struct Run {
    batch: Vec<Write>,
    /// Whether the run put entries into the log, and so needs an fsync.
    appended: bool,
    commits: usize,
    /// Replica appends, answered with the last durable entry after the fsync.
    append_replies: Vec<oneshot::Sender<Result<LogId>>>,
    /// Callers of `commit_to`, answered with the applied LSN after the write.
    commit_replies: Vec<oneshot::Sender<Result<Lsn>>>,
    /// Submitters whose entries this run applies.
    applied: Vec<Waiting>,
    /// Epochs and writes of the entries appended by replica appends in this run, which a
    /// commit in the same run applies before they are in the engine.
    fresh: BTreeMap<Lsn, (u64, Vec<Write>)>,
}

/// The thread's state.
struct Wal {
    engine: Arc<dyn Engine>,
    state: WalState,
    waiting: VecDeque<Waiting>,
    shared: Shared,
    /// Submits of this epoch or older are refused with the error (the node was deposed).
    sealed: Option<(u64, Error)>,
}

/// Runs the WAL-mode committer until its queue closes, then persists what it wrote.
pub(crate) fn run(
    engine: Arc<dyn Engine>,
    rx: mpsc::Receiver<Op>,
    state: WalState,
    shared: Shared,
) {
    let mut wal = Wal {
        engine,
        state,
        waiting: VecDeque::new(),
        shared,
        sealed: None,
    };
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        wal.group(ops);
    }
    if let Err(e) = wal.engine.persist() {
        tracing::error!("final persist failed: {e}");
    }
}

impl Wal {
    /// Carries out one group of operations in queue order.
    fn group(&mut self, ops: Vec<Op>) {
        let mut run = Run::default();
        for op in ops {
            if self.shared.failed.load(Ordering::Acquire) {
                refuse(op, failed_error());
                continue;
            }
            match op {
                Op::Submit(req) => self.submit(&mut run, req, None),
                Op::SubmitWatched(req, fail) => self.submit(&mut run, req, Some(fail)),
                Op::Fail(first, last, error) => self.fail(first, last, error),
                Op::Unseal(epoch) => {
                    if self.sealed.as_ref().is_some_and(|(e, _)| *e == epoch) {
                        self.sealed = None;
                    }
                }
                Op::Append(entries, reply) => self.append(&mut run, entries, reply),
                Op::CommitTo(lsn, reply) => self.commit_to(&mut run, lsn, reply),
                other => {
                    self.flush(std::mem::take(&mut run));
                    if !self.shared.failed.load(Ordering::Acquire) {
                        self.alone(other);
                    } else {
                        refuse(other, failed_error());
                    }
                }
            }
        }
        self.flush(run);
    }

    /// Refuses log writes while a snapshot is half installed.
    fn check_not_installing(&self) -> Result<()> {
        if self.state.installing_snapshot {
            return Err(Error::Refused(
                "a snapshot is being installed: the log takes no entries until it is finished"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Tells the submitters of waiting entries `first..=last` that they cannot commit for
    /// now. Their entries stay waiting: they are applied if a later commit covers them.
    fn fail(&mut self, first: Lsn, last: Lsn, error: Error) {
        for w in self.waiting.iter_mut() {
            if (first..=last).contains(&w.id.lsn) {
                if let Some(fail) = w.fail.take() {
                    let _ = fail.send(error.clone());
                }
            }
        }
    }

    /// A primary's commit: the next LSN, into the log only.
    fn submit(&mut self, run: &mut Run, req: Request, fail: Option<oneshot::Sender<Error>>) {
        if let Err(e) = self.check_not_installing() {
            let _ = req.reply.send(Err(e));
            return;
        }
        if let Some((epoch, error)) = &self.sealed {
            if req.epoch <= *epoch {
                // It takes no LSN: it certainly did not commit.
                let _ = req.reply.send(Err(error.clone()));
                return;
            }
        }
        let entry = LogEntry {
            lsn: self.state.last.lsn + 1,
            epoch: req.epoch,
            txn: req.txn,
            writes: req.writes,
        };
        let bytes =
            match encode_entry(&entry).and_then(|b| storable(&entry.writes, b.len()).map(|()| b)) {
                Ok(bytes) => bytes,
                // A request the engine cannot store fails alone and takes no LSN.
                Err(e) => {
                    let _ = req.reply.send(Err(e));
                    return;
                }
            };
        run.batch
            .push(Write::Put(Space::Log, log_key(entry.lsn).to_vec(), bytes));
        run.appended = true;
        run.commits += 1;
        self.state.last = entry.id();
        self.waiting.push_back(Waiting {
            id: entry.id(),
            writes: entry.writes,
            reply: req.reply,
            fail,
        });
    }

    /// A replica's append: entries at their own LSNs, continuing the log densely.
    fn append(
        &mut self,
        run: &mut Run,
        entries: Vec<LogEntry>,
        reply: oneshot::Sender<Result<LogId>>,
    ) {
        let encoded = self.check_not_installing().and_then(|()| {
            self.check_continues(&entries)?;
            entries
                .iter()
                .map(|e| {
                    let bytes = encode_entry(e)?;
                    storable(&e.writes, bytes.len())?;
                    Ok(bytes)
                })
                .collect::<Result<Vec<_>>>()
        });
        let encoded = match encoded {
            Ok(encoded) => encoded,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        for (entry, bytes) in entries.into_iter().zip(encoded) {
            run.batch
                .push(Write::Put(Space::Log, log_key(entry.lsn).to_vec(), bytes));
            run.appended = true;
            run.commits += 1;
            self.state.last = entry.id();
            run.fresh.insert(entry.lsn, (entry.epoch, entry.writes));
        }
        run.append_replies.push(reply);
    }

    /// Refuses entries that do not start right after the log's last entry, or skip an LSN.
    fn check_continues(&self, entries: &[LogEntry]) -> Result<()> {
        let next = self.state.last.lsn + 1;
        for (expected, entry) in (next..).zip(entries) {
            if entry.lsn != expected {
                let what = if entry.lsn < expected {
                    "overlaps"
                } else {
                    "leaves a gap after"
                };
                return Err(Error::Internal(format!(
                    "an append of entry {} {what} the log, whose last entry is {} (expected {expected})",
                    entry.lsn,
                    expected - 1
                )));
            }
        }
        Ok(())
    }

    /// Applies every appended entry up to `lsn` (no further than the log's last entry).
    fn commit_to(&mut self, run: &mut Run, lsn: Lsn, reply: oneshot::Sender<Result<Lsn>>) {
        if let Err(e) = self.check_not_installing() {
            let _ = reply.send(Err(e));
            return;
        }
        let target = lsn.min(self.state.last.lsn);
        while self.state.applied.lsn < target {
            let upto = target.min(self.state.applied.lsn + APPLY_CHUNK);
            match self.effects(run, upto) {
                Ok((effects, applied)) => {
                    run.batch.extend(effects);
                    run.batch.push(applied_write(upto));
                    self.state.applied = applied;
                    while self.waiting.front().is_some_and(|w| w.id.lsn <= upto) {
                        run.applied.extend(self.waiting.pop_front());
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
            if upto < target {
                // A long way to go (a replica catching up): write what this run holds, so
                // that one batch never holds the writes of more than a chunk of entries.
                self.flush(std::mem::take(run));
                if self.shared.failed.load(Ordering::Acquire) {
                    let _ = reply.send(Err(failed_error()));
                    return;
                }
            }
        }
        run.commit_replies.push(reply);
    }

    /// The writes of the entries after the applied one up to `target`, in LSN order, and the
    /// identity of the entry at `target`. An entry's writes come from its waiting submitter,
    /// from an append of this run, or from the log.
    fn effects(&self, run: &Run, target: Lsn) -> Result<(Vec<Write>, LogId)> {
        let mut effects = Vec::new();
        let mut waiting = self.waiting.iter().peekable();
        let mut id = self.state.applied;
        for lsn in self.state.applied.lsn + 1..=target {
            while waiting.next_if(|w| w.id.lsn < lsn).is_some() {}
            if let Some(w) = waiting.next_if(|w| w.id.lsn == lsn) {
                effects.extend(w.writes.iter().cloned());
                id = w.id;
            } else if let Some((epoch, writes)) = run.fresh.get(&lsn) {
                effects.extend(writes.iter().cloned());
                id = LogId::new(*epoch, lsn);
            } else {
                let entry = read_entry(self.engine.as_ref(), lsn)?.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "log entry {lsn} is missing though the log runs to {}",
                        self.state.last
                    ))
                })?;
                id = entry.id();
                effects.extend(entry.writes);
            }
        }
        Ok((effects, id))
    }

    /// Writes a run as one batch, fsyncs it if it appended, and answers its callers.
    fn flush(&mut self, run: Run) {
        if run.batch.is_empty() && run.append_replies.is_empty() && run.commit_replies.is_empty() {
            return;
        }
        match write_batch(self.engine.as_ref(), run.batch, run.appended) {
            Ok(()) => {
                if run.appended {
                    self.shared.stats.count_group(run.commits);
                    self.shared.durable.send_replace(self.state.last);
                }
                self.publish();
                for reply in run.append_replies {
                    let _ = reply.send(Ok(self.state.last));
                }
                for w in run.applied {
                    let _ = w.reply.send(Ok(w.id.lsn));
                }
                for reply in run.commit_replies {
                    let _ = reply.send(Ok(self.state.applied.lsn));
                }
            }
            Err(e) => {
                mark_failed(&self.shared.failed, &e);
                for reply in run.append_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                for w in run.applied.into_iter().chain(self.waiting.drain(..)) {
                    let _ = w.reply.send(Err(e.clone()));
                }
                for reply in run.commit_replies {
                    let _ = reply.send(Err(e.clone()));
                }
                stop_node();
            }
        }
    }

    /// Makes the thread's state visible to `Committer::log_state`.
    fn publish(&self) {
        if let Ok(mut state) = self.shared.state.lock() {
            *state = self.state;
        }
    }

    /// An operation written on its own, made durable before it is answered.
    fn alone(&mut self, op: Op) {
        match op {
            Op::TruncateAfter(lsn, reply) => {
                let result = self.truncate_after(lsn);
                self.answer(reply, result);
            }
            Op::TruncateBefore(lsn, reply) => {
                let result = self.truncate_before(lsn);
                self.answer(reply, result);
            }
            Op::BeginSnapshot(reply) => {
                let result = self.begin_snapshot();
                self.answer(reply, result);
            }
            Op::InstallBatch(writes, reply) => {
                let result = self.install_batch(writes);
                self.answer(reply, result);
            }
            Op::FinishSnapshot(at, reply) => {
                let result = self.finish_snapshot(at);
                self.answer(reply, result);
            }
            Op::Seal {
                epoch,
                error,
                answer_waiting,
                reply,
            } => {
                // Everything submitted before is in the log now (the run before this was
                // written): when deposed, its watching submitters hear at once that the
                // outcome is unknown.
                for w in self.waiting.iter_mut().filter(|_| answer_waiting) {
                    if let Some(fail) = w.fail.take() {
                        let _ = fail.send(Error::UnknownOutcome(format!(
                            "the commit's log entry {} was written, but this node stopped being \
                             the shard's primary before it was committed: {error}",
                            w.id
                        )));
                    }
                }
                self.sealed = Some((epoch, error));
                let _ = reply.send(Ok(self.state.last));
            }
            Op::Submit(_)
            | Op::SubmitWatched(..)
            | Op::Fail(..)
            | Op::Append(..)
            | Op::CommitTo(..)
            | Op::Unseal(_) => {
                refuse(
                    op,
                    Error::Internal("a log write was sent to be written alone".into()),
                );
            }
        }
    }

    /// Answers one operation written alone. A refusal (a bad argument) leaves the store as it
    /// was; a failed write stops the committer.
    fn answer<T>(&mut self, reply: oneshot::Sender<Result<T>>, result: Step<T>) {
        match result {
            Step::Done(value) => {
                self.publish();
                let _ = reply.send(Ok(value));
            }
            Step::Refused(e) => {
                let _ = reply.send(Err(e));
            }
            Step::Failed(e) => {
                mark_failed(&self.shared.failed, &e);
                for w in self.waiting.drain(..) {
                    let _ = w.reply.send(Err(e.clone()));
                }
                let _ = reply.send(Err(e));
                stop_node();
            }
        }
    }

    /// Writes `batch`, and makes it durable if `persist`.
    fn write(&self, batch: Vec<Write>, persist: bool) -> Result<()> {
        write_batch(self.engine.as_ref(), batch, persist)
    }

    fn truncate_after(&mut self, lsn: Lsn) -> Step<LogId> {
        if let Err(e) = self.check_not_installing() {
            return Step::Refused(e);
        }
        if lsn < self.state.applied.lsn {
            return Step::Refused(Error::Refused(format!(
                "cannot drop the log after entry {lsn}: entries up to {} are applied",
                self.state.applied
            )));
        }
        if lsn >= self.state.last.lsn {
            return Step::Done(self.state.last);
        }
        let last = match id_at(self.engine.as_ref(), self.state.base, lsn) {
            Ok(id) => id,
            Err(e) => return Step::Refused(e),
        };
        let cut = Write::DeleteRange(
            Space::Log,
            Bound::Excluded(log_key(lsn).to_vec()),
            Bound::Unbounded,
        );
        if let Err(e) = self.write(vec![cut], true) {
            return Step::Failed(e);
        }
        self.state.last = last;
        while self.waiting.back().is_some_and(|w| w.id.lsn > lsn) {
            if let Some(w) = self.waiting.pop_back() {
                let _ = w
                    .reply
                    .send(Err(dropped("a new primary's log replaced it")));
            }
        }
        self.shared.durable.send_replace(last);
        Step::Done(last)
    }

    fn truncate_before(&mut self, lsn: Lsn) -> Step<LogId> {
        if let Err(e) = self.check_not_installing() {
            return Step::Refused(e);
        }
        if lsn > self.state.applied.lsn + 1 {
            return Step::Refused(Error::Refused(format!(
                "cannot drop the log before entry {lsn}: only entries up to {} are applied",
                self.state.applied
            )));
        }
        if lsn <= self.state.first() {
            return Step::Done(self.state.base);
        }
        let base = match id_at(self.engine.as_ref(), self.state.base, lsn - 1) {
            Ok(id) => id,
            Err(e) => return Step::Refused(e),
        };
        let batch = vec![
            Write::DeleteRange(
                Space::Log,
                Bound::Included(log_key(self.state.first()).to_vec()),
                Bound::Excluded(log_key(lsn).to_vec()),
            ),
            base_write(base),
        ];
        if let Err(e) = self.write(batch, true) {
            return Step::Failed(e);
        }
        self.state.base = base;
        Step::Done(base)
    }

    fn begin_snapshot(&mut self) -> Step<()> {
        // The marker first, durably: from here on a crash leaves a store that knows its data is
        // not to be trusted.
        let marker = Write::Put(Space::Meta, SNAPSHOT_INSTALL_KEY.to_vec(), Vec::new());
        if let Err(e) = self.write(vec![marker], true) {
            return Step::Failed(e);
        }
        self.state.installing_snapshot = true;
        for w in self.waiting.drain(..) {
            let _ = w
                .reply
                .send(Err(dropped("the node is installing a snapshot")));
        }
        for space in [Space::Data, Space::Txn, Space::Log] {
            if let Err(e) = self.clear(space) {
                return Step::Failed(e);
            }
        }
        match self.write(Vec::new(), true) {
            Ok(()) => Step::Done(()),
            Err(e) => Step::Failed(e),
        }
    }

    /// Empties `space` in batches of at most [`CLEAR_CHUNK`] keys. Each scan starts after the
    /// last key removed, so it does not walk the tombstones of the batches before it.
    fn clear(&self, space: Space) -> Result<()> {
        let mut from = Bound::Unbounded;
        loop {
            let mut last = None;
            let scan = self
                .engine
                .scan_range(space, from.clone(), Bound::Unbounded);
            for pair in scan.take(CLEAR_CHUNK) {
                last = Some(pair?.0);
            }
            let Some(last) = last else {
                return Ok(());
            };
            let chunk = Write::DeleteRange(space, from, Bound::Included(last.clone()));
            self.write(vec![chunk], false)?;
            from = Bound::Excluded(last);
        }
    }

    fn install_batch(&mut self, writes: Vec<Write>) -> Step<()> {
        if !self.state.installing_snapshot {
            return Step::Refused(Error::Internal(
                "a snapshot batch arrived with no snapshot install begun".into(),
            ));
        }
        if let Some(w) = writes
            .iter()
            .find(|w| !matches!(w, Write::Put(Space::Data | Space::Txn, ..)))
        {
            return Step::Refused(Error::Internal(format!(
                "a snapshot carries puts to the data and txn spaces only, not {:?} to {}",
                std::mem::discriminant(w),
                w.space().name()
            )));
        }
        if let Err(e) = check_storable(&writes) {
            return Step::Refused(e);
        }
        match self.write(writes, false) {
            Ok(()) => Step::Done(()),
            Err(e) => Step::Failed(e),
        }
    }

    fn finish_snapshot(&mut self, at: LogId) -> Step<()> {
        if !self.state.installing_snapshot {
            return Step::Refused(Error::Internal(
                "a snapshot was finished with no snapshot install begun".into(),
            ));
        }
        let batch = vec![
            Write::DeleteRange(Space::Log, Bound::Unbounded, Bound::Unbounded),
            applied_write(at.lsn),
            base_write(at),
            Write::Delete(Space::Meta, SNAPSHOT_INSTALL_KEY.to_vec()),
        ];
        if let Err(e) = self.write(batch, true) {
            return Step::Failed(e);
        }
        self.state = WalState {
            applied: at,
            last: at,
            base: at,
            installing_snapshot: false,
        };
        self.shared.durable.send_replace(at);
        Step::Done(())
    }
}

/// How an operation written alone ended.
enum Step<T> {
    Done(T),
    /// Refused before anything was written.
    Refused(Error),
    /// A write or fsync failed.
    Failed(Error),
}

/// Refuses a snapshot batch the engine cannot store, before any of it is written.
fn check_storable(writes: &[Write]) -> Result<()> {
    storable(writes, 0)
}

/// The error of a submitted commit whose entry left the log before it was committed.
fn dropped(why: &str) -> Error {
    Error::UnknownOutcome(format!(
        "the commit's log entry was dropped before it committed: {why}"
    ))
}

/// Answers an operation that will not be carried out.
fn refuse(op: Op, e: Error) {
    match op {
        Op::Submit(req) | Op::SubmitWatched(req, _) => drop(req.reply.send(Err(e))),
        Op::Fail(..) | Op::Unseal(_) => {}
        Op::Append(_, reply) | Op::TruncateAfter(_, reply) | Op::TruncateBefore(_, reply) => {
            drop(reply.send(Err(e)))
        }
        Op::CommitTo(_, reply) => drop(reply.send(Err(e))),
        Op::BeginSnapshot(reply) | Op::InstallBatch(_, reply) | Op::FinishSnapshot(_, reply) => {
            drop(reply.send(Err(e)))
        }
        Op::Seal { reply, .. } => drop(reply.send(Err(e))),
    }
}
