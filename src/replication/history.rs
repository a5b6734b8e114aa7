//! The identity of log entries: [`LogId`] and a log's [`EpochHistory`].
//!
//! Every entry of a shard's log is named by the epoch of the primary that wrote it and its LSN.
//! The pair is unique in the cluster because an epoch has one primary (the map raises the epoch
//! through Raft on every promotion) and that primary only appends. From that follows the log
//! matching property that the whole of replication leans on, as Raft's does: a replica appends
//! an entry only after checking that its previous entry matches the primary's, so two logs that
//! hold the same `LogId` hold the same entries up to it.
//!
//! Epochs change rarely, so a list of `(epoch, first_lsn)` pairs says where each epoch's
//! entries begin: in the map for the shard (DESIGN §3, §6.2), and for each node's own log as
//! its entries say (a node rebuilds it from the epochs its stored entries carry, never from the
//! map, whose list describes the primary's log only). The epoch of the entry at an LSN is that
//! of the last pair beginning at or before it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::storage::Lsn;

/// The identity of a log entry: the epoch of the primary that wrote it and its LSN. Ordered by
/// epoch, then LSN. `LogId::ZERO` (epoch 0, LSN 0) stands for the empty log.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogId {
    pub epoch: u64,
    pub lsn: Lsn,
}

impl LogId {
    /// The empty log's last entry.
    pub const ZERO: LogId = LogId { epoch: 0, lsn: 0 };

    pub fn new(epoch: u64, lsn: Lsn) -> Self {
        LogId { epoch, lsn }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.lsn)
    }
}

/// Where each epoch's entries begin in one log: `(epoch, first_lsn)` pairs, epochs rising and
/// first LSNs not falling (an epoch that wrote nothing here begins where the next one does).
///
/// The last epoch is open-ended: the history does not know where its log ends, so callers bound
/// an LSN by the log's last entry before asking. A log restarted from a snapshot at `(e, L)`
/// has the history `[(e, L)]`: the epochs of entries before `L` are unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochHistory {
    epochs: Vec<(u64, Lsn)>,
}

impl EpochHistory {
    /// A history from its pairs, checked: epochs rise strictly, first LSNs do not fall, and no
    /// epoch or first LSN is 0 (those name the empty log).
    pub fn new(epochs: Vec<(u64, Lsn)>) -> Result<Self, String> {
        for pair in &epochs {
            if pair.0 == 0 || pair.1 == 0 {
                return Err(format!(
                    "epoch history pair ({}, {}): epoch and first LSN begin at 1",
                    pair.0, pair.1
                ));
            }
        }
        for w in epochs.windows(2) {
            if w[1].0 <= w[0].0 || w[1].1 < w[0].1 {
                return Err(format!(
                    "epoch history out of order: ({}, {}) after ({}, {})",
                    w[1].0, w[1].1, w[0].0, w[0].1
                ));
            }
        }
        Ok(EpochHistory { epochs })
    }

    /// The history of a log restarted from a snapshot at `at`: entry `at` and what follows.
    pub fn from_snapshot(at: LogId) -> Self {
        if at.lsn == 0 {
            return EpochHistory::default();
        }
        EpochHistory {
            epochs: vec![(at.epoch, at.lsn)],
        }
    }

    /// The pairs, oldest first.
    pub fn pairs(&self) -> &[(u64, Lsn)] {
        &self.epochs
    }

    /// The newest epoch in the log, 0 for an empty history.
    pub fn last_epoch(&self) -> u64 {
        self.epochs.last().map_or(0, |p| p.0)
    }

    /// The epoch of the entry at `lsn`, if this history knows it: 0 for LSN 0 (the empty
    /// prefix), `None` for an LSN before the history's first pair.
    pub fn epoch_at(&self, lsn: Lsn) -> Option<u64> {
        if lsn == 0 {
            return Some(0);
        }
        self.epochs.iter().rev().find(|p| p.1 <= lsn).map(|p| p.0)
    }

    /// The identity of the entry at `lsn`, if the history knows its epoch.
    pub fn id_at(&self, lsn: Lsn) -> Option<LogId> {
        self.epoch_at(lsn).map(|epoch| LogId { epoch, lsn })
    }

    /// Whether the entry at `id.lsn` has `id.epoch` (the caller has checked that the log
    /// reaches `id.lsn`).
    pub fn matches(&self, id: LogId) -> bool {
        self.epoch_at(id.lsn) == Some(id.epoch)
    }

    /// The first LSN of the epoch of the entry at `lsn`, if known.
    pub fn first_of_epoch_at(&self, lsn: Lsn) -> Option<Lsn> {
        self.epochs.iter().rev().find(|p| p.1 <= lsn).map(|p| p.1)
    }

    /// The newest epoch at or below `epoch` and the last LSN of its entries here (`head` for
    /// the open-ended last epoch). `None` if every epoch here is newer.
    pub fn last_at_or_below(&self, epoch: u64, head: Lsn) -> Option<(u64, Lsn)> {
        let i = self.epochs.iter().rposition(|p| p.0 <= epoch)?;
        let end = match self.epochs.get(i + 1) {
            Some(next) => next.1.saturating_sub(1),
            None => head,
        };
        Some((self.epochs[i].0, end.min(head)))
    }

    /// Records an appended entry: a new pair if it opens a newer epoch.
    pub fn note(&mut self, id: LogId) {
        if id.lsn > 0 && id.epoch > self.last_epoch() {
            self.epochs.push((id.epoch, id.lsn));
        }
    }

    /// Forgets the epochs of entries after `lsn` (the log was cut there).
    pub fn truncate_after(&mut self, lsn: Lsn) {
        self.epochs.retain(|p| p.1 <= lsn);
    }

    /// Forgets the epochs of entries before `base`, the last entry dropped from the log's
    /// front: the history becomes that of a log restarted at `base` ([`Self::from_snapshot`])
    /// followed by the epochs that begin after it, which is also what a restart rebuilds from
    /// the log's base and its entries. Returns false, and changes nothing, if this history
    /// does not give `base.lsn` the epoch `base.epoch` (a stale report: the log was replaced
    /// meanwhile) or `base` is the empty log.
    pub fn forget_before(&mut self, base: LogId) -> bool {
        if base.lsn == 0 || !self.matches(base) {
            return false;
        }
        let mut epochs = vec![(base.epoch, base.lsn)];
        epochs.extend(self.epochs.iter().copied().filter(|p| p.1 > base.lsn));
        self.epochs = epochs;
        true
    }

    /// The last LSN, at most `last` (this log's end), that this log shares with the log whose
    /// history is `other`: the newest entry both give the same epoch, which by log matching
    /// has the same entries up to it in both. `None` if no entry this history knows is
    /// shared: the logs part before its first pair, or where is not known.
    pub fn shared_with(&self, last: Lsn, other: &EpochHistory) -> Option<Lsn> {
        let end_of = |epochs: &[(u64, Lsn)], i: usize, head: Lsn| {
            epochs
                .get(i + 1)
                .map_or(head, |next: &(u64, Lsn)| next.1.saturating_sub(1))
        };
        let mut shared = None;
        for (i, &(epoch, start)) in self.epochs.iter().enumerate() {
            let end = end_of(&self.epochs, i, last).min(last);
            let Some(j) = other.epochs.iter().position(|p| p.0 == epoch) else {
                continue;
            };
            let from = start.max(other.epochs[j].1);
            let to = end.min(end_of(&other.epochs, j, Lsn::MAX));
            if from <= to {
                shared = Some(to);
            }
        }
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(u64, Lsn)]) -> EpochHistory {
        EpochHistory::new(pairs.to_vec()).expect("a valid history")
    }

    #[test]
    fn log_ids_order_by_epoch_then_lsn() {
        assert!(LogId::new(1, 9) < LogId::new(2, 1));
        assert!(LogId::new(2, 1) < LogId::new(2, 2));
        assert_eq!(LogId::default(), LogId::ZERO);
    }

    #[test]
    fn the_epoch_of_an_entry_is_that_of_the_last_pair_before_it() {
        let hist = h(&[(1, 1), (2, 5), (3, 5), (4, 9)]);
        assert_eq!(hist.epoch_at(0), Some(0));
        assert_eq!(hist.epoch_at(4), Some(1));
        // Epoch 2 wrote nothing here: entry 5 is epoch 3's.
        assert_eq!(hist.epoch_at(5), Some(3));
        assert_eq!(hist.epoch_at(100), Some(4));
        assert_eq!(hist.last_at_or_below(2, 20), Some((2, 4)));
        assert_eq!(hist.last_at_or_below(3, 20), Some((3, 8)));
        assert_eq!(hist.last_at_or_below(9, 20), Some((4, 20)));
    }

    #[test]
    fn a_snapshot_history_knows_nothing_before_its_point() {
        let hist = EpochHistory::from_snapshot(LogId::new(3, 40));
        assert_eq!(hist.epoch_at(39), None);
        assert!(hist.matches(LogId::new(3, 40)));
        assert_eq!(hist.last_at_or_below(2, 50), None);
    }

    #[test]
    fn histories_out_of_order_are_refused() {
        assert!(EpochHistory::new(vec![(2, 1), (1, 5)]).is_err());
        assert!(EpochHistory::new(vec![(1, 5), (2, 4)]).is_err());
        assert!(EpochHistory::new(vec![(0, 1)]).is_err());
    }

    #[test]
    fn truncation_and_appends_keep_the_pairs() {
        let mut hist = h(&[(1, 1), (2, 5)]);
        hist.truncate_after(4);
        assert_eq!(hist.pairs(), &[(1, 1)]);
        hist.note(LogId::new(1, 5));
        hist.note(LogId::new(3, 6));
        assert_eq!(hist.pairs(), &[(1, 1), (3, 6)]);
    }

    #[test]
    fn two_logs_share_up_to_the_newest_entry_of_an_epoch_both_hold() {
        // An old primary's epoch 1 ran to 500; the new primary's epoch 2 began at 201.
        let old = h(&[(1, 1)]);
        let new = h(&[(1, 1), (2, 201)]);
        assert_eq!(old.shared_with(500, &new), Some(200));
        assert_eq!(new.shared_with(450, &old), Some(200));
        // A log that stops before the other's epoch changes shares all of it.
        assert_eq!(old.shared_with(150, &new), Some(150));
        // Epoch 2 was a deposed primary's, that left nothing in the new primary's log.
        let deposed = h(&[(1, 1), (2, 8)]);
        let later = h(&[(1, 1), (2, 12), (3, 12)]);
        assert_eq!(deposed.shared_with(20, &later), Some(7));
        let skipped = h(&[(1, 1), (3, 8)]);
        assert_eq!(deposed.shared_with(20, &skipped), Some(7));
        // Both in the newest epoch: shared to this log's end.
        assert_eq!(h(&[(1, 1), (3, 8)]).shared_with(30, &skipped), Some(30));
        // A log restarted from a snapshot knows only its base and what follows.
        let snap = EpochHistory::from_snapshot(LogId::new(1, 300));
        assert_eq!(snap.shared_with(320, &new), None);
        assert_eq!(snap.shared_with(320, &old), Some(320));
        assert_eq!(EpochHistory::default().shared_with(0, &new), None);
    }

    #[test]
    fn forgetting_the_front_keeps_the_base_and_the_later_epochs() {
        let mut hist = h(&[(1, 1), (2, 5), (3, 5), (4, 9)]);
        // Entry 5 is epoch 3's (epoch 2 wrote nothing here): a base of another epoch is stale.
        assert!(!hist.forget_before(LogId::new(2, 5)));
        assert!(hist.forget_before(LogId::new(3, 7)));
        assert_eq!(hist.pairs(), &[(3, 7), (4, 9)]);
        assert_eq!(hist.epoch_at(6), None);
        assert!(hist.matches(LogId::new(3, 8)));
        assert!(hist.matches(LogId::new(4, 20)));
        // Past the last pair: only the base is left.
        assert!(hist.forget_before(LogId::new(4, 12)));
        assert_eq!(hist, EpochHistory::from_snapshot(LogId::new(4, 12)));
        assert!(!hist.forget_before(LogId::ZERO));
    }
}
