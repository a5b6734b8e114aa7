//! A node's part in two-phase commits: its open and prepared participant transactions and, as
//! an anchor, its decision records.
//!
//! [`TwoPhase`] carries out what the state machines of [`super::twopc`] decide, against this
//! node's store:
//!
//! * **open** participant transactions of gateways on other nodes, by transaction id (gid);
//! * **prepared** transactions: their write set and lock set are durable in a `Prepared` record
//!   (key `p | gid` in [`Space::Txn`], written by its own log entry), and the transaction keeps
//!   its locks until the outcome is applied. Committing applies the writes and deletes the record
//!   in one log entry; aborting deletes the record. At startup [`TwoPhase::load`] reads the
//!   records back and re-acquires their locks before the node serves anything;
//! * **decision records** (key `d | gid`) of transactions anchored here: `COMMITTED` is written
//!   in the same log entry as the anchor's own writes (the commit point), `ABORTED` by recovery.
//!
//! Every step that writes runs to its end in a task of its own, so a caller that goes away (its
//! connection died) cannot leave durable state and memory disagreeing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lock::{LockMode, Resource};
use super::twopc::{Decisions, Gid, Outcome, Record, Refusal, Resolve};
use super::{Transaction, TxnManager};
use crate::cluster::ring::ShardId;
use crate::error::{Error, Result};
use crate::failpoint::crash_point;
use crate::storage::{Space, Write};

/// The longest a gateway may take from its first prepare to the anchor's commit. A slower
/// gateway aborts instead (see [`ABORTED_RETENTION`]).
pub const DECISION_DEADLINE: Duration = Duration::from_secs(60);

/// How long an `ABORTED` record is kept. Longer than [`DECISION_DEADLINE`], so no gateway can
/// still commit a transaction whose record is gone.
pub const ABORTED_RETENTION: Duration = Duration::from_secs(600);

/// What a participant stores when it prepares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedRecord {
    pub gid: Gid,
    /// The wait-die age, kept so the re-acquired locks order the same way.
    pub age: u64,
    pub anchor: ShardId,
    pub participants: Vec<ShardId>,
    /// The write set, applied at commit.
    pub writes: Vec<Write>,
    /// The lock set, re-acquired at restart.
    pub locks: Vec<(Resource, LockMode)>,
}

/// The key of a prepared record.
pub fn prepared_key(gid: Gid) -> Vec<u8> {
    let mut k = vec![b'p'];
    k.extend_from_slice(&gid.to_be_bytes());
    k
}

/// The key of a decision record.
pub fn decision_key(gid: Gid) -> Vec<u8> {
    let mut k = vec![b'd'];
    k.extend_from_slice(&gid.to_be_bytes());
    k
}

fn gid_of(key: &[u8]) -> Result<Gid> {
    let bytes: [u8; 8] = key
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::Corrupt("a transaction record key is not 9 bytes".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The locks that protect a write set after a restart: the rows exclusively, their tables with
/// intention. (Read locks are not kept: a prepared transaction reads nothing more, so releasing
/// them cannot break serializability.)
fn lock_set(writes: &[Write]) -> Vec<(Resource, LockMode)> {
    let mut locks = BTreeMap::new();
    for w in writes {
        let key = match w {
            Write::Put(Space::Data, k, _) | Write::Delete(Space::Data, k) => k,
            _ => continue,
        };
        let Some(table) = key
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
        else {
            continue;
        };
        locks.insert(Resource::Table(table), LockMode::IntentionExclusive);
        locks.insert(Resource::Row(table, key.clone()), LockMode::Exclusive);
    }
    locks.into_iter().collect()
}

/// A prepared transaction in memory.
struct Prepared {
    record: PreparedRecord,
    /// Holds the locks; taken out while the outcome is being applied.
    txn: Option<Transaction>,
    since: Instant,
    /// When recovery last asked the anchor about it.
    asked: Option<Instant>,
    /// Recovery is asking the anchor right now.
    asking: bool,
    /// Reloaded at startup: its gateway is gone, so ask the anchor at once.
    reloaded: bool,
}

impl Prepared {
    fn new(record: PreparedRecord, txn: Transaction, reloaded: bool) -> Self {
        Prepared {
            record,
            txn: Some(txn),
            since: Instant::now(),
            asked: None,
            asking: false,
            reloaded,
        }
    }
}

/// A prepared transaction that recovery should ask its anchor about.
#[derive(Clone, Debug)]
pub struct InDoubt {
    pub gid: Gid,
    pub anchor: ShardId,
}

/// Counters of two-phase commits on this node, for status output and benchmarks.
#[derive(Debug, Default)]
pub struct TwoPhaseStats {
    /// Transactions this node committed through two-phase commit as gateway.
    pub distributed: AtomicU64,
    /// Transactions this node committed in one phase as gateway.
    pub single: AtomicU64,
    /// Microseconds this node spent as gateway in each step of its committed two-phase
    /// commits: sending the prepares and collecting the votes; the anchor's commit; telling
    /// the others.
    pub prepare_us: AtomicU64,
    pub decide_us: AtomicU64,
    pub finish_us: AtomicU64,
}

/// This node's two-phase commit state. See the module documentation.
pub struct TwoPhase {
    mgr: Arc<TxnManager>,
    open: Mutex<HashMap<Gid, Arc<tokio::sync::Mutex<Transaction>>>>,
    prepared: Mutex<BTreeMap<Gid, Prepared>>,
    decisions: Mutex<Decisions>,
    origin: Instant,
    pub stats: TwoPhaseStats,
    /// Commits still being sent to participants after the client's answer.
    finishing: AtomicU64,
    /// The last LSN of the log when [`TwoPhase::load`] read the store. A primary that
    /// restarted applies its old tail (entries after its applied LSN) only once its in-sync set
    /// holds them, after the load: a decision record in that tail is not in `decisions`.
    loaded_tail: AtomicU64,
}

/// Counts a background finish while it runs (see [`TwoPhase::finishing`]).
pub struct Finishing(Arc<TwoPhase>);

impl Drop for Finishing {
    fn drop(&mut self) {
        self.0.finishing.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Internal(format!("encode a 2PC record: {e}")))
}

impl TwoPhase {
    /// An empty state over `mgr`; call [`TwoPhase::load`] before serving.
    pub fn new(mgr: Arc<TxnManager>) -> Self {
        Self {
            mgr,
            open: Mutex::default(),
            prepared: Mutex::default(),
            decisions: Mutex::default(),
            origin: Instant::now(),
            stats: TwoPhaseStats::default(),
            finishing: AtomicU64::new(0),
            loaded_tail: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Counts a commit that is still being sent to the participants after the client got its
    /// answer, until the returned guard is dropped.
    pub fn finishing(self: &Arc<Self>) -> Finishing {
        self.finishing.fetch_add(1, Ordering::AcqRel);
        Finishing(self.clone())
    }

    /// Waits (at most `grace`) for the background finishes to end: at shutdown, so the
    /// participants learn their commits now rather than from recovery later.
    pub async fn drain(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while self.finishing.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reloads prepared transactions (re-acquiring their locks) and decision records from the
    /// store, as they stand at the end of its log. Runs before the node serves any statement,
    /// so the locks are free.
    ///
    /// A restarted primary of a replicated shard has a tail of entries after its applied LSN
    /// (appended, some even committed and answered before the crash: applying does not fsync).
    /// Its in-sync set will hold them and it applies them, after this: so the tail's `txn`
    /// space writes are laid over the applied records here, or a transaction whose vote was
    /// sent would be forgotten (its commit later finding nothing prepared, its locks not held)
    /// and a decision would be missed.
    pub async fn load(&self) -> Result<()> {
        let engine = self.mgr.store.engine.clone();
        let now = self.now();
        let state = self.mgr.store.log_state()?;
        self.loaded_tail.store(state.last.lsn, Ordering::Release);
        let mut records: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for prefix in [b"d", b"p"] {
            for kv in engine.scan_prefix(Space::Txn, prefix) {
                let (key, value) = kv?;
                records.insert(key, value);
            }
        }
        let mut from = state.applied.lsn + 1;
        while from <= state.last.lsn {
            let crate::storage::LogRead::Entries(entries) =
                crate::storage::record::read_entries(engine.as_ref(), from, 4 << 20)?
            else {
                return Err(Error::Corrupt(format!(
                    "the log's unapplied tail from {from} was truncated"
                )));
            };
            let Some(last) = entries.last() else {
                break;
            };
            from = last.lsn + 1;
            for entry in entries {
                for write in entry.writes {
                    match write {
                        Write::Put(Space::Txn, key, value) => {
                            records.insert(key, value);
                        }
                        Write::Delete(Space::Txn, key) => {
                            records.remove(&key);
                        }
                        Write::DeleteRange(Space::Txn, ..) => {
                            return Err(Error::Corrupt(
                                "a range delete of the txn space in the log's tail".into(),
                            ))
                        }
                        _ => {}
                    }
                }
            }
        }
        for (key, value) in records.range(b"d".to_vec()..b"e".to_vec()) {
            let gid = gid_of(key)?;
            let record: Record = postcard::from_bytes(value)
                .map_err(|e| Error::Corrupt(format!("decision record {gid}: {e}")))?;
            lock(&self.decisions).load(gid, record, now);
        }
        for (key, value) in records.range(b"p".to_vec()..b"q".to_vec()) {
            let gid = gid_of(key)?;
            let record: PreparedRecord = postcard::from_bytes(value)
                .map_err(|e| Error::Corrupt(format!("prepared record {gid}: {e}")))?;
            let mut txn = self.mgr.begin(Some(record.age));
            for (resource, mode) in &record.locks {
                txn.lock(resource.clone(), *mode).await?;
            }
            txn.mark_prepared();
            tracing::info!(
                gid,
                anchor = record.anchor,
                "reloaded a prepared transaction; resolving it with its anchor"
            );
            lock(&self.prepared).insert(gid, Prepared::new(record, txn, true));
        }
        Ok(())
    }

    /// On a node that runs as a replica: forgets the prepared transactions (releasing their
    /// locks) and the decision records [`TwoPhase::load`] read from the store. They are the
    /// replica's copy of its primary's, which resolves them and collects them, and whose log
    /// the copy follows; the replica answers none of them itself (DESIGN §6.2: a replica takes
    /// them up, locks first, only when it is promoted). Returns how many of each it forgot.
    pub fn forget_loaded(&self) -> (usize, usize) {
        let prepared = std::mem::take(&mut *lock(&self.prepared));
        let decisions = std::mem::take(&mut *lock(&self.decisions));
        (prepared.len(), decisions.len())
    }

    /// Rolls back every open (not yet prepared) participant transaction, releasing its locks:
    /// called when this node stops being its shard's primary. Their gateways' messages are
    /// refused from then on (another epoch), including a rollback, so nothing else would end
    /// them before the gateway's connection closes, and their locks would block the rows if
    /// this node became the primary again. An operation still running holds its own handle and
    /// rolls the transaction back when it ends. Returns how many there were.
    pub fn abort_all_open(&self) -> usize {
        let open: Vec<_> = lock(&self.open).drain().map(|(_, txn)| txn).collect();
        open.len()
    }

    /// The open participant transaction `gid`, begun with `age` if it is new.
    pub fn open(&self, gid: Gid, age: u64) -> Arc<tokio::sync::Mutex<Transaction>> {
        lock(&self.open)
            .entry(gid)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(self.mgr.begin(Some(age)))))
            .clone()
    }

    /// The open participant transaction `gid`, if there is one (it is never begun here).
    pub fn get_open(&self, gid: Gid) -> Option<Arc<tokio::sync::Mutex<Transaction>>> {
        lock(&self.open).get(&gid).cloned()
    }

    /// Takes the open transaction `gid` out of the table (to commit or prepare it, or to roll
    /// it back by dropping it).
    pub fn take_open(&self, gid: Gid) -> Option<Arc<tokio::sync::Mutex<Transaction>>> {
        lock(&self.open).remove(&gid)
    }

    /// Prepares `txn`: logs its write set and lock set, then keeps it (with its locks) until
    /// the outcome is known.
    pub async fn prepare(
        self: &Arc<Self>,
        gid: Gid,
        mut txn: Transaction,
        anchor: ShardId,
        participants: Vec<ShardId>,
    ) -> Result<()> {
        let writes = txn.take_writes();
        let record = PreparedRecord {
            gid,
            age: txn.age(),
            anchor,
            participants,
            locks: lock_set(&writes),
            writes,
        };
        let entry = vec![Write::Put(Space::Txn, prepared_key(gid), encode(&record)?)];
        if lock(&self.prepared).contains_key(&gid) {
            // Ids are unique; a repeat (a clock stepped back) must not replace an in-doubt one.
            return Err(Error::Internal(format!(
                "transaction {gid} is already prepared here"
            )));
        }
        let this = self.clone();
        let task = tokio::spawn(async move {
            txn.log_keeping_locks(entry).await?;
            txn.mark_prepared();
            lock(&this.prepared).insert(gid, Prepared::new(record, txn, false));
            crash_point("participant-after-prepare");
            Ok(())
        });
        task.await
            .map_err(|e| Error::Internal(format!("prepare task: {e}")))?
    }

    /// Applies the commit of prepared `gid`; `false` if it is not prepared here (already
    /// resolved, or being applied by another caller).
    pub async fn commit_prepared(self: &Arc<Self>, gid: Gid) -> Result<bool> {
        self.apply(gid, Outcome::Committed).await
    }

    /// Aborts `gid` here: rolls back its open transaction, or deletes its prepared record and
    /// releases its locks.
    pub async fn abort(self: &Arc<Self>, gid: Gid) -> Result<()> {
        drop(self.take_open(gid));
        self.apply(gid, Outcome::Aborted).await.map(|_| ())
    }

    /// Applies the outcome of prepared `gid`. The transaction stays in the table (so it still
    /// counts as prepared for the anchor's garbage collection) until the outcome is durable,
    /// and the step runs to its end even if the caller goes away.
    async fn apply(self: &Arc<Self>, gid: Gid, outcome: Outcome) -> Result<bool> {
        // A refused commit would drop the transaction, and its locks, for good while its
        // record stays prepared (a restarted primary refuses writes until its in-sync set
        // holds its old tail): ask again later instead.
        if let Some(refusal) = self.mgr.store.committer.refusal() {
            return Err(refusal);
        }
        let (txn, mut writes) = {
            let mut prepared = lock(&self.prepared);
            let Some(p) = prepared.get_mut(&gid) else {
                return Ok(false);
            };
            let Some(txn) = p.txn.take() else {
                return Ok(false);
            };
            let writes = match outcome {
                Outcome::Committed => p.record.writes.clone(),
                Outcome::Aborted => Vec::new(),
            };
            (txn, writes)
        };
        writes.push(Write::Delete(Space::Txn, prepared_key(gid)));
        let this = self.clone();
        let task = tokio::spawn(async move {
            let result = txn.commit_with(writes, || {}).await;
            // Only once the outcome is durable is the transaction no longer prepared here. A
            // failed write stops the node (the committer aborts), and the restart reloads it.
            if result.is_ok() {
                lock(&this.prepared).remove(&gid);
            }
            result
        });
        task.await
            .map_err(|e| Error::Internal(format!("apply task: {e}")))??;
        Ok(true)
    }

    /// Whether `gid` is prepared here.
    pub fn is_prepared(&self, gid: Gid) -> bool {
        lock(&self.prepared).contains_key(&gid)
    }

    /// As the anchor: commits `txn`'s writes with the `COMMITTED` record, unless recovery
    /// aborted `gid` first. `started` is when the gateway began to prepare, if it is this node
    /// (the deadline is measured on one clock). A remote gateway needs no deadline: recovery
    /// rolls back the open part it would commit, so its late request finds nothing.
    ///
    /// A refusal is a [`Error::serialization`] (the transaction is definitely aborted); any
    /// other error leaves the outcome unknown to the caller.
    pub async fn commit_anchor(
        self: &Arc<Self>,
        gid: Gid,
        txn: Transaction,
        participants: Vec<ShardId>,
        started: Option<Instant>,
    ) -> Result<()> {
        let record = Record::Committed {
            participants: participants.clone(),
        };
        let entry = vec![Write::Put(Space::Txn, decision_key(gid), encode(&record)?)];
        let started = started.map(|s| s.saturating_duration_since(self.origin).as_millis() as u64);
        let claim = lock(&self.decisions).begin_commit(
            gid,
            started,
            DECISION_DEADLINE.as_millis() as u64,
            self.now(),
        );
        match claim {
            Ok(()) => {}
            Err(Refusal::Aborted) => {
                txn.rollback();
                return Err(Error::serialization(format!(
                    "transaction {gid} was aborted by recovery before it could commit; retry the transaction"
                )));
            }
            Err(Refusal::TooLate) => {
                txn.rollback();
                return Err(Error::serialization(format!(
                    "transaction {gid} took longer than {} s to prepare and was aborted; retry the transaction",
                    DECISION_DEADLINE.as_secs()
                )));
            }
            Err(Refusal::Duplicate) => {
                // A record exists and may say committed: the caller must not take this as an
                // abort.
                txn.rollback();
                return Err(Error::Internal(format!(
                    "transaction {gid} already has a decision on its anchor"
                )));
            }
        }
        // From the claim on, the step runs to its end: the claim is always settled.
        let this = self.clone();
        let task = tokio::spawn(async move {
            crash_point("anchor-before-commit");
            let result = txn.commit_with(entry, || {}).await;
            lock(&this.decisions).committed(gid, participants, result.is_ok(), this.now());
            result?;
            crash_point("anchor-after-commit");
            Ok(())
        });
        task.await
            .map_err(|e| Error::Internal(format!("anchor commit task: {e}")))?
    }

    /// As the anchor: the outcome of `gid` for a participant that asks (None: being decided,
    /// ask again). With no record, writes `ABORTED` first and rolls back this node's open part,
    /// so the gateway can no longer commit.
    pub async fn resolve(self: &Arc<Self>, gid: Gid) -> Result<Option<Outcome>> {
        let entry = vec![Write::Put(
            Space::Txn,
            decision_key(gid),
            encode(&Record::Aborted)?,
        )];
        let step = lock(&self.decisions).resolve(gid);
        match step {
            Resolve::Known(o) => Ok(Some(o)),
            Resolve::Pending => Ok(None),
            Resolve::WriteAborted => {
                if let Some(known) = self.decision_in_tail(gid)? {
                    return Ok(known);
                }
                drop(self.take_open(gid));
                let this = self.clone();
                let task = tokio::spawn(async move {
                    // epoch: 1 until shard epochs reach the committer.
                    let result = this.mgr.store.committer.commit(0, entry).await;
                    lock(&this.decisions).aborted(gid, result.is_ok(), this.now());
                    result
                });
                task.await
                    .map_err(|e| Error::Internal(format!("abort record task: {e}")))??;
                tracing::info!(gid, "recovery aborted an undecided transaction");
                Ok(Some(Outcome::Aborted))
            }
        }
    }

    /// With no record of `gid` in memory (its state is `Aborting`, just claimed by
    /// [`TwoPhase::resolve`]): what the old tail of the log says, if it may say anything. While
    /// the tail is not applied yet, nobody can know (`Some(None)`: ask again); once it is, a
    /// decision record found in the store came from it and is taken up. `None`: there is no
    /// record, abort.
    fn decision_in_tail(&self, gid: Gid) -> Result<Option<Option<Outcome>>> {
        let undo = |this: &Self| lock(&this.decisions).aborted(gid, false, this.now());
        let applied = match self.mgr.store.applied_lsn() {
            Ok(lsn) => lsn,
            Err(e) => {
                undo(self);
                return Err(e);
            }
        };
        if applied < self.loaded_tail.load(Ordering::Acquire) {
            undo(self);
            return Ok(Some(None));
        }
        let stored = match self.mgr.store.engine.get(Space::Txn, &decision_key(gid)) {
            Ok(v) => v,
            Err(e) => {
                undo(self);
                return Err(e);
            }
        };
        let Some(value) = stored else {
            return Ok(None);
        };
        let record: Record = match postcard::from_bytes(&value) {
            Ok(r) => r,
            Err(e) => {
                undo(self);
                return Err(Error::Corrupt(format!("decision record {gid}: {e}")));
            }
        };
        let outcome = record.outcome();
        tracing::info!(
            gid,
            ?outcome,
            "found the decision in the log's tail committed after the restart"
        );
        lock(&self.decisions).load(gid, record, self.now());
        Ok(Some(Some(outcome)))
    }

    /// As the anchor: drops the record of `gid`, once every participant has applied it.
    pub async fn forget(&self, gid: Gid) -> Result<()> {
        if lock(&self.decisions).forget(gid) {
            // epoch: 1 until shard epochs reach the committer.
            self.mgr
                .store
                .committer
                .commit(0, vec![Write::Delete(Space::Txn, decision_key(gid))])
                .await?;
        }
        Ok(())
    }

    /// Prepared transactions held longer than `timeout` (or reloaded at startup), not being
    /// applied, and not asked about within `timeout`: recovery asks their anchors, and calls
    /// [`TwoPhase::asked`] when done.
    pub fn in_doubt(&self, timeout: Duration) -> Vec<InDoubt> {
        let now = Instant::now();
        let mut prepared = lock(&self.prepared);
        let mut due = Vec::new();
        for (&gid, p) in prepared.iter_mut() {
            let held = p.reloaded || now.saturating_duration_since(p.since) >= timeout;
            let recently = p
                .asked
                .is_some_and(|a| now.saturating_duration_since(a) < timeout);
            if held && !recently && !p.asking && p.txn.is_some() {
                p.asked = Some(now);
                p.asking = true;
                due.push(InDoubt {
                    gid,
                    anchor: p.record.anchor,
                });
            }
        }
        due
    }

    /// Recovery finished asking about `gid`.
    pub fn asked(&self, gid: Gid) {
        if let Some(p) = lock(&self.prepared).get_mut(&gid) {
            p.asking = false;
        }
    }

    /// How many transactions are prepared here, and how long the oldest has been.
    pub fn prepared_summary(&self) -> (u64, Duration) {
        let prepared = lock(&self.prepared);
        let oldest = prepared
            .values()
            .map(|p| p.since.elapsed())
            .max()
            .unwrap_or_default();
        (prepared.len() as u64, oldest)
    }

    /// Decision records kept here.
    pub fn decision_count(&self) -> u64 {
        lock(&self.decisions).len() as u64
    }

    /// `COMMITTED` records older than `min_age` (candidates for garbage collection), and
    /// `ABORTED` records past their retention (to delete).
    pub fn gc_candidates(&self, min_age: Duration) -> (Vec<(Gid, Vec<ShardId>)>, Vec<Gid>) {
        let d = lock(&self.decisions);
        let now = self.now();
        (
            d.committed_older_than(min_age.as_millis() as u64, now),
            d.aborted_older_than(ABORTED_RETENTION.as_millis() as u64, now),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Store;

    fn manager(dir: &std::path::Path) -> Arc<TxnManager> {
        let store = Arc::new(Store::open(dir).unwrap());
        Arc::new(TxnManager::new(store, Duration::from_millis(200)))
    }

    fn row(table: u32, k: u8) -> Vec<u8> {
        let mut key = table.to_be_bytes().to_vec();
        key.extend_from_slice(&[0; 8]);
        key.push(k);
        key
    }

    #[tokio::test]
    async fn a_prepared_transaction_survives_a_restart_with_its_locks() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mgr = manager(dir.path());
            let tp = Arc::new(TwoPhase::new(mgr.clone()));
            let mut t = mgr.begin(None);
            t.put(1, row(1, 1), b"v".to_vec()).await.unwrap();
            tp.prepare(42, t, 0, vec![0, 1]).await.unwrap();
            assert!(tp.is_prepared(42));
            // Not applied yet.
            assert_eq!(mgr.store.engine.get(Space::Data, &row(1, 1)).unwrap(), None);
            mgr.store.committer.shutdown();
        }
        let mgr = manager(dir.path());
        let tp = Arc::new(TwoPhase::new(mgr.clone()));
        tp.load().await.unwrap();
        assert_eq!(tp.prepared_summary().0, 1);
        assert_eq!(tp.in_doubt(Duration::from_secs(1)).len(), 1);
        // The row is still locked: another writer times out.
        let mut other = mgr.begin(None);
        assert!(other.put(1, row(1, 1), b"w".to_vec()).await.is_err());
        drop(other);
        assert!(tp.commit_prepared(42).await.unwrap());
        assert_eq!(
            mgr.store.engine.get(Space::Data, &row(1, 1)).unwrap(),
            Some(b"v".to_vec())
        );
        assert!(mgr
            .store
            .engine
            .scan_prefix(Space::Txn, b"p")
            .next()
            .is_none());
        let mut other = mgr.begin(None);
        other.put(1, row(1, 1), b"w".to_vec()).await.unwrap();
    }

    #[tokio::test]
    async fn abort_deletes_the_record_and_releases_the_locks() {
        let dir = tempfile::tempdir().unwrap();
        let mgr = manager(dir.path());
        let tp = Arc::new(TwoPhase::new(mgr.clone()));
        let mut t = mgr.begin(None);
        t.put(1, row(1, 2), b"v".to_vec()).await.unwrap();
        tp.prepare(7, t, 0, vec![0, 1]).await.unwrap();
        tp.abort(7).await.unwrap();
        assert!(!tp.is_prepared(7));
        assert_eq!(mgr.store.engine.get(Space::Data, &row(1, 2)).unwrap(), None);
        assert!(mgr
            .store
            .engine
            .scan_prefix(Space::Txn, b"")
            .next()
            .is_none());
        let mut other = mgr.begin(None);
        other.put(1, row(1, 2), b"w".to_vec()).await.unwrap();
    }

    #[tokio::test]
    async fn recovery_aborts_an_undecided_anchor_and_the_late_commit_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mgr = manager(dir.path());
        let tp = Arc::new(TwoPhase::new(mgr.clone()));
        let mut t = mgr.begin(None);
        t.put(1, row(1, 3), b"v".to_vec()).await.unwrap();
        assert_eq!(tp.resolve(9).await.unwrap(), Some(Outcome::Aborted));
        let err = tp.commit_anchor(9, t, vec![0, 1], None).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert_eq!(mgr.store.engine.get(Space::Data, &row(1, 3)).unwrap(), None);
        // The anchor's row is free again.
        let mut other = mgr.begin(None);
        other.put(1, row(1, 3), b"w".to_vec()).await.unwrap();
    }

    #[tokio::test]
    async fn the_anchor_commit_writes_the_record_with_the_rows_and_forget_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let mgr = manager(dir.path());
        let tp = Arc::new(TwoPhase::new(mgr.clone()));
        let mut t = mgr.begin(None);
        t.put(1, row(1, 4), b"v".to_vec()).await.unwrap();
        tp.commit_anchor(5, t, vec![0, 1], Some(Instant::now()))
            .await
            .unwrap();
        assert_eq!(tp.resolve(5).await.unwrap(), Some(Outcome::Committed));
        let records = mgr.store.engine.scan_prefix(Space::Txn, b"d");
        assert_eq!(records.count(), 1);
        // Reloaded after a restart, the record still answers.
        let again = Arc::new(TwoPhase::new(mgr.clone()));
        again.load().await.unwrap();
        assert_eq!(again.resolve(5).await.unwrap(), Some(Outcome::Committed));
        tp.forget(5).await.unwrap();
        assert!(mgr
            .store
            .engine
            .scan_prefix(Space::Txn, b"d")
            .next()
            .is_none());
    }

    #[tokio::test]
    async fn a_restarted_primary_loads_the_2pc_records_of_its_unapplied_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mgr = manager(dir.path());
        mgr.store.use_wal().unwrap();
        let before = Arc::new(TwoPhase::new(mgr.clone()));
        // An anchor's entry (its row and COMMITTED), then a participant's prepared record:
        // durable in the log, waiting for the in-sync set when the primary dies.
        let mut t = mgr.begin(None);
        t.put(1, row(1, 6), b"v".to_vec()).await.unwrap();
        let anchor = before.clone();
        let _committing =
            tokio::spawn(async move { anchor.commit_anchor(11, t, vec![0, 1], None).await });
        let mut durable = mgr.store.committer.durable().unwrap();
        let wait = |durable: &mut tokio::sync::watch::Receiver<crate::storage::LogId>, lsn| {
            let durable = durable.clone();
            async move {
                let mut durable = durable;
                tokio::time::timeout(
                    Duration::from_secs(10),
                    durable.wait_for(|id| id.lsn >= lsn),
                )
                .await
                .expect("the entry is durable")
                .map(|_| ())
                .unwrap();
            }
        };
        wait(&mut durable, 1).await;
        let mut t = mgr.begin(None);
        t.put(1, row(1, 7), b"w".to_vec()).await.unwrap();
        let _preparing = tokio::spawn(async move { before.prepare(13, t, 2, vec![0, 2]).await });
        wait(&mut durable, 2).await;
        assert_eq!(mgr.store.applied_lsn().unwrap(), 0);
        // The restarted primary (a new lock table over the same store) loads its 2PC state
        // before the tail is applied.
        let restarted = Arc::new(TxnManager::new(
            mgr.store.clone(),
            Duration::from_millis(200),
        ));
        let tp = Arc::new(TwoPhase::new(restarted));
        tp.load().await.unwrap();
        assert!(tp.is_prepared(13), "the tail's prepared record is reloaded");
        let answer = tokio::time::timeout(Duration::from_secs(5), tp.resolve(11));
        assert_eq!(
            answer.await.expect("an answer").unwrap(),
            Some(Outcome::Committed),
            "the tail's decision answers (an ABORTED record would contradict it)"
        );
        mgr.store
            .committer
            .commit_to(2)
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            mgr.store.engine.get(Space::Data, &row(1, 6)).unwrap(),
            Some(b"v".to_vec())
        );
    }
}
