//! A primary's side of log shipping (DESIGN §6.1): the commit LSN and the in-sync set.
//!
//! The primary appends entries to its log and makes them durable with group commit; the driver
//! streams durable entries to every connected replica and reports what comes back. This core
//! decides, from those reports alone:
//!
//! * **the commit LSN**, which only rises. In `sync` mode it is the highest LSN that every
//!   member of the map's committed in-sync set *and* a pending addition has persisted, the
//!   primary included (its own fsync is [`Event::Durable`]). In `async` mode it is the
//!   primary's own durable LSN, except that a 2PC `Prepared` or decision entry (and what
//!   follows it) waits until some replica has persisted it. Entries beyond the commit LSN are
//!   pending: the driver applies nothing, releases no lock and answers no client for them;
//! * **the in-sync set's changes**, one proposal at a time: `Remove(node)` for a member that
//!   has not acknowledged an outstanding entry within `ack_timeout_ms`, and `Add(node)` for a
//!   replica that has acknowledged everything up to the commit LSN. The set the core counts is
//!   the one the map has *committed*: a member stays counted until the map change removing it
//!   commits, and an addition is counted from the moment it is proposed, so the map never names
//!   a member that lacks a committed entry;
//! * **the floor**: in `sync` mode, with fewer committed members than `min_in_sync`, new writes
//!   are refused (SQLSTATE 53000, [`Primary::refuse_writes`]) and the entries in flight are
//!   failed with an unknown outcome (40003, [`Action::Fail`]). They stay in the log, pending:
//!   they commit if the set grows back before a failover, so the driver keeps their locks until
//!   a [`Action::Commit`] covers them or the primary steps down;
//! * **the commit bound**: an entry that has waited [`Config::commit_bound_ms`] for its
//!   in-sync set (a member silent and its removal not committed by the map, say because the
//!   map has lost its quorum; an addition the map does not take) is given up on: the entries
//!   in flight are failed with an unknown outcome (40003, [`Action::Fail`]) and the primary is
//!   *stalled*: new writes are refused at once (53000, [`Primary::refuse_writes`]) instead of
//!   each waiting the bound again. As below the floor, the entries stay pending in the log and
//!   their locks stay held; the stall ends when the commit LSN covers every entry it failed
//!   (the member acked after all, or the map committed the change);
//! * **a step-down** answers every entry in flight with 40003 as well: a newer epoch decides
//!   whether they survive;
//! * **where each replica's stream begins** (`catchup`), in a new numbered *session*: acks and
//!   refusals of older sessions are ignored; an ack counts only where the acked entry has the
//!   epoch the primary's log has at that LSN; a new session keeps what the replica acked
//!   before only up to where its stream starts, and a snapshot session keeps nothing;
//! * **how far the log may be truncated** ([`Primary::truncate_through`]).
//!
//! What the driver must hold to (the core cannot see it): it ships only entries the primary has
//! made durable (as PostgreSQL's walsender sends only flushed WAL), so no replica holds an
//! entry of this epoch that a crash of the primary could lose and a restarted primary could
//! write again differently; it builds the core after a restart with its persisted commit LSN,
//! never its last LSN, so an unacknowledged tail stays pending; it reports a proposal as failed
//! only when the map certainly did not take it; and with one copy (factor 1) it needs no core.

use std::collections::{BTreeMap, BTreeSet};

use super::catchup::{catch_up, CatchUp};
use super::history::{EpochHistory, LogId};
use super::replica::Reject;
use crate::error::{sqlstate, Error};
use crate::storage::Lsn;

/// When an entry is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// When every member of the in-sync set has persisted it.
    Sync,
    /// When the primary has persisted it (2PC entries also wait for one replica).
    Async,
}

/// The primary's settings, from the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's name.
    pub me: String,
    /// The shard's epoch, in which this primary writes.
    pub epoch: u64,
    pub mode: Mode,
    /// The fewest committed in-sync copies (the primary included) that may take writes.
    pub min_in_sync: usize,
    /// How long a member may leave an outstanding entry unacknowledged.
    pub ack_timeout_ms: u64,
    /// How many entries behind the head are kept for lagging replicas at most.
    pub retention: u64,
}

/// The least time an entry waits for its in-sync set before its client is answered 40003,
/// whatever `ack_timeout_ms` says: room for the ack timeout, a Raft election of the map (its
/// election timeout is 1–2 s) and the commit of the in-sync change, so that a node loss in a
/// cluster whose map keeps its quorum never gets that far.
pub const COMMIT_BOUND_FLOOR_MS: u64 = 5_000;

/// How many ack timeouts an entry waits for its in-sync set at most (above the floor).
pub const COMMIT_BOUND_ACK_TIMEOUTS: u64 = 4;

impl Config {
    /// How long an entry may wait to be committed before its client is answered 40003 and
    /// writes are refused (the stall): [`COMMIT_BOUND_ACK_TIMEOUTS`] times `ack_timeout_ms`,
    /// at least [`COMMIT_BOUND_FLOOR_MS`]. A healthy removal of a silent member takes one ack
    /// timeout and a map commit, well within it.
    pub fn commit_bound_ms(&self) -> u64 {
        self.ack_timeout_ms
            .saturating_mul(COMMIT_BOUND_ACK_TIMEOUTS)
            .max(COMMIT_BOUND_FLOOR_MS)
    }
}

/// A change of the in-sync set the primary proposes to the map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Add(String),
    Remove(String),
}

/// What the primary is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The local log is durable up to `up_to` (an entry of this primary's epoch); `decisions`
    /// are the LSNs among the new entries that hold 2PC `Prepared` or decision records.
    Durable {
        up_to: LogId,
        decisions: Vec<Lsn>,
        now_ms: u64,
    },
    /// A replica connected; its log ends at `last`.
    Opened { node: String, last: LogId },
    /// A replica has persisted its log up to `up_to`, acknowledged in `session`.
    Acked {
        node: String,
        session: u64,
        up_to: LogId,
    },
    /// A replica refused what was sent in `session`.
    Refused {
        node: String,
        session: u64,
        reject: Reject,
    },
    /// The connection of `session` to a replica is gone.
    Lost { node: String, session: u64 },
    /// Time passed.
    Tick { now_ms: u64 },
    /// The map committed the shard's in-sync set for `epoch`.
    InSyncChanged {
        epoch: u64,
        in_sync: BTreeSet<String>,
    },
    /// The map certainly did not take this proposal.
    ProposalFailed { change: Change },
    /// The log was truncated: entries up to `through` are gone.
    Truncated { through: Lsn },
}

/// What the driver does next, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The commit LSN rose to `lsn`: apply up to it, release those transactions' locks, answer
    /// their clients, and send it to the replicas.
    Commit { lsn: Lsn },
    /// Stream durable entries from `from` to `node` in `session`, the first batch naming `prev`.
    Stream {
        node: String,
        session: u64,
        from: Lsn,
        prev: LogId,
    },
    /// Send `node` a snapshot in `session` (at the applied LSN), then the log after it.
    Snapshot { node: String, session: u64 },
    /// Propose the change of the in-sync set to the map, validated against `epoch`.
    Propose { epoch: u64, change: Change },
    /// The entries `first..=last` can no longer commit with this in-sync set: their clients get
    /// `error` (40003). They stay pending in the log.
    Fail { first: Lsn, last: Lsn, error: Error },
    /// A newer epoch exists: stop taking writes and step down.
    StepDown { epoch: u64 },
}

/// What the primary knows of one replica.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Peer {
    /// The current session, if connected.
    session: Option<u64>,
    /// The highest LSN acknowledged in the current (or last) session, checked against this log.
    acked: Lsn,
    /// Whether the current session has acknowledged anything yet (a live replica).
    heard: bool,
}

/// A primary's replication state.
#[derive(Clone, Debug)]
pub struct Primary {
    config: Config,
    history: EpochHistory,
    log_start: Lsn,
    durable: LogId,
    commit: Lsn,
    in_sync: BTreeSet<String>,
    proposal: Option<Change>,
    peers: BTreeMap<String, Peer>,
    /// Durable batches not yet held by every member: last LSN → when it became durable.
    outstanding: BTreeMap<Lsn, u64>,
    /// 2PC entries beyond the commit LSN (async mode waits for a replica for them).
    decisions: BTreeSet<Lsn>,
    /// Entries up to here were failed with 40003.
    failed_through: Lsn,
    /// Durable batches beyond the commit LSN: last LSN → when it became durable (the commit
    /// bound counts from the first).
    waiting: BTreeMap<Lsn, u64>,
    /// Why the primary is stalled (an entry outlived the commit bound), while it is.
    stall: Option<String>,
    next_session: u64,
    deposed: Option<u64>,
}

impl Primary {
    /// A primary that begins (or resumes) writing in `config.epoch`. `history` is the shard's
    /// epoch history from the map and describes this node's log (promotion fixes it so);
    /// `log_start` is the first LSN the log still holds; `last` its last (durable) entry;
    /// `commit` the persisted commit LSN; `in_sync` the map's committed in-sync set. The
    /// entries after `commit` count as outstanding from `now_ms`.
    pub fn new(
        config: Config,
        in_sync: BTreeSet<String>,
        mut history: EpochHistory,
        log_start: Lsn,
        last: LogId,
        commit: Lsn,
        now_ms: u64,
    ) -> Result<Self, Error> {
        if config.epoch == 0 || config.epoch < history.last_epoch() {
            return Err(Error::Internal(format!(
                "a primary of epoch {} with an epoch history up to {}",
                config.epoch,
                history.last_epoch()
            )));
        }
        if !history.matches(last) || commit > last.lsn || log_start > last.lsn + 1 {
            return Err(Error::Internal(format!(
                "a primary's log ending at {last}, starting at {log_start}, committed to {commit}, \
                 disagrees with its epoch history {:?}",
                history.pairs()
            )));
        }
        if config.min_in_sync == 0 {
            return Err(Error::InvalidInput(
                "replication.min_in_sync must be at least 1".into(),
            ));
        }
        history.note(LogId::new(config.epoch, last.lsn + 1));
        let mut outstanding = BTreeMap::new();
        if last.lsn > commit {
            outstanding.insert(last.lsn, now_ms);
        }
        let waiting = outstanding.clone();
        Ok(Primary {
            config,
            history,
            log_start,
            durable: last,
            commit,
            in_sync,
            proposal: None,
            peers: BTreeMap::new(),
            outstanding,
            decisions: BTreeSet::new(),
            failed_through: commit,
            waiting,
            stall: None,
            next_session: 1,
            deposed: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Names the 2PC entries of the pending tail a restarted primary found in its log (H14):
    /// in async mode they, and what follows them, wait until some replica holds them. Call
    /// before the first event; LSNs outside the pending tail are ignored.
    pub fn hold_decisions(&mut self, lsns: impl IntoIterator<Item = Lsn>) {
        let (commit, durable) = (self.commit, self.durable.lsn);
        self.decisions
            .extend(lsns.into_iter().filter(|l| *l > commit && *l <= durable));
    }

    /// The commit LSN.
    pub fn commit(&self) -> Lsn {
        self.commit
    }

    /// The last durable entry of the local log.
    pub fn durable(&self) -> LogId {
        self.durable
    }

    /// The epoch history of this primary's log (its own epoch included).
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// The map's committed in-sync set, as last told.
    pub fn in_sync(&self) -> &BTreeSet<String> {
        &self.in_sync
    }

    /// The proposal in flight, if any.
    pub fn proposal(&self) -> Option<&Change> {
        self.proposal.as_ref()
    }

    /// Why the primary is stalled (an entry waited longer than the commit bound and writes
    /// are refused), while it is.
    pub fn stalled(&self) -> Option<&str> {
        self.stall.as_deref()
    }

    /// The newer epoch that deposed this primary, if one did.
    pub fn deposed(&self) -> Option<u64> {
        self.deposed
    }

    /// A replica's current session and the LSN it has acknowledged.
    pub fn peer(&self, node: &str) -> Option<(Option<u64>, Lsn)> {
        self.peers.get(node).map(|p| (p.session, p.acked))
    }

    /// The nodes whose acks the commit LSN waits for: the committed set, a pending addition and
    /// the primary itself.
    pub fn counted(&self) -> BTreeSet<String> {
        let mut counted = self.in_sync.clone();
        counted.insert(self.config.me.clone());
        if let Some(Change::Add(node)) = &self.proposal {
            counted.insert(node.clone());
        }
        counted
    }

    /// Why a new write must be refused now, if it must: the primary was deposed, (in `sync`
    /// mode) the committed in-sync set is below `min_in_sync`, or the primary is stalled (both
    /// SQLSTATE 53000, retryable: the shard cannot gather the copies a commit needs now, and
    /// nothing of the refused write was done).
    pub fn refuse_writes(&self) -> Option<Error> {
        if let Some(epoch) = self.deposed {
            return Some(Error::Refused(format!(
                "this node is no longer the shard's primary: epoch {epoch} replaced epoch {}",
                self.config.epoch
            )));
        }
        if self.below_floor() {
            return Some(Error::sql(
                sqlstate::INSUFFICIENT_RESOURCES,
                format!(
                    "too few in-sync copies: {} of the {} replication.min_in_sync requires",
                    self.in_sync.len(),
                    self.config.min_in_sync
                ),
            ));
        }
        if let Some(cause) = &self.stall {
            return Some(Error::sql(
                sqlstate::INSUFFICIENT_RESOURCES,
                format!(
                    "writes to this shard are refused for now: {cause}; they resume once the \
                     replica answers again or the map commits the change"
                ),
            ));
        }
        None
    }

    /// The LSN up to which the log may be truncated: entries every known replica has
    /// acknowledged, but no more than `retention` entries behind the head are kept for them,
    /// and nothing beyond the commit LSN (pending entries are not applied anywhere yet).
    /// `replicas` are the shard's replicas in the map: one not heard from since this primary
    /// started (down, or this node restarted) counts as holding nothing, so it finds up to
    /// `retention` entries it lacks when it comes back, and a restarted primary keeps the log
    /// that says where it parts from a new primary's should it turn out to be deposed.
    pub fn truncate_through(&self, replicas: &[String]) -> Lsn {
        let unheard = replicas
            .iter()
            .filter(|n| **n != self.config.me && !self.peers.contains_key(*n))
            .map(|_| 0);
        let laggard = self
            .in_sync
            .iter()
            .filter(|n| **n != self.config.me)
            .map(|n| self.acked(n))
            .chain(self.peers.values().map(|p| p.acked))
            .chain(unheard)
            .min()
            .unwrap_or(self.durable.lsn);
        let bounded = laggard.max(self.durable.lsn.saturating_sub(self.config.retention));
        bounded
            .min(self.commit)
            .max(self.log_start.saturating_sub(1))
    }

    /// Takes one event; returns what to do, in order.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        if let Some(epoch) = self.deposed {
            // A write that slipped past the gate as the primary stepped down is answered too.
            return match event {
                Event::Durable { up_to, .. }
                    if up_to.epoch == self.config.epoch && up_to.lsn > self.durable.lsn =>
                {
                    self.durable = up_to;
                    let error = self.deposed_error(epoch);
                    self.fail_in_flight(error).into_iter().collect()
                }
                _ => Vec::new(),
            };
        }
        match event {
            Event::Durable {
                up_to,
                decisions,
                now_ms,
            } => self.on_durable(up_to, decisions, now_ms),
            Event::Opened { node, last } => self.on_opened(node, last),
            Event::Acked {
                node,
                session,
                up_to,
            } => self.on_acked(&node, session, up_to),
            Event::Refused {
                node,
                session,
                reject,
            } => self.on_refused(node, session, reject),
            Event::Lost { node, session } => {
                if let Some(peer) = self.current(&node, session) {
                    peer.session = None;
                }
                Vec::new()
            }
            Event::Tick { now_ms } => self.on_tick(now_ms),
            Event::InSyncChanged { epoch, in_sync } => self.on_in_sync(epoch, in_sync),
            Event::ProposalFailed { change } => {
                if self.proposal.as_ref() == Some(&change) {
                    self.proposal = None;
                }
                self.progress()
            }
            Event::Truncated { through } => {
                self.log_start = self.log_start.max(through + 1);
                Vec::new()
            }
        }
    }

    fn on_durable(&mut self, up_to: LogId, decisions: Vec<Lsn>, now_ms: u64) -> Vec<Action> {
        if up_to.epoch != self.config.epoch || up_to.lsn <= self.durable.lsn {
            return Vec::new();
        }
        let after = self.durable.lsn;
        self.decisions.extend(
            decisions
                .into_iter()
                .filter(|l| *l > after && *l <= up_to.lsn),
        );
        self.outstanding.insert(up_to.lsn, now_ms);
        self.waiting.insert(up_to.lsn, now_ms);
        self.durable = up_to;
        self.progress()
    }

    fn on_opened(&mut self, node: String, last: LogId) -> Vec<Action> {
        if node == self.config.me {
            return Vec::new();
        }
        self.restart_stream(node, last)
    }

    /// Opens a new session to `node`, whose log ends at `last`. What it acknowledged before
    /// stays counted only up to the entry the new stream starts after: acked entries are
    /// persisted and this primary never contradicts them, so only a lost disk takes them away,
    /// and then the replica comes back with a shorter log. (Counting nothing until it acks
    /// again would make a member that merely reconnected look late.)
    fn restart_stream(&mut self, node: String, last: LogId) -> Vec<Action> {
        let session = self.next_session;
        self.next_session += 1;
        let plan = catch_up(&self.history, self.log_start, self.durable, last);
        let shared = match plan {
            CatchUp::Stream { from, .. } => from - 1,
            CatchUp::Snapshot => 0,
        };
        let acked = self.peers.get(&node).map_or(0, |p| p.acked.min(shared));
        self.peers.insert(
            node.clone(),
            Peer {
                session: Some(session),
                acked,
                heard: false,
            },
        );
        let action = match plan {
            CatchUp::Stream { from, prev } => Action::Stream {
                node,
                session,
                from,
                prev,
            },
            CatchUp::Snapshot => Action::Snapshot { node, session },
        };
        vec![action]
    }

    /// Opens a new session that sends `node` a snapshot: it replaces the replica's log, so
    /// nothing it acknowledged before counts any more.
    fn snapshot(&mut self, node: String) -> Vec<Action> {
        let session = self.next_session;
        self.next_session += 1;
        self.peers.insert(
            node.clone(),
            Peer {
                session: Some(session),
                acked: 0,
                heard: false,
            },
        );
        vec![Action::Snapshot { node, session }]
    }

    /// The peer, if `session` is its current one.
    fn current(&mut self, node: &str, session: u64) -> Option<&mut Peer> {
        self.peers
            .get_mut(node)
            .filter(|p| p.session == Some(session))
    }

    fn on_acked(&mut self, node: &str, session: u64, up_to: LogId) -> Vec<Action> {
        // An entry this primary never shipped, or one of another epoch at that LSN, says
        // nothing about this log.
        if up_to.lsn > self.durable.lsn || !self.history.matches(up_to) {
            return Vec::new();
        }
        let Some(peer) = self.current(node, session) else {
            return Vec::new();
        };
        peer.acked = peer.acked.max(up_to.lsn);
        peer.heard = true;
        self.progress()
    }

    fn on_refused(&mut self, node: String, session: u64, reject: Reject) -> Vec<Action> {
        if self.current(&node, session).is_none() {
            return Vec::new();
        }
        match reject {
            Reject::StaleEpoch { known } if known > self.config.epoch => self.step_down(known),
            Reject::StaleEpoch { .. } | Reject::Malformed(_) => {
                if let Some(peer) = self.current(&node, session) {
                    peer.session = None;
                }
                Vec::new()
            }
            Reject::Gap { last } => self.restart_stream(node, last),
            Reject::Mismatch { resume } => self.restart_stream(node, resume),
            Reject::Diverged { .. } => self.snapshot(node),
        }
    }

    /// Steps down for `epoch`: the entries in flight are answered 40003 first (the new
    /// primary decides whether they survive; their locks stay held until the log says).
    fn step_down(&mut self, epoch: u64) -> Vec<Action> {
        self.deposed = Some(epoch);
        self.proposal = None;
        let error = self.deposed_error(epoch);
        let mut actions: Vec<Action> = self.fail_in_flight(error).into_iter().collect();
        actions.push(Action::StepDown { epoch });
        actions
    }

    fn deposed_error(&self, epoch: u64) -> Error {
        Error::unknown_outcome(format!(
            "this node stopped being the shard's primary (epoch {epoch} replaced epoch {}) \
             before the entry was committed; it may or may not survive in the new primary's log",
            self.config.epoch
        ))
    }

    /// Fails the entries in flight that were not failed yet, if any, with `error`.
    fn fail_in_flight(&mut self, error: Error) -> Option<Action> {
        let first = self.failed_through.max(self.commit) + 1;
        if self.durable.lsn < first {
            return None;
        }
        self.failed_through = self.durable.lsn;
        Some(Action::Fail {
            first,
            last: self.durable.lsn,
            error,
        })
    }

    fn on_in_sync(&mut self, epoch: u64, in_sync: BTreeSet<String>) -> Vec<Action> {
        if epoch > self.config.epoch {
            return self.step_down(epoch);
        }
        if epoch < self.config.epoch {
            return Vec::new();
        }
        let done = match &self.proposal {
            Some(Change::Add(n)) => in_sync.contains(n),
            Some(Change::Remove(n)) => !in_sync.contains(n),
            None => false,
        };
        if done {
            self.proposal = None;
        }
        self.in_sync = in_sync;
        self.progress()
    }

    /// Time passed: a late member is proposed for removal. The tick also runs the commit rule,
    /// so the first tick after [`Primary::new`] commits what may be committed already (in
    /// `async` mode, the durable tail of a restarted primary).
    fn on_tick(&mut self, now_ms: u64) -> Vec<Action> {
        let mut actions = self.progress();
        actions.extend(self.check_bound(now_ms));
        if self.proposal.is_some() {
            return actions;
        }
        let late = self
            .in_sync
            .iter()
            .filter(|n| **n != self.config.me)
            .find(|n| self.is_late(n, now_ms))
            .cloned();
        if let Some(node) = late {
            actions.extend(self.propose(Change::Remove(node)));
        }
        actions
    }

    /// Stalls the primary if the first entry beyond the commit LSN has waited for the commit
    /// bound: the entries in flight are failed with 40003 naming the cause, and new writes are
    /// refused until the stall ends. Below the floor, the floor's own failure applies instead.
    fn check_bound(&mut self, now_ms: u64) -> Vec<Action> {
        if self.stall.is_some() || self.below_floor() {
            return Vec::new();
        }
        let Some((_, since)) = self.waiting.first_key_value() else {
            return Vec::new();
        };
        let waited = now_ms.saturating_sub(*since);
        let bound = self.config.commit_bound_ms();
        if waited < bound {
            return Vec::new();
        }
        let cause = self.stall_cause(waited);
        self.stall = Some(cause.clone());
        let error = Error::unknown_outcome(format!(
            "the commit was not held by the shard's in-sync set within {bound} ms: {cause}; \
             its entry stays in the primary's log and may still commit, so its outcome is \
             unknown"
        ));
        self.fail_in_flight(error).into_iter().collect()
    }

    /// Says what the first entry beyond the commit LSN, which has waited `waited` ms, waits for.
    fn stall_cause(&self, waited: u64) -> String {
        let lsn = self.commit + 1;
        match (&self.proposal, self.config.mode) {
            (Some(Change::Remove(node)), _) => format!(
                "replica {node} has not acknowledged entry {lsn} for {waited} ms, and the \
                 cluster map has not committed taking {node} out of the in-sync set (the map \
                 has no quorum without it?)"
            ),
            (Some(Change::Add(node)), _) => format!(
                "entry {lsn} has waited {waited} ms for replica {node}, whose addition to the \
                 in-sync set the cluster map has not committed"
            ),
            (None, Mode::Sync) => {
                let late: Vec<String> = self
                    .counted()
                    .into_iter()
                    .filter(|n| self.acked(n) < lsn)
                    .collect();
                format!(
                    "entry {lsn} has waited {waited} ms for in-sync member(s) {}",
                    late.join(", ")
                )
            }
            (None, Mode::Async) => format!(
                "two-phase-commit entry {lsn} has waited {waited} ms for a replica to hold it"
            ),
        }
    }

    /// Whether `node` has left an outstanding entry unacknowledged for `ack_timeout_ms`.
    fn is_late(&self, node: &str, now_ms: u64) -> bool {
        let acked = self.acked(node);
        match self.outstanding.range(acked + 1..).next() {
            Some((_, since)) => now_ms.saturating_sub(*since) >= self.config.ack_timeout_ms,
            None => false,
        }
    }

    fn acked(&self, node: &str) -> Lsn {
        if node == self.config.me {
            return self.durable.lsn;
        }
        self.peers.get(node).map_or(0, |p| p.acked)
    }

    fn propose(&mut self, change: Change) -> Vec<Action> {
        self.proposal = Some(change.clone());
        vec![Action::Propose {
            epoch: self.config.epoch,
            change,
        }]
    }

    fn below_floor(&self) -> bool {
        self.config.mode == Mode::Sync && self.in_sync.len() < self.config.min_in_sync
    }

    /// After anything that may move the commit LSN: raise it, fail what cannot commit, forget
    /// what every member holds, and propose an addition if a replica caught up.
    fn progress(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let candidate = self.candidate();
        if candidate > self.commit {
            self.commit = candidate;
            actions.push(Action::Commit { lsn: candidate });
        }
        self.waiting = self.waiting.split_off(&(self.commit + 1));
        if self.stall.is_some() && self.commit >= self.failed_through {
            // What the stall gave up on has committed: the in-sync set works again.
            self.stall = None;
        }
        if self.below_floor() {
            let error = Error::unknown_outcome(format!(
                "too few in-sync copies ({} of {}) to commit; the entry stays in the log and \
                 may still commit",
                self.in_sync.len(),
                self.config.min_in_sync
            ));
            actions.extend(self.fail_in_flight(error));
        } else if let Some(cause) = &self.stall {
            // A write that slipped past the gate as the primary stalled.
            let error = Error::unknown_outcome(format!(
                "the shard's primary is stalled: {cause}; the entry stays in the log and may \
                 still commit, so its outcome is unknown"
            ));
            actions.extend(self.fail_in_flight(error));
        }
        self.forget_held();
        if self.proposal.is_none() {
            if let Some(node) = self.caught_up() {
                actions.extend(self.propose(Change::Add(node)));
            }
        }
        actions
    }

    /// The highest LSN that may be committed now.
    fn candidate(&self) -> Lsn {
        match self.config.mode {
            Mode::Sync if self.below_floor() => self.commit,
            Mode::Sync => self
                .counted()
                .iter()
                .map(|n| self.acked(n))
                .min()
                .unwrap_or(self.commit),
            Mode::Async => {
                let best = self.peers.values().map(|p| p.acked).max().unwrap_or(0);
                match self.decisions.iter().find(|l| **l > best) {
                    Some(first_unheld) => (first_unheld - 1).min(self.durable.lsn),
                    None => self.durable.lsn,
                }
            }
        }
    }

    /// Drops the bookkeeping of entries nobody waits for any more.
    fn forget_held(&mut self) {
        let held = self
            .counted()
            .iter()
            .map(|n| self.acked(n))
            .min()
            .unwrap_or(0);
        self.outstanding = self.outstanding.split_off(&(held + 1));
        self.decisions = self.decisions.split_off(&(self.commit + 1));
    }

    /// A connected replica outside the set that has acked in this session and holds everything
    /// committed, if any.
    fn caught_up(&self) -> Option<String> {
        self.peers
            .iter()
            .filter(|(n, p)| !self.in_sync.contains(*n) && p.session.is_some() && p.heard)
            .find(|(_, p)| p.acked >= self.commit)
            .map(|(n, _)| n.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn primary(mode: Mode, in_sync: &[&str], min: usize) -> Primary {
        let config = Config {
            me: "p".into(),
            epoch: 1,
            mode,
            min_in_sync: min,
            ack_timeout_ms: 100,
            retention: 10,
        };
        Primary::new(
            config,
            set(in_sync),
            EpochHistory::default(),
            1,
            LogId::ZERO,
            0,
            0,
        )
        .expect("valid")
    }

    fn durable(p: &mut Primary, lsn: Lsn, now_ms: u64) -> Vec<Action> {
        p.step(Event::Durable {
            up_to: LogId::new(1, lsn),
            decisions: vec![],
            now_ms,
        })
    }

    fn open(p: &mut Primary, node: &str) -> u64 {
        match p
            .step(Event::Opened {
                node: node.into(),
                last: LogId::ZERO,
            })
            .as_slice()
        {
            [Action::Stream { session, .. }] => *session,
            other => panic!("expected a stream, got {other:?}"),
        }
    }

    fn ack(p: &mut Primary, node: &str, session: u64, lsn: Lsn) -> Vec<Action> {
        p.step(Event::Acked {
            node: node.into(),
            session,
            up_to: LogId::new(1, lsn),
        })
    }

    #[test]
    fn sync_commit_waits_for_every_member() {
        let mut p = primary(Mode::Sync, &["p", "a", "b"], 2);
        let (sa, sb) = (open(&mut p, "a"), open(&mut p, "b"));
        assert!(durable(&mut p, 3, 0).is_empty());
        assert!(ack(&mut p, "a", sa, 3).is_empty());
        assert_eq!(ack(&mut p, "b", sb, 2), vec![Action::Commit { lsn: 2 }]);
    }

    #[test]
    fn a_replica_not_heard_from_since_the_start_keeps_the_retention() {
        let mut p = primary(Mode::Async, &["p"], 1);
        durable(&mut p, 30, 0);
        assert_eq!(p.commit(), 30);
        assert_eq!(p.truncate_through(&[]), 30);
        // "a" has not connected since this primary started: 10 entries stay for it.
        let replicas = ["a".to_string()];
        assert_eq!(p.truncate_through(&replicas), 20);
        let s = open(&mut p, "a");
        ack(&mut p, "a", s, 25);
        assert_eq!(p.truncate_through(&replicas), 25);
    }

    #[test]
    fn an_ack_of_an_old_session_is_ignored() {
        let mut p = primary(Mode::Sync, &["p", "a"], 2);
        let old = open(&mut p, "a");
        let _new = open(&mut p, "a");
        durable(&mut p, 1, 0);
        assert!(ack(&mut p, "a", old, 1).is_empty());
        assert_eq!(p.commit(), 0);
    }

    #[test]
    fn a_member_that_reconnects_is_not_taken_for_the_late_one() {
        let mut p = primary(Mode::Sync, &["a", "b", "p"], 2);
        let sa = open(&mut p, "a");
        open(&mut p, "b");
        durable(&mut p, 2, 0);
        ack(&mut p, "a", sa, 2);
        // a's connection breaks and comes back; b never acked.
        let a = p.step(Event::Opened {
            node: "a".into(),
            last: LogId::new(1, 2),
        });
        assert!(matches!(a.as_slice(), [Action::Stream { from: 3, .. }]));
        assert_eq!(p.peer("a").map(|(_, acked)| acked), Some(2));
        let a = p.step(Event::Tick { now_ms: 100 });
        assert_eq!(
            a,
            vec![Action::Propose {
                epoch: 1,
                change: Change::Remove("b".into())
            }]
        );
    }

    #[test]
    fn a_replica_back_with_a_shorter_log_keeps_only_what_it_still_has() {
        let mut p = primary(Mode::Sync, &["p"], 1);
        let s = open(&mut p, "a");
        durable(&mut p, 5, 0);
        ack(&mut p, "a", s, 5);
        p.step(Event::Opened {
            node: "a".into(),
            last: LogId::new(1, 1),
        });
        assert_eq!(p.peer("a").map(|(_, acked)| acked), Some(1));
    }

    #[test]
    fn a_late_member_is_proposed_for_removal_and_still_counted() {
        let mut p = primary(Mode::Sync, &["p", "a"], 1);
        open(&mut p, "a");
        durable(&mut p, 1, 0);
        assert!(p.step(Event::Tick { now_ms: 99 }).is_empty());
        let a = p.step(Event::Tick { now_ms: 100 });
        assert_eq!(
            a,
            vec![Action::Propose {
                epoch: 1,
                change: Change::Remove("a".into())
            }]
        );
        assert_eq!(p.commit(), 0);
        let a = p.step(Event::InSyncChanged {
            epoch: 1,
            in_sync: set(&["p"]),
        });
        assert_eq!(a, vec![Action::Commit { lsn: 1 }]);
    }

    #[test]
    fn below_the_floor_writes_are_refused_and_in_flight_entries_failed() {
        let mut p = primary(Mode::Sync, &["p", "a"], 2);
        durable(&mut p, 2, 0);
        let a = p.step(Event::InSyncChanged {
            epoch: 1,
            in_sync: set(&["p"]),
        });
        assert!(
            matches!(a.as_slice(), [Action::Fail { first: 1, last: 2, error }]
            if error.sqlstate() == "40003")
        );
        let refusal = p.refuse_writes().expect("refused");
        assert_eq!(refusal.sqlstate(), "53000");
        assert!(refusal.is_retryable());
    }

    #[test]
    fn async_commits_on_fsync_but_2pc_entries_wait_for_a_replica() {
        let mut p = primary(Mode::Async, &["p", "a"], 2);
        let sa = open(&mut p, "a");
        assert_eq!(durable(&mut p, 2, 0), vec![Action::Commit { lsn: 2 }]);
        let a = p.step(Event::Durable {
            up_to: LogId::new(1, 5),
            decisions: vec![4],
            now_ms: 1,
        });
        assert_eq!(a, vec![Action::Commit { lsn: 3 }]);
        assert_eq!(ack(&mut p, "a", sa, 4), vec![Action::Commit { lsn: 5 }]);
    }

    #[test]
    fn async_restart_holds_the_pending_tails_2pc_entries_until_a_replica_has_them() {
        let config = Config {
            me: "p".into(),
            epoch: 1,
            mode: Mode::Async,
            min_in_sync: 1,
            ack_timeout_ms: 100,
            retention: 10,
        };
        let history = EpochHistory::new(vec![(1, 1)]).expect("valid");
        // Restarted with entries 1..=6 in its log, 2 applied; entry 4 is a 2PC record.
        let mut p = Primary::new(config, set(&["p", "a"]), history, 1, LogId::new(1, 6), 2, 0)
            .expect("valid");
        p.hold_decisions([1, 4, 7]);
        let sa = open(&mut p, "a");
        let first = p.step(Event::Tick { now_ms: 1 });
        assert!(
            first.contains(&Action::Commit { lsn: 3 }),
            "commits up to the 2PC entry only: {first:?}"
        );
        assert!(!first
            .iter()
            .any(|a| matches!(a, Action::Commit { lsn } if *lsn > 3)));
        assert_eq!(ack(&mut p, "a", sa, 4), vec![Action::Commit { lsn: 6 }]);
    }

    #[test]
    fn the_commit_bound_is_a_few_ack_timeouts_with_a_floor() {
        let p = primary(Mode::Sync, &["p"], 1);
        assert_eq!(p.config().commit_bound_ms(), COMMIT_BOUND_FLOOR_MS);
        let config = Config {
            ack_timeout_ms: 2_000,
            ..p.config().clone()
        };
        assert_eq!(config.commit_bound_ms(), 8_000);
    }

    #[test]
    fn a_commit_the_map_cannot_unblock_fails_with_40003_after_the_bound_and_writes_stall() {
        let mut p = primary(Mode::Sync, &["p", "a"], 1);
        let sa = open(&mut p, "a");
        durable(&mut p, 1, 0);
        let a = p.step(Event::Tick { now_ms: 100 });
        assert_eq!(
            a,
            vec![Action::Propose {
                epoch: 1,
                change: Change::Remove("a".into())
            }]
        );
        // The map never commits the removal (no quorum).
        let bound = p.config().commit_bound_ms();
        assert!(p.step(Event::Tick { now_ms: bound - 1 }).is_empty());
        assert!(p.refuse_writes().is_none());
        let a = p.step(Event::Tick { now_ms: bound });
        let [Action::Fail {
            first: 1,
            last: 1,
            error,
        }] = a.as_slice()
        else {
            panic!("expected entry 1 failed, got {a:?}");
        };
        assert_eq!(error.sqlstate(), "40003");
        assert!(
            error
                .to_string()
                .contains("taking a out of the in-sync set"),
            "{error}"
        );
        let refusal = p.refuse_writes().expect("stalled writes are refused");
        assert_eq!(refusal.sqlstate(), "53000");
        assert!(refusal.to_string().contains("replica a"), "{refusal}");
        // A write that slipped past the gate is failed as soon as it is durable.
        let a = durable(&mut p, 2, bound + 10);
        assert!(
            matches!(a.as_slice(), [Action::Fail { first: 2, last: 2, error }]
            if error.sqlstate() == "40003"),
            "{a:?}"
        );
        assert!(p
            .step(Event::Tick {
                now_ms: bound + 200
            })
            .is_empty());
        // The replica answers again: everything commits and writes resume.
        assert_eq!(ack(&mut p, "a", sa, 2), vec![Action::Commit { lsn: 2 }]);
        assert!(p.stalled().is_none());
        assert!(p.refuse_writes().is_none());
    }

    #[test]
    fn a_stall_ends_when_the_map_commits_the_removal_at_last() {
        let mut p = primary(Mode::Sync, &["p", "a"], 1);
        open(&mut p, "a");
        durable(&mut p, 3, 0);
        p.step(Event::Tick { now_ms: 100 });
        let bound = p.config().commit_bound_ms();
        assert!(matches!(
            p.step(Event::Tick { now_ms: bound }).as_slice(),
            [Action::Fail {
                first: 1,
                last: 3,
                ..
            }]
        ));
        let a = p.step(Event::InSyncChanged {
            epoch: 1,
            in_sync: set(&["p"]),
        });
        assert_eq!(a, vec![Action::Commit { lsn: 3 }]);
        assert!(p.refuse_writes().is_none());
        // With the set shrunk to the primary, the next entry commits on its fsync.
        assert_eq!(
            durable(&mut p, 4, bound + 1),
            vec![Action::Commit { lsn: 4 }]
        );
        assert!(p
            .step(Event::Tick {
                now_ms: 2 * bound + 2
            })
            .is_empty());
    }

    #[test]
    fn an_entry_that_commits_within_the_bound_is_not_failed() {
        let mut p = primary(Mode::Sync, &["p", "a"], 1);
        let sa = open(&mut p, "a");
        durable(&mut p, 1, 0);
        let bound = p.config().commit_bound_ms();
        assert_eq!(ack(&mut p, "a", sa, 1), vec![Action::Commit { lsn: 1 }]);
        durable(&mut p, 2, bound);
        assert!(p.step(Event::Tick { now_ms: bound + 1 }).is_empty());
        assert!(p.stalled().is_none());
    }

    #[test]
    fn a_step_down_answers_the_entries_in_flight_with_40003() {
        let mut p = primary(Mode::Sync, &["p", "a"], 1);
        durable(&mut p, 2, 0);
        let a = p.step(Event::InSyncChanged {
            epoch: 2,
            in_sync: set(&["a"]),
        });
        assert!(
            matches!(a.as_slice(), [Action::Fail { first: 1, last: 2, error }, Action::StepDown { epoch: 2 }]
            if error.sqlstate() == "40003"),
            "{a:?}"
        );
        // One that slipped past the gate as it stepped down is answered too.
        let a = durable(&mut p, 3, 1);
        assert!(
            matches!(
                a.as_slice(),
                [Action::Fail {
                    first: 3,
                    last: 3,
                    ..
                }]
            ),
            "{a:?}"
        );
        assert!(p.step(Event::Tick { now_ms: 10_000 }).is_empty());
    }

    #[test]
    fn a_new_epoch_deposes_the_primary() {
        let mut p = primary(Mode::Sync, &["p"], 1);
        let a = p.step(Event::InSyncChanged {
            epoch: 2,
            in_sync: set(&["a"]),
        });
        assert_eq!(a, vec![Action::StepDown { epoch: 2 }]);
        // A write that slipped past the gate commits nowhere here: its client hears 40003.
        assert!(matches!(
            durable(&mut p, 1, 0).as_slice(),
            [Action::Fail {
                first: 1,
                last: 1,
                ..
            }]
        ));
        assert!(p.refuse_writes().is_some());
    }
}
