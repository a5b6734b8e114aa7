//! Local transactions: strict two-phase locking over a node's storage.
//!
//! A [`Transaction`] takes locks as it reads and writes (shared row locks for reads, exclusive
//! for writes, with table intention locks so that a table scan and a row writer exclude each
//! other), buffers its writes, and at commit hands them to the group committer as one log entry.
//! Locks are held until the commit is durable or the transaction is rolled back (strict 2PL),
//! which makes execution serializable for everything it reads and writes.
//!
//! Reads see the transaction's own buffered writes first, then committed storage. Because every
//! row read is locked, committed storage cannot change under a transaction between its reads.
//!
//! Dropping a transaction without committing rolls it back: its buffered writes are discarded
//! and its locks released, so a client that disconnects mid-transaction leaves nothing behind.
//!
//! **Savepoints** ([`Transaction::savepoint`]) are marks in the write buffer. While at least
//! one mark exists, every buffered write also records what the buffer held for its key before
//! (an undo log), so [`Transaction::rollback_to`] restores the buffer exactly as it was at the
//! mark by undoing the writes after it, newest first, and keeps the mark (it can be rolled back
//! to again); [`Transaction::release`] drops a mark and the ones after it, keeping the writes.
//! Marks are numbered by the caller and a number may repeat; the newest mark with a number is
//! the one meant. Without marks nothing is logged, so a transaction that takes none pays
//! nothing for them.
//!
//! Rolling back to a savepoint **releases no lock**. PostgreSQL releases the locks of a
//! rolled-back subtransaction, but its reads are snapshot reads; here the locks are what makes
//! execution serializable, and the client has seen what the undone statements read and may
//! base what it does next on it. Releasing a shared lock taken after the mark would let another
//! transaction change a row this one read before it commits, which is not serializable, and
//! an exclusive lock covers a read too (an `UPDATE` reads the row it writes). So strict 2PL
//! holds across savepoints: every lock is kept to the end of the whole transaction. The cost
//! is that rows a rolled-back statement touched stay locked, which is safe, never wrong.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::lock::{LockMode, Resource, TxnId};
use super::lock_table::{LockFailure, LockTable};
use crate::error::{sqlstate, Error, Result};
use crate::storage::{keycode, Space, Store, Write};

/// Starts transactions and owns what they share: the store and the lock table.
pub struct TxnManager {
    pub store: Arc<Store>,
    pub locks: LockTable,
    next_id: AtomicU64,
    /// The last wait-die timestamp handed out, and this node's tag in its low bits.
    last_ts: std::sync::Mutex<u64>,
    node_tag: AtomicU64,
    /// How long a transaction waits for a lock before it gives up with 40001.
    pub lock_timeout: Duration,
}

impl TxnManager {
    /// A manager over `store`.
    pub fn new(store: Arc<Store>, lock_timeout: Duration) -> Self {
        Self {
            store,
            locks: LockTable::new(),
            next_id: AtomicU64::new(1),
            last_ts: std::sync::Mutex::new(0),
            node_tag: AtomicU64::new(0),
            lock_timeout,
        }
    }

    /// Begins a transaction. `age` is the wait-die timestamp of an earlier attempt of the same
    /// work, so a retried statement keeps its priority and cannot starve.
    pub fn begin(self: &Arc<Self>, age: Option<u64>) -> Transaction {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Transaction {
            mgr: self.clone(),
            id,
            ts: age.unwrap_or_else(|| self.new_age()),
            writes: BTreeMap::new(),
            meta: Vec::new(),
            undo: Vec::new(),
            marks: Vec::new(),
            died: false,
            finished: false,
            lock_timeout: None,
        }
    }
}

impl TxnManager {
    /// Sets the tag (the node's Raft id) that makes this node's ages distinct from other nodes'.
    pub fn set_node_tag(&self, tag: u64) {
        self.node_tag.store(tag & 0x3ff, Ordering::Relaxed);
    }

    /// The node's tag (its Raft id in a cluster, 0 standalone).
    pub fn node_tag(&self) -> u64 {
        self.node_tag.load(Ordering::Relaxed)
    }

    /// A new wait-die age: microseconds since the epoch with the node tag in the low 10 bits,
    /// strictly increasing on this node, so ages are comparable across the nodes of a cluster
    /// (up to clock skew, which only makes a transaction look a little older or younger).
    pub fn new_age(&self) -> u64 {
        let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
        let tag = self.node_tag.load(Ordering::Relaxed);
        let mut last = match self.last_ts.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let micros = (now).max((*last >> 10) + 1);
        *last = (micros << 10) | tag;
        *last
    }
}

/// Whether a read intends to write the row afterwards (and so takes an exclusive lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Intent {
    Read,
    Write,
}

/// How much one batch of a scan reads ([`Transaction::scan_batch`]): at most `rows` stored
/// rows, and it stops after the row that reaches `bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchLimit {
    pub rows: usize,
    pub bytes: usize,
}

impl BatchLimit {
    /// The batch a scan reads at a time unless told otherwise: 1,024 rows or 256 KiB, small
    /// enough that a scan of any size costs a bounded amount of memory per shard, and large
    /// enough that the round trip per batch is a small part of its cost.
    pub const DEFAULT: BatchLimit = BatchLimit {
        rows: 1024,
        bytes: 256 * 1024,
    };
}

/// One buffered row write that a rollback to a savepoint can undo: the key, and the buffered
/// entry it replaced (`None`: the key was not buffered).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// A savepoint: its number, and how long the undo log and the meta writes were when it was
/// taken.
#[derive(Clone, Copy, Debug)]
struct Mark {
    id: u64,
    undo: usize,
    meta: usize,
}

/// A transaction on this node.
pub struct Transaction {
    mgr: Arc<TxnManager>,
    id: TxnId,
    ts: u64,
    /// Buffered row writes: key → new value, `None` for a delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Buffered writes to the meta space (DDL).
    meta: Vec<Write>,
    /// While a savepoint exists: each buffered row write after the first mark, with what the
    /// buffer held for its key before (`None`: nothing).
    undo: Vec<Undo>,
    /// The savepoints, oldest first.
    marks: Vec<Mark>,
    /// Set when wait-die chose this transaction as the victim.
    died: bool,
    finished: bool,
    /// This transaction's bound on each lock wait (a session's `lock_timeout`), instead of
    /// the node's.
    lock_timeout: Option<Duration>,
}

impl Transaction {
    /// The store the transaction writes to.
    pub fn store(&self) -> &Store {
        &self.mgr.store
    }

    /// The transaction id.
    pub fn id(&self) -> TxnId {
        self.id
    }

    /// The wait-die age of the transaction.
    pub fn age(&self) -> u64 {
        self.ts
    }

    /// Whether wait-die made this transaction give up a lock wait (so retrying the same work
    /// with the same age is safe and will eventually succeed).
    pub fn died(&self) -> bool {
        self.died
    }

    /// Whether the transaction has written anything.
    pub fn has_writes(&self) -> bool {
        !self.writes.is_empty() || !self.meta.is_empty()
    }

    /// Bounds each lock wait of this transaction by `timeout` (`None`: the node's bound).
    pub fn set_lock_timeout(&mut self, timeout: Option<Duration>) {
        self.lock_timeout = timeout;
    }

    /// Takes `mode` on `resource`, waiting if needed.
    pub async fn lock(&mut self, resource: Resource, mode: LockMode) -> Result<()> {
        let mgr = self.mgr.clone();
        let timeout = self.lock_timeout.unwrap_or(mgr.lock_timeout);
        match mgr
            .locks
            .acquire(self.id, self.ts, &resource, mode, timeout)
            .await?
        {
            Ok(()) => Ok(()),
            Err(LockFailure::Died) => {
                self.died = true;
                Err(Error::serialization(
                    "could not serialize access due to a concurrent transaction (wait-die); retry the transaction",
                ))
            }
            // PostgreSQL's lock_timeout: the statement waited too long, it was not a conflict.
            Err(LockFailure::TimedOut) => Err(Error::sql(
                sqlstate::LOCK_NOT_AVAILABLE,
                format!(
                    "could not obtain lock within {} ms (the lock timeout)",
                    timeout.as_millis()
                ),
            )),
        }
    }

    /// Reads a row by key, locking it (shared, or exclusive with [`Intent::Write`]).
    pub async fn get(&mut self, table: u32, key: &[u8], intent: Intent) -> Result<Option<Vec<u8>>> {
        let (table_mode, row_mode) = match intent {
            Intent::Read => (LockMode::IntentionShared, LockMode::Shared),
            Intent::Write => (LockMode::IntentionExclusive, LockMode::Exclusive),
        };
        self.lock(Resource::Table(table), table_mode).await?;
        self.lock(Resource::Row(table, key.to_vec()), row_mode)
            .await?;
        if let Some(buffered) = self.writes.get(key) {
            return Ok(buffered.clone());
        }
        self.mgr.store.engine.get(Space::Data, key)
    }

    /// Reads every row of a table, in key order. Locks the table shared, or shared with intent
    /// to write rows ([`Intent::Write`]), which keeps other writers out until the end.
    pub async fn scan(&mut self, table: u32, intent: Intent) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mode = match intent {
            Intent::Read => LockMode::Shared,
            Intent::Write => LockMode::SharedIntentionExclusive,
        };
        self.lock(Resource::Table(table), mode).await?;
        let prefix = keycode::table_prefix(table);
        let stored: Vec<_> = self
            .mgr
            .store
            .engine
            .scan_prefix(Space::Data, &prefix)
            .collect::<Result<_>>()?;
        if !self.writes.keys().any(|k| k.starts_with(&prefix)) {
            return Ok(stored);
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    /// Reads the next batch of a table's rows in key order: the rows after `after` (from the
    /// start of the table when `None`), at most `limit.rows` stored rows and about
    /// `limit.bytes` bytes (always at least one row), with the transaction's own buffered
    /// writes merged in. Locks the table as [`Transaction::scan`] does.
    ///
    /// Returns the rows and where the next batch starts: the last stored key this batch
    /// read, or `None` when the table has no more rows. Resuming from a key is consistent
    /// because the table lock is held until the transaction ends (strict 2PL): no other
    /// transaction writes the table between two batches, so each batch's fresh view of the
    /// engine sees the same committed rows; the caller holds nothing between batches but the
    /// resume key.
    pub async fn scan_batch(
        &mut self,
        table: u32,
        intent: Intent,
        after: Option<&[u8]>,
        limit: BatchLimit,
    ) -> Result<(Vec<(Vec<u8>, Vec<u8>)>, Option<Vec<u8>>)> {
        let mode = match intent {
            Intent::Read => LockMode::Shared,
            Intent::Write => LockMode::SharedIntentionExclusive,
        };
        self.lock(Resource::Table(table), mode).await?;
        let prefix = keycode::table_prefix(table);
        if after.is_some_and(|k| !k.starts_with(&prefix)) {
            return Err(Error::InvalidInput(format!(
                "a scan of table {table} cannot resume from a key of another table"
            )));
        }
        let start = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Included(prefix.to_vec()),
        };
        let end = match table.checked_add(1) {
            Some(next) => Bound::Excluded(keycode::table_prefix(next).to_vec()),
            None => Bound::Unbounded,
        };
        let mut stored = Vec::new();
        let mut bytes = 0usize;
        let mut resume = None;
        let mut scan = self
            .mgr
            .store
            .engine
            .scan_range(Space::Data, start.clone(), end.clone());
        for kv in scan.by_ref() {
            let (k, v) = kv?;
            bytes += k.len() + v.len();
            stored.push((k, v));
            if stored.len() >= limit.rows.max(1) || bytes >= limit.bytes {
                resume = stored.last().map(|(k, _)| k.clone());
                break;
            }
        }
        drop(scan);
        // The buffered writes that fall in the part of the table this batch covers: up to its
        // last stored key, or to the end of the table when the stored rows ran out.
        let upper = match &resume {
            Some(k) => Bound::Included(k.clone()),
            None => end,
        };
        let mut own = self.writes.range((start, upper)).peekable();
        if own.peek().is_none() {
            return Ok((stored, resume));
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in own {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok((merged.into_iter().collect(), resume))
    }

    /// Writes a row, locking it exclusively.
    pub async fn put(&mut self, table: u32, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.lock_for_write(table, &key).await?;
        self.buffer(key, Some(value));
        Ok(())
    }

    /// Deletes a row, locking it exclusively.
    pub async fn delete(&mut self, table: u32, key: Vec<u8>) -> Result<()> {
        self.lock_for_write(table, &key).await?;
        self.buffer(key, None);
        Ok(())
    }

    /// Buffers a row write, logging what it replaces while a savepoint exists.
    fn buffer(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        if self.marks.is_empty() {
            self.writes.insert(key, value);
        } else {
            let before = self.writes.insert(key.clone(), value);
            self.undo.push((key, before));
        }
    }

    /// Takes savepoint `id`: a mark that [`Transaction::rollback_to`] restores the buffered
    /// writes to. Locks are not affected.
    pub fn savepoint(&mut self, id: u64) {
        self.marks.push(Mark {
            id,
            undo: self.undo.len(),
            meta: self.meta.len(),
        });
    }

    /// Undoes every write buffered after savepoint `id` (the newest with that number) and drops
    /// the savepoints taken after it, keeping it; `None` undoes every write of the transaction
    /// and drops every savepoint. Every lock is kept (see the module notes). An unknown
    /// savepoint is refused and changes nothing.
    pub fn rollback_to(&mut self, id: Option<u64>) -> Result<()> {
        let Some(id) = id else {
            self.writes.clear();
            self.meta.clear();
            self.undo.clear();
            self.marks.clear();
            return Ok(());
        };
        let at = self.mark(id)?;
        let mark = self.marks[at];
        while self.undo.len() > mark.undo {
            let Some((key, before)) = self.undo.pop() else {
                break;
            };
            match before {
                Some(v) => self.writes.insert(key, v),
                None => self.writes.remove(&key),
            };
        }
        self.meta.truncate(mark.meta);
        self.marks.truncate(at + 1);
        Ok(())
    }

    /// Drops savepoint `id` (the newest with that number) and the ones taken after it; the
    /// writes stay. An unknown savepoint is refused and changes nothing.
    pub fn release(&mut self, id: u64) -> Result<()> {
        let at = self.mark(id)?;
        self.marks.truncate(at);
        if self.marks.is_empty() {
            self.undo.clear();
        }
        Ok(())
    }

    /// Whether savepoint `id` exists.
    pub fn has_savepoint(&self, id: u64) -> bool {
        self.marks.iter().any(|m| m.id == id)
    }

    fn mark(&self, id: u64) -> Result<usize> {
        self.marks.iter().rposition(|m| m.id == id).ok_or_else(|| {
            Error::sql(
                sqlstate::INVALID_SAVEPOINT_SPECIFICATION,
                format!("savepoint {id} does not exist in transaction {}", self.id),
            )
        })
    }

    async fn lock_for_write(&mut self, table: u32, key: &[u8]) -> Result<()> {
        self.lock(Resource::Table(table), LockMode::IntentionExclusive)
            .await?;
        self.lock(Resource::Row(table, key.to_vec()), LockMode::Exclusive)
            .await
    }

    /// Buffers a write to the meta space (catalog changes), committed with the rows.
    pub fn put_meta(&mut self, write: Write) {
        self.meta.push(write);
    }

    /// Commits: one log entry with every buffered write, durable before this returns; then
    /// releases the locks.
    pub async fn commit(self) -> Result<()> {
        self.commit_then(|| {}).await
    }

    /// Commits, running `on_durable` after the commit is durable and before the locks are
    /// released (so nothing waiting on them sees the state in between).
    ///
    /// Once the commit is submitted it runs to the end in its own task: if the caller stops
    /// waiting (its connection died), the commit still finishes and the locks are still
    /// released.
    pub async fn commit_then(self, on_durable: impl FnOnce() + Send + 'static) -> Result<()> {
        self.commit_with(Vec::new(), on_durable).await
    }

    /// Takes the buffered writes out of the transaction, as engine writes; the locks stay.
    pub fn take_writes(&mut self) -> Vec<Write> {
        let mut writes: Vec<Write> = std::mem::take(&mut self.meta);
        self.undo.clear();
        self.marks.clear();
        for (k, v) in std::mem::take(&mut self.writes) {
            writes.push(match v {
                Some(v) => Write::Put(Space::Data, k, v),
                None => Write::Delete(Space::Data, k),
            });
        }
        writes
    }

    /// Marks the transaction prepared: it takes no more locks, so others may wait for it
    /// without wait-die making them give up, and it is never the victim of a deadlock.
    pub fn mark_prepared(&self) {
        self.mgr.locks.mark_prepared(self.id);
    }

    /// Writes `writes` as one durable log entry while the transaction keeps its locks and
    /// buffered writes (a two-phase commit's `Prepared` entry).
    pub async fn log_keeping_locks(&self, writes: Vec<Write>) -> Result<()> {
        self.mgr
            .store
            .committer
            // epoch: 1 until shard epochs reach the committer.
            .commit(self.id, writes)
            .await
            .map(|_| ())
    }

    /// Commits the buffered writes together with `extra` writes in one log entry (a two-phase
    /// commit's record), running `on_durable` before the locks are released.
    pub async fn commit_with(
        mut self,
        extra: Vec<Write>,
        on_durable: impl FnOnce() + Send + 'static,
    ) -> Result<()> {
        self.finished = true;
        if !self.has_writes() && extra.is_empty() {
            on_durable();
            self.mgr.locks.release_all(self.id);
            return Ok(());
        }
        let mut writes = self.take_writes();
        writes.extend(extra);
        let (mgr, id) = (self.mgr.clone(), self.id);
        // epoch: 1 until shard epochs reach the committer.
        let (rx, failed) = match mgr.store.committer.submit_watched(id, writes) {
            Ok(pair) => pair,
            Err(e) => {
                mgr.locks.release_all(id);
                return Err(e);
            }
        };
        let finish = tokio::spawn(async move {
            let result = match rx.await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(Error::Io("the committer stopped before answering".into())),
            };
            if result.is_ok() {
                on_durable();
            }
            mgr.locks.release_all(id);
            result
        });
        // Replication may say first that the entry cannot commit for now: the client hears
        // it (40003) while the commit task keeps the locks until the entry is applied or
        // dropped.
        tokio::select! {
            done = finish => done.map_err(|e| Error::Internal(format!("commit task: {e}")))?,
            Ok(e) = failed => Err(e),
        }
    }

    /// Rolls back: discards the writes and releases the locks.
    pub fn rollback(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.writes.clear();
            self.meta.clear();
            self.undo.clear();
            self.marks.clear();
            self.mgr.locks.release_all(self.id);
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager() -> Arc<TxnManager> {
        let store = Arc::new(Store::memory().unwrap());
        Arc::new(TxnManager::new(store, Duration::from_millis(100)))
    }

    fn row(k: u8) -> Vec<u8> {
        let mut key = keycode::table_prefix(1).to_vec();
        key.extend_from_slice(&[0; 8]);
        key.push(k);
        key
    }

    async fn read(t: &mut Transaction, k: u8) -> Option<Vec<u8>> {
        t.get(1, &row(k), Intent::Read).await.unwrap()
    }

    #[tokio::test]
    async fn rollback_to_a_savepoint_restores_the_writes_as_they_were_at_it() {
        let mgr = manager();
        let mut t = mgr.begin(None);
        t.put(1, row(1), b"a".to_vec()).await.unwrap();
        t.savepoint(1);
        t.put(1, row(1), b"b".to_vec()).await.unwrap();
        t.put(1, row(2), b"c".to_vec()).await.unwrap();
        t.delete(1, row(1)).await.unwrap();
        t.rollback_to(Some(1)).unwrap();
        assert_eq!(read(&mut t, 1).await, Some(b"a".to_vec()));
        assert_eq!(read(&mut t, 2).await, None);
        // The savepoint stays: writes after it can be undone again.
        t.put(1, row(3), b"d".to_vec()).await.unwrap();
        t.rollback_to(Some(1)).unwrap();
        assert_eq!(read(&mut t, 3).await, None);
        t.commit().await.unwrap();
        let mut r = mgr.begin(None);
        assert_eq!(read(&mut r, 1).await, Some(b"a".to_vec()));
        assert_eq!(read(&mut r, 2).await, None);
    }

    #[tokio::test]
    async fn nested_savepoints_unwind_to_the_one_named_and_drop_the_newer_ones() {
        let mgr = manager();
        let mut t = mgr.begin(None);
        t.savepoint(1);
        t.put(1, row(1), b"a".to_vec()).await.unwrap();
        t.savepoint(2);
        t.put(1, row(2), b"b".to_vec()).await.unwrap();
        t.savepoint(3);
        t.put(1, row(3), b"c".to_vec()).await.unwrap();
        t.rollback_to(Some(2)).unwrap();
        assert!(!t.has_savepoint(3));
        assert!(t.has_savepoint(2));
        assert_eq!(read(&mut t, 1).await, Some(b"a".to_vec()));
        assert_eq!(read(&mut t, 2).await, None);
        assert!(t.rollback_to(Some(3)).is_err());
        t.rollback_to(Some(1)).unwrap();
        assert!(!t.has_writes());
    }

    #[tokio::test]
    async fn release_keeps_the_writes_and_a_repeated_number_means_the_newest() {
        let mgr = manager();
        let mut t = mgr.begin(None);
        t.savepoint(7);
        t.put(1, row(1), b"a".to_vec()).await.unwrap();
        t.savepoint(7);
        t.put(1, row(2), b"b".to_vec()).await.unwrap();
        // The newest 7: only the second write goes.
        t.rollback_to(Some(7)).unwrap();
        assert_eq!(read(&mut t, 1).await, Some(b"a".to_vec()));
        assert_eq!(read(&mut t, 2).await, None);
        t.release(7).unwrap();
        assert!(t.has_savepoint(7));
        t.release(7).unwrap();
        assert!(!t.has_savepoint(7));
        let err = t.release(7).unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::INVALID_SAVEPOINT_SPECIFICATION);
        assert_eq!(read(&mut t, 1).await, Some(b"a".to_vec()));
    }

    #[tokio::test]
    async fn rollback_to_a_savepoint_keeps_the_locks_taken_after_it() {
        let mgr = manager();
        let mut t = mgr.begin(None);
        t.savepoint(1);
        t.put(1, row(1), b"a".to_vec()).await.unwrap();
        t.rollback_to(Some(1)).unwrap();
        // Another writer of the row still waits, and gives up at its lock timeout.
        let mut other = mgr.begin(None);
        other.set_lock_timeout(Some(Duration::from_millis(50)));
        assert!(other.put(1, row(1), b"b".to_vec()).await.is_err());
        drop(other);
        t.rollback();
        let mut other = mgr.begin(None);
        other.put(1, row(1), b"b".to_vec()).await.unwrap();
    }

    #[tokio::test]
    async fn rollback_to_the_start_undoes_every_write() {
        let mgr = manager();
        let mut t = mgr.begin(None);
        t.put(1, row(1), b"a".to_vec()).await.unwrap();
        t.savepoint(1);
        t.put(1, row(2), b"b".to_vec()).await.unwrap();
        t.rollback_to(None).unwrap();
        assert!(!t.has_writes());
        assert!(!t.has_savepoint(1));
    }
}
