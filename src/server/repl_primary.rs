//! A primary's replication driver: the [`Primary`] core given a clock, its log, one stream per
//! replica, and the cluster map.
//!
//! One task owns the core and feeds it, one event at a time:
//!
//! * `Tick` every [`TICK`] (100 ms) from a monotonic clock (milliseconds since the driver
//!   started), the first right after the core is built;
//! * `Durable` when the committer's durable watch moves (in `async` mode with the LSNs of the
//!   new entries that write the `txn` space: 2PC prepares and decisions, H14);
//! * `Opened` / `Acked` / `Refused` / `Lost` from the per-replica senders;
//! * `InSyncChanged` whenever the map's in-sync set of the shard (or its epoch) changes;
//! * `ProposalFailed` only when the map certainly did not take a proposal: it refused it, and
//!   the map here does not show the change within `REFLECT` (2 s) after the refusal (a change
//!   refused because it was already applied shows up here; a retried proposal whose first try
//!   timed out is such a case).
//!
//! and carries the actions out: `Commit{lsn}` is [`crate::storage::Committer::commit_to`] (the entries are
//! applied, their locks released, their clients answered) and the new commit LSN goes to the
//! senders; `Stream` restarts a sender's stream; `Propose` becomes a map change proposed in
//! its own task; `Fail` answers the entries' submitters 40003 while their locks stay held
//! (`storage` keeps them waiting for the commit or the drop of their entries); `StepDown` stops
//! writes (the core has failed the entries in flight with 40003 just before).
//!
//! **No commit waits forever.** The core gives up on an entry that has waited
//! [`crate::replication::primary::Config::commit_bound_ms`] (four ack timeouts, at least 5 s)
//! for its in-sync set: a member is silent and the map cannot take it out of the set (a
//! two-node cluster whose map lost its quorum with the node), or the map does not take an
//! addition. The entries in flight are answered 40003 and the primary *stalls*: new writes are
//! refused at once with 53000, naming the cause, until what was given up on commits (the
//! member answers again, or the map commits the change). The driver logs when a stall begins
//! and ends.
//!
//! **Writes are gated** (the committer's gate, asked before every submit): refused with
//! [`Primary::refuse_writes`] (53000 below `min_in_sync` or while stalled), and, after a
//! restart, refused until
//! the log tail the primary had when it started is committed (H9: the core is rebuilt with the
//! applied LSN as its commit LSN, never the last LSN, and the tail stays pending until the
//! in-sync set holds it).
//!
//! **Senders** keep one connection to each replica: `Open`, then the stream the
//! core asked for, with up to [`MAX_IN_FLIGHT`] appends of at most [`MAX_BATCH`] bytes in
//! flight, read from the log with `read_entries` and cut at the durable LSN (only entries the
//! primary has made durable are shipped, H9), and an empty append (a heartbeat carrying the
//! commit LSN) when nothing was sent for [`HEARTBEAT`]. Answers are read in the order the
//! requests were sent. A lost connection is reported and dialled again.
//!
//! **Snapshots and truncation.** A replica the core sends a snapshot to (its log no longer
//! reaches back far enough, or diverged) gets, on the same connection, `Begin`, batches of at
//! most [`MAX_BATCH`] bytes read from one consistent [`ShardSnapshot`] at the applied LSN (at
//! most [`SNAPSHOT_IN_FLIGHT`] unanswered: that window is the throttle), and `Finish`, which the
//! replica acks once the snapshot is durable; the stream then continues with the log after it.
//! Every [`TRUNCATE_EVERY`] the log is truncated up to [`Primary::truncate_through`] (what
//! every replica holds, but never more than the retention behind the head, and never past
//! the applied LSN), when that drops at least [`TRUNCATE_MIN`] entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::repl_replica::{core_id, log_history, TRUNCATE_EVERY, TRUNCATE_MIN};
use crate::client::Client;
use crate::cluster::map::{self, ClusterMap};
use crate::cluster::meta::Meta;
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::protocol::SnapshotPart;
use crate::protocol::{HandedOver, ReplicaProgress, Replicate, ReplicateReply, Request, Response};
use crate::replication::primary::{Action, Config, Event, Mode};
use crate::replication::{Change, LogId, Primary};
use crate::storage::{Cursor, LogRead, Lsn, ShardSnapshot, Store};

/// How often the core is told the time.
pub const TICK: Duration = Duration::from_millis(100);
/// A stream that sent nothing for this long sends a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// Most appends in flight on one stream.
pub const MAX_IN_FLIGHT: usize = 8;
/// Most bytes of stored entries in one append (a larger entry travels alone).
pub const MAX_BATCH: usize = 1024 * 1024;
/// How long a refused proposal's change may take to show in this node's map.
const REFLECT: Duration = Duration::from_secs(2);
/// How long a sender waits to connect to its replica.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a sender waits before it dials again.
const REDIAL: Duration = Duration::from_millis(200);
/// The longest wait between dials of a replica that keeps failing (the backoff's cap).
const REDIAL_MAX: Duration = Duration::from_secs(2);
/// The shortest wait for a replica's reply before its stream is given up, whatever
/// `ack_timeout_ms` says.
const REPLY_TIMEOUT_MIN: Duration = Duration::from_millis(500);
/// Most snapshot batches unanswered on one stream.
pub const SNAPSHOT_IN_FLIGHT: usize = 4;
/// Most durable batches whose time is remembered for `lag_ms`.
const TIMES_KEPT: usize = 100_000;

/// What the driver's task is told.
enum Input {
    Core(Event),
    Map(Arc<ClusterMap>),
    /// The log cannot be read to find its 2PC entries: committing in async mode stops.
    LogUnreadable(Error),
    /// The node stops being the primary: the driver ends (its senders with it) and says so.
    Stop(tokio::sync::oneshot::Sender<()>),
    /// A switchover to `to` (see [`PrimaryDriver::hand_over`]).
    HandOver {
        shard: ShardId,
        epoch: u64,
        to: String,
        drain: Duration,
        reply: HandOverReply,
    },
    /// The switchover's map change: applied at this map version, or certainly refused.
    HandOverProposed(Result<u64>),
    /// Something `publish` reads changed outside the loop (the restarted tail was applied).
    Publish,
}

type HandOverReply = tokio::sync::oneshot::Sender<Result<HandedOver>>;

/// A switchover under way (DESIGN §6.2). Writes are paused (the committer refuses submits of
/// this epoch), the entries already written commit as before, and once the log's last entry
/// is committed and `to` holds it, or at the drain bound, the next epoch is proposed with
/// `to` as primary, beginning right after what `to` holds; from then on nothing past that is
/// committed here.
struct Handover {
    to: String,
    /// The log's last entry when writes stopped.
    last: Lsn,
    started: Instant,
    deadline: tokio::time::Instant,
    drain: Duration,
    /// Where the next epoch begins, once proposed.
    proposed: Option<Lsn>,
    /// The map version that took the change, once applied.
    applied: Option<u64>,
    /// Why writes are refused meanwhile.
    refusal: Error,
    replies: Vec<HandOverReply>,
}

/// A newer epoch of the shard in the map: the node is deposed.
struct Deposed {
    primary: String,
    version: u64,
    /// Where the epoch after this node's began: its entries from there on are certainly
    /// dropped.
    first: Option<Lsn>,
}

/// The meta key of a switchover's durable marker ([`Proposed`], JSON).
const HANDOVER_KEY: &[u8] = b"handover";

/// A switchover whose promotion this node proposed, written durably before the proposal goes
/// out and removed before writes resume: a primary that restarts while the proposal may still
/// commit finds it, stays paused with the same cap, and proposes the same change again until
/// the map takes it or certainly refuses it. (Without it a restarted primary would commit its
/// entries past the cap, which the promotion drops once it applies.)
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Proposed {
    epoch: u64,
    to: String,
    first: Lsn,
}

fn read_proposed(store: &Store) -> Result<Option<Proposed>> {
    match store
        .engine
        .get(crate::storage::Space::Meta, HANDOVER_KEY)?
    {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt(format!("the switchover marker: {e}"))),
        None => Ok(None),
    }
}

/// Writes (or, with `None`, removes) the switchover marker durably.
fn write_proposed(store: &Store, marker: Option<&Proposed>) -> Result<()> {
    let key = HANDOVER_KEY.to_vec();
    let write = match marker {
        Some(m) => crate::storage::Write::Put(
            crate::storage::Space::Meta,
            key,
            serde_json::to_vec(m)
                .map_err(|e| Error::Internal(format!("the switchover marker: {e}")))?,
        ),
        None => crate::storage::Write::Delete(crate::storage::Space::Meta, key),
    };
    store.engine.write(vec![write])?;
    store.engine.persist()
}

/// What a sender is asked to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Stream {
        session: u64,
        from: Lsn,
        prev: LogId,
    },
    Snapshot {
        session: u64,
    },
}

impl Cmd {
    fn session(&self) -> u64 {
        match self {
            Cmd::Stream { session, .. } | Cmd::Snapshot { session } => *session,
        }
    }
}

/// The handle of a running primary driver.
pub struct PrimaryDriver {
    inputs: mpsc::UnboundedSender<Input>,
    progress: Arc<Mutex<Vec<ReplicaProgress>>>,
}

impl PrimaryDriver {
    /// Tells the driver about a new map.
    pub fn map(&self, map: Arc<ClusterMap>) {
        let _ = self.inputs.send(Input::Map(map));
    }

    /// A switchover to `to` (DESIGN §6.2): stops taking writes of this epoch, lets the entries
    /// already written commit for at most `drain`, then proposes `to` as the primary of the
    /// next epoch, beginning after the last entry `to` holds (all of the log when it drained
    /// in time). Answers once the map took the change; the map then deposes this node as any
    /// promotion does. Writes are refused meanwhile, with a retryable error. A switchover that
    /// cannot happen (`to` is not in sync, did not catch up, the map refused) lets writes in
    /// again and says why. A second call for the same `to` while one is under way waits for it.
    pub async fn hand_over(
        &self,
        shard: ShardId,
        epoch: u64,
        to: &str,
        drain: Duration,
    ) -> Result<HandedOver> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let input = Input::HandOver {
            shard,
            epoch,
            to: to.to_string(),
            drain,
            reply,
        };
        if self.inputs.send(input).is_err() {
            return Err(Error::not_ready(
                "this node's primary driver has stopped (the map changed); retry",
            ));
        }
        answer.await.map_err(|_| {
            Error::not_ready(
                "this node's primary driver stopped before the switchover was done (the map \
                 changed); see ddb status",
            )
        })?
    }

    /// Stops the driver once it has followed `map` (which names a newer epoch, so the core
    /// steps down first: the entries in flight are answered 40003). Returns when it has ended;
    /// its senders stop at their next step.
    pub async fn stop(&self, map: Arc<ClusterMap>) {
        let (done, stopped) = tokio::sync::oneshot::channel();
        let _ = self.inputs.send(Input::Map(map));
        if self.inputs.send(Input::Stop(done)).is_ok() {
            let _ = stopped.await;
        }
    }

    /// The replicas' progress, as of the last event.
    pub fn progress(&self) -> Vec<ReplicaProgress> {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// Where a driver runs.
pub struct Setup {
    pub shard: ShardId,
    pub me: String,
    pub store: Arc<Store>,
    pub meta: Arc<Meta>,
    /// The committer's gate reads it: why writes are refused now.
    pub refusal: Arc<Mutex<Option<Error>>>,
    /// The read gate reads it: why reads of the shard are refused now.
    pub read_refusal: Arc<Mutex<Option<Error>>>,
    /// How many entries behind the head are kept for lagging replicas.
    pub retention: u64,
}

/// Starts the primary driver of `setup.shard` under `map`.
pub fn start(setup: Setup, map: &ClusterMap) -> Result<Arc<PrimaryDriver>> {
    let info = map
        .shards
        .get(&setup.shard)
        .ok_or_else(|| Error::Internal(format!("no shard {} in the map", setup.shard)))?;
    let state = setup.store.log_state()?;
    let mode = match map.replication.mode {
        map::Mode::Sync => Mode::Sync,
        map::Mode::Async => Mode::Async,
    };
    let config = Config {
        me: setup.me.clone(),
        epoch: info.epoch,
        mode,
        min_in_sync: map.replication.min_in_sync as usize,
        ack_timeout_ms: map.replication.ack_timeout_ms,
        retention: setup.retention,
    };
    let in_sync: BTreeSet<String> = info.in_sync.iter().cloned().collect();
    let history = log_history(&setup.store, &state)?;
    // Writes are still refused (the gate opens once the core runs): every entry from here on
    // is of this epoch.
    setup.store.committer.set_epoch(info.epoch);
    let clock = Instant::now();
    let mut core = Primary::new(
        config,
        in_sync.clone(),
        history,
        state.base.lsn + 1,
        core_id(state.last),
        state.applied.lsn,
        0,
    )?;
    if mode == Mode::Async {
        // The pending tail's 2PC entries wait for a replica as new ones do (H14); a log that
        // cannot be read fails the start, and writes stay refused with the reason.
        core.hold_decisions(txn_entries(
            setup.store.engine.as_ref(),
            state.applied.lsn + 1,
            state.last.lsn,
        )?);
    }
    let (inputs, rx) = mpsc::unbounded_channel();
    let (commit_tx, _) = watch::channel(core.commit());
    let progress = Arc::new(Mutex::new(Vec::new()));
    let mut times = BTreeMap::new();
    if state.last.lsn > state.applied.lsn {
        times.insert(state.last.lsn, 0);
    }
    let mut driver = Loop {
        core,
        shard: setup.shard,
        epoch: info.epoch,
        store: setup.store.clone(),
        meta: setup.meta.clone(),
        refusal: setup.refusal,
        read_refusal: setup.read_refusal,
        unreadable: None,
        tail_applied: Arc::new(std::sync::atomic::AtomicBool::new(
            state.last.lsn <= state.applied.lsn,
        )),
        tail: state.last.lsn,
        clock,
        inputs: inputs.clone(),
        commit: commit_tx,
        senders: BTreeMap::new(),
        replicas: info.replicas.clone(),
        in_sync: (info.epoch, in_sync),
        progress: progress.clone(),
        times,
        stalled: false,
        mode,
        handover: None,
        cap: None,
        deposed: None,
        restored: None,
        history: Arc::new(Mutex::new(Vec::new())),
    };
    match read_proposed(&setup.store)? {
        // Applied past the cap: the hand-over was given up before the restart (a cap keeps
        // every commit before `first`).
        Some(m) if m.epoch == info.epoch && m.first > state.applied.lsn && m.first > 0 => {
            driver.restore_handover(&m, state.last.lsn);
            driver.restored = Some(m);
        }
        Some(m) => {
            tracing::info!(
                shard = setup.shard,
                "replication: forgetting the switchover to {} at {} of epoch {}: the map is at \
                 epoch {} and the log is applied up to {}",
                m.to,
                m.first,
                m.epoch,
                info.epoch,
                state.applied.lsn
            );
            write_proposed(&setup.store, None)?;
        }
        None => {}
    }
    watch_durable(&setup.store, mode, clock, inputs.clone())?;
    let first = driver.core.step(Event::Tick { now_ms: 0 });
    driver.act(first);
    driver.follow(map);
    tokio::spawn(driver.run(rx));
    tracing::info!(shard = setup.shard, "replication: primary driver started");
    Ok(Arc::new(PrimaryDriver { inputs, progress }))
}

/// Reports the committer's durable LSN to the driver as it moves.
fn watch_durable(
    store: &Arc<Store>,
    mode: Mode,
    clock: Instant,
    inputs: mpsc::UnboundedSender<Input>,
) -> Result<()> {
    let mut durable = store.committer.durable()?;
    let engine = store.engine.clone();
    let mut seen = durable.borrow_and_update().lsn;
    tokio::spawn(async move {
        while durable.changed().await.is_ok() {
            if inputs.is_closed() {
                // The driver stopped (deposed): the log is another primary's business now,
                // and may have been replaced by a snapshot.
                break;
            }
            let up_to = *durable.borrow_and_update();
            let mut decisions = Vec::new();
            if mode == Mode::Async && up_to.lsn > seen {
                // 2PC entries wait for a replica even in async mode: name them. Skipping
                // one could commit a decision no replica holds: a read error stops here.
                match txn_entries(engine.as_ref(), seen + 1, up_to.lsn) {
                    Ok(lsns) => decisions = lsns,
                    Err(e) => {
                        tracing::error!(
                            "replication: cannot read the log for its 2PC entries: {e}"
                        );
                        let _ = inputs.send(Input::LogUnreadable(e));
                        return;
                    }
                }
            }
            seen = seen.max(up_to.lsn);
            let now_ms = clock.elapsed().as_millis() as u64;
            let event = Event::Durable {
                up_to: core_id(up_to),
                decisions,
                now_ms,
            };
            if inputs.send(Input::Core(event)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// The LSNs in `from..=to` of the log's entries that write a 2PC record (a prepare or a
/// decision); an error if the log cannot be read or no longer holds that range.
fn txn_entries(engine: &dyn crate::storage::Engine, from: Lsn, to: Lsn) -> Result<Vec<Lsn>> {
    let mut lsns = Vec::new();
    let mut from = from;
    while from <= to {
        match crate::storage::log::read_entries(engine, from, MAX_BATCH)? {
            LogRead::Entries(entries) => {
                let Some(last) = entries.last().map(|e| e.lsn) else {
                    return Err(Error::Corrupt(format!(
                        "the log ends before entry {from} (expected up to {to})"
                    )));
                };
                lsns.extend(
                    entries
                        .iter()
                        .filter(|e| e.lsn <= to && e.writes_txn())
                        .map(|e| e.lsn),
                );
                from = last + 1;
            }
            LogRead::Truncated { base } => {
                return Err(Error::Corrupt(format!(
                    "the log no longer holds entry {from} (it begins after {base})"
                )))
            }
        }
    }
    Ok(lsns)
}

/// The driver's task state.
struct Loop {
    core: Primary,
    shard: ShardId,
    epoch: u64,
    store: Arc<Store>,
    meta: Arc<Meta>,
    refusal: Arc<Mutex<Option<Error>>>,
    read_refusal: Arc<Mutex<Option<Error>>>,
    /// Set once the log could not be read for its 2PC entries: writes are refused for good.
    unreadable: Option<Error>,
    /// Whether the log tail the primary restarted with is applied again: until it is, reads
    /// of the shard are refused.
    tail_applied: Arc<std::sync::atomic::AtomicBool>,
    /// The last LSN of the log when the driver started: writes wait until it is committed.
    tail: Lsn,
    clock: Instant,
    inputs: mpsc::UnboundedSender<Input>,
    commit: watch::Sender<Lsn>,
    senders: BTreeMap<String, watch::Sender<Option<Cmd>>>,
    replicas: Vec<String>,
    /// The last in-sync set told to the core, with its epoch.
    in_sync: (u64, BTreeSet<String>),
    progress: Arc<Mutex<Vec<ReplicaProgress>>>,
    /// When each durable batch (by its last LSN) became durable, for `lag_ms`.
    times: BTreeMap<Lsn, u64>,
    /// Whether the core was stalled when last published (to log the change).
    stalled: bool,
    mode: Mode,
    /// A switchover under way.
    handover: Option<Handover>,
    /// Nothing past this LSN is committed (a switchover proposed the next epoch to begin
    /// right after it).
    cap: Option<Lsn>,
    /// Set once the map names a newer epoch.
    deposed: Option<Deposed>,
    /// A switchover this node had proposed before it restarted: paused and capped from the
    /// start, proposed again when the loop runs.
    restored: Option<Proposed>,
    /// The core's epoch history, as of the last snapshot ordered: a snapshot's `Begin` carries
    /// it, so the replica can tell which of its applied entries this log does not have.
    history: Arc<Mutex<Vec<(u64, Lsn)>>>,
}

impl Loop {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut truncate = tokio::time::interval(TRUNCATE_EVERY);
        let truncating = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(marker) = self.restored.take() {
            self.propose_restored(marker).await;
        }
        loop {
            let actions = tokio::select! {
                _ = truncate.tick() => {
                    self.truncate(&truncating);
                    Vec::new()
                }
                _ = tick.tick() => {
                    let now_ms = self.now_ms();
                    self.core.step(Event::Tick { now_ms })
                }
                input = rx.recv() => match input {
                    Some(Input::Core(event)) => {
                        if let Event::Durable { up_to, now_ms, .. } = &event {
                            self.note_time(up_to.lsn, *now_ms);
                        }
                        self.core.step(event)
                    }
                    Some(Input::LogUnreadable(e)) => {
                        self.unreadable = Some(Error::Io(format!(
                            "this primary cannot read its log to find its 2PC entries, so it \
                             commits nothing more: {e}"
                        )));
                        Vec::new()
                    }
                    Some(Input::Map(map)) => {
                        self.follow(&map);
                        Vec::new()
                    }
                    Some(Input::Stop(done)) => {
                        // What got past the gate before it closed, and what the core never
                        // heard was durable, must not wait for a commit this node will not
                        // make: the committer answers it and refuses the rest.
                        let why = Error::not_ready(format!(
                            "this node is no longer the primary of shard {} (epoch {} is \
                             over); the commit did not happen; retry",
                            self.shard, self.epoch
                        ));
                        if let Some(first) = self.deposed.as_ref().and_then(|d| d.first) {
                            let error = self.dropped(first);
                            if let Err(e) = self.store.committer.fail(first, Lsn::MAX, error) {
                                tracing::error!("replication: {e}");
                            }
                        }
                        self.end_handover();
                        if let Err(e) = self.store.committer.seal(self.epoch, why).await {
                            tracing::error!("replication: cannot seal the log: {e}");
                        }
                        tracing::info!(shard = self.shard, "replication: primary driver stopped");
                        let _ = done.send(());
                        break;
                    }
                    Some(Input::HandOver {
                        shard,
                        epoch,
                        to,
                        drain,
                        reply,
                    }) => {
                        self.begin_handover(shard, epoch, to, drain, reply).await;
                        Vec::new()
                    }
                    Some(Input::HandOverProposed(result)) => {
                        self.handover_proposed(result);
                        Vec::new()
                    }
                    Some(Input::Publish) => {
                        self.publish();
                        Vec::new()
                    }
                    None => break,
                },
            };
            self.act(actions);
            self.check_handover();
        }
    }

    /// The refusal of a commit whose entry is at or after `first`, where a newer epoch began:
    /// it is certainly dropped.
    fn dropped(&self, first: Lsn) -> Error {
        Error::not_ready(format!(
            "the commit did not happen: shard {} has a new primary, whose epoch begins at entry \
             {first}, before this commit's entry; retry",
            self.shard
        ))
    }

    /// Starts a switchover to `to`, or joins the one under way to it.
    async fn begin_handover(
        &mut self,
        shard: ShardId,
        epoch: u64,
        to: String,
        drain: Duration,
        reply: HandOverReply,
    ) {
        if let Some(h) = &mut self.handover {
            if h.to == to && epoch == self.epoch {
                h.replies.push(reply);
                self.answer_handover();
            } else {
                let _ = reply.send(Err(Error::Refused(format!(
                    "a switchover of shard {} to {} is under way",
                    self.shard, h.to
                ))));
            }
            return;
        }
        if let Err(e) = self.can_hand_over(shard, epoch, &to) {
            let _ = reply.send(Err(e));
            return;
        }
        let refusal = Error::not_ready(format!(
            "shard {} is switching its primary over to {to}; retry",
            self.shard
        ));
        let last = match self
            .store
            .committer
            .pause(self.epoch, refusal.clone())
            .await
        {
            Ok(last) => last.lsn,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        tracing::info!(
            shard = self.shard,
            %to,
            last,
            drain_ms = drain.as_millis() as u64,
            "replication: switchover: writes stopped, draining the commits in flight"
        );
        self.handover = Some(Handover {
            to,
            last,
            started: Instant::now(),
            deadline: tokio::time::Instant::now() + drain,
            drain,
            proposed: None,
            applied: None,
            refusal,
            replies: vec![reply],
        });
        self.publish();
    }

    /// Why a switchover to `to` cannot start.
    fn can_hand_over(&self, shard: ShardId, epoch: u64, to: &str) -> Result<()> {
        if shard != self.shard || epoch != self.epoch || self.deposed.is_some() {
            return Err(Error::Refused(format!(
                "this node is the primary of shard {} in epoch {}, not of shard {shard} in \
                 epoch {epoch}: the map changed meanwhile",
                self.shard, self.epoch
            )));
        }
        if !self.replicas.iter().any(|r| r == to) {
            return Err(Error::Refused(format!(
                "node {to} is not a replica of shard {}",
                self.shard
            )));
        }
        if self.mode == Mode::Sync && !self.in_sync.1.contains(to) {
            return Err(Error::Refused(format!(
                "node {to} is not in the in-sync set of shard {}: it may lack committed writes; \
                 wait until it is (ddb status)",
                self.shard
            )));
        }
        if self
            .core
            .peer(to)
            .is_none_or(|(session, _)| session.is_none())
        {
            return Err(Error::Refused(format!(
                "node {to} has no replication stream from this primary: it cannot catch up"
            )));
        }
        match &self.unreadable {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Proposes the next epoch once the switchover drained (or its bound passed).
    fn check_handover(&mut self) {
        let Some(h) = &self.handover else {
            return;
        };
        if h.proposed.is_some() {
            return;
        }
        let commit = self.core.commit();
        let acked = self.core.peer(&h.to).map_or(0, |(_, acked)| acked);
        let drained = commit >= h.last && acked >= h.last;
        if !drained && tokio::time::Instant::now() < h.deadline {
            return;
        }
        if !drained
            && self
                .core
                .peer(&h.to)
                .is_none_or(|(session, _)| session.is_none())
        {
            // At the bound, what `to` acked is all it holds only while its stream is up: a
            // node that went away during the drain may not come back to take the shard.
            let why = Error::Refused(format!(
                "node {} lost its replication stream during the drain; nothing changed",
                h.to
            ));
            self.abort_handover(why);
            return;
        }
        if acked < commit {
            let why = Error::Timeout(format!(
                "node {} holds the log up to {acked}, but it is committed up to {commit}: it \
                 did not catch up within the drain bound of {} ms; nothing changed",
                h.to,
                h.drain.as_millis()
            ));
            self.abort_handover(why);
            return;
        }
        let first = if drained { h.last + 1 } else { acked + 1 };
        let to = h.to.clone();
        // From here on nothing past what `to` holds commits here: the next epoch begins after
        // it, so an entry committed past it would be lost. The cap outlives a restart.
        self.cap = Some(first - 1);
        let marker = Proposed {
            epoch: self.epoch,
            to: to.clone(),
            first,
        };
        if let Err(e) = write_proposed(&self.store, Some(&marker)) {
            // Nothing is proposed; but the write may reach the disk later, and a restart must
            // not take up a marker whose cap the log has passed (the start also ignores one
            // the log is applied past).
            let why = Error::Io(format!(
                "cannot write the switchover marker, nothing proposed: {e}"
            ));
            if let Err(e) = write_proposed(&self.store, None) {
                tracing::error!(
                    shard = self.shard,
                    "replication: switchover abandoned ({why}), and its marker cannot be \
                     removed either, so writes stay refused: {e}"
                );
                if let Some(h) = &mut self.handover {
                    for reply in h.replies.drain(..) {
                        let _ = reply.send(Err(why.clone()));
                    }
                }
                return;
            }
            self.cap = None;
            self.abort_handover(why);
            return;
        }
        tracing::info!(
            shard = self.shard,
            to = %h.to,
            first,
            stragglers = h.last.saturating_sub(first - 1),
            "replication: switchover: proposing the next epoch"
        );
        if let Some(h) = &mut self.handover {
            h.proposed = Some(first);
        }
        // Reads are refused from here on, before the proposal can commit: once it has, the
        // next primary may take writes that a read here would miss.
        self.publish();
        self.propose_handover(to, first, false);
    }

    /// Proposes the next epoch with `to` as primary, beginning at `first`, in a task; the
    /// answer comes back as [`Input::HandOverProposed`]. `unsure`: an earlier proposal of the
    /// same change may have applied (its answer was lost, or this node restarted).
    fn propose_handover(&self, to: String, first: Lsn, unsure: bool) {
        let change = map::Change::Promote {
            shard: self.shard,
            epoch: self.epoch,
            node: to,
            first_lsn: first,
            // In async mode the in-sync set does not say who holds what: `to` was checked to
            // hold every committed entry when the switchover was proposed.
            allow_data_loss: self.mode == Mode::Async,
        };
        let (meta, inputs, shard, epoch) = (
            self.meta.clone(),
            self.inputs.clone(),
            self.shard,
            self.epoch,
        );
        tokio::spawn(async move {
            let result = propose_promotion(&meta, change, shard, epoch, unsure).await;
            let _ = inputs.send(Input::HandOverProposed(result));
        });
    }

    /// Takes up the switchover this node proposed before it restarted (called before the
    /// core commits anything): writes are refused and commits capped where the proposal put
    /// the next epoch's start, as before the restart. [`Self::propose_restored`] then pauses
    /// the log and proposes the same change again.
    fn restore_handover(&mut self, marker: &Proposed, last: Lsn) {
        tracing::warn!(
            shard = self.shard,
            to = %marker.to,
            first = marker.first,
            "replication: switchover proposed before this node restarted: writes stay paused \
             and the promotion is proposed again"
        );
        self.cap = Some(marker.first - 1);
        self.handover = Some(Handover {
            to: marker.to.clone(),
            last,
            started: Instant::now(),
            deadline: tokio::time::Instant::now(),
            drain: Duration::ZERO,
            proposed: Some(marker.first),
            applied: None,
            refusal: Error::not_ready(format!(
                "shard {} is switching its primary over to {}; retry",
                self.shard, marker.to
            )),
            replies: Vec::new(),
        });
        self.publish();
    }

    /// The second half of [`Self::restore_handover`], in the loop: the log is paused (a submit
    /// that got past the gate is refused) and the promotion proposed again. Its earlier try
    /// may have applied, so a refusal counts only once the map shows it did not.
    async fn propose_restored(&mut self, marker: Proposed) {
        let refusal = match &self.handover {
            Some(h) => h.refusal.clone(),
            None => return,
        };
        if let Err(e) = self.store.committer.pause(self.epoch, refusal).await {
            tracing::error!("replication: cannot pause the log: {e}");
        }
        self.propose_handover(marker.to, marker.first, true);
    }

    /// The switchover's proposal came back.
    fn handover_proposed(&mut self, result: Result<u64>) {
        match result {
            Ok(version) => {
                if let Some(h) = &mut self.handover {
                    h.applied = Some(version);
                    tracing::info!(
                        shard = self.shard,
                        to = %h.to,
                        version,
                        "replication: switchover: the map took the change"
                    );
                }
                self.answer_handover();
            }
            Err(e) => self.abort_handover(e),
        }
    }

    /// Answers the switchover's callers once the map took it.
    fn answer_handover(&mut self) {
        let Some(h) = &mut self.handover else {
            return;
        };
        let (Some(version), Some(first)) = (h.applied, h.proposed) else {
            return;
        };
        let done = HandedOver {
            version,
            first_lsn: first,
            stragglers: h.last.saturating_sub(first - 1),
            drain_ms: h.started.elapsed().as_millis() as u64,
        };
        for reply in h.replies.drain(..) {
            let _ = reply.send(Ok(done.clone()));
        }
    }

    /// Gives a switchover up before the map took it: writes are taken again, and what the
    /// cap held back commits.
    fn abort_handover(&mut self, why: Error) {
        let Some(mut h) = self.handover.take() else {
            return;
        };
        // Once proposed, a failed answer may still hide a change the map took (a retry
        // refused because the first try applied): if the map has moved past this epoch, or
        // this node heard it is deposed, writes stay refused and the cap stays until the
        // driver follows the map and stops.
        let moved_on = self.deposed.is_some()
            || self
                .meta
                .map()
                .and_then(|m| m.shards.get(&self.shard).map(|s| s.epoch > self.epoch))
                .unwrap_or(false);
        if h.proposed.is_some() && moved_on {
            tracing::warn!(
                shard = self.shard,
                to = %h.to,
                "replication: switchover answered {why}, but the map has moved past epoch {}: \
                 writes stay refused until this node follows it",
                self.epoch
            );
            for reply in h.replies.drain(..) {
                let _ = reply.send(Err(why.clone()));
            }
            self.handover = Some(h);
            return;
        }
        if h.proposed.is_some() {
            // Gone before writes resume: a restart must not take up a switchover whose cap
            // the log has since passed.
            if let Err(e) = write_proposed(&self.store, None) {
                tracing::error!(
                    shard = self.shard,
                    "replication: switchover abandoned ({why}), but its marker cannot be \
                     removed, so writes stay refused: {e}"
                );
                for reply in h.replies.drain(..) {
                    let _ = reply.send(Err(why.clone()));
                }
                self.handover = Some(h);
                return;
            }
        }
        tracing::warn!(
            shard = self.shard,
            to = %h.to,
            "replication: switchover abandoned, writes resume: {why}"
        );
        self.cap = None;
        if let Err(e) = self.store.committer.resume(self.epoch) {
            tracing::error!("replication: {e}");
        }
        for reply in h.replies {
            let _ = reply.send(Err(why.clone()));
        }
        let commit = self.core.commit();
        self.act(vec![Action::Commit { lsn: commit }]);
    }

    /// The driver stops (deposed): a switchover's callers hear whether it was theirs.
    fn end_handover(&mut self) {
        let Some(mut h) = self.handover.take() else {
            return;
        };
        let ours = self
            .deposed
            .as_ref()
            .is_some_and(|d| d.primary == h.to && h.proposed.is_some() && d.first == h.proposed);
        if ours && h.applied.is_none() {
            h.applied = self.deposed.as_ref().map(|d| d.version);
        }
        self.handover = Some(h);
        if ours {
            self.answer_handover();
        }
        if let Some(h) = self.handover.take() {
            for reply in h.replies {
                let _ = reply.send(Err(Error::Refused(format!(
                    "shard {} was promoted otherwise meanwhile (see ddb status)",
                    self.shard
                ))));
            }
        }
    }

    /// Drops the front of the log that no replica needs any more, in a task (one at a time);
    /// the core hears of it once it is durable.
    fn truncate(&self, truncating: &Arc<std::sync::atomic::AtomicBool>) {
        use std::sync::atomic::Ordering;
        let Ok(state) = self.store.log_state() else {
            return;
        };
        let through = self
            .core
            .truncate_through(&self.replicas)
            .min(state.applied.lsn);
        if through < state.base.lsn + TRUNCATE_MIN || truncating.swap(true, Ordering::AcqRel) {
            return;
        }
        let (store, inputs, busy) = (self.store.clone(), self.inputs.clone(), truncating.clone());
        tokio::spawn(async move {
            match store.committer.truncate_before(through + 1).await {
                Ok(base) => {
                    tracing::debug!("replication: truncated the log through {base}");
                    let _ = inputs.send(Input::Core(Event::Truncated { through: base.lsn }));
                }
                Err(e) => tracing::warn!("replication: cannot truncate the log: {e}"),
            }
            busy.store(false, Ordering::Release);
        });
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn note_time(&mut self, lsn: Lsn, now_ms: u64) {
        if self.times.len() < TIMES_KEPT {
            self.times.insert(lsn, now_ms);
        }
    }

    /// Follows a map: the in-sync set to the core, a sender for every replica.
    fn follow(&mut self, map: &ClusterMap) {
        let Some(info) = map.shards.get(&self.shard) else {
            return;
        };
        if info.epoch > self.epoch && self.deposed.is_none() {
            let first = info
                .epochs
                .iter()
                .filter(|(epoch, _)| *epoch > self.epoch)
                .map(|(_, first)| *first)
                .min();
            self.deposed = Some(Deposed {
                primary: info.primary.clone(),
                version: map.version,
                first,
            });
        }
        let in_sync: BTreeSet<String> = info.in_sync.iter().cloned().collect();
        if (info.epoch, &in_sync) != (self.in_sync.0, &self.in_sync.1) {
            self.in_sync = (info.epoch, in_sync.clone());
            let actions = self.core.step(Event::InSyncChanged {
                epoch: info.epoch,
                in_sync,
            });
            self.act(actions);
        }
        if info.epoch != self.epoch {
            // Another node is the primary of a newer epoch (the core stepped down): its
            // replicas are not this node's to stream to.
            return;
        }
        self.replicas = info.replicas.clone();
        for node in info.replicas.clone() {
            if !self.senders.contains_key(&node) {
                let (tx, rx) = watch::channel(None);
                self.senders.insert(node.clone(), tx);
                let sender = Sender {
                    node,
                    shard: self.shard,
                    epoch: self.epoch,
                    store: self.store.clone(),
                    meta: self.meta.clone(),
                    durable: match self.store.committer.durable() {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::error!("replication: {e}");
                            return;
                        }
                    },
                    commit: self.commit.subscribe(),
                    history: self.history.clone(),
                    cmds: rx,
                    inputs: self.inputs.clone(),
                };
                tokio::spawn(sender.run());
            }
        }
    }

    /// Carries out the core's actions in order, then publishes the gate and the progress.
    fn act(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Commit { lsn } => {
                    let lsn = self.cap.map_or(lsn, |cap| lsn.min(cap));
                    if self.cap.is_some() && lsn <= *self.commit.borrow() {
                        continue;
                    }
                    match self.store.committer.commit_to(lsn) {
                        Ok(rx) => {
                            let tail = self.tail;
                            let tail_applied = self.tail_applied.clone();
                            let inputs = self.inputs.clone();
                            tokio::spawn(async move {
                                match rx.await {
                                    Ok(Ok(_)) => {
                                        // The loop decides what reads are refused for (a
                                        // switchover may refuse them still).
                                        if lsn >= tail
                                            && !tail_applied
                                                .swap(true, std::sync::atomic::Ordering::SeqCst)
                                        {
                                            let _ = inputs.send(Input::Publish);
                                        }
                                    }
                                    Ok(Err(e)) => tracing::error!(
                                        "replication: applying up to {lsn} failed: {e}"
                                    ),
                                    Err(_) => tracing::error!(
                                        "replication: the committer stopped before applying up to {lsn}"
                                    ),
                                }
                            });
                        }
                        Err(e) => tracing::error!("replication: cannot apply up to {lsn}: {e}"),
                    }
                    self.commit.send_replace(lsn);
                }
                Action::Stream {
                    node,
                    session,
                    from,
                    prev,
                } => self.command(
                    &node,
                    Cmd::Stream {
                        session,
                        from,
                        prev,
                    },
                ),
                Action::Snapshot { node, session } => {
                    tracing::info!(%node, "replication: sending a snapshot of shard {}", self.shard);
                    if let Ok(mut h) = self.history.lock() {
                        *h = self.core.history().pairs().to_vec();
                    }
                    self.command(&node, Cmd::Snapshot { session });
                }
                Action::Propose { epoch, change } => self.propose(epoch, change),
                Action::Fail { first, last, error } => {
                    tracing::warn!(
                        "replication: entries {first}..={last} cannot commit now: {error}"
                    );
                    // Entries from where a newer epoch began are certainly dropped: their
                    // clients hear so (retryable), not that the outcome is unknown.
                    let dropped = self.deposed.as_ref().and_then(|d| d.first);
                    let split = dropped.filter(|f| *f <= last).map(|f| f.max(first));
                    let fail = |from: Lsn, to: Lsn, error: Error| {
                        if from <= to {
                            if let Err(e) = self.store.committer.fail(from, to, error) {
                                tracing::error!("replication: {e}");
                            }
                        }
                    };
                    match split {
                        Some(f) => {
                            fail(first, f - 1, error);
                            fail(f, last, self.dropped(f));
                        }
                        None => fail(first, last, error),
                    }
                }
                Action::StepDown { epoch } => {
                    // The entries in flight were failed with 40003 by the action before this
                    // one; their locks stay held until the log says what became of them.
                    tracing::warn!(
                        "replication: shard {} has a newer epoch {epoch}: this node stops taking \
                         writes; commits in flight were answered with an unknown outcome",
                        self.shard
                    );
                }
            }
        }
        self.publish();
    }

    fn command(&self, node: &str, cmd: Cmd) {
        match self.senders.get(node) {
            Some(tx) => {
                tx.send_replace(Some(cmd));
            }
            None => tracing::warn!(%node, "replication: no stream to this replica"),
        }
    }

    /// Proposes an in-sync change in its own task (see the module's note on failures).
    fn propose(&self, epoch: u64, change: Change) {
        let (shard, meta, inputs) = (self.shard, self.meta.clone(), self.inputs.clone());
        let proposal = match &change {
            Change::Add(node) => map::Change::AddInSync {
                shard,
                epoch,
                node: node.clone(),
            },
            Change::Remove(node) => map::Change::RemoveInSync {
                shard,
                epoch,
                node: node.clone(),
            },
        };
        tracing::info!("replication: proposing {change:?} for shard {shard}");
        tokio::spawn(async move {
            loop {
                match meta.propose(proposal.clone()).await {
                    Ok(_) => return,
                    Err(Error::Refused(why)) => {
                        let shown = |m: &ClusterMap| {
                            m.shards.get(&shard).is_some_and(|s| match &change {
                                Change::Add(n) => s.is_in_sync(n),
                                Change::Remove(n) => !s.is_in_sync(n),
                            })
                        };
                        let deadline = tokio::time::Instant::now() + REFLECT;
                        let mut maps = meta.subscribe();
                        loop {
                            if maps.borrow_and_update().as_deref().is_some_and(shown) {
                                return;
                            }
                            if tokio::time::timeout_at(deadline, maps.changed())
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                        tracing::info!("replication: the map refused {change:?}: {why}");
                        let _ = inputs.send(Input::Core(Event::ProposalFailed { change }));
                        return;
                    }
                    Err(e) => {
                        // The outcome is unknown: propose again (a change already applied
                        // is refused, and then shows in the map).
                        tracing::warn!("replication: proposing {change:?}: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
    }

    /// Publishes why writes are refused and what is known of each replica.
    fn publish(&mut self) {
        match (self.stalled, self.core.stalled()) {
            (false, Some(cause)) => {
                tracing::error!(
                    shard = self.shard,
                    "replication: commits stalled, writes refused: {cause}"
                );
                self.stalled = true;
            }
            (true, None) => {
                tracing::info!(
                    shard = self.shard,
                    "replication: the stall is over (committed up to {}); writes resume",
                    self.core.commit()
                );
                self.stalled = false;
            }
            _ => {}
        }
        // Below the restarted tail, the applied state may miss acknowledged commits: neither
        // writes nor reads are served until the tail is committed (and so applied) again.
        let recovering = (self.core.commit() < self.tail).then(|| {
            Error::not_ready(format!(
                "the shard's primary is recovering its log: it restarted with entries up to {} \
                 not yet held by its in-sync set (committed up to {}); retry",
                self.tail,
                self.core.commit()
            ))
        });
        let refusal = self
            .unreadable
            .clone()
            .or_else(|| self.handover.as_ref().map(|h| h.refusal.clone()))
            .or_else(|| self.core.refuse_writes())
            .or_else(|| recovering.clone());
        if let Ok(mut r) = self.refusal.lock() {
            *r = refusal;
        }
        let handing_over = self
            .handover
            .as_ref()
            .filter(|h| h.proposed.is_some())
            .map(|h| h.refusal.clone());
        let read_refusal = if let Some(refusal) = handing_over {
            // From the proposal on, the next primary may take writes before this node hears
            // of it: reads here (and the read-only parts that read here) could miss them.
            Some(refusal)
        } else if self.tail_applied.load(std::sync::atomic::Ordering::SeqCst) {
            None
        } else {
            Some(Error::not_ready(format!(
                "the shard's primary is recovering its log: it restarted with entries up to {} \
                 not applied yet (committed up to {}); retry",
                self.tail,
                self.core.commit()
            )))
        };
        if let Ok(mut r) = self.read_refusal.lock() {
            *r = read_refusal;
        }
        let now_ms = self.now_ms();
        let head = self.core.durable().lsn;
        let progress: Vec<ReplicaProgress> = self
            .replicas
            .iter()
            .map(|node| {
                let (session, acked) = self.core.peer(node).unwrap_or((None, 0));
                let since = self.times.range(acked + 1..).next().map(|(_, t)| *t);
                ReplicaProgress {
                    node: node.clone(),
                    acked,
                    lag: head.saturating_sub(acked),
                    lag_ms: since.map_or(0, |t| now_ms.saturating_sub(t)),
                    connected: session.is_some(),
                }
            })
            .collect();
        let oldest = progress.iter().map(|p| p.acked).min().unwrap_or(head);
        self.times = self.times.split_off(&(oldest + 1));
        if let Ok(mut p) = self.progress.lock() {
            *p = progress;
        }
    }
}

/// Proposes a promotion until the map applies it (its version) or certainly refuses it. A
/// proposal whose answer was lost is proposed again; if the first try had applied, the retry
/// is refused and the change shows in the map.
async fn propose_promotion(
    meta: &Meta,
    change: map::Change,
    shard: ShardId,
    epoch: u64,
    unsure: bool,
) -> Result<u64> {
    let map::Change::Promote {
        node, first_lsn, ..
    } = &change
    else {
        return Err(Error::Internal("not a promotion".into()));
    };
    let applied = |m: &ClusterMap| {
        m.shards.get(&shard).is_some_and(|s| {
            s.epoch == epoch + 1
                && s.primary == *node
                && s.epochs.last() == Some(&(epoch + 1, *first_lsn))
        })
    };
    // Whether an earlier try may have been applied (its answer was lost): a refusal of a
    // retry may then be the map refusing a change it already took.
    let mut unsure = unsure;
    loop {
        match meta.propose(change.clone()).await {
            Ok(version) => return Ok(version),
            Err(Error::Refused(why)) => {
                let wait = if unsure { REFLECT * 10 } else { REFLECT };
                let deadline = tokio::time::Instant::now() + wait;
                let mut maps = meta.subscribe();
                loop {
                    if let Some(m) = maps.borrow_and_update().as_deref() {
                        if applied(m) {
                            return Ok(m.version);
                        }
                        if m.shards.get(&shard).is_some_and(|s| s.epoch > epoch) {
                            // Another promotion won: this node is deposed either way.
                            return Err(Error::Refused(why));
                        }
                    }
                    if tokio::time::timeout_at(deadline, maps.changed())
                        .await
                        .is_err()
                    {
                        return Err(Error::Refused(why));
                    }
                }
            }
            Err(e) => {
                unsure = true;
                tracing::warn!("replication: proposing the switchover: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One replica's stream.
struct Sender {
    node: String,
    shard: ShardId,
    epoch: u64,
    store: Arc<Store>,
    meta: Arc<Meta>,
    durable: watch::Receiver<crate::storage::LogId>,
    commit: watch::Receiver<Lsn>,
    /// The primary's epoch history (see `Loop::history`).
    history: Arc<Mutex<Vec<(u64, Lsn)>>>,
    cmds: watch::Receiver<Option<Cmd>>,
    inputs: mpsc::UnboundedSender<Input>,
}

impl Sender {
    fn tell(&self, event: Event) -> bool {
        self.inputs.send(Input::Core(event)).is_ok()
    }

    /// Dials the replica, opens a stream, streams until the connection is lost; again.
    async fn run(mut self) {
        let cluster_id = self.meta.identity.cluster_id.clone();
        let mut opened = 0u64;
        let mut backoff = REDIAL;
        loop {
            if self.inputs.is_closed() {
                return;
            }
            let addr = self
                .meta
                .map()
                .and_then(|m| m.node(&self.node).map(|n| n.rpc_addr.clone()));
            let Some(addr) = addr else {
                tracing::warn!(node = %self.node, "replication: the replica is not in the map");
                return;
            };
            let client = match Client::connect_peer(&addr, CONNECT_TIMEOUT, &cluster_id).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(node = %self.node, "replication: cannot reach the replica: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REDIAL_MAX);
                    continue;
                }
            };
            opened += 1;
            let open = Request::Replicate(Replicate::Open {
                shard: self.shard,
                epoch: self.epoch,
                session: opened,
            });
            let last = match tokio::time::timeout(Duration::from_secs(2), client.call(open)).await {
                Ok(Ok(Response::Replicated(ReplicateReply::Opened { last, .. }))) => last,
                other => {
                    tracing::debug!(node = %self.node, "replication: open refused: {other:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(REDIAL_MAX);
                    continue;
                }
            };
            backoff = REDIAL;
            let seen = self.cmds.borrow_and_update().map_or(0, |c| c.session());
            if !self.tell(Event::Opened {
                node: self.node.clone(),
                last,
            }) {
                return;
            }
            let Some(cmd) = self.next_cmd(seen).await else {
                continue;
            };
            tracing::info!(node = %self.node, "replication: streaming to the replica: {cmd:?}");
            let session = self.stream(&client, cmd).await;
            tracing::info!(node = %self.node, "replication: lost the stream of session {session}");
            if !self.tell(Event::Lost {
                node: self.node.clone(),
                session,
            }) {
                return;
            }
            tokio::time::sleep(REDIAL).await;
        }
    }

    /// How long a reply may take before the stream is given up as lost: the map's ack timeout,
    /// at least [`REPLY_TIMEOUT_MIN`]. A replica that froze or dropped off the network with
    /// requests in flight would otherwise hold its stream open for good.
    fn reply_timeout(&self) -> Duration {
        let ms = self.meta.map().map_or(0, |m| m.replication.ack_timeout_ms);
        Duration::from_millis(ms).max(REPLY_TIMEOUT_MIN)
    }

    /// The next command of a session after `seen`, if one comes within a few seconds.
    async fn next_cmd(&mut self, seen: u64) -> Option<Cmd> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(cmd) = *self.cmds.borrow_and_update() {
                if cmd.session() > seen {
                    return Some(cmd);
                }
            }
            match tokio::time::timeout_at(deadline, self.cmds.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Streams the log on `client` as `cmd` says, and as the commands after it say; returns the
    /// session in use when the connection failed.
    async fn stream(&mut self, client: &Client, mut cmd: Cmd) -> u64 {
        'session: loop {
            let (session, mut next, mut prev) = match cmd {
                Cmd::Stream {
                    session,
                    from,
                    prev,
                } => (session, from, prev),
                Cmd::Snapshot { session } => match self.snapshot(client, session).await {
                    Ok(Some(at)) => (session, at.lsn + 1, at),
                    Ok(None) => match self.next_cmd(session).await {
                        Some(c) => {
                            cmd = c;
                            continue 'session;
                        }
                        None => return session,
                    },
                    Err(e) => {
                        tracing::warn!(node = %self.node, "replication: snapshot in session {session} failed: {e}");
                        return session;
                    }
                },
            };
            let mut inflight = FuturesOrdered::new();
            // When each request in flight was sent, oldest first (replies come in order).
            let mut sent_at = std::collections::VecDeque::new();
            let reply_timeout = self.reply_timeout();
            let mut last_sent: Option<tokio::time::Instant> = None;
            loop {
                while inflight.len() < MAX_IN_FLIGHT {
                    let durable = self.durable.borrow_and_update().lsn;
                    if next > durable {
                        break;
                    }
                    let engine = self.store.engine.as_ref();
                    let mut entries = match crate::storage::log::read_entries(
                        engine, next, MAX_BATCH,
                    ) {
                        Ok(LogRead::Entries(entries)) => entries,
                        Ok(LogRead::Truncated { base }) => {
                            tracing::error!(node = %self.node, "replication: the log no longer holds entry {next} (it begins after {base}); the replica needs a snapshot");
                            return session;
                        }
                        Err(e) => {
                            tracing::error!(node = %self.node, "replication: cannot read the log: {e}");
                            return session;
                        }
                    };
                    // Only what the primary has made durable is shipped (H9).
                    entries.retain(|e| e.lsn <= durable);
                    let Some(last) = entries.last().map(|e| core_id(e.id())) else {
                        break;
                    };
                    match self
                        .append(client, session, prev, entries, reply_timeout)
                        .await
                    {
                        Some(rx) => inflight.push_back(rx),
                        None => return session,
                    }
                    sent_at.push_back(tokio::time::Instant::now());
                    prev = last;
                    next = last.lsn + 1;
                    last_sent = Some(tokio::time::Instant::now());
                }
                let heartbeat_at =
                    last_sent.map_or_else(tokio::time::Instant::now, |t| t + HEARTBEAT);
                // A heartbeat may go one past the window, so the replica still learns the
                // commit LSN while a full window of appends is being stored.
                let room = inflight.len() <= MAX_IN_FLIGHT;
                let reply_by = sent_at
                    .front()
                    .map_or_else(tokio::time::Instant::now, |t| *t + reply_timeout);
                tokio::select! {
                    _ = tokio::time::sleep_until(reply_by), if !inflight.is_empty() => {
                        tracing::warn!(node = %self.node, "replication: no reply in session {session} within {reply_timeout:?}; giving the stream up");
                        return session;
                    }
                    reply = inflight.next(), if !inflight.is_empty() => match reply {
                        Some(Ok(Response::Replicated(ReplicateReply::Acked { up_to }))) => {
                            sent_at.pop_front();
                            if !self.tell(Event::Acked { node: self.node.clone(), session, up_to }) {
                                return session;
                            }
                        }
                        Some(Ok(Response::Replicated(ReplicateReply::Refused(reject)))) => {
                            tracing::info!(node = %self.node, "replication: the replica refused session {session}: {reject:?}");
                            if !self.tell(Event::Refused { node: self.node.clone(), session, reject }) {
                                return session;
                            }
                            match self.next_cmd(session).await {
                                Some(c) => {
                                    cmd = c;
                                    continue 'session;
                                }
                                None => return session,
                            }
                        }
                        Some(Ok(other)) => {
                            tracing::warn!(node = %self.node, "replication: unexpected answer {other:?}");
                            return session;
                        }
                        Some(Err(_)) | None => return session,
                    },
                    changed = self.durable.changed() => {
                        if changed.is_err() {
                            return session;
                        }
                    }
                    changed = self.cmds.changed() => {
                        if changed.is_err() {
                            return session;
                        }
                        if let Some(c) = *self.cmds.borrow_and_update() {
                            if c.session() > session {
                                cmd = c;
                                continue 'session;
                            }
                        }
                    }
                    _ = tokio::time::sleep_until(heartbeat_at), if room => {
                        match self.append(client, session, prev, Vec::new(), reply_timeout).await {
                            Some(rx) => inflight.push_back(rx),
                            None => return session,
                        }
                        sent_at.push_back(tokio::time::Instant::now());
                        last_sent = Some(tokio::time::Instant::now());
                    }
                }
            }
        }
    }

    /// Sends a snapshot in `session` and returns the entry it stands at once the replica has
    /// acked it; `None` if the replica refused it (the core has been told), an error if the
    /// connection failed.
    async fn snapshot(&mut self, client: &Client, session: u64) -> Result<Option<LogId>> {
        let snapshot = ShardSnapshot::open(self.store.engine.as_ref())?;
        let at = core_id(snapshot.at());
        let started = Instant::now();
        let part = |part| {
            Request::Replicate(Replicate::Snapshot {
                shard: self.shard,
                epoch: self.epoch,
                session,
                at,
                part,
            })
        };
        let lost = || Error::Unreachable("lost the replica during a snapshot".into());
        // A part is a whole batch to store, slower than an append: four times the stream's wait.
        let reply_timeout = self.reply_timeout() * 4;
        let silent = || {
            Error::Unreachable(format!(
                "the replica did not answer a snapshot part within {reply_timeout:?}"
            ))
        };
        // Sends one part; a replica that stops reading fails it within the reply timeout.
        let send = |request| async move {
            tokio::time::timeout(reply_timeout, client.start(request))
                .await
                .map_err(|_| silent())?
        };
        let mut inflight = FuturesOrdered::new();
        // This log's own history (the map's list of promotions need not describe it: an
        // epoch may have begun where this log holds an older epoch's entries).
        let epochs = self.history.lock().map(|h| h.clone()).unwrap_or_default();
        inflight.push_back(send(part(SnapshotPart::Begin { epochs })).await?);
        let mut cursor = Some(Cursor::start());
        let (mut batches, mut bytes) = (0u64, 0usize);
        loop {
            while inflight.len() < SNAPSHOT_IN_FLIGHT {
                let Some(from) = cursor.take() else { break };
                let batch = snapshot.batch(&from, MAX_BATCH)?;
                cursor = batch.next;
                batches += 1;
                bytes += batch.writes.iter().map(write_size).sum::<usize>();
                inflight.push_back(send(part(SnapshotPart::Batch(batch.writes))).await?);
            }
            if cursor.is_none() && inflight.is_empty() {
                break;
            }
            let reply = tokio::time::timeout(reply_timeout, inflight.next())
                .await
                .map_err(|_| silent())?;
            match reply {
                Some(Ok(Response::Replicated(ReplicateReply::Stored))) => {}
                Some(Ok(Response::Replicated(ReplicateReply::Refused(reject)))) => {
                    self.tell(Event::Refused {
                        node: self.node.clone(),
                        session,
                        reject,
                    });
                    return Ok(None);
                }
                Some(Ok(other)) => {
                    return Err(Error::Corrupt(format!(
                        "unexpected answer to a snapshot batch: {other:?}"
                    )))
                }
                Some(Err(_)) | None => return Err(lost()),
            }
        }
        drop(snapshot);
        let finish = send(part(SnapshotPart::Finish)).await?;
        let reply = tokio::time::timeout(reply_timeout, finish)
            .await
            .map_err(|_| silent())?;
        match reply {
            Ok(Response::Replicated(ReplicateReply::Acked { up_to })) => {
                tracing::info!(
                    node = %self.node,
                    "replication: snapshot at {at} sent: {batches} batches, {bytes} bytes in {:?}",
                    started.elapsed()
                );
                self.tell(Event::Acked {
                    node: self.node.clone(),
                    session,
                    up_to,
                });
                Ok(Some(at))
            }
            Ok(Response::Replicated(ReplicateReply::Refused(reject))) => {
                self.tell(Event::Refused {
                    node: self.node.clone(),
                    session,
                    reject,
                });
                Ok(None)
            }
            Ok(Response::Error(e)) => Err(e),
            Ok(other) => Err(Error::Corrupt(format!(
                "unexpected answer to a snapshot's end: {other:?}"
            ))),
            Err(_) => Err(lost()),
        }
    }

    /// Sends one append (a heartbeat when `entries` is empty) and returns its answer's
    /// receiver, or `None` if the connection is gone.
    async fn append(
        &self,
        client: &Client,
        session: u64,
        prev: LogId,
        entries: Vec<crate::storage::LogEntry>,
        timeout: Duration,
    ) -> Option<tokio::sync::oneshot::Receiver<Response>> {
        let commit = *self.commit.borrow();
        let request = Request::Replicate(Replicate::Append {
            shard: self.shard,
            epoch: self.epoch,
            session,
            prev,
            entries,
            commit,
        });
        // Sending blocks once the replica stops reading; that is a lost stream too.
        tokio::time::timeout(timeout, client.start(request))
            .await
            .ok()?
            .ok()
    }
}

/// The bytes of a snapshot put (key and value).
fn write_size(w: &crate::storage::Write) -> usize {
    match w {
        crate::storage::Write::Put(_, k, v) => k.len() + v.len(),
        _ => 0,
    }
}
