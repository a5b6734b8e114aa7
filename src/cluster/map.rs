//! The cluster map: who is in the cluster, which shard owns which keys, and the schema.
//!
//! Every node holds a copy. The map changes only by [`Change`]s applied in one order, the order
//! of the Raft log (see [`super::meta`]); each change is validated against the current map when
//! it is applied, so a change that was valid when proposed but is stale by the time it is
//! ordered is refused, never applied twice. Every applied change raises `version` by one, and
//! requests between nodes carry the version they were routed with.
//!
//! Each kind of change is applied by its own function ([`ClusterMap::apply`] only dispatches),
//! and each checks everything before it changes anything, so a refused change leaves the map as
//! it was.
//!
//! Applying a change is a pure function of the map: no I/O, no clock, no randomness. That is
//! what lets every node reach the same map from the same log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ring::{Ring, ShardId};
use crate::error::{sqlstate, Error};
use crate::types::Table;

/// When a primary acknowledges a write: once the in-sync replicas hold it (`Sync`), or as soon
/// as it holds it itself (`Async`).
///
/// The cluster file has its own spelling of this (`replication.mode`); this one is part of the
/// map, so its serialized form is what nodes persist and exchange, and must not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Sync,
    Async,
}

/// Whether a shard is serving, or moving in or out (moves come with rebalancing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardState {
    Active,
    Joining,
    Leaving,
}

/// A shard: a replica group with one primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Raised by every promotion; fences old primaries.
    pub epoch: u64,
    pub primary: String,
    pub replicas: Vec<String>,
    pub state: ShardState,
}

/// A node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id in the Raft group of the map.
    pub raft_id: u64,
    pub rpc_addr: String,
    pub sql_addr: String,
    pub shard: ShardId,
}

/// The cluster map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Unique per cluster: a node refuses requests and maps of another cluster.
    pub cluster_id: String,
    pub name: String,
    pub version: u64,
    pub factor: u32,
    pub mode: Mode,
    pub vnodes: u32,
    pub ring: Ring,
    pub shards: BTreeMap<ShardId, ShardInfo>,
    pub nodes: BTreeMap<String, NodeInfo>,
    /// The catalog.
    pub tables: BTreeMap<String, Table>,
    pub next_table_id: u32,
}

/// A change to the map: one Raft command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Forms the cluster; valid only as the first change.
    Init(Box<ClusterMap>),
    /// Creates a table; the map assigns its id.
    CreateTable { table: Table, if_not_exists: bool },
    /// Drops tables by name.
    DropTable { names: Vec<String>, if_exists: bool },
}

/// What applying a change produced: the map version after it.
pub type ChangeResult = std::result::Result<u64, Error>;

impl ClusterMap {
    /// Applies a change, validating it against the map. On error the map is unchanged.
    ///
    /// This is the only way the map changes: each change has its own function below, which
    /// checks the change against the map as it is now (not as it was when the change was
    /// proposed) before it touches anything.
    pub fn apply(current: &mut Option<ClusterMap>, change: &Change) -> ChangeResult {
        match (current.as_mut(), change) {
            (_, Change::Init(map)) => Self::init(current, map),
            (None, _) => Err(Error::Refused(
                "the cluster is not formed yet (run ddb init)".into(),
            )),
            (
                Some(map),
                Change::CreateTable {
                    table,
                    if_not_exists,
                },
            ) => map.create_table(table, *if_not_exists),
            (Some(map), Change::DropTable { names, if_exists }) => {
                map.drop_tables(names, *if_exists)
            }
        }
    }

    /// [`Change::Init`]: forms the cluster with `map` at version 1. A cluster forms once; a
    /// second init (a re-run of `ddb init` that raced the first) is refused.
    fn init(current: &mut Option<ClusterMap>, map: &ClusterMap) -> ChangeResult {
        if current.is_some() {
            return Err(Error::Refused("the cluster is already formed".into()));
        }
        let mut map = map.clone();
        map.version = 1;
        let v = map.version;
        *current = Some(map);
        Ok(v)
    }

    /// [`Change::CreateTable`]: adds `table` with the next table id. A name already taken is
    /// refused, unless `if_not_exists`, which leaves the map (and its version) as it is.
    fn create_table(&mut self, table: &Table, if_not_exists: bool) -> ChangeResult {
        if self.tables.contains_key(&table.name) {
            if if_not_exists {
                return Ok(self.version);
            }
            return Err(Error::sql(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{}\" already exists", table.name),
            ));
        }
        let mut table = table.clone();
        table.id = self.next_table_id;
        self.next_table_id += 1;
        self.tables.insert(table.name.clone(), table);
        Ok(self.bump())
    }

    /// [`Change::DropTable`]: removes the named tables, all or none: every name is checked
    /// before any table is removed. A missing name is refused unless `if_exists`.
    fn drop_tables(&mut self, names: &[String], if_exists: bool) -> ChangeResult {
        if !if_exists {
            if let Some(name) = names.iter().find(|n| !self.tables.contains_key(*n)) {
                return Err(Error::sql(
                    sqlstate::UNDEFINED_TABLE,
                    format!("table \"{name}\" does not exist"),
                ));
            }
        }
        for name in names {
            self.tables.remove(name);
        }
        Ok(self.bump())
    }

    /// Raises the version after an applied change and returns it.
    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// The shard that owns a ring token.
    pub fn shard_of_token(&self, token: u64) -> Option<ShardId> {
        self.ring.owner(token)
    }

    /// The primary node of a shard.
    pub fn primary(&self, shard: ShardId) -> Option<(&str, &NodeInfo)> {
        let s = self.shards.get(&shard)?;
        self.nodes.get(&s.primary).map(|n| (s.primary.as_str(), n))
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }

    /// The Raft voters: the first three nodes by Raft id (five once there are five or more).
    pub fn voters(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.nodes.values().map(|n| n.raft_id).collect();
        ids.sort_unstable();
        let n = if ids.len() >= 5 { 5 } else { ids.len().min(3) };
        ids.truncate(n);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::value::DataType;
    use crate::types::Column;

    /// A formed-looking map of `n` nodes, one shard each, built without a cluster file: the
    /// map must not depend on how the CLI reads one.
    fn formed(n: u32) -> ClusterMap {
        let mut ring = Ring::new();
        let mut shards = BTreeMap::new();
        let mut nodes = BTreeMap::new();
        for s in 1..=n {
            ring.add_shard(s, 16);
            shards.insert(
                s,
                ShardInfo {
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
                    rpc_addr: format!("127.0.0.1:{}", 7070 + s),
                    sql_addr: format!("127.0.0.1:{}", 5440 + s),
                    shard: s,
                },
            );
        }
        ClusterMap {
            cluster_id: "x".into(),
            name: "demo".into(),
            version: 0,
            factor: 1,
            mode: Mode::Sync,
            vnodes: 16,
            ring,
            shards,
            nodes,
            tables: BTreeMap::new(),
            next_table_id: 1,
        }
    }

    fn table(name: &str) -> Table {
        Table {
            id: 0,
            name: name.into(),
            columns: vec![Column {
                name: "id".into(),
                data_type: DataType::Int,
                not_null: true,
                default: None,
                hidden: false,
            }],
            primary_key: vec![0],
        }
    }

    #[test]
    fn the_first_three_nodes_vote_until_there_are_five() {
        assert_eq!(formed(1).voters(), vec![1]);
        assert_eq!(formed(4).voters(), vec![1, 2, 3]);
        assert_eq!(formed(6).voters(), vec![1, 2, 3, 4, 5]);
        assert_eq!(formed(4).primary(2).unwrap().0, "n2");
    }

    #[test]
    fn changes_are_validated_when_applied_and_raise_the_version() {
        let mut map = None;
        assert!(ClusterMap::apply(
            &mut map,
            &Change::CreateTable {
                table: table("t"),
                if_not_exists: false
            }
        )
        .is_err());
        let init = Change::Init(Box::new(formed(4)));
        assert_eq!(ClusterMap::apply(&mut map, &init), Ok(1));
        assert!(
            ClusterMap::apply(&mut map, &init).is_err(),
            "a second init is refused"
        );
        let create = Change::CreateTable {
            table: table("t"),
            if_not_exists: false,
        };
        assert_eq!(ClusterMap::apply(&mut map, &create), Ok(2));
        let err = ClusterMap::apply(&mut map, &create).unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::DUPLICATE_TABLE);
        assert_eq!(
            map.as_ref().unwrap().version,
            2,
            "a refused change leaves the map as it was"
        );
        assert_eq!(map.as_ref().unwrap().tables["t"].id, 1);
        let drop = Change::DropTable {
            names: vec!["t".into()],
            if_exists: false,
        };
        assert_eq!(ClusterMap::apply(&mut map, &drop), Ok(3));
        assert!(ClusterMap::apply(&mut map, &drop).is_err());
    }

    #[test]
    fn create_if_not_exists_of_a_taken_name_leaves_the_version() {
        let create = |if_not_exists| Change::CreateTable {
            table: table("t"),
            if_not_exists,
        };
        let mut m = None;
        ClusterMap::apply(&mut m, &Change::Init(Box::new(formed(1)))).unwrap();
        assert_eq!(ClusterMap::apply(&mut m, &create(false)), Ok(2));
        assert_eq!(ClusterMap::apply(&mut m, &create(true)), Ok(2));
        assert_eq!(m.unwrap().next_table_id, 2, "no id was used up");
    }

    #[test]
    fn dropping_tables_is_all_or_none() {
        let mut m = None;
        ClusterMap::apply(&mut m, &Change::Init(Box::new(formed(1)))).unwrap();
        for name in ["a", "b"] {
            let create = Change::CreateTable {
                table: table(name),
                if_not_exists: false,
            };
            ClusterMap::apply(&mut m, &create).unwrap();
        }
        let drop = |names: &[&str], if_exists| Change::DropTable {
            names: names.iter().map(|n| n.to_string()).collect(),
            if_exists,
        };
        let err = ClusterMap::apply(&mut m, &drop(&["a", "c"], false)).unwrap_err();
        assert_eq!(err.sqlstate(), sqlstate::UNDEFINED_TABLE);
        let after = m.as_ref().unwrap();
        assert_eq!(
            (after.version, after.tables.len()),
            (3, 2),
            "nothing dropped"
        );
        assert_eq!(ClusterMap::apply(&mut m, &drop(&["a", "c"], true)), Ok(4));
        assert_eq!(m.unwrap().tables.keys().collect::<Vec<_>>(), ["b"]);
    }
}
