//! Upgrading the stored Raft space of a node written by an older ddb.
//!
//! The map's Raft log and state machine are stored with postcard, which is positional: a field
//! added to [`ClusterMap`] changes how every stored map and every `Init` entry decodes, and
//! `#[serde(default)]` cannot help (postcard never sees a field name). So the space records its
//! format under one key, and a node opening a space of an older format rewrites it in the new
//! one **in one atomic write** before anything reads it: either every entry is upgraded or
//! none is, and a node killed mid-upgrade upgrades again on its next start.
//!
//! Formats:
//!
//! 1. Before replica groups (no format key): a map with `factor` and `mode` at the top, no
//!    `placement`, shards without an epoch history or an in-sync set. Only single-copy
//!    clusters were ever formed in it (replication was refused), so the upgrade is exact: each
//!    shard's only copy is its primary and the whole in-sync set, its history is `[(epoch, 1)]`
//!    (no promotion ever happened), and the placement of a formed map is 1, its value after
//!    `Init` (nothing else raised it).
//! 2. Replica groups: the map of [`super::map`] today.
//!
//! A space of a format newer than this binary knows is refused rather than guessed at.

use std::collections::BTreeMap;
use std::io::Cursor;

use openraft::{BasicNode, Entry, EntryPayload, LogId, StoredMembership};
use serde::{Deserialize, Serialize};

use super::map::{
    Change, ChangeResult, ClusterMap, Mode, NodeInfo, Replication, ShardInfo, ShardState, FIRST_LSN,
};
use super::raft::{MachineState, NodeId, TypeConfig, LOG_PREFIX, SM_KEY};
use super::ring::{Ring, ShardId};
use crate::error::{Error, Result};
use crate::storage::{Engine, Space, Write};
use crate::types::Table;

/// Where the Raft space records its format.
const FORMAT_KEY: &[u8] = b"format";

/// The format this binary writes.
pub const FORMAT: u32 = 2;

/// Brings the Raft space of `engine` to [`FORMAT`], rewriting what an older ddb stored; a space
/// already at it, or empty, only gets (or keeps) its format key.
pub fn upgrade(engine: &dyn Engine) -> Result<()> {
    let format = match engine.get(Space::Raft, FORMAT_KEY)? {
        Some(bytes) => postcard::from_bytes::<u32>(&bytes)?,
        None => 1,
    };
    if format == FORMAT {
        return Ok(());
    }
    if format > FORMAT {
        return Err(Error::Refused(format!(
            "the cluster state in this data directory has format {format}, newer than this ddb knows ({FORMAT}); run a newer ddb"
        )));
    }
    let mut writes = Vec::new();
    if let Some(bytes) = engine.get(Space::Raft, SM_KEY)? {
        let old: MachineStateV1 = postcard::from_bytes(&bytes)?;
        writes.push(Write::Put(
            Space::Raft,
            SM_KEY.to_vec(),
            encode(&old.upgrade())?,
        ));
    }
    for row in engine.scan_prefix(Space::Raft, LOG_PREFIX) {
        let (key, bytes) = row?;
        let old: Entry<TypeConfigV1> = postcard::from_bytes(&bytes)?;
        writes.push(Write::Put(Space::Raft, key, encode(&upgrade_entry(old))?));
    }
    let count = writes.len();
    writes.push(Write::Put(
        Space::Raft,
        FORMAT_KEY.to_vec(),
        encode(&FORMAT)?,
    ));
    engine.write(writes)?;
    engine.persist()?;
    if count > 0 {
        tracing::info!(
            from = format,
            to = FORMAT,
            records = count,
            "upgraded the stored cluster state"
        );
    }
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| Error::Internal(format!("encode raft state: {e}")))
}

openraft::declare_raft_types!(
    /// The Raft types of format 1: entries carry a [`ChangeV1`].
    TypeConfigV1:
        D = ChangeV1,
        R = ChangeResult,
);

/// A change as format 1 stored it.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum ChangeV1 {
    Init(Box<MapV1>),
    CreateTable { table: Table, if_not_exists: bool },
    DropTable { names: Vec<String>, if_exists: bool },
}

/// The map as format 1 stored it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MapV1 {
    cluster_id: String,
    name: String,
    version: u64,
    factor: u32,
    mode: Mode,
    vnodes: u32,
    ring: Ring,
    shards: BTreeMap<ShardId, ShardV1>,
    nodes: BTreeMap<String, NodeInfo>,
    tables: BTreeMap<String, Table>,
    next_table_id: u32,
}

/// A shard as format 1 stored it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ShardV1 {
    epoch: u64,
    primary: String,
    replicas: Vec<String>,
    state: ShardState,
}

/// The state machine as format 1 stored it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct MachineStateV1 {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    map: Option<MapV1>,
}

impl MapV1 {
    fn upgrade(self) -> ClusterMap {
        let formed = self.version > 0;
        ClusterMap {
            cluster_id: self.cluster_id,
            name: self.name,
            version: self.version,
            placement: u64::from(formed),
            replication: Replication {
                factor: self.factor,
                mode: self.mode,
                min_in_sync: Replication::default_min_in_sync(self.factor),
                ..Replication::single()
            },
            vnodes: self.vnodes,
            ring: self.ring,
            shards: self
                .shards
                .into_iter()
                .map(|(id, s)| (id, s.upgrade()))
                .collect(),
            nodes: self.nodes,
            tables: self.tables,
            next_table_id: self.next_table_id,
        }
    }
}

impl ShardV1 {
    fn upgrade(self) -> ShardInfo {
        let mut in_sync = vec![self.primary.clone()];
        in_sync.extend(self.replicas.iter().cloned());
        ShardInfo {
            epoch: self.epoch,
            epochs: vec![(self.epoch, FIRST_LSN)],
            primary: self.primary,
            replicas: self.replicas,
            in_sync,
            state: self.state,
        }
    }
}

impl MachineStateV1 {
    fn upgrade(self) -> MachineState {
        MachineState {
            last_applied: self.last_applied,
            membership: self.membership,
            map: self.map.map(MapV1::upgrade),
        }
    }
}

impl From<ChangeV1> for Change {
    fn from(c: ChangeV1) -> Self {
        match c {
            // An `Init` in the log is applied again on replay; `init` sets its version and
            // placement, so the upgraded map's own values do not matter.
            ChangeV1::Init(map) => Change::Init(Box::new(map.upgrade())),
            ChangeV1::CreateTable {
                table,
                if_not_exists,
            } => Change::CreateTable {
                table,
                if_not_exists,
            },
            ChangeV1::DropTable { names, if_exists } => Change::DropTable { names, if_exists },
        }
    }
}

fn upgrade_entry(e: Entry<TypeConfigV1>) -> Entry<TypeConfig> {
    Entry {
        log_id: e.log_id,
        payload: match e.payload {
            EntryPayload::Blank => EntryPayload::Blank,
            EntryPayload::Normal(c) => EntryPayload::Normal(c.into()),
            EntryPayload::Membership(m) => EntryPayload::Membership(m),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::engine::Memory as MemoryEngine;

    fn old_map(version: u64) -> MapV1 {
        let mut ring = Ring::new();
        let mut shards = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for s in 1..=2u32 {
            ring.add_shard(s, 8);
            shards.insert(
                s,
                ShardV1 {
                    epoch: 1,
                    primary: format!("n{s}"),
                    replicas: Vec::new(),
                    state: ShardState::Active,
                },
            );
            nodes.insert(
                format!("n{s}"),
                NodeInfo {
                    raft_id: s.into(),
                    rpc_addr: format!("127.0.0.1:{}", 7000 + s),
                    sql_addr: format!("127.0.0.1:{}", 5000 + s),
                    shard: s,
                },
            );
        }
        MapV1 {
            cluster_id: "c-1".into(),
            name: "old".into(),
            version,
            factor: 1,
            mode: Mode::Sync,
            vnodes: 8,
            ring,
            shards,
            nodes,
            tables: BTreeMap::new(),
            next_table_id: 3,
        }
    }

    fn put<T: Serialize>(engine: &dyn Engine, key: Vec<u8>, value: &T) {
        engine
            .write(vec![Write::Put(Space::Raft, key, encode(value).unwrap())])
            .unwrap();
    }

    fn log_key(index: u64) -> Vec<u8> {
        let mut k = LOG_PREFIX.to_vec();
        k.extend_from_slice(&index.to_be_bytes());
        k
    }

    #[test]
    fn a_space_of_format_1_is_upgraded_whole_and_decodes_as_today() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let state = MachineStateV1 {
            last_applied: None,
            membership: StoredMembership::default(),
            map: Some(old_map(5)),
        };
        put(engine.as_ref(), SM_KEY.to_vec(), &state);
        let init: Entry<TypeConfigV1> = Entry {
            log_id: LogId::default(),
            payload: EntryPayload::Normal(ChangeV1::Init(Box::new(old_map(0)))),
        };
        put(engine.as_ref(), log_key(1), &init);
        upgrade(engine.as_ref()).unwrap();

        let bytes = engine.get(Space::Raft, SM_KEY).unwrap().unwrap();
        let state: MachineState = postcard::from_bytes(&bytes).unwrap();
        let map = state.map.unwrap();
        assert_eq!((map.version, map.placement), (5, 1));
        assert_eq!(map.replication, Replication::single());
        assert_eq!(map.shards[&2].in_sync, ["n2"]);
        assert_eq!(map.shards[&2].epochs, vec![(1, 1)]);
        assert_eq!(map.next_table_id, 3);

        let bytes = engine.get(Space::Raft, &log_key(1)).unwrap().unwrap();
        let entry: Entry<TypeConfig> = postcard::from_bytes(&bytes).unwrap();
        let EntryPayload::Normal(change) = entry.payload else {
            panic!("not a normal entry");
        };
        let mut replayed = None;
        assert_eq!(ClusterMap::apply(&mut replayed, &change), Ok(1));
        assert_eq!(replayed.unwrap().placement, 1);

        // A second open changes nothing: the space is at the format now.
        upgrade(engine.as_ref()).unwrap();
        let again = engine.get(Space::Raft, SM_KEY).unwrap().unwrap();
        assert_eq!(again, bytes_of_state(engine.as_ref()));
    }

    fn bytes_of_state(engine: &dyn Engine) -> Vec<u8> {
        engine.get(Space::Raft, SM_KEY).unwrap().unwrap()
    }

    #[test]
    fn an_empty_space_only_gets_its_format() {
        let engine = MemoryEngine::new();
        upgrade(&engine).unwrap();
        assert_eq!(
            engine.get(Space::Raft, FORMAT_KEY).unwrap(),
            Some(encode(&FORMAT).unwrap())
        );
        assert!(engine.get(Space::Raft, SM_KEY).unwrap().is_none());
    }

    #[test]
    fn a_space_of_a_newer_format_is_refused() {
        let engine = MemoryEngine::new();
        put(&engine, FORMAT_KEY.to_vec(), &(FORMAT + 1));
        let err = upgrade(&engine).unwrap_err();
        assert!(matches!(err, Error::Refused(_)), "{err:?}");
    }
}
