//! The Raft group that orders changes to the cluster map, on `openraft`.
//!
//! This module plugs ddb into openraft: the type configuration (a log entry carries a
//! [`Change`], and applying it gives a [`ChangeResult`]), the log store and the state machine,
//! both kept in the node's own storage engine (space [`Space::Raft`]), and the network, which
//! carries Raft messages as ordinary requests of ddb's internal RPC.
//!
//! The log store persists entries and the vote with an fsync before acknowledging, as Raft
//! requires. The state machine is the map itself. After each batch it writes the map with its
//! last applied log id, and then publishes the new map on a watch channel, which the node
//! follows (for example to update its catalog).
//!
//! What is stored here is in the format of [`super::upgrade`]; [`super::meta`] upgrades a
//! space written by an older ddb before it opens the stores.

// openraft's trait methods return its StorageError, which is large; the helpers match them.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::map::{Change, ChangeResult, ClusterMap};
use crate::error::Error;
use crate::storage::{Engine, Space, Write};

openraft::declare_raft_types!(
    /// The Raft types of the cluster map's group.
    pub TypeConfig:
        D = Change,
        R = ChangeResult,
);

/// A Raft node id.
pub type NodeId = u64;

/// The openraft handle of the map's group.
pub type Raft = openraft::Raft<TypeConfig>;

fn io_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::write(&std::io::Error::other(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::read(&std::io::Error::other(e.to_string())).into()
}

pub(super) const LOG_PREFIX: &[u8] = b"l/";
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const PURGED_KEY: &[u8] = b"purged";
pub(super) const SM_KEY: &[u8] = b"state_machine";

fn log_key(index: u64) -> Vec<u8> {
    let mut k = LOG_PREFIX.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn get<T: for<'de> Deserialize<'de>>(
    engine: &dyn Engine,
    key: &[u8],
) -> Result<Option<T>, StorageError<NodeId>> {
    match engine.get(Space::Raft, key).map_err(read_err)? {
        None => Ok(None),
        Some(bytes) => postcard::from_bytes(&bytes).map(Some).map_err(read_err),
    }
}

fn put<T: Serialize>(key: &[u8], value: &T) -> Result<Write, StorageError<NodeId>> {
    Ok(Write::Put(
        Space::Raft,
        key.to_vec(),
        postcard::to_stdvec(value).map_err(io_err)?,
    ))
}

/// The Raft log and vote, in the node's engine.
#[derive(Clone)]
pub struct LogStore {
    engine: Arc<dyn Engine>,
    /// The last log id appended, kept in memory (the engine has no reverse scan).
    last: Arc<Mutex<Option<LogId<NodeId>>>>,
}

impl LogStore {
    /// Opens the log store, finding the last entry.
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self, Error> {
        let entries = engine.scan_prefix(Space::Raft, LOG_PREFIX);
        let last = match entries.last().transpose()? {
            Some((_, bytes)) => Some(postcard::from_bytes::<Entry<TypeConfig>>(&bytes)?.log_id),
            None => None,
        };
        Ok(Self {
            engine,
            last: Arc::new(Mutex::new(last)),
        })
    }

    fn set_last(&self, id: Option<LogId<NodeId>>) {
        if let Ok(mut l) = self.last.lock() {
            *l = id;
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(log_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(log_key(*i)),
            Bound::Unbounded => Bound::Included(log_key(0)),
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(log_key(*i)),
            Bound::Excluded(i) => Bound::Excluded(log_key(*i)),
            Bound::Unbounded => Bound::Included(log_key(u64::MAX)),
        };
        let rows = self
            .engine
            .scan_range(Space::Raft, start, end)
            .collect::<Result<Vec<_>, Error>>()
            .map_err(read_err)?;
        rows.iter()
            .map(|(_, v)| postcard::from_bytes(v).map_err(read_err))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged: Option<LogId<NodeId>> = get(self.engine.as_ref(), PURGED_KEY)?;
        let last = self.last.lock().map_err(read_err_poison)?.or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.engine
            .write(vec![put(VOTE_KEY, vote)?])
            .map_err(io_err)?;
        self.engine.persist().map_err(io_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        get(self.engine.as_ref(), VOTE_KEY)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.engine
            .write(vec![put(COMMITTED_KEY, &committed)?])
            .map_err(io_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(get::<Option<LogId<NodeId>>>(self.engine.as_ref(), COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut writes = Vec::new();
        let mut last = None;
        for e in entries {
            writes.push(put(&log_key(e.log_id.index), &e)?);
            last = Some(e.log_id);
        }
        let result = self
            .engine
            .write(writes)
            .and_then(|()| self.engine.persist());
        if result.is_ok() && last.is_some() {
            self.set_last(last);
        }
        callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let rows = self
            .engine
            .scan_range(
                Space::Raft,
                Bound::Included(log_key(log_id.index)),
                Bound::Included(log_key(u64::MAX)),
            )
            .collect::<Result<Vec<_>, Error>>()
            .map_err(read_err)?;
        let writes = rows
            .into_iter()
            .map(|(k, _)| Write::Delete(Space::Raft, k))
            .collect();
        self.engine.write(writes).map_err(io_err)?;
        self.engine.persist().map_err(io_err)?;
        let before = if log_id.index == 0 {
            None
        } else {
            self.try_get_log_entries(..log_id.index)
                .await?
                .last()
                .map(|e| e.log_id)
        };
        let purged: Option<LogId<NodeId>> = get(self.engine.as_ref(), PURGED_KEY)?;
        self.set_last(before.or(purged));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let rows = self
            .engine
            .scan_range(
                Space::Raft,
                Bound::Included(log_key(0)),
                Bound::Included(log_key(log_id.index)),
            )
            .collect::<Result<Vec<_>, Error>>()
            .map_err(read_err)?;
        let mut writes: Vec<Write> = rows
            .into_iter()
            .map(|(k, _)| Write::Delete(Space::Raft, k))
            .collect();
        writes.push(put(PURGED_KEY, &log_id)?);
        self.engine.write(writes).map_err(io_err)?;
        let mut last = self.last.lock().map_err(read_err_poison)?;
        if last.is_none_or(|l| l.index <= log_id.index) {
            *last = Some(log_id);
        }
        Ok(())
    }
}

fn read_err_poison<T>(_: T) -> StorageError<NodeId> {
    read_err("raft log store lock poisoned")
}

/// What the state machine holds: the map and where in the log it is.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MachineState {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, BasicNode>,
    pub map: Option<ClusterMap>,
}

/// The state machine: the cluster map.
#[derive(Clone)]
pub struct StateMachine {
    engine: Arc<dyn Engine>,
    state: Arc<Mutex<MachineState>>,
    publish: Arc<watch::Sender<Option<Arc<ClusterMap>>>>,
}

impl StateMachine {
    /// Opens the state machine from the engine; `publish` receives every new map.
    pub fn open(
        engine: Arc<dyn Engine>,
        publish: watch::Sender<Option<Arc<ClusterMap>>>,
    ) -> Result<Self, Error> {
        let state: MachineState = match engine.get(Space::Raft, SM_KEY)? {
            Some(bytes) => postcard::from_bytes(&bytes)?,
            None => MachineState::default(),
        };
        publish.send_replace(state.map.clone().map(Arc::new));
        Ok(Self {
            engine,
            state: Arc::new(Mutex::new(state)),
            publish: Arc::new(publish),
        })
    }

    fn save(&self, state: &MachineState) -> Result<(), StorageError<NodeId>> {
        self.engine
            .write(vec![put(SM_KEY, state)?])
            .map_err(io_err)?;
        self.publish.send_replace(state.map.clone().map(Arc::new));
        Ok(())
    }

    fn snapshot_of(state: &MachineState) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = postcard::to_stdvec(state).map_err(read_err)?;
        let id = match &state.last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".into(),
        };
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id: id,
            },
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let state = self.state.lock().map_err(read_err_poison)?.clone();
        Self::snapshot_of(&state)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let s = self.state.lock().map_err(read_err_poison)?;
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ChangeResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.state.lock().map_err(read_err_poison)?.clone();
        let mut results = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let version = state.map.as_ref().map(|m| m.version).unwrap_or(0);
            results.push(match entry.payload {
                EntryPayload::Blank => Ok(version),
                EntryPayload::Normal(change) => ClusterMap::apply(&mut state.map, &change),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(version)
                }
            });
        }
        self.save(&state)?;
        *self.state.lock().map_err(read_err_poison)? = state;
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut state: MachineState = postcard::from_bytes(snapshot.get_ref()).map_err(read_err)?;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        self.save(&state)?;
        *self.state.lock().map_err(read_err_poison)? = state;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let state = self.state.lock().map_err(read_err_poison)?.clone();
        if state.last_applied.is_none() {
            return Ok(None);
        }
        Self::snapshot_of(&state).map(Some)
    }
}

/// The voters of a new group, with their RPC addresses.
pub fn members(map: &ClusterMap) -> BTreeMap<NodeId, BasicNode> {
    let voters = map.voters();
    map.nodes
        .values()
        .filter(|n| voters.contains(&n.raft_id))
        .map(|n| (n.raft_id, BasicNode::new(n.rpc_addr.clone())))
        .collect()
}
