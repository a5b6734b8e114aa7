//! The storage engine boundary.
//!
//! ddb stores everything in an embedded, ordered key-value engine with several keyspaces
//! ([`Space`]) and atomic batches across them. [`Engine`] is the small trait that the rest of the
//! node uses; [`crate::storage::disk::Disk`] implements it on `fjall`, and [`Memory`] implements it
//! on B-trees for unit tests. Nothing above this trait knows which engine it runs on.
//!
//! Durability is explicit: [`Engine::write`] makes a batch visible atomically, and
//! [`Engine::persist`] makes every write so far durable (fsync). The commit path calls `persist`
//! once for a whole group of commits (group commit).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

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

/// One write of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    Put(Space, Vec<u8>, Vec<u8>),
    Delete(Space, Vec<u8>),
}

/// A key-value pair read from the engine.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An ordered, transactional key-value store with keyspaces.
pub trait Engine: Send + Sync {
    /// Reads one key.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Reads every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Vec<KeyValue>>;

    /// Reads every pair in a key range, in key order, stopping after `limit` pairs.
    fn scan_range(
        &self,
        space: Space,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<KeyValue>>;

    /// Applies the writes atomically: after a crash either all of them are there or none.
    fn write(&self, writes: Vec<Write>) -> Result<()>;

    /// Makes every write applied so far durable (fsync).
    fn persist(&self) -> Result<()>;
}

/// An in-memory engine for unit tests. Not durable.
#[derive(Default)]
pub struct Memory {
    spaces: RwLock<MemoryMap>,
}

/// The memory engine's contents: (space, key) → value, in key order.
type MemoryMap = BTreeMap<(Space, Vec<u8>), Vec<u8>>;

impl Memory {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> Error {
    Error::Internal("memory engine lock poisoned".into())
}

impl Engine for Memory {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let map = self.spaces.read().map_err(|_| poisoned())?;
        Ok(map.get(&(space, key.to_vec())).cloned())
    }

    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let map = self.spaces.read().map_err(|_| poisoned())?;
        Ok(map
            .range((space, prefix.to_vec())..)
            .take_while(|((s, k), _)| *s == space && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_range(
        &self,
        space: Space,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<KeyValue>> {
        let map = self.spaces.read().map_err(|_| poisoned())?;
        let lo = match start {
            Bound::Included(k) => Bound::Included((space, k)),
            Bound::Excluded(k) => Bound::Excluded((space, k)),
            Bound::Unbounded => Bound::Included((space, Vec::new())),
        };
        let hi = match end {
            Bound::Included(k) => Bound::Included((space, k)),
            Bound::Excluded(k) => Bound::Excluded((space, k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(map
            .range((lo, hi))
            .take_while(|((s, _), _)| *s == space)
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write(&self, writes: Vec<Write>) -> Result<()> {
        let mut map = self.spaces.write().map_err(|_| poisoned())?;
        for w in writes {
            match w {
                Write::Put(s, k, v) => {
                    map.insert((s, k), v);
                }
                Write::Delete(s, k) => {
                    map.remove(&(s, k));
                }
            }
        }
        Ok(())
    }

    fn persist(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_scans_stay_inside_their_space_and_prefix() {
        let m = Memory::new();
        m.write(vec![
            Write::Put(Space::Data, b"a1".to_vec(), b"x".to_vec()),
            Write::Put(Space::Data, b"a2".to_vec(), b"y".to_vec()),
            Write::Put(Space::Data, b"b1".to_vec(), b"z".to_vec()),
            Write::Put(Space::Meta, b"a3".to_vec(), b"w".to_vec()),
        ])
        .unwrap();
        let rows = m.scan_prefix(Space::Data, b"a").unwrap();
        assert_eq!(rows.len(), 2);
        let rows = m
            .scan_range(
                Space::Data,
                Bound::Excluded(b"a1".to_vec()),
                Bound::Unbounded,
                10,
            )
            .unwrap();
        assert_eq!(
            rows.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
            vec![b"a2".to_vec(), b"b1".to_vec()]
        );
        m.write(vec![Write::Delete(Space::Data, b"a1".to_vec())])
            .unwrap();
        assert_eq!(m.get(Space::Data, b"a1").unwrap(), None);
    }
}
