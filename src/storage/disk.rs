//! The on-disk engine: [`Engine`] on `fjall`, an LSM tree with atomic batches across keyspaces.
//!
//! Each [`Space`] is one fjall keyspace. A batch is committed with fjall's write batch, which is
//! atomic across keyspaces; durability comes from [`Engine::persist`], which fsyncs fjall's
//! journal (`PersistMode::SyncAll`). fjall flushes only to OS buffers on its own, so nothing is
//! acknowledged to a client before the committer has called `persist`.
//!
//! Reads go through fjall's snapshots. Every batch gets one sequence number, and a fjall
//! snapshot reads every keyspace as of one sequence number, so [`Engine::snapshot`] is fjall's
//! cross-keyspace snapshot as it is. Scans read through a snapshot too, taken when the scan
//! starts: a plain keyspace iterator reads at the newest sequence number and could see a batch
//! committed halfway through the scan. The iterators are fjall's own, pulled lazily.
//!
//! Range deletes are ours. fjall 3.1 has no range tombstone: its batch knows puts and point
//! removals, and lsm-tree's `drop_range` only drops whole tables that lie inside the range (not
//! the memtable, not the edges), outside any batch and under the feet of live snapshots. So
//! [`Write::DeleteRange`] becomes a scan of the range and one point removal per key, in the same
//! fjall batch as the rest of the writes: atomic, but it costs one tombstone per key. A batch
//! with a range delete takes the write lock of `range_deletes` for its scan and commit, and every
//! other batch takes the read lock, so no key can land in the range between the scan and the
//! commit; batches without range deletes still commit concurrently.
//!
//! A scan walks every version its range holds in fjall's memtable, so after each batch the
//! engine counts the versions it wrote per memtable and rotates a memtable that holds too many
//! shadowed ones (`storage::shadowed`): the flush keeps the newest version of each key, and a
//! scan's cost follows the rows it returns rather than how often they were rewritten. It
//! rotates only while no snapshot or scan of the engine is open, and takes no snapshot while a
//! batch is being committed (`Readers`): fjall's flush can drop a version that an open
//! snapshot still needs, and can make a half-inserted batch visible.
//!
//! A batch is committed on a thread of the engine's own (`Commits`), and the caller waits for
//! it while it watches fjall's poison flag: when a background flush fails (a full disk), fjall
//! poisons the database but a batch that meets its write stall (four sealed memtables waiting
//! for that flush) sleeps in `local_backpressure` for good. The caller then gets the poison
//! error instead of waiting with it, so its client is told why and the committer stops the node
//! as after any failed write; the stuck thread goes with the process.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::Duration;

use fjall::{AbstractTree, Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::engine::{
    check_keys, encloses_nothing, end_at_error, storable_key, Engine, KeyValue, Scan, Snapshot,
    Space, Write,
};
use super::shadowed::{Shadowed, Version};
use crate::error::Result;

/// How often a caller waiting for its batch checks whether fjall has poisoned the database.
const POISON_CHECK: Duration = Duration::from_millis(250);

/// A batch commit handed to the commit thread, with where its result goes.
type CommitJob = Box<dyn FnOnce() + Send>;

/// The engine's commit thread: fjall's `WriteBatch::commit` runs there, so that a caller can
/// stop waiting for a commit stuck in fjall's write stall (see the module docs).
struct Commits {
    jobs: mpsc::Sender<CommitJob>,
}

impl Commits {
    fn start() -> Result<Self> {
        let (jobs, inbox) = mpsc::channel::<CommitJob>();
        std::thread::Builder::new()
            .name("ddb-fjall-commit".into())
            .spawn(move || {
                for job in inbox {
                    job();
                }
            })
            .map_err(|e| crate::error::Error::Io(format!("cannot start the commit thread: {e}")))?;
        Ok(Self { jobs })
    }

    /// Commits `batch` under `readers.commits` (shared) on the commit thread and waits for it,
    /// or for `db` to be poisoned, whichever comes first.
    fn commit(
        &self,
        db: &Database,
        readers: &Arc<Readers>,
        batch: fjall::OwnedWriteBatch,
    ) -> Result<()> {
        let (reply, answer) = mpsc::channel();
        let readers = readers.clone();
        let job: CommitJob = Box::new(move || {
            let commit = std::panic::AssertUnwindSafe(|| {
                let _committing = readers.commits.read().unwrap_or_else(|e| e.into_inner());
                batch.commit().map_err(crate::error::Error::from)
            });
            let result = std::panic::catch_unwind(commit).unwrap_or_else(|_| {
                Err(crate::error::Error::Internal(
                    "the storage engine panicked in a commit".into(),
                ))
            });
            let _ = reply.send(result);
        });
        let sent = self.jobs.send(job);
        if sent.is_err() {
            return Err(crate::error::Error::Internal(
                "the storage engine's commit thread is gone".into(),
            ));
        }
        loop {
            match answer.recv_timeout(POISON_CHECK) {
                Ok(result) => return result,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // `Buffer` only flushes fjall's journal buffer to the OS, after checking
                    // the poison flag; the stalled commit does not hold the journal.
                    db.persist(PersistMode::Buffer)?;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(crate::error::Error::Internal(
                        "the storage engine's commit thread is gone".into(),
                    ))
                }
            }
        }
    }
}

/// The snapshots and scans of the engine that are open. A reader registers under the gate's
/// read lock before it takes its fjall snapshot and leaves when it is dropped; a rotation
/// holds the write lock while it checks that none is open and rotates, so no snapshot can be
/// taken in between.
///
/// `commits` closes a hole in fjall 3.1.13: a flush or compaction that installs its tables
/// takes a sequence number of its own and makes it visible at once, even while a batch with an
/// older sequence number is still being inserted into its keyspaces' memtables. A snapshot
/// taken then would see part of that batch (the engine suite's cross-space snapshot test
/// caught it). Every batch holds `commits` shared while fjall commits it, and a snapshot is
/// taken under it exclusively, so no batch is ever half in a snapshot.
#[derive(Default)]
struct Readers {
    open: AtomicUsize,
    gate: RwLock<()>,
    commits: RwLock<()>,
}

/// One open reader, counted in [`Readers`] until it is dropped.
struct Reader(Arc<Readers>);

impl Reader {
    /// Registers a reader and takes its fjall snapshot, with no rotation in between.
    fn open(readers: &Arc<Readers>, db: &Database) -> (Self, fjall::Snapshot) {
        let _gate = readers.gate.read().unwrap_or_else(|e| e.into_inner());
        readers.open.fetch_add(1, Ordering::SeqCst);
        let reader = Self(readers.clone());
        let _no_batch_halfway = readers.commits.write().unwrap_or_else(|e| e.into_inner());
        (reader, db.snapshot())
    }

    /// Another registration for a reader that holds the same snapshot (a scan of a snapshot).
    fn also(&self) -> Self {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        Self(self.0.clone())
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A scan that keeps its reader registered until it is dropped.
struct Tracked {
    scan: Scan<'static>,
    _reader: Reader,
}

impl Iterator for Tracked {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        self.scan.next()
    }
}

/// A fjall database with one keyspace per [`Space`].
pub struct Disk {
    db: Database,
    spaces: [Keyspace; 5],
    /// Held exclusively by a batch with a range delete, shared by every other batch.
    range_deletes: RwLock<()>,
    /// The versions in each space's active memtable, to know when to rotate it.
    shadowed: [Mutex<Shadowed>; 5],
    /// The snapshots and scans open, which a rotation waits out.
    readers: Arc<Readers>,
    /// Where batches are committed.
    commits: Commits,
}

impl Disk {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let db = Database::builder(dir).open()?;
        let open = |s: Space| db.keyspace(s.name(), KeyspaceCreateOptions::default);
        let spaces = [
            open(Space::Data)?,
            open(Space::Log)?,
            open(Space::Txn)?,
            open(Space::Meta)?,
            open(Space::Raft)?,
        ];
        Ok(Self {
            db,
            spaces,
            range_deletes: RwLock::new(()),
            shadowed: Default::default(),
            readers: Arc::default(),
            commits: Commits::start()?,
        })
    }

    fn space(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }

    /// A fjall snapshot with the keyspaces to read it through.
    fn view(&self) -> DiskSnapshot {
        let (reader, snapshot) = Reader::open(&self.readers, &self.db);
        DiskSnapshot {
            snapshot,
            spaces: self.spaces.clone(),
            reader,
        }
    }

    /// Counts the versions a committed batch wrote to each space's memtable, and rotates a
    /// memtable that holds too many shadowed versions (see [`super::shadowed`]) if no reader is
    /// open; otherwise a later batch does. fjall flushes the sealed memtable in the background;
    /// until then scans read it as before.
    fn count_versions(&self, written: &[(Space, Version)]) {
        for space in Space::ALL {
            let mut versions = written
                .iter()
                .filter(|(s, _)| *s == space)
                .map(|(_, v)| *v)
                .peekable();
            if versions.peek().is_none() {
                continue;
            }
            let keyspace = self.space(space);
            // The count is bookkeeping: a panic elsewhere while holding it leaves it usable.
            let mut shadowed = self.shadowed[space as usize]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !shadowed.record(keyspace.tree.active_memtable().id(), versions) {
                continue;
            }
            let _gate = self.readers.gate.write().unwrap_or_else(|e| e.into_inner());
            if self.readers.open.load(Ordering::SeqCst) > 0 {
                continue;
            }
            // The batch is committed whatever happens here: a failed rotation costs scan
            // time, never data, so it is reported and not returned.
            match keyspace.rotate_memtable() {
                Ok(_) => shadowed.rotated(),
                Err(e) => tracing::warn!(
                    "cannot rotate the memtable of space {} ({e}); scans of it slow down",
                    space.name()
                ),
            }
        }
    }

    /// The entries of `space`'s active memtable: what a scan of it walks.
    #[cfg(test)]
    pub(crate) fn memtable_versions(&self, space: Space) -> usize {
        self.space(space).tree.active_memtable().len()
    }

    /// The versions a scan of `space` can walk: every entry of its memtables and tables,
    /// shadowed or not.
    #[cfg(test)]
    pub(crate) fn stored_versions(&self, space: Space) -> usize {
        self.space(space).approximate_len()
    }

    /// The memtables of `space` sealed and not yet flushed, and its tables.
    #[cfg(test)]
    pub(crate) fn sealed_and_tables(&self, space: Space) -> (usize, usize) {
        let tree = &self.space(space).tree;
        (tree.sealed_memtable_count(), tree.table_count())
    }
}

impl Engine for Disk {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !storable_key(key) {
            return Ok(None);
        }
        Ok(self.space(space).get(key)?.map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        self.view().prefix(space, prefix)
    }

    fn scan_range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_> {
        self.view().range(space, start, end)
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(self.view()))
    }

    fn write(&self, writes: Vec<Write>) -> Result<()> {
        check_keys(&writes)?;
        let deletes_ranges = writes.iter().any(|w| matches!(w, Write::DeleteRange(..)));
        // The lock guards no data, so a panic elsewhere while holding it leaves nothing broken.
        let (_shared, _exclusive);
        if deletes_ranges {
            _exclusive = self
                .range_deletes
                .write()
                .unwrap_or_else(|e| e.into_inner());
        } else {
            _shared = self.range_deletes.read().unwrap_or_else(|e| e.into_inner());
        }
        let mut batch = self.db.batch();
        // The keys put so far in this batch, which a range delete must see but a scan of the
        // keyspace does not: the batch is not committed yet. Kept only when needed.
        let mut put = Vec::new();
        // Every put and removal is a version in the memtable.
        let mut written = Vec::with_capacity(writes.len());
        for w in writes {
            match w {
                Write::Put(s, k, v) => {
                    if deletes_ranges {
                        put.push((s, k.clone()));
                    }
                    written.push((s, Version::of(&k)));
                    batch.insert(self.space(s), k, v);
                }
                Write::Delete(s, k) => {
                    written.push((s, Version::of(&k)));
                    batch.remove(self.space(s), k);
                }
                Write::DeleteRange(s, start, end) => {
                    if encloses_nothing(&start, &end) {
                        continue;
                    }
                    let range = (start, end);
                    for guard in self.space(s).range::<Vec<u8>, _>(range.clone()) {
                        let k = guard.key()?;
                        written.push((s, Version::of(&k)));
                        batch.remove(self.space(s), k);
                    }
                    for (_, k) in put
                        .iter()
                        .filter(|(ps, k)| *ps == s && std::ops::RangeBounds::contains(&range, k))
                    {
                        // A key removed twice in a batch is removed once: the later write wins.
                        written.push((s, Version::of(k)));
                        batch.remove(self.space(s), k.clone());
                    }
                }
            }
        }
        self.commits.commit(&self.db, &self.readers, batch)?;
        self.count_versions(&written);
        Ok(())
    }

    fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }
}

/// A fjall snapshot and the keyspaces it reads. Owns both (a keyspace is a shared handle), so
/// it outlives the borrow of the [`Disk`] it came from.
struct DiskSnapshot {
    snapshot: fjall::Snapshot,
    spaces: [Keyspace; 5],
    reader: Reader,
}

impl DiskSnapshot {
    fn space(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }

    // fjall's iterators own what they read (they hold the snapshot open themselves), so the
    // scans borrow nothing and outlive the view they came from.

    fn prefix(&self, space: Space, prefix: &[u8]) -> Scan<'static> {
        self.tracked(self.snapshot.prefix(self.space(space), prefix).map(pair))
    }

    fn range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'static> {
        if encloses_nothing(&start, &end) {
            return Box::new(std::iter::empty());
        }
        self.tracked(
            self.snapshot
                .range::<Vec<u8>, _>(self.space(space), (start, end))
                .map(pair),
        )
    }

    /// A scan that counts as a reader while it lives (it holds the snapshot).
    fn tracked(
        &self,
        scan: impl Iterator<Item = Result<KeyValue>> + Send + 'static,
    ) -> Scan<'static> {
        Box::new(Tracked {
            scan: end_at_error(scan),
            _reader: self.reader.also(),
        })
    }
}

/// Reads a pair out of fjall's guard, copying it out of fjall's buffers.
fn pair(guard: fjall::Guard) -> Result<KeyValue> {
    let (k, v) = guard.into_inner()?;
    Ok((k.to_vec(), v.to_vec()))
}

impl Snapshot for DiskSnapshot {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !storable_key(key) {
            return Ok(None);
        }
        Ok(self
            .snapshot
            .get(self.space(space), key)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        self.prefix(space, prefix)
    }

    fn scan_range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_> {
        self.range(space, start, end)
    }
}
