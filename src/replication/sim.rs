//! A simulated shard under random interleavings (the property test of the replication cores).
//!
//! One primary of epoch 2 and one to four replicas. The primary's log begins with entries of
//! epoch 1 that it inherited; each replica starts with a prefix of the deposed epoch-1
//! primary's log, which may run past where epoch 2 began (a tail that must be cut), and the
//! map's in-sync set starts with a random subset of the replicas that hold every committed
//! entry. Then a random sequence of operations runs: the primary writes and fsyncs (some
//! entries are 2PC records), batches are shipped or lost on the way, replicas persist, acks are
//! delivered or lost, connections break (with late acks of the old session still arriving) and
//! reopen, replicas crash and lose what they had not persisted, time passes, the map takes or
//! refuses the primary's proposals after random delays, and the logs are truncated: the
//! primary's as far as its core allows, a replica's as far as its core allows with a random
//! retention (a crash after that rebuilds it from its base, as a restart does). Two driver
//! habits the cores must survive: a replica may report its durable last entry as an ack on its
//! own (which names an old epoch's tail if it has one: H1), and a replica outside the set may
//! come back with an empty disk while acks of its old life are still on the wire (H7).
//!
//! After every step the simulation checks the promises of DESIGN §6.1:
//!
//! * the commit LSN never falls, and truncation never passes it (nor, on a replica, its
//!   applied LSN);
//! * (`sync`) nothing commits while the map's set is below `min_in_sync`;
//! * (`sync`) every entry up to the commit LSN is persisted, as the primary's entry, on every
//!   member of the map's committed in-sync set and on a pending addition;
//! * (`async`) every 2PC entry up to the commit LSN is persisted on some replica;
//! * no replica applies beyond the primary's commit LSN, beyond the commit LSN it received, or
//!   beyond its persisted prefix that matches the primary; what it applies is the primary's.
//!
//! At the end every replica is brought back and the network heals; then everything the
//! primary wrote must commit, so a core that stalls fails too.

use std::collections::{BTreeSet, VecDeque};

use proptest::prelude::*;

use super::primary::{Action as PAction, Change, Config, Event as PEvent, Mode, Primary};
use super::replica::{Action as RAction, Event as REvent, Replica};
use super::{EpochHistory, LogId};
use crate::storage::Lsn;

const EPOCH: u64 = 2;

#[derive(Clone, Debug)]
enum Op {
    Write {
        n: u8,
        decision: bool,
    },
    Fsync,
    Ship {
        r: usize,
        n: u8,
    },
    ShipLost {
        r: usize,
        n: u8,
    },
    Persist {
        r: usize,
    },
    Deliver {
        r: usize,
    },
    DropReply {
        r: usize,
    },
    Disconnect {
        r: usize,
        late_acks: bool,
    },
    Connect {
        r: usize,
    },
    Crash {
        r: usize,
    },
    Hello {
        r: usize,
    },
    Wipe {
        r: usize,
    },
    Tick {
        ms: u16,
    },
    MapCommit,
    MapFail,
    Truncate,
    /// Replica `r` drops the front of its log, keeping `keep` entries behind its applied LSN.
    ReplicaTruncate {
        r: usize,
        keep: u8,
    },
}

/// What the primary asked to send a replica.
#[derive(Clone, Copy, Debug)]
enum Stream {
    Log {
        session: u64,
        next: Lsn,
        prev: LogId,
    },
    Snapshot {
        session: u64,
    },
}

struct SimReplica {
    name: String,
    core: Replica,
    /// The last entry dropped from the log's front, by a snapshot or a truncation (`ZERO`
    /// without one); the data covers it.
    base: LogId,
    /// Entries after `base`, appended (maybe not persisted).
    log: Vec<LogId>,
    /// Entries up to here are on disk.
    disk: Lsn,
    stream: Option<Stream>,
    /// Replies on their way to the primary.
    outbox: VecDeque<RAction>,
    /// What the data reflects.
    applied: Lsn,
}

impl SimReplica {
    fn entry(&self, lsn: Lsn) -> Option<LogId> {
        if lsn <= self.base.lsn {
            return None;
        }
        self.log.get((lsn - self.base.lsn - 1) as usize).copied()
    }

    fn last(&self) -> LogId {
        self.log.last().copied().unwrap_or(self.base)
    }

    /// Whether the replica holds the primary's entry `id` durably (or a snapshot covering it).
    fn holds(&self, id: LogId) -> bool {
        id.lsn <= self.base.lsn || (id.lsn <= self.disk && self.entry(id.lsn) == Some(id))
    }
}

struct Sim {
    mode: Mode,
    min_in_sync: usize,
    now: u64,
    primary: Primary,
    /// The primary's log, entry `lsn` at index `lsn - 1`.
    plog: Vec<LogId>,
    pdurable: Lsn,
    unsynced_decisions: Vec<Lsn>,
    decisions: BTreeSet<Lsn>,
    log_start: Lsn,
    replicas: Vec<SimReplica>,
    map: BTreeSet<String>,
    map_pending: Option<Change>,
    last_commit: Lsn,
}

/// The starting state, drawn by proptest.
#[derive(Clone, Debug)]
struct Setup {
    mode: Mode,
    /// Entries of epoch 1 the primary inherited, and how many of them are committed.
    inherited: u64,
    committed: u64,
    /// Per replica: how long a prefix of the old primary's log it holds, how much of it it
    /// applied, and whether it is in the in-sync set.
    replicas: Vec<(u64, u64, bool)>,
    min_in_sync: usize,
    ack_timeout_ms: u64,
    retention: u64,
}

fn id(epoch: u64, lsn: Lsn) -> LogId {
    LogId::new(epoch, lsn)
}

impl Sim {
    fn new(setup: &Setup) -> Sim {
        let k = setup.inherited;
        let c = setup.committed.min(k);
        let plog: Vec<LogId> = (1..=k).map(|l| id(1, l)).collect();
        let mut map = BTreeSet::from(["p".to_string()]);
        let mut replicas = Vec::new();
        for (i, &(len, applied, member)) in setup.replicas.iter().enumerate() {
            let name = format!("r{i}");
            // A member holds everything committed; the old log ran up to k + 3.
            let len = if member { len.max(c) } else { len }.min(k + 3);
            let applied = applied.min(len).min(c);
            let log: Vec<LogId> = (1..=len).map(|l| id(1, l)).collect();
            let mut history = EpochHistory::default();
            log.iter().for_each(|e| history.note(*e));
            let last = log.last().copied().unwrap_or(LogId::ZERO);
            let core = Replica::new(1, history, last, applied).expect("a valid replica");
            if member {
                map.insert(name.clone());
            }
            replicas.push(SimReplica {
                name,
                core,
                base: LogId::ZERO,
                log,
                disk: len,
                stream: None,
                outbox: VecDeque::new(),
                applied,
            });
        }
        let config = Config {
            me: "p".into(),
            epoch: EPOCH,
            mode: setup.mode,
            min_in_sync: setup.min_in_sync.min(setup.replicas.len() + 1),
            ack_timeout_ms: setup.ack_timeout_ms,
            retention: setup.retention,
        };
        let history = if k == 0 {
            EpochHistory::default()
        } else {
            EpochHistory::new(vec![(1, 1)]).expect("valid")
        };
        let last = plog.last().copied().unwrap_or(LogId::ZERO);
        let primary =
            Primary::new(config, map.clone(), history, 1, last, c, 0).expect("a valid primary");
        Sim {
            mode: setup.mode,
            min_in_sync: setup.min_in_sync.min(setup.replicas.len() + 1),
            now: 0,
            primary,
            pdurable: k,
            plog,
            unsynced_decisions: Vec::new(),
            decisions: BTreeSet::new(),
            log_start: 1,
            replicas,
            map,
            map_pending: None,
            last_commit: c,
        }
    }

    fn pid(&self, lsn: Lsn) -> LogId {
        if lsn == 0 {
            return LogId::ZERO;
        }
        self.plog[lsn as usize - 1]
    }

    fn tell_primary(&mut self, event: PEvent) -> Result<(), TestCaseError> {
        let actions = self.primary.step(event);
        for action in actions {
            match action {
                PAction::Commit { lsn } => {
                    prop_assert!(
                        lsn <= self.pdurable,
                        "commit {lsn} beyond the primary's fsync"
                    );
                    prop_assert!(
                        self.mode == Mode::Async || self.map.len() >= self.min_in_sync,
                        "commit {lsn} with {} in-sync copies, below the floor {}",
                        self.map.len(),
                        self.min_in_sync
                    );
                }
                PAction::Stream {
                    node,
                    session,
                    from,
                    prev,
                } => {
                    prop_assert!(from >= self.log_start, "stream from truncated {from}");
                    let next = Stream::Log {
                        session,
                        next: from,
                        prev,
                    };
                    self.replica_mut(&node).stream = Some(next);
                }
                PAction::Snapshot { node, session } => {
                    self.replica_mut(&node).stream = Some(Stream::Snapshot { session });
                }
                PAction::Propose { change, .. } => self.map_pending = Some(change),
                PAction::Fail { .. } => {}
                PAction::StepDown { epoch } => {
                    prop_assert!(false, "no newer epoch exists, yet stepped down for {epoch}")
                }
            }
        }
        Ok(())
    }

    fn replica_mut(&mut self, node: &str) -> &mut SimReplica {
        self.replicas
            .iter_mut()
            .find(|r| r.name == node)
            .expect("a known replica")
    }

    fn tell_replica(&mut self, r: usize, event: REvent) -> Result<(), TestCaseError> {
        let actions = self.replicas[r].core.step(event);
        for action in actions {
            match action {
                RAction::SaveEpoch { .. } => {}
                RAction::Append {
                    truncate_after,
                    entries,
                } => {
                    let rep = &mut self.replicas[r];
                    if let Some(t) = truncate_after {
                        prop_assert!(t >= rep.applied, "{} cut applied entries", rep.name);
                        prop_assert!(t >= rep.base.lsn);
                        rep.log.truncate((t - rep.base.lsn) as usize);
                        rep.disk = rep.disk.min(t);
                    }
                    for e in entries {
                        prop_assert_eq!(e.lsn, rep.last().lsn + 1);
                        rep.log.push(e);
                    }
                }
                RAction::Install { at } => {
                    let rep = &mut self.replicas[r];
                    rep.base = at;
                    rep.log.clear();
                    rep.disk = at.lsn;
                    rep.applied = at.lsn;
                    self.tell_replica(r, REvent::Persisted { up_to: at })?;
                }
                RAction::Apply { up_to } => {
                    let commit = self.primary.commit();
                    let rep = &self.replicas[r];
                    prop_assert!(
                        up_to <= commit,
                        "{} applies up to {up_to} beyond the commit LSN {commit}",
                        rep.name
                    );
                    prop_assert!(up_to <= rep.core.commit());
                    prop_assert!(
                        up_to <= rep.disk,
                        "{} applies unpersisted entries",
                        rep.name
                    );
                    for lsn in rep.applied + 1..=up_to {
                        prop_assert_eq!(
                            rep.entry(lsn),
                            Some(self.pid(lsn)),
                            "{} applies an entry that is not the primary's",
                            &rep.name
                        );
                    }
                    self.replicas[r].applied = up_to;
                }
                RAction::Ack { .. } | RAction::Refuse { .. } => {
                    self.replicas[r].outbox.push_back(action)
                }
            }
        }
        Ok(())
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let n = self.replicas.len();
        match *op {
            Op::Write { n, decision } => {
                let first = self.plog.len() as Lsn + 1;
                for lsn in first..first + n as Lsn {
                    self.plog.push(id(EPOCH, lsn));
                }
                if decision && n > 0 {
                    self.unsynced_decisions.push(self.plog.len() as Lsn);
                }
            }
            Op::Fsync => self.fsync()?,
            Op::Ship { r, n: k } => self.ship(r % n, k, true)?,
            Op::ShipLost { r, n: k } => self.ship(r % n, k, false)?,
            Op::Persist { r } => self.persist(r % n)?,
            Op::Deliver { r } => self.deliver(r % n)?,
            Op::DropReply { r } => {
                self.replicas[r % n].outbox.pop_front();
            }
            Op::Disconnect { r, late_acks } => self.disconnect(r % n, late_acks)?,
            Op::Connect { r } => self.connect(r % n)?,
            Op::Crash { r } => {
                let r = r % n;
                self.disconnect(r, false)?;
                let rep = &mut self.replicas[r];
                rep.log.truncate((rep.disk - rep.base.lsn) as usize);
                let mut history = EpochHistory::from_snapshot(rep.base);
                rep.log.iter().for_each(|e| history.note(*e));
                let last = rep.last();
                rep.core = Replica::new(rep.core.epoch(), history, last, rep.applied)
                    .map_err(TestCaseError::fail)?;
            }
            Op::Hello { r } => {
                let rep = &mut self.replicas[r % n];
                if let Some(Stream::Log { session, .. } | Stream::Snapshot { session }) = rep.stream
                {
                    let up_to = rep.core.persisted();
                    rep.outbox.push_back(RAction::Ack { session, up_to });
                }
            }
            Op::Wipe { r } => {
                let r = r % n;
                let name = self.replicas[r].name.clone();
                // A disk lost is data lost if it held what no other copy holds (a member's
                // committed entries; in async mode, the only replica copy of a 2PC entry): no
                // protocol helps with that, so only the others are wiped.
                let member = self.map.contains(&name) || self.primary.counted().contains(&name);
                let commit = self.primary.commit();
                let sole = self.decisions.range(..=commit).any(|&lsn| {
                    let id = self.pid(lsn);
                    !self.replicas.iter().any(|o| o.name != name && o.holds(id))
                });
                if !member && !sole {
                    self.disconnect(r, true)?;
                    let rep = &mut self.replicas[r];
                    rep.core = Replica::new(0, EpochHistory::default(), LogId::ZERO, 0)
                        .map_err(TestCaseError::fail)?;
                    rep.base = LogId::ZERO;
                    rep.log.clear();
                    rep.disk = 0;
                    rep.applied = 0;
                    self.connect(r)?;
                }
            }
            Op::Tick { ms } => {
                self.now += ms as u64;
                let now_ms = self.now;
                self.tell_primary(PEvent::Tick { now_ms })?;
            }
            Op::MapCommit => {
                if let Some(change) = self.map_pending.take() {
                    match change {
                        Change::Add(node) => self.map.insert(node),
                        Change::Remove(node) => self.map.remove(&node),
                    };
                    let in_sync = self.map.clone();
                    self.tell_primary(PEvent::InSyncChanged {
                        epoch: EPOCH,
                        in_sync,
                    })?;
                }
            }
            Op::MapFail => {
                if let Some(change) = self.map_pending.take() {
                    self.tell_primary(PEvent::ProposalFailed { change })?;
                }
            }
            Op::Truncate => {
                let through = self.primary.truncate_through(&[]);
                prop_assert!(through <= self.primary.commit());
                self.log_start = self.log_start.max(through + 1);
                self.tell_primary(PEvent::Truncated { through })?;
            }
            Op::ReplicaTruncate { r, keep } => {
                let r = r % n;
                let rep = &mut self.replicas[r];
                let through = rep.core.truncate_through(keep as Lsn);
                prop_assert!(
                    through <= rep.applied && through <= rep.core.commit(),
                    "{} may truncate through {through}, beyond what it applied",
                    &rep.name
                );
                if through > rep.base.lsn {
                    let base = rep.entry(through).ok_or_else(|| {
                        TestCaseError::fail(format!("{} lacks entry {through}", rep.name))
                    })?;
                    rep.log.drain(..(through - rep.base.lsn) as usize);
                    rep.base = base;
                    self.tell_replica(r, REvent::Truncated { base })?;
                }
            }
        }
        self.check()
    }

    fn fsync(&mut self) -> Result<(), TestCaseError> {
        let last = self.plog.len() as Lsn;
        if last <= self.pdurable {
            return Ok(());
        }
        self.pdurable = last;
        let decisions = std::mem::take(&mut self.unsynced_decisions);
        self.decisions.extend(decisions.iter().copied());
        let now_ms = self.now;
        self.tell_primary(PEvent::Durable {
            up_to: self.pid(last),
            decisions,
            now_ms,
        })
    }

    /// Sends the next `k` durable entries of replica `r`'s stream (or its snapshot); a lost
    /// batch moves the stream on without reaching the replica.
    fn ship(&mut self, r: usize, k: u8, arrives: bool) -> Result<(), TestCaseError> {
        let Some(stream) = self.replicas[r].stream else {
            return Ok(());
        };
        match stream {
            Stream::Snapshot { session } => {
                let at = self.pid(self.primary.commit());
                self.replicas[r].stream = Some(Stream::Log {
                    session,
                    next: at.lsn + 1,
                    prev: at,
                });
                if arrives {
                    let event = REvent::Snapshot {
                        session,
                        epoch: EPOCH,
                        at,
                    };
                    self.tell_replica(r, event)?;
                }
            }
            Stream::Log {
                session,
                next,
                prev,
            } => {
                if next < self.log_start {
                    // The log the stream needs is gone: the driver starts over.
                    self.disconnect(r, false)?;
                    return self.connect(r);
                }
                let end = (next + k as Lsn).saturating_sub(1).min(self.pdurable);
                let entries: Vec<LogId> = (next..=end).map(|l| self.pid(l)).collect();
                let last = entries.last().copied().unwrap_or(prev);
                self.replicas[r].stream = Some(Stream::Log {
                    session,
                    next: last.lsn + 1,
                    prev: last,
                });
                if arrives {
                    let event = REvent::Batch {
                        session,
                        epoch: EPOCH,
                        prev,
                        entries,
                        commit: self.primary.commit(),
                    };
                    self.tell_replica(r, event)?;
                }
            }
        }
        Ok(())
    }

    fn persist(&mut self, r: usize) -> Result<(), TestCaseError> {
        let rep = &mut self.replicas[r];
        let last = rep.last();
        rep.disk = last.lsn;
        self.tell_replica(r, REvent::Persisted { up_to: last })
    }

    fn deliver(&mut self, r: usize) -> Result<(), TestCaseError> {
        let node = self.replicas[r].name.clone();
        let event = match self.replicas[r].outbox.pop_front() {
            Some(RAction::Ack { session, up_to }) => PEvent::Acked {
                node,
                session,
                up_to,
            },
            Some(RAction::Refuse { session, reject }) => PEvent::Refused {
                node,
                session,
                reject,
            },
            _ => return Ok(()),
        };
        self.tell_primary(event)
    }

    fn disconnect(&mut self, r: usize, late_acks: bool) -> Result<(), TestCaseError> {
        let rep = &mut self.replicas[r];
        if !late_acks {
            rep.outbox.clear();
        }
        let session = match rep.stream.take() {
            Some(Stream::Log { session, .. } | Stream::Snapshot { session }) => session,
            None => return Ok(()),
        };
        let node = rep.name.clone();
        self.tell_primary(PEvent::Lost { node, session })
    }

    fn connect(&mut self, r: usize) -> Result<(), TestCaseError> {
        let rep = &self.replicas[r];
        let event = PEvent::Opened {
            node: rep.name.clone(),
            last: rep.core.last(),
        };
        self.tell_primary(event)
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let commit = self.primary.commit();
        prop_assert!(commit >= self.last_commit, "the commit LSN fell");
        self.last_commit = commit;
        prop_assert!(
            self.log_start <= commit + 1,
            "truncated beyond the commit LSN"
        );
        for rep in &self.replicas {
            let core = &rep.core;
            prop_assert_eq!(core.applied(), rep.applied);
            prop_assert!(
                rep.base.lsn <= rep.applied,
                "{} dropped unapplied entries",
                &rep.name
            );
            prop_assert!(core.applied() <= core.commit() && core.applied() <= core.matched());
            prop_assert!(
                rep.applied <= commit,
                "{} applied beyond the commit",
                &rep.name
            );
            prop_assert_eq!(
                core.last(),
                rep.last(),
                "{}: core and log disagree",
                &rep.name
            );
        }
        match self.mode {
            Mode::Sync => {
                let mut counted = self.map.clone();
                counted.extend(self.primary.counted());
                for rep in self.replicas.iter().filter(|r| counted.contains(&r.name)) {
                    for lsn in 1..=commit {
                        prop_assert!(
                            rep.holds(self.pid(lsn)),
                            "{} is in the in-sync set but lacks committed entry {}",
                            &rep.name,
                            lsn
                        );
                    }
                }
            }
            Mode::Async => {
                for &lsn in self.decisions.range(..=commit) {
                    let held = self.replicas.iter().any(|r| r.holds(self.pid(lsn)));
                    prop_assert!(held, "2PC entry {lsn} committed on the primary alone");
                }
            }
        }
        Ok(())
    }

    /// Heals everything and runs the protocol until nothing moves; all that was written must
    /// then be committed.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        self.fsync()?;
        for _ in 0..20 {
            for r in 0..self.replicas.len() {
                if self.replicas[r].stream.is_none() {
                    self.connect(r)?;
                }
                for _ in 0..3 {
                    self.ship(r, u8::MAX, true)?;
                    self.persist(r)?;
                    while !self.replicas[r].outbox.is_empty() {
                        self.deliver(r)?;
                    }
                }
                self.check()?;
            }
            self.run(&Op::MapCommit)?;
        }
        prop_assert_eq!(
            self.primary.commit(),
            self.pdurable,
            "a healed shard left entries uncommitted"
        );
        Ok(())
    }
}

fn op(replicas: usize) -> impl Strategy<Value = Op> {
    let r = 0..replicas;
    prop_oneof![
        3 => (1..4u8, prop::bool::weighted(0.2)).prop_map(|(n, decision)| Op::Write { n, decision }),
        3 => Just(Op::Fsync),
        4 => (r.clone(), 0..4u8).prop_map(|(r, n)| Op::Ship { r, n }),
        1 => (r.clone(), 1..3u8).prop_map(|(r, n)| Op::ShipLost { r, n }),
        3 => r.clone().prop_map(|r| Op::Persist { r }),
        4 => r.clone().prop_map(|r| Op::Deliver { r }),
        1 => r.clone().prop_map(|r| Op::DropReply { r }),
        1 => (r.clone(), any::<bool>()).prop_map(|(r, late_acks)| Op::Disconnect { r, late_acks }),
        2 => r.clone().prop_map(|r| Op::Connect { r }),
        1 => r.clone().prop_map(|r| Op::Crash { r }),
        1 => r.clone().prop_map(|r| Op::Hello { r }),
        1 => r.clone().prop_map(|r| Op::Wipe { r }),
        2 => (1..150u16).prop_map(|ms| Op::Tick { ms }),
        2 => Just(Op::MapCommit),
        1 => Just(Op::MapFail),
        1 => Just(Op::Truncate),
        1 => (r, 0..6u8).prop_map(|(r, keep)| Op::ReplicaTruncate { r, keep }),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![3 => Just(Mode::Sync), 1 => Just(Mode::Async)],
        0..5u64,
        0..5u64,
        prop::collection::vec((0..8u64, 0..8u64, any::<bool>()), 1..=4),
        1..=5usize,
        50..200u64,
        2..20u64,
    )
        .prop_map(
            |(mode, inherited, committed, replicas, min_in_sync, ack_timeout_ms, retention)| {
                Setup {
                    mode,
                    inherited,
                    committed,
                    replicas,
                    min_in_sync,
                    ack_timeout_ms,
                    retention,
                }
            },
        )
}

fn scenario() -> impl Strategy<Value = (Setup, Vec<Op>)> {
    setup().prop_flat_map(|s| {
        let n = s.replicas.len();
        (Just(s), prop::collection::vec(op(n), 0..150))
    })
}

// The default 256 cases; `PROPTEST_CASES=5000 cargo test --lib replication::sim` runs more.
proptest! {
    /// Random interleavings never commit an entry a member of the in-sync set lacks, never
    /// apply one beyond the commit LSN, and leave nothing uncommitted once healed.
    #[test]
    fn random_interleavings_keep_the_replication_invariants((setup, ops) in scenario()) {
        let mut sim = Sim::new(&setup);
        sim.check()?;
        for op in &ops {
            sim.run(op)?;
        }
        sim.drain()?;
    }
}
