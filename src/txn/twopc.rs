//! Two-phase commit as state machines without I/O (DESIGN §7).
//!
//! A transaction that writes to several shards commits in two phases. The gateway keeps no
//! state of its own; the commit point is a record in the log of one participant, the **anchor**
//! (the shard of the first key written):
//!
//! 1. The gateway sends `PREPARE` to every other written shard. Each logs a `Prepared` entry with
//!    its write set and lock set, keeps its locks, and votes. Read-only shards are released at
//!    the same time and write nothing.
//! 2. If every vote is yes, the anchor commits its own writes together with the record
//!    `COMMITTED(participants)` in one log entry: the commit point. Then the other participants
//!    are told to commit. Any no vote, or a participant lost before the commit point, aborts
//!    everywhere. No record means aborted (presumed abort).
//! 3. A participant that stays prepared too long asks the anchor. The anchor answers from its
//!    record, or, with none, writes `ABORTED` first (a compare-and-set against a commit in
//!    progress), so a late commit from a slow gateway fails instead of splitting the decision.
//!
//! This module holds the two deciding parts, each a plain data structure driven by method calls:
//! [`Coordinator`], what the gateway does next given the answers it got; and [`Decisions`], the
//! anchor's table of records with the compare-and-set. They read no clock (time is passed in) and
//! do no I/O; `gateway::commit` and `txn::distributed` carry out what they return.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cluster::ring::ShardId;

/// A distributed transaction's id, unique in the cluster (a fresh wait-die timestamp of the
/// gateway, which carries the gateway's node tag).
pub type Gid = u64;

/// The outcome of a distributed transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Committed,
    Aborted,
}

/// The anchor's record of a decision, stored in [`crate::storage::Space::Txn`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The commit point: written in the same log entry as the anchor's own writes.
    Committed { participants: Vec<ShardId> },
    /// Written by recovery when a participant asked and there was no record.
    Aborted,
}

impl Record {
    /// The outcome the record stands for.
    pub fn outcome(&self) -> Outcome {
        match self {
            Record::Committed { .. } => Outcome::Committed,
            Record::Aborted => Outcome::Aborted,
        }
    }
}

/// A prepared participant's answer to the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vote {
    /// Prepared: the write set and locks are durable.
    Yes,
    /// Refused (a constraint, a lost lock, a stale map); the participant rolled back.
    No(String),
    /// No answer: the participant may or may not have prepared.
    Lost(String),
}

/// What the anchor said to the request to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnchorReply {
    /// The commit entry with the `COMMITTED` record is durable.
    Committed,
    /// The anchor refused (recovery aborted the transaction first, or its part was rolled back).
    Refused(String),
    /// No answer: the anchor may or may not have committed.
    Lost(String),
}

/// A step for the gateway to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Commit the only written shard in one phase.
    CommitOnePhase(ShardId),
    /// Release a read-only participant (it writes nothing).
    Release(ShardId),
    /// Send `PREPARE` to a participant.
    Prepare(ShardId),
    /// Ask the anchor to commit its writes with the `COMMITTED` record.
    CommitAnchor(ShardId),
    /// Tell a prepared participant to commit.
    Commit(ShardId),
    /// Tell a participant to abort (prepared or not).
    Abort(ShardId),
    /// Tell the anchor to drop its record: every participant applied the commit.
    Forget(ShardId),
    /// Answer the client.
    Finish(Finish),
}

/// How a distributed commit ended, as the client learns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    Committed,
    /// Definitely rolled back everywhere, for the given reason.
    Aborted(String),
    /// The gateway cannot know: the client gets 40003.
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Preparing,
    Deciding,
    Committing,
    Done,
}

/// The gateway's side of one commit: feed it the answers, carry out the actions it returns.
#[derive(Debug)]
pub struct Coordinator {
    anchor: ShardId,
    /// Written shards other than the anchor.
    others: BTreeSet<ShardId>,
    phase: Phase,
    votes: BTreeMap<ShardId, Vote>,
    acks: BTreeMap<ShardId, bool>,
}

impl Coordinator {
    /// Starts the commit of a transaction that wrote `written` (in the order of their first
    /// write; the first is the anchor) and only read from `read_only`.
    pub fn start(written: &[ShardId], read_only: &[ShardId]) -> (Self, Vec<Action>) {
        let mut others = BTreeSet::new();
        let anchor = written.first().copied().unwrap_or_default();
        for &s in written.iter().skip(1) {
            if s != anchor {
                others.insert(s);
            }
        }
        let mut c = Coordinator {
            anchor,
            others,
            phase: Phase::Preparing,
            votes: BTreeMap::new(),
            acks: BTreeMap::new(),
        };
        let mut actions = Vec::new();
        if written.is_empty() {
            c.phase = Phase::Done;
            actions.extend(read_only.iter().map(|&s| Action::Release(s)));
            actions.push(Action::Finish(Finish::Committed));
        } else if c.others.is_empty() {
            // One phase: the read locks elsewhere are held until the commit is done.
            c.phase = Phase::Done;
            actions.push(Action::CommitOnePhase(anchor));
            actions.extend(read_only.iter().map(|&s| Action::Release(s)));
        } else {
            actions.extend(read_only.iter().map(|&s| Action::Release(s)));
            actions.extend(c.others.iter().map(|&s| Action::Prepare(s)));
        }
        (c, actions)
    }

    /// The anchor shard.
    pub fn anchor(&self) -> ShardId {
        self.anchor
    }

    /// Every written shard, anchor first.
    pub fn participants(&self) -> Vec<ShardId> {
        std::iter::once(self.anchor)
            .chain(self.others.iter().copied())
            .collect()
    }

    /// Takes a participant's vote.
    pub fn on_vote(&mut self, shard: ShardId, vote: Vote) -> Vec<Action> {
        if self.phase != Phase::Preparing || !self.others.contains(&shard) {
            return Vec::new();
        }
        let failed = match &vote {
            Vote::Yes => None,
            Vote::No(why) => Some(format!("shard {shard} refused to prepare: {why}")),
            Vote::Lost(why) => Some(format!("shard {shard} did not answer the prepare: {why}")),
        };
        self.votes.insert(shard, vote);
        if let Some(reason) = failed {
            return self.abort(reason);
        }
        if self.votes.len() == self.others.len() {
            self.phase = Phase::Deciding;
            return vec![Action::CommitAnchor(self.anchor)];
        }
        Vec::new()
    }

    /// Gives up before the commit point (for instance, the gateway's deadline passed).
    pub fn abort(&mut self, reason: String) -> Vec<Action> {
        if !matches!(self.phase, Phase::Preparing | Phase::Deciding) {
            return Vec::new();
        }
        self.phase = Phase::Done;
        let mut actions = vec![Action::Abort(self.anchor)];
        // Every other participant may have prepared (a lost vote is unknown), so all are told.
        actions.extend(self.others.iter().map(|&s| Action::Abort(s)));
        actions.push(Action::Finish(Finish::Aborted(reason)));
        actions
    }

    /// Takes the anchor's answer to the commit.
    pub fn on_anchor(&mut self, reply: AnchorReply) -> Vec<Action> {
        if self.phase != Phase::Deciding {
            return Vec::new();
        }
        match reply {
            AnchorReply::Committed => {
                // The decision is made and durable: the client can have it now. The others
                // apply it as they get the message; until then their locks keep every later
                // transaction from seeing the state in between.
                self.phase = Phase::Committing;
                let mut actions: Vec<Action> =
                    self.others.iter().map(|&s| Action::Commit(s)).collect();
                actions.push(Action::Finish(Finish::Committed));
                actions
            }
            AnchorReply::Refused(why) => {
                let reason = format!("the anchor shard {} refused the commit: {why}", self.anchor);
                self.abort(reason)
            }
            AnchorReply::Lost(why) => {
                // The commit may or may not have happened; the prepared participants will learn
                // the outcome from the anchor's record.
                self.phase = Phase::Done;
                vec![Action::Finish(Finish::Unknown(format!(
                    "lost the anchor shard {} during commit; the transaction's outcome is unknown: {why}",
                    self.anchor
                )))]
            }
        }
    }

    /// Takes a participant's answer to the commit (the client's answer waits for them, within a bound). When all
    /// have applied it, the anchor may drop its record; a participant that missed it learns the
    /// outcome from the anchor instead.
    pub fn on_commit_ack(&mut self, shard: ShardId, ok: bool) -> Vec<Action> {
        if self.phase != Phase::Committing || !self.others.contains(&shard) {
            return Vec::new();
        }
        self.acks.insert(shard, ok);
        if self.acks.len() < self.others.len() {
            return Vec::new();
        }
        self.phase = Phase::Done;
        if self.acks.values().all(|&ok| ok) {
            vec![Action::Forget(self.anchor)]
        } else {
            Vec::new()
        }
    }

    /// Whether the coordinator has finished.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }
}

/// A record's state in the anchor's table.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// The commit entry is submitted but not yet durable.
    Committing,
    /// The `ABORTED` record is submitted but not yet durable.
    Aborting,
    /// Durable, since the given time (milliseconds of the caller's monotonic clock).
    Done { record: Record, since: u64 },
}

/// What recovery must do for a participant's question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolve {
    /// The outcome is recorded.
    Known(Outcome),
    /// A commit or abort record is being written: ask again shortly.
    Pending,
    /// No record: write `ABORTED` (the table already refuses a commit), then call
    /// [`Decisions::aborted`].
    WriteAborted,
}

/// Why the anchor refuses to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Recovery aborted the transaction first.
    Aborted,
    /// The transaction already has a record (a duplicate request).
    Duplicate,
    /// The gateway took longer than the decision deadline.
    TooLate,
}

/// The anchor's decision records, with the compare-and-set between a commit and recovery.
///
/// Times are milliseconds of one monotonic clock, passed in by the caller.
#[derive(Debug, Default)]
pub struct Decisions {
    records: BTreeMap<Gid, State>,
}

impl Decisions {
    /// Loads a durable record (at startup).
    pub fn load(&mut self, gid: Gid, record: Record, now: u64) {
        self.records.insert(gid, State::Done { record, since: now });
    }

    /// Claims the right to commit `gid`. `started` is when the gateway began to prepare, and
    /// `deadline` the longest it may take to decide: a gateway slower than that must not commit,
    /// because `ABORTED` records are dropped after a retention longer than the deadline.
    pub fn begin_commit(
        &mut self,
        gid: Gid,
        started: Option<u64>,
        deadline: u64,
        now: u64,
    ) -> Result<(), Refusal> {
        match self.records.get(&gid) {
            Some(State::Aborting)
            | Some(State::Done {
                record: Record::Aborted,
                ..
            }) => return Err(Refusal::Aborted),
            Some(_) => return Err(Refusal::Duplicate),
            None => {}
        }
        if started.is_some_and(|s| now.saturating_sub(s) > deadline) {
            return Err(Refusal::TooLate);
        }
        self.records.insert(gid, State::Committing);
        Ok(())
    }

    /// The commit entry of `gid` is durable (`ok`), or it failed and the claim is dropped.
    pub fn committed(&mut self, gid: Gid, participants: Vec<ShardId>, ok: bool, now: u64) {
        if ok {
            let record = Record::Committed { participants };
            self.records.insert(gid, State::Done { record, since: now });
        } else if self.records.get(&gid) == Some(&State::Committing) {
            self.records.remove(&gid);
        }
    }

    /// A participant asks for the outcome of `gid`.
    pub fn resolve(&mut self, gid: Gid) -> Resolve {
        match self.records.get(&gid) {
            Some(State::Done { record, .. }) => Resolve::Known(record.outcome()),
            Some(State::Committing | State::Aborting) => Resolve::Pending,
            None => {
                self.records.insert(gid, State::Aborting);
                Resolve::WriteAborted
            }
        }
    }

    /// The `ABORTED` record of `gid` is durable (`ok`), or writing it failed.
    pub fn aborted(&mut self, gid: Gid, ok: bool, now: u64) {
        if ok {
            let record = Record::Aborted;
            self.records.insert(gid, State::Done { record, since: now });
        } else if self.records.get(&gid) == Some(&State::Aborting) {
            self.records.remove(&gid);
        }
    }

    /// Drops the record of `gid` (every participant applied the outcome); returns whether there
    /// was a durable record to delete.
    pub fn forget(&mut self, gid: Gid) -> bool {
        match self.records.get(&gid) {
            Some(State::Done { .. }) => {
                self.records.remove(&gid);
                true
            }
            _ => false,
        }
    }

    /// `COMMITTED` records older than `min_age`, with their participants: candidates for
    /// garbage collection once no participant holds the transaction prepared.
    pub fn committed_older_than(&self, min_age: u64, now: u64) -> Vec<(Gid, Vec<ShardId>)> {
        self.records
            .iter()
            .filter_map(|(&gid, s)| match s {
                State::Done {
                    record: Record::Committed { participants },
                    since,
                } if now.saturating_sub(*since) >= min_age => Some((gid, participants.clone())),
                _ => None,
            })
            .collect()
    }

    /// `ABORTED` records older than `retention`: they can go, because no gateway can commit
    /// after its deadline (shorter than the retention), and a participant that asks again later
    /// gets a new `ABORTED`.
    pub fn aborted_older_than(&self, retention: u64, now: u64) -> Vec<Gid> {
        self.records
            .iter()
            .filter_map(|(&gid, s)| match s {
                State::Done {
                    record: Record::Aborted,
                    since,
                } if now.saturating_sub(*since) >= retention => Some(gid),
                _ => None,
            })
            .collect()
    }

    /// How many records the table holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(actions: &[Action]) -> Option<&Finish> {
        actions.iter().find_map(|a| match a {
            Action::Finish(f) => Some(f),
            _ => None,
        })
    }

    #[test]
    fn a_read_only_transaction_releases_and_finishes() {
        let (c, actions) = Coordinator::start(&[], &[1, 2]);
        assert_eq!(
            actions,
            vec![
                Action::Release(1),
                Action::Release(2),
                Action::Finish(Finish::Committed)
            ]
        );
        assert!(c.is_done());
    }

    #[test]
    fn one_written_shard_commits_in_one_phase_then_releases_readers() {
        let (c, actions) = Coordinator::start(&[2, 2], &[1, 3]);
        assert_eq!(
            actions,
            vec![
                Action::CommitOnePhase(2),
                Action::Release(1),
                Action::Release(3)
            ]
        );
        assert!(c.is_done());
    }

    #[test]
    fn the_first_written_shard_is_the_anchor_and_is_not_prepared() {
        let (c, actions) = Coordinator::start(&[3, 1, 2], &[4]);
        assert_eq!(c.anchor(), 3);
        assert_eq!(c.participants(), vec![3, 1, 2]);
        assert_eq!(
            actions,
            vec![Action::Release(4), Action::Prepare(1), Action::Prepare(2)]
        );
    }

    #[test]
    fn all_yes_votes_commit_at_the_anchor_then_everywhere() {
        let (mut c, _) = Coordinator::start(&[1, 2, 3], &[]);
        assert!(c.on_vote(2, Vote::Yes).is_empty());
        assert_eq!(c.on_vote(3, Vote::Yes), vec![Action::CommitAnchor(1)]);
        // The client is answered as soon as the anchor's record is durable.
        assert_eq!(
            c.on_anchor(AnchorReply::Committed),
            vec![
                Action::Commit(2),
                Action::Commit(3),
                Action::Finish(Finish::Committed)
            ]
        );
        assert!(!c.is_done());
        assert!(c.on_commit_ack(2, true).is_empty());
        assert_eq!(c.on_commit_ack(3, true), vec![Action::Forget(1)]);
        assert!(c.is_done());
    }

    #[test]
    fn a_missed_commit_ack_still_commits_but_keeps_the_record() {
        let (mut c, _) = Coordinator::start(&[1, 2], &[]);
        c.on_vote(2, Vote::Yes);
        c.on_anchor(AnchorReply::Committed);
        assert!(c.on_commit_ack(2, false).is_empty());
        assert!(c.is_done());
    }

    #[test]
    fn a_no_vote_aborts_every_participant() {
        let (mut c, _) = Coordinator::start(&[1, 2, 3], &[]);
        c.on_vote(2, Vote::Yes);
        let actions = c.on_vote(3, Vote::No("lock timeout".into()));
        assert!(actions.contains(&Action::Abort(1)));
        assert!(actions.contains(&Action::Abort(2)));
        assert!(actions.contains(&Action::Abort(3)));
        assert!(matches!(finish(&actions), Some(Finish::Aborted(r)) if r.contains("lock timeout")));
        // Late answers change nothing.
        assert!(c.on_anchor(AnchorReply::Committed).is_empty());
        assert!(c.on_vote(2, Vote::Yes).is_empty());
    }

    #[test]
    fn a_lost_vote_is_a_definite_abort() {
        let (mut c, _) = Coordinator::start(&[1, 2], &[]);
        let actions = c.on_vote(2, Vote::Lost("connection reset".into()));
        assert!(matches!(finish(&actions), Some(Finish::Aborted(_))));
        assert!(actions.contains(&Action::Abort(2)));
    }

    #[test]
    fn an_anchor_refusal_aborts_and_a_lost_anchor_is_unknown() {
        let (mut c, _) = Coordinator::start(&[1, 2], &[]);
        c.on_vote(2, Vote::Yes);
        let actions = c.on_anchor(AnchorReply::Refused("aborted by recovery".into()));
        assert!(matches!(finish(&actions), Some(Finish::Aborted(_))));
        assert!(actions.contains(&Action::Abort(2)));

        let (mut c, _) = Coordinator::start(&[1, 2], &[]);
        c.on_vote(2, Vote::Yes);
        let actions = c.on_anchor(AnchorReply::Lost("timeout".into()));
        // Nothing is sent: the prepared participant must learn the outcome from the anchor.
        assert_eq!(actions.len(), 1);
        assert!(matches!(finish(&actions), Some(Finish::Unknown(_))));
    }

    #[test]
    fn votes_from_strangers_are_ignored() {
        let (mut c, _) = Coordinator::start(&[1, 2], &[]);
        assert!(c.on_vote(1, Vote::Yes).is_empty());
        assert!(c.on_vote(9, Vote::No("x".into())).is_empty());
        assert_eq!(c.on_vote(2, Vote::Yes), vec![Action::CommitAnchor(1)]);
    }

    #[test]
    fn recovery_aborts_first_and_a_late_commit_is_refused() {
        let mut d = Decisions::default();
        assert_eq!(d.resolve(7), Resolve::WriteAborted);
        // While ABORTED is being written, a commit is already refused and others wait.
        assert_eq!(d.begin_commit(7, None, 100, 0), Err(Refusal::Aborted));
        assert_eq!(d.resolve(7), Resolve::Pending);
        d.aborted(7, true, 5);
        assert_eq!(d.resolve(7), Resolve::Known(Outcome::Aborted));
        assert_eq!(d.begin_commit(7, None, 100, 6), Err(Refusal::Aborted));
    }

    #[test]
    fn a_commit_in_progress_makes_recovery_wait_then_answer_committed() {
        let mut d = Decisions::default();
        assert_eq!(d.begin_commit(8, Some(0), 100, 10), Ok(()));
        assert_eq!(d.resolve(8), Resolve::Pending);
        assert_eq!(d.begin_commit(8, Some(0), 100, 10), Err(Refusal::Duplicate));
        d.committed(8, vec![1, 2], true, 11);
        assert_eq!(d.resolve(8), Resolve::Known(Outcome::Committed));
        assert_eq!(d.committed_older_than(5, 20), vec![(8, vec![1, 2])]);
        assert!(d.committed_older_than(50, 20).is_empty());
        assert!(d.forget(8));
        assert!(d.is_empty());
    }

    #[test]
    fn a_gateway_past_its_deadline_cannot_commit() {
        let mut d = Decisions::default();
        assert_eq!(d.begin_commit(9, Some(0), 100, 101), Err(Refusal::TooLate));
        assert_eq!(d.resolve(9), Resolve::WriteAborted);
    }

    #[test]
    fn a_failed_write_drops_the_claim() {
        let mut d = Decisions::default();
        d.begin_commit(1, None, 100, 0).unwrap();
        d.committed(1, vec![], false, 0);
        assert!(d.is_empty());
        assert_eq!(d.resolve(2), Resolve::WriteAborted);
        d.aborted(2, false, 0);
        assert!(d.is_empty());
    }

    #[test]
    fn aborted_records_expire_after_the_retention() {
        let mut d = Decisions::default();
        d.load(1, Record::Aborted, 0);
        d.load(
            2,
            Record::Committed {
                participants: vec![1],
            },
            0,
        );
        assert!(d.aborted_older_than(100, 99).is_empty());
        assert_eq!(d.aborted_older_than(100, 100), vec![1]);
        assert!(!d.forget(3));
    }
}
