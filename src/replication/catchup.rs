//! Catch-up: where a replica's stream begins (DESIGN §6.1, "Catch-up").
//!
//! A replica that connects says which entry is the last of its log. The primary finds the last
//! entry the two logs share and streams from the one after it, if its log still reaches back
//! that far; otherwise the replica needs a snapshot. The answer is a guess the replica checks:
//! the first batch names its previous entry, and a replica whose entry there differs refuses it
//! and names an earlier entry to try from (`replica::Reject::Mismatch`). Each refusal moves back
//! by at least one epoch, so the search ends; the prev check, not this guess, keeps the logs
//! equal.
//!
//! The guess, from the replica's last entry `(e, l)` and the primary's epoch history:
//!
//! * if the primary's entry at `l` is also of epoch `e`, the logs agree up to `l` (log
//!   matching), so the stream begins at `l + 1`;
//! * otherwise the replica's entries of epoch `e` past the point where the primary's log moved
//!   to a newer epoch are a tail the primary never had (written by a deposed primary): take the
//!   newest epoch at or below `e` in the primary's history and where its entries end there, and
//!   try from after that (Kafka's leader-epoch rule).

use super::history::{EpochHistory, LogId};
use crate::storage::Lsn;

/// Where a replica's stream begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Send the log from `from`; the first batch names `prev`, the entry before it.
    Stream { from: Lsn, prev: LogId },
    /// The primary no longer has the entries the replica needs: send a snapshot.
    Snapshot,
}

/// Where to stream from to a replica whose last entry is `replica`, given the primary's epoch
/// history, the first LSN its log still holds (`log_start`; entries before it were truncated)
/// and its last entry that may be shipped (`head`).
pub fn catch_up(history: &EpochHistory, log_start: Lsn, head: LogId, replica: LogId) -> CatchUp {
    let shared = shared_guess(history, head, replica);
    if shared + 1 < log_start {
        return CatchUp::Snapshot;
    }
    match history.id_at(shared) {
        Some(prev) => CatchUp::Stream {
            from: shared + 1,
            prev,
        },
        // The primary's own log begins after a snapshot and knows nothing this old.
        None => CatchUp::Snapshot,
    }
}

/// The LSN of the last entry the two logs are taken to share.
fn shared_guess(history: &EpochHistory, head: LogId, replica: LogId) -> Lsn {
    if replica.lsn == 0 {
        return 0;
    }
    if replica.lsn <= head.lsn && history.matches(replica) {
        return replica.lsn;
    }
    match history.last_at_or_below(replica.epoch, head.lsn) {
        Some((_, end)) => end.min(replica.lsn),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(u64, Lsn)]) -> EpochHistory {
        EpochHistory::new(pairs.to_vec()).expect("valid")
    }

    fn id(epoch: u64, lsn: Lsn) -> LogId {
        LogId::new(epoch, lsn)
    }

    #[test]
    fn a_replica_on_the_primarys_log_streams_from_its_next_entry() {
        let h = hist(&[(1, 1), (2, 11)]);
        let got = catch_up(&h, 1, id(2, 20), id(2, 15));
        assert_eq!(
            got,
            CatchUp::Stream {
                from: 16,
                prev: id(2, 15)
            }
        );
        assert_eq!(
            catch_up(&h, 1, id(2, 20), LogId::ZERO),
            CatchUp::Stream {
                from: 1,
                prev: LogId::ZERO
            }
        );
    }

    #[test]
    fn a_tail_of_an_old_epoch_goes_back_to_where_that_epoch_ended_here() {
        // The replica holds epoch 1 up to 14; the primary's epoch 2 began at 11.
        let h = hist(&[(1, 1), (2, 11)]);
        assert_eq!(
            catch_up(&h, 1, id(2, 20), id(1, 14)),
            CatchUp::Stream {
                from: 11,
                prev: id(1, 10)
            }
        );
    }

    #[test]
    fn an_epoch_the_primary_never_had_goes_back_to_the_newest_older_one() {
        // Epoch 2 was a deposed primary's that left nothing here; epoch 3 began at 8.
        let h = hist(&[(1, 1), (3, 8)]);
        assert_eq!(
            catch_up(&h, 1, id(3, 20), id(2, 12)),
            CatchUp::Stream {
                from: 8,
                prev: id(1, 7)
            }
        );
    }

    #[test]
    fn a_replica_ahead_of_the_head_is_cut_back_to_it() {
        let h = hist(&[(1, 1)]);
        assert_eq!(
            catch_up(&h, 1, id(1, 5), id(1, 9)),
            CatchUp::Stream {
                from: 6,
                prev: id(1, 5)
            }
        );
    }

    #[test]
    fn a_truncated_log_needs_a_snapshot() {
        let h = hist(&[(1, 1)]);
        assert_eq!(catch_up(&h, 50, id(1, 90), id(1, 48)), CatchUp::Snapshot);
        // The entry before the first kept one is enough: its epoch is in the history.
        assert_eq!(
            catch_up(&h, 50, id(1, 90), id(1, 49)),
            CatchUp::Stream {
                from: 50,
                prev: id(1, 49)
            }
        );
        assert_eq!(catch_up(&h, 2, id(1, 90), LogId::ZERO), CatchUp::Snapshot);
    }
}
