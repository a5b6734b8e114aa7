//! A replica's replication driver: the [`Replica`] core given its log and its socket.
//!
//! A node that is a replica of its shard runs one driver. Every [`Replicate`] request that
//! reaches the node is handed to it by the RPC connection **when its frame is read**, through
//! one bounded channel ([`INBOX`] requests), so the driver sees a primary's appends in the
//! order the primary sent them (one task per request would reorder them). The driver runs the
//! core one event at a time:
//!
//! * an append the core accepts goes to [`crate::storage::Committer::append`] at once, and the driver takes the
//!   next request without waiting for its fsync: appends are pipelined into the committer's
//!   group commit, and each completion comes back as [`Event::Persisted`];
//! * an append request is answered with an ack only once the core acks an LSN at or past the
//!   request's last entry, which it does only after `Persisted` (H8): an answer never claims
//!   what is not on disk. A heartbeat (no entries) is answered with the newest ack;
//! * a refusal answers its request at once ([`ReplicateReply::Refused`]);
//! * `Apply{up_to}` becomes [`crate::storage::Committer::commit_to`]: the committed entries are applied, never
//!   beyond the commit LSN the primary sent or the prefix checked against it (H4, H5);
//! * `SaveEpoch` is written durably in the meta space before anything else is done (H6).
//!
//! The core is rebuilt from the store when the driver starts: the saved epoch, the log's last
//! entry and its applied LSN; every entry on disk counts as persisted, none as matched.
//!
//! **Truncation.** Every [`TRUNCATE_EVERY`] the front of the log is dropped through
//! [`Replica::truncate_through`] (the node's `--log-retention` entries behind the applied LSN
//! stay; nothing unapplied goes), bounded again by the applied LSN the store has written (the
//! core orders applies before the committer has done them), when that drops at least
//! [`TRUNCATE_MIN`] entries. The drop and the log's new base are one durable write; once it
//! is answered the core hears [`Event::Truncated`] and forgets the epochs before the base, so
//! it is the core a restart would build. The committer writes the drop after every apply
//! queued before it, and its fsync makes them durable too, so the applied LSN on disk never
//! falls behind the base.
//!
//! **Snapshots.** A primary whose log no longer reaches back far enough sends the shard's
//! `data` and `txn` spaces instead ([`Replicate::Snapshot`]): `Begin` durably marks the store as
//! installing and clears it, each `Batch` is written, and `Finish` hands the whole snapshot to
//! the core, whose `Install{at}` is `finish_snapshot(at)` (durable); only then is it
//! `Persisted` and acked (H10). A store left half installed by a crash refuses every append
//! (answering `Diverged`), so its primary sends a snapshot again.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::protocol::{Replicate, ReplicateReply, RolledBack, SnapshotPart};
use crate::replication::replica::{Action, Event};
use crate::replication::{EpochHistory, LogId, Reject, Replica};
use crate::storage::{LogEntry, Lsn, Space, Store, WalState, Write};

/// How often a log (a primary's or a replica's) is considered for truncation.
pub const TRUNCATE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// The fewest entries a truncation drops.
pub const TRUNCATE_MIN: Lsn = 64;

/// How many replication requests may wait for the driver.
pub const INBOX: usize = 64;

/// The meta key of the newest shard epoch a replica has seen (DESIGN §3: fencing).
const EPOCH_KEY: &[u8] = b"replica_epoch";

/// The meta key of the last run of applied entries rolled back ([`RolledBack`], JSON).
const ROLLED_BACK_KEY: &[u8] = b"rolled_back";

/// The last run of applied entries `store` rolled back on rejoining a new primary, if any.
pub fn rolled_back(store: &Store) -> Result<Option<RolledBack>> {
    match store.engine.get(Space::Meta, ROLLED_BACK_KEY)? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("the rollback record: {e}"))),
        None => Ok(None),
    }
}

/// A request for the driver and where its answer goes.
pub type Inbound = (Replicate, oneshot::Sender<Result<ReplicateReply>>);

/// The identity of a stored entry, as the replication cores name it.
pub fn core_id(id: crate::storage::LogId) -> LogId {
    LogId::new(id.epoch, id.lsn)
}

/// The epoch history of the log of `store`, whose state is `state`, read from the log itself:
/// where each epoch's entries begin, found by a binary search over the entries' own epochs
/// (they never fall along a log), a few reads per epoch. A log whose front was dropped (a
/// truncation, a snapshot) knows its epochs from its base on. The log must not change while
/// it is read (no driver runs yet, or it is the driver's own).
pub fn log_history(store: &Store, state: &WalState) -> Result<EpochHistory> {
    let engine = store.engine.as_ref();
    history_of(state, |lsn| {
        crate::storage::log_id_at(engine, lsn)?
            .map(|id| id.epoch)
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "log entry {lsn} is missing (the log ends at {})",
                    state.last
                ))
            })
    })
}

/// The epoch history of a log in `state` whose entry at an LSN has the epoch `epoch_at` reads.
fn history_of(
    state: &WalState,
    mut epoch_at: impl FnMut(Lsn) -> Result<u64>,
) -> Result<EpochHistory> {
    let mut history = EpochHistory::from_snapshot(core_id(state.base));
    let mut first = state.base.lsn + 1;
    while first <= state.last.lsn {
        let epoch = epoch_at(first)?;
        history.note(LogId::new(epoch, first));
        if epoch >= state.last.epoch {
            break;
        }
        // The first entry of a newer epoch lies in (first, last]: `lo` is of `epoch`, `hi`
        // of a newer one.
        let (mut lo, mut hi) = (first, state.last.lsn);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if epoch_at(mid)? > epoch {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        first = hi;
    }
    history.note(core_id(state.last));
    Ok(history)
}

/// An append request waiting for its ack.
struct Waiting {
    session: u64,
    /// The LSN of its last entry (its `prev` for a heartbeat).
    end: Lsn,
    reply: oneshot::Sender<Result<ReplicateReply>>,
}

/// The replica's driver.
struct Driver {
    shard: ShardId,
    core: Replica,
    store: Arc<Store>,
    waiting: VecDeque<Waiting>,
    /// The newest ack the core gave: its session and entry.
    acked: Option<(u64, LogId)>,
    /// A snapshot install is begun and not finished.
    installing: bool,
    /// How many entries behind the applied LSN the log keeps.
    retention: Lsn,
    /// The applies asked of the committer and not done yet.
    applies: tokio::task::JoinSet<()>,
}

/// The replica core as the store's log says it is now, and whether a snapshot install is
/// half done.
fn open_core(store: &Store) -> Result<(Replica, bool)> {
    let state = store.log_state()?;
    let saved = match store.engine.get(Space::Meta, EPOCH_KEY)? {
        Some(b) => u64::from_be_bytes(
            b.as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("replica_epoch is not 8 bytes".into()))?,
        ),
        None => 0,
    };
    let history = log_history(store, &state)?;
    let core = Replica::new(saved, history, core_id(state.last), state.applied.lsn)
        .map_err(|e| Error::Corrupt(format!("this replica's log: {e}")))?;
    Ok((core, state.installing_snapshot))
}

/// The handle of a running replica driver.
pub struct ReplicaDriver {
    inbox: mpsc::Sender<Inbound>,
    stop: mpsc::Sender<oneshot::Sender<()>>,
}

impl ReplicaDriver {
    /// Where the RPC listener hands the primary's requests.
    pub fn inbox(&self) -> mpsc::Sender<Inbound> {
        self.inbox.clone()
    }

    /// Stops the driver (the node is being promoted): the requests still waiting are answered
    /// with an error, and it returns once every append it handed the committer is durable and
    /// every apply it asked for is done, so the store's log state is final.
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.stop.send(done).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

/// Starts the driver of a replica of `shard` over `store`, keeping `retention` entries of its
/// log behind the applied LSN.
pub fn start(shard: ShardId, store: Arc<Store>, retention: Lsn) -> Result<ReplicaDriver> {
    let (core, installing) = open_core(&store)?;
    let (tx, rx) = mpsc::channel(INBOX);
    let (stop_tx, stop_rx) = mpsc::channel(1);
    let driver = Driver {
        shard,
        core,
        store,
        waiting: VecDeque::new(),
        acked: None,
        installing,
        retention,
        applies: tokio::task::JoinSet::new(),
    };
    tokio::spawn(driver.run(rx, stop_rx));
    Ok(ReplicaDriver {
        inbox: tx,
        stop: stop_tx,
    })
}

type Persisting = FuturesUnordered<oneshot::Receiver<Result<crate::storage::LogId>>>;

/// The truncation in flight (one at a time), answered with the log's new base.
type Truncating = FuturesUnordered<BoxFuture<'static, Result<crate::storage::LogId>>>;

impl Driver {
    async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Inbound>,
        mut stop: mpsc::Receiver<oneshot::Sender<()>>,
    ) {
        let mut persisting: Persisting = FuturesUnordered::new();
        let mut truncate = tokio::time::interval(TRUNCATE_EVERY);
        truncate.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut truncating: Truncating = FuturesUnordered::new();
        loop {
            tokio::select! {
                done = stop.recv() => {
                    self.finish(&mut persisting, &mut truncating).await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                Some(_) = self.applies.join_next(), if !self.applies.is_empty() => {}
                _ = truncate.tick(), if truncating.is_empty() => self.truncate(&mut truncating),
                done = truncating.next(), if !truncating.is_empty() => match done {
                    Some(Ok(base)) => {
                        tracing::debug!("replica: truncated the log through {base}");
                        let actions = self.core.step(Event::Truncated { base: core_id(base) });
                        if let Err(e) = self.act(actions, &[], &mut persisting).await {
                            tracing::error!("replica: {e}");
                        }
                    }
                    // A snapshot install that began or ended meanwhile: nothing was dropped.
                    Some(Err(Error::Refused(why))) => {
                        tracing::debug!("replica: the log was not truncated: {why}");
                    }
                    Some(Err(e)) => tracing::warn!("replica: cannot truncate the log: {e}"),
                    None => {}
                },
                request = inbox.recv() => match request {
                    Some((request, reply)) => self.request(request, reply, &mut persisting).await,
                    None => break,
                },
                done = persisting.next(), if !persisting.is_empty() => {
                    if let Some(done) = done {
                        self.persisted(done, &mut persisting).await;
                    }
                }
            }
            self.answer();
        }
    }

    async fn request(
        &mut self,
        request: Replicate,
        reply: oneshot::Sender<Result<ReplicateReply>>,
        persisting: &mut Persisting,
    ) {
        match request {
            Replicate::Open { shard, epoch, .. } | Replicate::Fence { shard, epoch } => {
                if shard != self.shard {
                    let _ = reply.send(Err(self.wrong_shard(shard)));
                    return;
                }
                if epoch < self.core.epoch() {
                    let known = self.core.epoch();
                    let _ = reply.send(Ok(ReplicateReply::Refused(Reject::StaleEpoch { known })));
                    return;
                }
                let fence = matches!(request, Replicate::Fence { .. });
                let actions = self.core.step(Event::Epoch { epoch });
                if let Err(e) = self.act(actions, &[], persisting).await {
                    let _ = reply.send(Err(e));
                    return;
                }
                if fence {
                    // The last entry a fence answers is where the new epoch begins: every
                    // append accepted before it is made durable first (or, failed, dropped
                    // from the core), so the answer never names an entry a crash could lose.
                    while let Some(done) = persisting.next().await {
                        self.persisted(done, persisting).await;
                    }
                }
                let _ = reply.send(Ok(ReplicateReply::Opened {
                    last: self.core.last(),
                    persisted: self.core.persisted(),
                    applied: self.core.applied(),
                }));
            }
            Replicate::Append {
                shard,
                epoch,
                session,
                prev,
                entries,
                commit,
            } => {
                if shard != self.shard {
                    let _ = reply.send(Err(self.wrong_shard(shard)));
                    return;
                }
                if self.installing {
                    // Half a snapshot: nothing but a new snapshot can bring this store back.
                    let applied = self.core.applied();
                    let _ = reply.send(Ok(ReplicateReply::Refused(Reject::Diverged { applied })));
                    return;
                }
                let ids: Vec<LogId> = entries.iter().map(|e| core_id(e.id())).collect();
                // Network input: a batch whose end would overflow is malformed.
                let Some(end) = u64::try_from(entries.len())
                    .ok()
                    .and_then(|n| prev.lsn.checked_add(n))
                else {
                    let why = format!("a batch of {} entries after {prev}", entries.len());
                    let _ = reply.send(Ok(ReplicateReply::Refused(Reject::Malformed(why))));
                    return;
                };
                let actions = self.core.step(Event::Batch {
                    session,
                    epoch,
                    prev,
                    entries: ids,
                    commit,
                });
                match self.act(actions, &entries, persisting).await {
                    Ok(Some(reject)) => {
                        let _ = reply.send(Ok(ReplicateReply::Refused(reject)));
                    }
                    Ok(None) => self.waiting.push_back(Waiting {
                        session,
                        end,
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Replicate::Snapshot {
                shard,
                epoch,
                session,
                at,
                part,
            } => {
                if shard != self.shard {
                    let _ = reply.send(Err(self.wrong_shard(shard)));
                    return;
                }
                if epoch < self.core.epoch() {
                    let known = self.core.epoch();
                    let _ = reply.send(Ok(ReplicateReply::Refused(Reject::StaleEpoch { known })));
                    return;
                }
                match self.snapshot(session, epoch, at, part, persisting).await {
                    Ok(Some(reject)) => {
                        let _ = reply.send(Ok(ReplicateReply::Refused(reject)));
                    }
                    Ok(None) if self.installing => {
                        let _ = reply.send(Ok(ReplicateReply::Stored));
                    }
                    Ok(None) => self.waiting.push_back(Waiting {
                        session,
                        end: at.lsn,
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
        }
    }

    /// An append handed to the committer is done: durable, or failed.
    async fn persisted(
        &mut self,
        done: std::result::Result<Result<crate::storage::LogId>, oneshot::error::RecvError>,
        persisting: &mut Persisting,
    ) {
        match done {
            Ok(Ok(durable)) => {
                let actions = self.core.step(Event::Persisted {
                    up_to: core_id(durable),
                });
                if let Err(e) = self.act(actions, &[], persisting).await {
                    tracing::error!("replica: {e}");
                }
            }
            Ok(Err(e)) => self.append_failed(e, persisting),
            Err(_) => self.append_failed(
                Error::Io("the committer stopped before an append was durable".into()),
                persisting,
            ),
        }
    }

    /// One part of a snapshot; returns the core's refusal, if any. After `Finish` the
    /// snapshot is installed and durable, and the ack covers it.
    async fn snapshot(
        &mut self,
        session: u64,
        epoch: u64,
        at: LogId,
        part: SnapshotPart,
        persisting: &mut Persisting,
    ) -> Result<Option<Reject>> {
        let committer = &self.store.committer;
        match part {
            SnapshotPart::Begin { epochs } => {
                if !self.installing {
                    if let Err(e) = self.record_rollback(epoch, epochs) {
                        tracing::warn!(
                            shard = self.shard,
                            "replica: cannot record what the snapshot rolls back: {e}"
                        );
                    }
                }
                committer.begin_snapshot().await?;
                self.installing = true;
                tracing::info!("replica: installing a snapshot at {at}");
                Ok(None)
            }
            SnapshotPart::Batch(writes) => {
                if !self.installing {
                    return Err(Error::Refused(
                        "a snapshot batch with no snapshot begun".into(),
                    ));
                }
                committer.install_batch(writes).await?;
                Ok(None)
            }
            SnapshotPart::Finish => {
                if !self.installing {
                    return Err(Error::Refused(
                        "a snapshot finished with no snapshot begun".into(),
                    ));
                }
                let actions = self.core.step(Event::Snapshot { session, epoch, at });
                if let Some(reject) = self.act(actions, &[], persisting).await? {
                    return Ok(Some(reject));
                }
                // `Install` made it durable: it is persisted now.
                let actions = self.core.step(Event::Persisted { up_to: at });
                let refused = self.act(actions, &[], persisting).await?;
                tracing::info!("replica: installed a snapshot at {at}");
                Ok(refused)
            }
        }
    }

    /// Before a snapshot of the primary of `epoch`, whose log's epochs begin at `epochs` (its
    /// own log's history), replaces the data: the applied entries of this log the primary's
    /// does not have (in `async` mode, an old primary's tail lost in a failover) are rolled
    /// back by it. Says so in the log and keeps the record durably for `ddb status` (DESIGN
    /// §6.2, "Rejoining"). Only a report: a history it cannot use is warned about, and the
    /// snapshot goes on.
    fn record_rollback(&self, epoch: u64, epochs: Vec<(u64, Lsn)>) -> Result<()> {
        let primary = match EpochHistory::new(epochs) {
            Ok(h) if !h.pairs().is_empty() => h,
            other => {
                tracing::warn!(
                    shard = self.shard,
                    "replica: a snapshot without a usable epoch history of its primary's log \
                     ({:?}): what it rolls back here is not known",
                    other.err()
                );
                return Ok(());
            }
        };
        let (history, last, applied) = (self.core.history(), self.core.last(), self.core.applied());
        // An entry both histories give the same epoch is shared (log matching), so the last
        // such entry is exact when the primary's history reaches back to it. When none does,
        // the logs part before the primary's history begins: at least everything from there
        // (and from this history's own first entry) on is not shared.
        let (first, exact) = match history.shared_with(last.lsn, &primary) {
            Some(shared) => (shared + 1, true),
            None => {
                let theirs = primary.pairs().first().map_or(1, |p| p.1);
                let ours = history.pairs().first().map_or(1, |p| p.1);
                (theirs.max(ours), false)
            }
        };
        if first > applied {
            return Ok(());
        }
        let record = RolledBack {
            first_lsn: first,
            last_lsn: applied,
            epoch: history.epoch_at(applied).unwrap_or(0),
            exact,
            dropped: last.lsn.saturating_sub(applied),
            by_epoch: epoch,
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_millis() as u64),
        };
        tracing::warn!(
            shard = self.shard,
            "replica: rolling back {record}, applied here but not in the log of the primary of \
             epoch {epoch} (lost in a failover), and dropping {} unapplied entries after them: \
             the data is rebuilt from a snapshot of that primary",
            record.dropped
        );
        let json = serde_json::to_vec(&record)
            .map_err(|e| Error::Internal(format!("the rollback record: {e}")))?;
        self.store.engine.write(vec![Write::Put(
            Space::Meta,
            ROLLED_BACK_KEY.to_vec(),
            json,
        )])?;
        self.store.engine.persist()?;
        Ok(())
    }

    /// Starts dropping the front of the log that the retention no longer keeps, if that is at
    /// least [`TRUNCATE_MIN`] entries.
    fn truncate(&self, truncating: &mut Truncating) {
        if self.installing {
            return;
        }
        let state = match self.store.log_state() {
            Ok(state) if !state.installing_snapshot => state,
            _ => return,
        };
        let through = self
            .core
            .truncate_through(self.retention)
            .min(state.applied.lsn);
        if through < state.base.lsn.saturating_add(TRUNCATE_MIN) {
            return;
        }
        let store = self.store.clone();
        truncating.push(Box::pin(async move {
            store.committer.truncate_before(through + 1).await
        }));
    }

    /// Ends the driver's work: what waits for an ack hears that the replica stopped, and
    /// what was handed to the committer (appends, applies, a truncation) is waited for.
    async fn finish(&mut self, persisting: &mut Persisting, truncating: &mut Truncating) {
        for w in self.waiting.drain(..) {
            let _ = w.reply.send(Err(Error::ShuttingDown(
                "this node stopped being a replica (it is being promoted)".into(),
            )));
        }
        while persisting.next().await.is_some() {}
        while truncating.next().await.is_some() {}
        while self.applies.join_next().await.is_some() {}
        tracing::info!(shard = self.shard, "replica: driver stopped");
    }

    fn wrong_shard(&self, shard: ShardId) -> Error {
        Error::Refused(format!(
            "this node is a replica of shard {}, not of shard {shard}",
            self.shard
        ))
    }

    /// Carries out the core's actions in order; returns the refusal of the batch, if any.
    /// `entries` are the batch's entries, whose payloads an `Append` names by identity.
    async fn act(
        &mut self,
        actions: Vec<Action>,
        entries: &[LogEntry],
        persisting: &mut Persisting,
    ) -> Result<Option<Reject>> {
        let mut refused = None;
        let committer = &self.store.committer;
        for action in actions {
            match action {
                Action::SaveEpoch { epoch } => {
                    let write = Write::Put(
                        Space::Meta,
                        EPOCH_KEY.to_vec(),
                        epoch.to_be_bytes().to_vec(),
                    );
                    self.store.engine.write(vec![write])?;
                    self.store.engine.persist()?;
                }
                Action::Append {
                    truncate_after,
                    entries: ids,
                } => {
                    if let Some(lsn) = truncate_after {
                        committer.truncate_after(lsn).await?;
                    }
                    let first = ids.first().map_or(Lsn::MAX, |id| id.lsn);
                    let new: Vec<LogEntry> =
                        entries.iter().filter(|e| e.lsn >= first).cloned().collect();
                    persisting.push(committer.append(new)?);
                }
                Action::Install { at } => {
                    committer
                        .finish_snapshot(crate::storage::LogId::new(at.epoch, at.lsn))
                        .await?;
                    self.installing = false;
                }
                Action::Ack { session, up_to } => self.acked = Some((session, up_to)),
                Action::Refuse { reject, .. } => refused = Some(reject),
                Action::Apply { up_to } => {
                    let rx = committer.commit_to(up_to)?;
                    self.applies.spawn(async move {
                        match rx.await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => {
                                tracing::error!("replica: applying up to {up_to} failed: {e}")
                            }
                            Err(_) => tracing::error!(
                                "replica: the committer stopped before applying up to {up_to}"
                            ),
                        }
                    });
                }
            }
        }
        Ok(refused)
    }

    /// Answers the requests the newest ack covers, and those of older sessions (their primary
    /// no longer counts them) with it.
    /// An append did not become durable, but the core already counts its entries as its
    /// last: every later batch would be a gap. What waits is answered with the error (the
    /// primary then drops the stream and redials), and the core is rebuilt from the log as
    /// it is, so the next stream's Open reports the true last entry and catch-up starts there.
    fn append_failed(&mut self, e: Error, persisting: &mut Persisting) {
        tracing::error!("replica: an append failed: {e}; rebuilding from the log");
        for w in self.waiting.drain(..) {
            let _ = w.reply.send(Err(e.clone()));
        }
        // Appends after the failed one are not counted on: the rebuild reads what is durable.
        *persisting = FuturesUnordered::new();
        self.acked = None;
        match open_core(&self.store) {
            Ok((core, installing)) => {
                self.core = core;
                self.installing = installing;
            }
            Err(e) => tracing::error!("replica: cannot rebuild from the log: {e}"),
        }
    }

    fn answer(&mut self) {
        let Some((session, up_to)) = self.acked else {
            return;
        };
        let mut keep = VecDeque::new();
        for w in self.waiting.drain(..) {
            if w.session != session || w.end <= up_to.lsn {
                let _ = w.reply.send(Ok(ReplicateReply::Acked { up_to }));
            } else {
                keep.push_back(w);
            }
        }
        self.waiting = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(base: (u64, Lsn), last: (u64, Lsn)) -> WalState {
        WalState {
            applied: crate::storage::LogId::new(base.0, base.1),
            last: crate::storage::LogId::new(last.0, last.1),
            base: crate::storage::LogId::new(base.0, base.1),
            installing_snapshot: false,
        }
    }

    /// The history of a log whose entries after `base` have the epochs `epochs`, and how many
    /// entries it read.
    fn history(base: (u64, Lsn), epochs: &[u64]) -> (EpochHistory, usize) {
        let last = (
            epochs.last().copied().unwrap_or(base.0),
            base.1 + epochs.len() as Lsn,
        );
        let mut reads = 0;
        let h = history_of(&state(base, last), |lsn| {
            reads += 1;
            let i = usize::try_from(lsn - base.1 - 1).expect("small");
            epochs
                .get(i)
                .copied()
                .ok_or_else(|| Error::Corrupt(format!("no entry {lsn}")))
        })
        .expect("a history");
        (h, reads)
    }

    #[test]
    fn an_empty_log_has_an_empty_history() {
        let (h, reads) = history((0, 0), &[]);
        assert!(h.pairs().is_empty());
        assert!(h.matches(LogId::ZERO));
        assert_eq!(reads, 0);
    }

    #[test]
    fn a_log_knows_the_epochs_its_entries_carry() {
        let (h, _) = history((0, 0), &[1, 1, 1, 1, 2, 2, 2, 2, 2]);
        assert_eq!(h.pairs(), &[(1, 1), (2, 5)]);
        assert!(h.matches(LogId::new(2, 9)));
        // Epochs that wrote nothing here (3) are not in it, whatever the map says.
        let (h, _) = history((0, 0), &[1, 2, 4, 4, 4, 5]);
        assert_eq!(h.pairs(), &[(1, 1), (2, 2), (4, 3), (5, 6)]);
        let (h, _) = history((1, 4), &[1, 1, 1, 1, 1]);
        assert_eq!(h.pairs(), &[(1, 4)]);
        assert!(h.matches(LogId::new(1, 9)));
        // A base of an older epoch than every entry after it.
        let (h, _) = history((1, 4), &[3, 3]);
        assert_eq!(h.pairs(), &[(1, 4), (3, 5)]);
    }

    #[test]
    fn a_long_log_is_searched_not_scanned() {
        let mut epochs = vec![1; 50_000];
        epochs.extend(vec![2; 30_000]);
        epochs.extend(vec![7; 20_000]);
        let (h, reads) = history((0, 0), &epochs);
        assert_eq!(h.pairs(), &[(1, 1), (2, 50_001), (7, 80_001)]);
        assert!(reads < 60, "{reads} reads");
    }
}
