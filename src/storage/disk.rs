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

use std::ops::Bound;
use std::path::Path;
use std::sync::RwLock;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use super::engine::{
    check_keys, encloses_nothing, end_at_error, storable_key, Engine, KeyValue, Scan, Snapshot,
    Space, Write,
};
use crate::error::Result;

/// A fjall database with one keyspace per [`Space`].
pub struct Disk {
    db: Database,
    spaces: [Keyspace; 5],
    /// Held exclusively by a batch with a range delete, shared by every other batch.
    range_deletes: RwLock<()>,
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
        })
    }

    fn space(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }

    /// A fjall snapshot with the keyspaces to read it through.
    fn view(&self) -> DiskSnapshot {
        DiskSnapshot {
            snapshot: self.db.snapshot(),
            spaces: self.spaces.clone(),
        }
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
        for w in writes {
            match w {
                Write::Put(s, k, v) => {
                    if deletes_ranges {
                        put.push((s, k.clone()));
                    }
                    batch.insert(self.space(s), k, v);
                }
                Write::Delete(s, k) => batch.remove(self.space(s), k),
                Write::DeleteRange(s, start, end) => {
                    if encloses_nothing(&start, &end) {
                        continue;
                    }
                    let range = (start, end);
                    for guard in self.space(s).range::<Vec<u8>, _>(range.clone()) {
                        batch.remove(self.space(s), guard.key()?);
                    }
                    for (_, k) in put
                        .iter()
                        .filter(|(ps, k)| *ps == s && std::ops::RangeBounds::contains(&range, k))
                    {
                        // A key removed twice in a batch is removed once: the later write wins.
                        batch.remove(self.space(s), k.clone());
                    }
                }
            }
        }
        batch.commit()?;
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
}

impl DiskSnapshot {
    fn space(&self, space: Space) -> &Keyspace {
        &self.spaces[space as usize]
    }

    // fjall's iterators own what they read (they hold the snapshot open themselves), so the
    // scans borrow nothing and outlive the view they came from.

    fn prefix(&self, space: Space, prefix: &[u8]) -> Scan<'static> {
        end_at_error(self.snapshot.prefix(self.space(space), prefix).map(pair))
    }

    fn range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'static> {
        if encloses_nothing(&start, &end) {
            return Box::new(std::iter::empty());
        }
        end_at_error(
            self.snapshot
                .range::<Vec<u8>, _>(self.space(space), (start, end))
                .map(pair),
        )
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
