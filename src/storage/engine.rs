//! The storage engine boundary.
//!
//! ddb stores everything in an embedded, ordered key-value engine with several keyspaces
//! ([`Space`]) and atomic batches across them. [`Engine`] is the small trait that the rest of the
//! node uses; [`crate::storage::disk::Disk`] implements it on `fjall`, and [`Memory`] implements it
//! on a B-tree for unit tests. Nothing above this trait knows which engine it runs on, and both
//! engines pass the same test suite (`storage/suite.rs`).
//!
//! Reads come in three shapes:
//!
//! * [`Engine::get`] reads one key.
//! * [`Engine::scan_prefix`] and [`Engine::scan_range`] return a [`Scan`]: an iterator that pulls
//!   pairs in key order as the caller asks for them, so a caller that wants the first few pairs
//!   (`.take(n)`), or streams a whole range to a peer, never holds the range in memory. A scan is
//!   a point-in-time view: it sees the store as it was when the scan began, and the caller may
//!   write to the engine while it iterates (a scan holds no lock that a write would wait for).
//! * [`Engine::snapshot`] returns a [`Snapshot`]: the same reads, at one point in time, across
//!   every space. It is what a replication snapshot (DESIGN §6.1) and a range move (§8) copy
//!   from: the `data` and `txn` spaces at one LSN, while the node keeps committing.
//!
//! Writes are batches of [`Write`]s, applied in order and atomically: a reader (a scan, a
//! snapshot) sees all of a batch or none of it, and after a crash either all of it is there or
//! none. [`Write::DeleteRange`] removes a key range in the same batch, which is how a range move
//! cleans up its source in one step (§8).
//!
//! Durability is explicit: [`Engine::write`] makes a batch visible atomically, and
//! [`Engine::persist`] makes every write so far durable (fsync). The commit path calls `persist`
//! once for a whole group of commits (group commit).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A keyspace of the node's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Space {
    /// Table rows, under `table_id | token | pk`.
    Data,
    /// The commit log: LSN (8 bytes big-endian) → log entry.
    Log,
    /// Transaction records of two-phase commit.
    Txn,
    /// Node metadata: the catalog, the applied LSN, sequences, the cluster identity.
    Meta,
    /// The Raft log, vote and state of the cluster map's consensus group.
    Raft,
}

impl Space {
    /// Every space, in a fixed order.
    pub const ALL: [Space; 5] = [
        Space::Data,
        Space::Log,
        Space::Txn,
        Space::Meta,
        Space::Raft,
    ];

    /// The keyspace's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Space::Data => "data",
            Space::Log => "log",
            Space::Txn => "txn",
            Space::Meta => "meta",
            Space::Raft => "raft",
        }
    }
}

/// One write of a batch. A batch applies its writes in order, so a later write to a key wins.
/// Keys are 1 to [`MAX_KEY`] bytes long (fjall's limits); an engine refuses a batch with any
/// other key as a whole, before it writes anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    /// Sets a key to a value.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Removes a key, if it is there.
    Delete(Space, Vec<u8>),
    /// Removes every key between the bounds: exactly the keys that
    /// [`Engine::scan_range`] with the same bounds would return at this point of the batch,
    /// including keys put earlier in the same batch. A later `Put` in the batch is kept.
    DeleteRange(Space, Bound<Vec<u8>>, Bound<Vec<u8>>),
}

impl Write {
    /// The space the write goes to.
    pub fn space(&self) -> Space {
        match self {
            Write::Put(s, ..) | Write::Delete(s, _) | Write::DeleteRange(s, ..) => *s,
        }
    }
}

/// The longest key an engine takes, in bytes.
pub const MAX_KEY: usize = u16::MAX as usize;

/// The longest value an engine takes, in bytes (fjall's value lengths are 32 bits).
pub const MAX_VALUE: usize = u32::MAX as usize;

/// A key-value pair read from the engine.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The pairs of a scan, in key order, pulled as the caller iterates. A read error ends the
/// scan: it is the last item.
pub type Scan<'a> = Box<dyn Iterator<Item = Result<KeyValue>> + Send + 'a>;

/// An ordered, transactional key-value store with keyspaces.
pub trait Engine: Send + Sync {
    /// Reads one key.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Scans every pair whose key starts with `prefix`, in key order. An empty prefix scans the
    /// whole space.
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Scan<'_>;

    /// Scans every pair whose key lies between the bounds, in key order. Bounds that enclose
    /// nothing (start after end) give an empty scan. Limit it with `.take(n)`.
    fn scan_range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_>;

    /// A read-only view of every space at this moment, unaffected by later writes. It keeps old
    /// versions alive while it lives, so hold it for one copy, not for the life of the node.
    fn snapshot(&self) -> Result<Box<dyn Snapshot>>;

    /// How many keys a space holds: a statistic for status output (`ddb status` shows a
    /// node's rows as the keys of [`Space::Data`]). It reads the whole space, so it costs what
    /// a scan costs; neither engine keeps an exact count on the side.
    fn count(&self, space: Space) -> Result<u64> {
        self.scan_prefix(space, &[]).map(|kv| kv.map(|_| 1)).sum()
    }

    /// Applies the writes in order and atomically: readers see all of them or none, and after a
    /// crash either all of them are there or none.
    fn write(&self, writes: Vec<Write>) -> Result<()>;

    /// Makes every write applied so far durable (fsync).
    fn persist(&self) -> Result<()>;
}

/// A consistent, read-only view of an engine at one point in time, across every space (see
/// [`Engine::snapshot`]). The reads mean what they mean on [`Engine`].
pub trait Snapshot: Send + Sync {
    /// Reads one key as of the snapshot.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Scans every pair whose key starts with `prefix`, as of the snapshot.
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Scan<'_>;

    /// Scans every pair whose key lies between the bounds, as of the snapshot.
    fn scan_range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_>;
}

/// Whether an engine can store `key`: 1 to [`MAX_KEY`] bytes. A read of any other key finds
/// nothing (fjall panics on one).
pub(crate) fn storable_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY
}

/// Refuses a batch that writes a key no engine can store: empty, or longer than [`MAX_KEY`].
/// Both engines call it on the whole batch first, so such a batch writes nothing (fjall would
/// panic on the key halfway through building its batch).
pub(crate) fn check_keys(writes: &[Write]) -> Result<()> {
    for w in writes {
        let (Write::Put(_, k, _) | Write::Delete(_, k)) = w else {
            continue;
        };
        if k.is_empty() || k.len() > MAX_KEY {
            return Err(Error::InvalidInput(format!(
                "a key of {} bytes cannot be stored: keys are 1 to {MAX_KEY} bytes",
                k.len()
            )));
        }
    }
    Ok(())
}

/// Whether the bounds enclose no key at all: start after end, or equal with either excluded.
/// Both engines check it first, because `BTreeMap::range` panics on such bounds.
pub(crate) fn encloses_nothing(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e))
        | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
        _ => false,
    }
}

/// Ends `scan` at its first error, as [`Scan`] promises: an engine's own iterator might go on
/// after a failed read, and a caller who takes `.last()` would never see the error.
pub(crate) fn end_at_error<'a>(
    scan: impl Iterator<Item = Result<KeyValue>> + Send + 'a,
) -> Scan<'a> {
    Box::new(scan.scan(false, |failed, item| {
        if *failed {
            return None;
        }
        *failed = item.is_err();
        Some(item)
    }))
}

/// The exclusive end of the keys that start with `prefix`: the prefix with its last byte below
/// 0xff incremented and what follows it dropped. Unbounded when there is no such byte.
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    match prefix.iter().rposition(|&b| b != 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            Bound::Excluded(end)
        }
        None => Bound::Unbounded,
    }
}

/// An in-memory engine for unit tests. Not durable.
///
/// The map sits behind an `Arc`, copied on write: a scan or a snapshot takes a reference to the
/// map as it is (under the lock, for an instant) and reads it without the lock, and a write
/// copies the map first only if such a reader still holds it. That is what gives the memory
/// engine the two properties of fjall's that callers rely on, point-in-time scans and scans
/// that do not block writes (an iterator that held the read lock would deadlock a caller who
/// writes while iterating), at the price of a copy of the store per write under a live reader:
/// fine for tests, which is all this engine is for.
#[derive(Default)]
pub struct Memory {
    map: RwLock<Arc<MemoryMap>>,
}

/// The memory engine's contents: (space, key) → value, in key order.
type MemoryMap = BTreeMap<(Space, Vec<u8>), Vec<u8>>;

impl Memory {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map as it is now, for a reader.
    fn current(&self) -> Result<Arc<MemoryMap>> {
        Ok(self.map.read().map_err(|_| poisoned())?.clone())
    }
}

fn poisoned() -> Error {
    Error::Internal("memory engine lock poisoned".into())
}

impl Engine for Memory {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let map = self.map.read().map_err(|_| poisoned())?;
        Ok(map.get(&(space, key.to_vec())).cloned())
    }

    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        self.scan_range(space, Bound::Included(prefix.to_vec()), prefix_end(prefix))
    }

    fn scan_range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_> {
        match self.current() {
            Ok(map) => Box::new(MemoryScan::new(map, space, start, end)),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>> {
        Ok(Box::new(MemorySnapshot(self.current()?)))
    }

    fn write(&self, writes: Vec<Write>) -> Result<()> {
        check_keys(&writes)?;
        let mut guard = self.map.write().map_err(|_| poisoned())?;
        // Copies the map if a scan or a snapshot still reads it; they keep the old one.
        let map = Arc::make_mut(&mut guard);
        for w in writes {
            match w {
                Write::Put(s, k, v) => {
                    map.insert((s, k), v);
                }
                Write::Delete(s, k) => {
                    map.remove(&(s, k));
                }
                Write::DeleteRange(s, start, end) => {
                    let doomed: Vec<_> = MemoryScan::keys(map, s, start, end).collect();
                    for k in doomed {
                        map.remove(&(s, k));
                    }
                }
            }
        }
        Ok(())
    }

    fn persist(&self) -> Result<()> {
        Ok(())
    }
}

/// A snapshot of the memory engine: the map as it was, kept alive by its `Arc`.
struct MemorySnapshot(Arc<MemoryMap>);

impl Snapshot for MemorySnapshot {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.0.get(&(space, key.to_vec())).cloned())
    }

    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        self.scan_range(space, Bound::Included(prefix.to_vec()), prefix_end(prefix))
    }

    fn scan_range(&self, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan<'_> {
        Box::new(MemoryScan::new(self.0.clone(), space, start, end))
    }
}

/// A lazy scan of one space of a memory map. It owns its map (an `Arc`), so it cannot hold a
/// borrowing B-tree iterator; it keeps the last key it returned and seeks past it for the next
/// one, one O(log n) lookup per pair.
struct MemoryScan {
    map: Arc<MemoryMap>,
    space: Space,
    /// Where the next pair starts: the scan's start, then just past the last key returned.
    from: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    done: bool,
}

impl MemoryScan {
    fn new(map: Arc<MemoryMap>, space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Self {
        let done = encloses_nothing(&start, &end);
        Self {
            map,
            space,
            from: start,
            end,
            done,
        }
    }

    /// The keys of `space` between the bounds in `map`, borrowed (for a range delete).
    fn keys(
        map: &MemoryMap,
        space: Space,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    ) -> impl Iterator<Item = Vec<u8>> + '_ {
        let range = if encloses_nothing(&start, &end) {
            None
        } else {
            Some(map.range(space_bounds(space, start, end)))
        };
        range
            .into_iter()
            .flatten()
            .take_while(move |((s, _), _)| *s == space)
            .map(|((_, k), _)| k.clone())
    }
}

/// A bound in the memory map, whose keys are (space, key).
type MapBound = Bound<(Space, Vec<u8>)>;

/// Bounds over (space, key) for key bounds inside one space. An unbounded end runs past the
/// space; the readers stop at the first key of another space.
fn space_bounds(space: Space, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> (MapBound, MapBound) {
    let lo = match start {
        Bound::Included(k) => Bound::Included((space, k)),
        Bound::Excluded(k) => Bound::Excluded((space, k)),
        Bound::Unbounded => Bound::Included((space, Vec::new())),
    };
    (lo, end.map(|k| (space, k)))
}

impl Iterator for MemoryScan {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || encloses_nothing(&self.from, &self.end) {
            return None;
        }
        let range = space_bounds(self.space, self.from.clone(), self.end.clone());
        match self.map.range(range).next() {
            Some(((s, k), v)) if *s == self.space => {
                self.from = Bound::Excluded(k.clone());
                Some(Ok((k.clone(), v.clone())))
            }
            _ => {
                self.done = true;
                None
            }
        }
    }
}
