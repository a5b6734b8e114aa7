//! Log shipping as pure state machines (DESIGN §6.1, issue 9).
//!
//! A shard's primary appends every commit to its log, streams the log to its replicas over one
//! long-lived connection each (many entries in flight, acknowledged in groups), and counts an
//! entry **committed** once every member of the in-sync set has persisted it; only then is it
//! applied, its locks released and its client answered. Replicas append an entry only when
//! their previous entry matches the primary's, persist with group commit, acknowledge, and apply
//! up to the commit LSN the primary sends. The in-sync set lives in the cluster map and changes
//! only through committed map changes.
//!
//! The rules are split into cores that do no I/O, read no clock and draw no random numbers:
//!
//! * [`history`]: [`LogId`] (an entry's `(epoch, LSN)`) and a log's [`EpochHistory`];
//! * [`catchup`]: where a reconnecting replica's stream begins, or that it needs a snapshot;
//! * [`primary`]: the commit LSN, the in-sync set's changes, the `min_in_sync` floor, truncation;
//! * [`replica`]: fencing, the append check, acks after persistence, the apply bound.
//!
//! Each takes one event at a time (`step(event) -> Vec<Action>`); `server/` gives them their
//! sockets, fsyncs, timers and map proposals. The golden scripts (`testscripts/`, run by
//! `golden.rs`) replay the protocol step by step; `sim.rs` drives a primary and one to four
//! replicas through random interleavings and checks the invariants after every step.
//!
//! # What could lose a committed write or apply an uncommitted one
//!
//! Each hazard, the rule that closes it, and the test that shows it closed (scripts are in
//! `testscripts/`; `sim` is the property test, which checks after every step that every entry
//! up to the commit LSN is persisted on every member of the committed set and on a pending
//! addition, that nothing commits below the floor, that no replica applies beyond the commit
//! LSN it received or beyond its prefix matching the primary, and that the commit LSN never
//! falls).
//!
//! * **H1. An ack for a different entry at the same LSN after an epoch change.** A replica that
//!   holds a deposed primary's tail acks `(1, 12)` while the new primary's entry 12 is `(2,
//!   12)`. *Rule:* an ack counts only if the primary's epoch history gives that LSN the acked
//!   epoch (log matching then makes the prefixes equal). *Test:* `h01_ack_of_another_epoch`,
//!   `sim`.
//! * **H2. A replica dropped from the set locally before the map change commits; a failover
//!   then picks it.** *Rule:* the primary counts the map's *committed* set; a timed-out member
//!   is only proposed for removal and keeps holding back the commit LSN until the map change
//!   commits. *Test:* `h02_removal_waits_for_the_map`, `sim` (map changes commit after random
//!   delays, and the invariant is checked against the map's set).
//! * **H3. A replica added before it holds every committed entry.** *Rule:* `Add` is proposed
//!   only for a connected replica that has acked up to the commit LSN, and from that moment it
//!   is counted, so the commit LSN cannot pass what it holds while the change is in flight.
//!   *Test:* `h03_addition_after_catch_up`, `sim`.
//! * **H4. A replica applying beyond the commit LSN**, including a commit LSN received from an
//!   older epoch's primary applied to a newer primary's different entries at those LSNs.
//!   *Rule:* the apply bound is `min(commit received, persisted, matched)`, and a newer epoch
//!   resets the received commit LSN and the matched prefix to the applied LSN. *Test:*
//!   `h04_apply_bounds`, `replica::tests::a_new_epoch_forgets_the_old_commit_lsn`, `sim`.
//! * **H5. A replica applying beyond its own matched prefix** (a persisted tail not yet checked
//!   against this primary). *Rule:* `matched` rises only by batches of the current epoch that
//!   passed the prev check; conflicting entries are cut, never below the applied LSN (a
//!   conflict there answers `Diverged`: a snapshot is needed). *Test:* `h04_apply_bounds`,
//!   `catch_up_after_divergence`, `sim`.
//! * **H6. A stale-epoch primary's entries accepted.** *Rule:* a replica refuses batches and
//!   snapshots of an epoch below the newest it knows (from batches or the map, saved before it
//!   acts); the refusal tells the old primary to step down. *Test:* `h06_stale_primary`.
//! * **H7. A late ack from an old session after a reconnect or snapshot.** *Rule:* the primary
//!   numbers sessions itself and counts acks only of the current one; a new session keeps what
//!   was acked before only up to the entry its stream starts after (a replica back with a
//!   lost disk reports a shorter log). *Test:* `h07_old_session_ack`,
//!   `primary::tests::an_ack_of_an_old_session_is_ignored`, `sim` (a replica outside the set
//!   comes back with an empty disk while acks of its old life are still on the wire).
//! * **H8. An ack before fsync.** *Rule:* a replica acks only on `Persisted`, up to the persisted
//!   entry; the primary counts itself only on `Durable`. *Test:* `h08_ack_after_fsync`, `sim`
//!   (replicas crash, losing what was not persisted).
//! * **H9. A restarted primary with an unacknowledged tail.** *Rule:* it is rebuilt with its
//!   persisted commit LSN; the tail stays pending until the set acks it; acks beyond its
//!   durable LSN are ignored, and the driver ships only durable entries, so no replica holds an
//!   entry of this epoch the primary lost. *Test:* `h09_restarted_primary_tail`.
//! * **H10. A snapshot install against older acks.** A snapshot replaces the replica's log, so
//!   acks from before it may name entries it no longer has. *Rule:* a snapshot opens a new
//!   session with nothing acked; the replica acks the snapshot only once it is durable.
//!   *Test:* `h10_snapshot_resets_acks`, `sim`.
//! * **H11. Truncation of entries an in-sync member still lacks.** *Rule:* the log is
//!   truncated only up to the commit LSN (which every member holds in `sync` mode) and the
//!   oldest ack of any known replica, except that at most `retention` entries are kept for
//!   laggards, which then need a snapshot. *Test:* `h11_truncation`, `sim`.
//! * **H12. Commits with fewer copies than `min_in_sync`.** *Rule:* in `sync` mode below the
//!   floor the commit LSN stands still, new writes get 53000, entries in flight 40003 (they stay
//!   pending). *Test:* `h12_floor`, `primary::tests::below_the_floor_writes_are_refused_and_in_flight_entries_failed`.
//! * **H13. An addition pending, then the added replica goes silent.** Dropping it locally
//!   would be H2 again if the map takes the change. *Rule:* it stays counted until the map
//!   commits the change (then the timeout removes it as any member) or the proposal certainly
//!   failed. *Test:* `h13_pending_addition_goes_silent`.
//! * **H14. `async`: a 2PC `Prepared` or decision entry only on the primary.** *Rule:* in
//!   `async` mode the commit LSN stops before the first such entry no replica has acked.
//!   *Test:* `h14_async_2pc_waits_for_a_replica`, `primary::tests::async_commits_on_fsync_but_2pc_entries_wait_for_a_replica`.
//!
//! The promotion hazards are owned by `server/` and `cli/promote.rs` (tests in
//! `tests/replication.rs` unless named otherwise):
//!
//! * **P1. A failover target that lacks a committed entry.** *Rule:* in `sync` mode only a
//!   member of the map's in-sync set may be promoted (it holds every committed entry), checked
//!   by the map when it applies the change; the new epoch begins after the target's own last
//!   LSN, fixed by the fence. *Test:* `promote_force_replaces_a_killed_primary_twice_…`,
//!   `map::tests::a_promotion_of_a_primary_a_stranger_or_an_out_of_sync_node_is_refused`.
//! * **P2. Two promotions of one shard both apply.** *Rule:* a promotion is validated against
//!   the epoch it was planned under. *Test:*
//!   `map::tests::two_promotions_of_one_shard_under_the_same_epoch_never_both_apply`.
//! * **P3. A deposed primary goes on acknowledging** (frozen, then thawed). *Rule:* the fenced
//!   target refuses its entries, so nothing of the old epoch commits past the fence; the
//!   refusal (or the map) makes it seal its log: waiting commits hear 40003, later ones are
//!   refused. *Test:* `a_frozen_primary_replaced_by_promote_force_loses_no_write_…`.
//! * **P4. A switchover target that lacks a committed entry.** *Rule:* the old primary
//!   pauses its log (no new entries), and proposes the promotion only once NODE holds its last
//!   committed entry (or its last entry, when the drain finished); from the proposal on it
//!   commits nothing past the entry the new epoch begins after, so whatever it acknowledged is
//!   in NODE's log. *Test:* `a_switchover_under_load_loses_no_write_…` (acknowledged keys
//!   checked on every node).
//! * **P5. A switchover's straggler acknowledged by no one, then retried twice.** *Rule:*
//!   an entry at or past the new epoch's first LSN is answered with a definite 57P03 (NODE
//!   truncates its log there when it takes over, so it never commits), one before it with
//!   40003 (NODE may commit it); gateways retry only the definite refusals. *Test:* the same
//!   test asserts that no write failed (an `INSERT` run twice would fail on its key).
//! * **P6. A switchover interrupted** (CLI killed, map slow). *Rule:* the old primary runs
//!   the hand-over itself, resumes only when the outcome is known not to be a promotion, and
//!   a re-run joins the hand-over under way. *Test:*
//!   `a_switchover_whose_cli_is_killed_finishes_and_a_rerun_converges`.
//! * **P7. A target killed mid-promotion.** *Rule:* whether to take the log over is decided
//!   from the durable log against the map, so a restart finishes it. *Test:*
//!   `a_replica_killed_while_it_is_promoted_takes_over_when_it_restarts`.
//! * **P8. `async`: an old primary's applied entries the new primary lacks** (acknowledged on
//!   its fsync alone, lost in the failover). *Rule:* they are never undone in place: its log
//!   conflicts below its applied LSN (`Diverged`), or no longer meets the primary's, so it gets
//!   a snapshot that replaces its data; the snapshot's `Begin` carries the primary's epoch
//!   history, from which the replica finds the last entry it shares
//!   ([`EpochHistory::shared_with`]) and records the rolled-back range durably for `ddb status`. A primary keeps `retention`
//!   entries for a map replica it has not heard from since it started, so a restarted old
//!   primary still knows where its log parts. *Test:*
//!   `an_async_old_primary_rolls_back_exactly_the_lost_range_and_reports_it`.
//! * **P9. A switchover's old primary restarted while its proposal may still commit.**
//!   Restarted in the old epoch, it would commit entries past the cap, which the promotion
//!   drops once it applies. *Rule:* the proposal is written durably first (a marker with the
//!   epoch, NODE and the first LSN); a primary that starts in that epoch with the marker (and
//!   a log not applied past the cap) is paused and capped before its core commits anything,
//!   and proposes the same change again as a retry whose first try may have applied (a
//!   refusal counts only once the map has had time to show the change); the marker is
//!   removed before writes resume, and if it cannot be, writes stay refused. Reads stay
//!   refused from the proposal on (the restarted tail's apply no longer lifts that). *Tests:*
//!   `a_primary_restarted_while_its_switchover_is_pending_takes_no_write_until_it_is_done`
//!   and its `async` twin.
//! * **P10. `async`: the rollback report trusts the primary's own history.** The map's list of
//!   promotions need not describe the new primary's log (an epoch may begin where that log
//!   holds an older epoch's entries), so the snapshot carries the primary's log history; an
//!   entry both give the same epoch is shared, so the report is exact when that history
//!   reaches back to the parting point and says "at least" otherwise.

pub mod catchup;
pub mod history;
pub mod primary;
pub mod replica;

#[cfg(test)]
mod golden;
#[cfg(test)]
mod sim;

pub use catchup::{catch_up, CatchUp};
pub use history::{EpochHistory, LogId};
pub use primary::{Change, Config, Mode, Primary};
pub use replica::{Reject, Replica};
