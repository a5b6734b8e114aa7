//! A replica's side of log shipping (DESIGN §6.1): append, acknowledge, apply, fence.
//!
//! The primary streams batches of entries, each naming the entry before it (`prev`) and the
//! primary's commit LSN. The replica
//!
//! * refuses a batch of an epoch older than the newest it knows (fencing a deposed primary),
//!   and remembers a newer one durably before it acts on it;
//! * appends only if its own entry at `prev` has the same epoch (log matching); otherwise it
//!   refuses and names an entry to resume from, or, when the difference lies in what it has
//!   already applied, says that it needs a snapshot;
//! * replaces a conflicting tail of its log by the primary's entries, but only beyond its
//!   applied LSN: an applied entry is never undone;
//! * acknowledges only what is persisted ([`Event::Persisted`]), one ack covering every entry up
//!   to it (group acks), and only the part of its log it has checked against this primary; a
//!   heartbeat (a batch without entries) is always answered with the ack, so a lost ack does
//!   not leave the primary waiting;
//! * applies up to the smaller of the commit LSN this primary sent and the last persisted entry
//!   that matched this primary. Both are forgotten when a newer epoch appears: a commit LSN is
//!   about one primary's log, and another primary's entry at the same LSN may be different;
//! * lets the front of its log be dropped ([`Replica::truncate_through`]) only up to
//!   `retention` entries behind its applied LSN, so never an entry it has not applied (and so
//!   never one past the commit LSN it received), and once the drop is durable
//!   ([`Event::Truncated`]) forgets the epochs before the new base. Its history is then the
//!   one a restart rebuilds from the log's base, so a replica answers a primary the same way
//!   before and after a crash: a batch whose `prev` lies before the base is refused with the
//!   base to resume from, and the primary streams from there or, if its own log no longer
//!   reaches back that far, sends a snapshot.
//!
//! The replica does no I/O: [`Replica::step`] returns what to write, send and apply. The
//! driver carries the actions out in order and feeds back [`Event::Persisted`] when the log
//! is durable. After a crash the replica is rebuilt with [`Replica::new`] from what is on disk:
//! every entry in the log there counts as persisted, nothing as matched.

use super::history::{EpochHistory, LogId};
use crate::storage::Lsn;

/// What the replica is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A batch from the primary of `epoch` in stream `session`: the entries after `prev`, in
    /// order (possibly none: a heartbeat carrying the commit LSN), and its commit LSN.
    Batch {
        session: u64,
        epoch: u64,
        prev: LogId,
        entries: Vec<LogId>,
        commit: Lsn,
    },
    /// The log is durable up to `up_to` (the driver's group commit finished).
    Persisted { up_to: LogId },
    /// A snapshot of the primary of `epoch` at `at` arrived in stream `session`, complete.
    Snapshot { session: u64, epoch: u64, at: LogId },
    /// The map says the shard is in `epoch` now (a promotion fences the replica this way).
    Epoch { epoch: u64 },
    /// The log's front up to `base` (the last entry dropped) is gone, durably.
    Truncated { base: LogId },
}

/// Why a batch or a snapshot was refused.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reject {
    /// It comes from an epoch older than `known`: its sender is no longer primary.
    StaleEpoch { known: u64 },
    /// Its previous entry is beyond this log, whose last entry is `last`.
    Gap { last: LogId },
    /// This log's entry at `prev` differs; try again after `resume`, an entry this log holds.
    Mismatch { resume: LogId },
    /// The logs differ at or before the applied LSN: only a snapshot can bring this replica back.
    Diverged { applied: Lsn },
    /// The batch does not describe a contiguous run of entries after `prev` (a primary's bug).
    Malformed(String),
}

/// What the driver does next, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Persist the newest epoch before anything else (so a restart still fences the old one).
    SaveEpoch { epoch: u64 },
    /// Drop the log after `truncate_after` (if given), then append `entries`' payloads.
    Append {
        truncate_after: Option<Lsn>,
        entries: Vec<LogId>,
    },
    /// Replace the data and the log by the snapshot at `at`; report [`Event::Persisted`] at
    /// `at` once it is durable.
    Install { at: LogId },
    /// Tell the primary, in stream `session`, that the log is persisted up to `up_to`.
    Ack { session: u64, up_to: LogId },
    /// Tell the primary that its batch or snapshot in `session` was refused.
    Refuse { session: u64, reject: Reject },
    /// Apply the committed entries up to `up_to` to the data (they follow the applied LSN).
    Apply { up_to: Lsn },
}

/// One replica's log position and what it may apply.
#[derive(Clone, Debug)]
pub struct Replica {
    /// The newest epoch known; batches of older epochs are refused.
    epoch: u64,
    history: EpochHistory,
    /// The last entry in the log (appended, maybe not yet persisted).
    last: LogId,
    /// The last entry known to be durable.
    persisted: LogId,
    applied: Lsn,
    /// The newest commit LSN of the current epoch's primary (at least `applied`).
    commit: Lsn,
    /// The log up to here is checked against the current epoch's primary (at least `applied`).
    matched: Lsn,
    /// The stream the last accepted batch came in: acks go back on it.
    session: u64,
    /// The last LSN acknowledged in `session`.
    acked: Option<Lsn>,
}

impl Replica {
    /// A replica restarting from its disk: the newest epoch it saved, its log's epoch history,
    /// the last entry of its log and its applied LSN.
    pub fn new(
        epoch: u64,
        history: EpochHistory,
        last: LogId,
        applied: Lsn,
    ) -> Result<Self, String> {
        if !history.matches(last) {
            return Err(format!("the last entry {last} is not in the epoch history"));
        }
        if applied > last.lsn {
            return Err(format!(
                "applied LSN {applied} is beyond the log's last entry {last}"
            ));
        }
        Ok(Replica {
            epoch: epoch.max(last.epoch),
            history,
            last,
            persisted: last,
            applied,
            commit: applied,
            matched: applied,
            session: 0,
            acked: None,
        })
    }

    /// The newest epoch known.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last entry of the log.
    pub fn last(&self) -> LogId {
        self.last
    }

    /// The last durable entry.
    pub fn persisted(&self) -> LogId {
        self.persisted
    }

    /// The applied LSN.
    pub fn applied(&self) -> Lsn {
        self.applied
    }

    /// The commit LSN received from the current epoch's primary.
    pub fn commit(&self) -> Lsn {
        self.commit
    }

    /// The end of the prefix checked against the current epoch's primary.
    pub fn matched(&self) -> Lsn {
        self.matched
    }

    /// The log's epoch history.
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// The last LSN the front of the log may be dropped through: `retention` entries behind
    /// the applied LSN stay, for a primary this replica may become to stream to others, and
    /// nothing unapplied goes (it is still to be applied, and may be past the commit LSN or not
    /// yet checked against the primary). 0 when nothing may go.
    pub fn truncate_through(&self, retention: Lsn) -> Lsn {
        self.applied.saturating_sub(retention)
    }

    /// Takes one event; returns what to do, in order.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Batch {
                session,
                epoch,
                prev,
                entries,
                commit,
            } => self.on_batch(session, epoch, prev, entries, commit),
            Event::Persisted { up_to } => self.on_persisted(up_to),
            Event::Snapshot { session, epoch, at } => self.on_snapshot(session, epoch, at),
            Event::Epoch { epoch } => self.learn_epoch(epoch),
            Event::Truncated { base } => {
                self.on_truncated(base);
                Vec::new()
            }
        }
    }

    /// The log now begins after `base`: the history forgets the epochs before it. A report
    /// that does not fit this log (a snapshot replaced it meanwhile, or it names an entry not
    /// applied) is stale and changes nothing.
    fn on_truncated(&mut self, base: LogId) {
        if base.lsn <= self.applied && base.lsn <= self.last.lsn {
            self.history.forget_before(base);
        }
    }

    /// Moves to a newer epoch: what this log shares with the new primary is unknown until a
    /// batch of it is checked, and the old primary's commit LSN says nothing about its log.
    fn learn_epoch(&mut self, epoch: u64) -> Vec<Action> {
        if epoch <= self.epoch {
            return Vec::new();
        }
        self.epoch = epoch;
        self.matched = self.applied;
        self.commit = self.applied;
        self.acked = None;
        vec![Action::SaveEpoch { epoch }]
    }

    fn on_batch(
        &mut self,
        session: u64,
        epoch: u64,
        prev: LogId,
        entries: Vec<LogId>,
        commit: Lsn,
    ) -> Vec<Action> {
        if epoch < self.epoch {
            let reject = Reject::StaleEpoch { known: self.epoch };
            return vec![Action::Refuse { session, reject }];
        }
        let mut actions = self.learn_epoch(epoch);
        if let Err(why) = check_batch(epoch, prev, &entries) {
            actions.push(Action::Refuse {
                session,
                reject: Reject::Malformed(why),
            });
            return actions;
        }
        if let Some(reject) = self.check_prev(prev) {
            actions.push(Action::Refuse { session, reject });
            return actions;
        }
        let conflict = entries
            .iter()
            .find(|e| e.lsn <= self.last.lsn && !self.history.matches(**e))
            .map(|e| e.lsn);
        let mut truncate_after = None;
        if let Some(at) = conflict {
            if at <= self.applied {
                let reject = Reject::Diverged {
                    applied: self.applied,
                };
                actions.push(Action::Refuse { session, reject });
                return actions;
            }
            self.cut_after(at - 1);
            truncate_after = Some(at - 1);
        }
        let new: Vec<LogId> = entries
            .iter()
            .copied()
            .filter(|e| e.lsn > self.last.lsn)
            .collect();
        for e in &new {
            self.history.note(*e);
            self.last = *e;
        }
        if truncate_after.is_some() || !new.is_empty() {
            actions.push(Action::Append {
                truncate_after,
                entries: new,
            });
        }
        if session != self.session {
            self.session = session;
            self.acked = None;
        }
        // check_batch made the entries run on from `prev`: the last one is the end.
        let end = entries.last().map_or(prev.lsn, |e| e.lsn);
        if entries.is_empty() {
            // A heartbeat always gets the ack back, so an ack lost on the way is made good by
            // the next one.
            self.acked = None;
        }
        self.matched = self.matched.max(end);
        self.commit = self.commit.max(commit);
        actions.extend(self.ack());
        actions.extend(self.apply());
        actions
    }

    /// Whether the batch after `prev` may be appended, or why not.
    fn check_prev(&self, prev: LogId) -> Option<Reject> {
        if prev.lsn > self.last.lsn {
            return Some(Reject::Gap { last: self.last });
        }
        if self.history.matches(prev) {
            return None;
        }
        // Before this log's first known entry (it began at a snapshot): resume from there.
        let Some(first) = self.history.first_of_epoch_at(prev.lsn) else {
            let base = self
                .history
                .pairs()
                .first()
                .map_or(LogId::ZERO, |p| LogId::new(p.0, p.1));
            return Some(Reject::Mismatch { resume: base });
        };
        if prev.lsn <= self.applied {
            return Some(Reject::Diverged {
                applied: self.applied,
            });
        }
        // Skip back over the whole epoch that differs, but not into what is applied.
        let resume_lsn = first.saturating_sub(1).max(self.applied);
        let resume = self
            .history
            .id_at(resume_lsn)
            .or_else(|| self.history.pairs().first().map(|p| LogId::new(p.0, p.1)))
            .unwrap_or(LogId::ZERO);
        Some(Reject::Mismatch { resume })
    }

    /// Cuts the log after `lsn` (never below the applied LSN: the caller checked).
    fn cut_after(&mut self, lsn: Lsn) {
        self.history.truncate_after(lsn);
        self.last = self.history.id_at(lsn).unwrap_or(LogId::ZERO);
        if self.persisted.lsn > lsn {
            self.persisted = self.last;
        }
        self.matched = self.matched.min(lsn);
        if self.acked.is_some_and(|a| a > lsn) {
            self.acked = Some(lsn);
        }
    }

    fn on_persisted(&mut self, up_to: LogId) -> Vec<Action> {
        // A report about entries since cut from the log is stale: they are gone.
        if up_to.lsn > self.last.lsn || !self.history.matches(up_to) {
            return Vec::new();
        }
        if up_to.lsn > self.persisted.lsn {
            self.persisted = up_to;
        }
        self.ack().into_iter().chain(self.apply()).collect()
    }

    fn on_snapshot(&mut self, session: u64, epoch: u64, at: LogId) -> Vec<Action> {
        if epoch < self.epoch {
            let reject = Reject::StaleEpoch { known: self.epoch };
            return vec![Action::Refuse { session, reject }];
        }
        if at.epoch > epoch {
            let why = format!("a snapshot at {at} from epoch {epoch}");
            let reject = Reject::Malformed(why);
            return vec![Action::Refuse { session, reject }];
        }
        let mut actions = self.learn_epoch(epoch);
        // The snapshot replaces the data, so nothing applied needs undoing even if the log
        // behind it differed; it is durable only once the driver says so.
        self.history = EpochHistory::from_snapshot(at);
        self.last = at;
        self.persisted = LogId::ZERO;
        self.applied = at.lsn;
        self.commit = at.lsn;
        self.matched = at.lsn;
        self.session = session;
        self.acked = None;
        actions.push(Action::Install { at });
        actions
    }

    /// Acknowledges the persisted part of the log checked against this primary, if it grew. The
    /// first ack of a session goes out even if it covers nothing (`0.0`): it tells the primary
    /// the stream is taken, which an empty shard needs to let a replica rejoin the set.
    fn ack(&mut self) -> Option<Action> {
        let lsn = self.persisted.lsn.min(self.matched);
        if self.acked.is_some_and(|a| a >= lsn) || self.session == 0 {
            return None;
        }
        let up_to = self.history.id_at(lsn)?;
        self.acked = Some(lsn);
        Some(Action::Ack {
            session: self.session,
            up_to,
        })
    }

    /// Applies what is committed, persisted and matched, if that moved.
    fn apply(&mut self) -> Option<Action> {
        let bound = self.commit.min(self.persisted.lsn).min(self.matched);
        if bound <= self.applied {
            return None;
        }
        self.applied = bound;
        Some(Action::Apply { up_to: bound })
    }
}

/// Checks that `entries` run on from `prev` without a hole, in non-falling epochs no newer than
/// the batch's.
fn check_batch(epoch: u64, prev: LogId, entries: &[LogId]) -> Result<(), String> {
    let mut before = prev;
    for e in entries {
        // Network input: an LSN at the end of the range is malformed, not an overflow.
        if before.lsn.checked_add(1) != Some(e.lsn) {
            return Err(format!("entry {e} does not follow {before}"));
        }
        if e.epoch < before.epoch || e.epoch > epoch || e.epoch == 0 {
            return Err(format!(
                "entry {e} after {before} in a batch of epoch {epoch}"
            ));
        }
        before = *e;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(epoch: u64, lsn: Lsn) -> LogId {
        LogId::new(epoch, lsn)
    }

    fn run(epoch: u64, from: Lsn, to: Lsn) -> Vec<LogId> {
        (from..=to).map(|l| id(epoch, l)).collect()
    }

    fn fresh() -> Replica {
        Replica::new(0, EpochHistory::default(), LogId::ZERO, 0).expect("valid")
    }

    fn batch(session: u64, epoch: u64, prev: LogId, entries: Vec<LogId>, commit: Lsn) -> Event {
        Event::Batch {
            session,
            epoch,
            prev,
            entries,
            commit,
        }
    }

    #[test]
    fn acks_wait_for_persistence_and_cover_the_whole_group() {
        let mut r = fresh();
        let a = r.step(batch(1, 1, LogId::ZERO, run(1, 1, 3), 0));
        // The first ack of the session covers nothing yet.
        assert_eq!(
            a.last(),
            Some(&Action::Ack {
                session: 1,
                up_to: LogId::ZERO
            })
        );
        let a = r.step(batch(1, 1, id(1, 3), run(1, 4, 5), 0));
        assert!(!a.iter().any(|a| matches!(a, Action::Ack { .. })));
        let a = r.step(Event::Persisted { up_to: id(1, 5) });
        assert_eq!(
            a,
            vec![Action::Ack {
                session: 1,
                up_to: id(1, 5)
            }]
        );
    }

    #[test]
    fn apply_waits_for_commit_and_persistence() {
        let mut r = fresh();
        r.step(batch(1, 1, LogId::ZERO, run(1, 1, 5), 4));
        assert_eq!(r.applied(), 0);
        let a = r.step(Event::Persisted { up_to: id(1, 3) });
        assert!(a.contains(&Action::Apply { up_to: 3 }));
        let a = r.step(Event::Persisted { up_to: id(1, 5) });
        assert!(a.contains(&Action::Apply { up_to: 4 }));
    }

    #[test]
    fn a_stale_epoch_is_refused() {
        let mut r = Replica::new(3, EpochHistory::default(), LogId::ZERO, 0).expect("valid");
        let a = r.step(batch(1, 2, LogId::ZERO, run(2, 1, 1), 0));
        assert_eq!(
            a,
            vec![Action::Refuse {
                session: 1,
                reject: Reject::StaleEpoch { known: 3 }
            }]
        );
    }

    #[test]
    fn a_new_epoch_forgets_the_old_commit_lsn() {
        let mut r = fresh();
        r.step(batch(1, 1, LogId::ZERO, run(1, 1, 5), 5));
        r.step(Event::Persisted { up_to: id(1, 2) });
        assert_eq!(r.applied(), 2);
        // Epoch 2 replaces 3..5 and says nothing about its commit yet.
        let a = r.step(batch(2, 2, id(1, 2), run(2, 3, 4), 0));
        assert_eq!(a[0], Action::SaveEpoch { epoch: 2 });
        assert!(a.contains(&Action::Append {
            truncate_after: Some(2),
            entries: run(2, 3, 4)
        }));
        r.step(Event::Persisted { up_to: id(2, 4) });
        assert_eq!(r.applied(), 2);
        assert_eq!(r.commit(), 2);
    }

    #[test]
    fn a_difference_in_the_applied_part_needs_a_snapshot() {
        let hist = EpochHistory::new(vec![(1, 1)]).expect("valid");
        let mut r = Replica::new(1, hist, id(1, 5), 4).expect("valid");
        let a = r.step(batch(1, 2, id(1, 2), vec![id(2, 3)], 0));
        assert!(a.contains(&Action::Refuse {
            session: 1,
            reject: Reject::Diverged { applied: 4 }
        }));
        assert_eq!(r.last(), id(1, 5));
    }

    #[test]
    fn a_gap_names_the_last_entry() {
        let mut r = fresh();
        let a = r.step(batch(1, 1, id(1, 4), run(1, 5, 6), 0));
        assert_eq!(
            a,
            vec![
                Action::SaveEpoch { epoch: 1 },
                Action::Refuse {
                    session: 1,
                    reject: Reject::Gap { last: LogId::ZERO }
                }
            ]
        );
    }

    #[test]
    fn a_batch_whose_lsns_would_overflow_is_malformed_not_a_panic() {
        let mut r = fresh();
        let a = r.step(batch(1, 1, id(1, Lsn::MAX), vec![id(1, 0)], 0));
        assert!(matches!(
            a.last(),
            Some(Action::Refuse {
                reject: Reject::Malformed(_),
                ..
            })
        ));
        let a = r.step(batch(
            1,
            1,
            id(1, Lsn::MAX - 1),
            run(1, Lsn::MAX, Lsn::MAX),
            0,
        ));
        assert!(matches!(
            a.last(),
            Some(Action::Refuse {
                reject: Reject::Gap { .. },
                ..
            })
        ));
    }

    #[test]
    fn truncation_keeps_the_retention_behind_the_applied_lsn_and_nothing_unapplied_goes() {
        let mut r = fresh();
        // 30 entries, 20 of them committed.
        r.step(batch(1, 1, LogId::ZERO, run(1, 1, 30), 20));
        assert_eq!(
            r.truncate_through(5),
            0,
            "nothing is applied before it is persisted"
        );
        r.step(Event::Persisted { up_to: id(1, 30) });
        assert_eq!(r.applied(), 20);
        assert_eq!(r.truncate_through(5), 15);
        assert_eq!(r.truncate_through(0), 20, "the unapplied tail 21..30 stays");
        assert_eq!(r.truncate_through(100), 0);
        // A base past the applied LSN is no report this core trusts.
        r.step(Event::Truncated { base: id(1, 25) });
        assert_eq!(r.history().pairs(), &[(1, 1)]);
    }

    #[test]
    fn a_truncated_replica_answers_as_the_same_replica_restarted() {
        let mut r = fresh();
        r.step(batch(1, 1, LogId::ZERO, run(1, 1, 5), 0));
        r.step(batch(1, 2, id(1, 5), run(2, 6, 20), 20));
        r.step(Event::Persisted { up_to: id(2, 20) });
        assert_eq!(r.applied(), 20);
        let through = r.truncate_through(5);
        assert_eq!(through, 15);
        assert!(r
            .step(Event::Truncated {
                base: id(2, through)
            })
            .is_empty());
        // What a restart builds from a log whose base is 2.15 and whose last entry is 2.20.
        let restarted =
            Replica::new(2, EpochHistory::from_snapshot(id(2, 15)), id(2, 20), 20).expect("valid");
        assert_eq!(r.history(), restarted.history());
        // A primary guessing from before the base is told to resume at the base, by both.
        let stale = batch(3, 2, id(1, 3), run(1, 4, 5), 20);
        let mut restarted = restarted;
        for core in [&mut r, &mut restarted] {
            let a = core.step(stale.clone());
            assert!(
                a.contains(&Action::Refuse {
                    session: 3,
                    reject: Reject::Mismatch { resume: id(2, 15) }
                }),
                "{a:?}"
            );
            // From the base the stream goes on.
            let a = core.step(batch(3, 2, id(2, 15), run(2, 16, 22), 22));
            assert!(a.contains(&Action::Append {
                truncate_after: None,
                entries: run(2, 21, 22)
            }));
        }
    }

    #[test]
    fn a_truncation_reported_after_a_snapshot_is_stale() {
        let mut r = fresh();
        r.step(batch(1, 1, LogId::ZERO, run(1, 1, 10), 10));
        r.step(Event::Persisted { up_to: id(1, 10) });
        // A snapshot of epoch 2 at 2.8 replaces the log while a truncation through 1.6 runs.
        r.step(Event::Snapshot {
            session: 2,
            epoch: 2,
            at: id(2, 8),
        });
        r.step(Event::Truncated { base: id(1, 6) });
        assert_eq!(r.history(), &EpochHistory::from_snapshot(id(2, 8)));
    }

    #[test]
    fn a_batch_with_a_hole_is_malformed() {
        let mut r = fresh();
        let a = r.step(batch(1, 1, LogId::ZERO, vec![id(1, 1), id(1, 3)], 0));
        assert!(matches!(
            a.last(),
            Some(Action::Refuse {
                reject: Reject::Malformed(_),
                ..
            })
        ));
    }
}
