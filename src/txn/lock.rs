//! Lock manager for strict two-phase locking with multi-granularity locks and
//! wait-die deadlock prevention.
//!
//! This module is a pure data structure. It does no I/O, reads no clocks and
//! never blocks. Methods record requests and return outcomes. The server wraps
//! the manager in a mutex, parks a task when [`LockManager::acquire`] returns
//! [`Acquire::Wait`], and wakes the tasks named in the grant lists that
//! [`LockManager::release_all`] and [`LockManager::cancel_wait`] return.
//!
//! # Lock modes
//!
//! Resources form a two-level hierarchy: tables and the rows inside them. A
//! transaction that locks a row first takes an *intention* lock on the table,
//! so a table-level lock can see that some row below it is in use without
//! scanning row locks. The caller takes the table lock before any row lock;
//! this manager does not check that order itself. The five modes are:
//!
//! * `IS` (intention shared): the transaction will read some rows.
//! * `IX` (intention exclusive): the transaction will write some rows.
//! * `S` (shared): the transaction reads the whole resource.
//! * `SIX` (shared + intention exclusive): it reads the whole table and
//!   writes some rows.
//! * `X` (exclusive): it reads and writes the whole resource.
//!
//! Two transactions may hold modes on the same resource at the same time only
//! if the modes are compatible:
//!
//! | held \ requested | IS | IX | S | SIX | X |
//! |------------------|----|----|---|-----|---|
//! | IS               | ✓  | ✓  | ✓ | ✓   |   |
//! | IX               | ✓  | ✓  |   |     |   |
//! | S                | ✓  |    | ✓ |     |   |
//! | SIX              | ✓  |    |   |     |   |
//! | X                |    |    |   |     |   |
//!
//! A mode *covers* another if holding it already grants everything the other
//! allows (for example, `X` covers every mode and `SIX` covers `S` and `IX`).
//! The modes form a lattice, so any two modes have a weakest mode that covers
//! both. [`LockMode::combine`] computes it. The only pair where neither mode
//! covers the other is `S` and `IX`, and their combination is `SIX`.
//!
//! # Wait-die
//!
//! Each transaction has an age, its timestamp `ts`. A lower timestamp means an
//! older transaction. When a request conflicts with other transactions, the
//! manager does not search for deadlocks. It applies the wait-die rule: an
//! older requester may wait for younger transactions, and a younger requester
//! *dies*. The caller aborts it with SQLSTATE 40001 and may retry it. So every
//! edge in the wait-for graph goes from an older transaction to a younger one,
//! timestamps strictly increase along every path, and no cycle can form.
//!
//! A transaction that is restarted internally after dying keeps its original
//! timestamp. Other transactions start and finish while it retries, so it
//! eventually becomes the oldest transaction in the system. The oldest
//! transaction never dies, so no transaction starves.
//!
//! # The wait queue
//!
//! Each resource has a FIFO queue of waiters. A new request is granted at
//! once only if it is compatible with every holder *and* with every queued
//! waiter. Checking the waiters stops a stream of compatible shared
//! requests from overtaking a queued exclusive request forever. The
//! requester then has to wait for the conflicting waiters ahead of it as well
//! as for the conflicting holders. Wait-die therefore compares the requester's
//! age with both groups. Suppose the requester only had to be older than the
//! holders. A younger transaction could then queue behind an older waiter and
//! wait for it, an edge from younger to older, which could close a cycle.
//! Because the check covers both groups, every wait edge still goes from older
//! to younger.
//!
//! When locks are released or a wait is withdrawn, the queue is scanned from
//! front to back. A waiter is granted if its mode is compatible with every
//! holder and with every waiter still queued ahead of it. This is the same
//! test a new request must pass, so a waiter is only ever overtaken by
//! requests that do not conflict with it. That keeps FIFO fairness between
//! conflicting requests without making compatible requests wait for no
//! reason.
//!
//! # Upgrades
//!
//! A transaction that already holds a resource may ask for a stronger mode,
//! for example `S` then `X`, or `IX` then `S`. Its new mode is the combination
//! of the two, and only *other* holders can conflict with it. Upgrades do not
//! simply join the back of the queue. Waiters that conflict with the mode the
//! upgrader already holds are waiting for the upgrader. If the upgrader then
//! waited behind them, the two would wait for each other forever. So an
//! upgrade is placed ahead of every waiter whose request is older than the
//! upgrader's. Those waiters are left waiting for the upgrader, an edge from
//! older to younger. Usually that puts the upgrade at the front of the queue.
//!
//! There is one exception. A younger waiter may conflict with the stronger
//! mode but not with the mode the upgrader holds now. Granting the upgrade
//! over it would make that younger waiter wait for an older transaction.
//! Instead, the upgrader queues behind it and waits for it, an edge from older
//! to younger. If the younger and older conflicting waiters are interleaved in
//! the queue, no position keeps every edge pointing from older to younger, and
//! the upgrader dies. An upgrade that conflicts with no other holder and
//! would not wait behind any waiter is granted at once.
//!
//! # Waking waiters
//!
//! The manager never wakes anyone itself. [`LockManager::release_all`] and
//! [`LockManager::cancel_wait`] return, in grant order, every queued wait
//! that their change allowed to be granted. The caller wakes exactly those
//! transactions, and their locks are already held when they run again.
//!
//! Prepared transactions (two-phase commit) are the one exception to wait-die.
//! A prepared transaction holds every lock it will ever take and waits for
//! nothing, so a wait for it cannot close a cycle: any requester may wait for
//! it, younger or not ([`LockManager::mark_prepared`]). It is never made to die
//! either, since it requests nothing more. A requester that waits too long for
//! an in-doubt transaction gives up at the lock timeout.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// The identifier of a transaction, unique among live transactions.
pub type TxnId = u64;

/// Something that can be locked.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Resource {
    /// A whole table, by table id.
    Table(u32),
    /// One row: table id and the row's encoded storage key.
    Row(u32, Vec<u8>),
}

/// A lock mode of the multi-granularity scheme.
///
/// The module documentation has the compatibility matrix and explains what
/// each mode is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LockMode {
    /// Intention shared: the holder will take shared locks on some rows.
    IntentionShared,
    /// Intention exclusive: the holder will take exclusive locks on some rows.
    IntentionExclusive,
    /// Shared: the holder reads the whole resource.
    Shared,
    /// Shared plus intention exclusive: the holder reads the whole table and
    /// will take exclusive locks on some of its rows.
    SharedIntentionExclusive,
    /// Exclusive: the holder reads and writes the whole resource.
    Exclusive,
}

impl LockMode {
    /// Returns whether two different transactions may hold `self` and `other`
    /// on the same resource at the same time.
    ///
    /// The relation is symmetric.
    pub fn compatible(self, other: LockMode) -> bool {
        use LockMode::{Exclusive, IntentionExclusive, IntentionShared, Shared};
        match (self, other) {
            (Exclusive, _) | (_, Exclusive) => false,
            (IntentionShared, _) | (_, IntentionShared) => true,
            // Only IX, S and SIX remain. IX tolerates IX and S tolerates S,
            // while SIX tolerates neither of them.
            (IntentionExclusive, IntentionExclusive) | (Shared, Shared) => true,
            _ => false,
        }
    }

    /// Returns whether holding `self` already grants everything `other`
    /// allows, so a request for `other` needs no change.
    pub fn covers(self, other: LockMode) -> bool {
        use LockMode::{
            Exclusive, IntentionExclusive, IntentionShared, Shared, SharedIntentionExclusive,
        };
        match self {
            Exclusive => true,
            SharedIntentionExclusive => other != Exclusive,
            Shared => matches!(other, Shared | IntentionShared),
            IntentionExclusive => matches!(other, IntentionExclusive | IntentionShared),
            IntentionShared => other == IntentionShared,
        }
    }

    /// Returns the weakest mode that covers both `self` and `other`.
    ///
    /// A transaction that holds one mode and asks for another ends up with
    /// this mode. For example, `S` combined with `IX` is `SIX`.
    pub fn combine(self, other: LockMode) -> LockMode {
        if self.covers(other) {
            self
        } else if other.covers(self) {
            other
        } else {
            // S and IX are the only pair where neither covers the other, and
            // SIX is their least upper bound.
            LockMode::SharedIntentionExclusive
        }
    }
}

/// The outcome of [`LockManager::acquire`].
#[derive(Debug, PartialEq, Eq)]
pub enum Acquire {
    /// The lock is held now (newly granted, or already covered by what the txn holds).
    Granted,
    /// The requester is queued; it will appear in a later `release_all`'s result (or the caller cancels with `cancel_wait`).
    Wait,
    /// Wait-die: the requester is younger than a conflicting holder or queued waiter; it must abort (SQLSTATE 40001). Nothing was queued.
    Die {
        /// An older conflicting transaction that caused the requester to die.
        holder: TxnId,
    },
}

/// One transaction's granted lock on a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    txn: TxnId,
    ts: u64,
    mode: LockMode,
}

/// One queued request. For an upgrade, `mode` is the combined target mode,
/// and the transaction also appears among the holders with its current mode.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Waiter {
    txn: TxnId,
    ts: u64,
    mode: LockMode,
}

/// The lock state of one resource. An entry exists only while it has at least
/// one holder or waiter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ResourceLocks {
    /// Granted locks, at most one entry per transaction. The list is short in
    /// practice, so a vector is cheaper than a map.
    holders: Vec<Holder>,
    /// Waiting requests in arrival order, except that upgrades may be placed
    /// further forward (see the module documentation).
    queue: VecDeque<Waiter>,
}

/// What one transaction holds and waits for. An entry exists only while the
/// transaction holds or waits for something.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TxnLocks {
    /// The resources the transaction holds. A B-tree set keeps the release
    /// order, and therefore the grant order, deterministic.
    held: BTreeSet<Resource>,
    /// The single resource the transaction is queued for, if any.
    waiting: Option<Resource>,
}

/// A lock manager for strict two-phase locking with wait-die deadlock
/// prevention.
///
/// The module documentation describes the protocol. The manager is a plain
/// data structure and is not thread-safe by itself; the caller serialises
/// access, typically with a mutex.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockManager {
    /// Lock state per resource. Entries are removed when they become empty.
    resources: HashMap<Resource, ResourceLocks>,
    /// Held and awaited resources per transaction, so `release_all` touches
    /// only the locks the transaction holds.
    txns: HashMap<TxnId, TxnLocks>,
    /// Transactions that are prepared (two-phase commit): they hold every lock
    /// they will ever take, so they never wait, and waiting for them cannot
    /// close a cycle. Wait-die lets any requester wait for them.
    prepared: HashSet<TxnId>,
}

impl LockManager {
    /// Creates a lock manager with no locks held and no one waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests `mode` on `resource` for transaction `txn`.
    ///
    /// `ts` is the transaction's age (lower = older); the same txn always
    /// passes the same ts. A transaction that is restarted after dying should
    /// keep its timestamp, so it cannot starve.
    ///
    /// The result is [`Acquire::Granted`] if the lock is held when the call
    /// returns. That includes the case where the transaction already held a
    /// mode covering `mode`. The result is [`Acquire::Wait`] if the request is
    /// queued, and [`Acquire::Die`] if wait-die says the transaction must
    /// abort. After `Die`, nothing has changed, and the caller should abort
    /// the transaction and call [`LockManager::release_all`].
    ///
    /// A transaction waits for at most one resource at a time, so calling
    /// `acquire` while the transaction is already waiting is a logic error in
    /// the caller. Debug builds panic. Release builds return
    /// `Die { holder: txn }` and change nothing, so the caller aborts the
    /// confused transaction instead of corrupting the lock table.
    pub fn acquire(&mut self, txn: TxnId, ts: u64, resource: &Resource, mode: LockMode) -> Acquire {
        let already_waiting = self
            .txns
            .get(&txn)
            .is_some_and(|state| state.waiting.is_some());
        debug_assert!(
            !already_waiting,
            "transaction {txn} called acquire while already waiting for a lock"
        );
        if already_waiting {
            return Acquire::Die { holder: txn };
        }

        let held = self
            .resources
            .get(resource)
            .and_then(|locks| locks.holders.iter().find(|h| h.txn == txn))
            .map(|h| h.mode);
        match held {
            Some(held) if held.covers(mode) => Acquire::Granted,
            Some(held) => self.acquire_upgrade(txn, ts, resource, held.combine(mode)),
            None => self.acquire_new(txn, ts, resource, mode),
        }
    }

    /// Handles a request from a transaction that holds nothing on `resource`.
    fn acquire_new(&mut self, txn: TxnId, ts: u64, resource: &Resource, mode: LockMode) -> Acquire {
        // The requester waits for every conflicting holder and for every
        // conflicting waiter ahead of it. It would join the back of the
        // queue, so every conflicting waiter counts.
        let conflicts: Vec<(TxnId, u64)> = match self.resources.get(resource) {
            Some(locks) => locks
                .holders
                .iter()
                .filter(|h| !h.mode.compatible(mode))
                .map(|h| (h.txn, h.ts))
                .chain(
                    locks
                        .queue
                        .iter()
                        .filter(|w| !w.mode.compatible(mode))
                        .map(|w| (w.txn, w.ts)),
                )
                .collect(),
            None => Vec::new(),
        };

        if conflicts.is_empty() {
            let locks = self.resources.entry(resource.clone()).or_default();
            locks.holders.push(Holder { txn, ts, mode });
            self.txns
                .entry(txn)
                .or_default()
                .held
                .insert(resource.clone());
            return Acquire::Granted;
        }
        let prepared = &self.prepared;
        let could_cycle = conflicts.into_iter().filter(|(t, _)| !prepared.contains(t));
        if let Some(holder) = older_conflict(ts, could_cycle) {
            return Acquire::Die { holder };
        }

        // `conflicts` is non-empty, so the resource entry exists. The
        // entry API is still used so that a missing entry cannot panic.
        let locks = self.resources.entry(resource.clone()).or_default();
        locks.queue.push_back(Waiter { txn, ts, mode });
        self.txns.entry(txn).or_default().waiting = Some(resource.clone());
        Acquire::Wait
    }

    /// Handles a request from a transaction that already holds `resource` in
    /// a mode that does not cover the request. `target` is the combined mode.
    fn acquire_upgrade(
        &mut self,
        txn: TxnId,
        ts: u64,
        resource: &Resource,
        target: LockMode,
    ) -> Acquire {
        let Some(locks) = self.resources.get_mut(resource) else {
            // Unreachable, because the caller found the txn among the holders.
            // Treating it as a fresh request is the safe answer anyway.
            return self.acquire_new(txn, ts, resource, target);
        };

        // The upgrader waits for other holders whose modes conflict with the
        // target. Wait-die applies to them as to any request.
        let conflicting_holders: Vec<(TxnId, u64)> = locks
            .holders
            .iter()
            .filter(|h| h.txn != txn && !h.mode.compatible(target))
            .map(|h| (h.txn, h.ts))
            .collect();
        let prepared = &self.prepared;
        let could_cycle = conflicting_holders
            .iter()
            .copied()
            .filter(|(t, _)| !prepared.contains(t));
        if let Some(holder) = older_conflict(ts, could_cycle) {
            return Acquire::Die { holder };
        }

        // Choose the queue position. Conflicting waiters that are younger
        // must stay ahead, so the upgrader waits for them (older to younger).
        // Conflicting waiters that are older must end up behind, so they wait
        // for the upgrader (again older to younger). This includes every
        // waiter that conflicts with the mode already held, because such a
        // waiter had to be older than the upgrader to queue at all. So the
        // upgrade goes right after the last younger conflicting waiter, which
        // is the front of the queue when there is none.
        let conflicts_with_target = |w: &Waiter| !w.mode.compatible(target);
        let position = locks
            .queue
            .iter()
            .rposition(|w| conflicts_with_target(w) && w.ts > ts)
            .map_or(0, |i| i + 1);
        // An older (or equally old) conflicting waiter in front of that
        // position cannot be moved behind the upgrader, so the upgrader would
        // wait for an older transaction. Wait-die says it dies.
        let older_ahead = locks
            .queue
            .iter()
            .take(position)
            .filter(|w| conflicts_with_target(w))
            .map(|w| (w.txn, w.ts));
        if let Some(holder) = older_conflict(ts, older_ahead) {
            return Acquire::Die { holder };
        }

        if conflicting_holders.is_empty() && position == 0 {
            // Nothing to wait for. Waiters that conflict with the new mode
            // are all older, so they can wait for the upgrader.
            if let Some(h) = locks.holders.iter_mut().find(|h| h.txn == txn) {
                h.mode = target;
            }
            return Acquire::Granted;
        }

        locks.queue.insert(
            position,
            Waiter {
                txn,
                ts,
                mode: target,
            },
        );
        self.txns.entry(txn).or_default().waiting = Some(resource.clone());
        Acquire::Wait
    }

    /// Releases every lock `txn` holds and drops any wait it has queued.
    ///
    /// Returns the queued waits that were granted as a result, as
    /// `(transaction, resource)` pairs in grant order. The caller wakes those
    /// transactions. Their locks are already held, and they are no longer
    /// waiting. Releasing a transaction that holds nothing is a no-op that
    /// returns an empty list.
    pub fn release_all(&mut self, txn: TxnId) -> Vec<(TxnId, Resource)> {
        self.prepared.remove(&txn);
        let Some(state) = self.txns.remove(&txn) else {
            return Vec::new();
        };

        let mut touched: Vec<Resource> = Vec::with_capacity(state.held.len() + 1);
        if let Some(resource) = state.waiting {
            if let Some(locks) = self.resources.get_mut(&resource) {
                locks.queue.retain(|w| w.txn != txn);
            }
            touched.push(resource);
        }
        for resource in state.held {
            if let Some(locks) = self.resources.get_mut(&resource) {
                locks.holders.retain(|h| h.txn != txn);
            }
            // An upgrader both holds and waits for the same resource. Scanning
            // it twice would be harmless, but it is pointless.
            if touched.first() != Some(&resource) {
                touched.push(resource);
            }
        }

        let mut granted = Vec::new();
        for resource in &touched {
            self.grant_waiters(resource, &mut granted);
        }
        granted
    }

    /// Withdraws `txn`'s queued wait, for example after a lock-wait timeout.
    ///
    /// Locks the transaction already holds are kept, including the weaker
    /// mode of a withdrawn upgrade. Returns the grants this makes possible for
    /// waiters behind it, in grant order. For example, a withdrawn X waiter
    /// may unblock S waiters behind it. Cancelling when `txn` is not waiting
    /// is a no-op that returns an empty list.
    pub fn cancel_wait(&mut self, txn: TxnId) -> Vec<(TxnId, Resource)> {
        let Some(state) = self.txns.get_mut(&txn) else {
            return Vec::new();
        };
        let Some(resource) = state.waiting.take() else {
            return Vec::new();
        };
        if state.held.is_empty() {
            self.txns.remove(&txn);
        }
        if let Some(locks) = self.resources.get_mut(&resource) {
            locks.queue.retain(|w| w.txn != txn);
        }
        let mut granted = Vec::new();
        self.grant_waiters(&resource, &mut granted);
        granted
    }

    /// Returns the number of resources `txn` holds a lock on, in any mode.
    ///
    /// This is for tests and status output. A pending upgrade counts once,
    /// for the mode already held.
    pub fn held_count(&self, txn: TxnId) -> usize {
        self.txns.get(&txn).map_or(0, |state| state.held.len())
    }

    /// Marks `txn` prepared: it will take no more locks, so anyone may wait for
    /// it without risk of a deadlock (a prepared transaction is never made to
    /// die, and never makes others die). Cleared by [`LockManager::release_all`].
    pub fn mark_prepared(&mut self, txn: TxnId) {
        self.prepared.insert(txn);
    }

    /// Returns the total number of resources with any holder or waiter.
    ///
    /// Zero means nothing is locked. Tests use this to check that no lock
    /// remains.
    pub fn locked_resources(&self) -> usize {
        self.resources.len()
    }

    /// Returns the resource `txn` is queued for, or `None` if it is not
    /// waiting.
    pub fn waiting_for(&self, txn: TxnId) -> Option<&Resource> {
        self.txns.get(&txn).and_then(|state| state.waiting.as_ref())
    }

    /// Grants every waiter on `resource` that can now proceed, appending the
    /// grants to `granted`. Removes the resource entry if it becomes empty.
    ///
    /// A waiter is granted when it is compatible with all holders and with
    /// every waiter still queued ahead of it. This is the test a new request
    /// passes, so the queue stays fair between conflicting requests.
    fn grant_waiters(&mut self, resource: &Resource, granted: &mut Vec<(TxnId, Resource)>) {
        let Some(locks) = self.resources.get_mut(resource) else {
            return;
        };
        let mut still_waiting: VecDeque<Waiter> = VecDeque::with_capacity(locks.queue.len());
        while let Some(waiter) = locks.queue.pop_front() {
            let blocked = locks
                .holders
                .iter()
                .any(|h| h.txn != waiter.txn && !h.mode.compatible(waiter.mode))
                || still_waiting
                    .iter()
                    .any(|w| !w.mode.compatible(waiter.mode));
            if blocked {
                still_waiting.push_back(waiter);
                continue;
            }

            match locks.holders.iter_mut().find(|h| h.txn == waiter.txn) {
                // A queued upgrade: the holder keeps its entry, but with the
                // stronger mode.
                Some(holder) => holder.mode = waiter.mode,
                None => locks.holders.push(Holder {
                    txn: waiter.txn,
                    ts: waiter.ts,
                    mode: waiter.mode,
                }),
            }
            let state = self.txns.entry(waiter.txn).or_default();
            state.waiting = None;
            state.held.insert(resource.clone());
            granted.push((waiter.txn, resource.clone()));
        }
        locks.queue = still_waiting;

        // With no holders left, the front waiter is always granted, so an
        // empty holder list here means the queue is empty too.
        if locks.holders.is_empty() && locks.queue.is_empty() {
            self.resources.remove(resource);
        }
    }
}

/// Applies wait-die to a requester with timestamp `ts` against the
/// transactions it would wait for.
///
/// Returns `None` if the requester is strictly older than all of them, so it
/// may wait. Otherwise returns the youngest conflicting transaction that is
/// not younger than the requester, to report as the reason for dying. Equal
/// timestamps count as "not older". That should not happen for distinct
/// transactions, and waiting on a tie could allow a cycle.
fn older_conflict(ts: u64, conflicts: impl IntoIterator<Item = (TxnId, u64)>) -> Option<TxnId> {
    conflicts
        .into_iter()
        .filter(|&(_, other_ts)| other_ts <= ts)
        .max_by_key(|&(txn, other_ts)| (other_ts, txn))
        .map(|(txn, _)| txn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use LockMode::{
        Exclusive as X, IntentionExclusive as IX, IntentionShared as IS, Shared as S,
        SharedIntentionExclusive as SIX,
    };

    const ALL_MODES: [LockMode; 5] = [IS, IX, S, SIX, X];

    fn table(id: u32) -> Resource {
        Resource::Table(id)
    }

    fn row(id: u32, key: u8) -> Resource {
        Resource::Row(id, vec![key])
    }

    /// In these tests a transaction's timestamp equals its id.
    fn acquire(lm: &mut LockManager, txn: TxnId, resource: &Resource, mode: LockMode) -> Acquire {
        lm.acquire(txn, txn, resource, mode)
    }

    #[test]
    fn compatibility_matrix_is_symmetric_and_standard() {
        let expected = [
            (IS, [true, true, true, true, false]),
            (IX, [true, true, false, false, false]),
            (S, [true, false, true, false, false]),
            (SIX, [true, false, false, false, false]),
            (X, [false, false, false, false, false]),
        ];
        for (a, row) in expected {
            for (b, ok) in ALL_MODES.into_iter().zip(row) {
                assert_eq!(a.compatible(b), ok, "{a:?} vs {b:?}");
                assert_eq!(b.compatible(a), ok, "{b:?} vs {a:?}");
            }
        }
    }

    #[test]
    fn combine_is_the_least_covering_mode() {
        for a in ALL_MODES {
            for b in ALL_MODES {
                let c = a.combine(b);
                assert!(c.covers(a) && c.covers(b), "{a:?}+{b:?}={c:?}");
                // No strictly weaker mode covers both.
                for d in ALL_MODES {
                    if d.covers(a) && d.covers(b) {
                        assert!(d.covers(c), "{d:?} is below {c:?} for {a:?}+{b:?}");
                    }
                }
                // Whatever conflicts with a part conflicts with the whole,
                // which the upgrade logic relies on.
                for o in ALL_MODES {
                    if !a.compatible(o) {
                        assert!(!c.compatible(o));
                    }
                }
            }
        }
        assert_eq!(S.combine(IX), SIX);
        assert_eq!(IX.combine(S), SIX);
        assert_eq!(IS.combine(X), X);
    }

    #[test]
    fn shared_locks_are_compatible() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 1, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 2, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 3, &r, S), Acquire::Granted);
        assert_eq!(lm.locked_resources(), 1);
        assert_eq!(lm.held_count(2), 1);
    }

    #[test]
    fn exclusive_conflicts_with_shared() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 2, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 1, &r, X), Acquire::Wait);
        assert_eq!(acquire(&mut lm, 3, &r, X), Acquire::Die { holder: 2 });
    }

    #[test]
    fn older_requester_waits_for_younger_holder() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 5, &r, X), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 1, &r, S), Acquire::Wait);
        assert_eq!(lm.waiting_for(1), Some(&r));
        assert_eq!(lm.held_count(1), 0);
        assert_eq!(lm.release_all(5), vec![(1, r.clone())]);
        assert_eq!(lm.waiting_for(1), None);
        assert_eq!(lm.held_count(1), 1);
    }

    #[test]
    fn younger_requester_dies() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 1, &r, X), Acquire::Granted);
        let before = lm.clone();
        assert_eq!(acquire(&mut lm, 5, &r, S), Acquire::Die { holder: 1 });
        // Nothing was queued or recorded for the dying transaction.
        assert_eq!(lm, before);
        assert_eq!(lm.waiting_for(5), None);
        assert!(lm.release_all(5).is_empty());
    }

    #[test]
    fn die_reports_an_older_conflicting_transaction() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 2, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 4, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 6, &r, S), Acquire::Granted);
        // 5 conflicts with 2, 4 and 6. Only 2 and 4 are older, and the
        // youngest of those is reported.
        assert_eq!(acquire(&mut lm, 5, &r, X), Acquire::Die { holder: 4 });
    }

    #[test]
    fn release_grants_waiters_in_fifo_order() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 9, &r, X), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 5, &r, X), Acquire::Wait);
        // 3 must be older than the queued X waiter 5 as well as the holder.
        assert_eq!(acquire(&mut lm, 3, &r, S), Acquire::Wait);
        assert_eq!(acquire(&mut lm, 2, &r, S), Acquire::Wait);
        assert_eq!(acquire(&mut lm, 1, &r, X), Acquire::Wait);

        // Only the front X waiter is granted; the S waiters stay behind it.
        assert_eq!(lm.release_all(9), vec![(5, r.clone())]);
        // Both S waiters are granted together; X 1 waits for them.
        assert_eq!(lm.release_all(5), vec![(3, r.clone()), (2, r.clone())]);
        assert_eq!(lm.release_all(3), vec![]);
        assert_eq!(lm.release_all(2), vec![(1, r.clone())]);
        assert_eq!(lm.release_all(1), vec![]);
        assert_eq!(lm.locked_resources(), 0);
    }

    #[test]
    fn new_request_queues_behind_conflicting_waiter() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 9, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 5, &r, X), Acquire::Wait);
        // S is compatible with the holder but not with the queued X, so it
        // may not overtake it. 7 is younger than the X waiter 5 and dies.
        assert_eq!(acquire(&mut lm, 7, &r, S), Acquire::Die { holder: 5 });
        // 2 is older than the X waiter, so it queues behind it.
        assert_eq!(acquire(&mut lm, 2, &r, S), Acquire::Wait);
        // IS is compatible with S and only conflicts with the queued X, so
        // an older IS request also queues rather than overtaking.
        assert_eq!(acquire(&mut lm, 1, &r, IS), Acquire::Wait);
        assert_eq!(lm.release_all(9), vec![(5, r.clone())]);
        assert_eq!(lm.release_all(5), vec![(2, r.clone()), (1, r.clone())]);
    }

    #[test]
    fn compatible_request_overtakes_nothing_it_conflicts_with() {
        let mut lm = LockManager::new();
        let t = table(1);
        assert_eq!(acquire(&mut lm, 9, &t, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 5, &t, IX), Acquire::Wait);
        // IS is compatible with the holder S and the waiter IX, so it is
        // granted without queueing.
        assert_eq!(acquire(&mut lm, 7, &t, IS), Acquire::Granted);
        assert_eq!(lm.release_all(9), vec![(5, t.clone())]);
    }

    #[test]
    fn upgrade_shared_to_exclusive_when_alone() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 3, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 3, &r, X), Acquire::Granted);
        assert_eq!(lm.held_count(3), 1);
        // The lock is now exclusive: an older transaction must wait.
        assert_eq!(acquire(&mut lm, 1, &r, S), Acquire::Wait);
    }

    #[test]
    fn upgrade_combines_modes() {
        let mut lm = LockManager::new();
        let t = table(1);
        assert_eq!(acquire(&mut lm, 3, &t, IX), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 3, &t, S), Acquire::Granted);
        // The holder now has SIX, which conflicts with a younger IX but not
        // with a younger IS.
        assert_eq!(acquire(&mut lm, 4, &t, IS), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 5, &t, IX), Acquire::Die { holder: 3 });
    }

    #[test]
    fn upgrade_conflict_younger_dies() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 1, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 2, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 2, &r, X), Acquire::Die { holder: 1 });
        // The dying upgrader still holds its S lock until it releases.
        assert_eq!(lm.held_count(2), 1);
        assert_eq!(lm.waiting_for(2), None);
    }

    #[test]
    fn upgrade_conflict_older_waits_at_front_of_queue() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 2, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 3, &r, S), Acquire::Granted);
        // 1 queues for X behind both S holders.
        assert_eq!(acquire(&mut lm, 1, &r, X), Acquire::Wait);
        // 2 upgrades: it conflicts with holder 3 (younger) and with the
        // queued 1 (older, which already waits for 2). It goes in front.
        assert_eq!(acquire(&mut lm, 2, &r, X), Acquire::Wait);
        assert_eq!(lm.release_all(3), vec![(2, r.clone())]);
        assert_eq!(lm.release_all(2), vec![(1, r.clone())]);
    }

    #[test]
    fn upgrade_waits_behind_younger_conflicting_waiter() {
        let mut lm = LockManager::new();
        let t = table(1);
        assert_eq!(acquire(&mut lm, 1, &t, IS), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 9, &t, S), Acquire::Granted);
        // 3 wants IX; it conflicts with holder 9 and waits.
        assert_eq!(acquire(&mut lm, 3, &t, IX), Acquire::Wait);
        // 1 upgrades IS to S. That is compatible with every holder, but
        // granting it would leave the younger 3 waiting for the older 1.
        // So 1 waits behind 3 instead.
        assert_eq!(acquire(&mut lm, 1, &t, S), Acquire::Wait);
        assert_eq!(lm.release_all(9), vec![(3, t.clone())]);
        assert_eq!(lm.release_all(3), vec![(1, t.clone())]);
        assert_eq!(lm.held_count(1), 1);
    }

    #[test]
    fn table_scan_lock_conflicts_with_row_writers_intent() {
        let mut lm = LockManager::new();
        let t = table(7);
        // A row writer holds IX on the table and X on its row.
        assert_eq!(acquire(&mut lm, 4, &t, IX), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 4, &row(7, 1), X), Acquire::Granted);
        // An older table scan needs S on the table and waits for the writer.
        assert_eq!(acquire(&mut lm, 2, &t, S), Acquire::Wait);
        // A younger scan dies.
        assert_eq!(acquire(&mut lm, 6, &t, S), Acquire::Die { holder: 4 });
        assert_eq!(lm.release_all(4), vec![(2, t.clone())]);
    }

    #[test]
    fn intention_locks_are_compatible() {
        let mut lm = LockManager::new();
        let t = table(1);
        assert_eq!(acquire(&mut lm, 1, &t, IX), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 2, &t, IS), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 3, &t, IX), Acquire::Granted);
        // Different rows under the shared table intent do not conflict.
        assert_eq!(acquire(&mut lm, 1, &row(1, 1), X), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 3, &row(1, 2), X), Acquire::Granted);
        assert_eq!(lm.locked_resources(), 3);
    }

    #[test]
    fn cancel_wait_unblocks_waiters_behind() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 9, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 5, &r, X), Acquire::Wait);
        assert_eq!(acquire(&mut lm, 3, &r, S), Acquire::Wait);
        assert_eq!(acquire(&mut lm, 2, &r, S), Acquire::Wait);
        // Withdrawing the X waiter lets the S waiters join the S holder.
        assert_eq!(lm.cancel_wait(5), vec![(3, r.clone()), (2, r.clone())]);
        assert_eq!(lm.waiting_for(5), None);
        assert_eq!(lm.held_count(5), 0);
        // Cancelling again, or when not waiting, is a no-op.
        assert!(lm.cancel_wait(5).is_empty());
        assert!(lm.cancel_wait(9).is_empty());
    }

    #[test]
    fn cancelled_upgrade_keeps_the_weaker_lock() {
        let mut lm = LockManager::new();
        let r = row(1, 1);
        assert_eq!(acquire(&mut lm, 1, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 2, &r, S), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 1, &r, X), Acquire::Wait);
        assert!(lm.cancel_wait(1).is_empty());
        assert_eq!(lm.held_count(1), 1);
        // Still shared: a younger S request is granted.
        assert_eq!(acquire(&mut lm, 3, &r, S), Acquire::Granted);
    }

    #[test]
    fn release_all_leaves_nothing_locked() {
        let mut lm = LockManager::new();
        let t = table(1);
        assert_eq!(acquire(&mut lm, 3, &t, IX), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 3, &row(1, 1), X), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 3, &row(1, 2), X), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 1, &row(1, 1), S), Acquire::Wait);
        assert_eq!(lm.held_count(3), 3);
        assert_eq!(lm.release_all(1), vec![]);
        assert_eq!(lm.release_all(3), vec![]);
        assert_eq!(lm.locked_resources(), 0);
        assert_eq!(lm, LockManager::default());
    }

    #[test]
    fn reacquire_covered_mode_is_noop() {
        let mut lm = LockManager::new();
        let t = table(1);
        assert_eq!(acquire(&mut lm, 1, &t, X), Acquire::Granted);
        let before = lm.clone();
        for mode in ALL_MODES {
            assert_eq!(acquire(&mut lm, 1, &t, mode), Acquire::Granted);
        }
        assert_eq!(lm, before);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "already waiting"))]
    fn acquire_while_waiting_is_a_logic_error() {
        let mut lm = LockManager::new();
        assert_eq!(acquire(&mut lm, 5, &table(1), X), Acquire::Granted);
        assert_eq!(acquire(&mut lm, 1, &table(1), X), Acquire::Wait);
        // Release builds report the transaction as its own killer.
        assert_eq!(
            acquire(&mut lm, 1, &table(2), S),
            Acquire::Die { holder: 1 }
        );
        assert_eq!(lm.waiting_for(1), Some(&table(1)));
    }

    /// Checks the structural invariants, the wait-die ordering of the
    /// wait-for graph, and that no waiter could be granted but was not.
    fn check_invariants(lm: &LockManager) {
        for (resource, locks) in &lm.resources {
            assert!(
                !locks.holders.is_empty() || !locks.queue.is_empty(),
                "empty entry for {resource:?}"
            );
            for (i, a) in locks.holders.iter().enumerate() {
                let held = lm.txns.get(&a.txn).map(|s| &s.held);
                assert!(
                    held.is_some_and(|h| h.contains(resource)),
                    "index misses {resource:?}"
                );
                for b in &locks.holders[i + 1..] {
                    assert_ne!(a.txn, b.txn, "duplicate holder on {resource:?}");
                    // (1) Granted holders are pairwise compatible.
                    assert!(
                        a.mode.compatible(b.mode),
                        "{a:?} and {b:?} both hold {resource:?}"
                    );
                }
            }
            for (i, w) in locks.queue.iter().enumerate() {
                assert_eq!(lm.waiting_for(w.txn), Some(resource));
                let mut blocked = false;
                // (2) Every wait-for edge goes from older to younger.
                for h in locks.holders.iter().filter(|h| h.txn != w.txn) {
                    if !h.mode.compatible(w.mode) {
                        blocked = true;
                        assert!(w.ts < h.ts, "{w:?} waits for holder {h:?}");
                    }
                }
                for ahead in locks.queue.iter().take(i) {
                    assert_ne!(ahead.txn, w.txn);
                    if !ahead.mode.compatible(w.mode) {
                        blocked = true;
                        assert!(w.ts < ahead.ts, "{w:?} waits for waiter {ahead:?}");
                    }
                }
                // An upgrader already holds the resource, so waiters ahead of
                // it must not be waiting for its current mode.
                if let Some(held) = locks.holders.iter().find(|h| h.txn == w.txn) {
                    assert!(w.mode.covers(held.mode));
                }
                // No waiter is left behind when it could be granted.
                assert!(blocked, "{w:?} on {resource:?} could be granted");
            }
        }
        for (txn, state) in &lm.txns {
            assert!(!state.held.is_empty() || state.waiting.is_some());
            for resource in &state.held {
                let holds = lm
                    .resources
                    .get(resource)
                    .is_some_and(|l| l.holders.iter().any(|h| h.txn == *txn));
                assert!(holds, "index says {txn} holds {resource:?}");
            }
            if let Some(resource) = &state.waiting {
                let queued = lm
                    .resources
                    .get(resource)
                    .is_some_and(|l| l.queue.iter().filter(|w| w.txn == *txn).count() == 1);
                assert!(queued, "index says {txn} waits for {resource:?}");
            }
        }
    }

    fn check_grants(lm: &LockManager, grants: &[(TxnId, Resource)]) {
        for (txn, resource) in grants {
            // (3) A granted waiter is no longer waiting and holds the lock.
            assert_eq!(lm.waiting_for(*txn), None);
            let holds = lm
                .resources
                .get(resource)
                .is_some_and(|l| l.holders.iter().any(|h| h.txn == *txn));
            assert!(holds, "{txn} was granted {resource:?} but does not hold it");
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire {
            txn: TxnId,
            resource: usize,
            mode: LockMode,
            abort_on_die: bool,
        },
        ReleaseAll(TxnId),
        CancelWait(TxnId),
    }

    const TXNS: u64 = 5;

    fn resources() -> [Resource; 4] {
        [table(1), table(2), row(1, 1), row(1, 2)]
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let mode = prop::sample::select(ALL_MODES.to_vec());
        prop_oneof![
            8 => (1..=TXNS, 0..4usize, mode, any::<bool>()).prop_map(
                |(txn, resource, mode, abort_on_die)| Op::Acquire {
                    txn,
                    resource,
                    mode,
                    abort_on_die,
                }
            ),
            2 => (1..=TXNS).prop_map(Op::ReleaseAll),
            1 => (1..=TXNS).prop_map(Op::CancelWait),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_schedules_preserve_invariants(
            ops in prop::collection::vec(op_strategy(), 1..80)
        ) {
            let resources = resources();
            let mut lm = LockManager::new();
            for op in ops {
                match op {
                    Op::Acquire { txn, resource, mode, abort_on_die } => {
                        // A waiting transaction is parked and cannot issue
                        // another request.
                        if lm.waiting_for(txn).is_some() {
                            continue;
                        }
                        let resource = &resources[resource];
                        let before = lm.clone();
                        match lm.acquire(txn, txn, resource, mode) {
                            Acquire::Granted => {
                                let held = lm
                                    .resources
                                    .get(resource)
                                    .and_then(|l| l.holders.iter().find(|h| h.txn == txn))
                                    .map(|h| h.mode);
                                prop_assert!(held.is_some_and(|h| h.covers(mode)));
                            }
                            Acquire::Wait => {
                                prop_assert_eq!(lm.waiting_for(txn), Some(resource));
                            }
                            Acquire::Die { holder } => {
                                prop_assert!(holder < txn, "{} died for younger {}", txn, holder);
                                prop_assert_eq!(&lm, &before);
                                if abort_on_die {
                                    let grants = lm.release_all(txn);
                                    check_grants(&lm, &grants);
                                }
                            }
                        }
                    }
                    Op::ReleaseAll(txn) => {
                        let grants = lm.release_all(txn);
                        prop_assert_eq!(lm.held_count(txn), 0);
                        prop_assert_eq!(lm.waiting_for(txn), None);
                        check_grants(&lm, &grants);
                    }
                    Op::CancelWait(txn) => {
                        let grants = lm.cancel_wait(txn);
                        prop_assert_eq!(lm.waiting_for(txn), None);
                        check_grants(&lm, &grants);
                    }
                }
                check_invariants(&lm);
            }
            // (4) Releasing everyone leaves nothing locked.
            for txn in 1..=TXNS {
                let grants = lm.release_all(txn);
                check_grants(&lm, &grants);
                check_invariants(&lm);
            }
            prop_assert_eq!(lm.locked_resources(), 0);
            prop_assert_eq!(lm, LockManager::default());
        }
    }

    #[test]
    fn a_younger_requester_waits_for_a_prepared_holder_instead_of_dying() {
        let mut m = LockManager::new();
        let row = Resource::Row(1, vec![1]);
        assert_eq!(m.acquire(1, 10, &row, X), Acquire::Granted);
        // Without the mark, the younger requester dies.
        assert!(matches!(
            m.acquire(2, 20, &row, X),
            Acquire::Die { holder: 1 }
        ));
        m.mark_prepared(1);
        assert_eq!(m.acquire(2, 20, &row, X), Acquire::Wait);
        // An older transaction queued behind still follows wait-die with the waiter.
        assert!(matches!(
            m.acquire(3, 30, &row, S),
            Acquire::Die { holder: 2 }
        ));
        assert_eq!(m.release_all(1), vec![(2, row.clone())]);
        // The mark goes with the release.
        assert!(m.prepared.is_empty());
    }
}
