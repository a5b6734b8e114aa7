//! The read side of a replication snapshot: a shard's `data` and `txn` spaces at one (epoch,
//! LSN), read in bounded batches (DESIGN §6.1, catch-up).
//!
//! A replica whose next entry the primary's log no longer holds is sent a snapshot instead. It
//! must be one consistent view, while the primary keeps committing: a [`ShardSnapshot`] holds
//! one engine snapshot, and reads from it both the rows and the point they stand at, the applied
//! LSN and its epoch, which are written in the same batch as every entry's effects. So the
//! snapshot shows exactly the entries up to [`ShardSnapshot::at`] and none after, and the
//! replica continues the log right after it.
//!
//! It is read in batches bounded by bytes, each resuming after the last key of the one before
//! ([`Cursor`]), so neither side ever holds the shard in memory; the cursor is plain data, so a
//! batch can be asked for in a later request. The install side is in the committer
//! (`Committer::begin_snapshot`, `install_batch`, `finish_snapshot`), which writes it.
//!
//! The engine snapshot keeps old versions alive while it lives (`Engine::snapshot`): hold a
//! `ShardSnapshot` for one transfer, not longer.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::engine::{Engine, Snapshot, Space, Write};
use super::record::{state_of, LogId};
use crate::error::{Error, Result};

/// The spaces a snapshot carries, in the order it carries them.
pub const SNAPSHOT_SPACES: [Space; 2] = [Space::Data, Space::Txn];

/// Where the next batch of a snapshot starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The space being read.
    pub space: Space,
    /// The last key already sent from it, if any.
    pub after: Option<Vec<u8>>,
}

impl Cursor {
    /// The start of a snapshot.
    pub fn start() -> Self {
        Self {
            space: SNAPSHOT_SPACES[0],
            after: None,
        }
    }
}

/// One batch of a snapshot: puts for the install side, and where the next batch starts
/// (`None` when this was the last).
#[derive(Debug)]
pub struct SnapshotBatch {
    pub writes: Vec<Write>,
    pub next: Option<Cursor>,
}

/// One consistent view of a shard's `data` and `txn` spaces and the entry it stands at.
pub struct ShardSnapshot {
    snapshot: Box<dyn Snapshot>,
    at: LogId,
}

impl ShardSnapshot {
    /// Takes the snapshot. Refused on a store that is itself half way through installing one.
    pub fn open(engine: &dyn Engine) -> Result<Self> {
        let snapshot = engine.snapshot()?;
        let state = state_of(snapshot.as_ref())?;
        if state.installing_snapshot {
            return Err(Error::Refused(
                "this store is installing a snapshot itself and has none to give".into(),
            ));
        }
        Ok(Self {
            snapshot,
            at: state.applied,
        })
    }

    /// The entry the snapshot stands at: every entry up to it is in the snapshot, none after.
    pub fn at(&self) -> LogId {
        self.at
    }

    /// Reads the batch that starts at `from`: pairs in space then key order, until their keys
    /// and values reach `max_bytes` (at least one pair, so a pair larger than the bound still
    /// moves).
    pub fn batch(&self, from: &Cursor, max_bytes: usize) -> Result<SnapshotBatch> {
        let first = SNAPSHOT_SPACES
            .iter()
            .position(|s| *s == from.space)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "a snapshot carries the data and txn spaces, not {}",
                    from.space.name()
                ))
            })?;
        let mut writes = Vec::new();
        let mut bytes = 0usize;
        for (i, &space) in SNAPSHOT_SPACES.iter().enumerate().skip(first) {
            let start = match (&from.after, i == first) {
                (Some(after), true) => Bound::Excluded(after.clone()),
                _ => Bound::Unbounded,
            };
            for pair in self.snapshot.scan_range(space, start, Bound::Unbounded) {
                let (key, value) = pair?;
                bytes += key.len() + value.len();
                let after = Some(key.clone());
                writes.push(Write::Put(space, key, value));
                if bytes >= max_bytes {
                    return Ok(SnapshotBatch {
                        writes,
                        next: Some(Cursor { space, after }),
                    });
                }
            }
        }
        Ok(SnapshotBatch { writes, next: None })
    }
}
